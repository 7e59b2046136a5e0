import { open, type FileHandle } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { execa } from 'execa';
import { OemError } from '../shared/errors.js';
import { lastLine, run, toolEnv, which } from '../tools.js';

/** Size of the blocks checked for zeros; all-zero blocks are skipped (left as holes). */
export const SPARSE_BLOCK = 64 * 1024;

const ZERO = Buffer.alloc(SPARSE_BLOCK);

/** A SparseWriter writes out what it holds once it holds this much: a chunk this large is not kept once written. */
export const SPARSE_FLUSH = SPARSE_BLOCK * 16;

export function isZero(buf: Buffer): boolean {
  if (buf.length === SPARSE_BLOCK) return buf.equals(ZERO);
  for (let off = 0; off < buf.length; off += SPARSE_BLOCK) {
    const end = Math.min(buf.length, off + SPARSE_BLOCK);
    if (!buf.subarray(off, end).equals(ZERO.subarray(0, end - off))) return false;
  }
  return true;
}

/**
 * Writes a sequential byte stream into a file at a start offset, skipping all-zero blocks so they stay
 * holes. The file must already be sized (or be extended by `finish(size)`), and the region written
 * must be holes or zeros beforehand unless `overwriteZeros` is set.
 */
export class SparseWriter {
  private pos: number;
  private pending: Buffer[] = [];
  private pendingLen = 0;
  written = 0;
  skipped = 0;

  constructor(
    private readonly fh: FileHandle,
    start = 0,
    private readonly overwriteZeros = false,
  ) {
    this.pos = start;
  }

  get position(): number {
    return this.pos + this.pendingLen;
  }

  /** Writes `chunk` (held until the next flush; not held once this resolves when at least SPARSE_FLUSH bytes). */
  async write(chunk: Buffer): Promise<void> {
    this.pending.push(chunk);
    this.pendingLen += chunk.length;
    if (this.pendingLen >= SPARSE_FLUSH) await this.flush(false);
  }

  private async flush(all: boolean): Promise<void> {
    if (this.pendingLen === 0) return;
    const data = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingLen);
    // Only whole blocks, aligned to the file, unless this is the final flush.
    const firstAlign = (SPARSE_BLOCK - (this.pos % SPARSE_BLOCK)) % SPARSE_BLOCK;
    let usable = all ? data.length : firstAlign + Math.floor((data.length - firstAlign) / SPARSE_BLOCK) * SPARSE_BLOCK;
    if (usable > data.length) usable = all ? data.length : 0;
    let off = 0;
    let runStart = -1;
    const emit = async (from: number, to: number) => {
      let done = 0;
      while (done < to - from) {
        const { bytesWritten } = await this.fh.write(data, from + done, to - from - done, this.pos + from + done);
        done += bytesWritten;
      }
      this.written += to - from;
    };
    while (off < usable) {
      const blockEnd = off === 0 && firstAlign > 0 ? Math.min(firstAlign, usable) : Math.min(off + SPARSE_BLOCK, usable);
      const block = data.subarray(off, blockEnd);
      const zero = !this.overwriteZeros && isZero(block);
      if (zero) {
        if (runStart >= 0) {
          await emit(runStart, off);
          runStart = -1;
        }
        this.skipped += block.length;
      } else if (runStart < 0) {
        runStart = off;
      }
      off = blockEnd;
    }
    if (runStart >= 0) await emit(runStart, usable);
    this.pos += usable;
    // A copy: the chunks written are not held after a flush (SPARSE_FLUSH).
    const rest = data.subarray(usable);
    this.pending = rest.length ? [Buffer.from(rest)] : [];
    this.pendingLen = rest.length;
  }

  /** Writes n zero bytes: whole aligned blocks of them are skipped without being built or compared. */
  async writeZeros(n: number): Promise<void> {
    const head = Math.min(n, (SPARSE_BLOCK - (this.position % SPARSE_BLOCK)) % SPARSE_BLOCK);
    if (head) await this.write(ZERO.subarray(0, head));
    n -= head;
    if (n >= SPARSE_BLOCK && !this.overwriteZeros) {
      await this.flush(false);
      if (this.pendingLen === 0) {
        const skip = n - (n % SPARSE_BLOCK);
        this.pos += skip;
        this.skipped += skip;
        n -= skip;
      }
    }
    while (n > 0) {
      const k = Math.min(n, SPARSE_BLOCK);
      await this.write(ZERO.subarray(0, k));
      n -= k;
    }
  }

  /** Writes what is pending. */
  async end(): Promise<void> {
    await this.flush(true);
  }
}

/** Copies a whole file into `dst` at `offset`, leaving its all-zero blocks as holes. */
export async function sparseCopyInto(srcPath: string, dstPath: string, offset: number): Promise<{ written: number }> {
  const fh = await open(dstPath, 'r+');
  try {
    const w = new SparseWriter(fh, offset);
    for await (const chunk of createReadStream(srcPath, { highWaterMark: 1024 * 1024 })) {
      await w.write(chunk as Buffer);
    }
    await w.end();
    return { written: w.written };
  } finally {
    await fh.close();
  }
}

/** Copies `length` bytes of `srcPath` from `srcOffset` into a new sparse file `dstPath`. */
export async function sparseCopyRange(srcPath: string, srcOffset: number, length: number, dstPath: string): Promise<void> {
  const fh = await open(dstPath, 'wx');
  try {
    await fh.truncate(length);
    const w = new SparseWriter(fh, 0);
    if (length > 0) {
      for await (const chunk of createReadStream(srcPath, { start: srcOffset, end: srcOffset + length - 1, highWaterMark: 1024 * 1024 })) {
        await w.write(chunk as Buffer);
      }
    }
    await w.end();
  } finally {
    await fh.close();
  }
}

/** The data extents of a file within [start, end) (lseek SEEK_DATA/SEEK_HOLE through xfs_io), or null. */
export async function dataExtents(path: string, start: number, end: number): Promise<[number, number][] | null> {
  if (!(await which('xfs_io'))) return null;
  const r = await run('xfs_io', ['-r', '-c', `seek -a -r ${start}`, path], `map the data of ${path}`, { allowFail: true });
  if (r.exitCode !== 0) return null;
  const out: [number, number][] = [];
  let dataAt = -1;
  for (const line of r.stdout.split('\n')) {
    const m = /^(DATA|HOLE)\s+(\d+|EOF)/.exec(line.trim());
    if (!m) continue;
    const at = m[2] === 'EOF' ? Infinity : Number(m[2]);
    if (m[1] === 'DATA') dataAt = at;
    else if (dataAt >= 0) {
      out.push([dataAt, at]);
      dataAt = -1;
    }
  }
  if (dataAt >= 0) out.push([dataAt, Infinity]);
  return out.map(([a, b]): [number, number] => [Math.max(a, start), Math.min(b, end)]).filter(([a, b]) => a < b);
}

/**
 * Copies each extent [offset, length] of its input (stdin) from "$1" into "$2" at the same offset,
 * leaving all-zero blocks unwritten (holes). One shell for all of them: the bytes never pass through
 * node.
 */
const DD_SCRIPT = 'set -e; while read -r at n; do dd if="$1" of="$2" bs=64K iflag=skip_bytes,count_bytes oflag=seek_bytes skip="$at" seek="$at" count="$n" conv=notrunc,sparse status=none; done';

/**
 * Copies the ranges of `srcPath` into `dstPath` at the same offsets, only where the source has data
 * (the destination must be holes or zeros there), all-zero blocks left as holes. The data is copied
 * by dd, off this process's thread (a gigabyte of a base image: 0.5 s of dd's CPU against 1.7 s of
 * this process's, which is also writing every other artifact). `inProcess`, or without xfs_io (no map
 * of the data) or dd: every byte is read here. A full disk is an ENOSPC error either way.
 */
export async function copyRanges(srcPath: string, dstPath: string, ranges: [number, number][], opts: { inProcess?: boolean } = {}): Promise<void> {
  if (!ranges.length) return;
  // One map of the data for all the ranges, clipped to each (without xfs_io: the ranges whole).
  const data = await dataExtents(srcPath, Math.min(...ranges.map((r) => r[0])), Math.max(...ranges.map((r) => r[1])));
  const extents: [number, number][] = [];
  for (const [start, end] of ranges) {
    if (data === null) extents.push([start, end]);
    else for (const [a, b] of data) if (a < end && start < b) extents.push([Math.max(a, start), Math.min(b, end)]);
  }
  const [sh, dd] = [await which('sh'), await which('dd')];
  if (opts.inProcess || data === null || !sh || !dd) return copyExtentsHere(srcPath, dstPath, extents);
  if (!extents.length) return;
  const r = await execa(sh, ['-c', DD_SCRIPT, 'sh', srcPath, dstPath], {
    input: extents.map(([a, b]) => `${a} ${b - a}\n`).join(''),
    env: toolEnv(),
    extendEnv: false,
    reject: false,
    encoding: 'utf8',
  });
  if (r.exitCode === 0) return;
  const why = lastLine(r.stderr, `exit code ${r.exitCode}`);
  if (/no space left on device|disk quota exceeded/i.test(r.stderr)) {
    throw Object.assign(new Error(`no space left on the device while writing ${dstPath}`), { code: 'ENOSPC' });
  }
  throw new OemError(`could not copy ${srcPath} into ${dstPath}: ${why}`);
}

/** copyRanges's extents, every byte read by this process (all-zero blocks still left as holes). */
async function copyExtentsHere(srcPath: string, dstPath: string, extents: [number, number][]): Promise<void> {
  const fh = await open(dstPath, 'r+');
  try {
    for (const [a, b] of extents) {
      if (b <= a) continue;
      const w = new SparseWriter(fh, a);
      for await (const chunk of createReadStream(srcPath, { start: a, end: b - 1, highWaterMark: 1024 * 1024 })) await w.write(chunk as Buffer);
      await w.end();
    }
  } finally {
    await fh.close();
  }
}
