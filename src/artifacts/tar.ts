/**
 * The archives among the artifacts (the Vagrant boxes, the OVAs, the Parallels bundle; GCE's sparse
 * tar is written by sparse-tar.ts and gzip'd here, writeGzip) are written by GNU tar, the tool the
 * platforms document: the entries are staged in a directory
 * (directories made, small files written, large ones as symlinks to where they are, archived with
 * --dereference, so nothing is copied) and archived member by member in the given order
 * (--no-recursion) with fixed owner (root:0), mode (0644 files, 0755 directories) and mtime, so the
 * same inputs give the same bytes. `gnu` is GNU tar's format (base-256 sizes, long names); `ustar` is POSIX
 * ustar, with a pax header only where ustar cannot say it (a name over 100 bytes, a size of 8 GiB or
 * more). An uncompressed archive is written by tar itself; a .gz is streamed through node:zlib (in
 * pieces kept by content when given a piece cache, see pieced.ts); nothing is held in memory but a
 * few pieces.
 */
import { execa } from 'execa';
import { createWriteStream } from 'node:fs';
import { mkdir, stat, symlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { OemError } from '../shared/errors.js';
import { lastLine, requireTool, toolEnv } from '../tools.js';
import { noSpace } from './compress.js';
import { gzipPiecedToFile } from './pieced.js';

export type TarFormat = 'gnu' | 'ustar';

/**
 * One member: its path in the archive ('a' or 'a/b', no leading or trailing '/'), and either `dir`,
 * a file to archive or its bytes. A member's directory must come before it.
 */
export type TarEntry = { name: string } & ({ dir: true } | { path: string } | { data: Buffer });

/** Checks the member names: relative, no empty, '.' or '..' components, unique, directories first. */
function checkNames(entries: TarEntry[]): void {
  const dirs = new Set<string>();
  const seen = new Set<string>();
  for (const e of entries) {
    const parts = e.name.split('/');
    if (!e.name || e.name.includes('\0') || parts.some((p) => !p || p === '.' || p === '..')) {
      throw new OemError(`invalid archive member name ${JSON.stringify(e.name)}`, { code: 'usage' });
    }
    if (seen.has(e.name)) throw new OemError(`duplicate archive member ${JSON.stringify(e.name)}`, { code: 'usage' });
    seen.add(e.name);
    const parent = parts.slice(0, -1).join('/');
    if (parent && !dirs.has(parent)) throw new OemError(`archive member ${JSON.stringify(e.name)} comes before its directory`, { code: 'usage' });
    if ('dir' in e) dirs.add(e.name);
  }
}

export interface TarOptions {
  format: TarFormat;
  gzip: boolean;
  /** Seconds since the epoch: every member's mtime. */
  mtime: number;
  /** An empty directory that does not exist yet, for staging (removed by the caller). */
  stage: string;
  signal?: AbortSignal;
  /** Bytes of the archive written so far, of about `total`. */
  onProgress?: (done: number, total: number) => void;
  /** gzip in pieces kept here by content (pieced.ts), so that unchanged parts are compressed once. */
  pieceCache?: string;
}

/**
 * An archive (GNU tar's output, or one made here by sparse-tar.ts) gzip'd into `out`, which must not
 * exist: level 6 (gzip's default, as `tar -czf`), in pieces kept by content when given a piece cache
 * (pieced.ts). node:zlib writes no file name and mtime 0 into the gzip header: the output depends on
 * the data only. Each chunk of `archive` is used before the next is asked for: its source may fill
 * it again. A failure leaves `out` for the caller to remove (convert() does, and says why: a full
 * disk, Ctrl-C).
 */
export async function writeGzip(out: string, archive: AsyncIterable<Buffer>, o: { pieceCache?: string; signal?: AbortSignal }): Promise<void> {
  if (o.pieceCache) await gzipPiecedToFile(archive, out, { cacheDir: o.pieceCache, level: 6, ...(o.signal ? { signal: o.signal } : {}) });
  else await pipeline(Readable.from(copies(archive)), createGzip({ level: 6 }), createWriteStream(out, { flags: 'wx' }), o.signal ? { signal: o.signal } : {});
}

/** Each chunk copied: a stream keeps chunks while they wait for their turn. */
async function* copies(chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  for await (const c of chunks) yield Buffer.from(c);
}

/** The archive `out` (which must not exist) holding `entries` in this order. */
export async function writeTar(out: string, entries: TarEntry[], o: TarOptions): Promise<void> {
  checkNames(entries);
  const tar = await requireTool('tar', 'write archives');
  await mkdir(o.stage);
  let total = 0;
  for (const e of entries) {
    const at = join(o.stage, ...e.name.split('/'));
    if ('dir' in e) {
      await mkdir(at);
    } else if ('data' in e) {
      await writeFile(at, e.data, { flag: 'wx' });
      total += e.data.length;
    } else {
      await symlink(resolve(e.path), at);
      total += (await stat(e.path)).size;
    }
  }
  const args = [
    ...(o.format === 'gnu' ? ['--format=gnu'] : ['--format=posix', '--pax-option=delete=atime,delete=ctime']),
    '--owner=root:0',
    '--group=root:0',
    // Files 0644; directories (only trees have them) 0755.
    entries.some((e) => 'dir' in e) ? '--mode=u=rwX,go=rX' : '--mode=0644',
    `--mtime=@${o.mtime}`,
    '--dereference',
    '--no-recursion',
    '-C',
    o.stage,
    '--null',
    '--verbatim-files-from',
    '-T',
    '-',
    // Uncompressed, tar writes the file itself (created here, exclusively): piping 300 MiB through
    // this process took ten times as long. --force-local: a ':' in the name is not a remote host.
    '--force-local',
    '-cf',
    o.gzip ? '-' : resolve(out),
  ];
  if (!o.gzip) await writeFile(out, '', { flag: 'wx' });
  const sub = execa(tar, args, {
    input: entries.map((e) => `${e.name}\0`).join(''),
    env: toolEnv(),
    extendEnv: false,
    encoding: 'buffer',
    buffer: { stdout: false, stderr: true },
    ...(o.gzip ? {} : { stdout: 'ignore' as const }),
    reject: false,
    ...(o.signal ? { cancelSignal: o.signal } : {}),
  });
  let written: Promise<unknown>;
  if (o.gzip) {
    let done = 0;
    const stdout = sub.stdout!;
    // Piped at once into a stream of this process's own: execa reads tar's output too, so another
    // reader of it would get only some of its chunks, and what flows before one reads is lost.
    const own = stdout.pipe(new PassThrough());
    const counted = async function* (): AsyncGenerator<Buffer> {
      for await (const chunk of own as AsyncIterable<Buffer>) {
        done += chunk.length;
        o.onProgress?.(Math.min(done, total), total);
        yield chunk;
      }
    };
    // On a failure, tar's output is closed: tar stops (instead of waiting on a full pipe).
    written = writeGzip(out, counted(), o).catch((err: unknown) => {
      stdout.destroy();
      own.destroy();
      throw err;
    });
  } else {
    // Progress: the file's size as tar writes it.
    const timer = setInterval(() => {
      stat(out).then((s) => o.onProgress?.(Math.min(s.size, total), total), () => undefined);
    }, 500);
    written = sub.finally(() => clearInterval(timer));
  }
  const [r, writeError] = await Promise.all([
    sub,
    written.then(
      () => null,
      (err: unknown) => ((err as NodeJS.ErrnoException).code === 'ENOSPC' ? noSpace(out) : err),
    ),
  ]);
  if (r.isCanceled || o.signal?.aborted) throw new OemError('interrupted while archiving', { code: 'interrupted' });
  if (r.exitCode !== 0) {
    const stderr = Buffer.from((r.stderr as Uint8Array | undefined) ?? []).toString('utf8');
    const last = lastLine(stderr, `exit code ${r.exitCode}`);
    // Writing the file itself, GNU tar reports a full disk as a short write ("Wrote only 4096 of
    // 10240 bytes"), without the errno.
    if (!writeError && /no space left on device|disk quota exceeded|wrote only \d+ of \d+ bytes/i.test(stderr)) throw noSpace(out);
    throw writeError ?? new OemError(`tar failed to write ${out}: ${last}`);
  }
  if (writeError) throw writeError;
  // Done: the end is the whole.
  o.onProgress?.(total, total);
}
