/**
 * What the providers that read a local cloud-init drive share (kubevirt, proxmoxve): finding the
 * drive directory, bounded reads that never leave it, safe YAML, and the network formats those
 * platforms write, turned into networkd units the way Afterburn derives its interfaces:
 *
 *   network-config v1 (cloud-init, as Proxmox VE and KubeVirt's NoCloud disk write it):
 *     config: [{type: physical, name, mac_address, subnets: [{type: static|static6|dhcp|dhcp4|dhcp6,
 *              address, netmask, gateway, dns_nameservers, routes}]}, {type: nameserver, address}]
 *   network-config v2 (netplan style, KubeVirt's NoCloud disk):
 *     ethernets: {<id>: {match: {macaddress, name}, dhcp4, dhcp6, addresses, gateway4, gateway6,
 *                routes: [{to, via}], nameservers: {addresses}}}, nameservers: {addresses}
 *   network_data.json (OpenStack format, KubeVirt's config-2 disk): links, networks, services
 *
 * Every interface becomes one .network unit (10-oem-<n>-<label>.network, names made here), matched
 * by MAC address when the metadata gives one, else by interface name: DHCP=, Address=, Gateway=
 * (default routes), DNS=, and a [Route] section per other route. Everything read is platform input:
 * files are capped (1 MiB for metadata, 16 MiB for userdata) and read with the drive as the
 * boundary, YAML is parsed without custom tags and with few aliases, and every value is checked;
 * a bad one is dropped with a log line.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { posix } from 'node:path';
import { parseDocument } from 'yaml';
import { describe, OemError } from '../../src/shared/errors.js';
import { lstatEntry, resolveIn } from '../../src/shared/safe-fs.js';
import { isObject, MAX_JSON_BYTES, readFileIn, validIfname } from './openstack-common.js';
import type { Metadata, ProviderEnv } from './types.js';
import { cleanMac, netmaskToPrefix, networkUnitName, shown } from './values.js';

type Log = (line: string) => void;
export type Json = Record<string, unknown>;

/** Largest metadata document read from a drive (meta-data, network-config, a #cloud-config parsed for keys). */
export const MAX_DOC_BYTES = MAX_JSON_BYTES;
/** How many alias expansions a YAML document may make (against "billion laughs" documents). */
export const MAX_YAML_ALIASES = 100;

// ---------------------------------------------------------------------------------------------
// The drive

/** A drive directory: its host path and env.configDrive, for messages. */
export interface DriveDir {
  host: string;
  shownAs: string;
}

/**
 * The directory at env.configDrive (under env.root; links on the way resolve inside the root), or
 * null when it is missing or not a directory. A path that cannot be resolved (a symlink loop) is
 * logged and taken as missing.
 */
export async function findDriveDir(env: ProviderEnv): Promise<DriveDir | null> {
  try {
    const host = await resolveIn(env.root, env.configDrive);
    if (host === null || (await lstatEntry(host))?.kind !== 'dir') return null;
    return { host, shownAs: env.configDrive };
  } catch (err) {
    if (!(err instanceof OemError)) throw err;
    env.log(`config drive ${env.configDrive}: ${err.message}; ignored`);
    return null;
  }
}

/** A file on the drive (links resolved with the drive as the root), at most `limit` bytes; null when missing or refused (logged). */
export function readDriveFile(env: ProviderEnv, drive: DriveDir, rel: string, limit: number): Promise<Buffer | null> {
  return readFileIn(drive.host, rel, limit, env.log, posix.join(drive.shownAs, rel));
}

// ---------------------------------------------------------------------------------------------
// YAML (JSON is YAML too)

/**
 * The value of one YAML (or JSON) document: YAML 1.2 core schema, no custom or language tags, keys
 * once, at most MAX_YAML_ALIASES alias expansions. Throws an OemError naming `what` otherwise.
 */
export function parseYaml(text: string, what: string): unknown {
  const doc = parseDocument(text, {
    schema: 'core',
    customTags: [],
    resolveKnownTags: false,
    merge: false,
    uniqueKeys: true,
    prettyErrors: false,
  });
  const error = doc.errors[0];
  if (error !== undefined) throw new OemError(`${what}: not valid YAML (${error.message.split('\n')[0]})`);
  const tag = doc.warnings.find((w) => w.code === 'TAG_RESOLVE_FAILED');
  if (tag !== undefined) throw new OemError(`${what}: not accepted (${tag.message.split('\n')[0]}; tags are not allowed)`);
  try {
    return doc.toJS({ maxAliasCount: MAX_YAML_ALIASES });
  } catch (err) {
    throw new OemError(`${what}: not accepted (${describe(err)})`);
  }
}

/** A mapping from `buf` (YAML or JSON), or null (logged) when it is not one. */
export function parseYamlObject(buf: Buffer | null, what: string, log: Log): Json | null {
  if (buf === null) return null;
  let value: unknown;
  try {
    value = parseYaml(buf.toString('utf8'), what);
  } catch (err) {
    if (!(err instanceof OemError)) throw err;
    log(`${err.message}; ignored`);
    return null;
  }
  if (!isObject(value)) {
    log(`${what}: not a mapping; ignored`);
    return null;
  }
  return value;
}

/** A mapping read from the drive (at most MAX_DOC_BYTES); null when missing, refused or not a mapping (logged but for missing). */
export async function readDriveDoc(env: ProviderEnv, drive: DriveDir, rel: string): Promise<Json | null> {
  return parseYamlObject(await readDriveFile(env, drive, rel, MAX_DOC_BYTES), posix.join(drive.shownAs, rel), env.log);
}

// ---------------------------------------------------------------------------------------------
// Values

// Plain values for attributes: identifiers, never a shell word or a unit line.
const PLAIN = /^[A-Za-z0-9._:/@+,=~-]{1,255}$/;

/** A plain value (identifier-like: letters, digits, . _ : / @ + , = ~ -) from a string or a whole number; else undefined, logged when present. */
export function plainValue(raw: unknown, what: string, log: Log): string | undefined {
  if (raw === undefined || raw === null || raw === '') return undefined;
  const text = typeof raw === 'number' && Number.isSafeInteger(raw) ? String(raw) : raw;
  if (typeof text === 'string' && PLAIN.test(text)) return text;
  log(`ignoring ${what} ${shown(raw)}: not a plain value`);
  return undefined;
}

/** The first of `fields` in `doc` that holds a plain value (see plainValue); bad ones are logged and skipped. */
export function firstPlain(doc: Json | null, fields: string[], what: string, log: Log): string | undefined {
  for (const field of fields) {
    const value = plainValue(doc?.[field], `the ${field} from ${what}`, log);
    if (value !== undefined) return value;
  }
  return undefined;
}

/** An IP address in its canonical form (IPv6 compressed, lower case), of `family` when given; undefined otherwise. */
export function canonicalIp(value: unknown, family?: 4 | 6): string | undefined {
  if (typeof value !== 'string') return undefined;
  if ((family === undefined || family === 4) && isIPv4(value)) return value;
  // No zone ids (fe80::1%eth0) and nothing else but hex digits, colons and dots.
  if ((family === undefined || family === 6) && /^[0-9A-Fa-f:.]{2,45}$/.test(value) && isIPv6(value)) {
    return new URL(`http://[${value}]/`).hostname.slice(1, -1);
  }
  return undefined;
}

function familyOf(addr: string): 4 | 6 {
  return addr.includes(':') ? 6 : 4;
}

/** The prefix length of a netmask: a length (number or decimal string), a dotted IPv4 mask or an IPv6 mask. */
export function maskToPrefix(mask: unknown, family: 4 | 6): number | undefined {
  const max = family === 4 ? 32 : 128;
  if (typeof mask === 'number' || (typeof mask === 'string' && /^\d{1,3}$/.test(mask))) {
    const n = Number(mask);
    return Number.isInteger(n) && n >= 0 && n <= max ? n : undefined;
  }
  if (typeof mask !== 'string') return undefined;
  if (family === 4) return netmaskToPrefix(mask);
  const canon = canonicalIp(mask, 6);
  if (canon === undefined) return undefined;
  const [head = '', tail] = canon.split('::');
  const groups = (s: string) => (s === '' ? [] : s.split(':'));
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const bits = all.map((g) => parseInt(g, 16).toString(2).padStart(16, '0')).join('');
  if (!/^1*0*$/.test(bits)) return undefined;
  return bits.indexOf('0') === -1 ? 128 : bits.indexOf('0');
}

// ---------------------------------------------------------------------------------------------
// Interfaces

export interface Address {
  address: string;
  prefix: number;
}

export interface Route {
  destination: string;
  prefix: number;
  gateway: string;
}

/** A network interface as Afterburn models it: matched by MAC address or name. */
export interface Interface {
  /** The interface name from the metadata (a valid kernel name), if any. */
  name?: string;
  mac?: string;
  /** For the unit's name only (made safe by networkUnitName). */
  label: string;
  dhcp4: boolean;
  dhcp6: boolean;
  addresses: Address[];
  routes: Route[];
  dns: string[];
}

function newInterface(label: string, name: string | undefined, mac: string | undefined): Interface {
  const i: Interface = { label, dhcp4: false, dhcp6: false, addresses: [], routes: [], dns: [] };
  if (name !== undefined) i.name = name;
  if (mac !== undefined) i.mac = mac;
  return i;
}

function addAddress(i: Interface, a: Address): void {
  if (!i.addresses.some((x) => x.address === a.address && x.prefix === a.prefix)) i.addresses.push(a);
}

function addRoute(i: Interface, r: Route): void {
  if (!i.routes.some((x) => x.destination === r.destination && x.prefix === r.prefix && x.gateway === r.gateway)) i.routes.push(r);
}

function addDns(list: string[], value: unknown, what: string, log: Log): void {
  const ip = canonicalIp(value);
  if (ip === undefined) {
    log(`${what}: ignoring the nameserver ${shown(value)}: not an IP address`);
    return;
  }
  if (!list.includes(ip)) list.push(ip);
}

/** A list from a YAML value: a list as is, nothing for absent; anything else is logged and taken as nothing. */
function listOf(value: unknown, what: string, log: Log): unknown[] {
  if (Array.isArray(value)) return value;
  if (value === undefined || value === null) return [];
  log(`${what}: not a list; ignored`);
  return [];
}

/** Addresses from a YAML value: a list, or one string as a list of one. */
function addressList(value: unknown, what: string, log: Log): unknown[] {
  return typeof value === 'string' ? [value] : listOf(value, what, log);
}

/**
 * An address with its prefix from `address` (`addr` or `addr/len`) and `netmask` (a length, a
 * dotted or an IPv6 mask). A bare address without a netmask is a host address (/32, /128), as
 * Afterburn takes it.
 */
export function addressOf(address: unknown, netmask: unknown, what: string, log: Log): Address | undefined {
  if (typeof address !== 'string') {
    log(`${what}: ignoring the address ${shown(address)}: not a string`);
    return undefined;
  }
  const slash = address.indexOf('/');
  const addr = canonicalIp(slash < 0 ? address : address.slice(0, slash));
  if (addr === undefined) {
    log(`${what}: ignoring the address ${shown(address)}: not an IP address`);
    return undefined;
  }
  const family = familyOf(addr);
  const given = slash >= 0 ? address.slice(slash + 1) : netmask;
  const prefix = given === undefined || given === null || given === '' ? (family === 4 ? 32 : 128) : maskToPrefix(given, family);
  if (prefix === undefined) {
    log(`${what}: ignoring the address ${shown(address)}: the prefix or netmask ${shown(given)} is not one for IPv${family}`);
    return undefined;
  }
  return { address: addr, prefix };
}

/** A default route through `gateway` (its family's), or undefined (logged). */
function defaultRoute(gateway: unknown, what: string, log: Log, family?: 4 | 6): Route | undefined {
  const gw = canonicalIp(gateway, family);
  if (gw === undefined) {
    log(`${what}: ignoring the gateway ${shown(gateway)}: not an IPv${family ?? '4 or IPv6'} address`);
    return undefined;
  }
  return familyOf(gw) === 4 ? { destination: '0.0.0.0', prefix: 0, gateway: gw } : { destination: '::', prefix: 0, gateway: gw };
}

/** A route to `destination` (`net/len`, else `net` with `netmask`; `default` too) through `gateway`, or undefined (logged). */
function routeOf(destination: unknown, netmask: unknown, gateway: unknown, what: string, log: Log): Route | undefined {
  const bad = (why: string): undefined => {
    log(`${what}: ignoring the route to ${shown(destination)} via ${shown(gateway)}: ${why}`);
    return undefined;
  };
  const gw = canonicalIp(gateway);
  if (gw === undefined) return bad('the gateway is not an IP address');
  const family = familyOf(gw);
  if (destination === 'default') return defaultRoute(gw, what, log);
  if (typeof destination !== 'string') return bad('no destination');
  const slash = destination.indexOf('/');
  const net = canonicalIp(slash < 0 ? destination : destination.slice(0, slash), family);
  if (net === undefined) return bad(`the destination is not an IPv${family} network`);
  const mask = slash >= 0 ? destination.slice(slash + 1) : netmask;
  const prefix = mask === undefined || mask === null || mask === '' ? (family === 4 ? 32 : 128) : maskToPrefix(mask, family);
  if (prefix === undefined) return bad(`the netmask ${shown(mask)} is not one for IPv${family}`);
  return { destination: net, prefix, gateway: gw };
}

function ifaceIdentity(name: unknown, mac: unknown, what: string, log: Log): { name?: string; mac?: string } {
  const out: { name?: string; mac?: string } = {};
  if (name !== undefined && name !== null && name !== '') {
    if (validIfname(name)) out.name = name;
    else log(`${what}: ignoring the interface name ${shown(name)}: not a valid interface name`);
  }
  if (mac !== undefined && mac !== null && mac !== '') {
    const m = cleanMac(mac, log, `${what}: the MAC address`);
    if (m !== undefined) out.mac = m;
  }
  return out;
}

/** The interfaces that can be matched (a MAC address or a name); the others are logged and left out. */
function identified(ifaces: Interface[], what: string, log: Log): Interface[] {
  return ifaces.filter((i) => {
    if (i.mac !== undefined || i.name !== undefined) return true;
    log(`${what}: the interface ${shown(i.label)} has neither a MAC address nor a name; ignored`);
    return false;
  });
}

/** Afterburn's order: interfaces with a name first, by name, then the others as they came. */
function sortByName(list: Interface[]): Interface[] {
  const named = list.filter((i) => i.name !== undefined).sort((a, b) => (a.name! < b.name! ? -1 : a.name! > b.name! ? 1 : 0));
  return [...named, ...list.filter((i) => i.name === undefined)];
}

/**
 * The interfaces of a cloud-init network-config v1 document: `physical` entries (other types are
 * logged and skipped), each subnet's addresses, DHCP, gateway, routes and nameservers, and the first
 * `nameserver` entry's addresses added to every interface.
 */
export function networkConfigV1(doc: Json, what: string, log: Log): Interface[] {
  if (!Array.isArray(doc.config)) {
    log(`${what}: no "config" list; no network units`);
    return [];
  }
  const ifaces: Interface[] = [];
  let globalDns: unknown[] | undefined;
  doc.config.forEach((entry: unknown, index) => {
    const where = `${what}: config[${index}]`;
    if (!isObject(entry)) {
      log(`${where}: not a mapping; ignored`);
      return;
    }
    if (entry.type === 'nameserver') {
      if (globalDns === undefined) globalDns = addressList(entry.address, `${where}: address`, log);
      else log(`${where}: a second nameserver entry; only the first is used`);
      return;
    }
    if (entry.type !== 'physical') {
      log(`${where}: the type ${shown(entry.type)} is not supported (only physical and nameserver); ignored`);
      return;
    }
    const id = ifaceIdentity(entry.name, entry.mac_address, where, log);
    const i = newInterface(id.name ?? (id.mac !== undefined ? `mac${id.mac.replaceAll(':', '')}` : `if${index}`), id.name, id.mac);
    listOf(entry.subnets, `${where}: subnets`, log).forEach((subnet: unknown, s) => {
      const at = `${where}: subnets[${s}]`;
      if (!isObject(subnet)) {
        log(`${at}: not a mapping; ignored`);
        return;
      }
      for (const ns of addressList(subnet.dns_nameservers, `${at}: dns_nameservers`, log)) addDns(i.dns, ns, at, log);
      const type = typeof subnet.type === 'string' ? subnet.type : '';
      if (type.includes('static')) {
        if (subnet.address !== undefined && subnet.address !== null) {
          const a = addressOf(subnet.address, subnet.netmask, at, log);
          if (a !== undefined) addAddress(i, a);
        }
      } else if (type === 'dhcp' || type === 'dhcp4') {
        i.dhcp4 = true;
      } else if (type === 'dhcp6') {
        i.dhcp6 = true;
      } else {
        log(`${at}: the subnet type ${shown(subnet.type)} is not supported; ignored`);
      }
      listOf(subnet.routes, `${at}: routes`, log).forEach((route: unknown, r) => {
        if (!isObject(route)) return log(`${at}: routes[${r}] is not a mapping; ignored`);
        const rt = routeOf(route.destination ?? route.network, route.netmask, route.gateway, `${at}: routes[${r}]`, log);
        if (rt !== undefined) addRoute(i, rt);
      });
      if (subnet.gateway !== undefined && subnet.gateway !== null && subnet.gateway !== '') {
        const rt = defaultRoute(subnet.gateway, at, log);
        if (rt !== undefined) addRoute(i, rt);
      }
    });
    ifaces.push(i);
  });
  const usable = identified(ifaces, what, log);
  for (const i of usable) for (const ns of globalDns ?? []) addDns(i.dns, ns, `${what}: nameserver`, log);
  return usable;
}

/**
 * The interfaces of a network-config v2 document (netplan style): `ethernets` (matched by
 * match.macaddress, else match.name, else the key as the name), addresses, gateway4/gateway6,
 * routes (to/via), DHCP, nameservers; a top-level `nameservers` is added to every interface.
 */
export function networkConfigV2(doc: Json, what: string, log: Log): Interface[] {
  const ethernets = doc.ethernets;
  if (ethernets === undefined || ethernets === null) return [];
  if (!isObject(ethernets)) {
    log(`${what}: "ethernets" is not a mapping; no network units`);
    return [];
  }
  for (const kind of ['bonds', 'bridges', 'vlans', 'wifis', 'tunnels', 'vrfs']) {
    if (doc[kind] !== undefined) log(`${what}: "${kind}" is not supported; ignored`);
  }
  const ifaces: Interface[] = [];
  for (const [key, cfg] of Object.entries(ethernets)) {
    const where = `${what}: ethernets.${unitSafeShown(key)}`;
    if (!isObject(cfg)) {
      log(`${where}: not a mapping; ignored`);
      continue;
    }
    const match = cfg.match;
    let rawName: unknown = key;
    let rawMac: unknown;
    if (isObject(match)) {
      rawMac = match.macaddress;
      rawName = match.name ?? (rawMac === undefined ? key : undefined);
    }
    const id = ifaceIdentity(rawName, rawMac, where, log);
    const i = newInterface(key, id.name, id.mac);
    for (const [field, v6] of [['dhcp4', false], ['dhcp6', true]] as const) {
      const v = cfg[field];
      if (v === true) {
        if (v6) i.dhcp6 = true;
        else i.dhcp4 = true;
      } else if (v !== undefined && v !== false && v !== null) {
        log(`${where}: ignoring ${field} ${shown(v)}: not true or false`);
      }
    }
    for (const a of addressList(cfg.addresses, `${where}: addresses`, log)) {
      const addr = addressOf(a, undefined, where, log);
      if (addr !== undefined) addAddress(i, addr);
    }
    for (const [field, family] of [['gateway4', 4], ['gateway6', 6]] as const) {
      const g = cfg[field];
      if (g === undefined || g === null || g === '') continue;
      const rt = defaultRoute(g, `${where}: ${field}`, log, family);
      if (rt !== undefined) addRoute(i, rt);
    }
    listOf(cfg.routes, `${where}: routes`, log).forEach((route: unknown, r) => {
      if (!isObject(route)) return log(`${where}: routes[${r}] is not a mapping; ignored`);
      const rt = routeOf(route.to, undefined, route.via, `${where}: routes[${r}]`, log);
      if (rt !== undefined) addRoute(i, rt);
    });
    if (isObject(cfg.nameservers)) for (const ns of addressList(cfg.nameservers.addresses, `${where}: nameservers`, log)) addDns(i.dns, ns, where, log);
    ifaces.push(i);
  }
  const sorted = sortByName(identified(ifaces, what, log));
  const globalDns = isObject(doc.nameservers) ? addressList(doc.nameservers.addresses, `${what}: nameservers`, log) : [];
  for (const i of sorted) for (const ns of globalDns) addDns(i.dns, ns, `${what}: nameservers`, log);
  return sorted;
}

/** A network-config document of either version (also wrapped in `network:`, as cloud-init accepts it). */
export function networkConfig(doc: Json, what: string, log: Log): Interface[] {
  const inner = isObject(doc.network) && doc.version === undefined ? doc.network : doc;
  const version = inner.version;
  if (version === 2 || version === '2' || (version === undefined && inner.ethernets !== undefined)) return networkConfigV2(inner, what, log);
  if (version === 1 || version === '1' || version === undefined) return networkConfigV1(inner, what, log);
  log(`${what}: the version ${shown(version)} is not supported (1 or 2); no network units`);
  return [];
}

/**
 * The interfaces of an OpenStack network_data.json as Afterburn's KubeVirt provider reads it: one per
 * link that has networks (matched by the link's MAC address, else its `name`); static ipv4/ipv6
 * networks give addresses and routes; ipv4_dhcp/ipv6_dhcp give DHCP, and their routes only where
 * DHCP does not provide them (ipv4: accept_dhcp_option given without "router"; ipv6: always); the
 * global DNS services are added to static interfaces, and to DHCP ones unless ipv4_dhcp accepts
 * "domain_name_server" from the server.
 */
export function networkData(doc: Json, what: string, log: Log): Interface[] {
  const links = new Map<string, Json>();
  listOf(doc.links, `${what}: links`, log).forEach((link: unknown, index) => {
    if (!isObject(link) || typeof link.id !== 'string' || link.id === '') return log(`${what}: links[${index}] has no id; ignored`);
    if (links.has(link.id)) return log(`${what}: the link ${shown(link.id)} appears twice; the second is ignored`);
    links.set(link.id, link);
  });
  const byLink = new Map<string, Json[]>();
  listOf(doc.networks, `${what}: networks`, log).forEach((network: unknown, index) => {
    if (!isObject(network)) return log(`${what}: networks[${index}] is not an object; ignored`);
    const link = typeof network.link === 'string' ? network.link : undefined;
    if (link === undefined || !links.has(link)) return log(`${what}: networks[${index}]: the link ${shown(network.link)} is not a known link; ignored`);
    byLink.set(link, [...(byLink.get(link) ?? []), network]);
  });
  const globalDns: unknown[] = [];
  for (const s of listOf(doc.services, `${what}: services`, log)) if (isObject(s) && s.type === 'dns') globalDns.push(s.address);

  const ifaces: Interface[] = [];
  let n = 0;
  for (const [linkId, networks] of byLink) {
    const link = links.get(linkId)!;
    const where = `${what}: link ${shown(linkId)}`;
    const id = ifaceIdentity(link.name, link.ethernet_mac_address, where, log);
    const i = newInterface(id.name ?? (validIfname(linkId) ? linkId : `link${n}`), id.name, id.mac);
    n++;
    let staticDns = false;
    for (const network of networks) {
      const at = `${where}: network ${typeof network.id === 'string' ? shown(network.id) : ''}`.trimEnd();
      const type = network.type;
      let routes = true;
      if (type === 'ipv4' || type === 'ipv6') {
        if (network.ip_address !== undefined && network.ip_address !== null) {
          const a = addressOf(network.ip_address, network.netmask, at, log);
          if (a !== undefined && familyOf(a.address) !== (type === 'ipv4' ? 4 : 6)) log(`${at}: ignoring the address ${a.address}: not an ${type} address`);
          else if (a !== undefined) addAddress(i, a);
        }
      } else if (type === 'ipv4_dhcp') {
        i.dhcp4 = true;
        const accept = addressList(network.accept_dhcp_option, `${at}: accept_dhcp_option`, log).filter((o): o is string => typeof o === 'string');
        routes = accept.length > 0 && !accept.includes('router');
        if (accept.length === 0 || !accept.includes('domain_name_server')) staticDns = true;
      } else if (type === 'ipv6_dhcp') {
        i.dhcp6 = true;
        staticDns = true;
      } else {
        log(`${at}: the network type ${shown(type)} is not supported; ignored`);
        routes = false;
      }
      for (const ns of addressList(network.dns_nameservers, `${at}: dns_nameservers`, log)) addDns(i.dns, ns, at, log);
      if (!routes) continue;
      listOf(network.routes, `${at}: routes`, log).forEach((route: unknown, r) => {
        if (!isObject(route)) return log(`${at}: routes[${r}] is not an object; ignored`);
        const rt = routeOf(route.network, route.netmask, route.gateway, `${at}: routes[${r}]`, log);
        if (rt !== undefined) addRoute(i, rt);
      });
    }
    if (staticDns || (!i.dhcp4 && !i.dhcp6)) for (const ns of globalDns) addDns(i.dns, ns, `${what}: services`, log);
    ifaces.push(i);
  }
  return sortByName(identified(ifaces, what, log));
}

/** A value for a message about a map key (shown, without the quotes when plain). */
function unitSafeShown(key: string): string {
  return /^[A-Za-z0-9_.-]{1,40}$/.test(key) ? key : shown(key);
}

// ---------------------------------------------------------------------------------------------
// Units and attributes

/**
 * One networkd unit per interface: 10-oem-<n>-<label>.network, [Match] MACAddress= (else Name=),
 * [Network] DHCP=, Address=, Gateway= for default routes, DNS=, and [Route] sections for the rest.
 * Interfaces with neither MAC address nor name, and a second one with the same match, are skipped
 * (logged). `source` names the platform in the unit's first line (a fixed text, never metadata).
 */
export function networkUnits(ifaces: Interface[], source: string, log: Log): Metadata['networkUnits'] {
  const units: Metadata['networkUnits'] = [];
  const seen = new Set<string>();
  for (const i of ifaces) {
    const match = i.mac !== undefined ? `MACAddress=${i.mac}` : i.name !== undefined ? `Name=${i.name}` : undefined;
    if (match === undefined) {
      log(`${source}: the interface ${shown(i.label)} has neither a MAC address nor a name; no unit for it`);
      continue;
    }
    if (seen.has(match)) {
      log(`${source}: a second interface with ${match}; only the first gets a unit`);
      continue;
    }
    seen.add(match);
    const lines = [`# Written by oem-agent from ${source}.`, '[Match]', match, '', '[Network]'];
    const dhcp = i.dhcp4 && i.dhcp6 ? 'yes' : i.dhcp4 ? 'ipv4' : i.dhcp6 ? 'ipv6' : undefined;
    if (dhcp !== undefined) lines.push(`DHCP=${dhcp}`);
    for (const a of i.addresses) lines.push(`Address=${a.address}/${a.prefix}`);
    for (const r of i.routes) if (r.prefix === 0) lines.push(`Gateway=${r.gateway}`);
    for (const d of i.dns) lines.push(`DNS=${d}`);
    for (const r of i.routes) if (r.prefix !== 0) lines.push('', '[Route]', `Destination=${r.destination}/${r.prefix}`, `Gateway=${r.gateway}`);
    units.push({ name: networkUnitName(units.length, i.label), content: lines.join('\n') + '\n' });
  }
  return units;
}

/** The first IPv4 and the first IPv6 address of an interface. */
export function firstAddresses(i: Interface | undefined): { v4?: string; v6?: string } {
  const out: { v4?: string; v6?: string } = {};
  for (const a of i?.addresses ?? []) {
    if (familyOf(a.address) === 4) out.v4 ??= a.address;
    else out.v6 ??= a.address;
  }
  return out;
}

function isPrivateIPv4(addr: string): boolean {
  const [a = 0, b = 0] = addr.split('.').map(Number);
  return a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127);
}

/** COREOS_IPV4_PRIVATE or _PUBLIC and COREOS_IPV6_PRIVATE or _PUBLIC for the addresses (link-local ones left out). */
export function genericAddressAttributes(v4: string | undefined, v6: string | undefined): Record<string, string> {
  const attrs: Record<string, string> = {};
  if (v4 !== undefined && !v4.startsWith('169.254.')) attrs[isPrivateIPv4(v4) ? 'COREOS_IPV4_PRIVATE' : 'COREOS_IPV4_PUBLIC'] = v4;
  if (v6 !== undefined && !/^fe[89ab]/.test(v6)) attrs[/^f[cd]/.test(v6) ? 'COREOS_IPV6_PRIVATE' : 'COREOS_IPV6_PUBLIC'] = v6;
  return attrs;
}

/** SSH key texts from a value: a string, a list of strings, or a mapping of names to strings (the names are labels only). */
export function keyTexts(value: unknown, what: string, log: Log): unknown[] {
  if (value === undefined || value === null) return [];
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value;
  if (isObject(value)) return Object.values(value);
  log(`ignoring ${what}: not a key, a list or a mapping (${shown(value)})`);
  return [];
}
