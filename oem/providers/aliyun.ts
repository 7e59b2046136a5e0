/**
 * Alibaba Cloud (aliyun): the ECS metadata service at http://100.100.100.200 (the module's
 * `metadataUrl`), as Afterburn reads it:
 *
 *   /latest/meta-data/eipv4, hostname, image-id, instance-id, instance/instance-type, private-ipv4,
 *     public-ipv4, region-id, vpc-id, zone-id        one value each (404 or empty: absent)
 *   /latest/meta-data/public-keys/                   lines `<id>/`; the key is public-keys/<id>/openssh-key
 *   /latest/user-data                                the userdata (404: none)
 *
 * Security hardening mode first: PUT /latest/api/token with `X-aliyun-ecs-metadata-token-ttl-seconds:
 * 21600`; when it succeeds every GET sends the token in `X-aliyun-ecs-metadata-token` (an instance
 * that allows only that mode refuses GETs without it). When the PUT is refused (403, 404, 405: an
 * older service) the requests go without a token (normal mode).
 *
 * Attributes: COREOS_ALIYUN_{EIPV4, HOSTNAME, IMAGE_ID, INSTANCE_ID, INSTANCE_TYPE, IPV4_PRIVATE,
 * IPV4_PUBLIC, REGION_ID, VPC_ID, ZONE_ID} (Afterburn's ALIYUN_*), and COREOS_IPV4_PRIVATE,
 * COREOS_IPV4_PUBLIC (public-ipv4, else eipv4), COREOS_HOSTNAME. Addresses must be IPv4 addresses,
 * the hostname a valid host name, the rest plain values; anything else is dropped with a log line.
 * Key ids are used in a URL only when they are plain words; key names are never used.
 */
import { HttpError, httpGet, httpPut, joinUrl } from './http.js';
import { userdataOrNull } from './local-io.js';
import { plainValue } from './afterburn-common.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanIp, cleanSshKeys, shown } from './values.js';

const TOKEN_TTL_SECONDS = '21600';
/** Largest single value (an id, an address, a key). */
const MAX_VALUE_BYTES = 64 * 1024;
/** A key id from public-keys/ usable in a URL path. */
const KEY_ID = /^[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,127}$/;

interface Get {
  /** A value under meta-data/ as text (without a final line break): null when absent (404) or empty. */
  (path: string): Promise<string | null>;
  raw(path: string): Promise<Buffer | null>;
}

/** The session token of security hardening mode, or null when the service does not give one. */
async function sessionToken(env: ProviderEnv): Promise<string | null> {
  const url = joinUrl(env.metadataUrl, '/latest/api/token');
  try {
    const b = await httpPut(url, env, { headers: { 'X-aliyun-ecs-metadata-token-ttl-seconds': TOKEN_TTL_SECONDS } });
    const token = b?.toString('utf8').trim() ?? '';
    if (token === '' || token.length > 4096 || !/^[\x21-\x7e]+$/.test(token)) {
      env.log(`aliyun: the metadata token is not usable (${shown(token)}); going on without one (normal mode)`);
      return null;
    }
    return token;
  } catch (err) {
    if (err instanceof HttpError && err.status !== undefined && [403, 404, 405].includes(err.status)) {
      env.log(`aliyun: no metadata token (HTTP ${err.status}); going on without one (normal mode)`);
      return null;
    }
    throw err;
  }
}

async function getter(env: ProviderEnv): Promise<Get> {
  const token = await sessionToken(env);
  const headers: Record<string, string> = token === null ? {} : { 'X-aliyun-ecs-metadata-token': token };
  const raw = (path: string) => httpGet(joinUrl(env.metadataUrl, `/latest/${path}`), env, { headers, optional: true });
  const get = async (path: string): Promise<string | null> => {
    const b = await raw(`meta-data/${path}`);
    if (b === null || b.length === 0) return null;
    if (b.length > MAX_VALUE_BYTES) {
      env.log(`aliyun: ignoring meta-data/${path}: ${b.length} bytes, more than the ${MAX_VALUE_BYTES} allowed`);
      return null;
    }
    // One final line break is not part of the value.
    return b.toString('utf8').replace(/\r?\n$/, '');
  };
  return Object.assign(get, { raw });
}

async function sshKeys(get: Get, env: ProviderEnv): Promise<string[]> {
  const list = await get('public-keys/');
  if (list === null) return [];
  const keys: string[] = [];
  const seen = new Set<string>();
  for (const line of list.split('\n')) {
    const entry = line.replace(/\r$/, '').trim();
    if (entry === '') continue;
    const id = entry.replace(/\/+$/, '');
    if (!KEY_ID.test(id)) {
      env.log(`aliyun: ignoring the public-keys entry ${shown(entry)}: not a key id`);
      continue;
    }
    if (seen.has(id)) continue;
    seen.add(id);
    const key = await get(`public-keys/${encodeURIComponent(id)}/openssh-key`);
    if (key === null) {
      env.log(`aliyun: public key ${id} has no openssh-key`);
      continue;
    }
    keys.push(key);
  }
  // Each key once (the service may list the same key under two ids).
  return cleanSshKeys(keys, env.log, 'the Alibaba Cloud metadata');
}

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const get = await getter(env);
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const a = md.attributes;
  const plain = async (key: string, path: string) => {
    const v = plainValue(await get(path), `aliyun: ${path}`, env.log);
    if (v !== undefined) a[`COREOS_ALIYUN_${key}`] = v;
  };
  const ip = async (path: string) => {
    const v = await get(path);
    return cleanIp(v === null ? null : v.replace(/^[ \t]+|[ \t]+$/g, ''), env.log, `aliyun: ${path}`, 4);
  };

  const eip = await ip('eipv4');
  if (eip !== undefined) a.COREOS_ALIYUN_EIPV4 = eip;
  const rawHostname = await get('hostname');
  const hostnameValue = plainValue(rawHostname, 'aliyun: hostname', env.log);
  if (hostnameValue !== undefined) {
    a.COREOS_ALIYUN_HOSTNAME = hostnameValue;
    const hostname = cleanHostname(hostnameValue, env.log, 'aliyun: the hostname');
    if (hostname !== undefined) md.hostname = a.COREOS_HOSTNAME = hostname;
  }
  await plain('IMAGE_ID', 'image-id');
  await plain('INSTANCE_ID', 'instance-id');
  await plain('INSTANCE_TYPE', 'instance/instance-type');
  const priv = await ip('private-ipv4');
  const pub = await ip('public-ipv4');
  if (priv !== undefined) a.COREOS_ALIYUN_IPV4_PRIVATE = a.COREOS_IPV4_PRIVATE = priv;
  if (pub !== undefined) a.COREOS_ALIYUN_IPV4_PUBLIC = pub;
  const publicAddress = pub ?? eip;
  if (publicAddress !== undefined) a.COREOS_IPV4_PUBLIC = publicAddress;
  await plain('REGION_ID', 'region-id');
  await plain('VPC_ID', 'vpc-id');
  await plain('ZONE_ID', 'zone-id');
  md.sshKeys = await sshKeys(get, env);
  return md;
}

/** latest/user-data as bytes (null: none); larger than 16 MiB is an error. */
async function userdata(env: ProviderEnv): Promise<Userdata> {
  const get = await getter(env);
  return userdataOrNull(await get.raw('user-data'), 'the Alibaba Cloud user-data');
}

export const provider: MetadataProvider = { id: 'aliyun', metadataUrl: 'http://100.100.100.200', metadata, userdata };
