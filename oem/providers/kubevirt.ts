/**
 * KubeVirt: the cloud-init disk KubeVirt attaches, mounted at env.configDrive (under env.root), in
 * either of its two layouts (as Afterburn, config-2 first):
 *
 *   config-2 (cloudInitConfigDrive): openstack/latest (else the newest dated directory)/
 *     meta_data.json     {"uuid", "hostname", "instance_type", "public_keys": {name: key}}
 *     network_data.json  OpenStack links/networks/services
 *     user_data
 *   NoCloud (cloudInitNoCloud, label cidata):
 *     meta-data          instance-id, local-hostname, instance-type, public-keys
 *     network-config     cloud-init network config v1 or v2
 *     user-data
 *
 * Attributes (Afterburn's KUBEVIRT_* names): COREOS_KUBEVIRT_INSTANCE_ID (instance-id, else uuid),
 * COREOS_KUBEVIRT_HOSTNAME (hostname, else local-hostname), COREOS_KUBEVIRT_INSTANCE_TYPE,
 * COREOS_KUBEVIRT_IPV4 / _IPV6 (the first addresses of the first interface that has static ones),
 * and COREOS_HOSTNAME, COREOS_IPV4_PRIVATE/PUBLIC, COREOS_IPV6_PRIVATE/PUBLIC from the same values.
 * SSH keys: public_keys (public-keys). Network: one networkd unit per interface (see
 * cloud-init-drive.ts). Each file may be missing or broken: that part is left out, with a log line.
 */
import { posix } from 'node:path';
import { findDrive, driveUserdata } from './openstack-common.js';
import {
  findDriveDir,
  firstAddresses,
  firstPlain,
  genericAddressAttributes,
  keyTexts,
  networkConfig,
  networkData,
  networkUnits,
  readDriveDoc,
  readDriveFile,
  type Interface,
  type Json,
} from './cloud-init-drive.js';
import { MAX_USERDATA_BYTES } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanSshKeys, shown } from './values.js';

const SOURCE = 'the KubeVirt cloud-init disk';

interface Read {
  meta: Json | null;
  metaWhat: string;
  ifaces: Interface[];
}

/** meta-data and the interfaces from whichever layout the drive has; null when there is no drive. */
async function readDrive(env: ProviderEnv): Promise<Read | null> {
  const cd = await findDrive(env);
  if (cd !== null) {
    const drive = { host: cd.host, shownAs: cd.shownAs };
    const metaRel = `${cd.version}/meta_data.json`;
    const netRel = `${cd.version}/network_data.json`;
    const meta = await readDriveDoc(env, drive, metaRel);
    const net = await readDriveDoc(env, drive, netRel);
    const netWhat = posix.join(cd.shownAs, netRel);
    return { meta, metaWhat: posix.join(cd.shownAs, metaRel), ifaces: net === null ? [] : networkData(net, netWhat, env.log) };
  }
  const drive = await findDriveDir(env);
  if (drive === null) return null;
  const meta = await readDriveDoc(env, drive, 'meta-data');
  const net = await readDriveDoc(env, drive, 'network-config');
  const netWhat = posix.join(drive.shownAs, 'network-config');
  return { meta, metaWhat: posix.join(drive.shownAs, 'meta-data'), ifaces: net === null ? [] : networkConfig(net, netWhat, env.log) };
}

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const read = await readDrive(env);
  if (read === null) {
    env.log(`kubevirt: no cloud-init disk at ${env.configDrive} (neither a config-2 nor a NoCloud layout); no metadata`);
    return md;
  }
  const { meta, metaWhat } = read;
  if (meta === null) env.log(`kubevirt: no usable ${metaWhat}; no instance id, hostname or SSH keys`);
  const a = md.attributes;

  const instanceId = firstPlain(meta, ['instance-id', 'uuid'], metaWhat, env.log);
  if (instanceId !== undefined) a.COREOS_KUBEVIRT_INSTANCE_ID = instanceId;
  const instanceType = firstPlain(meta, ['instance_type', 'instance-type'], metaWhat, env.log);
  if (instanceType !== undefined) a.COREOS_KUBEVIRT_INSTANCE_TYPE = instanceType;

  // hostname (config-2), else local-hostname (NoCloud); a bad one does not hide a good other.
  for (const field of ['hostname', 'local-hostname']) {
    const raw = meta?.[field];
    if (raw === undefined || raw === null || raw === '') continue;
    const name = typeof raw === 'string' ? cleanHostname(raw, env.log, `kubevirt: the ${field} from ${metaWhat}`) : undefined;
    if (typeof raw !== 'string') env.log(`kubevirt: ignoring the ${field} from ${metaWhat}: not a string (${shown(raw)})`);
    if (name !== undefined) {
      md.hostname = name;
      a.COREOS_HOSTNAME = a.COREOS_KUBEVIRT_HOSTNAME = name;
      break;
    }
  }

  const keys: unknown[] = [];
  for (const field of ['public_keys', 'public-keys']) keys.push(...keyTexts(meta?.[field], `kubevirt: ${field} in ${metaWhat}`, env.log));
  md.sshKeys = cleanSshKeys(keys, env.log, metaWhat);

  const { v4, v6 } = firstAddresses(read.ifaces.find((i) => i.addresses.length > 0));
  if (v4 !== undefined) a.COREOS_KUBEVIRT_IPV4 = v4;
  if (v6 !== undefined) a.COREOS_KUBEVIRT_IPV6 = v6;
  Object.assign(a, genericAddressAttributes(v4, v6));

  md.networkUnits = networkUnits(read.ifaces, SOURCE, env.log);
  return md;
}

async function userdata(env: ProviderEnv): Promise<Userdata> {
  const cd = await findDrive(env);
  if (cd !== null) return driveUserdata(env, cd);
  const drive = await findDriveDir(env);
  if (drive === null) {
    env.log(`kubevirt: no cloud-init disk at ${env.configDrive}; no userdata`);
    return null;
  }
  const data = await readDriveFile(env, drive, 'user-data', MAX_USERDATA_BYTES);
  return data === null || data.length === 0 ? null : data;
}

export const provider: MetadataProvider = { id: 'kubevirt', metadata, userdata };
