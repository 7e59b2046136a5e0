/**
 * The working image a write goes into: never the input (unless --in-place), always a new file under a
 * temporary name beside the output, sparse (decompressed with zero blocks skipped, or copied with
 * `cp --sparse=always --reflink=auto`), renamed to its final name only when everything succeeded.
 */
import { realpath, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { acquire } from '../cleanup.js';
import { unwritable } from '../output-dir.js';
import { OemError, describe } from '../shared/errors.js';
import { run } from '../tools.js';
import type { Compression } from '../compression.js';
import { decompressToSparse, detectCompression } from './decompress.js';

export interface WorkingImage {
  /** Where to write now. */
  path: string;
  /** Where it ends up. */
  finalPath: string;
  compression: Compression;
  /** The decompressor used, or 'copy'/'in-place'. */
  method: string;
  /** Renames the working file to its final name. */
  commit(): Promise<void>;
  /** Removes the working file (never the input). No-op after commit and in place. */
  discard(): Promise<void>;
}

/** `image.bin.bz2` -> `image_key.bin` (the suffix before the extension, always a raw .bin). */
export function defaultOutputName(input: string, suffix: string): string {
  const dir = dirname(input);
  const base = basename(input).replace(/\.(bz2|gz|xz|zst)$/, '');
  const m = /^(.*?)(\.bin|\.img|\.raw)?$/.exec(base)!;
  return join(dir, `${m[1]}${suffix}${m[2] ?? '.bin'}`);
}

export async function prepareWorkingImage(
  input: string,
  opts: { output?: string; inPlace?: boolean; log?: (l: string) => void; signal?: AbortSignal } = {},
): Promise<WorkingImage> {
  const log = opts.log ?? (() => {});
  const st = await stat(input).catch(() => null);
  if (!st) throw new OemError(`no such image: ${input}`, { code: 'usage' });
  if (!st.isFile()) throw new OemError(`not a regular file: ${input}`, { code: 'usage' });
  const compression = await detectCompression(input);
  if (opts.inPlace) {
    if (compression !== 'none') throw new OemError(`--in-place needs a raw image; ${input} is ${compression}-compressed`, { code: 'usage' });
    if (opts.output) throw new OemError('--in-place and --output exclude each other', { code: 'usage' });
    log(`writing ${input} in place`);
    return { path: input, finalPath: input, compression, method: 'in-place', commit: async () => {}, discard: async () => {} };
  }
  const finalPath = resolve(opts.output ?? input);
  if ((await stat(finalPath).catch(() => null))?.isDirectory()) {
    throw new OemError(`the output ${finalPath} is a directory; give a file name`, { code: 'usage' });
  }
  if (!(await stat(dirname(finalPath)).catch(() => null))?.isDirectory()) {
    throw new OemError(`the output's directory ${dirname(finalPath)} does not exist`, { code: 'usage' });
  }
  // Writable (not read-only, not /proc): said now, not as a tool's failure to write there.
  const why = await unwritable(dirname(finalPath));
  if (why) throw new OemError(`cannot write the output ${finalPath}: ${dirname(finalPath)}: ${why}`, { code: 'usage', hint: 'give --output a path in a directory you can write' });
  const inputReal = await realpath(input);
  const outReal = await realpath(finalPath).catch(() => finalPath);
  if (outReal === inputReal) {
    throw new OemError(`the output would overwrite the input ${input}`, { code: 'usage', hint: 'give another --output, or --in-place to change the input on purpose' });
  }
  const tmp = join(dirname(finalPath), `.${basename(finalPath)}.oem-tmp-${process.pid}`);
  const release = acquire(`temporary image ${tmp}`, () => rm(tmp, { force: true }));
  try {
    let method: string;
    if (compression === 'none') {
      await run('cp', ['--sparse=always', '--reflink=auto', '--', input, tmp], `copy ${input}`);
      method = 'copy';
    } else {
      const d = await decompressToSparse(input, tmp, opts.signal ? { signal: opts.signal } : {});
      method = d.tool;
      log(`decompressed ${basename(input)} with ${d.tool}: ${d.size} bytes, ${d.written} written (the rest left sparse)`);
    }
    return {
      path: tmp,
      finalPath,
      compression,
      method,
      commit: async () => {
        await rename(tmp, finalPath);
        await release();
      },
      discard: release,
    };
  } catch (err) {
    await release();
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC' || /No space left/i.test(describe(err))) {
      throw new OemError(`no space left on the device of ${dirname(finalPath)} for the working image`, { code: 'noSpace' });
    }
    throw err;
  }
}
