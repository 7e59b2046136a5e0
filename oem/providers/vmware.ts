/**
 * VMware: userdata from a config drive, <env.configDrive>/openstack/latest/user_data (the drive is
 * read under the root, default /media/configdrive; links on it never lead off it). No metadata.
 */
import { MAX_USERDATA_BYTES, readFileBelow, userdataOrNull } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';

export const provider: MetadataProvider = {
  id: 'vmware',
  async metadata(): Promise<Metadata> {
    return { attributes: {}, sshKeys: [], networkUnits: [] };
  },
  async userdata(env: ProviderEnv): Promise<Userdata> {
    return userdataOrNull(await readFileBelow(env, env.configDrive, '/openstack/latest/user_data', MAX_USERDATA_BYTES));
  },
};
