/**
 * DigitalOcean: the droplet metadata service, metadata/v1.json under env.metadataUrl
 * (http://169.254.169.254):
 *
 *   { "droplet_id": 2756294, "hostname": "sample-droplet", "region": "nyc3",
 *     "public_keys": ["ssh-rsa AAAA..."], "user_data": "#cloud-config\n...",
 *     "interfaces": {
 *       "public": [{ "ipv4": { "ip_address": "104.131.20.105", "netmask": "255.255.192.0", "gateway": "104.131.0.1" },
 *                    "ipv6": { "ip_address": "2604:A880:0800:0010:0000:0000:017D:2001", "cidr": 64, "gateway": "2604:A880:0800:0010:0000:0000:0000:0001" },
 *                    "anchor_ipv4": { "ip_address": "10.17.0.5", "netmask": "255.255.0.0", "gateway": "10.17.0.1" },
 *                    "mac": "04:01:2a:0f:2a:01", "type": "public" }],
 *       "private": [{ "ipv4": { ... }, "mac": "04:01:2a:0f:2a:02", "type": "private" }] },
 *     "dns": { "nameservers": ["2001:4860:4860::8844", "8.8.8.8"] } }
 *
 * One networkd unit per interface, matched by MAC: Address= for each address (the anchor address
 * too), Gateway= for the public interfaces only (one default route), DNS= the nameservers. Only the
 * `public` and `private` interface lists are read; unit names are ours (10-oem-<n>-<type>.network).
 *
 * Attributes: COREOS_IPV4_PUBLIC/PRIVATE, COREOS_IPV6_PUBLIC/PRIVATE (the first of each),
 * COREOS_HOSTNAME, COREOS_DIGITALOCEAN_DROPLET_ID, and Afterburn's set as
 * COREOS_DIGITALOCEAN_{HOSTNAME, REGION, IPV4_PUBLIC_<n>, IPV6_PUBLIC_<n>, IPV4_ANCHOR_<n> (public
 * interfaces), IPV4_PRIVATE_<n>, IPV6_PRIVATE_<n>} with <n> the index within the interface's list
 * (`metadata --format afterburn` writes AFTERBURN_DIGITALOCEAN_*). IPv6 addresses are written in
 * their short form (2604:a880:800:10::17d:2001), as Afterburn does.
 *
 * Differences from Afterburn, on purpose: Afterburn adds a route to each address's own subnet
 * through the gateway (the subnet is on the link already, so the agent leaves it out) and merges
 * interfaces that share a MAC address into one unit (DigitalOcean gives each interface its own).
 * No boot check-in: DigitalOcean expects none.
 */
import { OemError } from '../../src/shared/errors.js';
import { httpGet, joinUrl, showUrl } from './http.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanIp, cleanMac, cleanPrefix, cleanSshKeys, netmaskToPrefix, networkUnitName, shown } from './values.js';

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** metadata/v1.json, parsed; null when the service has none (404). */
async function fetchDocument(env: ProviderEnv): Promise<Json | null> {
  const url = joinUrl(env.metadataUrl, '/metadata/v1.json');
  const b = await httpGet(url, env, { optional: true });
  if (b === null) return null;
  let doc: unknown;
  try {
    doc = JSON.parse(b.toString('utf8'));
  } catch (err) {
    throw new OemError(`digitalocean: ${showUrl(url)} is not valid JSON (${b.length} bytes): ${(err as Error).message}`, { code: 'network' });
  }
  if (!isObject(doc)) throw new OemError(`digitalocean: ${showUrl(url)} is not a JSON object`, { code: 'network' });
  return doc;
}

interface Iface {
  type: 'public' | 'private';
  /** Index within its type. */
  index: number;
  mac?: string;
  v4?: { address: string; prefix: number; gateway?: string };
  v6?: { address: string; prefix: number; gateway?: string };
  anchor?: { address: string; prefix: number };
}

function parseV4(v: unknown, log: (l: string) => void, what: string): { address: string; prefix: number; gateway?: string } | undefined {
  if (!isObject(v)) return undefined;
  const address = cleanIp(v.ip_address, log, `${what} address`, 4);
  if (address === undefined) return undefined;
  const prefix = typeof v.netmask === 'string' ? netmaskToPrefix(v.netmask) : undefined;
  if (prefix === undefined) {
    log(`digitalocean: ignoring ${what} ${address}: the netmask ${shown(v.netmask)} is not a netmask`);
    return undefined;
  }
  const gateway = cleanIp(v.gateway, log, `${what} gateway`, 4);
  return gateway === undefined ? { address, prefix } : { address, prefix, gateway };
}

/**
 * An IPv6 address in its short form (RFC 5952: lower case, the longest run of zero groups as ::);
 * one with an embedded IPv4 part or a zone is only lowercased.
 */
function shortIPv6(address: string): string {
  const lower = address.toLowerCase();
  if (!/^[0-9a-f:]+$/.test(lower)) return lower;
  try {
    return new URL(`http://[${lower}]/`).hostname.slice(1, -1);
  } catch {
    return lower;
  }
}

function parseV6(v: unknown, log: (l: string) => void, what: string): { address: string; prefix: number; gateway?: string } | undefined {
  if (!isObject(v)) return undefined;
  const given = cleanIp(v.ip_address, log, `${what} address`, 6);
  if (given === undefined) return undefined;
  const address = shortIPv6(given);
  const prefix = cleanPrefix(v.cidr, 6);
  if (prefix === undefined) {
    log(`digitalocean: ignoring ${what} ${address}: the prefix length ${shown(v.cidr)} is not 0..128`);
    return undefined;
  }
  const gatewayGiven = cleanIp(v.gateway, log, `${what} gateway`, 6);
  const gateway = gatewayGiven === undefined ? undefined : shortIPv6(gatewayGiven);
  return gateway === undefined ? { address, prefix } : { address, prefix, gateway };
}

function interfaces(doc: Json, log: (l: string) => void): Iface[] {
  const out: Iface[] = [];
  const all = doc.interfaces;
  if (all === undefined || all === null) return out;
  if (!isObject(all)) {
    log('digitalocean: ignoring "interfaces": not an object');
    return out;
  }
  for (const key of Object.keys(all)) {
    if (key !== 'public' && key !== 'private') log(`digitalocean: ignoring the interface list ${shown(key)}: only public and private are used`);
  }
  for (const type of ['public', 'private'] as const) {
    const list = all[type];
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) {
      log(`digitalocean: ignoring the ${type} interfaces: not a list`);
      continue;
    }
    list.forEach((entry: unknown, index) => {
      if (!isObject(entry)) return;
      const what = `digitalocean: ${type} interface ${index}`;
      const i: Iface = { type, index };
      const mac = cleanMac(entry.mac, log, `${what}: MAC`);
      if (mac !== undefined) i.mac = mac;
      const v4 = parseV4(entry.ipv4, log, `${what}: IPv4`);
      if (v4) i.v4 = v4;
      const v6 = parseV6(entry.ipv6, log, `${what}: IPv6`);
      if (v6) i.v6 = v6;
      const anchor = parseV4(entry.anchor_ipv4, log, `${what}: anchor IPv4`);
      if (anchor) i.anchor = { address: anchor.address, prefix: anchor.prefix };
      out.push(i);
    });
  }
  return out;
}

function nameservers(doc: Json, log: (l: string) => void): string[] {
  const dns = doc.dns;
  if (!isObject(dns) || !Array.isArray(dns.nameservers)) return [];
  return dns.nameservers.map((n: unknown) => cleanIp(n, log, 'digitalocean: the nameserver')).filter((n): n is string => n !== undefined);
}

function networkUnit(i: Iface, dns: string[]): string {
  const lines = ['# Written by oem-agent from the DigitalOcean metadata.', '[Match]', `MACAddress=${i.mac}`, '', '[Network]'];
  for (const a of [i.v4, i.v6, i.anchor]) if (a) lines.push(`Address=${a.address}/${a.prefix}`);
  if (i.type === 'public') for (const a of [i.v4, i.v6]) if (a?.gateway) lines.push(`Gateway=${a.gateway}`);
  for (const d of dns) lines.push(`DNS=${d}`);
  return lines.join('\n') + '\n';
}

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const doc = await fetchDocument(env);
  if (doc === null) {
    env.log('digitalocean: the metadata service has no metadata/v1.json');
    return md;
  }
  const a = md.attributes;
  const hostname = typeof doc.hostname === 'string' ? cleanHostname(doc.hostname, env.log, 'digitalocean: the hostname') : undefined;
  if (hostname !== undefined) {
    md.hostname = hostname;
    a.COREOS_HOSTNAME = a.COREOS_DIGITALOCEAN_HOSTNAME = hostname;
  }
  const id = doc.droplet_id;
  if ((typeof id === 'number' && Number.isSafeInteger(id) && id >= 0) || (typeof id === 'string' && /^\d{1,20}$/.test(id))) {
    a.COREOS_DIGITALOCEAN_DROPLET_ID = String(id);
  } else if (id !== undefined) env.log(`digitalocean: ignoring the droplet_id ${shown(id)}`);
  if (typeof doc.region === 'string' && /^[a-z0-9-]{1,32}$/.test(doc.region)) a.COREOS_DIGITALOCEAN_REGION = doc.region;
  else if (doc.region !== undefined) env.log(`digitalocean: ignoring the region ${shown(doc.region)}`);

  const ifaces = interfaces(doc, env.log);
  for (const i of ifaces) {
    const T = i.type.toUpperCase();
    if (i.v4) a[`COREOS_DIGITALOCEAN_IPV4_${T}_${i.index}`] = i.v4.address;
    if (i.v6) a[`COREOS_DIGITALOCEAN_IPV6_${T}_${i.index}`] = i.v6.address;
    // Anchor addresses (for reserved IPs) are on public interfaces; Afterburn names only theirs.
    if (i.anchor && i.type === 'public') a[`COREOS_DIGITALOCEAN_IPV4_ANCHOR_${i.index}`] = i.anchor.address;
    if (i.v4 && a[`COREOS_IPV4_${T}`] === undefined) a[`COREOS_IPV4_${T}`] = i.v4.address;
    if (i.v6 && a[`COREOS_IPV6_${T}`] === undefined) a[`COREOS_IPV6_${T}`] = i.v6.address;
  }
  const dns = nameservers(doc, env.log);
  let n = 0;
  for (const i of ifaces) {
    if (i.mac === undefined) {
      env.log(`digitalocean: no network unit for ${i.type} interface ${i.index}: it has no valid MAC address`);
      continue;
    }
    if (!i.v4 && !i.v6 && !i.anchor) continue;
    md.networkUnits.push({ name: networkUnitName(n++, i.type), content: networkUnit(i, dns) });
  }

  const keys = doc.public_keys;
  if (Array.isArray(keys)) md.sshKeys = cleanSshKeys(keys, env.log, 'the DigitalOcean metadata');
  else if (typeof keys === 'string') md.sshKeys = cleanSshKeys([keys], env.log, 'the DigitalOcean metadata');
  else if (keys !== undefined && keys !== null) env.log('digitalocean: ignoring public_keys: not a list');
  return md;
}

async function userdata(env: ProviderEnv): Promise<Userdata> {
  const doc = await fetchDocument(env);
  const u = doc?.user_data;
  if (typeof u !== 'string' || u === '') return null;
  return Buffer.from(u, 'utf8');
}

export const provider: MetadataProvider = { id: 'digitalocean', metadata, userdata };
