/**
 * CloudStack: metadata and userdata from the config drive (cloudstack/metadata, cloudstack/userdata)
 * when there is one, else from the virtual router's HTTP service, found through the DHCP lease (see
 * cloudstack-common.ts). Attributes are Afterburn's COREOS_CLOUDSTACK_* set.
 */
import { cloudstackProvider } from './cloudstack-common.js';
import type { MetadataProvider } from './types.js';

export const provider: MetadataProvider = cloudstackProvider('cloudstack');
