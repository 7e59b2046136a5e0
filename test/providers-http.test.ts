/**
 * oem/providers/http.ts against a local server on 127.0.0.1 (an ephemeral port): retries with
 * backoff, 404 as absent, statuses that fail at once, timeouts, and a dead service that is given up
 * on after the configured tries. Small backoffs and timeouts keep the file to a few seconds.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { HttpError, httpGet, httpGetJson, httpPut, joinUrl } from '../oem/providers/http.js';
import { defaultEnv } from '../oem/providers/index.js';
import type { ProviderEnv } from '../oem/providers/types.js';

let server: Server;
let base: string;
const hits = new Map<string, number[]>();
const seen: { method: string; url: string; headers: IncomingMessage['headers'] }[] = [];
const hanging: ServerResponse[] = [];

function handle(req: IncomingMessage, res: ServerResponse): void {
  const url = req.url ?? '/';
  const times = hits.get(url) ?? [];
  times.push(Date.now());
  hits.set(url, times);
  seen.push({ method: req.method ?? '', url, headers: req.headers });
  const n = times.length;
  const reply = (status: number, body = '', headers: Record<string, string> = {}) => {
    res.writeHead(status, headers);
    res.end(body);
  };
  if (url === '/ok') return reply(200, 'hello');
  if (url === '/empty') return reply(200, '');
  if (url.startsWith('/flaky')) return n <= 1 ? reply(500, 'oops') : reply(200, 'recovered');
  if (url === '/always500') return reply(503, 'busy');
  if (url === '/throttled') return n <= 2 ? reply(429, 'slow down') : reply(200, 'ok');
  if (url === '/missing') return reply(404, 'not here');
  if (url === '/forbidden') return reply(403, 'no');
  if (url === '/redirect') return reply(302, '', { location: 'http://127.0.0.1:1/elsewhere' });
  if (url === '/garbage') return reply(200, '{"a": 1,,, <html>');
  if (url === '/json') return reply(200, '{"a": [1, 2]}');
  if (url === '/flavored') return reply(200, 'yes', { 'Metadata-Flavor': 'Google' });
  if (url === '/unflavored') return reply(200, 'no');
  if (url === '/token' && req.method === 'PUT') return reply(200, `token-for-${req.headers['x-ttl'] ?? '?'}`);
  if (url === '/hang') {
    hanging.push(res); // never answers
    return;
  }
  if (url === '/hang-body') {
    res.writeHead(200, { 'content-length': '100' });
    res.write('partial');
    hanging.push(res);
    return;
  }
  if (url === '/slow-once') {
    if (n === 1) {
      hanging.push(res);
      return;
    }
    return reply(200, 'second time');
  }
  reply(404);
}

beforeAll(async () => {
  server = createServer(handle);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  for (const res of hanging) res.destroy();
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

let logs: string[];
beforeEach(() => {
  logs = [];
  hits.clear();
  seen.length = 0;
});

function env(http: Partial<ProviderEnv['http']> = {}): ProviderEnv {
  const e = defaultEnv({ metadataUrl: base, http: { tries: 4, backoffMs: 10, maxBackoffMs: 40, timeoutMs: 1000, ...http }, log: (l) => logs.push(l) });
  // Never the real link-local service from a test.
  expect(e.metadataUrl.startsWith('http://127.0.0.1:')).toBe(true);
  return e;
}

const url = (p: string) => joinUrl(base, p);

describe('httpGet', () => {
  it('returns the body of a 200, and an empty body as an empty buffer', async () => {
    expect((await httpGet(url('/ok'), env()))?.toString()).toBe('hello');
    expect((await httpGet(url('/empty'), env()))?.length).toBe(0);
    expect(logs).toEqual([]);
  });

  it('retries a 500 and returns the 200 that follows, logging the retry', async () => {
    expect((await httpGet(url('/flaky'), env()))?.toString()).toBe('recovered');
    expect(hits.get('/flaky')).toHaveLength(2);
    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatch(/^GET http:\/\/127\.0\.0\.1:\d+\/flaky failed \(attempt 1\/4\): HTTP 500 .*; retrying in 0\.01s$/);
  });

  it('retries 429', async () => {
    expect((await httpGet(url('/throttled'), env()))?.toString()).toBe('ok');
    expect(hits.get('/throttled')).toHaveLength(3);
  });

  it('backs off doubling from backoffMs up to maxBackoffMs, then gives up naming the URL and the last reason', async () => {
    const e = env({ tries: 5, backoffMs: 40, maxBackoffMs: 100 });
    const err = await httpGet(url('/always500'), e).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(HttpError);
    expect((err as HttpError).message).toMatch(/^GET http:\/\/127\.0\.0\.1:\d+\/always500 failed after 5 attempts: HTTP 503/);
    expect((err as HttpError).status).toBe(503);
    expect((err as HttpError).attempts).toBe(5);
    const t = hits.get('/always500')!;
    expect(t).toHaveLength(5);
    const gaps = t.slice(1).map((v, i) => v - t[i]!);
    // 40, 80, 100 (capped), 100
    const want = [40, 80, 100, 100];
    gaps.forEach((g, i) => expect(g).toBeGreaterThanOrEqual(want[i]! - 5));
    expect(gaps[3]!).toBeLessThan(400);
    expect(logs.map((l) => /retrying in ([\d.]+)s/.exec(l)?.[1])).toEqual(['0.04', '0.08', '0.1', '0.1']);
  });

  it('404: null with optional, an error at once without', async () => {
    expect(await httpGet(url('/missing'), env(), { optional: true })).toBeNull();
    const err = await httpGet(url('/missing'), env()).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(HttpError);
    expect((err as HttpError).status).toBe(404);
    expect((err as Error).message).toContain('/missing failed: HTTP 404');
    expect(hits.get('/missing')).toHaveLength(2);
    expect(logs).toEqual([]);
  });

  it('fails at once for other 4xx and for redirects (which are not followed)', async () => {
    const e403 = await httpGet(url('/forbidden'), env(), { optional: true }).catch((x: unknown) => x);
    expect((e403 as HttpError).status).toBe(403);
    expect(hits.get('/forbidden')).toHaveLength(1);
    const e302 = await httpGet(url('/redirect'), env()).catch((x: unknown) => x);
    expect((e302 as HttpError).status).toBe(302);
    expect((e302 as Error).message).toMatch(/redirects are not followed/);
    expect(hits.get('/redirect')).toHaveLength(1);
    expect(hits.has('/elsewhere')).toBe(false);
  });

  it('times out a request that never answers, and one whose body never ends; retries them', async () => {
    const t0 = Date.now();
    const err = await httpGet(url('/hang'), env({ tries: 2, timeoutMs: 150 })).catch((x: unknown) => x);
    expect((err as Error).message).toMatch(/\/hang failed after 2 attempts: timed out after 150 ms/);
    expect(hits.get('/hang')).toHaveLength(2);
    expect(Date.now() - t0).toBeLessThan(3000);
    const err2 = await httpGet(url('/hang-body'), env({ tries: 1, timeoutMs: 150 })).catch((x: unknown) => x);
    expect((err2 as Error).message).toMatch(/\/hang-body failed after 1 attempt: /);
    expect((await httpGet(url('/slow-once'), env({ tries: 2, timeoutMs: 150 })))?.toString()).toBe('second time');
  });

  it('gives up on a dead service after the configured tries, with a clear error', async () => {
    // A port nobody listens on: bind one, then close it.
    const s = createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as AddressInfo).port;
    await new Promise<void>((r) => s.close(() => r()));
    const dead = `http://127.0.0.1:${port}/latest/meta-data`;
    const t0 = Date.now();
    const err = await httpGet(dead, env({ tries: 3, backoffMs: 20 })).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(HttpError);
    expect((err as Error).message).toBe(`GET ${dead} failed after 3 attempts: fetch failed: ECONNREFUSED`);
    expect((err as HttpError).status).toBeUndefined();
    expect(logs).toHaveLength(2);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(55);
  });

  it('refuses a response without the required headers, at once', async () => {
    const flavor = { 'Metadata-Flavor': 'Google' };
    expect((await httpGet(url('/flavored'), env(), { headers: flavor, requireHeaders: flavor }))?.toString()).toBe('yes');
    expect(seen[0]?.headers['metadata-flavor']).toBe('Google');
    const err = await httpGet(url('/unflavored'), env(), { requireHeaders: flavor }).catch((x: unknown) => x);
    expect((err as Error).message).toMatch(/lacks the header Metadata-Flavor: Google; refusing it/);
    expect(hits.get('/unflavored')).toHaveLength(1);
  });

  it('refuses URLs that are not http(s)', async () => {
    await expect(httpGet('file:///etc/passwd', env())).rejects.toThrow(/unsupported URL/);
    await expect(httpGet('not a url', env())).rejects.toThrow(/invalid URL/);
  });
});

describe('httpPut and httpGetJson', () => {
  it('PUT sends the method and headers', async () => {
    const b = await httpPut(url('/token'), env(), { headers: { 'x-ttl': '21600' } });
    expect(b?.toString()).toBe('token-for-21600');
    expect(seen[0]?.method).toBe('PUT');
  });

  it('parses JSON; garbage is a clear error, not retried', async () => {
    expect(await httpGetJson(url('/json'), env())).toEqual({ a: [1, 2] });
    await expect(httpGetJson(url('/garbage'), env())).rejects.toThrow(/\/garbage did not return valid JSON \(17 bytes\)/);
    expect(hits.get('/garbage')).toHaveLength(1);
    expect(await httpGetJson(url('/missing'), env(), { optional: true })).toBeNull();
  });
});
