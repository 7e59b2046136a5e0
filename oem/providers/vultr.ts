/**
 * Vultr: the metadata service's plain-text values under env.metadataUrl (http://169.254.169.254),
 * the ones Afterburn reads (oem/providers/text-service.ts):
 *
 *   /v1/hostname            the hostname            COREOS_VULTR_HOSTNAME, COREOS_HOSTNAME
 *   /v1/instanceid          e.g. a747bfz6385e       COREOS_VULTR_INSTANCE_ID
 *   /v1/region/regioncode   e.g. EWR                COREOS_VULTR_REGION_CODE
 *   /v1/public-keys         SSH keys, one a line
 *   /user-data/user-data    the userdata (as Ignition reads it), raw
 */
import { textServiceProvider } from './text-service.js';

export const provider = textServiceProvider({
  id: 'vultr',
  title: 'Vultr',
  name: 'VULTR',
  hostname: '/v1/hostname',
  values: [
    { path: '/v1/instanceid', key: 'INSTANCE_ID', what: 'instance id', pattern: /^[A-Za-z0-9-]{1,64}$/ },
    { path: '/v1/region/regioncode', key: 'REGION_CODE', what: 'region code', pattern: /^[A-Za-z0-9-]{1,32}$/ },
  ],
  keys: '/v1/public-keys',
  userdata: '/user-data/user-data',
});
