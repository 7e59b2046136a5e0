/**
 * OpenStack: the config drive first, else the metadata service (as Afterburn does).
 *
 * Config drive (env.configDrive, under env.root; the agent's unit mounts the device labelled
 * config-2 there): openstack/<latest, else the newest dated directory>/meta_data.json (uuid,
 * hostname or name, public_keys, keys, availability_zone), user_data, network_data.json (static
 * networks, bonds and VLANs become networkd units; DHCP needs none), and ec2/latest/meta-data.json
 * (instance-id, instance-type, local-ipv4, public-ipv4) when the drive has it.
 *
 * Metadata service (env.metadataUrl), when the directory is missing or has no openstack/ tree:
 * openstack/latest/{meta_data.json,user_data,network_data.json} and the EC2-style
 * 2009-04-04/meta-data/{local-ipv4,public-ipv4,hostname,instance-id,instance-type}, and its
 * public-keys/ when meta_data.json has no keys.
 *
 * Attributes: COREOS_IPV4_PRIVATE/PUBLIC (EC2 data, else the static addresses), COREOS_IPV6_*
 * (static addresses), COREOS_HOSTNAME, COREOS_OPENSTACK_AVAILABILITY_ZONE, and Afterburn's set:
 * COREOS_OPENSTACK_{HOSTNAME (meta_data.json's hostname on the drive, the EC2 hostname on the
 * service), INSTANCE_ID (the EC2-style id), INSTANCE_UUID, INSTANCE_TYPE, IPV4_LOCAL, IPV4_PUBLIC}
 * (`metadata --format afterburn` writes AFTERBURN_OPENSTACK_*). No boot check-in: OpenStack expects
 * none.
 */
import { driveMetadata, driveUserdata, findDrive, serviceMetadata, serviceUserdata } from './openstack-common.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';

export const provider: MetadataProvider = {
  id: 'openstack',
  async metadata(env: ProviderEnv): Promise<Metadata> {
    const drive = await findDrive(env);
    if (drive !== null) return driveMetadata(env, drive, { network: ['network_data', 'vendor_data'], openstackAttributes: true });
    env.log(`openstack: no config drive at ${env.configDrive}; asking the metadata service`);
    return serviceMetadata(env, { openstackAttributes: true });
  },
  async userdata(env: ProviderEnv): Promise<Userdata> {
    const drive = await findDrive(env);
    return drive !== null ? driveUserdata(env, drive) : serviceUserdata(env);
  },
};
