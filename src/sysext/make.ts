/**
 * Makes a system extension image from a directory: squashfs (the default, what Flatcar's own OEM
 * extensions were up to 4593 and what the sysext bakery makes; written by oem, see squashfs.ts) or
 * EROFS with `mkfs.erofs --all-root -zlz4hc` (lz4 is what Flatcar's kernel reads). Every file is
 * owned by root and stamped with `mtime`; the EROFS UUID is derived from the name and mtime, so the
 * same tree gives the same bytes.
 */
import { createHash } from 'node:crypto';
import { OemError } from '../shared/errors.js';
import { run } from '../tools.js';
import { writeSquashfs, type StoredFile } from './squashfs.js';

export type SysextFormat = 'squashfs' | 'erofs';
export const SYSEXT_FORMATS: readonly SysextFormat[] = ['squashfs', 'erofs'];

export interface MakeOptions {
  format: SysextFormat;
  /** Seconds since the epoch: the time of every file and of the file system. */
  mtime: number;
  /** For messages and the derived UUID. */
  name: string;
  /** squashfs: where compressed blocks of large files (the agent) are kept by content. */
  store?: string;
  /** squashfs: files not in the tree whose blocks are in the store (squashfs.ts's storedSource). */
  stored?: StoredFile[];
}

/** Writes the extension image `out` (which must not exist) from the tree in `dir`; says which files' compressed blocks came from the store. */
export async function makeExtension(dir: string, out: string, o: MakeOptions): Promise<{ stored: string[] }> {
  if (!Number.isSafeInteger(o.mtime) || o.mtime < 0) throw new OemError(`invalid time for the extension ${o.name}: ${o.mtime}`, { code: 'usage' });
  if (o.format === 'squashfs') {
    return writeSquashfs(dir, out, { mtime: o.mtime, name: o.name, ...(o.store !== undefined ? { store: o.store } : {}), ...(o.stored ? { stored: o.stored } : {}) });
  }
  if (o.stored?.length) throw new OemError(`the EROFS extension ${o.name} cannot take files from the store`);
  const h = createHash('sha256').update(`oem sysext ${o.name} ${o.mtime}`).digest('hex');
  const uuid = `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
  await run('mkfs.erofs', ['--quiet', '--all-root', '-zlz4hc', '-T', String(o.mtime), '-U', uuid, '-x', '-1', out, dir], `make the EROFS extension ${o.name}`, {
    env: { SOURCE_DATE_EPOCH: String(o.mtime) },
  });
  return { stored: [] };
}
