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
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, mkdir, open, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { pieceBuffers } from '../buffer-pool.js';
import { mapInOrder, pieceSlots } from '../concurrency.js';
import { OemError } from '../shared/errors.js';
import { dataExtents } from '../image/sparse.js';
import { refineChunk, type BaseIndex } from '../image/base-cache.js';
import { runStream } from '../image/bzip2-blocks.js';
import { filter } from '../tools.js';
import { bzip2Tool } from './compress.js';
import { newHashes, sha256Hex, type Hashes } from './hash.js';

import type { Region } from '../image/disk-view.js';
export type { Region };

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

/** One part of the output: the release's blocks first..last, the image's [start, end) compressed now, or bytes. */
type Step = { kind: 'reuse'; first: number; last: number } | { kind: 'new'; start: number; end: number } | { kind: 'bytes'; data: Buffer };

/**
 * What the output is made of, in order: ranges of the built image, and bytes of the output's
 * container (a qcow2's tables, a fixed VHD's footer) that are compressed as they are.
 */
export type Segment = { image: [number, number] } | { bytes: Buffer };

/** Which blocks hold bytes the build changed (their chunks refined: they have their own range). */
async function dirtyBlocks(index: BaseIndex, d: Differ, regions: Region[]): Promise<boolean[]> {
  const overlaps = (u: number, len: number) => regions.some((r) => u < r.offset + r.size && r.offset < u + len);
  const dirtyIn = async (u: number, len: number) => {
    const parts = regions.map((r): Extent => [Math.max(u, r.offset), Math.min(u + len, r.offset + r.size)]).filter(([a, b]) => a < b);
    for (const [a, b] of parts) if (await d.differs(a, b)) return true;
    return false;
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
  return dirty;
}

/** A run of blocks with its decoded range: a whole chunk, or one block of a refined chunk. */
interface Item {
  first: number;
  last: number;
  start: number;
  end: number;
  dirty: boolean;
}

/**
 * Which blocks to copy, which ranges of the image to compress anew and which bytes to compress, for
 * the output `segments`. A block is copied when its whole decoded range is unchanged and lies inside
 * one image segment; chunks that a segment starts or ends inside are refined for that.
 */
async function planSteps(index: BaseIndex, dirty: boolean[], segments: Segment[]): Promise<Step[]> {
  // The chunk a boundary falls strictly inside, if any (chunks are sorted and contiguous).
  const chunkInside = (p: number) => {
    let lo = 0;
    let hi = index.chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (index.chunks[mid]!.u + index.chunks[mid]!.len <= p) lo = mid + 1;
      else hi = mid;
    }
    const c = index.chunks[lo];
    return c && c.u < p ? c : undefined;
  };
  for (const s of segments) {
    if (!('image' in s)) continue;
    for (const p of s.image) {
      const c = chunkInside(p);
      if (c) await refineChunk(index, c);
    }
  }
  const items: Item[] = [];
  for (const c of index.chunks) {
    if (index.blocks[c.first]!.u === undefined) {
      items.push({ first: c.first, last: c.last, start: c.u, end: c.u + c.len, dirty: false });
      continue;
    }
    for (let i = c.first; i <= c.last; i++) {
      const b = index.blocks[i]!;
      items.push({ first: i, last: i, start: b.u!, end: b.u! + b.len!, dirty: dirty[i]! });
    }
  }
  const baseEnd = items.length ? items[items.length - 1]!.end : 0;
  const steps: Step[] = [];
  const reuse = (first: number, last: number) => {
    const prev = steps[steps.length - 1];
    if (prev?.kind === 'reuse' && prev.last === first - 1 && index.blocks[prev.last]!.end === index.blocks[first]!.bit) prev.last = last;
    else steps.push({ kind: 'reuse', first, last });
  };
  const fresh = (start: number, end: number) => {
    if (start >= end) return;
    const prev = steps[steps.length - 1];
    if (prev?.kind === 'new' && prev.end === start) prev.end = end;
    else steps.push({ kind: 'new', start, end });
  };
  for (const seg of segments) {
    if ('bytes' in seg) {
      if (seg.bytes.length) steps.push({ kind: 'bytes', data: seg.bytes });
      continue;
    }
    const [s, e] = seg.image;
    if (!(Number.isSafeInteger(s) && Number.isSafeInteger(e) && 0 <= s && s <= e)) throw new OemError(`invalid image range [${s}, ${e}) in an output layout`);
    // The first item that ends after s (items are sorted and contiguous).
    let lo = 0;
    let hi = items.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (items[mid]!.end <= s) lo = mid + 1;
      else hi = mid;
    }
    for (let k = lo; k < items.length && items[k]!.start < e; k++) {
      const it = items[k]!;
      if (!it.dirty && it.start >= s && it.end <= e && it.end > it.start) reuse(it.first, it.last);
      else fresh(Math.max(s, it.start), Math.min(e, it.end));
    }
    // Beyond the release's image (a grown disk): compressed anew.
    fresh(Math.max(s, baseEnd), e);
  }
  return steps;
}

interface Prefix {
  path: string;
  size: number;
  /** The hashes over it, to be copied (never digested). */
  h: Hashes;
}

/**
 * Output prefixes shared by the builds of one run: what comes before the first part that depends on
 * what a build changed (the release's blocks; for a qcow2 also its tables and the image's ranges
 * there), keyed by what it is made of.
 */
export interface SharedPrefixes {
  dir: string;
  made: Map<string, Promise<Prefix>>;
}

/** What a list of steps is: equal keys, equal output. */
function stepsKey(steps: Step[]): string {
  const h = createHash('sha256');
  for (const s of steps) {
    if (s.kind === 'reuse') h.update(`r${s.first}-${s.last};`);
    else if (s.kind === 'new') h.update(`n${s.start}-${s.end};`);
    else h.update(`b${sha256Hex(s.data)};`);
  }
  return h.digest('hex');
}

async function makePrefix(dir: string, write: (sink: (b: Buffer) => Promise<void>) => Promise<void>): Promise<Prefix> {
  const path = join(dir, `prefix-${randomBytes(6).toString('hex')}.bz2`);
  const h = newHashes();
  const fh = await open(path, 'wx');
  let size = 0;
  try {
    await write(async (piece) => {
      for (const x of Object.values(h)) x.update(piece);
      let done = 0;
      while (done < piece.length) done += (await fh.write(piece, done, piece.length - done)).bytesWritten;
      size += piece.length;
    });
  } finally {
    await fh.close();
  }
  return { path, size, h };
}

/**
 * How many of the first steps are the same for every build of a run (given the same layout there):
 * those before the first that touches the changed partitions, ending at the last chunk before the
 * first region (dirty chunks are refined and split runs differently per build). A reuse step across
 * that end is split there. Bytes just before the end are left out: a container's table there may
 * describe the changed range.
 */
function sharedSteps(index: BaseIndex, steps: Step[], regions: Region[]): number {
  const regionStart = Math.min(...regions.map((r) => r.offset));
  let upTo = -1;
  let end = 0;
  for (const c of index.chunks) {
    if (c.u + c.len > regionStart) break;
    [upTo, end] = [c.last, c.u + c.len];
  }
  let n = 0;
  for (; n < steps.length; n++) {
    const st = steps[n]!;
    if (st.kind === 'bytes' || (st.kind === 'new' && st.end <= end) || (st.kind === 'reuse' && st.last <= upTo)) continue;
    if (st.kind === 'reuse' && st.first <= upTo) {
      steps.splice(n + 1, 0, { kind: 'reuse', first: upTo + 1, last: st.last });
      st.last = upTo;
      n++;
    }
    break;
  }
  while (n > 0 && steps[n - 1]!.kind === 'bytes') n--;
  return steps.slice(0, n).some((st) => st.kind === 'reuse') ? n : 0;
}

/**
 * Writes the built image (the base, with `regions` taken from `raw`: only those need to be valid in
 * `raw`) to a new file `out` as bzip2, reusing the base's compressed blocks. With `layout`, the output
 * is those segments in order instead (ranges of the built image and bytes, e.g. a qcow2 of it); a
 * `trailer` is bytes after the image. Hashes the output as it goes. `out` is removed on failure.
 */
export async function compressReusing(
  index: BaseIndex,
  baseRaw: string,
  raw: string,
  out: string,
  regions: Region[],
  opts: { pieceCache?: string; shared?: SharedPrefixes; signal?: AbortSignal; trailer?: Buffer; layout?: Segment[] } = {},
): Promise<ReuseResult> {
  const signal = opts.signal;
  const tool = await bzip2Tool();
  const d = await Differ.open(baseRaw, raw, regions);
  let dirty: boolean[];
  try {
    dirty = await dirtyBlocks(index, d, regions);
  } finally {
    await d.close();
  }
  const layout: Segment[] = opts.layout ? [...opts.layout] : [{ image: [0, Math.max(index.size, ...regions.map((r) => r.offset + r.size))] }];
  if (opts.trailer?.length) layout.push({ bytes: opts.trailer });
  const steps = await planSteps(index, dirty, layout);
  // The steps are split where a shared prefix would end whether or not one is shared, so that an
  // output has the same bytes however many outputs its run makes.
  const prefixSteps = sharedSteps(index, steps, regions);
  const prefixes = prefixSteps ? opts.shared : undefined;

  let h = newHashes();
  let size = 0;
  let reusedBlocks = 0;
  let recompressed = 0;
  let changed = 0;
  const src = await open(index.bz2, 'r');
  const rawFh = await open(raw, 'r');
  const baseFh = await open(baseRaw, 'r');
  const emit = async (list: Step[], sink: (b: Buffer) => Promise<void>) => {
    for (const step of list) {
      if (signal?.aborted) throw new OemError('interrupted while compressing', { code: 'interrupted' });
      if (step.kind === 'reuse') {
        const blocks = index.blocks.slice(step.first, step.last + 1);
        // Each piece is hashed and written before the next is made: one buffer for all of them.
        for await (const piece of runStream(src, blocks[0]!.bit, blocks[blocks.length - 1]!.end, blocks.map((b) => b.crc), { reuse: true })) await sink(piece);
      } else if (step.kind === 'new') {
        changed += step.end - step.start;
        recompressed += await compressPieces(tool, { base: baseFh, raw: rawFh, regions }, step.start, step.end, sink, opts.pieceCache, signal);
      } else {
        // The container's own bytes (a qcow2's tables, a fixed VHD's footer): streams of their own.
        recompressed += await compressPieces(tool, { bytes: step.data }, 0, step.data.length, sink, opts.pieceCache, signal);
      }
    }
  };
  for (const st of steps) if (st.kind === 'reuse') reusedBlocks += st.last - st.first + 1;
  let fh: FileHandle | undefined;
  let ok = false;
  try {
    if (prefixes) {
      // Made once per run: copied, with the hashes over it.
      const head = steps.splice(0, prefixSteps);
      const key = stepsKey(head);
      let made = prefixes.made.get(key);
      if (!made) {
        made = makePrefix(prefixes.dir, (sink) => emit(head, sink));
        prefixes.made.set(key, made);
        made.catch(() => prefixes.made.delete(key));
      }
      const prefix = await made;
      await copyFile(prefix.path, out, constants.COPYFILE_EXCL);
      h = { md5: prefix.h.md5.copy(), sha1: prefix.h.sha1.copy(), sha512: prefix.h.sha512.copy() };
      size = prefix.size;
    }
    fh = await open(out, size ? 'a' : 'wx');
    const dst = fh;
    await emit(steps, async (buf: Buffer) => {
      for (const x of Object.values(h)) x.update(buf);
      let done = 0;
      while (done < buf.length) done += (await dst.write(buf, done, buf.length - done)).bytesWritten;
      size += buf.length;
    });
    ok = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new OemError(`no space left on the device while writing ${out}`, { code: 'noSpace', hint: 'free some space or write the output elsewhere' });
    throw err;
  } finally {
    await rawFh.close();
    await baseFh.close();
    await src.close();
    await fh?.close();
    // (An existing `out` is refused by the copy or the exclusive open: then nothing was made here to remove.)
    if (!ok && (fh || size)) await rm(out, { force: true });
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
  image: { base: FileHandle; raw: FileHandle; regions: Region[] } | { bytes: Buffer },
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
  const piece = ([a, b]: Extent): Promise<Buffer> => pieceSlots.use(async () => {
    // The built image: the base, with the regions the build wrote taken from `raw`.
    let data: Buffer;
    if ('bytes' in image) data = image.bytes.subarray(a, b);
    else {
      data = pieceBuffers.take(b - a).fill(0);
      await readInto(image.base, data, 0, b - a, a);
      for (const r of image.regions) {
        const from = Math.max(a, r.offset);
        const to = Math.min(b, r.offset + r.size);
        if (from < to) await readInto(image.raw, data, from - a, to - from, from);
      }
    }
    const file = cacheDir ? join(cacheDir, `${sha256Hex(data)}.bz2`) : null;
    // The piece's bytes are not used once it is compressed; its compressed bytes once written.
    const hit = file ? await pieceBuffers.readFile(file) : null;
    if (hit) {
      pieceBuffers.give(data);
      return hit;
    }
    const out = await compressBuffer(tool, data, signal);
    compressed += data.length;
    pieceBuffers.give(data);
    if (file) {
      const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
      await writeFile(tmp, out)
        .then(() => rename(tmp, file))
        .catch(() => rm(tmp, { force: true }));
    }
    return out;
  });
  // One compressor per core, and one more, so that a core is busy while a piece is written.
  await mapInOrder(bounds, availableParallelism() + 1, piece, async (buf) => {
    await sink(buf);
    pieceBuffers.give(buf);
  });
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
