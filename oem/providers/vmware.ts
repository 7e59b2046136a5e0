/**
 * VMware: userdata from a config drive, <env.configDrive>/openstack/latest/user_data (the drive is
 * read under the root, default /media/configdrive; links on it never lead off it). No metadata.
 *
 * Afterburn writes nothing at runtime on VMware either (no attributes, hostname, keys or check-in).
 * What it does there is initrd work, before this agent runs: network kernel arguments from the
 * guestinfo key `afterburn.initrd.network-kargs`, and network configuration in Netplan form from
 * `guestinfo.metadata` (with `guestinfo.metadata.encoding`). Both shape the network of the first
 * boot's initrd, so they are the initrd's (Afterburn's there), not this agent's; the agent does
 * not read them.
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
