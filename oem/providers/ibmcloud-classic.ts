/**
 * IBM Cloud classic infrastructure (ibmcloud-classic): the config drive (vfat, label config-2) that
 * the agent's unit mounts at env.configDrive, read where Afterburn reads it, openstack/latest/:
 *
 *   meta_data.json     { "hostname": "<fqdn>", "name": "<short name>", "uuid": "...",
 *                        "public_keys": { "<id>": "ssh-rsa ..." } }
 *   network_data.json  { "links": [{ "id", "name": "eth0", "ethernet_mac_address" }],
 *                        "networks": [{ "link", "type": "ipv4", "ip_address", "netmask",
 *                                       "routes": [{ "network", "netmask", "gateway" }] }],
 *                        "services": [{ "type": "dns", "address" }] }
 *   user_data          the userdata
 *
 * Attributes, as Afterburn names them: COREOS_IBMCLOUD_CLASSIC_INSTANCE_ID (uuid),
 * COREOS_IBMCLOUD_CLASSIC_LOCAL_HOSTNAME (name); and COREOS_HOSTNAME (name), COREOS_IPV4_PRIVATE /
 * COREOS_IPV4_PUBLIC (and IPv6) from the first private and public static address.
 *
 * Network: as Afterburn, one networkd unit per interface with its static addresses (netmask ->
 * prefix), its routes (the default route included, as a [Route]) and the DNS services; unit names
 * are ours (10-oem-<n>-<name>.network). Interfaces are matched by MAC address (by name only when
 * there is none: the name on the drive is the platform's guess, Flatcar may name it differently).
 * Links, networks and routes that are not valid are skipped with a log line.
 *
 * SSH keys: the public_keys of meta_data.json (Afterburn leaves them out on this platform; they are
 * the keys chosen for the instance). A missing drive or file means no metadata from it (logged).
 */
import { isIP } from 'node:net';
import { posix } from 'node:path';
import {
  CONFIG2_LATEST,
  config2Drive,
  config2Info,
  driveUserdata,
  isObject,
  isPrivateIPv4,
  isPrivateIPv6,
  type Json,
  maskPrefix,
  readDriveJson,
} from './afterburn-common.js';
import { validIfname } from './openstack-common.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanIp, cleanMac, networkUnitName, shown } from './values.js';

type Log = (line: string) => void;

interface Iface {
  name?: string;
  mac?: string;
  addresses: string[];
  routes: { destination: string; gateway: string }[];
}

export interface ClassicNetwork {
  units: Metadata['networkUnits'];
  attributes: Record<string, string>;
}

/** networkd units and address attributes from network_data.json (see the module comment). */
export function classicNetwork(data: Json | null, what: string, log: Log): ClassicNetwork {
  const out: ClassicNetwork = { units: [], attributes: {} };
  if (data === null) return out;
  const list = (field: string): unknown[] => {
    const v = data[field];
    if (Array.isArray(v)) return v as unknown[];
    if (v !== undefined && v !== null) log(`${what}: ignoring "${field}": not a list`);
    return [];
  };

  const links = new Map<string, Iface>();
  list('links').forEach((raw, i) => {
    if (!isObject(raw) || (typeof raw.id !== 'string' && typeof raw.id !== 'number')) {
      log(`${what}: links[${i}] has no id; skipped`);
      return;
    }
    const id = String(raw.id);
    if (links.has(id)) {
      log(`${what}: link ${shown(id)} appears twice; the second is skipped`);
      return;
    }
    const macRaw = typeof raw.ethernet_mac_address === 'string' ? raw.ethernet_mac_address.replaceAll('-', ':') : raw.ethernet_mac_address;
    const mac = cleanMac(macRaw, log, `${what}: the MAC address of link ${shown(id)}`);
    let name: string | undefined;
    if (validIfname(raw.name)) name = raw.name;
    else if (raw.name !== undefined && raw.name !== null) log(`${what}: ignoring the name ${shown(raw.name)} of link ${shown(id)}: not an interface name`);
    if (mac === undefined && name === undefined) {
      log(`${what}: link ${shown(id)} has neither a MAC address nor a name; skipped`);
      return;
    }
    const iface: Iface = { addresses: [], routes: [] };
    if (name !== undefined) iface.name = name;
    if (mac !== undefined) iface.mac = mac;
    links.set(id, iface);
  });

  const dns: string[] = [];
  list('services').forEach((raw) => {
    if (!isObject(raw) || raw.type !== 'dns') return;
    const d = cleanIp(raw.address, log, `${what}: the DNS service`);
    if (d !== undefined && !dns.includes(d)) dns.push(d);
  });

  const used: Iface[] = [];
  list('networks').forEach((raw, i) => {
    const label = isObject(raw) && typeof raw.id === 'string' ? shown(raw.id) : `networks[${i}]`;
    if (!isObject(raw)) return;
    const iface = typeof raw.link === 'string' || typeof raw.link === 'number' ? links.get(String(raw.link)) : undefined;
    if (iface === undefined) {
      log(`${what}: network ${label} refers to no usable link (${shown(raw.link)}); skipped`);
      return;
    }
    const family = typeof raw.ip_address === 'string' ? isIP(raw.ip_address) : 0;
    if (family !== 4 && family !== 6) {
      log(`${what}: network ${label}: the ip_address ${shown(raw.ip_address)} is not an IP address; skipped`);
      return;
    }
    const address = raw.ip_address as string;
    const prefix = maskPrefix(raw.netmask, family);
    if (prefix === undefined) {
      log(`${what}: network ${label}: the netmask ${shown(raw.netmask)} is not an IPv${family} netmask; skipped`);
      return;
    }
    iface.addresses.push(`${address}/${prefix}`);
    if (!used.includes(iface)) used.push(iface);
    const [privKey, pubKey] = family === 4 ? ['COREOS_IPV4_PRIVATE', 'COREOS_IPV4_PUBLIC'] : ['COREOS_IPV6_PRIVATE', 'COREOS_IPV6_PUBLIC'];
    const key = (family === 4 ? isPrivateIPv4(address) : isPrivateIPv6(address)) ? privKey! : pubKey!;
    out.attributes[key] ??= address;
    const routes = raw.routes;
    if (routes !== undefined && routes !== null && !Array.isArray(routes)) log(`${what}: network ${label}: ignoring "routes": not a list`);
    (Array.isArray(routes) ? (routes as unknown[]) : []).forEach((r, j) => {
      const usable = isObject(r) && typeof r.network === 'string' && isIP(r.network) === family && typeof r.gateway === 'string' && isIP(r.gateway) === family;
      const routePrefix = usable ? maskPrefix(r.netmask, family) : undefined;
      if (!usable || routePrefix === undefined) {
        log(`${what}: network ${label}: routes[${j}] is not a usable IPv${family} route; skipped`);
        return;
      }
      iface.routes.push({ destination: `${r.network as string}/${routePrefix}`, gateway: r.gateway as string });
    });
  });

  used.forEach((iface, n) => {
    const lines = ['[Match]', iface.mac !== undefined ? `MACAddress=${iface.mac}` : `Name=${iface.name}`, '', '[Network]'];
    for (const d of dns) lines.push(`DNS=${d}`);
    for (const a of iface.addresses) lines.push('', '[Address]', `Address=${a}`);
    for (const r of iface.routes) lines.push('', '[Route]', `Destination=${r.destination}`, `Gateway=${r.gateway}`);
    out.units.push({ name: networkUnitName(n, iface.name ?? 'link'), content: lines.join('\n') + '\n' });
  });
  return out;
}

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const found = await config2Drive(env, 'ibmcloud-classic');
  if (found === null) return md;
  const info = config2Info(found.meta, 'ibmcloud-classic', 'COREOS_IBMCLOUD_CLASSIC', env.log);
  const rel = `${CONFIG2_LATEST}/network_data.json`;
  const data = await readDriveJson(env, found.drive, rel);
  if (data === null) env.log(`ibmcloud-classic: no usable ${rel} on the config drive; no network units`);
  const net = classicNetwork(data, `ibmcloud-classic: ${posix.join(found.drive.shownAs, rel)}`, env.log);
  md.attributes = { ...net.attributes, ...info.attributes };
  md.sshKeys = info.sshKeys;
  md.networkUnits = net.units;
  if (info.hostname !== undefined) md.hostname = info.hostname;
  return md;
}

async function userdata(env: ProviderEnv): Promise<Userdata> {
  return driveUserdata(env, 'ibmcloud-classic', `${CONFIG2_LATEST}/user_data`);
}

export const provider: MetadataProvider = { id: 'ibmcloud-classic', metadata, userdata };
