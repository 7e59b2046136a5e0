/** A full file system for the no-space tests: a 1 MiB tmpfs, mounted for one describe block (root). */
import { execa } from 'execa';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';

/**
 * Mounts a 1 MiB tmpfs at `<parent()>/small` before the block's tests and unmounts it after; the
 * returned getter gives its path, or undefined when mounting was refused (an unprivileged container).
 */
export function useSmallTmpfs(parent: () => string): () => string | undefined {
  let mnt: string | undefined;
  beforeAll(async () => {
    const m = join(parent(), 'small');
    await mkdir(m);
    const r = await execa('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', m], { reject: false });
    if (r.exitCode === 0) mnt = m;
  });
  afterAll(async () => {
    if (mnt) await execa('umount', [mnt], { reject: false });
  });
  return () => mnt;
}
