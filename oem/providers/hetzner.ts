/**
 * Hetzner Cloud: the server metadata service under env.metadataUrl (http://169.254.169.254), the
 * documents Afterburn reads:
 *
 *   /hetzner/v1/metadata                    YAML: availability-zone, hostname, instance-id, public-ipv4,
 *                                           region, local-ipv4, public-keys, network-config (below), ...
 *   /hetzner/v1/metadata/private-networks   YAML list: - ip: 10.0.0.2 / mac_address / network / gateway ...
 *   /hetzner/v1/metadata/hostname           text
 *   /hetzner/v1/metadata/public-keys        JSON list of SSH keys
 *   /hetzner/v1/metadata/network-config     YAML, cloud-init's network config version 1:
 *                                             config: [{ type: physical, name: eth0, mac_address: ...,
 *                                                        subnets: [{ type: dhcp, ipv4: true },
 *                                                                  { type: static, ipv6: true, address: 2a01:4f8::1/64,
 *                                                                    gateway: fe80::1, dns_nameservers: [...] }] }]
 *   /hetzner/v1/userdata                    the userdata, raw (as Ignition reads it)
 *
 * No token or header. YAML is read with the `yaml` package's YAML 1.2 core schema (no custom tags,
 * aliases bounded): it is data, nothing in it is run. A document that is not YAML of the expected
 * shape is an error naming its URL; a 404 is absent; a bad value inside is dropped with a log line.
 *
 * Attributes, Afterburn's names (AFTERBURN_HETZNER_*): COREOS_HETZNER_{AVAILABILITY_ZONE, HOSTNAME,
 * INSTANCE_ID, PUBLIC_IPV4, PUBLIC_IPV6 (the first IPv6 address of the first physical interface in
 * the metadata's network-config, without its prefix length), REGION, PRIVATE_IPV4_<n>}, plus
 * COREOS_IPV4_PUBLIC, COREOS_IPV6_PUBLIC, COREOS_IPV4_PRIVATE (the first private network's) and
 * COREOS_HOSTNAME. The hostname is /hostname's, else the metadata's.
 *
 * Network: one networkd unit per physical interface of network-config (names are ours:
 * 10-oem-<n>-<interface>.network), matched by Name= and MACAddress= as given, with DHCP= for its dhcp
 * subnets, an [Address] per static address, a default [Route] per gateway and DNS= the subnets'
 * nameservers: what Afterburn's network units for Hetzner hold.
 */
import { isIP } from 'node:net';
import { parseDocument } from 'yaml';
import { OemError } from '../../src/shared/errors.js';
import { httpGet, joinUrl, showUrl } from './http.js';
import { MAX_SMALL_BYTES, userdataOrNull } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanIp, cleanMac, cleanSshKeys, netmaskToPrefix, networkUnitName, shown } from './values.js';

type Json = Record<string, unknown>;
type Log = (line: string) => void;

const BASE = '/hetzner/v1/metadata';
/** Largest metadata document read (they are a few KiB). */
const MAX_DOC_BYTES = 1024 * 1024;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
/** An own property only (never one of Object.prototype's). */
const own = (o: Json, key: string): unknown => (Object.hasOwn(o, key) ? o[key] : undefined);

/** The body of `path`; null when absent (404) or too large (logged). */
async function fetchBody(env: ProviderEnv, path: string, limit = MAX_DOC_BYTES): Promise<Buffer | null> {
  const url = joinUrl(env.metadataUrl, path);
  const b = await httpGet(url, env, { optional: true });
  if (b === null) {
    env.log(`hetzner: the metadata service has no ${path} (404)`);
    return null;
  }
  if (b.length > limit) {
    env.log(`hetzner: ${showUrl(url)}: ${b.length} bytes, more than the ${limit} allowed; ignored`);
    return null;
  }
  return b;
}

/** A YAML (or JSON, which is YAML) document as plain data; an error naming the URL when it is not YAML. */
function parseYaml(b: Buffer, env: ProviderEnv, path: string): unknown {
  const url = showUrl(joinUrl(env.metadataUrl, path));
  const text = b.toString('utf8');
  let doc;
  try {
    doc = parseDocument(text, { version: '1.2', schema: 'core', uniqueKeys: true, prettyErrors: false });
  } catch (err) {
    throw new OemError(`hetzner: ${url} is not valid YAML: ${(err as Error).message}`, { code: 'network' });
  }
  if (doc.errors.length > 0) throw new OemError(`hetzner: ${url} is not valid YAML: ${doc.errors[0]!.message}`, { code: 'network' });
  try {
    return doc.toJS({ maxAliasCount: 100 }) as unknown;
  } catch (err) {
    throw new OemError(`hetzner: ${url} cannot be read: ${(err as Error).message}`, { code: 'network' });
  }
}

/** A YAML mapping from `path`; undefined when absent. */
async function mapping(env: ProviderEnv, path: string): Promise<Json | undefined> {
  const b = await fetchBody(env, path);
  if (b === null) return undefined;
  const v = parseYaml(b, env, path);
  if (v === null || v === undefined) return {};
  if (!isObject(v)) throw new OemError(`hetzner: ${showUrl(joinUrl(env.metadataUrl, path))} is not a mapping`, { code: 'network' });
  return v;
}

/** A YAML (or JSON) list from `path`; undefined when absent. */
async function sequence(env: ProviderEnv, path: string): Promise<unknown[] | undefined> {
  const b = await fetchBody(env, path);
  if (b === null) return undefined;
  const v = parseYaml(b, env, path);
  if (v === null || v === undefined) return [];
  if (!Array.isArray(v)) throw new OemError(`hetzner: ${showUrl(joinUrl(env.metadataUrl, path))} is not a list`, { code: 'network' });
  return v;
}

/** A scalar as a string (YAML reads `instance-id: 42` as a number); undefined for anything else. */
function scalar(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return undefined;
}

/** A field matching `re`; undefined, with a log line when present, otherwise. */
function word(doc: Json, key: string, re: RegExp, log: Log): string | undefined {
  const raw = own(doc, key);
  if (raw === undefined || raw === null || raw === '') return undefined;
  const v = scalar(raw);
  if (v !== undefined && re.test(v)) return v;
  log(`hetzner: ignoring the ${key} ${shown(raw)}: not a valid value`);
  return undefined;
}

/** `address[/prefix]`, or an address with a dotted IPv4 netmask; undefined (logged) when it is not one. */
function parseAddress(value: unknown, netmask: unknown, log: Log, what: string): { address: string; prefix: number; family: 4 | 6 } | undefined {
  const v = scalar(value);
  const m = v === undefined ? null : /^([0-9A-Fa-f.:]+)(?:\/(\d{1,3}))?$/.exec(v);
  const address = m?.[1];
  const family = address === undefined ? 0 : isIP(address);
  if (address === undefined || (family !== 4 && family !== 6)) {
    log(`ignoring ${what} ${shown(value)}: not an IP address`);
    return undefined;
  }
  const max = family === 4 ? 32 : 128;
  let prefix = m?.[2] === undefined ? undefined : Number(m[2]);
  if (prefix === undefined && netmask !== undefined && netmask !== null) {
    prefix = family === 4 && typeof netmask === 'string' ? netmaskToPrefix(netmask) : undefined;
    if (prefix === undefined) {
      log(`ignoring ${what} ${address}: the netmask ${shown(netmask)} is not an IPv${family} netmask`);
      return undefined;
    }
  }
  if (prefix !== undefined && prefix > max) {
    log(`ignoring ${what} ${shown(value)}: the prefix length is more than ${max}`);
    return undefined;
  }
  return { address: family === 6 ? address.toLowerCase() : address, prefix: prefix ?? max, family };
}

const PHYSICAL = 'physical';
const IFNAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;

function entries(networkConfig: unknown, log: Log): Json[] {
  if (networkConfig === undefined || networkConfig === null) return [];
  if (!isObject(networkConfig)) {
    log('hetzner: ignoring the network-config: not a mapping');
    return [];
  }
  const config = own(networkConfig, 'config');
  if (config === undefined || config === null) return [];
  if (!Array.isArray(config)) {
    log('hetzner: ignoring the network-config: its config is not a list');
    return [];
  }
  return config.filter((e: unknown): e is Json => isObject(e));
}

const subnetsOf = (entry: Json): Json[] => {
  const s = own(entry, 'subnets');
  return Array.isArray(s) ? s.filter((x: unknown): x is Json => isObject(x)) : [];
};

/** The public IPv6 address as Afterburn finds it: the first IPv6 subnet's of the first physical interface. */
function publicIpv6(networkConfig: unknown, log: Log): string | undefined {
  const first = entries(networkConfig, log).find((e) => own(e, 'type') === PHYSICAL);
  if (first === undefined) return undefined;
  const sub = subnetsOf(first).find((s) => own(s, 'ipv6') === true && own(s, 'address') !== undefined);
  if (sub === undefined) return undefined;
  const a = parseAddress(own(sub, 'address'), undefined, log, 'hetzner: the public IPv6 address');
  if (a === undefined) return undefined;
  if (a.family !== 6) {
    log(`hetzner: ignoring the public IPv6 address ${a.address}: it is an IPv4 address`);
    return undefined;
  }
  return a.address;
}

interface Iface {
  label: string;
  name?: string;
  mac?: string;
  dhcp4: boolean;
  dhcp6: boolean;
  addresses: string[];
  routes: { destination: string; gateway: string }[];
  dns: string[];
}

function iface(entry: Json, index: number, log: Log): Iface | undefined {
  const what = `hetzner: network-config interface ${index}`;
  const rawName = own(entry, 'name');
  let name: string | undefined;
  if (typeof rawName === 'string' && IFNAME.test(rawName)) name = rawName;
  else if (rawName !== undefined && rawName !== null) log(`${what}: ignoring the name ${shown(rawName)}: not an interface name`);
  const rawMac = own(entry, 'mac_address');
  const mac = rawMac === undefined || rawMac === null ? undefined : cleanMac(rawMac, log, `${what}: the MAC address`);
  if (name === undefined && mac === undefined) {
    log(`${what}: no network unit: it has neither a valid name nor a valid MAC address`);
    return undefined;
  }
  const i: Iface = { label: name ?? mac ?? 'if', dhcp4: false, dhcp6: false, addresses: [], routes: [], dns: [] };
  if (name !== undefined) i.name = name;
  if (mac !== undefined) i.mac = mac;
  subnetsOf(entry).forEach((s, n) => {
    const type = own(s, 'type');
    const sw = `${what} subnet ${n}`;
    if (type === 'dhcp' || type === 'dhcp4' || type === 'dhcp6') {
      if (type === 'dhcp6' || own(s, 'ipv6') === true) i.dhcp6 = true;
      else i.dhcp4 = true;
      return;
    }
    if (type !== 'static' && type !== 'static6') {
      log(`${sw}: ignoring the subnet type ${shown(type)}: only static and dhcp ones are used`);
      return;
    }
    const a = parseAddress(own(s, 'address'), own(s, 'netmask'), log, `${sw}: the address`);
    if (a === undefined) return;
    i.addresses.push(`${a.address}/${a.prefix}`);
    const ns = own(s, 'dns_nameservers');
    if (Array.isArray(ns)) {
      for (const d of ns) {
        const ip = cleanIp(d, log, `${sw}: the nameserver`);
        if (ip !== undefined && !i.dns.includes(ip)) i.dns.push(ip);
      }
    }
    const gw = own(s, 'gateway');
    if (gw === undefined || gw === null) return;
    const gateway = cleanIp(gw, log, `${sw}: the gateway`)?.toLowerCase();
    if (gateway !== undefined) i.routes.push({ destination: isIP(gateway) === 6 ? '::/0' : '0.0.0.0/0', gateway });
  });
  return i;
}

function networkUnit(i: Iface): string {
  const lines = ['# Written by oem-agent from the Hetzner Cloud metadata.', '[Match]'];
  if (i.name !== undefined) lines.push(`Name=${i.name}`);
  if (i.mac !== undefined) lines.push(`MACAddress=${i.mac}`);
  lines.push('', '[Network]');
  if (i.dhcp4 || i.dhcp6) lines.push(`DHCP=${i.dhcp4 && i.dhcp6 ? 'yes' : i.dhcp4 ? 'ipv4' : 'ipv6'}`);
  for (const d of i.dns) lines.push(`DNS=${d}`);
  for (const a of i.addresses) lines.push('', '[Address]', `Address=${a}`);
  for (const r of i.routes) lines.push('', '[Route]', `Destination=${r.destination}`, `Gateway=${r.gateway}`);
  return lines.join('\n') + '\n';
}

function networkUnits(networkConfig: unknown, log: Log): Metadata['networkUnits'] {
  const units: Metadata['networkUnits'] = [];
  entries(networkConfig, log).forEach((entry, index) => {
    const type = own(entry, 'type');
    if (type !== PHYSICAL) {
      log(`hetzner: ignoring network-config entry ${index} of type ${shown(type)}: only physical interfaces are configured`);
      return;
    }
    const i = iface(entry, index, log);
    if (i === undefined) return;
    if (!i.dhcp4 && !i.dhcp6 && i.addresses.length === 0) {
      log(`hetzner: no network unit for network-config interface ${index}: it has neither DHCP nor an address`);
      return;
    }
    units.push({ name: networkUnitName(units.length, i.label), content: networkUnit(i) });
  });
  return units;
}

const ZONE = /^[A-Za-z0-9-]{1,32}$/;
const INSTANCE_ID = /^\d{1,20}$/;

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const a = md.attributes;
  const log = env.log;
  const doc = (await mapping(env, BASE)) ?? {};
  const set = (key: string, value: string | undefined) => {
    if (value !== undefined) a[key] = value;
  };
  set('COREOS_HETZNER_AVAILABILITY_ZONE', word(doc, 'availability-zone', ZONE, log));
  const docHostname = own(doc, 'hostname');
  let hostname: string | undefined;
  if (typeof scalar(docHostname) === 'string') hostname = cleanHostname(scalar(docHostname), log, 'hetzner: the metadata hostname');
  else if (docHostname !== undefined && docHostname !== null) log(`hetzner: ignoring the metadata hostname ${shown(docHostname)}: not a string`);
  set('COREOS_HETZNER_HOSTNAME', hostname);
  set('COREOS_HETZNER_INSTANCE_ID', word(doc, 'instance-id', INSTANCE_ID, log));
  const v4 = cleanIp(scalar(own(doc, 'public-ipv4')), log, 'hetzner: the public-ipv4', 4);
  set('COREOS_HETZNER_PUBLIC_IPV4', v4);
  set('COREOS_IPV4_PUBLIC', v4);
  const v6 = publicIpv6(own(doc, 'network-config'), log);
  set('COREOS_HETZNER_PUBLIC_IPV6', v6);
  set('COREOS_IPV6_PUBLIC', v6);
  set('COREOS_HETZNER_REGION', word(doc, 'region', ZONE, log));

  const nets = (await sequence(env, `${BASE}/private-networks`)) ?? [];
  nets.forEach((net, i) => {
    if (!isObject(net)) {
      log(`hetzner: ignoring private network ${i}: not a mapping`);
      return;
    }
    const ip = cleanIp(scalar(own(net, 'ip')), log, `hetzner: the private network ${i} ip`, 4);
    set(`COREOS_HETZNER_PRIVATE_IPV4_${i}`, ip);
    if (ip !== undefined && a.COREOS_IPV4_PRIVATE === undefined) a.COREOS_IPV4_PRIVATE = ip;
  });

  const name = (await fetchBody(env, `${BASE}/hostname`, MAX_SMALL_BYTES))?.toString('utf8').trim();
  const host = (name ? cleanHostname(name, log, 'hetzner: the hostname') : undefined) ?? hostname;
  if (host !== undefined) md.hostname = a.COREOS_HOSTNAME = host;

  const keys = await sequence(env, `${BASE}/public-keys`);
  if (keys !== undefined) md.sshKeys = cleanSshKeys(keys, log, 'the Hetzner metadata');

  const netConfig = await mapping(env, `${BASE}/network-config`);
  if (netConfig !== undefined) md.networkUnits = networkUnits(netConfig, log);
  return md;
}

/** /hetzner/v1/userdata as it is; null when there is none (404 or empty). */
async function userdata(env: ProviderEnv): Promise<Userdata> {
  const url = joinUrl(env.metadataUrl, '/hetzner/v1/userdata');
  return userdataOrNull(await httpGet(url, env, { optional: true }), `hetzner: the userdata from ${showUrl(url)}`);
}

export const provider: MetadataProvider = { id: 'hetzner', metadata, userdata };
