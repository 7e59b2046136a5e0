/**
 * A tiny static file server for a fake release mirror (see mirror.ts), with injectable faults.
 * Listens on 127.0.0.1 only, on a random port. GET and HEAD, single byte ranges, streaming.
 */
import { createReadStream, type Stats } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';

export interface FailTimesFault {
  /** Substring of the request path. */
  match: string;
  /** Answer with `status` this many times, then serve normally. */
  times: number;
  /** Default 500. */
  status?: number;
}

export interface DropAfterFault {
  /** Substring of the request path. */
  match: string;
  /** Send the headers (full Content-Length) and this many body bytes, then kill the connection. */
  bytes: number;
  /** How many requests to cut short (default 1). */
  times?: number;
}

export interface MirrorFaults {
  /** Ignore Range headers: always 200 with the full body. */
  noRange?: boolean;
  failTimes?: FailTimesFault[];
  dropAfter?: DropAfterFault[];
  /** Substrings of request paths to answer 404. */
  notFound?: string[];
}

export interface MirrorRequest {
  method: string;
  /** The raw request target, as sent. */
  path: string;
  range?: string;
  status: number;
}

export interface MirrorServer {
  /** e.g. http://127.0.0.1:PORT (no trailing slash). */
  url: string;
  requests: MirrorRequest[];
  close(): Promise<void>;
  /** Mutable at runtime. Fault counters are kept per entry object: push a new entry to re-arm. */
  faults: MirrorFaults;
}

type Range = { start: number; end: number } | 'unsatisfiable' | null;

/** Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n`; null means "ignore, serve everything". */
function parseRange(header: string | undefined, size: number): Range {
  if (header === undefined) return null;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return null; // multiple ranges or junk: a server may ignore Range
  const [, a = '', b = ''] = m;
  if (a === '' && b === '') return null;
  if (a === '') {
    const n = Number(b);
    if (n === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  if (!Number.isSafeInteger(start) || start >= size || (b !== '' && Number(b) < start)) return 'unsatisfiable';
  return { start, end };
}

function contentType(path: string): string {
  if (/\.(txt|DIGESTS|asc)$/.test(path)) return 'text/plain; charset=utf-8';
  return 'application/octet-stream';
}

export async function startMirrorServer(root: string, opts: MirrorFaults = {}): Promise<MirrorServer> {
  const rootReal = await realpath(root);
  const requests: MirrorRequest[] = [];
  const sockets = new Set<Socket>();
  const used = new WeakMap<object, number>();
  const faults: MirrorFaults = opts;

  /** A fault's `match` is a substring of the path, or with a trailing `$` a suffix of it. */
  const matches = (path: string, m: string): boolean => (m.endsWith('$') ? path.endsWith(m.slice(0, -1)) : path.includes(m));

  /** Consumes one use of the first matching, not yet exhausted entry. */
  function take<T extends { match: string }>(list: T[] | undefined, path: string, limit: (e: T) => number): T | undefined {
    for (const e of list ?? []) {
      if (!matches(path, e.match)) continue;
      const n = used.get(e) ?? 0;
      if (n >= limit(e)) continue;
      used.set(e, n + 1);
      return e;
    }
    return undefined;
  }

  /** The real path of an existing regular file under root, or a status to answer with. */
  async function locate(rawPath: string): Promise<{ file: string; st: Stats } | number> {
    let decoded: string;
    try {
      decoded = decodeURIComponent(rawPath);
    } catch {
      return 400;
    }
    if (!decoded.startsWith('/') || decoded.includes('\0') || decoded.includes('\\')) return 400;
    if (decoded.split('/').some((seg) => seg === '..')) return 400;
    let real: string;
    try {
      real = await realpath(resolve(rootReal, '.' + decoded));
    } catch {
      return 404;
    }
    if (!real.startsWith(rootReal + sep)) return 404;
    const st = await stat(real).catch(() => undefined);
    if (!st?.isFile()) return 404;
    return { file: real, st };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const rawTarget = req.url ?? '/';
    const range = req.headers.range;
    const log = (status: number): void => {
      requests.push({ method, path: rawTarget, ...(range !== undefined ? { range } : {}), status });
    };
    const simple = (status: number, extra: Record<string, string> = {}): void => {
      log(status);
      const body = method === 'HEAD' ? '' : `${status}\n`;
      res.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': String(Buffer.byteLength(body)), ...extra });
      res.end(body);
    };

    if (method !== 'GET' && method !== 'HEAD') return simple(405, { Allow: 'GET, HEAD' });
    const path = rawTarget.split('?')[0] ?? '/';
    if (faults.notFound?.some((s) => matches(path, s))) return simple(404);
    const fail = take(faults.failTimes, path, (e) => e.times);
    if (fail) return simple(fail.status ?? 500);

    const found = await locate(path);
    if (typeof found === 'number') return simple(found);
    const { file, st } = found;
    const size = st.size;

    const headers: Record<string, string> = {
      'Content-Type': contentType(file),
      'Accept-Ranges': 'bytes',
      'Last-Modified': st.mtime.toUTCString(),
    };
    const r = faults.noRange ? null : parseRange(range, size);
    if (r === 'unsatisfiable') {
      return simple(416, { 'Content-Range': `bytes */${size}`, 'Accept-Ranges': 'bytes' });
    }
    const start = r ? r.start : 0;
    const end = r ? r.end : size - 1;
    const length = end - start + 1;
    const status = r ? 206 : 200;
    headers['Content-Length'] = String(length);
    if (r) headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
    log(status);
    res.writeHead(status, headers);
    if (method === 'HEAD' || length === 0) {
      res.end();
      return;
    }

    const drop = take(faults.dropAfter, path, (e) => e.times ?? 1);
    if (drop) {
      const n = Math.max(0, Math.min(drop.bytes, length));
      const socket = res.socket;
      const kill = (): void => {
        if (socket) socket.end(() => socket.destroy());
        else res.destroy();
      };
      if (n === 0) {
        res.flushHeaders();
        kill();
        return;
      }
      const chunks = createReadStream(file, { start, end: start + n - 1 });
      try {
        for await (const chunk of chunks) {
          if (res.destroyed) break;
          if (!res.write(chunk as Buffer)) {
            await new Promise<void>((ok) => {
              const done = (): void => {
                res.off('drain', done);
                res.off('close', done);
                ok();
              };
              res.on('drain', done);
              res.on('close', done);
            });
          }
        }
      } catch {
        // client went away
      }
      // Wait for the bytes to reach the socket and the client to read them (a client's stream that
      // errors drops what it has not read yet), then cut the connection.
      res.write(Buffer.alloc(0), () => setTimeout(kill, 150));
      return;
    }

    await pipeline(createReadStream(file, { start, end }), res).catch(() => {
      res.destroy();
    });
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) {
        requests.push({ method: req.method ?? 'GET', path: req.url ?? '/', status: 500 });
        res.writeHead(500, { 'Content-Type': 'text/plain' });
        res.end(String(err));
      } else {
        res.destroy();
      }
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', fail);
      ok();
    });
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    faults,
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
        for (const s of sockets) s.destroy();
      }),
  };
}
