/**
 * CloudStack: metadata and userdata from the virtual router's HTTP service, found through the DHCP
 * lease (see cloudstack-common.ts).
 */
import { cloudstackProvider } from './cloudstack-common.js';
import type { MetadataProvider } from './types.js';

export const provider: MetadataProvider = cloudstackProvider('cloudstack');
