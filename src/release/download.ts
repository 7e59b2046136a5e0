/**
 * HTTP downloads with resume (Range), retries with backoff for 5xx and dropped connections, and an
 * idle timeout. 404 is final and says which URL. Nothing here decides trust: callers verify.
 */
import { open, stat, truncate } from 'node:fs/promises';
import { OemError, describe } from '../shared/errors.js';
import { retryableStatus, RetriesExhausted, withRetries } from '../shared/retry.js';

export interface RetryOptions {
  /** Attempts after the first (default 5). */
  retries?: number;
  /** First backoff delay; doubles each time, capped at 10 s (default 1000 ms). */
  backoffMs?: number;
  /** Abort a request that receives nothing for this long (default 60 s). */
  idleTimeoutMs?: number;
  signal?: AbortSignal;
  /** Called before each retry, e.g. to log it. */
  onRetry?: (attempt: number, reason: string, delayMs: number) => void;
}

export interface DownloadOptions extends RetryOptions {
  onProgress?: (received: number, total: number | undefined) => void;
}

export interface DownloadResult {
  url: string;
  size: number;
  /** Bytes transferred by this call (less than size when resumed). */
  transferred: number;
  attempts: number;
  resumed: boolean;
}

/** A failure worth another attempt (anything that is not an OemError is). */
class Retryable extends Error {}

function userAgent(): string {
  return `oem (Container Linux OEM image builder; node ${process.versions.node})`;
}

function notFound(url: string): OemError {
  return new OemError(`not found (HTTP 404): ${url}`, {
    code: 'network',
    hint: 'check --channel, --board, --release and --image-name (and --base-url); the release may not exist for this board',
  });
}

/** The release downloads' policy: `retries` after the first attempt, waits doubling up to 10 s. */
async function withDownloadRetries<T>(url: string, opts: RetryOptions, fn: (attempt: number) => Promise<T>): Promise<T> {
  const policy = { tries: (opts.retries ?? 5) + 1, initialDelayMs: opts.backoffMs ?? 1000, maxDelayMs: 10_000, ...(opts.signal ? { signal: opts.signal } : {}) };
  try {
    return await withRetries(policy, fn, (n, reason, delay) => opts.onRetry?.(n, describe(reason), delay));
  } catch (err) {
    if (!(err instanceof RetriesExhausted)) throw err;
    throw new OemError(`download failed after ${err.attempts} attempts: ${url}: ${describe(err.last)}`, {
      code: 'network',
      hint: 'check the network and --base-url, then run the same command again (a partial download resumes where it stopped)',
    });
  }
}

/** One request with an idle timeout; returns the response and a function to stop the timer. */
async function request(url: string, headers: Record<string, string>, opts: RetryOptions): Promise<{ res: Response; idle: () => void; done: () => void }> {
  const ctrl = new AbortController();
  const idleMs = opts.idleTimeoutMs ?? 60_000;
  let timer: NodeJS.Timeout | undefined;
  const idle = () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => ctrl.abort(new Error(`no data for ${Math.round(idleMs / 1000)} s`)), idleMs);
  };
  const onAbort = () => ctrl.abort(new Error('interrupted'));
  opts.signal?.addEventListener('abort', onAbort);
  const done = () => {
    if (timer) clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
  };
  idle();
  try {
    const res = await fetch(url, { headers: { 'user-agent': userAgent(), ...headers }, signal: ctrl.signal, redirect: 'follow' });
    return { res, idle, done };
  } catch (err) {
    done();
    const cause = (err as Error & { cause?: unknown }).cause ?? err;
    // A name that does not exist, or a URL fetch refuses outright: no later attempt can do better.
    if ((cause as NodeJS.ErrnoException).code === 'ENOTFOUND') {
      throw new OemError(`cannot resolve the host of ${url} (${describe(cause)})`, { code: 'network', hint: 'check the host name in --base-url and the machine\'s DNS or network' });
    }
    if (cause instanceof Error && cause.message === 'bad port') {
      throw new OemError(`cannot fetch ${url}: fetch refuses its port (a "bad port" of the Fetch standard)`, { code: 'network', hint: 'serve the release on another port' });
    }
    throw new Retryable(`connection failed: ${describe(cause)}`);
  }
}

function checkStatus(res: Response, url: string): void {
  if (res.status === 404 || res.status === 410) throw notFound(url);
  if (retryableStatus(res.status)) throw new Retryable(`HTTP ${res.status}`);
  if (res.status >= 400) throw new OemError(`HTTP ${res.status} ${res.statusText} for ${url}`, { code: 'network' });
}

/** Fetches a small file into memory, with retries. */
export async function fetchBytes(url: string, opts: RetryOptions & { maxBytes?: number } = {}): Promise<Buffer> {
  const max = opts.maxBytes ?? 16 * 1024 * 1024;
  return withDownloadRetries(url, opts, async () => {
    const { res, idle, done } = await request(url, {}, opts);
    try {
      checkStatus(res, url);
      const chunks: Buffer[] = [];
      let n = 0;
      try {
        for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) {
          idle();
          n += c.length;
          if (n > max) throw new OemError(`${url} is larger than ${max} bytes; refusing it`, { code: 'network' });
          chunks.push(Buffer.from(c));
        }
      } catch (err) {
        if (err instanceof OemError) throw err;
        throw new Retryable(`connection dropped: ${describe((err as Error & { cause?: unknown }).cause ?? err)}`);
      }
      const body = Buffer.concat(chunks);
      const len = res.headers.get('content-length');
      if (len !== null && Number(len) !== body.length) throw new Retryable(`connection dropped after ${body.length} of ${len} bytes`);
      return body;
    } finally {
      done();
    }
  });
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/**
 * Downloads `url` into `partPath`, resuming from what `partPath` already holds. When the server
 * ignores Range, the file restarts from zero. The caller renames the file once it is verified.
 */
export async function downloadFile(url: string, partPath: string, opts: DownloadOptions = {}): Promise<DownloadResult> {
  let transferred = 0;
  let resumed = false;
  let attempts = 0;
  const size = await withDownloadRetries(url, opts, async (attempt) => {
    attempts = attempt;
    const have = await sizeOf(partPath);
    const headers: Record<string, string> = have > 0 ? { range: `bytes=${have}-` } : {};
    const { res, idle, done } = await request(url, headers, opts);
    try {
      let start = 0;
      let total: number | undefined;
      if (res.status === 416 && have > 0) {
        // Nothing after what we have: complete if the server's size is ours.
        const m = /bytes \*\/(\d+)/.exec(res.headers.get('content-range') ?? '');
        await res.body?.cancel();
        if (m && Number(m[1]) === have) return have;
        await truncate(partPath, 0);
        throw new Retryable('server refused to resume; restarting');
      }
      checkStatus(res, url);
      if (res.status === 206) {
        const m = /bytes (\d+)-(\d+)\/(\d+|\*)/.exec(res.headers.get('content-range') ?? '');
        if (!m || Number(m[1]) !== have) {
          await res.body?.cancel();
          await truncate(partPath, 0);
          throw new Retryable('server answered with an unexpected range; restarting');
        }
        start = have;
        total = m[3] === '*' ? undefined : Number(m[3]);
        resumed = true;
      } else {
        // 200: the whole file (the server ignored Range, or there was nothing to resume).
        const len = res.headers.get('content-length');
        total = len === null ? undefined : Number(len);
      }
      const fh = await open(partPath, start === 0 ? 'w' : 'r+');
      let pos = start;
      try {
        for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) {
          idle();
          let off = 0;
          while (off < c.length) {
            const { bytesWritten } = await fh.write(c, off, c.length - off, pos);
            off += bytesWritten;
            pos += bytesWritten;
          }
          transferred += c.length;
          opts.onProgress?.(pos, total);
        }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
          throw new OemError(`no space left on device while downloading ${url} to ${partPath}`, { code: 'noSpace' });
        }
        throw new Retryable(`connection dropped at byte ${pos}: ${describe((err as Error & { cause?: unknown }).cause ?? err)}`);
      } finally {
        await fh.close();
      }
      if (total !== undefined && pos !== total) throw new Retryable(`connection dropped after ${pos} of ${total} bytes`);
      return pos;
    } finally {
      done();
    }
  });
  return { url, size, transferred, attempts, resumed };
}
