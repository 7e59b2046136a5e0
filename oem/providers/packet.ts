/**
 * Packet (Equinix Metal): the metadata service, `metadata` and `userdata` under env.metadataUrl
 * (https://metadata.platformequinix.com, the module's `metadataUrl`):
 *
 *   { "id": "2885032e-...", "hostname": "metal-1", "plan": "c3.small.x86", "facility": "ewr1",
 *     "ssh_keys": ["ssh-ed25519 AAAA..."],
 *     "network": { "bonding": { "mode": 4 },
 *       "interfaces": [{ "name": "enp1s0f0", "mac": "0c:c4:7a:e1:3d:d0", "bond": "bond0" }, ...],
 *       "addresses": [{ "address_family": 4, "public": true, "address": "147.75.104.33",
 *                       "netmask": "255.255.255.254", "gateway": "147.75.104.32", "cidr": 31, ... }, ...] },
 *     "phone_home_url": "http://tinkerbell.ewr1.packet.net/phone-home", ... }
 *
 * What Afterburn does there:
 *
 *   attributes  COREOS_PACKET_{HOSTNAME, PLAN, PHONE_HOME_URL}, and per address, counted per family
 *               and kind in the order given: COREOS_PACKET_IPV4_PUBLIC_<n> (its gateway
 *               COREOS_PACKET_IPV4_PUBLIC_GATEWAY_<n>), IPV4_PRIVATE_<n>, IPV6_PUBLIC_<n>,
 *               IPV6_PRIVATE_<n> (and their _GATEWAY_<n>); plus COREOS_HOSTNAME and the first of
 *               each kind as COREOS_IPV4_PUBLIC, COREOS_IPV4_PRIVATE, COREOS_IPV6_PUBLIC, COREOS_IPV6_PRIVATE
 *   hostname    `hostname`;  SSH keys: `ssh_keys`;  userdata: GET userdata (404 or empty: none)
 *   network     a bond netdev per bond named in `interfaces` (MACAddress= its first slave's, the
 *               [Bond] options Afterburn uses, Mode= from `bonding.mode`), a unit per interface
 *               matched by MAC (Bond=<its bond>; Unmanaged=yes when it has none), and a unit for the
 *               first bond with every address, a route per address through its gateway (public
 *               IPv4: 0.0.0.0/0, private IPv4: 10.0.0.0/8, IPv6: ::/0) and DNS= the servers networkd
 *               has now (<root>/run/systemd/netif/state). Bond units (10-oem-0-<bond>.*) sort before the
 *               interface units (a bond has its first slave's MAC), as Afterburn's 05-/10- do.
 *   check-in    POST to `phone_home_url` (Content-Type: application/json, empty body).
 *
 * The phone-home URL is the one address taken from the metadata: it must be an http(s) URL without
 * credentials, at most 2048 characters; otherwise it is dropped with a log line (no attribute, and
 * check-in fails). Bond names must be plain interface names; unit names are ours (networkUnitName).
 */
import { describe, OemError } from '../../src/shared/errors.js';
import { isIP } from 'node:net';
import { httpGet, httpGetJsonObject, httpRequest, joinUrl, showUrl } from './http.js';
import { MAX_SMALL_BYTES, readRootFile, userdataOrNull } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanIp, cleanMac, cleanPrefix, cleanSshKeys, netmaskToPrefix, networkUnitName, shown } from './values.js';

type Json = Record<string, unknown>;
type Log = (line: string) => void;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The real service (Afterburn's endpoint). */
export const PACKET_METADATA_URL = 'https://metadata.platformequinix.com';
/** The metadata document is refused above this (it is a few KiB). */
export const MAX_DOCUMENT_BYTES = 4 * 1024 * 1024;
/** Where networkd keeps the DNS servers it uses (read under env.root). */
export const NETIF_STATE = '/run/systemd/netif/state';
const MAX_URL_LENGTH = 2048;

/** systemd's names for the kernel's bonding modes 0..6 (as Afterburn maps them). */
const BONDING_MODES = ['balance-rr', 'active-backup', 'balance-xor', 'broadcast', '802.3ad', 'balance-tlb', 'balance-alb'] as const;
const MODE_LACP = 4;
/** A kernel interface name (IFNAMSIZ - 1), nothing a unit file could read differently. */
const IFNAME = /^[A-Za-z0-9_-]{1,15}$/;
/** Plan and similar single words. */
const WORD = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** `metadata`, parsed; null when the service has none (404). */
async function fetchDocument(env: ProviderEnv): Promise<Json | null> {
  return httpGetJsonObject(joinUrl(env.metadataUrl, '/metadata'), env, { optional: true, who: 'packet', maxBytes: MAX_DOCUMENT_BYTES });
}

/** An http(s) URL without credentials, at most 2048 characters (normalized), or undefined with a log line. */
export function cleanHttpUrl(value: unknown, log: Log, what: string): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  const bad = (why: string) => {
    log(`ignoring ${what} ${shown(value)}: ${why}`);
    return undefined;
  };
  if (typeof value !== 'string') return bad('not a string');
  if (value.length > MAX_URL_LENGTH) return bad(`longer than ${MAX_URL_LENGTH} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x20\x7f]/.test(value)) return bad('it contains whitespace or control characters');
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    return bad('not a URL');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return bad('not an http or https URL');
  if (u.username !== '' || u.password !== '') return bad('it carries credentials');
  if (u.href.length > MAX_URL_LENGTH) return bad(`longer than ${MAX_URL_LENGTH} characters`);
  return u.href;
}

/** The prefix length of an IPv6 netmask (ffff:ffff:ffff:ffff:: -> 64); undefined when not a contiguous mask. */
function netmask6ToPrefix(mask: string): number | undefined {
  if (isIP(mask) !== 6 || mask.includes('.')) return undefined;
  const [head = '', tail] = mask.toLowerCase().split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8) return undefined;
  const bits = groups.map((g) => parseInt(g, 16).toString(2).padStart(16, '0')).join('');
  if (!/^1*0*$/.test(bits)) return undefined;
  return bits.indexOf('0') === -1 ? 128 : bits.indexOf('0');
}

interface Address {
  family: 4 | 6;
  public: boolean;
  address: string;
  prefix: number;
  gateway?: string;
}

function addresses(network: Json, log: Log): Address[] {
  const list = network.addresses;
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) {
    log('packet: ignoring network.addresses: not a list');
    return [];
  }
  const out: Address[] = [];
  list.forEach((entry: unknown, i) => {
    const what = `packet: address ${i}`;
    if (!isObject(entry)) {
      log(`${what}: ignored, not an object`);
      return;
    }
    const address = cleanIp(entry.address, log, `${what}:`)?.toLowerCase();
    if (address === undefined) {
      if (entry.address === undefined || entry.address === null || entry.address === '') log(`${what}: ignored, it has no address`);
      return;
    }
    const family = isIP(address) as 4 | 6;
    if (entry.address_family !== undefined && entry.address_family !== family) {
      log(`${what}: ignoring ${address}: its address_family ${shown(entry.address_family)} is not ${family}`);
      return;
    }
    if (typeof entry.public !== 'boolean') {
      log(`${what}: ignoring ${address}: "public" is ${shown(entry.public)}, not true or false`);
      return;
    }
    let prefix: number | undefined;
    if (typeof entry.netmask === 'string' && entry.netmask !== '') {
      prefix = family === 4 ? netmaskToPrefix(entry.netmask) : netmask6ToPrefix(entry.netmask);
    } else {
      prefix = cleanPrefix(entry.cidr, family);
    }
    if (prefix === undefined) {
      log(`${what}: ignoring ${address}: neither the netmask ${shown(entry.netmask)} nor the cidr ${shown(entry.cidr)} is a prefix for IPv${family}`);
      return;
    }
    const a: Address = { family, public: entry.public, address, prefix };
    const gateway = cleanIp(entry.gateway, log, `${what}: the gateway`, family)?.toLowerCase();
    if (gateway !== undefined) a.gateway = gateway;
    out.push(a);
  });
  return out;
}

interface Iface {
  mac: string;
  bond?: string;
}

function interfaces(network: Json, log: Log): Iface[] {
  const list = network.interfaces;
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) {
    log('packet: ignoring network.interfaces: not a list');
    return [];
  }
  const out: Iface[] = [];
  const seen = new Set<string>();
  list.forEach((entry: unknown, i) => {
    const what = `packet: interface ${i}`;
    if (!isObject(entry)) {
      log(`${what}: ignored, not an object`);
      return;
    }
    const mac = cleanMac(entry.mac, log, `${what}: MAC`);
    if (mac === undefined) {
      if (entry.mac === undefined || entry.mac === null) log(`${what}: ignored, it has no MAC address`);
      return;
    }
    if (seen.has(mac)) {
      log(`${what}: ignored, the MAC address ${mac} is listed twice`);
      return;
    }
    const bond = entry.bond;
    if (bond !== undefined && bond !== null && (typeof bond !== 'string' || !IFNAME.test(bond))) {
      log(`${what} (${mac}): ignored, the bond name ${shown(bond)} is not an interface name (letters, digits, _ and -, at most 15)`);
      return;
    }
    seen.add(mac);
    out.push(typeof bond === 'string' ? { mac, bond } : { mac });
  });
  return out;
}

/** The DNS servers networkd uses now (its state file's DNS= line), checked; [] with a log line when there are none. */
async function currentDns(env: ProviderEnv): Promise<string[]> {
  let text: string | undefined;
  try {
    text = (await readRootFile(env, NETIF_STATE, MAX_SMALL_BYTES))?.toString('utf8');
  } catch (err) {
    env.log(`packet: cannot read ${NETIF_STATE}: ${describe(err)}; the bond gets no DNS servers`);
    return [];
  }
  const line = text
    ?.split('\n')
    .map((l) => l.replace(/\r$/, ''))
    .find((l) => l.startsWith('DNS='));
  if (line === undefined) {
    env.log(`packet: ${NETIF_STATE} ${text === undefined ? 'is not there' : 'has no DNS= line'}; the bond gets no DNS servers`);
    return [];
  }
  const out: string[] = [];
  for (const word of line.slice(4).split(/\s+/)) {
    if (word === '') continue;
    const ip = cleanIp(word, env.log, `packet: the DNS server in ${NETIF_STATE}`);
    if (ip !== undefined && !out.includes(ip)) out.push(ip);
  }
  return out;
}

const HEADER = '# Written by oem-agent from the Equinix Metal metadata.';

function routeDestination(a: Address): string {
  if (a.family === 6) return '::/0';
  return a.public ? '0.0.0.0/0' : '10.0.0.0/8';
}

async function networkUnits(doc: Json, env: ProviderEnv): Promise<Metadata['networkUnits']> {
  const network = doc.network;
  if (network === undefined || network === null) return [];
  if (!isObject(network)) {
    env.log('packet: ignoring "network": not an object');
    return [];
  }
  const ifaces = interfaces(network, env.log);
  if (ifaces.length === 0) return [];
  const addrs = addresses(network, () => {}); // logged once, by the attributes
  // The bonds, in the order they first appear, each with the MAC of its first slave.
  const bonds: { name: string; mac: string }[] = [];
  for (const i of ifaces) if (i.bond !== undefined && !bonds.some((b) => b.name === i.bond)) bonds.push({ name: i.bond, mac: i.mac });

  const units: Metadata['networkUnits'] = [];
  if (bonds.length > 0) {
    const mode = isObject(network.bonding) ? network.bonding.mode : undefined;
    const modeName = typeof mode === 'number' && Number.isInteger(mode) ? BONDING_MODES[mode] : undefined;
    if (modeName === undefined) {
      env.log(`packet: no network units: the bonding mode ${shown(mode)} is not one of 0..6`);
      return [];
    }
    const bondOptions = ['TransmitHashPolicy=layer3+4', 'MIIMonitorSec=.1', 'UpDelaySec=.2', 'DownDelaySec=.2', `Mode=${modeName}`];
    if (mode === MODE_LACP) bondOptions.push('LACPTransmitRate=fast');
    const dns = await currentDns(env);
    // Every bond's units are number 0 (told apart by the bond's name), so that they sort before
    // every interface unit: a bond has its first slave's MAC, and networkd takes the first match.
    bonds.forEach((b, index) => {
      const netdev = [HEADER, '[NetDev]', `Name=${b.name}`, 'Kind=bond', `MACAddress=${b.mac}`, '', '[Bond]', ...bondOptions];
      units.push({ name: networkUnitName(0, b.name, 'netdev'), content: netdev.join('\n') + '\n' });
      const lines = [HEADER, '[Match]', `Name=${b.name}`, '', '[Network]', ...dns.map((d) => `DNS=${d}`)];
      // Every address goes to the first bond (as Equinix Metal asks, and Afterburn does).
      if (index === 0) {
        for (const a of addrs) lines.push('', '[Address]', `Address=${a.address}/${a.prefix}`);
        for (const a of addrs) if (a.gateway !== undefined) lines.push('', '[Route]', `Destination=${routeDestination(a)}`, `Gateway=${a.gateway}`);
      }
      units.push({ name: networkUnitName(0, b.name, 'network'), content: lines.join('\n') + '\n' });
    });
  } else {
    env.log('packet: no bond among the interfaces; the addresses are left unassigned and the interfaces unmanaged');
  }
  let n = 1;
  for (const i of ifaces) {
    const lines = [HEADER, '[Match]', `MACAddress=${i.mac}`, '', '[Network]'];
    if (i.bond !== undefined) lines.push(`Bond=${i.bond}`);
    else lines.push('', '[Link]', 'Unmanaged=yes');
    units.push({ name: networkUnitName(n++, i.mac.replace(/:/g, ''), 'network'), content: lines.join('\n') + '\n' });
  }
  return units;
}

function attributes(doc: Json, md: Metadata, log: Log): void {
  const a = md.attributes;
  const hostname = typeof doc.hostname === 'string' ? cleanHostname(doc.hostname, log, 'packet: the hostname') : undefined;
  if (hostname !== undefined) {
    md.hostname = hostname;
    a.COREOS_HOSTNAME = a.COREOS_PACKET_HOSTNAME = hostname;
  } else if (doc.hostname !== undefined && typeof doc.hostname !== 'string') log(`packet: ignoring the hostname ${shown(doc.hostname)}: not a string`);

  if (typeof doc.plan === 'string' && WORD.test(doc.plan)) a.COREOS_PACKET_PLAN = doc.plan;
  else if (doc.plan !== undefined && doc.plan !== null) log(`packet: ignoring the plan ${shown(doc.plan)}: not a single word`);

  const phoneHome = cleanHttpUrl(doc.phone_home_url, log, 'packet: the phone_home_url');
  if (phoneHome !== undefined) a.COREOS_PACKET_PHONE_HOME_URL = phoneHome;

  if (doc.network === undefined || doc.network === null) return;
  if (!isObject(doc.network)) return; // logged with the network units
  const counters: Record<string, number> = {};
  for (const addr of addresses(doc.network, log)) {
    const kind = `IPV${addr.family}_${addr.public ? 'PUBLIC' : 'PRIVATE'}`;
    const n = counters[kind] ?? 0;
    counters[kind] = n + 1;
    a[`COREOS_PACKET_${kind}_${n}`] = addr.address;
    if (addr.gateway !== undefined) a[`COREOS_PACKET_${kind}_GATEWAY_${n}`] = addr.gateway;
    if (a[`COREOS_${kind}`] === undefined) a[`COREOS_${kind}`] = addr.address;
  }
}

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const doc = await fetchDocument(env);
  if (doc === null) {
    env.log('packet: the metadata service has no metadata');
    return md;
  }
  attributes(doc, md, env.log);
  md.networkUnits = await networkUnits(doc, env);
  const keys = doc.ssh_keys;
  if (Array.isArray(keys)) md.sshKeys = cleanSshKeys(keys, env.log, 'the Equinix Metal metadata');
  else if (keys !== undefined && keys !== null) env.log('packet: ignoring ssh_keys: not a list');
  return md;
}

/** GET userdata: the bytes as given (null: 404 or empty). */
async function userdata(env: ProviderEnv): Promise<Userdata> {
  const b = await httpGet(joinUrl(env.metadataUrl, '/userdata'), env, { optional: true });
  return userdataOrNull(b, 'packet: the userdata');
}

/** The phone-home: POST to the metadata's phone_home_url (what Afterburn's boot check-in does). */
async function checkIn(env: ProviderEnv): Promise<void> {
  let doc: Json | null;
  try {
    doc = await fetchDocument(env);
  } catch (err) {
    throw new OemError(`packet: cannot check in: the metadata is not available: ${describe(err)}`, { code: 'network', cause: err });
  }
  const url = doc === null ? undefined : cleanHttpUrl(doc.phone_home_url, env.log, 'packet: the phone_home_url');
  if (url === undefined) {
    throw new OemError('packet: cannot check in: the metadata has no usable phone_home_url', { code: 'network' });
  }
  try {
    await httpRequest(url, env, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '' });
  } catch (err) {
    throw new OemError(`packet: the phone-home failed: ${describe(err)}`, { code: 'network', cause: err });
  }
  env.log(`packet: phoned home to ${showUrl(url)}`);
}

export const provider: MetadataProvider = { id: 'packet', metadataUrl: PACKET_METADATA_URL, metadata, userdata, checkIn };
