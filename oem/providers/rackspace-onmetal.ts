/**
 * Rackspace OnMetal: the config drive only (env.configDrive, under env.root). From
 * openstack/<latest, else the newest dated directory such as 2013-10-17>: meta_data.json
 * (hostname or name, public_keys, uuid, availability_zone), user_data, and vendor_data.json
 * `network_info` (links: ethernet, bond with bond_links/bond_mode, vlan; networks ipv4/ipv6 with
 * routes; dns services) as networkd units: a .netdev per bond and VLAN, a .network per link with
 * Address=, Gateway= from the default route, DNS=. network_data.json stands in when vendor_data.json
 * has no network_info. The static addresses give COREOS_IPV4_PRIVATE / COREOS_IPV4_PUBLIC.
 */
import { driveMetadata, driveUserdata, findDrive } from './openstack-common.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';

export const provider: MetadataProvider = {
  id: 'rackspace-onmetal',
  async metadata(env: ProviderEnv): Promise<Metadata> {
    const drive = await findDrive(env);
    if (drive === null) {
      env.log(`rackspace-onmetal: no config drive at ${env.configDrive}; no metadata`);
      return { attributes: {}, sshKeys: [], networkUnits: [] };
    }
    return driveMetadata(env, drive, { network: ['vendor_data', 'network_data'] });
  },
  async userdata(env: ProviderEnv): Promise<Userdata> {
    const drive = await findDrive(env);
    return drive === null ? null : driveUserdata(env, drive);
  },
};
