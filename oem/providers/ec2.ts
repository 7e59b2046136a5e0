/**
 * Amazon EC2: the instance metadata service, API version 2009-04-04, under env.metadataUrl
 * (http://169.254.169.254):
 *
 *   /2009-04-04/meta-data/local-ipv4, public-ipv4, local-hostname, hostname, public-hostname,
 *     instance-id, instance-type, placement/availability-zone
 *   /2009-04-04/meta-data/public-keys/        lines `0=name`; the key is public-keys/0/openssh-key
 *   /2009-04-04/user-data
 *
 * IMDSv2 first: PUT /latest/api/token with `X-aws-ec2-metadata-token-ttl-seconds: 21600`; when it
 * succeeds every GET sends the token in `X-aws-ec2-metadata-token`. When the PUT is refused (403,
 * 404, 405: IMDSv2 disabled or an old service) the requests go without it (IMDSv1).
 *
 * Only the index of a key in public-keys/ is used to build a URL; key names are never used.
 */
import { HttpError, httpGet, httpPut, joinUrl } from './http.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanIp, cleanSshKeys, shown } from './values.js';

const VERSION = '2009-04-04';
const TOKEN_TTL_SECONDS = '21600';

interface Get {
  (path: string): Promise<string | null>;
  raw(path: string): Promise<Buffer | null>;
}

/** The token for IMDSv2, or null when the service does not do IMDSv2. */
async function imdsToken(env: ProviderEnv): Promise<string | null> {
  const url = joinUrl(env.metadataUrl, '/latest/api/token');
  try {
    const b = await httpPut(url, env, { headers: { 'X-aws-ec2-metadata-token-ttl-seconds': TOKEN_TTL_SECONDS } });
    const token = b?.toString('utf8').trim() ?? '';
    if (token === '' || !/^[\x21-\x7e]+$/.test(token)) {
      env.log(`ec2: the IMDSv2 token is not usable (${shown(token)}); using IMDSv1`);
      return null;
    }
    return token;
  } catch (err) {
    if (err instanceof HttpError && err.status !== undefined && [403, 404, 405].includes(err.status)) {
      env.log(`ec2: no IMDSv2 token (HTTP ${err.status}); using IMDSv1`);
      return null;
    }
    throw err;
  }
}

async function getter(env: ProviderEnv): Promise<Get> {
  const token = await imdsToken(env);
  const headers: Record<string, string> = token === null ? {} : { 'X-aws-ec2-metadata-token': token };
  const raw = (path: string) => httpGet(joinUrl(env.metadataUrl, `/${VERSION}/${path}`), env, { headers, optional: true });
  const get = async (path: string) => (await raw(path))?.toString('utf8') ?? null;
  return Object.assign(get, { raw });
}

/** A one-line value (instance id, type, zone): trimmed; absent when empty. Checked again when written. */
function word(v: string | null): string | undefined {
  if (v === null) return undefined;
  const t = v.replace(/^[ \t]+|[ \t]+$/g, '');
  return t === '' ? undefined : t;
}

async function sshKeys(get: Get, env: ProviderEnv): Promise<string[]> {
  const list = await get('meta-data/public-keys/');
  if (list === null) return [];
  const keys: string[] = [];
  const seen = new Set<string>();
  for (const line of list.split('\n')) {
    const entry = line.replace(/\r$/, '');
    if (entry.trim() === '') continue;
    const m = /^(\d{1,6})=/.exec(entry);
    if (!m) {
      env.log(`ec2: ignoring the public-keys entry ${shown(entry)}: not <index>=<name>`);
      continue;
    }
    const index = String(Number(m[1]));
    if (seen.has(index)) continue;
    seen.add(index);
    const key = await get(`meta-data/public-keys/${index}/openssh-key`);
    if (key === null) {
      env.log(`ec2: public key ${index} has no openssh-key`);
      continue;
    }
    keys.push(key);
  }
  return cleanSshKeys(keys, env.log, 'the EC2 metadata');
}

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const get = await getter(env);
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const a = md.attributes;
  const set = (key: string, value: string | undefined) => {
    if (value !== undefined) a[key] = value;
  };
  const local = cleanIp(word(await get('meta-data/local-ipv4')), env.log, 'ec2: local-ipv4', 4);
  const pub = cleanIp(word(await get('meta-data/public-ipv4')), env.log, 'ec2: public-ipv4', 4);
  set('COREOS_IPV4_PRIVATE', local);
  set('COREOS_IPV4_PUBLIC', pub);
  set('COREOS_EC2_IPV4_LOCAL', local);
  set('COREOS_EC2_IPV4_PUBLIC', pub);

  const localHostname = await get('meta-data/local-hostname');
  const hostname = cleanHostname(localHostname ?? (await get('meta-data/hostname')), env.log, 'ec2: the hostname');
  if (hostname !== undefined) {
    md.hostname = hostname;
    set('COREOS_HOSTNAME', hostname);
    set('COREOS_EC2_HOSTNAME', hostname);
  }
  set('COREOS_EC2_PUBLIC_HOSTNAME', cleanHostname(await get('meta-data/public-hostname'), env.log, 'ec2: public-hostname'));
  set('COREOS_EC2_INSTANCE_ID', word(await get('meta-data/instance-id')));
  set('COREOS_EC2_INSTANCE_TYPE', word(await get('meta-data/instance-type')));
  set('COREOS_EC2_AVAILABILITY_ZONE', word(await get('meta-data/placement/availability-zone')));
  md.sshKeys = await sshKeys(get, env);
  return md;
}

/** user-data as bytes (it may be gzip-compressed); null when there is none. */
async function userdata(env: ProviderEnv): Promise<Userdata> {
  const get = await getter(env);
  const b = await get.raw('user-data');
  return b === null || b.length === 0 ? null : b;
}

export const provider: MetadataProvider = { id: 'ec2', metadata, userdata };
