import { execa, type Options } from 'execa';
import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { OemError } from './shared/errors.js';

/** Which Debian package provides each external tool, for hints. */
const PACKAGE_OF: Record<string, string> = {
  debugfs: 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  'mkfs.ext4': 'e2fsprogs',
  btrfs: 'btrfs-progs',
  'mkfs.btrfs': 'btrfs-progs',
  mdir: 'mtools',
  mcopy: 'mtools',
  sgdisk: 'gdisk',
  lbzip2: 'lbzip2',
  bzip2: 'bzip2',
  xz: 'xz-utils',
  zstd: 'zstd',
  gzip: 'gzip',
  losetup: 'mount',
  mount: 'mount',
  'qemu-img': 'qemu-utils',
};

const found = new Map<string, string | null>();

/** Full path of an executable on PATH (also /usr/sbin and /sbin), or null. */
export async function which(name: string): Promise<string | null> {
  if (found.has(name)) return found.get(name)!;
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin'];
  for (const d of dirs) {
    if (!d) continue;
    const p = join(d, name);
    try {
      await access(p, constants.X_OK);
      found.set(name, p);
      return p;
    } catch {
      /* next */
    }
  }
  found.set(name, null);
  return null;
}

export async function requireTool(name: string, why: string): Promise<string> {
  const p = await which(name);
  if (!p) {
    const pkg = PACKAGE_OF[name];
    throw new OemError(`${name} is needed to ${why} but is not installed`, {
      code: 'missingTool',
      hint: pkg ? `install the Debian package ${pkg} (all are listed in packages.txt)` : 'install it and try again',
    });
  }
  return p;
}

export interface RunResult {
  stdout: string;
  /** stdout as bytes (exact, when run with encoding 'buffer'). */
  stdoutBytes: Buffer;
  stderr: string;
  exitCode: number;
}

/** The last non-empty line of what a tool wrote to stderr (its reason, for an error message); else `otherwise`. */
export function lastLine(stderr: string | Uint8Array | undefined, otherwise: string): string {
  const text = stderr instanceof Uint8Array ? Buffer.from(stderr).toString('utf8') : (stderr ?? '');
  return text.trim().split('\n').filter(Boolean).pop() ?? otherwise;
}

/** Runs a tool to completion; a non-zero exit is an OemError naming the tool and its last stderr line. */
export async function run(
  name: string,
  args: string[],
  why: string,
  opts: Options & { allowFail?: boolean; input?: string; onStdout?: (text: string) => void } = {},
): Promise<RunResult> {
  const bin = await requireTool(name, why);
  const { allowFail, onStdout, ...rest } = opts;
  const sub = execa(bin, args, { reject: false, stripFinalNewline: false, encoding: 'utf8', ...rest } as Options);
  if (onStdout) sub.stdout?.on('data', (d: Buffer | string) => onStdout(String(d)));
  const r = await sub;
  const bytes = (v: unknown): Buffer => (v instanceof Uint8Array ? Buffer.from(v) : Buffer.from(String(v ?? ''), 'utf8'));
  const stdoutBytes = bytes(r.stdout);
  const res = { stdout: stdoutBytes.toString('utf8'), stdoutBytes, stderr: bytes(r.stderr).toString('utf8'), exitCode: r.exitCode ?? -1 };
  if (res.exitCode !== 0 && !allowFail) {
    throw new OemError(`${name} failed to ${why}: ${lastLine(res.stderr, `exit code ${res.exitCode}`)}`);
  }
  return res;
}

/** Variables that would change what the compression tools write (extra options, levels, threads) or their language. */
const TOOL_ENV_DROP = new Set(['BZIP', 'BZIP2', 'LBZIP2', 'GZIP', 'XZ_OPT', 'XZ_DEFAULTS', 'ZSTD_CLEVEL', 'ZSTD_NBTHREADS', 'TAR_OPTIONS', 'LANGUAGE', 'LANG']);

/** The environment for the compression tools: the process's, less TOOL_ENV_DROP and LC_*, with LC_ALL=C. */
export function toolEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !TOOL_ENV_DROP.has(k) && !k.startsWith('LC_')) env[k] = v;
  }
  env.LC_ALL = 'C';
  return env;
}

/**
 * Runs a filter (a compressor or decompressor) over `input` in memory, with the tools' environment
 * (toolEnv): its output goes to `onData` as it comes, nothing is kept here. Resolves when the tool
 * exits 0; otherwise rejects with `failure(last stderr line)`, or an OemError 'interrupted' when
 * `signal` aborted it.
 */
export async function filter(
  tool: string,
  args: string[],
  input: Buffer,
  onData: (chunk: Buffer) => void,
  opts: { signal?: AbortSignal; failure: (why: string) => OemError },
): Promise<void> {
  const sub = execa(tool, args, {
    input,
    buffer: { stdout: false, stderr: true },
    encoding: 'buffer',
    reject: false,
    env: toolEnv(),
    extendEnv: false,
    ...(opts.signal ? { cancelSignal: opts.signal } : {}),
  });
  sub.stdout.on('data', (c: Buffer) => onData(c));
  const r = await sub;
  if (r.isCanceled || opts.signal?.aborted) throw new OemError('interrupted while compressing', { code: 'interrupted' });
  if (r.exitCode !== 0) {
    throw opts.failure(lastLine(r.stderr as Uint8Array | undefined, r.exitCode === undefined ? (r.shortMessage ?? 'it did not start') : `exit code ${r.exitCode}`));
  }
}
