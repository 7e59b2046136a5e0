/**
 * What the agent's provider tests share: a metadata service on 127.0.0.1 (an ephemeral port) that
 * answers per route in a platform's documented format and records every request with its body; a
 * dead URL; random SSH keys; a temporary root with the core user; the agent CLI run in-process; and
 * the hooks that set these up for a test file (useWorkDir, useMetadataMock). Nothing here talks to
 * 169.254.169.254 or any other address.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, expect } from 'vitest';
import { run } from '../../oem/cli.js';
import { defaultEnv } from '../../oem/providers/index.js';
import type { ProviderEnv } from '../../oem/providers/types.js';

function sshString(data: Buffer | string): Buffer {
  const b = typeof data === 'string' ? Buffer.from(data) : data;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

/** A well-formed ed25519 public key line (random key material). */
export function edKey(comment: string): string {
  return `ssh-ed25519 ${Buffer.concat([sshString('ssh-ed25519'), sshString(randomBytes(32))]).toString('base64')} ${comment}`;
}

/** A key line without its comment (type and base64), for comparisons. */
export const keyBody = (line: string) => line.split(' ').slice(0, 2).join(' ');

export interface Reply {
  status?: number;
  body?: string | Buffer;
  headers?: Record<string, string>;
  /** Never answer. */
  hang?: boolean;
}

export interface Seen {
  method: string;
  path: string;
  /** The query string without '?' ('' for none). */
  query: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

/** A reply; a list is answered in turn (its last element from then on); a function sees the request. */
export type Route = Reply | Reply[] | ((req: Seen) => Reply);

/**
 * A metadata service: `[METHOD ]path` -> reply (GET routes have no method prefix: '/v1/x', 'PUT
 * /token'). Unknown routes are 404.
 */
export class MetadataMock {
  routes = new Map<string, Route>();
  seen: Seen[] = [];
  /** Headers every response carries (GCE's Metadata-Flavor). */
  always: Record<string, string> = {};
  /** A check of every request; a reply from it wins (a required token or header). */
  guard?: (req: Seen) => Reply | undefined;
  base = '';
  private server!: Server;
  private held: ServerResponse[] = [];
  private counts = new Map<string, number>();

  async start(): Promise<this> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.base = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    for (const r of this.held) r.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  reset(routes: Record<string, Route> = {}): void {
    this.routes = new Map(Object.entries(routes));
    this.seen = [];
    this.counts.clear();
    this.guard = undefined;
  }

  /** How many requests reached `path` (any method). */
  hits(path: string): number {
    return this.seen.filter((s) => s.path === path).length;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => this.answer(req, Buffer.concat(chunks), res));
  }

  private answer(req: IncomingMessage, body: Buffer, res: ServerResponse): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const seen: Seen = { method: req.method ?? '', path, query: q < 0 ? '' : url.slice(q + 1), headers: req.headers, body };
    this.seen.push(seen);
    const key = `${seen.method === 'GET' ? '' : `${seen.method} `}${path}`;
    const n = this.counts.get(key) ?? 0;
    this.counts.set(key, n + 1);
    const guarded = this.guard?.(seen);
    let reply: Reply = guarded ?? { status: 404, body: 'not found' };
    if (!guarded) {
      const route = this.routes.get(key);
      if (Array.isArray(route)) reply = route[Math.min(n, route.length - 1)] ?? reply;
      else if (typeof route === 'function') reply = route(seen);
      else if (route) reply = route;
    }
    if (reply.hang) {
      this.held.push(res);
      return;
    }
    res.writeHead(reply.status ?? 200, { ...this.always, ...reply.headers });
    res.end(reply.body ?? '');
  }
}

/** A dead service: a port on 127.0.0.1 nobody listens on. */
export async function deadUrl(): Promise<string> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return `http://127.0.0.1:${port}`;
}

let rootCounter = 0;
/** A new temporary root under `work` with the core user (uid 500) in its account database. */
export async function makeRoot(work: string): Promise<string> {
  const root = join(work, `root-${process.pid}-${rootCounter++}`);
  await mkdir(join(root, 'etc'), { recursive: true });
  await mkdir(join(root, 'home', 'core'), { recursive: true });
  await writeFile(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/bash\ncore:x:500:500:Core:/home/core:/bin/bash\n');
  await writeFile(join(root, 'etc', 'group'), 'root:x:0:\ncore:x:500:\n');
  return root;
}

/** Runs oem-agent in-process (oem/cli.ts run()) and collects its output. */
export async function agent(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await run(args, { stdout: (t) => (out += t), stderr: (t) => (err += t) });
  return { code, out, err };
}

/** Fast retries for tests: 3 tries, 5 ms apart, 2 s per request. */
export const TEST_HTTP = { tries: 3, backoffMs: 5, maxBackoffMs: 20, timeoutMs: 2000 };

/** The agent CLI's arguments for a provider command against `base`, with fast retries. */
export function agentArgs(cmd: string, root: string, provider: string, base: string, ...more: string[]): string[] {
  return [cmd, '--root', root, '--provider', provider, '--metadata-url', base, '--http-tries', '3', '--http-timeout-ms', '2000', '--http-backoff-ms', '5', ...more];
}

/** What useWorkDir gives a test file. */
export interface WorkDir {
  /** The temporary work directory (made before the file's tests, removed after them). */
  work: string;
  /** The log lines of the current test (the same array throughout; emptied before each test). */
  logs: string[];
  /** A log collector into `logs`. */
  log: (line: string) => void;
  /** A new temporary root under `work` (makeRoot). */
  makeRoot: () => Promise<string>;
}

/**
 * Registers a test file's hooks for a temporary work directory named `${prefix}…` under the system
 * temporary directory and a log collector emptied before each test. Call it at the top level.
 */
export function useWorkDir(prefix: string): WorkDir {
  const work = join(tmpdir(), `${prefix}${process.pid}-${randomBytes(6).toString('hex')}`);
  const logs: string[] = [];
  beforeAll(async () => {
    await mkdir(work, { mode: 0o700 });
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });
  beforeEach(() => {
    logs.length = 0;
  });
  return { work, logs, log: (l) => void logs.push(l), makeRoot: () => makeRoot(work) };
}

/** What useMetadataMock gives a test file. */
export interface MockedMetadata extends WorkDir {
  /** Started before the file's tests, stopped after them; emptied (routes, headers) before each test. */
  mock: MetadataMock;
  /**
   * A ProviderEnv for `root` (default /nonexistent-root) whose metadata service is the mock, with fast
   * retries and the log collector; `defaults`' values, then `extra`'s, win. Its metadataUrl must be
   * on 127.0.0.1.
   */
  env: (root?: string, extra?: Partial<ProviderEnv>) => ProviderEnv;
}

/**
 * useWorkDir plus a MetadataMock on 127.0.0.1 and an env() pointed at it. `defaults` (given the
 * started mock) adds a file's own env values (a config drive, a WireServer URL).
 */
export function useMetadataMock(prefix: string, defaults: (mock: MetadataMock) => Partial<ProviderEnv> = () => ({})): MockedMetadata {
  const dir = useWorkDir(prefix);
  const mock = new MetadataMock();
  beforeAll(async () => {
    await mock.start();
  });
  afterAll(async () => {
    await mock.stop();
  });
  beforeEach(() => {
    mock.always = {};
    mock.reset();
  });
  const env = (root = '/nonexistent-root', extra: Partial<ProviderEnv> = {}): ProviderEnv => {
    const e = defaultEnv({ root, metadataUrl: mock.base, http: TEST_HTTP, log: dir.log, ...defaults(mock), ...extra });
    expect(e.metadataUrl.startsWith('http://127.0.0.1:')).toBe(true);
    return e;
  };
  return { ...dir, mock, env };
}
