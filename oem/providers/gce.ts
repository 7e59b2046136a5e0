/**
 * Google Compute Engine: the metadata server, computeMetadata/v1 under env.metadataUrl
 * (http://169.254.169.254, a.k.a. metadata.google.internal). Every request sends
 * `Metadata-Flavor: Google`, and a response without that header is refused (it is not the metadata
 * server).
 *
 *   instance/network-interfaces/0/ip                          COREOS_IPV4_PRIVATE, COREOS_GCE_IP_LOCAL_0
 *   instance/network-interfaces/0/access-configs/0/external-ip COREOS_IPV4_PUBLIC, COREOS_GCE_IP_EXTERNAL_0
 *   instance/hostname                                         hostname, COREOS_HOSTNAME, COREOS_GCE_HOSTNAME
 *   instance/machine-type                                     COREOS_GCE_MACHINE_TYPE, as the server
 *                                                             gives it (projects/<n>/machineTypes/<type>)
 *   {instance,project}/attributes/{ssh-keys,sshKeys}          `user:ssh-rsa AAAA... comment` lines;
 *                                                             the `user:` prefix is dropped, keys
 *                                                             past their google-ssh expireOn too
 *   instance/attributes/block-project-ssh-keys = true         project keys are not used; neither are
 *                                                             they when the instance has the legacy
 *                                                             sshKeys (as Google's guest agent and
 *                                                             Afterburn do)
 *   instance/attributes/user-data, else project/attributes/user-data
 *
 * The COREOS_GCE_* attributes are Afterburn's GCP set (`metadata --format afterburn` writes them as
 * AFTERBURN_GCP_*), with the same values. Network configuration is DHCP's; the network action adds
 * `169.254.169.254 metadata` to /etc/hosts. No boot check-in: GCE expects none.
 */
import { httpGet, joinUrl } from './http.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanIp, cleanSshKeys, shown } from './values.js';

const FLAVOR = { 'Metadata-Flavor': 'Google' };

async function raw(env: ProviderEnv, path: string): Promise<Buffer | null> {
  return httpGet(joinUrl(env.metadataUrl, `/computeMetadata/v1/${path}`), env, { headers: FLAVOR, requireHeaders: FLAVOR, optional: true });
}

async function text(env: ProviderEnv, path: string): Promise<string | null> {
  return (await raw(env, path))?.toString('utf8') ?? null;
}

/** A machine type as the server gives it: projects/<number or id>/machineTypes/<name>, or a bare name. */
const MACHINE_TYPE = /^(?:projects\/[A-Za-z0-9._-]{1,100}\/machineTypes\/)?[A-Za-z0-9._-]{1,100}$/;

const USER = /^([A-Za-z0-9_][A-Za-z0-9._-]{0,63}):(.*)$/;

/**
 * The keys of one ssh-keys attribute: `user:key` lines, prefix dropped. Keys in the google-ssh
 * format (`... google-ssh {"userName":"...","expireOn":"2030-01-01T00:00:00+0000"}`) past their expiry
 * are dropped, as the guest agent does.
 */
export function parseGceSshKeys(value: string, log: (line: string) => void, source: string, now = Date.now()): string[] {
  const keys: string[] = [];
  for (const line of value.split('\n')) {
    const entry = line.replace(/\r$/, '').trim();
    if (entry === '' || entry.startsWith('#')) continue;
    const m = USER.exec(entry);
    if (!m) {
      log(`gce: ignoring an entry of ${source} without a user name: ${shown(entry)}`);
      continue;
    }
    const key = m[2]!.trim();
    const google = /\sgoogle-ssh\s+(\{.*\})\s*$/.exec(key);
    if (google) {
      try {
        const info = JSON.parse(google[1]!) as { expireOn?: unknown };
        if (typeof info.expireOn === 'string') {
          const t = Date.parse(info.expireOn.replace(/([+-]\d\d)(\d\d)$/, '$1:$2'));
          if (Number.isFinite(t) && t < now) {
            log(`gce: ignoring an expired key of user ${m[1]} in ${source} (expired ${info.expireOn})`);
            continue;
          }
        }
      } catch {
        /* not google-ssh JSON: an ordinary comment */
      }
    }
    keys.push(key);
  }
  return keys;
}

async function sshKeys(env: ProviderEnv): Promise<string[]> {
  const keys: string[] = [];
  const read = async (src: string): Promise<number> => {
    const v = await text(env, src);
    if (v === null) return 0;
    const found = parseGceSshKeys(v, env.log, src);
    keys.push(...found);
    return found.length;
  };
  await read('instance/attributes/ssh-keys');
  const legacy = await read('instance/attributes/sshKeys');
  const block = (await text(env, 'instance/attributes/block-project-ssh-keys'))?.trim().toLowerCase() === 'true';
  if (block) env.log('gce: block-project-ssh-keys is set: project keys are not used');
  else if (legacy > 0) env.log('gce: the instance has the legacy sshKeys: project keys are not used');
  else for (const src of ['project/attributes/ssh-keys', 'project/attributes/sshKeys']) await read(src);
  return cleanSshKeys(keys, env.log, 'the GCE metadata');
}

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const a = md.attributes;
  const local = cleanIp((await text(env, 'instance/network-interfaces/0/ip'))?.trim(), env.log, 'gce: the internal address', 4);
  const external = cleanIp((await text(env, 'instance/network-interfaces/0/access-configs/0/external-ip'))?.trim(), env.log, 'gce: the external address', 4);
  if (local !== undefined) a.COREOS_IPV4_PRIVATE = a.COREOS_GCE_IP_LOCAL_0 = local;
  if (external !== undefined) a.COREOS_IPV4_PUBLIC = a.COREOS_GCE_IP_EXTERNAL_0 = external;
  const hostname = cleanHostname(await text(env, 'instance/hostname'), env.log, 'gce: the hostname');
  if (hostname !== undefined) {
    md.hostname = hostname;
    a.COREOS_HOSTNAME = a.COREOS_GCE_HOSTNAME = hostname;
  }
  // projects/123456/machineTypes/n1-standard-1, written as it is (Afterburn's value).
  const machineType = (await text(env, 'instance/machine-type'))?.trim();
  if (machineType !== undefined && MACHINE_TYPE.test(machineType)) a.COREOS_GCE_MACHINE_TYPE = machineType;
  else if (machineType !== undefined && machineType !== '') env.log(`gce: ignoring the machine type ${shown(machineType)}: not a machine type path`);
  md.sshKeys = await sshKeys(env);
  return md;
}

async function userdata(env: ProviderEnv): Promise<Userdata> {
  for (const src of ['instance/attributes/user-data', 'project/attributes/user-data']) {
    const b = await raw(env, src);
    if (b !== null && b.length > 0) return b;
  }
  return null;
}

export const provider: MetadataProvider = { id: 'gce', metadata, userdata };
