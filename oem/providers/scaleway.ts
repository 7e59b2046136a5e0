/**
 * Scaleway: the instance metadata service at http://169.254.42.42 (the module's `metadataUrl`):
 *
 *   GET conf?format=json
 *     { "id": "11111111-...", "hostname": "frontend-0", "commercial_type": "GP1-M",
 *       "location": { "zone_id": "par1" }, "private_ip": "10.0.0.2",
 *       "public_ip": { "address": "93.184.216.34" }, "ipv6": { "address": "2001:db8::1" },
 *       "ssh_public_keys": [{ "key": "ssh-ed25519 AAAA...", "fingerprint": "..." }] }
 *   GET user_data/cloud-init      the userdata (404: none)
 *   PATCH state                   {"state_detail":"booted"}: the boot check-in
 *
 * What Afterburn does there: the attributes COREOS_SCALEWAY_{HOSTNAME, INSTANCE_ID, INSTANCE_TYPE,
 * ZONE_ID, IPV4_PRIVATE, IPV4_PUBLIC, IPV6_PUBLIC} (Afterburn's suffixes; plus COREOS_HOSTNAME,
 * COREOS_IPV4_PRIVATE, COREOS_IPV4_PUBLIC, COREOS_IPV6_PUBLIC), the hostname, the SSH keys, and the
 * check-in (PATCH state, Content-Type: application/json). The network is DHCP's.
 *
 * Userdata (Ignition's, not Afterburn's, part on Scaleway): Scaleway answers user_data only to a
 * request from a source port below 1024 (a privileged port: only root can send it, so no user of
 * the machine can read the userdata). Node's fetch cannot choose its source port, so user_data and
 * state are asked with node:http from a random port in 1..1023 (another one when it is taken), with
 * the same retries, limits and messages as http.ts. Without the privilege (not root) the request
 * goes from an ordinary port, with a log line; Scaleway then refuses user_data (HTTP 403).
 */
import { request as plainRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as tlsRequest } from 'node:https';
import { describe, OemError } from '../../src/shared/errors.js';
import { retryableStatus, RetriesExhausted, withRetries } from '../../src/shared/retry.js';
import { httpGetJsonObject, HttpError, joinUrl, showUrl } from './http.js';
import { MAX_SMALL_BYTES, MAX_USERDATA_BYTES, userdataOrNull } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanIp, cleanSshKeys, shown } from './values.js';

type Json = Record<string, unknown>;
type Log = (line: string) => void;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The real service (Afterburn's and Ignition's address). */
export const SCALEWAY_METADATA_URL = 'http://169.254.42.42';
/** The conf document is refused above this (it is a few KiB). */
export const MAX_DOCUMENT_BYTES = 4 * 1024 * 1024;
/** The check-in's body, byte for byte Afterburn's. */
export const STATE_BOOTED = '{"state_detail":"booted"}';
/** Instance ids, commercial types, zones: one word. */
const WORD = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

// ---------------------------------------------------------------------------------------------
// Requests from a privileged source port

/** Source ports tried per attempt before giving up on the privileged range (all taken). */
const PORT_PICKS = 32;

export interface LowPortOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  /** 404 gives null instead of an error. */
  optional?: boolean;
  /** Largest body accepted. */
  limit: number;
  /** The source port (default: a random one in 1..1023; another one when it is taken). Tests pin it. */
  pickPort?: () => number;
}

interface Answer {
  status: number;
  statusText: string;
  location: string | undefined;
  body: Buffer;
}

/** Not retried (a status or a refusal that another try does not change). */
class Permanent extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

class TimedOut extends Error {}

function once(url: URL, env: ProviderEnv, opts: LowPortOptions, localPort: number | undefined): Promise<Answer> {
  const send = url.protocol === 'https:' ? tlsRequest : plainRequest;
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.body !== undefined) headers['Content-Length'] = String(Buffer.byteLength(opts.body));
  const options: RequestOptions = {
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port === '' ? undefined : Number(url.port),
    path: `${url.pathname}${url.search}`,
    method: opts.method ?? 'GET',
    headers,
    agent: false,
  };
  if (localPort !== undefined) options.localPort = localPort;
  return new Promise<Answer>((resolve, reject) => {
    let done = false;
    const finish = (err: Error | null, answer?: Answer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        req.destroy();
        reject(err);
      } else resolve(answer!);
    };
    const req = send(options, (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      const base = { status, statusText: res.statusMessage ?? '', location: res.headers.location };
      if (status < 200 || status >= 300) {
        res.resume();
        finish(null, { ...base, body: Buffer.alloc(0) });
        return;
      }
      const declared = Number(res.headers['content-length'] ?? NaN);
      if (Number.isFinite(declared) && declared > opts.limit) {
        finish(new Permanent(`the response is ${declared} bytes, more than the ${opts.limit} allowed`));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > opts.limit) finish(new Permanent(`the response is larger than ${opts.limit} bytes`));
        else chunks.push(c);
      });
      res.on('end', () => finish(null, { ...base, body: Buffer.concat(chunks) }));
      res.on('error', (e) => finish(e));
    });
    const timer = setTimeout(() => finish(new TimedOut(`timed out after ${env.http.timeoutMs} ms`)), env.http.timeoutMs);
    req.on('error', (e) => finish(e));
    req.end(opts.body);
  });
}

const BUSY = new Set(['EADDRINUSE', 'EADDRNOTAVAIL']);
const DENIED = new Set(['EACCES', 'EPERM']);

const errCode = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;

/** One line for a failed request: the timeout, or the system's reason (ECONNREFUSED...). */
function reason(err: unknown): string {
  if (err instanceof TimedOut) return err.message;
  const code = errCode(err);
  return code !== undefined ? `connection failed: ${code}` : describe(err);
}

/**
 * A request from a source port below 1024, with env.http's retries (408, 429, 5xx, connection
 * errors and timeouts are retried; 404 is null with `optional`; anything else fails at once).
 * Errors are HttpErrors naming the method and URL.
 */
export async function lowPortRequest(rawUrl: string, env: ProviderEnv, opts: LowPortOptions): Promise<Buffer | null> {
  const method = (opts.method ?? 'GET').toUpperCase();
  const shownUrl = showUrl(rawUrl);
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    throw new HttpError(`invalid URL ${JSON.stringify(rawUrl)}`, rawUrl, undefined, 0);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new HttpError(`unsupported URL ${shownUrl} (only http and https)`, rawUrl, undefined, 0);
  const pick = opts.pickPort ?? (() => 1 + Math.floor(Math.random() * 1023));
  let privileged = true;
  let lastStatus: number | undefined;

  const attempt = async (n: number): Promise<Buffer | null> => {
    lastStatus = undefined;
    let answer: Answer | undefined;
    for (let i = 0; answer === undefined; i++) {
      const port = privileged ? pick() : undefined;
      try {
        answer = await once(url, env, { ...opts, method }, port);
      } catch (err) {
        if (port !== undefined && DENIED.has(errCode(err) ?? '')) {
          env.log(`scaleway: cannot send from a source port below 1024 (${errCode(err)}: not root?); asking ${shownUrl} from an ordinary port, which Scaleway may refuse`);
          privileged = false;
          continue;
        }
        if (port !== undefined && BUSY.has(errCode(err) ?? '') && i < PORT_PICKS) continue;
        if (err instanceof Permanent) throw new HttpError(`${method} ${shownUrl} failed: ${err.message}`, rawUrl, err.status, n);
        throw err;
      }
    }
    lastStatus = answer.status;
    const why = `HTTP ${answer.status}${answer.statusText ? ` ${answer.statusText}` : ''}`;
    if (answer.status >= 200 && answer.status < 300) return answer.body;
    if (answer.status === 404 && opts.optional) return null;
    if (retryableStatus(answer.status)) throw new Error(why);
    let detail = why;
    if (answer.status >= 300 && answer.status < 400) detail += ` (a redirect to ${answer.location ?? '?'}; redirects are not followed)`;
    if (answer.status === 403) detail += ` (Scaleway answers this only to a source port below 1024${privileged ? '' : '; this request came from an ordinary port'})`;
    throw new HttpError(`${method} ${shownUrl} failed: ${detail}`, rawUrl, answer.status, n);
  };

  const { tries, backoffMs, maxBackoffMs } = env.http;
  const attempts = Math.max(1, Math.floor(tries));
  try {
    return await withRetries({ tries: attempts, initialDelayMs: backoffMs, maxDelayMs: maxBackoffMs }, attempt, (n, err, delay) =>
      env.log(`${method} ${shownUrl} failed (attempt ${n}/${attempts}): ${reason(err)}; retrying in ${delay / 1000}s`),
    );
  } catch (err) {
    if (!(err instanceof RetriesExhausted)) throw err;
    const last = reason(err.last);
    throw new HttpError(`${method} ${shownUrl} failed after ${attempts} attempt${attempts === 1 ? '' : 's'}: ${last}`, rawUrl, /^HTTP \d/.test(last) ? lastStatus : undefined, attempts);
  }
}

// ---------------------------------------------------------------------------------------------
// The provider

/** conf?format=json, parsed; null when the service has none (404). */
async function fetchDocument(env: ProviderEnv): Promise<Json | null> {
  return httpGetJsonObject(joinUrl(env.metadataUrl, '/conf?format=json'), env, { optional: true, who: 'scaleway', maxBytes: MAX_DOCUMENT_BYTES });
}

function word(value: unknown, log: Log, what: string): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value === 'string' && WORD.test(value)) return value;
  log(`scaleway: ignoring ${what} ${shown(value)}: not a single word`);
  return undefined;
}

/** The `address` of an object such as public_ip / ipv6 (null or absent: none). */
function addressOf(value: unknown, log: Log, what: string, family: 4 | 6): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (!isObject(value)) {
    log(`scaleway: ignoring ${what}: not an object (${shown(typeof value === 'string' ? value : JSON.stringify(value))})`);
    return undefined;
  }
  return cleanIp(value.address, log, `scaleway: ${what} address`, family)?.toLowerCase();
}

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const doc = await fetchDocument(env);
  if (doc === null) {
    env.log('scaleway: the metadata service has no conf');
    return md;
  }
  const a = md.attributes;
  const set = (key: string, value: string | undefined) => {
    if (value !== undefined) a[key] = value;
  };
  if (typeof doc.hostname === 'string') {
    const hostname = cleanHostname(doc.hostname, env.log, 'scaleway: the hostname');
    if (hostname !== undefined) {
      md.hostname = hostname;
      a.COREOS_HOSTNAME = a.COREOS_SCALEWAY_HOSTNAME = hostname;
    }
  } else if (doc.hostname !== undefined && doc.hostname !== null) env.log(`scaleway: ignoring the hostname ${shown(JSON.stringify(doc.hostname))}: not a string`);
  set('COREOS_SCALEWAY_INSTANCE_ID', word(doc.id, env.log, 'the instance id'));
  set('COREOS_SCALEWAY_INSTANCE_TYPE', word(doc.commercial_type, env.log, 'the commercial_type'));
  if (isObject(doc.location)) set('COREOS_SCALEWAY_ZONE_ID', word(doc.location.zone_id, env.log, 'the zone_id'));
  else if (doc.location !== undefined && doc.location !== null) env.log('scaleway: ignoring "location": not an object');

  const priv = cleanIp(doc.private_ip, env.log, 'scaleway: private_ip', 4);
  const pub = addressOf(doc.public_ip, env.log, 'public_ip', 4);
  const v6 = addressOf(doc.ipv6, env.log, 'ipv6', 6);
  set('COREOS_SCALEWAY_IPV4_PRIVATE', priv);
  set('COREOS_IPV4_PRIVATE', priv);
  set('COREOS_SCALEWAY_IPV4_PUBLIC', pub);
  set('COREOS_IPV4_PUBLIC', pub);
  set('COREOS_SCALEWAY_IPV6_PUBLIC', v6);
  set('COREOS_IPV6_PUBLIC', v6);

  const keys = doc.ssh_public_keys;
  if (Array.isArray(keys)) {
    const texts: string[] = [];
    keys.forEach((k: unknown, i) => {
      if (isObject(k) && typeof k.key === 'string') texts.push(k.key);
      else env.log(`scaleway: ignoring ssh_public_keys[${i}]: not an object with a "key" string`);
    });
    md.sshKeys = cleanSshKeys(texts, env.log, 'the Scaleway metadata');
  } else if (keys !== undefined && keys !== null) env.log('scaleway: ignoring ssh_public_keys: not a list');
  return md;
}

/** user_data/cloud-init, asked from a privileged source port (null: 404 or empty). */
async function userdata(env: ProviderEnv): Promise<Userdata> {
  const b = await lowPortRequest(joinUrl(env.metadataUrl, '/user_data/cloud-init'), env, { optional: true, limit: MAX_USERDATA_BYTES });
  return userdataOrNull(b, 'scaleway: the userdata');
}

/** The state report Afterburn's boot check-in sends: PATCH state {"state_detail":"booted"}. */
async function checkIn(env: ProviderEnv): Promise<void> {
  const url = joinUrl(env.metadataUrl, '/state');
  try {
    await lowPortRequest(url, env, { method: 'PATCH', headers: { 'Content-Type': 'application/json' }, body: STATE_BOOTED, limit: MAX_SMALL_BYTES });
  } catch (err) {
    throw new OemError(`scaleway: the state report "booted" failed: ${describe(err)}`, { code: 'network', cause: err });
  }
  env.log('scaleway: reported the state "booted"');
}

export const provider: MetadataProvider = { id: 'scaleway', metadataUrl: SCALEWAY_METADATA_URL, metadata, userdata, checkIn };
