/**
 * Proxmox VE: the cloud-init drive Proxmox attaches (NoCloud, label cidata), mounted at
 * env.configDrive (under env.root), as Proxmox writes it:
 *
 *   meta-data       instance-id: <sha1>
 *   user-data       #cloud-config with hostname, fqdn, ssh_authorized_keys, ... (or the user's own
 *                   file with cicustom)
 *   network-config  cloud-init network config v1: physical entries (name, mac_address, subnets
 *                   static/static6/dhcp/dhcp4/dhcp6 with address, netmask, gateway) and one
 *                   nameserver entry (address, search)
 *   vendor-data     not read
 *
 * Attributes (Afterburn's PROXMOXVE_* names): COREOS_PROXMOXVE_INSTANCE_ID,
 * COREOS_PROXMOXVE_HOSTNAME (user-data's hostname), COREOS_PROXMOXVE_IPV4 / _IPV6 (the first
 * interface's static addresses), and COREOS_HOSTNAME, COREOS_IPV4_PRIVATE/PUBLIC,
 * COREOS_IPV6_PRIVATE/PUBLIC from the same values. SSH keys: user-data's ssh_authorized_keys, read
 * only from a #cloud-config (as Afterburn). Network: one networkd unit per interface, with the
 * nameservers on each (see cloud-init-drive.ts). Userdata: user-data as it is. Each file may be
 * missing or broken: that part is left out, with a log line.
 */
import { posix } from 'node:path';
import {
  findDriveDir,
  firstAddresses,
  firstPlain,
  genericAddressAttributes,
  keyTexts,
  MAX_DOC_BYTES,
  networkConfig,
  networkUnits,
  parseYamlObject,
  readDriveDoc,
  readDriveFile,
  type DriveDir,
  type Json,
} from './cloud-init-drive.js';
import { MAX_USERDATA_BYTES } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanSshKeys, shown } from './values.js';

const SOURCE = 'the Proxmox VE cloud-init drive';

async function readUserdata(env: ProviderEnv, drive: DriveDir): Promise<Buffer | null> {
  const data = await readDriveFile(env, drive, 'user-data', MAX_USERDATA_BYTES);
  return data === null || data.length === 0 ? null : data;
}

/** user-data as a #cloud-config mapping, or null (logged) when it is none. */
function cloudConfig(data: Buffer | null, what: string, log: (line: string) => void): Json | null {
  if (data === null) {
    log(`proxmoxve: no ${what}; no hostname or SSH keys from it`);
    return null;
  }
  const firstLine = data.subarray(0, 64).toString('utf8').split('\n')[0] ?? '';
  if (!firstLine.startsWith('#cloud-config')) {
    log(`proxmoxve: ${what} is not a #cloud-config; no hostname or SSH keys from it`);
    return null;
  }
  if (data.length > MAX_DOC_BYTES) {
    log(`proxmoxve: ${what} is larger than ${MAX_DOC_BYTES} bytes; no hostname or SSH keys read from it`);
    return null;
  }
  return parseYamlObject(data, what, log);
}

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const drive = await findDriveDir(env);
  if (drive === null) {
    env.log(`proxmoxve: no cloud-init drive at ${env.configDrive}; no metadata`);
    return md;
  }
  const a = md.attributes;
  const at = (rel: string) => posix.join(drive.shownAs, rel);

  const meta = await readDriveDoc(env, drive, 'meta-data');
  if (meta === null) env.log(`proxmoxve: no usable ${at('meta-data')}; no instance id`);
  const instanceId = firstPlain(meta, ['instance-id'], at('meta-data'), env.log);
  if (instanceId !== undefined) a.COREOS_PROXMOXVE_INSTANCE_ID = instanceId;

  const user = cloudConfig(await readUserdata(env, drive), at('user-data'), env.log);
  const rawName = user?.hostname;
  if (rawName !== undefined && rawName !== null && rawName !== '') {
    const name = typeof rawName === 'string' ? cleanHostname(rawName, env.log, `proxmoxve: the hostname from ${at('user-data')}`) : undefined;
    if (typeof rawName !== 'string') env.log(`proxmoxve: ignoring the hostname from ${at('user-data')}: not a string (${shown(rawName)})`);
    if (name !== undefined) {
      md.hostname = name;
      a.COREOS_HOSTNAME = a.COREOS_PROXMOXVE_HOSTNAME = name;
    }
  }
  md.sshKeys = cleanSshKeys(keyTexts(user?.ssh_authorized_keys, `proxmoxve: ssh_authorized_keys in ${at('user-data')}`, env.log), env.log, at('user-data'));

  const net = await readDriveDoc(env, drive, 'network-config');
  if (net === null) env.log(`proxmoxve: no usable ${at('network-config')}; no network units`);
  const ifaces = net === null ? [] : networkConfig(net, at('network-config'), env.log);
  const { v4, v6 } = firstAddresses(ifaces[0]);
  if (v4 !== undefined) a.COREOS_PROXMOXVE_IPV4 = v4;
  if (v6 !== undefined) a.COREOS_PROXMOXVE_IPV6 = v6;
  Object.assign(a, genericAddressAttributes(v4, v6));
  md.networkUnits = networkUnits(ifaces, SOURCE, env.log);
  return md;
}

async function userdata(env: ProviderEnv): Promise<Userdata> {
  const drive = await findDriveDir(env);
  if (drive === null) {
    env.log(`proxmoxve: no cloud-init drive at ${env.configDrive}; no userdata`);
    return null;
  }
  return readUserdata(env, drive);
}

export const provider: MetadataProvider = { id: 'proxmoxve', metadata, userdata };
