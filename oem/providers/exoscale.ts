/**
 * Exoscale: a CloudStack cloud. Metadata and userdata come from the metadata service at
 * env.metadataUrl (http://169.254.169.254), API version 1.0, as Afterburn and cloud-init read them
 * (with --dhcp-server, from the virtual router there, the CloudStack way); see cloudstack-common.ts.
 * Attributes are Afterburn's COREOS_EXOSCALE_* set. Nothing else happens at runtime: the ethtool
 * unit Exoscale needs ships in its image.
 */
import { cloudstackProvider } from './cloudstack-common.js';
import type { MetadataProvider } from './types.js';

export const provider: MetadataProvider = cloudstackProvider('exoscale');
