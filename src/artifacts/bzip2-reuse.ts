/**
 * A built image as .bz2 without recompressing what the build did not change.
 *
 * Only the partitions a build writes (OEM, ROOT) can differ from the base. For every block of the
 * release's .bz2 whose decoded range is unchanged (compared with the cached base image, over the data
 * extents of both files), the release's own compressed bits are copied (src/image/bzip2-blocks.ts
 * makes runs of them standalone streams); only the ranges of changed blocks are compressed, in pieces
 * of at most 1 MiB (aligned in the image), each by its own `lbzip2 -n1 -9` (or `bzip2 -9`), as many at
 * once as there are cores. Compressed pieces are kept in the base's cache entry by the SHA-256 of their
 * bytes, so what several providers or later builds share (the agent, runs of zeros) is compressed
 * once. The output is a concatenation of standard bzip2 streams, which stock bzip2, lbzip2 and pbzip2
 * decode to exactly the built image. A `trailer` (what a container adds after the disk's bytes, as a
 * fixed VHD's footer) is one more stream at the end: the .vhd.bz2 of a fixed VHD is made the same way.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, mkdir, open, readFile, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { mapInOrder } from '../concurrency.js';
import { OemError } from '../shared/errors.js';
import { dataExtents } from '../image/sparse.js';
import { refineChunk, type BaseIndex } from '../image/base-cache.js';
import { runStream } from '../image/bzip2-blocks.js';
import { filter } from '../tools.js';
import { bzip2Tool } from './compress.js';

export interface Region {
  offset: number;
  size: number;
}

export interface ReuseResult {
  tool: string;
  blocks: number;
  reusedBlocks: number;
  /** Bytes of the image in changed blocks, and of those, compressed now (the rest from the piece cache). */
  changed: number;
  recompressed: number;
  size: number;
  md5: string;
  sha1: string;
  sha512: string;
}

type Extent = [number, number];

function unionExtents(a: Extent[], b: Extent[]): Extent[] {
  const all = [...a, ...b].sort((x, y) => x[0] - y[0]);
  const out: Extent[] = [];
  for (const e of all) {
    const last = out[out.length - 1];
    if (last && e[0] <= last[1]) last[1] = Math.max(last[1], e[1]);
    else out.push([e[0], e[1]]);
  }
  return out;
}

const CMP = 1024 * 1024;

/** Which parts of [start, end) differ between two files: compared only where either has data. */
class Differ {
  private readonly bufA = Buffer.alloc(CMP);
  private readonly bufB = Buffer.alloc(CMP);
  private constructor(
    private readonly a: FileHandle,
    private readonly b: FileHandle,
    private readonly extents: Extent[] | null,
  ) {}

  static async open(basePath: string, newPath: string, regions: Region[]): Promise<Differ> {
    let extents: Extent[] | null = [];
    for (const r of regions) {
      const ea = await dataExtents(basePath, r.offset, r.offset + r.size);
      const eb = await dataExtents(newPath, r.offset, r.offset + r.size);
      if (!ea || !eb) {
        extents = null;
        break;
      }
      extents.push(...unionExtents(ea, eb));
    }
    return new Differ(await open(basePath, 'r'), await open(newPath, 'r'), extents);
  }

  async differs(start: number, end: number): Promise<boolean> {
    const ranges: Extent[] = this.extents
      ? this.extents.map(([a, b]): Extent => [Math.max(a, start), Math.min(b, end)]).filter(([a, b]) => a < b)
      : [[start, end]];
    for (const [from, to] of ranges) {
      for (let at = from; at < to; at += CMP) {
        const n = Math.min(CMP, to - at);
        const [ra, rb] = await Promise.all([this.a.read(this.bufA, 0, n, at), this.b.read(this.bufB, 0, n, at)]);
        if (ra.bytesRead !== n || rb.bytesRead !== n) return true;
        if (!this.bufA.subarray(0, n).equals(this.bufB.subarray(0, n))) return true;
      }
    }
    return false;
  }

  async close(): Promise<void> {
    await Promise.all([this.a.close(), this.b.close()]);
  }
}

type Unit = { kind: 'reuse'; first: number; last: number } | { kind: 'new'; start: number; end: number };

/** Which blocks to copy and which ranges to compress anew. */
async function planUnits(index: BaseIndex, d: Differ, regions: Region[]): Promise<Unit[]> {
  const overlaps = (u: number, len: number) => regions.some((r) => u < r.offset + r.size && r.offset < u + len);
  const dirtyIn = (u: number, len: number) => {
    const parts = regions.map((r): Extent => [Math.max(u, r.offset), Math.min(u + len, r.offset + r.size)]).filter(([a, b]) => a < b);
    return (async () => {
      for (const [a, b] of parts) if (await d.differs(a, b)) return true;
      return false;
    })();
  };
  const dirty = new Array<boolean>(index.blocks.length).fill(false);
  for (const c of index.chunks) {
    if (!overlaps(c.u, c.len) || !(await dirtyIn(c.u, c.len))) continue;
    await refineChunk(index, c);
    for (let i = c.first; i <= c.last; i++) {
      const b = index.blocks[i]!;
      dirty[i] = overlaps(b.u!, b.len!) && (await dirtyIn(b.u!, b.len!));
    }
  }
  const units: Unit[] = [];
  for (let i = 0; i < index.blocks.length; i++) {
    const b = index.blocks[i]!;
    const last = units[units.length - 1];
    if (dirty[i]) {
      // Dirty blocks were refined: they have their own range.
      if (last?.kind === 'new' && last.end === b.u!) last.end = b.u! + b.len!;
      else units.push({ kind: 'new', start: b.u!, end: b.u! + b.len! });
    } else if (last?.kind === 'reuse' && last.last === i - 1 && index.blocks[i - 1]!.end === b.bit) {
      last.last = i;
    } else {
      units.push({ kind: 'reuse', first: i, last: i });
    }
  }
  return units;
}

type Hashes = { md5: Hash; sha1: Hash; sha512: Hash };

function newHashes(): Hashes {
  return { md5: createHash('md5'), sha1: createHash('sha1'), sha512: createHash('sha512') };
}

interface Prefix {
  path: string;
  size: number;
  /** The hashes over it, to be copied (never digested). */
  h: Hashes;
}

/** Output prefixes (the release's blocks up to the first changed one) shared by the builds of one run. */
export interface SharedPrefixes {
  dir: string;
  made: Map<number, Promise<Prefix>>;
}

async function makePrefix(index: BaseIndex, src: FileHandle, last: number, dir: string): Promise<Prefix> {
  const path = join(dir, `prefix-${last}-${randomBytes(4).toString('hex')}.bz2`);
  const h = newHashes();
  const fh = await open(path, 'wx');
  let size = 0;
  try {
    const blocks = index.blocks.slice(0, last + 1);
    for await (const piece of runStream(src, blocks[0]!.bit, blocks[last]!.end, blocks.map((b) => b.crc))) {
      for (const x of Object.values(h)) x.update(piece);
      let done = 0;
      while (done < piece.length) done += (await fh.write(piece, done, piece.length - done)).bytesWritten;
      size += piece.length;
    }
  } finally {
    await fh.close();
  }
  return { path, size, h };
}

/**
 * Writes the built image (the base, with `regions` taken from `raw`: only those need to be valid in
 * `raw`) to a new file `out` as bzip2, reusing the base's compressed blocks. Hashes the output as it
 * goes. `out` is removed on failure.
 */
export async function compressReusing(
  index: BaseIndex,
  baseRaw: string,
  raw: string,
  out: string,
  regions: Region[],
  opts: { pieceCache?: string; shared?: SharedPrefixes; signal?: AbortSignal; trailer?: Buffer } = {},
): Promise<ReuseResult> {
  const signal = opts.signal;
  const tool = await bzip2Tool();
  const d = await Differ.open(baseRaw, raw, regions);
  let units: Unit[];
  try {
    units = await planUnits(index, d, regions);
  } finally {
    await d.close();
  }
  const src = await open(index.bz2, 'r');
  let h = newHashes();
  let size = 0;
  let reusedBlocks = 0;
  // The output up to the first changed block is the same for every build of a run: made once.
  // It ends at the last chunk before the first region, the same for all, whatever each changed.
  const regionStart = Math.min(...regions.map((r) => r.offset));
  let shareUpTo = -1;
  for (const c of index.chunks) if (c.u + c.len <= regionStart) shareUpTo = c.last;
  const first = units[0];
  if (opts.shared && first?.kind === 'reuse' && shareUpTo >= 0 && first.last >= shareUpTo) {
    if (first.last > shareUpTo) units.splice(1, 0, { kind: 'reuse', first: shareUpTo + 1, last: first.last });
    first.last = shareUpTo;
    let made = opts.shared.made.get(first.last);
    if (!made) {
      made = makePrefix(index, src, first.last, opts.shared.dir);
      opts.shared.made.set(first.last, made);
      made.catch(() => opts.shared!.made.delete(first.last));
    }
    let prefix: Prefix;
    try {
      prefix = await made;
    } catch (err) {
      await src.close();
      throw err;
    }
    await copyFile(prefix.path, out, constants.COPYFILE_EXCL);
    h = { md5: prefix.h.md5.copy(), sha1: prefix.h.sha1.copy(), sha512: prefix.h.sha512.copy() };
    size = prefix.size;
    reusedBlocks = first.last + 1;
    units.shift();
  }
  const fh = await open(out, size ? 'a' : 'wx');
  let ok = false;
  const sink = async (buf: Buffer) => {
    for (const x of Object.values(h)) x.update(buf);
    let done = 0;
    while (done < buf.length) done += (await fh.write(buf, done, buf.length - done)).bytesWritten;
    size += buf.length;
  };
  let recompressed = 0;
  let changed = 0;
  const rawFh = await open(raw, 'r');
  const baseFh = await open(baseRaw, 'r');
  try {
    for (const unit of units) {
      if (signal?.aborted) throw new OemError('interrupted while compressing', { code: 'interrupted' });
      if (unit.kind === 'reuse') {
        const blocks = index.blocks.slice(unit.first, unit.last + 1);
        reusedBlocks += blocks.length;
        for await (const piece of runStream(src, blocks[0]!.bit, blocks[blocks.length - 1]!.end, blocks.map((b) => b.crc))) await sink(piece);
      } else {
        changed += unit.end - unit.start;
        recompressed += await compressPieces(tool, { base: baseFh, raw: rawFh, regions }, unit.start, unit.end, sink, opts.pieceCache, signal);
      }
    }
    // What follows the image in the output's format (a fixed VHD's padding and footer): a stream of its own.
    if (opts.trailer?.length) {
      await sink(await compressBuffer(tool, opts.trailer, signal));
      recompressed += opts.trailer.length;
    }
    ok = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new OemError(`no space left on the device while writing ${out}`, { code: 'noSpace', hint: 'free some space or write the output elsewhere' });
    throw err;
  } finally {
    await rawFh.close();
    await baseFh.close();
    await src.close();
    await fh.close();
    if (!ok) await rm(out, { force: true });
  }
  return { tool, blocks: index.blocks.length, reusedBlocks, changed, recompressed, size, md5: h.md5.digest('hex'), sha1: h.sha1.digest('hex'), sha512: h.sha512.digest('hex') };
}

const PIECE = 1024 * 1024;

/**
 * Compresses [start, end) of the image in pieces (from the cache where it has them); writes them in
 * order through `sink`. Returns the bytes compressed now.
 */
async function compressPieces(
  tool: string,
  image: { base: FileHandle; raw: FileHandle; regions: Region[] },
  start: number,
  end: number,
  sink: (b: Buffer) => Promise<void>,
  cacheDir: string | undefined,
  signal?: AbortSignal,
): Promise<number> {
  const bounds: Extent[] = [];
  for (let a = start; a < end; ) {
    const b = Math.min(end, (Math.floor(a / PIECE) + 1) * PIECE);
    bounds.push([a, b]);
    a = b;
  }
  if (cacheDir) await mkdir(cacheDir, { recursive: true });
  let compressed = 0;
  const piece = async ([a, b]: Extent): Promise<Buffer> => {
    // The built image: the base, with the regions the build wrote taken from `raw`.
    const data = Buffer.alloc(b - a);
    await readInto(image.base, data, 0, b - a, a);
    for (const r of image.regions) {
      const from = Math.max(a, r.offset);
      const to = Math.min(b, r.offset + r.size);
      if (from < to) await readInto(image.raw, data, from - a, to - from, from);
    }
    const file = cacheDir ? join(cacheDir, `${createHash('sha256').update(data).digest('hex')}.bz2`) : null;
    const hit = file ? await readFile(file).catch(() => null) : null;
    if (hit) return hit;
    const out = await compressBuffer(tool, data, signal);
    compressed += data.length;
    if (file) {
      const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
      await writeFile(tmp, out)
        .then(() => rename(tmp, file))
        .catch(() => rm(tmp, { force: true }));
    }
    return out;
  };
  // One compressor per core, and one more, so that a core is busy while a piece is written.
  await mapInOrder(bounds, availableParallelism() + 1, piece, (buf) => sink(buf));
  return compressed;
}

async function readInto(fh: FileHandle, buf: Buffer, at: number, n: number, pos: number): Promise<void> {
  let got = 0;
  while (got < n) {
    const { bytesRead } = await fh.read(buf, at + got, n - got, pos + got);
    if (!bytesRead) break;
    got += bytesRead;
  }
}

async function compressBuffer(tool: string, data: Buffer, signal?: AbortSignal): Promise<Buffer> {
  const out: Buffer[] = [];
  await filter(tool, tool === 'lbzip2' ? ['-n1', '-9', '-c'] : ['-9', '-c'], data, (c) => out.push(c), {
    ...(signal ? { signal } : {}),
    failure: (why) => new OemError(`${tool} failed to compress: ${why}`),
  });
  return Buffer.concat(out);
}
