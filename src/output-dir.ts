/**
 * The directory outputs go to: checked before any work (its nearest existing ancestor must be a
 * directory this process can make files in), and made one level at a time. Node's recursive mkdir loops
 * forever where the kernel answers ENOENT for a parent that exists (/proc, /sys).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { OemError } from './shared/errors.js';

const REASONS: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EROFS: 'a read-only file system',
  ENOSPC: 'no space left',
  EDQUOT: 'the disk quota is used up',
};

function refuse(flag: string, dir: string, why: string): OemError {
  return new OemError(`${flag} ${dir}: ${why}`, { code: 'usage', hint: `give ${flag} a directory you can write` });
}

/** The directories from the nearest existing ancestor of `dir` (first) down to `dir`; refuses a file on the way. */
async function levels(dir: string, flag: string): Promise<{ existing: string; missing: string[] }> {
  const missing: string[] = [];
  for (let d = resolve(dir); ; d = dirname(d)) {
    const st = await stat(d).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return null;
      throw refuse(flag, dir, `${d}: ${REASONS[err.code ?? ''] ?? err.code ?? err.message}`);
    });
    if (st) {
      if (!st.isDirectory()) throw refuse(flag, dir, `${d} is not a directory`);
      return { existing: d, missing: missing.reverse() };
    }
    if (dirname(d) === d) return { existing: d, missing: missing.reverse() };
    missing.push(d);
  }
}

/**
 * Why no file can be made in the existing directory `dir`, or undefined when one can: a file is made
 * and removed (access() says yes to root on a read-only mount's neighbours and in /proc).
 */
export async function unwritable(dir: string): Promise<string | undefined> {
  const probe = join(dir, `.oem-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
  const code = await writeFile(probe, '', { flag: 'wx' }).then(() => undefined, (err: NodeJS.ErrnoException) => err.code ?? err.message);
  if (code === undefined) {
    await rm(probe, { force: true });
    return undefined;
  }
  return REASONS[code] ?? `files cannot be made there (${code})`;
}

/** Refuses, before anything is fetched or built, an output directory that cannot be made or written. */
export async function checkOutputDir(dir: string, flag = '--output-dir'): Promise<void> {
  const { existing } = await levels(dir, flag);
  const why = await unwritable(existing);
  if (why) throw refuse(flag, dir, `${existing}: ${why}`);
}

/** Makes `dir` and its missing parents; returns the first one it made (undefined: `dir` existed). */
export async function makeOutputDir(dir: string, flag = '--output-dir'): Promise<string | undefined> {
  const { missing } = await levels(dir, flag);
  for (const d of missing) {
    await mkdir(d).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'EEXIST') return;
      throw refuse(flag, dir, `cannot make ${d}: ${REASONS[err.code ?? ''] ?? (err.code === 'ENOENT' ? 'the file system does not allow it' : (err.code ?? err.message))}`);
    });
  }
  return missing[0];
}
