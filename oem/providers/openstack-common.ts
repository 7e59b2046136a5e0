/**
 * What the OpenStack-family providers (openstack, rackspace, rackspace-onmetal) share: reading a
 * config drive without leaving it, the OpenStack metadata service, the meta_data.json fields, and
 * turning network_data.json (or OnMetal's vendor_data.json `network_info`, the format
 * network_data.json grew out of) into networkd units.
 *
 * Everything read is platform input: sizes are capped (userdata 16 MiB, JSON 1 MiB), the config
 * drive directory is found under env.root and files are read with the drive as the boundary
 * (src/shared/safe-fs.ts: symlinks resolve as in a chroot at the drive, so none leads out of it),
 * values are checked with values.ts, and unit file names are made here, never taken from metadata.
 */
import { readdir } from 'node:fs/promises';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { posix } from 'node:path';
import { describe, OemError } from '../../src/shared/errors.js';
import { lstatEntry, readFileIn as readFileInTree, resolveIn } from '../../src/shared/safe-fs.js';
import { HttpError, httpGet, joinUrl, showUrl } from './http.js';
import { MAX_USERDATA_BYTES } from './local-io.js';
import type { Metadata, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanMac, cleanSshKeys, hostnameProblem, netmaskToPrefix, shown } from './values.js';

export const MAX_JSON_BYTES = 1024 * 1024;

type Log = (line: string) => void;
type Json = Record<string, unknown>;

export function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function errCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

// ---------------------------------------------------------------------------------------------
// Files

/** Whether `path` inside `jail` is a directory. */
async function isDirIn(jail: string, path: string): Promise<boolean> {
  const host = await resolveIn(jail, path);
  return host !== null && (await lstatEntry(host))?.kind === 'dir';
}

/**
 * A regular file inside `jail` (links resolved with `jail` as the root), at most `limit` bytes;
 * null when it is missing, and (logged) when it cannot be used: not a regular file, too big, a
 * symlink loop. `what` names it in log lines.
 */
export async function readFileIn(jail: string, path: string, limit: number, log: Log, what = path): Promise<Buffer | null> {
  try {
    return await readFileInTree(jail, path, limit, what);
  } catch (err) {
    if (!(err instanceof OemError)) throw err;
    log(`${err.message}; ignored`);
    return null;
  }
}

/** A JSON object from `buf`, or null (logged) when it is not one. */
export function parseJsonObject(buf: Buffer | null, what: string, log: Log): Json | null {
  if (buf === null) return null;
  let value: unknown;
  try {
    value = JSON.parse(buf.toString('utf8'));
  } catch (err) {
    log(`${what}: not valid JSON (${describe(err)}); ignored`);
    return null;
  }
  if (!isObject(value)) {
    log(`${what}: not a JSON object; ignored`);
    return null;
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Values

/** A value fit for a KEY=value line and a log: no whitespace, quotes, backslashes, `$`, control characters. */
// eslint-disable-next-line no-control-regex
const PLAIN_VALUE = /^[^\s"'\\`$\x00-\x1f\x7f]{1,255}$/;

/** An interface name the kernel takes and a unit file name can carry (no `..` anywhere). */
export function validIfname(value: unknown): value is string {
  return typeof value === 'string' && /^[A-Za-z0-9_.-]{1,15}$/.test(value) && !value.includes('..') && value !== '.';
}

/** A MAC address (`:` or `-` separated), lowercased with colons; undefined (logged when present) otherwise. */
function macOf(value: unknown, log: Log, what: string): string | undefined {
  return cleanMac(typeof value === 'string' ? value.replaceAll('-', ':') : value, log, what);
}

// ---------------------------------------------------------------------------------------------
// meta_data.json

export interface InstanceInfo {
  attributes: Record<string, string>;
  hostname?: string;
  sshKeys: string[];
}

/**
 * What meta_data.json says: COREOS_OPENSTACK_INSTANCE_UUID, COREOS_OPENSTACK_AVAILABILITY_ZONE,
 * the host name (`hostname`, else `name`) as COREOS_HOSTNAME, and the keys of `public_keys`
 * ({name: key}) and `keys` ([{type: "ssh", data}]), each once.
 */
export function instanceInfo(meta: Json | null, what: string, log: Log): InstanceInfo {
  const info: InstanceInfo = { attributes: {}, sshKeys: [] };
  if (meta === null) return info;
  const plain = (field: string, attribute: string): void => {
    const raw = meta[field];
    if (raw === undefined || raw === null || raw === '') return;
    if (typeof raw === 'string' && PLAIN_VALUE.test(raw)) info.attributes[attribute] = raw;
    else log(`ignoring the ${field} ${shown(raw)} from ${what}: not a plain value`);
  };
  plain('uuid', 'COREOS_OPENSTACK_INSTANCE_UUID');
  plain('availability_zone', 'COREOS_OPENSTACK_AVAILABILITY_ZONE');
  for (const field of ['hostname', 'name']) {
    const raw = meta[field];
    if (raw === undefined || raw === null || raw === '') continue;
    if (typeof raw !== 'string') {
      log(`ignoring the ${field} from ${what}: not a string (${shown(raw)})`);
      continue;
    }
    const name = cleanHostname(raw, log, `the ${field} from ${what}`);
    if (name !== undefined) {
      info.hostname = name;
      info.attributes.COREOS_HOSTNAME = name;
      break;
    }
  }

  const keys: string[] = [];
  const publicKeys = meta.public_keys;
  if (isObject(publicKeys)) {
    // The names are labels only: never a path, never written anywhere.
    for (const [name, value] of Object.entries(publicKeys)) keys.push(...cleanSshKeys([value], log, `${what} (public key ${shown(name)})`));
  } else if (publicKeys !== undefined && publicKeys !== null) {
    log(`ignoring public_keys in ${what}: not an object`);
  }
  if (Array.isArray(meta.keys)) {
    meta.keys.forEach((entry, i) => {
      if (isObject(entry) && (entry.type === undefined || entry.type === 'ssh')) keys.push(...cleanSshKeys([entry.data], log, `${what} (keys[${i}])`));
    });
  }
  // Once each (the same key is usually in both lists).
  info.sshKeys = cleanSshKeys(keys, log, what);
  return info;
}

/** COREOS_IPV4_PRIVATE / COREOS_IPV4_PUBLIC / COREOS_HOSTNAME from EC2-style values, when valid. */
export function ec2Attributes(values: { local?: unknown; public?: unknown; hostname?: unknown }, what: string, log: Log): Record<string, string> {
  const attrs: Record<string, string> = {};
  const ip = (value: unknown, key: string, field: string): void => {
    if (value === undefined || value === null || value === '') return;
    if (typeof value === 'string' && isIPv4(value.trim())) attrs[key] = value.trim();
    else log(`ignoring the ${field} ${shown(value)} from ${what}: not an IPv4 address`);
  };
  ip(values.local, 'COREOS_IPV4_PRIVATE', 'local-ipv4');
  ip(values.public, 'COREOS_IPV4_PUBLIC', 'public-ipv4');
  if (typeof values.hostname === 'string' && values.hostname.trim() !== '') {
    const name = cleanHostname(values.hostname.trim(), log, `the hostname from ${what}`);
    if (name !== undefined) attrs.COREOS_HOSTNAME = name;
  }
  return attrs;
}

/**
 * Afterburn's openstack attributes (its config drive and metadata service platforms):
 * COREOS_OPENSTACK_HOSTNAME, _INSTANCE_ID (the EC2-style id), _INSTANCE_TYPE, _IPV4_LOCAL,
 * _IPV4_PUBLIC, from the values given when they are usable. Addresses are taken as ec2Attributes
 * checked them (`ec2`: its result); the id and type are checked here, with a log line when dropped.
 */
function openstackAttributes(
  values: { hostname?: unknown; instanceId?: unknown; instanceType?: unknown },
  ec2: Record<string, string>,
  what: string,
  log: Log,
): Record<string, string> {
  const attrs: Record<string, string> = {};
  const plain = (value: unknown, key: string, field: string): void => {
    if (value === undefined || value === null || value === '') return;
    const v = typeof value === 'string' ? value.trim() : value;
    if (typeof v === 'string' && PLAIN_VALUE.test(v)) attrs[key] = v;
    else log(`ignoring the ${field} ${shown(value)} from ${what}: not a plain value`);
  };
  // The name as the platform gave it (case kept, one final dot removed), when it is a host name.
  // A bad one is not logged here: instanceInfo and ec2Attributes log it where it comes from.
  const name = typeof values.hostname === 'string' ? values.hostname.trim() : '';
  if (name !== '' && hostnameProblem(name) === undefined) attrs.COREOS_OPENSTACK_HOSTNAME = name.replace(/\.$/, '');
  plain(values.instanceId, 'COREOS_OPENSTACK_INSTANCE_ID', 'instance-id');
  plain(values.instanceType, 'COREOS_OPENSTACK_INSTANCE_TYPE', 'instance-type');
  if (ec2.COREOS_IPV4_PRIVATE !== undefined) attrs.COREOS_OPENSTACK_IPV4_LOCAL = ec2.COREOS_IPV4_PRIVATE;
  if (ec2.COREOS_IPV4_PUBLIC !== undefined) attrs.COREOS_OPENSTACK_IPV4_PUBLIC = ec2.COREOS_IPV4_PUBLIC;
  return attrs;
}

// ---------------------------------------------------------------------------------------------
// Networks

interface Route {
  destination: string;
  prefix: number;
  gateway: string;
}

interface LinkConfig {
  /** networkd [Match] line. */
  match: string;
  /** The unit's name part (an interface name, or one made here). */
  label: string;
  kind: 'phy' | 'bond' | 'vlan';
  /** Device name for bonds and VLANs. */
  device?: string;
  mac?: string;
  mtu?: number;
  bondLinks: string[];
  bond: string[];
  vlanId?: number;
  vlanLink?: string;
  addresses: string[];
  gateways: string[];
  routes: Route[];
  dns: string[];
  dhcp4: boolean;
  dhcp6: boolean;
  vlans: string[];
  bondMaster?: string;
}

const BOND_MODES: Record<string, string> = {
  'balance-rr': 'balance-rr',
  'active-backup': 'active-backup',
  'balance-xor': 'balance-xor',
  broadcast: 'broadcast',
  '802.3ad': '802.3ad',
  'balance-tlb': 'balance-tlb',
  'balance-alb': 'balance-alb',
  // The Nova spec's example says 802.1ad; it means LACP.
  '802.1ad': '802.3ad',
  '0': 'balance-rr',
  '1': 'active-backup',
  '2': 'balance-xor',
  '3': 'broadcast',
  '4': '802.3ad',
  '5': 'balance-tlb',
  '6': 'balance-alb',
};
const HASH_POLICIES = new Set(['layer2', 'layer3+4', 'layer2+3', 'encap2+3', 'encap3+4', 'vlan+srcmac']);
const LACP_RATES = new Set(['slow', 'fast']);

/** Prefix length of a dotted IPv4 or an IPv6 netmask (or a plain number), undefined if invalid. */
function prefixOf(netmask: unknown, v6: boolean): number | undefined {
  const max = v6 ? 128 : 32;
  if (typeof netmask === 'number' || (typeof netmask === 'string' && /^\d{1,3}$/.test(netmask))) {
    const n = Number(netmask);
    return Number.isInteger(n) && n >= 0 && n <= max ? n : undefined;
  }
  if (typeof netmask !== 'string') return undefined;
  if (!v6) return netmaskToPrefix(netmask);
  const groups = isIPv6(netmask) ? expandIPv6(netmask) : undefined;
  if (groups === undefined) return undefined;
  const bits = groups.map((g) => g.toString(2).padStart(16, '0')).join('');
  return /^1*0*$/.test(bits) ? bits.indexOf('0') === -1 ? 128 : bits.indexOf('0') : undefined;
}

/** The eight groups of an IPv6 address (no embedded IPv4 form), undefined if it is not one. */
function expandIPv6(addr: string): number[] | undefined {
  if (!/^[0-9A-Fa-f:]+$/.test(addr)) return undefined;
  const parse = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => (/^[0-9A-Fa-f]{1,4}$/.test(g) ? parseInt(g, 16) : NaN)));
  const halves = addr.split('::');
  if (halves.length > 2) return undefined;
  const head = parse(halves[0] ?? '');
  const tail = halves.length === 2 ? parse(halves[1] ?? '') : [];
  const fill = halves.length === 2 ? 8 - head.length - tail.length : 0;
  if (fill < 0) return undefined;
  const groups = [...head, ...new Array<number>(fill).fill(0), ...tail];
  return groups.length === 8 && groups.every((g) => Number.isInteger(g)) ? groups : undefined;
}

/** An address with its prefix from `ip_address` (maybe `addr/len`) and `netmask`. */
function addressOf(ipAddress: unknown, netmask: unknown, v6: boolean): { addr: string; prefix: number } | undefined {
  if (typeof ipAddress !== 'string') return undefined;
  const [addr = '', len] = ipAddress.split('/');
  if (!(v6 ? isIPv6(addr) : isIPv4(addr))) return undefined;
  const prefix = len !== undefined ? prefixOf(len, v6) : prefixOf(netmask, v6);
  return prefix === undefined ? undefined : { addr, prefix };
}

function isPrivateIPv4(addr: string): boolean {
  const [a = 0, b = 0] = addr.split('.').map(Number);
  return a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127);
}

export interface NetworkConfig {
  units: Metadata['networkUnits'];
  /** COREOS_IPV4_* / COREOS_IPV6_* from the first static address of each kind. */
  attributes: Record<string, string>;
}

/**
 * networkd units for network_data.json-style data ({links, networks, services}): a .netdev per bond
 * and VLAN (10-oem-NAME.netdev), a .network per bond and VLAN (20-oem-NAME.network, matched by
 * name) and per physical link that needs one (30-oem-NAME.network, matched by MAC address, else by
 * name). Physical links sort after the virtual devices: a bond or VLAN shares a MAC address with
 * its first port and must find its own unit first. DHCP-only physical links get no unit.
 */
export function networkConfig(data: unknown, what: string, log: Log): NetworkConfig {
  const result: NetworkConfig = { units: [], attributes: {} };
  if (!isObject(data)) {
    if (data !== undefined && data !== null) log(`${what}: not a JSON object; no network units`);
    return result;
  }
  const links = new Map<string, LinkConfig>();
  const labels = new Set<string>();
  const rawLinks = Array.isArray(data.links) ? data.links : [];
  rawLinks.forEach((raw, index) => {
    if (!isObject(raw) || typeof raw.id !== 'string') {
      log(`${what}: links[${index}] has no id; skipped`);
      return;
    }
    const id = raw.id;
    if (links.has(id)) {
      log(`${what}: link ${shown(id)} appears twice; the second is skipped`);
      return;
    }
    const type = raw.type;
    const kind = type === 'bond' ? 'bond' : type === 'vlan' ? 'vlan' : 'phy';
    const mtu = typeof raw.mtu === 'number' && Number.isInteger(raw.mtu) && raw.mtu >= 68 && raw.mtu <= 65535 ? raw.mtu : undefined;
    const base: Omit<LinkConfig, 'match' | 'label' | 'kind'> = {
      bondLinks: [],
      bond: [],
      addresses: [],
      gateways: [],
      routes: [],
      dns: [],
      dhcp4: false,
      dhcp6: false,
      vlans: [],
      mtu,
    };
    if (kind === 'phy') {
      const mac = macOf(raw.ethernet_mac_address, log, `the MAC address of link ${shown(id)} in ${what}`);
      let label: string;
      let match: string;
      if (mac !== undefined) {
        match = `MACAddress=${mac}`;
        // The id is only a label here; one that is not a usable name gets a made-up one.
        label = validIfname(id) && !labels.has(id) ? id : freshLabel(labels, `link${index}`);
      } else if (validIfname(id)) {
        match = `Name=${id}`;
        label = id;
      } else {
        log(`${what}: link ${shown(id)} has no MAC address and is not a valid interface name; skipped`);
        return;
      }
      if (labels.has(label)) {
        log(`${what}: link ${shown(id)} clashes with another link's name; skipped`);
        return;
      }
      labels.add(label);
      links.set(id, { ...base, kind, match, label, mac });
      return;
    }
    if (!validIfname(id)) {
      log(`${what}: ${kind} ${shown(id)} is not a valid interface name; skipped`);
      return;
    }
    if (labels.has(id)) {
      log(`${what}: ${kind} ${shown(id)} clashes with another link's name; skipped`);
      return;
    }
    const link: LinkConfig = { ...base, kind, match: `Name=${id}`, label: id, device: id };
    if (kind === 'bond') {
      link.mac = macOf(raw.ethernet_mac_address, log, `the MAC address of bond ${id} in ${what}`);
      const bondLinks = Array.isArray(raw.bond_links) ? raw.bond_links.filter((l): l is string => typeof l === 'string') : [];
      link.bondLinks = bondLinks;
      if (raw.bond_mode !== undefined) {
        const mode = BOND_MODES[String(raw.bond_mode)];
        if (mode !== undefined) link.bond.push(`Mode=${mode}`);
        else log(`${what}: bond ${id}: unknown bond_mode ${shown(raw.bond_mode)}; left to the default`);
      }
      const hash = raw.bond_xmit_hash_policy;
      if (typeof hash === 'string' && HASH_POLICIES.has(hash)) link.bond.push(`TransmitHashPolicy=${hash}`);
      else if (hash !== undefined && hash !== null) log(`${what}: bond ${id}: unknown bond_xmit_hash_policy ${shown(hash)}; ignored`);
      const rate = raw.bond_lacp_rate;
      if (typeof rate === 'string' && LACP_RATES.has(rate)) link.bond.push(`LACPTransmitRate=${rate}`);
      else if (rate !== undefined && rate !== null) log(`${what}: bond ${id}: unknown bond_lacp_rate ${shown(rate)}; ignored`);
      const miimon = Number(raw.bond_miimon);
      if (raw.bond_miimon !== undefined && raw.bond_miimon !== null) {
        if (Number.isInteger(miimon) && miimon >= 0 && miimon <= 1_000_000) link.bond.push(`MIIMonitorSec=${miimon}ms`);
        else log(`${what}: bond ${id}: bond_miimon ${shown(raw.bond_miimon)} is not a number; ignored`);
      }
    } else {
      const vlanId = Number(raw.vlan_id);
      if (!Number.isInteger(vlanId) || vlanId < 0 || vlanId > 4094 || raw.vlan_id === null || raw.vlan_id === '') {
        log(`${what}: vlan ${id}: vlan_id ${shown(raw.vlan_id)} is not a VLAN id; skipped`);
        return;
      }
      if (typeof raw.vlan_link !== 'string' || raw.vlan_link === id) {
        log(`${what}: vlan ${id} has no usable vlan_link; skipped`);
        return;
      }
      link.vlanId = vlanId;
      link.vlanLink = raw.vlan_link;
      link.mac = macOf(raw.vlan_mac_address ?? raw.ethernet_mac_address, log, `the MAC address of vlan ${id} in ${what}`);
    }
    labels.add(id);
    links.set(id, link);
  });

  // Bond ports and VLAN parents; a VLAN whose parent is gone goes too (and so on down).
  for (const link of links.values()) {
    if (link.kind !== 'bond') continue;
    for (const portId of link.bondLinks) {
      const port = links.get(portId);
      if (port === undefined) log(`${what}: bond ${link.device}: port ${shown(portId)} is not a usable link; left out`);
      else if (port.kind !== 'phy') log(`${what}: bond ${link.device}: port ${shown(portId)} is not a physical link; left out`);
      else if (port.bondMaster !== undefined) log(`${what}: link ${shown(portId)} is in two bonds; left out of ${link.device}`);
      else port.bondMaster = link.device;
    }
  }
  let changed = true;
  while (changed) {
    changed = false;
    for (const [id, link] of links) {
      if (link.kind === 'vlan' && (link.vlanLink === undefined || !links.has(link.vlanLink))) {
        log(`${what}: vlan ${id}: parent ${shown(link.vlanLink ?? '')} is not a usable link; skipped`);
        links.delete(id);
        changed = true;
      }
    }
  }
  for (const link of links.values()) {
    if (link.kind === 'vlan' && link.vlanLink !== undefined) links.get(link.vlanLink)?.vlans.push(link.device!);
  }

  // Global DNS servers.
  const globalDns: string[] = [];
  const addDns = (list: string[], value: unknown, where: string): void => {
    if (typeof value === 'string' && isIP(value) !== 0) {
      if (!list.includes(value)) list.push(value);
    } else {
      log(`${what}: ${where}: DNS server ${shown(value)} is not an IP address; ignored`);
    }
  };
  const services = (value: unknown, list: string[], where: string): void => {
    if (!Array.isArray(value)) return;
    for (const s of value) if (isObject(s) && s.type === 'dns') addDns(list, s.address, where);
  };
  services(data.services, globalDns, 'services');

  // Networks.
  const staticLinks = new Set<LinkConfig>();
  const rawNetworks = Array.isArray(data.networks) ? data.networks : [];
  rawNetworks.forEach((raw, index) => {
    if (!isObject(raw)) return;
    const name = typeof raw.id === 'string' ? shown(raw.id) : `networks[${index}]`;
    const link = typeof raw.link === 'string' ? links.get(raw.link) : undefined;
    if (link === undefined) {
      log(`${what}: network ${name}: link ${shown(raw.link)} is not a usable link; skipped`);
      return;
    }
    const type = raw.type;
    if (type === 'ipv4_dhcp') {
      link.dhcp4 = true;
      return;
    }
    if (type === 'ipv6_dhcp' || type === 'ipv6_dhcpv6-stateful' || type === 'ipv6_dhcpv6-stateless') {
      link.dhcp6 = true;
      return;
    }
    if (type === 'ipv6_slaac') return; // router advertisements are on by default
    if (type !== 'ipv4' && type !== 'ipv6') {
      log(`${what}: network ${name}: unknown type ${shown(type)}; skipped`);
      return;
    }
    const v6 = type === 'ipv6';
    const address = addressOf(raw.ip_address, raw.netmask, v6);
    if (address === undefined) {
      log(`${what}: network ${name}: no usable ${type} address (ip_address ${shown(raw.ip_address)}, netmask ${shown(raw.netmask)}); skipped`);
      return;
    }
    link.addresses.push(`${address.addr}/${address.prefix}`);
    staticLinks.add(link);
    if (v6) {
      const first = address.addr.toLowerCase();
      const key = first.startsWith('fc') || first.startsWith('fd') ? 'COREOS_IPV6_PRIVATE' : first.startsWith('fe80') ? undefined : 'COREOS_IPV6_PUBLIC';
      if (key !== undefined) result.attributes[key] ??= address.addr;
    } else if (!address.addr.startsWith('169.254.')) {
      result.attributes[isPrivateIPv4(address.addr) ? 'COREOS_IPV4_PRIVATE' : 'COREOS_IPV4_PUBLIC'] ??= address.addr;
    }
    const sameFamily = (a: unknown): a is string => typeof a === 'string' && (v6 ? isIPv6(a) : isIPv4(a));
    if (raw.gateway !== undefined && raw.gateway !== null) {
      if (sameFamily(raw.gateway)) {
        if (!link.gateways.includes(raw.gateway)) link.gateways.push(raw.gateway);
      } else {
        log(`${what}: network ${name}: gateway ${shown(raw.gateway)} is not an ${type} address; ignored`);
      }
    }
    if (Array.isArray(raw.routes)) {
      raw.routes.forEach((route, i) => {
        const dest = isObject(route) ? route.network : undefined;
        const gateway = isObject(route) ? route.gateway : undefined;
        const prefix = isObject(route) ? prefixOf(route.netmask, v6) : undefined;
        if (!sameFamily(dest) || !sameFamily(gateway) || prefix === undefined) {
          log(`${what}: network ${name}: routes[${i}] is not a usable ${type} route; ignored`);
          return;
        }
        if (prefix === 0) {
          if (!link.gateways.includes(gateway)) link.gateways.push(gateway);
        } else {
          link.routes.push({ destination: dest, prefix, gateway });
        }
      });
    }
    if (Array.isArray(raw.dns_nameservers)) for (const d of raw.dns_nameservers) addDns(link.dns, d, `network ${name}`);
    services(raw.services, link.dns, `network ${name}`);
  });
  for (const link of staticLinks) for (const d of globalDns) if (!link.dns.includes(d)) link.dns.push(d);

  // Units.
  const netdevs: Metadata['networkUnits'] = [];
  const virtual: Metadata['networkUnits'] = [];
  const physical: Metadata['networkUnits'] = [];
  for (const link of links.values()) {
    if (link.kind !== 'phy') {
      const lines = ['[NetDev]', `Name=${link.device}`, `Kind=${link.kind}`];
      if (link.mac !== undefined) lines.push(`MACAddress=${link.mac}`);
      if (link.mtu !== undefined) lines.push(`MTUBytes=${link.mtu}`);
      if (link.kind === 'bond' && link.bond.length > 0) lines.push('', '[Bond]', ...link.bond);
      if (link.kind === 'vlan') lines.push('', '[VLAN]', `Id=${link.vlanId}`);
      netdevs.push({ name: `10-oem-${link.label}.netdev`, content: lines.join('\n') + '\n' });
    }
    const needed = link.kind !== 'phy' || link.addresses.length > 0 || link.bondMaster !== undefined || link.vlans.length > 0;
    if (!needed) continue;
    const lines = ['[Match]', link.match];
    if (link.kind === 'phy' && link.mtu !== undefined) lines.push('', '[Link]', `MTUBytes=${link.mtu}`);
    lines.push('', '[Network]');
    const dhcp = link.dhcp4 && link.dhcp6 ? 'yes' : link.dhcp4 ? 'ipv4' : link.dhcp6 ? 'ipv6' : undefined;
    if (dhcp !== undefined) lines.push(`DHCP=${dhcp}`);
    if (link.bondMaster !== undefined) lines.push(`Bond=${link.bondMaster}`);
    for (const v of link.vlans) lines.push(`VLAN=${v}`);
    for (const a of link.addresses) lines.push(`Address=${a}`);
    for (const g of link.gateways) lines.push(`Gateway=${g}`);
    for (const d of link.dns) lines.push(`DNS=${d}`);
    for (const r of link.routes) lines.push('', '[Route]', `Destination=${r.destination}/${r.prefix}`, `Gateway=${r.gateway}`);
    const unit = { name: `${link.kind === 'phy' ? 30 : 20}-oem-${link.label}.network`, content: lines.join('\n') + '\n' };
    (link.kind === 'phy' ? physical : virtual).push(unit);
  }
  result.units = [...netdevs, ...virtual, ...physical];
  return result;
}

function freshLabel(used: Set<string>, wanted: string): string {
  let label = wanted;
  for (let n = 1; used.has(label); n++) label = `${wanted}-${n}`;
  return label;
}

// ---------------------------------------------------------------------------------------------
// Config drive

/** A config drive: its host directory and the version directory to read (`openstack/<version>`). */
export interface Drive {
  host: string;
  version: string;
  /** env.configDrive, for messages. */
  shownAs: string;
}

/**
 * The config drive at env.configDrive (found under env.root; links on the way resolve inside the
 * root) with the version directory to read: `openstack/latest`, else the newest date-named one
 * (2013-10-17, ...). Null when the directory is missing or has no such tree.
 */
export async function findDrive(env: ProviderEnv): Promise<Drive | null> {
  try {
    return await findDriveIn(env);
  } catch (err) {
    if (!(err instanceof OemError)) throw err;
    env.log(`config drive ${env.configDrive}: ${err.message}; ignored`);
    return null;
  }
}

async function findDriveIn(env: ProviderEnv): Promise<Drive | null> {
  const host = await resolveIn(env.root, env.configDrive);
  if (host === null || !(await isDirIn(env.root, env.configDrive))) return null;
  if (!(await isDirIn(host, 'openstack'))) return null;
  const openstackDir = await resolveIn(host, 'openstack');
  let names: string[] = [];
  try {
    names = openstackDir === null ? [] : await readdir(openstackDir);
  } catch (err) {
    if (errCode(err) !== 'ENOENT' && errCode(err) !== 'ENOTDIR') throw err;
  }
  const dated = names.filter((n) => /^\d{4}-\d{2}-\d{2}$/.test(n)).sort();
  const candidates = [...(names.includes('latest') ? ['latest'] : []), ...dated.reverse()];
  for (const name of candidates) {
    const version = `openstack/${name}`;
    if (await isDirIn(host, version)) return { host, version, shownAs: env.configDrive };
  }
  return null;
}

async function readDrive(env: ProviderEnv, drive: Drive, rel: string, limit: number): Promise<Buffer | null> {
  return readFileIn(drive.host, rel, limit, env.log, posix.join(drive.shownAs, rel));
}

async function driveJson(env: ProviderEnv, drive: Drive, rel: string): Promise<Json | null> {
  return parseJsonObject(await readDrive(env, drive, rel, MAX_JSON_BYTES), posix.join(drive.shownAs, rel), env.log);
}

export interface DriveOptions {
  /** Where network configuration comes from, in order of preference. */
  network: ('network_data' | 'vendor_data')[];
  /** Also Afterburn's openstack attributes (openstackAttributes): meta_data.json's hostname and the
   * EC2 data's instance-id, instance-type, local-ipv4 and public-ipv4. */
  openstackAttributes?: boolean;
}

/**
 * Metadata from a config drive: <version>/meta_data.json, the network configuration
 * (<version>/network_data.json, <version>/vendor_data.json `network_info`; options.network says
 * which first), and ec2/latest/meta-data.json (local-ipv4, public-ipv4) when the drive has it.
 * Addresses the EC2 data does not give come from the static networks.
 */
export async function driveMetadata(env: ProviderEnv, drive: Drive, options: DriveOptions): Promise<Metadata> {
  const metaRel = `${drive.version}/meta_data.json`;
  const meta = await driveJson(env, drive, metaRel);
  const info = instanceInfo(meta, posix.join(drive.shownAs, metaRel), env.log);
  const attributes: Record<string, string> = {};
  const ec2Rel = 'ec2/latest/meta-data.json';
  const ec2 = await driveJson(env, drive, ec2Rel);
  const ec2Attrs = ec2 === null ? {} : ec2Attributes({ local: ec2['local-ipv4'], public: ec2['public-ipv4'] }, posix.join(drive.shownAs, ec2Rel), env.log);
  Object.assign(attributes, ec2Attrs);
  let network: NetworkConfig = { units: [], attributes: {} };
  for (const source of options.network) {
    if (source === 'network_data') {
      const rel = `${drive.version}/network_data.json`;
      const data = await driveJson(env, drive, rel);
      if (data !== null) {
        network = networkConfig(data, posix.join(drive.shownAs, rel), env.log);
        break;
      }
    } else {
      const rel = `${drive.version}/vendor_data.json`;
      const vendor = await driveJson(env, drive, rel);
      if (vendor !== null && vendor.network_info !== undefined && vendor.network_info !== null) {
        network = networkConfig(vendor.network_info, `${posix.join(drive.shownAs, rel)} network_info`, env.log);
        break;
      }
    }
  }
  for (const [k, v] of Object.entries(network.attributes)) attributes[k] ??= v;
  Object.assign(attributes, info.attributes);
  if (options.openstackAttributes) {
    const values = { hostname: meta?.hostname, instanceId: ec2?.['instance-id'], instanceType: ec2?.['instance-type'] };
    Object.assign(attributes, openstackAttributes(values, ec2Attrs, posix.join(drive.shownAs, ec2Rel), env.log));
  }
  const md: Metadata = { attributes, sshKeys: info.sshKeys, networkUnits: network.units };
  if (info.hostname !== undefined) md.hostname = info.hostname;
  return md;
}

/** <version>/user_data from a config drive (null: none, or empty). */
export async function driveUserdata(env: ProviderEnv, drive: Drive): Promise<Userdata> {
  const data = await readDrive(env, drive, `${drive.version}/user_data`, MAX_USERDATA_BYTES);
  return data === null || data.length === 0 ? null : data;
}

// ---------------------------------------------------------------------------------------------
// Metadata service

/** GET with http.ts (404: null); a body over `limit` is refused with a log line. */
async function fetchLimited(env: ProviderEnv, path: string, limit: number): Promise<Buffer | null> {
  const url = joinUrl(env.metadataUrl, path);
  const body = await httpGet(url, env, { optional: true });
  if (body !== null && body.length > limit) {
    env.log(`${showUrl(url)}: ${body.length} bytes, more than the ${limit} allowed; ignored`);
    return null;
  }
  return body;
}

/** Like fetchLimited, but a failure (after http.ts's retries) is logged and taken as absent. */
async function fetchSecondary(env: ProviderEnv, path: string, limit: number): Promise<Buffer | null> {
  try {
    return await fetchLimited(env, path, limit);
  } catch (err) {
    if (!(err instanceof HttpError)) throw err;
    env.log(`${err.message}; going on without it`);
    return null;
  }
}

export interface ServiceOptions {
  /** Also Afterburn's openstack attributes (openstackAttributes, from the EC2-style hostname,
   * instance-id, instance-type, local-ipv4, public-ipv4) and, when meta_data.json has no keys, the
   * EC2-style public-keys (Afterburn's source of keys on the metadata service). */
  openstackAttributes?: boolean;
}

/**
 * Metadata from the OpenStack metadata service at env.metadataUrl: openstack/latest/meta_data.json
 * (404: absent; other failures and a body that is not a JSON object are errors),
 * openstack/latest/network_data.json, and the EC2-style 2009-04-04/meta-data/{local-ipv4,
 * public-ipv4,hostname} (these: failures are logged and skipped; with options.openstackAttributes
 * also instance-id, instance-type and public-keys/).
 */
export async function serviceMetadata(env: ProviderEnv, options: ServiceOptions = {}): Promise<Metadata> {
  const metaPath = 'openstack/latest/meta_data.json';
  const metaUrl = showUrl(joinUrl(env.metadataUrl, metaPath));
  const body = await fetchLimited(env, metaPath, MAX_JSON_BYTES);
  let meta: Json | null = null;
  if (body !== null) {
    meta = parseJsonObject(body, metaUrl, env.log);
    if (meta === null) throw new OemError(`openstack: ${metaUrl} is not a JSON object (${body.length} bytes)`, { code: 'network' });
  }
  const info = instanceInfo(meta, metaUrl, env.log);
  const netPath = 'openstack/latest/network_data.json';
  const netUrl = showUrl(joinUrl(env.metadataUrl, netPath));
  const netData = parseJsonObject(await fetchSecondary(env, netPath, MAX_JSON_BYTES), netUrl, env.log);
  const network: NetworkConfig = netData === null ? { units: [], attributes: {} } : networkConfig(netData, netUrl, env.log);
  const ec2 = async (name: string): Promise<string | undefined> => {
    const b = await fetchSecondary(env, `2009-04-04/meta-data/${name}`, 4096);
    return b === null ? undefined : b.toString('utf8').trim();
  };
  const local = await ec2('local-ipv4');
  const pub = await ec2('public-ipv4');
  const ec2Hostname = await ec2('hostname');
  const ec2Attrs = ec2Attributes(
    { local, public: pub, hostname: ec2Hostname },
    showUrl(joinUrl(env.metadataUrl, '2009-04-04/meta-data/')),
    env.log,
  );
  const attributes: Record<string, string> = { ...ec2Attrs };
  for (const [k, v] of Object.entries(network.attributes)) attributes[k] ??= v;
  Object.assign(attributes, info.attributes);
  let sshKeys = info.sshKeys;
  if (options.openstackAttributes) {
    const values = {
      hostname: ec2Hostname !== undefined && ec2Hostname !== '' ? ec2Hostname : meta?.hostname,
      instanceId: await ec2('instance-id'),
      instanceType: await ec2('instance-type'),
    };
    Object.assign(attributes, openstackAttributes(values, ec2Attrs, showUrl(joinUrl(env.metadataUrl, '2009-04-04/meta-data/')), env.log));
    if (sshKeys.length === 0) sshKeys = await ec2PublicKeys(env);
  }
  const hostname = info.hostname ?? attributes.COREOS_HOSTNAME;
  const md: Metadata = { attributes, sshKeys, networkUnits: network.units };
  if (hostname !== undefined) md.hostname = hostname;
  return md;
}

/**
 * The keys of the EC2-style 2009-04-04/meta-data/public-keys/: lines `<index>=<name>`, each key at
 * public-keys/<index>/openssh-key. Only the index goes into a URL; failures are logged and skipped.
 */
async function ec2PublicKeys(env: ProviderEnv): Promise<string[]> {
  const base = '2009-04-04/meta-data/public-keys/';
  const list = await fetchSecondary(env, base, MAX_JSON_BYTES);
  if (list === null) return [];
  const keys: string[] = [];
  const seen = new Set<string>();
  for (const line of list.toString('utf8').split('\n')) {
    const entry = line.replace(/\r$/, '');
    if (entry.trim() === '') continue;
    const m = /^(\d{1,6})=/.exec(entry);
    if (!m) {
      env.log(`openstack: ignoring the public-keys entry ${shown(entry)}: not <index>=<name>`);
      continue;
    }
    const index = String(Number(m[1]));
    if (seen.has(index)) continue;
    seen.add(index);
    const key = await fetchSecondary(env, `${base}${index}/openssh-key`, MAX_JSON_BYTES);
    if (key !== null) keys.push(key.toString('utf8'));
  }
  return cleanSshKeys(keys, env.log, showUrl(joinUrl(env.metadataUrl, base)));
}

/** openstack/latest/user_data from the metadata service (null: 404 or empty). */
export async function serviceUserdata(env: ProviderEnv): Promise<Userdata> {
  const data = await fetchLimited(env, 'openstack/latest/user_data', MAX_USERDATA_BYTES);
  return data === null || data.length === 0 ? null : data;
}
