/**
 * IBM Power Virtual Server (powervs): the config drive (ISO 9660, label config-2) that the agent's
 * unit mounts at env.configDrive, read where Afterburn reads it, openstack/latest/:
 *
 *   meta_data.json   { "hostname": "<fqdn>", "name": "<short name>", "uuid": "...",
 *                      "public_keys": { "<name>": "ssh-rsa ..." }, ... }
 *   user_data        the userdata
 *
 * Attributes, as Afterburn names them: COREOS_POWERVS_INSTANCE_ID (uuid),
 * COREOS_POWERVS_LOCAL_HOSTNAME (name); and COREOS_HOSTNAME. The hostname is `name` (lowercased);
 * the SSH keys are the values of public_keys. As with Afterburn, no network configuration (the
 * drive's network_config is for cloud-init). A missing drive or file means no metadata (logged).
 */
import { CONFIG2_LATEST, config2Drive, config2Info, driveUserdata } from './afterburn-common.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const found = await config2Drive(env, 'powervs');
  if (found === null) return md;
  const info = config2Info(found.meta, 'powervs', 'COREOS_POWERVS', env.log);
  md.attributes = info.attributes;
  md.sshKeys = info.sshKeys;
  if (info.hostname !== undefined) md.hostname = info.hostname;
  return md;
}

async function userdata(env: ProviderEnv): Promise<Userdata> {
  return driveUserdata(env, 'powervs', `${CONFIG2_LATEST}/user_data`);
}

export const provider: MetadataProvider = { id: 'powervs', metadata, userdata };
