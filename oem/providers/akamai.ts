/**
 * Akamai Connected Cloud (Linode): the Metadata service under env.metadataUrl (http://169.254.169.254):
 *
 *   PUT /v1/token       with `Metadata-Token-Expiry-Seconds: 300`: a token (text/plain)
 *   GET /v1/instance    { "id": 12345678, "host_uuid": "a631b16d...", "label": "my-linode", "region": "us-ord",
 *                         "type": "g6-nanode-1", "tags": ["foo", "bar"], "specs": {...}, "backups": {...} }
 *   GET /v1/network     { "interfaces": [...], "ipv4": { "public": ["1.2.3.4/32"], "private": [...], "shared": [...] },
 *                         "ipv6": { "slaac": "2600:3c06::f03c:94ff:fecb:c10b/128", "link_local": "fe80::.../128",
 *                                   "ranges": ["2600:3c06:e001:2::/64"], "shared_ranges": [...] } }
 *   GET /v1/ssh-keys    { "users": { "root": ["ssh-ed25519 AAAA..."], "alice": [...] } }
 *   GET /v1/user-data   the userdata, base64-encoded (Linode takes it base64 and hands it back so)
 *
 * Every GET sends the token in `Metadata-Token` (the service answers 401 without it) and asks for
 * JSON (`Accept: application/json`; the default is a text format). A 401 on a GET (the token expired)
 * gets one new token and one more try. The token is required: when the PUT fails there is nothing
 * to read, and the error says so.
 *
 * Attributes, Afterburn's names (AFTERBURN_AKAMAI_*): COREOS_AKAMAI_{INSTANCE_ID, INSTANCE_HOST_UUID,
 * INSTANCE_LABEL, INSTANCE_REGION, INSTANCE_TYPE, INSTANCE_TAGS (joined with ':'), PUBLIC_IPV4_<n>,
 * PRIVATE_IPV4_<n>, SHARED_IPV4_<n>, IPV6_SLAAC, IPV6_LINK_LOCAL, IPV6_RANGE_<n>,
 * IPV6_SHARED_RANGE_<n>}, plus COREOS_IPV4_PUBLIC/PRIVATE (the first of each) and COREOS_IPV6_PUBLIC
 * (the SLAAC address). The service gives the addresses in CIDR notation; an environment file's
 * IPV4/IPV6 values are bare addresses (values.ts), so the prefix length is left out (Afterburn keeps
 * it). SSH keys: every user's keys (in the order of the user names). The platform names no hostname
 * (Afterburn sets none here either); the network is DHCP's.
 */
import { isIP } from 'node:net';
import { OemError } from '../../src/shared/errors.js';
import { HttpError, httpGet, httpPut, joinUrl, showUrl } from './http.js';
import { decodeBase64, MAX_ENVELOPE_BYTES, userdataOrNull } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanSshKeys, shown } from './values.js';

type Json = Record<string, unknown>;
type Log = (line: string) => void;

/** The token's lifetime Afterburn and Ignition ask for. */
export const TOKEN_TTL_SECONDS = '300';
/** Largest JSON document read (the instance, network and key documents are a few KiB). */
const MAX_JSON_BYTES = 1024 * 1024;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A token from PUT /v1/token; an error when the service gives none. */
async function fetchToken(env: ProviderEnv): Promise<string> {
  const url = joinUrl(env.metadataUrl, '/v1/token');
  const b = await httpPut(url, env, { headers: { 'Metadata-Token-Expiry-Seconds': TOKEN_TTL_SECONDS, Accept: 'text/plain' } });
  const token = b?.toString('utf8').trim() ?? '';
  if (token === '') throw new OemError(`akamai: ${showUrl(url)} gave an empty token`, { code: 'network' });
  if (!/^[\x21-\x7e]{1,4096}$/.test(token)) throw new OemError(`akamai: ${showUrl(url)} gave an unusable token (${shown(token)})`, { code: 'network' });
  return token;
}

/** GETs with the token (a new one once on a 401); null for a 404. */
async function session(env: ProviderEnv): Promise<(path: string, accept: string) => Promise<Buffer | null>> {
  let token = await fetchToken(env);
  return async (path, accept) => {
    const url = joinUrl(env.metadataUrl, path);
    const get = () => httpGet(url, env, { headers: { 'Metadata-Token': token, Accept: accept }, optional: true });
    try {
      return await get();
    } catch (err) {
      if (!(err instanceof HttpError) || err.status !== 401) throw err;
      env.log(`akamai: ${showUrl(url)} refused the token (HTTP 401); getting a new one`);
      token = await fetchToken(env);
      return get();
    }
  };
}

/** A JSON object from `path`: undefined when absent (404) or too large (logged); an error when it is not JSON. */
async function document(env: ProviderEnv, get: (path: string, accept: string) => Promise<Buffer | null>, path: string): Promise<Json | undefined> {
  const url = showUrl(joinUrl(env.metadataUrl, path));
  const b = await get(path, 'application/json');
  if (b === null) {
    env.log(`akamai: the metadata service has no ${path} (404)`);
    return undefined;
  }
  if (b.length > MAX_JSON_BYTES) {
    env.log(`akamai: ${url}: ${b.length} bytes, more than the ${MAX_JSON_BYTES} allowed; ignored`);
    return undefined;
  }
  let doc: unknown;
  try {
    doc = JSON.parse(b.toString('utf8'));
  } catch (err) {
    throw new OemError(`akamai: ${url} is not valid JSON (${b.length} bytes): ${(err as Error).message}`, { code: 'network' });
  }
  if (!isObject(doc)) throw new OemError(`akamai: ${url} is not a JSON object`, { code: 'network' });
  return doc;
}

/** A string field matching `re`; undefined (with a log line when present) otherwise. */
function field(doc: Json, key: string, re: RegExp, log: Log): string | undefined {
  const v = doc[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v === 'string' && re.test(v)) return v;
  log(`akamai: ignoring the instance ${key} ${shown(v)}: not a valid value`);
  return undefined;
}

/** The address of an `address[/prefix]` of `family`; undefined with a log line when it is not one. */
function cidrAddress(value: unknown, family: 4 | 6, log: Log, what: string): string | undefined {
  if (typeof value !== 'string' || value === '') {
    if (value !== undefined && value !== null && value !== '') log(`akamai: ignoring ${what}: not a string (${shown(typeof value === 'object' ? JSON.stringify(value) : value)})`);
    return undefined;
  }
  const m = /^([0-9A-Fa-f.:]+)(?:\/(\d{1,3}))?$/.exec(value);
  const address = m?.[1];
  const prefix = m?.[2] === undefined ? undefined : Number(m[2]);
  if (address === undefined || isIP(address) !== family || (prefix !== undefined && prefix > (family === 4 ? 32 : 128))) {
    log(`akamai: ignoring ${what} ${shown(value)}: not an IPv${family} address or network`);
    return undefined;
  }
  return family === 6 ? address.toLowerCase() : address;
}

const INSTANCE_ID = /^\d{1,20}$/;
const HOST_UUID = /^[0-9A-Fa-f-]{1,64}$/;
/** Linode labels: letters, digits, '.', '_' and '-' (3 to 64 of them). */
const LABEL = /^[A-Za-z0-9._-]{1,64}$/;
const WORD = /^[A-Za-z0-9._-]{1,64}$/;
/** A tag: printable, no quotes, shell or glob characters, no ':' (the separator). */
const TAG = /^[A-Za-z0-9 ._@+=,/-]{1,64}$/;

function instanceAttributes(doc: Json, a: Record<string, string>, log: Log): void {
  const id = doc.id;
  if ((typeof id === 'number' && Number.isSafeInteger(id) && id >= 0) || (typeof id === 'string' && INSTANCE_ID.test(id))) a.COREOS_AKAMAI_INSTANCE_ID = String(id);
  else if (id !== undefined && id !== null) log(`akamai: ignoring the instance id ${shown(id)}: not a number`);
  const set = (name: string, value: string | undefined) => {
    if (value !== undefined) a[`COREOS_AKAMAI_${name}`] = value;
  };
  set('INSTANCE_HOST_UUID', field(doc, 'host_uuid', HOST_UUID, log));
  set('INSTANCE_LABEL', field(doc, 'label', LABEL, log));
  set('INSTANCE_REGION', field(doc, 'region', WORD, log));
  set('INSTANCE_TYPE', field(doc, 'type', WORD, log));
  const tags = doc.tags;
  if (Array.isArray(tags)) {
    const good = tags.filter((t: unknown) => {
      if (typeof t === 'string' && TAG.test(t)) return true;
      log(`akamai: ignoring the tag ${shown(t)}: not a plain tag`);
      return false;
    });
    // Afterburn writes the (possibly empty) list joined with ':'.
    a.COREOS_AKAMAI_INSTANCE_TAGS = good.join(':');
  } else if (tags !== undefined && tags !== null) log('akamai: ignoring the instance tags: not a list');
}

function list(v: unknown, log: Log, what: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return v;
  log(`akamai: ignoring ${what}: not a list`);
  return [];
}

function networkAttributes(doc: Json, a: Record<string, string>, log: Log): void {
  const v4 = isObject(doc.ipv4) ? doc.ipv4 : {};
  for (const [kind, name] of [
    ['public', 'PUBLIC'],
    ['private', 'PRIVATE'],
    ['shared', 'SHARED'],
  ] as const) {
    list(v4[kind], log, `the ${kind} IPv4 addresses`).forEach((value, i) => {
      const address = cidrAddress(value, 4, log, `the ${kind} IPv4 address ${i}`);
      if (address === undefined) return;
      a[`COREOS_AKAMAI_${name}_IPV4_${i}`] = address;
      if (kind !== 'shared' && a[`COREOS_IPV4_${name}`] === undefined) a[`COREOS_IPV4_${name}`] = address;
    });
  }
  const v6 = isObject(doc.ipv6) ? doc.ipv6 : {};
  const slaac = cidrAddress(v6.slaac, 6, log, 'the IPv6 SLAAC address');
  if (slaac !== undefined) a.COREOS_AKAMAI_IPV6_SLAAC = a.COREOS_IPV6_PUBLIC = slaac;
  const linkLocal = cidrAddress(v6.link_local, 6, log, 'the IPv6 link-local address');
  if (linkLocal !== undefined) a.COREOS_AKAMAI_IPV6_LINK_LOCAL = linkLocal;
  for (const [kind, name] of [
    ['ranges', 'RANGE'],
    ['shared_ranges', 'SHARED_RANGE'],
  ] as const) {
    list(v6[kind], log, `the IPv6 ${kind}`).forEach((value, i) => {
      const address = cidrAddress(value, 6, log, `the IPv6 ${kind} ${i}`);
      if (address !== undefined) a[`COREOS_AKAMAI_IPV6_${name}_${i}`] = address;
    });
  }
}

function sshKeys(doc: Json, log: Log): string[] {
  const users = doc.users;
  if (!isObject(users)) {
    if (users !== undefined && users !== null) log('akamai: ignoring the ssh-keys users: not an object');
    return [];
  }
  const keys: unknown[] = [];
  for (const name of Object.keys(users).sort()) {
    const entry = users[name];
    if (Array.isArray(entry)) keys.push(...entry);
    else if (entry !== null && entry !== undefined) log(`akamai: ignoring the keys of the user ${shown(name)}: not a list`);
  }
  return cleanSshKeys(keys, log, 'the Akamai metadata');
}

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const get = await session(env);
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const instance = await document(env, get, '/v1/instance');
  if (instance) instanceAttributes(instance, md.attributes, env.log);
  const network = await document(env, get, '/v1/network');
  if (network) networkAttributes(network, md.attributes, env.log);
  const keys = await document(env, get, '/v1/ssh-keys');
  if (keys) md.sshKeys = sshKeys(keys, env.log);
  return md;
}

/** /v1/user-data, base64-decoded; null when there is none (404 or empty) or it is not base64 (logged). */
async function userdata(env: ProviderEnv): Promise<Userdata> {
  const get = await session(env);
  const b = await get('/v1/user-data', 'text/plain');
  if (b === null || b.length === 0) return null;
  const url = showUrl(joinUrl(env.metadataUrl, '/v1/user-data'));
  if (b.length > MAX_ENVELOPE_BYTES) throw new OemError(`akamai: ${url} is larger than ${MAX_ENVELOPE_BYTES} bytes`);
  let data: Buffer;
  try {
    data = decodeBase64(b.toString('latin1'), `the userdata from ${url}`);
  } catch (err) {
    env.log(`akamai: ignoring ${(err as Error).message} (${b.length} bytes)`);
    return null;
  }
  return userdataOrNull(data, `akamai: the userdata from ${url}`);
}

export const provider: MetadataProvider = { id: 'akamai', metadata, userdata };
