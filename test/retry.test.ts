/**
 * The one retry policy (src/shared/retry.ts) that release downloads, metadata requests, file
 * sources and the CloudSigma serial exchange all go through.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { OemError } from '../src/shared/errors.js';
import { describeFetchError, retryableStatus, RetriesExhausted, withRetries } from '../src/shared/retry.js';

describe('withRetries', () => {
  it('retries other errors with waits doubling up to the cap, then gives the last error', async () => {
    const waits: number[] = [];
    let calls = 0;
    const err = await withRetries(
      { tries: 5, initialDelayMs: 1, maxDelayMs: 4 },
      async (n) => {
        calls++;
        expect(n).toBe(calls);
        throw new Error(`boom ${n}`);
      },
      (n, reason, delay) => waits.push(delay),
    ).catch((e: unknown) => e);
    expect(calls).toBe(5);
    expect(waits).toEqual([1, 2, 4, 4]);
    expect(err).toBeInstanceOf(RetriesExhausted);
    expect((err as RetriesExhausted).attempts).toBe(5);
    expect(((err as RetriesExhausted).last as Error).message).toBe('boom 5');
  });

  it('returns the first success, and ends at once on an OemError', async () => {
    expect(await withRetries({ tries: 3, initialDelayMs: 0, maxDelayMs: 0 }, async (n) => (n < 3 ? Promise.reject(new Error('x')) : n))).toBe(3);
    let calls = 0;
    const final = new OemError('not found (HTTP 404)', { code: 'network' });
    await expect(
      withRetries({ tries: 9, initialDelayMs: 0, maxDelayMs: 0 }, async () => {
        calls++;
        throw final;
      }),
    ).rejects.toBe(final);
    expect(calls).toBe(1);
  });

  it('treats tries below 1 as one attempt, and a signal as an interruption of the wait', async () => {
    let calls = 0;
    const once = await withRetries({ tries: 0, initialDelayMs: 0, maxDelayMs: 0 }, async () => {
      calls++;
      throw new Error('x');
    }).catch((e: unknown) => e);
    expect(once).toBeInstanceOf(RetriesExhausted);
    expect(calls).toBe(1);
    const ctrl = new AbortController();
    const p = withRetries({ tries: 3, initialDelayMs: 60_000, maxDelayMs: 60_000, signal: ctrl.signal }, async () => {
      throw new Error('down');
    }, () => setImmediate(() => ctrl.abort()));
    await expect(p).rejects.toMatchObject({ code: 'interrupted' });
  });

  it('knows which statuses are worth another try, and says why a fetch failed', async () => {
    expect([408, 429, 500, 502, 503, 504].every(retryableStatus)).toBe(true);
    expect([200, 301, 400, 401, 403, 404, 410].some(retryableStatus)).toBe(false);
    // A port nothing listens on: one a server had, closed again.
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    await new Promise((r) => server.close(r));
    const refused = await fetch(`http://127.0.0.1:${port}/`).catch((e: unknown) => e);
    expect(describeFetchError(refused)).toMatch(/fetch failed: ECONNREFUSED/);
    const timeout = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(0) }).catch((e: unknown) => e);
    expect(describeFetchError(timeout, 5)).toBe('timed out after 5 ms');
  });
});
