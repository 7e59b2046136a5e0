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
    const last = res.stderr.trim().split('\n').filter(Boolean).pop() ?? `exit code ${res.exitCode}`;
    throw new OemError(`${name} failed to ${why}: ${last}`);
  }
  return res;
}
