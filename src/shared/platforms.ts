/**
 * The platforms the runtime agent serves, by oem id: the one list the builder (which refuses units
 * that would run the agent for another id) and the agent (one module per id, oem/providers/index.ts,
 * typed by this list so the two cannot differ) both read.
 */
export const AGENT_PLATFORMS = [
  'azure',
  'cloudsigma',
  'cloudstack',
  'digitalocean',
  'ec2',
  'exoscale',
  'gce',
  'hyperv',
  'ipxe',
  'niftycloud',
  'openstack',
  'pxe',
  'rackspace',
  'rackspace-onmetal',
  'vagrant',
  'vmware',
] as const;

export type AgentPlatform = (typeof AGENT_PLATFORMS)[number];
