/**
 * The platforms the runtime agent serves, by oem id: the one list the builder (which refuses units
 * that would run the agent for another id, and shows what the agent does in `oem providers`) and
 * the agent (one module per id, oem/providers/index.ts, typed by this list so the two cannot differ)
 * both read.
 *
 * For each platform:
 *   name       the attribute name part: the agent writes COREOS_<name>_* (Container Linux's names,
 *              coreos-metadata's and Flatcar's Afterburn's), e.g. COREOS_EC2_IPV4_LOCAL
 *   afterburn  Afterburn's name part where Afterburn serves the platform: `--format afterburn`
 *              writes AFTERBURN_<afterburn>_* instead (AFTERBURN_AWS_IPV4_LOCAL)
 *   reads      where the agent finds the platform's data (one line, for people)
 *   does       what the agent does there
 */

export type AgentFeature = 'attributes' | 'hostname' | 'ssh-keys' | 'network' | 'userdata' | 'check-in';

export interface AgentPlatformInfo {
  name: string;
  afterburn?: string;
  reads: string;
  does: readonly AgentFeature[];
}

const p = (name: string, afterburn: string | undefined, reads: string, does: readonly AgentFeature[]): AgentPlatformInfo =>
  afterburn === undefined ? { name, reads, does } : { name, afterburn, reads, does };

export const AGENT_PLATFORM_INFO = {
  akamai: p('AKAMAI', 'AKAMAI', 'the Linode metadata service (PUT v1/token, then v1/instance, v1/network, v1/ssh-keys, v1/user-data with Metadata-Token)', ['attributes', 'ssh-keys', 'userdata']),
  aliyun: p('ALIYUN', 'ALIYUN', 'the Alibaba Cloud metadata service at 100.100.100.200 (latest/meta-data, latest/user-data; a session token when it gives one)', ['attributes', 'hostname', 'ssh-keys', 'userdata']),
  azure: p('AZURE', 'AZURE', 'the provisioning DVD (ovf-env.xml), the WireServer (goal state, shared config), IMDS (vmSize, name, publicKeys)', ['attributes', 'hostname', 'ssh-keys', 'userdata', 'check-in']),
  azurestack: p('AZURESTACK', 'AZURESTACK', 'the provisioning DVD (ovf-env.xml), the WireServer (goal state), the identity endpoint (vmName)', ['attributes', 'hostname', 'ssh-keys', 'userdata', 'check-in']),
  cloudsigma: p('CLOUDSIGMA', undefined, 'the serial metadata exchange on /dev/ttyS1', ['attributes', 'hostname', 'ssh-keys', 'userdata']),
  cloudstack: p('CLOUDSTACK', 'CLOUDSTACK', 'the config drive (cloudstack/metadata), else the metadata service on the DHCP server', ['attributes', 'hostname', 'ssh-keys', 'userdata']),
  digitalocean: p('DIGITALOCEAN', 'DIGITALOCEAN', 'the droplet metadata service (metadata/v1.json)', ['attributes', 'hostname', 'ssh-keys', 'network', 'userdata']),
  ec2: p('EC2', 'AWS', 'the instance metadata service (IMDSv2, else v1; the instance identity document)', ['attributes', 'hostname', 'ssh-keys', 'userdata']),
  exoscale: p('EXOSCALE', 'EXOSCALE', 'the metadata service (169.254.169.254, 1.0/meta-data; the DHCP server with --dhcp-server)', ['attributes', 'hostname', 'ssh-keys', 'userdata']),
  gce: p('GCE', 'GCP', 'the metadata server (Metadata-Flavor: Google)', ['attributes', 'hostname', 'ssh-keys', 'network', 'userdata']),
  hetzner: p('HETZNER', 'HETZNER', 'the Hetzner Cloud metadata service (hetzner/v1/metadata and its private-networks, hostname, public-keys, network-config; hetzner/v1/userdata)', ['attributes', 'hostname', 'ssh-keys', 'network', 'userdata']),
  hyperv: p('HYPERV', undefined, 'nothing: the platform passes no data', []),
  ibmcloud: p('IBMCLOUD', 'IBMCLOUD', 'the cloud-init config drive (label cidata: meta-data, vendor-data, user-data)', ['attributes', 'hostname', 'ssh-keys', 'userdata']),
  'ibmcloud-classic': p('IBMCLOUD_CLASSIC', 'IBMCLOUD_CLASSIC', 'the config drive (label config-2: openstack/latest/meta_data.json, network_data.json, user_data)', ['attributes', 'hostname', 'ssh-keys', 'network', 'userdata']),
  ipxe: p('IPXE', undefined, 'the kernel command line (cloud-config-url=)', ['userdata']),
  kubevirt: p('KUBEVIRT', 'KUBEVIRT', 'the cloud-init disk: config-2 (openstack/latest) or NoCloud (cidata: meta-data, network-config, user-data)', ['attributes', 'hostname', 'ssh-keys', 'network', 'userdata']),
  niftycloud: p('NIFTYCLOUD', undefined, 'the VMware guestinfo (vmtoolsd)', ['ssh-keys', 'userdata']),
  openstack: p('OPENSTACK', 'OPENSTACK', 'the config drive (config-2), else the metadata service', ['attributes', 'hostname', 'ssh-keys', 'network', 'userdata']),
  oraclecloud: p('ORACLECLOUD', 'ORACLECLOUD', 'the instance metadata service v2 (opc/v2/instance/, opc/v2/vnics/; Authorization: Bearer Oracle)', ['attributes', 'hostname', 'ssh-keys', 'userdata']),
  packet: p('PACKET', 'PACKET', 'the Equinix Metal metadata service (metadata.platformequinix.com: metadata, userdata), the phone-home URL it names', ['attributes', 'hostname', 'ssh-keys', 'network', 'userdata', 'check-in']),
  powervs: p('POWERVS', 'POWERVS', 'the config drive (label config-2: openstack/latest/meta_data.json, user_data)', ['attributes', 'hostname', 'ssh-keys', 'userdata']),
  proxmoxve: p('PROXMOXVE', 'PROXMOXVE', 'the cloud-init drive (cidata: meta-data, user-data, network-config)', ['attributes', 'hostname', 'ssh-keys', 'network', 'userdata']),
  pxe: p('PXE', undefined, 'the kernel command line (cloud-config-url=)', ['userdata']),
  rackspace: p('RACKSPACE', undefined, 'the config drive', ['attributes', 'hostname', 'ssh-keys', 'network', 'userdata']),
  'rackspace-onmetal': p('RACKSPACE_ONMETAL', undefined, 'the config drive', ['attributes', 'hostname', 'ssh-keys', 'network', 'userdata']),
  scaleway: p('SCALEWAY', 'SCALEWAY', 'the Scaleway metadata service at 169.254.42.42 (conf?format=json; user_data and state from a source port below 1024)', ['attributes', 'hostname', 'ssh-keys', 'userdata', 'check-in']),
  upcloud: p('UPCLOUD', 'UPCLOUD', 'the UpCloud metadata service (metadata/v1/: hostname, instance_id, region, public_keys, user_data)', ['attributes', 'hostname', 'ssh-keys', 'userdata']),
  vagrant: p('VAGRANT', undefined, 'the userdata the Vagrantfile leaves in /var/lib/coreos-vagrant', ['userdata']),
  vmware: p('VMWARE', 'VMWARE', 'the config drive (openstack/latest/user_data)', ['userdata']),
  vultr: p('VULTR', 'VULTR', 'the Vultr metadata service (v1/hostname, v1/instanceid, v1/region/regioncode, v1/public-keys; user-data/user-data)', ['attributes', 'hostname', 'ssh-keys', 'userdata']),
} as const satisfies Record<string, AgentPlatformInfo>;

export type AgentPlatform = keyof typeof AGENT_PLATFORM_INFO;

/** The oem ids the agent serves, sorted. */
export const AGENT_PLATFORMS: readonly AgentPlatform[] = Object.keys(AGENT_PLATFORM_INFO).sort() as AgentPlatform[];

/** What the agent does on `id`, or undefined for a platform it does not serve. */
export function agentPlatform(id: string): AgentPlatformInfo | undefined {
  return Object.hasOwn(AGENT_PLATFORM_INFO, id) ? AGENT_PLATFORM_INFO[id as AgentPlatform] : undefined;
}
