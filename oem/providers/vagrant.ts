/**
 * Vagrant: the Vagrantfile's provisioner puts the userdata at
 * <root>/var/lib/coreos-vagrant/vagrantfile-user-data; there is no metadata.
 */
import { MAX_USERDATA_BYTES, readRootFile, userdataOrNull } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';

export const USERDATA_PATH = '/var/lib/coreos-vagrant/vagrantfile-user-data';

export const provider: MetadataProvider = {
  id: 'vagrant',
  async metadata(): Promise<Metadata> {
    return { attributes: {}, sshKeys: [], networkUnits: [] };
  },
  async userdata(env: ProviderEnv): Promise<Userdata> {
    return userdataOrNull(await readRootFile(env, USERDATA_PATH, MAX_USERDATA_BYTES));
  },
};
