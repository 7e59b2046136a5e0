/**
 * OpenStack: the config drive first, else the metadata service.
 *
 * Config drive (env.configDrive, under env.root; the agent's unit mounts the device labelled
 * config-2 there): openstack/<latest, else the newest dated directory>/meta_data.json (uuid,
 * hostname or name, public_keys, keys, availability_zone), user_data, network_data.json (static
 * networks, bonds and VLANs become networkd units; DHCP needs none), and ec2/latest/meta-data.json
 * (local-ipv4, public-ipv4) when the drive has it.
 *
 * Metadata service (env.metadataUrl), when the directory is missing or has no openstack/ tree:
 * openstack/latest/{meta_data.json,user_data,network_data.json} and the EC2-style
 * 2009-04-04/meta-data/{local-ipv4,public-ipv4,hostname}.
 *
 * Attributes: COREOS_IPV4_PRIVATE/PUBLIC (EC2 data, else the static addresses), COREOS_IPV6_*
 * (static addresses), COREOS_HOSTNAME, COREOS_OPENSTACK_INSTANCE_UUID,
 * COREOS_OPENSTACK_AVAILABILITY_ZONE.
 */
import { driveMetadata, driveUserdata, findDrive, serviceMetadata, serviceUserdata } from './openstack-common.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';

export const provider: MetadataProvider = {
  id: 'openstack',
  async metadata(env: ProviderEnv): Promise<Metadata> {
    const drive = await findDrive(env);
    if (drive !== null) return driveMetadata(env, drive, { network: ['network_data', 'vendor_data'] });
    env.log(`openstack: no config drive at ${env.configDrive}; asking the metadata service`);
    return serviceMetadata(env);
  },
  async userdata(env: ProviderEnv): Promise<Userdata> {
    const drive = await findDrive(env);
    return drive !== null ? driveUserdata(env, drive) : serviceUserdata(env);
  },
};
