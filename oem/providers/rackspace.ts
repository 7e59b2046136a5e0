/**
 * Rackspace Cloud Servers: the config drive only (env.configDrive, under env.root), read like
 * OpenStack's: openstack/<latest, else the newest dated directory>/meta_data.json, user_data,
 * network_data.json (else vendor_data.json `network_info`), and ec2/latest/meta-data.json. There
 * is no metadata service to fall back to: without a drive there is no metadata.
 */
import { driveMetadata, driveUserdata, findDrive } from './openstack-common.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';

export const provider: MetadataProvider = {
  id: 'rackspace',
  async metadata(env: ProviderEnv): Promise<Metadata> {
    const drive = await findDrive(env);
    if (drive === null) {
      env.log(`rackspace: no config drive at ${env.configDrive}; no metadata`);
      return { attributes: {}, sshKeys: [], networkUnits: [] };
    }
    return driveMetadata(env, drive, { network: ['network_data', 'vendor_data'] });
  },
  async userdata(env: ProviderEnv): Promise<Userdata> {
    const drive = await findDrive(env);
    return drive === null ? null : driveUserdata(env, drive);
  },
};
