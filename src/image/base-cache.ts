/**
 * The decompressed base image, prepared once per release and kept in the cache.
 *
 * A bzip2 base (the releases' format) is indexed block by block (src/image/bzip2-blocks.ts), its
 * blocks grouped in chunks, and each chunk is decoded by its own `lbzip2 -n1` (or `bzip2`) process, as
 * many at once as there are cores, and written in order into a sparse `image.bin`. That gives the
 * uncompressed range of every chunk, kept in `blocks.json` (and of every block of a chunk once a build
 * needs it): builds then take the release's compressed bytes for every block they did not change
 * (src/artifacts/bzip2-reuse.ts). Entries live under {cache}/bases/{sha512 of the .bz2}/,
 * appear under that name only when complete; beyond the KEEP_BASES most recently used, entries unused
 * for an hour are removed (an hour, so that a concurrent build's base is never pulled away).
 *
 * Other bases (raw, gzip, xz, zstd, or bzip2 without a bzip2 tool) are decompressed into the build's
 * work directory as before, without an index.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, type FileHandle, readFile, rename, rm, stat, utimes } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { acquire, writeFileAtomic } from '../cleanup.js';
import { mapInOrder } from '../concurrency.js';
import { OemError } from '../shared/errors.js';
import { filter, run } from '../tools.js';
import { bunzip2Length } from './bzip2.js';
import { blocksToStream, Bzip2IndexError, indexBlocks, type Bzip2Block } from './bzip2-blocks.js';
import { decompressorFor, decompressToSparse, detectCompression } from './decompress.js';
import { isZero, SparseWriter } from './sparse.js';

/**
 * A block of the base's .bz2. Blocks are decoded in chunks (consecutive blocks of one stream, about
 * 1 MiB compressed or 64 blocks); a chunk's blocks get their own ranges (`u`, `len`) when a build
 * first needs them (`refineChunk`).
 */
export interface IndexedBlock extends Bzip2Block {
  u?: number;
  len?: number;
}

export interface Chunk {
  /** Blocks [first, last] of the index. */
  first: number;
  last: number;
  /** Offset in the image of the chunk's first decoded byte, and the decoded length. */
  u: number;
  len: number;
}

export interface BaseIndex {
  /** The .bz2 the blocks are in. */
  bz2: string;
  size: number;
  blocks: IndexedBlock[];
  chunks: Chunk[];
  /** Where the index is kept (refinements are saved there), and what it was made from. */
  file: string;
  source: { sha512: string; size: number };
}

export interface PreparedBase {
  /** The sparse raw image; never to be written. */
  raw: string;
  size: number;
  /** The block map, for bzip2 bases. */
  index: BaseIndex | null;
  /** Whether it came from the cache as it was. */
  cached: boolean;
  /** How it was made: e.g. "lbzip2 per chunk", "lbzip2", "copy". */
  method: string;
}

const CHUNK_BYTES = 1024 * 1024;
const CHUNK_BLOCKS = 64;

/** Consecutive blocks of one stream, about CHUNK_BYTES compressed or CHUNK_BLOCKS blocks each. */
export function chunkBlocks(blocks: Bzip2Block[]): { first: number; last: number }[] {
  const out: { first: number; last: number }[] = [];
  let first = 0;
  let bits = 0;
  for (let i = 0; i < blocks.length; i++) {
    bits += blocks[i]!.end - blocks[i]!.bit;
    const next = blocks[i + 1];
    if (!next || next.bit !== blocks[i]!.end || bits >= CHUNK_BYTES * 8 || i - first + 1 >= CHUNK_BLOCKS) {
      out.push({ first, last: i });
      first = i + 1;
      bits = 0;
    }
  }
  return out;
}

const KEEP_BASES = 2;
const INDEX_VERSION = 1;

/** A stage of preparation, for progress reports. */
export type PrepareProgress = (done: number, total: number) => void;

export async function prepareBase(
  compressed: string,
  sha512: string,
  opts: { cacheDir: string; workDir: string; log?: (l: string) => void; onProgress?: PrepareProgress },
): Promise<PreparedBase> {
  const log = opts.log ?? (() => {});
  const compression = await detectCompression(compressed);
  const tool = compression === 'bz2' ? await decompressorFor('bz2') : null;
  if (compression !== 'bz2' || tool === 'js' || process.env.OEM_REUSE_BLOCKS === '0') {
    return uncached(compressed, opts.workDir, log);
  }
  const root = join(opts.cacheDir, 'bases');
  const dir = join(root, sha512.slice(0, 40));
  const hit = await loadEntry(dir, compressed);
  if (hit) {
    log(`base image from the cache: ${dir}`);
    return hit;
  }
  await mkdir(root, { recursive: true });
  const tmp = join(root, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  const release = acquire(`base cache entry ${tmp}`, () => rm(tmp, { recursive: true, force: true }));
  try {
    await mkdir(tmp);
    const fh = await open(compressed, 'r');
    let blocks: Bzip2Block[];
    try {
      blocks = await indexBlocks(fh, (await fh.stat()).size);
    } catch (err) {
      await fh.close();
      if (!(err instanceof Bzip2IndexError)) throw err;
      log(`cannot map the blocks of ${compressed} (${err.message}); decompressing it whole, and builds recompress it whole`);
      await release();
      return uncached(compressed, opts.workDir, log);
    }
    const raw = join(tmp, 'image.bin');
    const groups = chunkBlocks(blocks);
    let chunks: Chunk[];
    try {
      chunks = await decodeChunks(fh, blocks, groups, tool!, raw, compressed, opts.onProgress);
    } finally {
      await fh.close();
    }
    const last = chunks[chunks.length - 1];
    const size = last ? last.u + last.len : 0;
    await saveIndex(join(tmp, 'blocks.json'), { sha512, size: (await stat(compressed)).size }, size, blocks, chunks);
    try {
      await rename(tmp, dir);
    } catch {
      if (await loadEntry(dir, compressed)) {
        // Another build prepared it meanwhile: use theirs.
        await rm(tmp, { recursive: true, force: true });
      } else {
        // An entry this build cannot use (damaged, or of another version of oem): replaced, so that
        // it is not decoded again by every build. Open files of it stay readable until closed.
        const stale = join(root, `.stale-${process.pid}-${randomBytes(4).toString('hex')}`);
        await rename(dir, stale).catch(() => undefined);
        await rm(stale, { recursive: true, force: true });
        await rename(tmp, dir);
      }
    }
    await release();
    await evict(root, dir);
    const made = await loadEntry(dir, compressed);
    if (!made) throw new OemError(`the base cache entry ${dir} vanished while preparing it`);
    log(`decoded ${blocks.length} bzip2 blocks in ${chunks.length} chunks with ${tool} (${availableParallelism()} at once); cached in ${dir}`);
    return { ...made, cached: false, method: `${tool} per chunk` };
  } catch (err) {
    await release();
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
      throw new OemError(`no space left on the device of ${opts.cacheDir} for the decompressed base image`, { code: 'noSpace', hint: 'free some space, or set OEM_CACHE_DIR / --cache-dir elsewhere' });
    }
    throw err;
  }
}

interface IndexFile {
  version: number;
  source: { sha512: string; size: number };
  size: number;
  /** [bit, end, crc] or [bit, end, crc, u, len]. */
  blocks: number[][];
  /** [first, last, u, len]. */
  chunks: number[][];
}

async function saveIndex(file: string, source: IndexFile['source'], size: number, blocks: IndexedBlock[], chunks: Chunk[]): Promise<void> {
  const e: IndexFile = {
    version: INDEX_VERSION,
    source,
    size,
    blocks: blocks.map((b) => (b.u === undefined ? [b.bit, b.end, b.crc] : [b.bit, b.end, b.crc, b.u, b.len!])),
    chunks: chunks.map((c) => [c.first, c.last, c.u, c.len]),
  };
  await writeFileAtomic(file, JSON.stringify(e));
}

async function loadEntry(dir: string, compressed: string): Promise<PreparedBase | null> {
  const file = join(dir, 'blocks.json');
  const text = await readFile(file, 'utf8').catch(() => null);
  if (!text) return null;
  try {
    const e = JSON.parse(text) as IndexFile;
    const raw = join(dir, 'image.bin');
    const st = await stat(raw);
    if (e.version !== INDEX_VERSION || st.size !== e.size || (await stat(compressed)).size !== e.source.size) return null;
    const now = new Date();
    await utimes(file, now, now).catch(() => {});
    const blocks: IndexedBlock[] = e.blocks.map(([bit, end, crc, u, len]) => (u === undefined ? { bit: bit!, end: end!, crc: crc! } : { bit: bit!, end: end!, crc: crc!, u, len: len! }));
    const chunks: Chunk[] = e.chunks.map(([first, last, u, len]) => ({ first: first!, last: last!, u: u!, len: len! }));
    return { raw, size: e.size, index: { bz2: compressed, size: e.size, blocks, chunks, file, source: e.source }, cached: true, method: 'cache' };
  } catch {
    return null;
  }
}

/**
 * Gives every block of a chunk its own range, by decoding the blocks one by one (done once per chunk
 * and base, and saved in the cache).
 */
export function refineChunk(index: BaseIndex, c: Chunk): Promise<void> {
  if (index.blocks[c.first]!.u !== undefined) return Promise.resolve();
  let pending = refining.get(index);
  if (!pending) refining.set(index, (pending = new Map()));
  let p = pending.get(c.first);
  if (!p) {
    p = refine(index, c);
    pending.set(c.first, p);
    p.catch(() => pending.delete(c.first));
  }
  return p;
}

const refining = new WeakMap<BaseIndex, Map<number, Promise<void>>>();
/** Blocks up to this compressed size are decoded in-process (mostly runs of zeros: a process costs more). */
const SMALL_BLOCK = 16 * 1024;

async function refine(index: BaseIndex, c: Chunk): Promise<void> {
  const tool = await decompressorFor('bz2');
  const fh = await open(index.bz2, 'r');
  try {
    const lens = await mapInOrder(range(c.first, c.last + 1), availableParallelism(), async (i) => {
      const b = index.blocks[i]!;
      const stream = await blocksToStream(fh, [b]);
      if (b.end - b.bit <= SMALL_BLOCK * 8) {
        // Only the length is needed: the blocks are of the verified release, which the tool has
        // decoded whole, and their lengths must add up to that (below).
        return bunzip2Length((async function* () { yield stream; })());
      }
      // Counted as the tool writes it, nothing kept: a block can decode to tens of MiB.
      let n = 0;
      await decodeBlocks(tool, stream, `${index.bz2} (block ${i + 1})`, (c) => {
        n += c.length;
      });
      return n;
    });
    if (lens.reduce((a, b) => a + b, 0) !== c.len) throw new OemError(`the blocks of ${index.bz2} decode to other lengths than before; is the cache at ${index.file} damaged?`);
    let u = c.u;
    for (let i = c.first; i <= c.last; i++) {
      const b = index.blocks[i]!;
      b.u = u;
      b.len = lens[i - c.first]!;
      u += b.len;
    }
  } finally {
    await fh.close();
  }
  await saveIndex(index.file, index.source, index.size, index.blocks, index.chunks).catch(() => {});
}

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a }, (_, k) => a + k);
}

async function evict(root: string, keep: string): Promise<void> {
  const entries: { dir: string; t: number }[] = [];
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (name.startsWith('.')) continue;
    const dir = join(root, name);
    const st = await stat(join(dir, 'blocks.json')).catch(() => null);
    entries.push({ dir, t: st?.mtimeMs ?? 0 });
  }
  entries.sort((a, b) => b.t - a.t);
  const old = Date.now() - 3600_000;
  for (const e of entries.slice(KEEP_BASES)) if (e.dir !== keep && e.t < old) await rm(e.dir, { recursive: true, force: true });
}

/** The base decompressed (or copied) into the work directory, without a block map. */
async function uncached(compressed: string, workDir: string, log: (l: string) => void): Promise<PreparedBase> {
  const raw = join(workDir, 'base.bin');
  if ((await detectCompression(compressed)) === 'none') {
    await run('cp', ['--sparse=always', '--reflink=auto', '--', compressed, raw], 'copy the base image');
    return { raw, size: (await stat(raw)).size, index: null, cached: false, method: 'copy' };
  }
  const d = await decompressToSparse(compressed, raw);
  log(`decompressed ${compressed} with ${d.tool}`);
  return { raw, size: d.size, index: null, cached: false, method: d.tool };
}

/** Output of one block: data buffers and runs of zeros (as counts). */
type Piece = Buffer | number;

/** Decodes a stream of bzip2 blocks with `tool`, its output to `onData` as it comes. */
function decodeBlocks(tool: string, stream: Buffer, what: string, onData: (c: Buffer) => void): Promise<void> {
  return filter(tool, tool === 'lbzip2' ? ['-n1', '-dc'] : ['-dc'], stream, onData, {
    failure: (why) => new OemError(`${what} is corrupt: ${tool} says: ${why}`, { code: 'badImage', hint: 'download the image again' }),
  });
}

async function decodeStream(tool: string, stream: Buffer, what: string): Promise<Piece[]> {
  const pieces: Piece[] = [];
  const onData = (c: Buffer) => {
    // Runs of zeros are kept as counts, not as buffers: a chunk can decode to tens of MiB of them.
    if (isZero(c)) {
      const last = pieces[pieces.length - 1];
      if (typeof last === 'number') pieces[pieces.length - 1] = last + c.length;
      else pieces.push(c.length);
    } else {
      pieces.push(c);
    }
  };
  await decodeBlocks(tool, stream, what, onData);
  return pieces;
}

async function decodeChunks(
  fh: FileHandle,
  blocks: Bzip2Block[],
  groups: { first: number; last: number }[],
  tool: string,
  rawPath: string,
  name: string,
  onProgress?: PrepareProgress,
): Promise<Chunk[]> {
  const out = await open(rawPath, 'wx');
  try {
    const w = new SparseWriter(out, 0);
    // One decoder per core, and one more, so that a core is busy while a result is written.
    const result: Chunk[] = [];
    await mapInOrder(
      groups,
      availableParallelism() + 1,
      (g) => blocksToStream(fh, blocks.slice(g.first, g.last + 1)).then((s) => decodeStream(tool, s, `${name} (blocks ${g.first + 1}-${g.last + 1} of ${blocks.length}, at bit ${blocks[g.first]!.bit})`)),
      async (pieces, i) => {
        const u = w.position;
        for (const p of pieces) {
          if (typeof p === 'number') await w.writeZeros(p);
          else await w.write(p);
        }
        result.push({ ...groups[i]!, u, len: w.position - u });
        onProgress?.(i + 1, groups.length);
      },
    );
    await w.end();
    await out.truncate(w.position);
    return result;
  } finally {
    await out.close();
  }
}
