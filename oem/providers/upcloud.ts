/**
 * UpCloud: the metadata service's plain-text values under env.metadataUrl (http://169.254.169.254),
 * the ones Afterburn reads (oem/providers/text-service.ts):
 *
 *   /metadata/v1/hostname      the hostname                            COREOS_UPCLOUD_HOSTNAME, COREOS_HOSTNAME
 *   /metadata/v1/instance_id   the server's UUID                       COREOS_UPCLOUD_INSTANCE_ID
 *   /metadata/v1/region        the zone, e.g. de-fra1                  COREOS_UPCLOUD_REGION
 *   /metadata/v1/public_keys   SSH keys, one a line
 *   /metadata/v1/user_data     the userdata (as Ignition reads it), raw
 */
import { textServiceProvider } from './text-service.js';

export const provider = textServiceProvider({
  id: 'upcloud',
  title: 'UpCloud',
  name: 'UPCLOUD',
  hostname: '/metadata/v1/hostname',
  values: [
    { path: '/metadata/v1/instance_id', key: 'INSTANCE_ID', what: 'instance id', pattern: /^[A-Za-z0-9-]{1,64}$/ },
    { path: '/metadata/v1/region', key: 'REGION', what: 'region', pattern: /^[A-Za-z0-9-]{1,32}$/ },
  ],
  keys: '/metadata/v1/public_keys',
  userdata: '/metadata/v1/user_data',
});
