/**
 * Exoscale: a CloudStack cloud; metadata and userdata come from the virtual router found through
 * the DHCP lease, like on CloudStack (see cloudstack-common.ts). Nothing else happens at runtime:
 * the ethtool unit Exoscale needs ships in its image.
 */
import { cloudstackProvider } from './cloudstack-common.js';
import type { MetadataProvider } from './types.js';

export const provider: MetadataProvider = cloudstackProvider('exoscale');
