/**
 * Amazon EC2: the instance metadata service under env.metadataUrl (http://169.254.169.254). What
 * Container Linux's coreos-metadata read comes from API version 2009-04-04; what the service grew
 * later comes from 2021-01-03, the version Afterburn reads:
 *
 *   /2009-04-04/meta-data/local-ipv4, public-ipv4, local-hostname, hostname, public-hostname,
 *     instance-id, instance-type, placement/availability-zone
 *   /2009-04-04/meta-data/public-keys/        lines `0=name`; the key is public-keys/0/openssh-key
 *   /2009-04-04/user-data
 *   /2021-01-03/meta-data/ipv6, placement/availability-zone-id
 *   /2021-01-03/dynamic/instance-identity/document   JSON; its `region`
 *
 * Attributes: COREOS_IPV4_PRIVATE/PUBLIC, COREOS_HOSTNAME (local-hostname, else hostname), and
 * Afterburn's AWS set as COREOS_EC2_{INSTANCE_ID, INSTANCE_TYPE, IPV4_LOCAL, IPV4_PUBLIC, IPV6,
 * AVAILABILITY_ZONE, AVAILABILITY_ZONE_ID, HOSTNAME (meta-data/hostname), PUBLIC_HOSTNAME, REGION}
 * (`metadata --format afterburn` writes them as AFTERBURN_AWS_*). No network configuration (DHCP's)
 * and no boot check-in: EC2 expects none.
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
/** Afterburn's API version: the one that has ipv6 and placement/availability-zone-id. */
const NEWER = '2021-01-03';
const TOKEN_TTL_SECONDS = '21600';

interface Get {
  /** A path under the 2009-04-04 tree, as text. */
  (path: string): Promise<string | null>;
  raw(path: string): Promise<Buffer | null>;
  /** A path under the 2021-01-03 tree, as text. */
  newer(path: string): Promise<string | null>;
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
  const at = (version: string, path: string) => httpGet(joinUrl(env.metadataUrl, `/${version}/${path}`), env, { headers, optional: true });
  const raw = (path: string) => at(VERSION, path);
  const get = async (path: string) => (await raw(path))?.toString('utf8') ?? null;
  const newer = async (path: string) => (await at(NEWER, path))?.toString('utf8') ?? null;
  return Object.assign(get, { raw, newer });
}

/** A one-line value (instance id, type, zone): trimmed; absent when empty. Checked again when written. */
function word(v: string | null): string | undefined {
  if (v === null) return undefined;
  const t = v.replace(/^[ \t]+|[ \t]+$/g, '');
  return t === '' ? undefined : t;
}

/** An AWS region name (us-east-1, eu-central-2, us-gov-west-1, cn-north-1, ...). */
const REGION = /^[a-z]{2}(?:-[a-z0-9]+){1,4}$/;

/** The `region` of the instance identity document; undefined (logged when unusable) otherwise. */
function regionOf(doc: string | null, log: (line: string) => void): string | undefined {
  if (doc === null || doc.trim() === '') return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(doc);
  } catch {
    log(`ec2: ignoring the instance identity document: not JSON (${shown(doc)})`);
    return undefined;
  }
  const region = typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>).region : undefined;
  if (region === undefined || region === null) return undefined;
  if (typeof region === 'string' && REGION.test(region)) return region;
  log(`ec2: ignoring the region ${shown(region)} of the instance identity document: not a region name`);
  return undefined;
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
  // The instance's first IPv6 address (only when it has one); the service gives one address.
  set('COREOS_EC2_IPV6', cleanIp(word(await get.newer('meta-data/ipv6')), env.log, 'ec2: ipv6', 6)?.toLowerCase());

  // The system's name: local-hostname when the service has one, else hostname (the same name on
  // EC2). COREOS_EC2_HOSTNAME is Afterburn's: meta-data/hostname.
  const localHostname = await get('meta-data/local-hostname');
  const metaHostname = cleanHostname(await get('meta-data/hostname'), env.log, 'ec2: hostname');
  const hostname = localHostname !== null ? cleanHostname(localHostname, env.log, 'ec2: the hostname') : metaHostname;
  if (hostname !== undefined) {
    md.hostname = hostname;
    set('COREOS_HOSTNAME', hostname);
  }
  set('COREOS_EC2_HOSTNAME', metaHostname);
  set('COREOS_EC2_PUBLIC_HOSTNAME', cleanHostname(await get('meta-data/public-hostname'), env.log, 'ec2: public-hostname'));
  set('COREOS_EC2_INSTANCE_ID', word(await get('meta-data/instance-id')));
  set('COREOS_EC2_INSTANCE_TYPE', word(await get('meta-data/instance-type')));
  set('COREOS_EC2_AVAILABILITY_ZONE', word(await get('meta-data/placement/availability-zone')));
  set('COREOS_EC2_AVAILABILITY_ZONE_ID', word(await get.newer('meta-data/placement/availability-zone-id')));
  set('COREOS_EC2_REGION', regionOf(await get.newer('dynamic/instance-identity/document'), env.log));
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
