/**
 * HTTP for the metadata providers: global fetch with retries, backoff and a timeout per request, as
 * `env.http` says (defaults: 10 tries, 1 s doubling up to 5 s, 10 s per request).
 *
 *   - 2xx: the body.
 *   - 404: absent. With `optional` the result is null; without it, an HttpError at once.
 *   - 408, 429, 5xx, connection errors, timeouts: retried; after the last try an HttpError naming
 *     the URL, the attempts and the last reason.
 *   - any other status (other 4xx, and 3xx: redirects are never followed): an HttpError at once.
 *
 * Bodies larger than MAX_BODY_BYTES are refused. Each retry is logged through env.log.
 */
import { describe, OemError } from '../../src/shared/errors.js';
import { describeFetchError, retryableStatus, RetriesExhausted, statusText, withRetries } from '../../src/shared/retry.js';
import type { ProviderEnv } from './types.js';
import { showUrl } from '../provision/files.js';

export interface HttpOptions {
  headers?: Record<string, string>;
  /** Default GET (httpPut: PUT). */
  method?: string;
  /** 404 gives null instead of an error. */
  optional?: boolean;
  /** Request body (PUT, POST). */
  body?: string | Buffer;
  /** Response headers that must be there with these values (case-insensitive names, exact values);
   * a response without them is refused at once (e.g. GCE's `Metadata-Flavor: Google`). */
  requireHeaders?: Record<string, string>;
}

export interface HttpResponse {
  status: number;
  headers: Headers;
  body: Buffer;
}

/** Responses above this are refused (userdata is at most a few hundred KiB on every platform). */
export const MAX_BODY_BYTES = 32 * 1024 * 1024;

/** A failed request: `status` is the HTTP status when there was one (undefined: no response). */
export class HttpError extends OemError {
  constructor(
    message: string,
    readonly url: string,
    readonly status: number | undefined,
    readonly attempts: number,
  ) {
    super(message, { code: 'network' });
    this.name = 'HttpError';
  }
}

/** Not retried. */
class Permanent extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

/** A URL for messages, without credentials (the one the file fetcher uses too). */
export { showUrl };

/** `base` + `path` with exactly one slash between them. */
export function joinUrl(base: string, path: string): string {
  return `${base.replace(/\/+$/, '')}/${path.replace(/^\/+/, '')}`;
}

async function readBody(res: Response, url: string): Promise<Buffer> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > MAX_BODY_BYTES) {
    await res.body?.cancel().catch(() => {});
    throw new Permanent(`the response is ${declared} bytes, more than the ${MAX_BODY_BYTES} allowed`);
  }
  if (!res.body) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new Permanent(`the response from ${showUrl(url)} is larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}

function checkHeaders(res: Response, want: Record<string, string> | undefined): void {
  for (const [name, value] of Object.entries(want ?? {})) {
    const got = res.headers.get(name);
    if (got !== value) {
      throw new Permanent(`the response lacks the header ${name}: ${value}${got === null ? '' : ` (it has ${JSON.stringify(got)})`}; refusing it`, res.status);
    }
  }
}

/**
 * One request with retries (see the module comment). Returns null only for a 404 with `optional`.
 */
export async function httpRequest(url: string, env: Pick<ProviderEnv, 'http' | 'log'>, opts: HttpOptions = {}): Promise<HttpResponse | null> {
  const method = (opts.method ?? 'GET').toUpperCase();
  const shown = showUrl(url);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new HttpError(`invalid URL ${JSON.stringify(url)}`, url, undefined, 0);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new HttpError(`unsupported URL ${shown} (only http and https)`, url, undefined, 0);
  const { tries, backoffMs, maxBackoffMs, timeoutMs } = env.http;
  let lastStatus: number | undefined;
  const attempt = async (n: number): Promise<HttpResponse | null> => {
    lastStatus = undefined;
    try {
      const init: RequestInit = { method, signal: AbortSignal.timeout(timeoutMs), redirect: 'manual', headers: opts.headers ?? {} };
      if (opts.body !== undefined) init.body = opts.body;
      const res = await fetch(url, init);
      lastStatus = res.status;
      const why = statusText(res);
      if (res.status === 404) {
        await res.body?.cancel().catch(() => {});
        checkHeaders(res, opts.requireHeaders);
        if (opts.optional) return null;
        throw new Permanent(why, res.status);
      }
      if (res.status >= 200 && res.status < 300) {
        checkHeaders(res, opts.requireHeaders);
        const body = await readBody(res, url);
        return { status: res.status, headers: res.headers, body };
      }
      await res.body?.cancel().catch(() => {});
      if (retryableStatus(res.status)) throw new Error(why);
      if (res.status >= 300 && res.status < 400) {
        throw new Permanent(`${why} (a redirect to ${res.headers.get('location') ?? '?'}; redirects are not followed)`, res.status);
      }
      throw new Permanent(why, res.status);
    } catch (err) {
      if (err instanceof Permanent) throw new HttpError(`${method} ${shown} failed: ${err.message}`, url, err.status, n);
      throw err;
    }
  };
  const attempts = Math.max(1, Math.floor(tries));
  try {
    return await withRetries({ tries: attempts, initialDelayMs: backoffMs, maxDelayMs: maxBackoffMs }, attempt, (n, err, delay) =>
      env.log(`${method} ${shown} failed (attempt ${n}/${attempts}): ${describeFetchError(err, timeoutMs)}; retrying in ${delay / 1000}s`),
    );
  } catch (err) {
    if (!(err instanceof RetriesExhausted)) throw err;
    const last = describeFetchError(err.last, timeoutMs);
    throw new HttpError(`${method} ${shown} failed after ${attempts} attempt${attempts === 1 ? '' : 's'}: ${last}`, url, /^HTTP \d/.test(last) ? lastStatus : undefined, attempts);
  }
}

/** GET (or opts.method): the body; null for a 404 with `optional`. */
export async function httpGet(url: string, env: Pick<ProviderEnv, 'http' | 'log'>, opts: HttpOptions = {}): Promise<Buffer | null> {
  const r = await httpRequest(url, env, opts);
  return r === null ? null : r.body;
}

/** PUT (IMDSv2 tokens): the body; null for a 404 with `optional`. */
export async function httpPut(url: string, env: Pick<ProviderEnv, 'http' | 'log'>, opts: Omit<HttpOptions, 'method'> = {}): Promise<Buffer | null> {
  return httpGet(url, env, { ...opts, method: 'PUT' });
}

/** GET as UTF-8 text (null: absent with `optional`). */
export async function httpGetText(url: string, env: Pick<ProviderEnv, 'http' | 'log'>, opts: HttpOptions = {}): Promise<string | null> {
  const b = await httpGet(url, env, opts);
  return b === null ? null : b.toString('utf8');
}

/** GET and parse JSON (null: absent with `optional`); a body that is not JSON is an OemError. */
export async function httpGetJson(url: string, env: Pick<ProviderEnv, 'http' | 'log'>, opts: HttpOptions = {}): Promise<unknown> {
  const b = await httpGet(url, env, opts);
  if (b === null) return null;
  try {
    return JSON.parse(b.toString('utf8')) as unknown;
  } catch (err) {
    throw new OemError(`${showUrl(url)} did not return valid JSON (${b.length} bytes): ${describe(err)}`, { code: 'network' });
  }
}

/**
 * GET a JSON object (a platform's metadata document): null when absent with `optional`; a body over
 * `maxBytes`, one that is not JSON, or JSON that is not an object is an OemError naming `who` and the URL.
 */
export async function httpGetJsonObject(
  url: string,
  env: Pick<ProviderEnv, 'http' | 'log'>,
  opts: HttpOptions & { who: string; maxBytes: number },
): Promise<Record<string, unknown> | null> {
  const { who, maxBytes, ...rest } = opts;
  const b = await httpGet(url, env, { ...rest, headers: { Accept: 'application/json', ...rest.headers } });
  if (b === null) return null;
  if (b.length > maxBytes) throw new OemError(`${who}: ${showUrl(url)} is ${b.length} bytes, more than the ${maxBytes} a metadata document may be`, { code: 'network' });
  let doc: unknown;
  try {
    doc = JSON.parse(b.toString('utf8'));
  } catch (err) {
    throw new OemError(`${who}: ${showUrl(url)} is not valid JSON (${b.length} bytes): ${describe(err)}`, { code: 'network' });
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new OemError(`${who}: ${showUrl(url)} is not a JSON object`, { code: 'network' });
  return doc as Record<string, unknown>;
}
