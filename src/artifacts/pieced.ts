/**
 * Compression in pieces, each kept in a cache by the SHA-256 of its bytes: the artifacts of one
 * release differ only where a build wrote (OEM, ROOT), so what every build of every provider shares
 * (the USR partitions, the runs of zeros) is compressed once and then only copied.
 *
 * The input is cut into pieces where its content says (content-defined chunking: a gear hash over the
 * last 32 bytes, a cut where its top 20 bits are zero), between MIN_PIECE (1 MiB) and MAX_PIECE
 * (4 MiB) long, about PIECE (2 MiB) on average. The same bytes are cut at the same places wherever
 * they sit: a container whose tables before the disk's data are longer or shorter (a VMDK of a larger
 * disk, a tar whose sparse map differs, a qcow2 in a box) still finds the pieces of the disk's data
 * that another artifact compressed. Runs of zeros never cut (pieces of MAX_PIECE). Each piece is
 * compressed on its own (a complete .bz2, .gz, .xz or .zst stream) and the output is their
 * concatenation, which the stock tools decode as one: bzip2, lbzip2 and pbzip2, gzip (members), xz
 * and zstd (streams, frames) all read concatenations. Holes of a sparse input are not read. Pieces are
 * compressed as many at once as there are cores, and the output is hashed once written (hash.ts).
 *
 *   bz2   lbzip2 -n1 -9 (else bzip2 -9)
 *   gz    Node's zlib, level 9 (no name, no time: the same bytes on every machine with this Node)
 *   xz    xz -6 -T1
 *   zst   zstd -10
 *
 * The same input gives the same bytes, from a cold cache or a warm one, on every machine (the gear
 * table is derived from SHA-256). A piece compresses a little worse than the whole file would (each
 * starts with an empty dictionary): on the full-size test release, 2 MiB pieces made the VMDK's .bz2
 * and GCE's .tar.gz 0.02% and 0.04% larger than 4 MiB pieces did; the peak memory of a VMDK and a
 * GCE archive built at once went from 270 to 222 MB in one measurement (each piece in flight is read,
 * compressed, and waits for its turn to be written).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzip as gzipCb } from 'node:zlib';
import { pieceBuffers } from '../buffer-pool.js';
import type { Compression } from '../compression.js';
import { mapInOrder, pieceSlots } from '../concurrency.js';
import { dataExtents } from '../image/sparse.js';
import { OemError } from '../shared/errors.js';
import { filter, requireTool } from '../tools.js';
import { bzip2Tool, createOutput, noSpace, openInput } from './compress.js';
import { hashFile, sha256Hex } from './hash.js';

const gzip = promisify(gzipCb);

/** The average size of a piece: large enough for the compressors' ratio, small enough to reuse most of an image. */
export const PIECE = 2 * 1024 * 1024;
export const MIN_PIECE = PIECE / 2;
export const MAX_PIECE = PIECE * 2;
/** A cut where the hash's top 20 bits are zero: one in 1 MiB after MIN_PIECE. */
const CUT_MASK = ~(2 ** 32 / (PIECE - MIN_PIECE) - 1);
const WINDOW = 32;

/**
 * One pseudo-random 32-bit value per byte value, the same on every machine. A run of zeros leaves the
 * hash at -GEAR[0], whose top bits are not zero: zeros never cut.
 */
const GEAR = (() => {
  const t = new Int32Array(256);
  for (let i = 0; i < 256; i++) t[i] = createHash('sha256').update(`oem piece gear ${i}`).digest().readInt32LE(0);
  t[0] = 0x9e3779b9 | 0;
  return t;
})();

/**
 * Where the piece that starts at `data[0]` ends: at the first cut at or after MIN_PIECE, else at
 * MAX_PIECE; at the end of `data` when it is the input's end (`final`). -1: more data is needed.
 */
export function pieceEnd(data: Buffer, final: boolean): number {
  const limit = Math.min(data.length, MAX_PIECE);
  if (limit > MIN_PIECE && !isZero(data.subarray(MIN_PIECE - WINDOW, limit))) {
    const cut = gearCut(data, MIN_PIECE - WINDOW, MIN_PIECE - 1, limit);
    if (cut >= 0) return cut;
  }
  if (data.length >= MAX_PIECE) return MAX_PIECE;
  return final ? data.length : -1;
}

/**
 * The first i + 1 with from <= i < limit and the gear hash of data[start..i] (at most its last 32
 * bytes count: older ones are shifted out) with its top bits zero; -1 if none. Only locals in the
 * loops: module bindings (exported ones above all) are read through a cell on every access, which
 * made this loop two to three times slower.
 */
function gearCut(data: Uint8Array, start: number, from: number, limit: number): number {
  const gear = GEAR;
  const mask = CUT_MASK;
  let h = 0;
  let i = start;
  for (; i < from; i++) h = ((h << 1) + gear[data[i]!]!) | 0;
  // Four bytes a turn: fewer loop checks (faster in a micro-benchmark, within its noise).
  for (const end = limit - 3; i < end; i += 4) {
    h = ((h << 1) + gear[data[i]!]!) | 0;
    if ((h & mask) === 0) return i + 1;
    h = ((h << 1) + gear[data[i + 1]!]!) | 0;
    if ((h & mask) === 0) return i + 2;
    h = ((h << 1) + gear[data[i + 2]!]!) | 0;
    if ((h & mask) === 0) return i + 3;
    h = ((h << 1) + gear[data[i + 3]!]!) | 0;
    if ((h & mask) === 0) return i + 4;
  }
  for (; i < limit; i++) {
    h = ((h << 1) + gear[data[i]!]!) | 0;
    if ((h & mask) === 0) return i + 1;
  }
  return -1;
}

export type PiecedKind = Exclude<Compression, 'none'>;

export interface PiecedResult {
  tool: string;
  pieces: number;
  /** Pieces taken from the cache, and the input bytes compressed now. */
  cached: number;
  compressed: number;
  size: number;
  md5: string;
  sha1: string;
  sha512: string;
}

interface Codec {
  /** Names the tool in logs, and goes into every cache key (another tool makes other bytes). */
  id: string;
  compress: (data: Buffer, signal?: AbortSignal) => Promise<Buffer>;
}

async function external(tool: string, args: string[], data: Buffer, signal?: AbortSignal): Promise<Buffer> {
  const out: Buffer[] = [];
  await filter(tool, args, data, (c) => out.push(c), {
    ...(signal ? { signal } : {}),
    failure: (why) => new OemError(`${tool} failed to compress: ${why}`),
  });
  return Buffer.concat(out);
}

async function codec(kind: PiecedKind): Promise<Codec> {
  switch (kind) {
    case 'bz2': {
      const tool = await bzip2Tool();
      const args = tool === 'lbzip2' ? ['-n1', '-9', '-c'] : ['-9', '-c'];
      return { id: `${tool} -9`, compress: (d, s) => external(tool, args, d, s) };
    }
    case 'gz':
      return { id: `node:zlib ${process.versions.zlib} -9`, compress: async (d) => gzip(d, { level: 9, memLevel: 9 }) };
    case 'xz':
      await requireTool('xz', 'compress to .xz');
      return { id: 'xz -6', compress: (d, s) => external('xz', ['-6', '-T1', '-c'], d, s) };
    case 'zst':
      await requireTool('zstd', 'compress to .zst');
      return { id: 'zstd -10', compress: (d, s) => external('zstd', ['-10', '-T1', '-q', '-c'], d, s) };
    default:
      throw new OemError(`no piecewise compression for ${JSON.stringify(kind)}`, { code: 'usage' });
  }
}

/** Zeros, never written: compared with, and the bytes of pieces in holes. */
const ZEROS = Buffer.alloc(MAX_PIECE);

function isZero(b: Buffer): boolean {
  for (let at = 0; at < b.length; at += ZEROS.length) {
    const part = b.subarray(at, at + ZEROS.length);
    if (!part.equals(ZEROS.subarray(0, part.length))) return false;
  }
  return true;
}

/** Compressed pieces by content: from the cache, from a compression running for the same bytes, or compressed now. */
class PieceStore {
  cached = 0;
  compressed = 0;
  private readonly inFlight = new Map<string, Promise<Buffer>>();
  private readonly zeros = new Map<string, Buffer>();
  private readonly keyPrefix: string;
  constructor(
    private readonly c: Codec,
    private readonly cacheDir: string,
    private readonly ext: string,
    private readonly signal?: AbortSignal,
  ) {
    this.keyPrefix = createHash('sha256').update(c.id).digest('hex').slice(0, 12);
  }

  /**
   * The compressed form of `bytes`, which are not used once it resolves. The caller may give the
   * result to `pieceBuffers` once written: it is the caller's alone (else not from the pool).
   */
  get(bytes: Buffer): Promise<Buffer> {
    if (this.signal?.aborted) return Promise.reject(new OemError('interrupted while compressing', { code: 'interrupted' }));
    // Runs of zeros (most of a disk) are known by a comparison, not hashed, and kept here once compressed.
    const zero = isZero(bytes);
    const key = zero ? `zeros-${bytes.length}` : sha256Hex(bytes);
    const file = join(this.cacheDir, `${this.keyPrefix}-${key}.${this.ext}`);
    const known = zero ? this.zeros.get(file) : undefined;
    if (known) {
      this.cached++;
      return Promise.resolve(known);
    }
    // The same bytes at once: looked up or compressed by the first, awaited by the others. These get
    // a copy (made before the first's caller can have written and given back the buffer).
    const running = this.inFlight.get(file);
    if (running) {
      this.cached++;
      return zero ? running : running.then((b) => Buffer.from(b));
    }
    const made = (async () => {
      const hit = zero ? await readFile(file).catch(() => null) : await pieceBuffers.readFile(file);
      if (hit) {
        this.cached++;
        return hit;
      }
      const z = await this.c.compress(bytes, this.signal);
      this.compressed += bytes.length;
      const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
      await writeFile(tmp, z)
        .then(() => rename(tmp, file))
        .catch(() => rm(tmp, { force: true }));
      return z;
    })();
    this.inFlight.set(file, made);
    return made.then(
      (z) => {
        this.inFlight.delete(file);
        if (zero) this.zeros.set(file, z);
        return z;
      },
      (err: unknown) => {
        this.inFlight.delete(file);
        throw err;
      },
    );
  }
}

/** A promise that may be left unawaited when the stream fails first: its rejection is not unhandled. */
function handled<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/**
 * A stream cut into pieces as compressPieced cuts a file (pieceEnd), each compressed by `store`: as
 * many at once as there are cores, handed to `emit` in order. `write` waits while they are.
 */
class StreamPieces {
  // The stream is gathered in one window, larger than a piece and used again: each piece is copied
  // out of it once (its compression may start later, when a slot is free), the rest moved to its start.
  private readonly win = Buffer.allocUnsafe(MAX_PIECE + MIN_PIECE);
  private fill = 0;
  private readonly queue: Promise<Buffer>[] = [];
  private readonly limit = availableParallelism() + 1;

  constructor(
    private readonly store: PieceStore,
    private readonly emit: (z: Buffer) => Promise<void> | void,
  ) {}

  /** Takes the bytes of `chunk`, which is not used once this resolves. */
  async write(chunk: Buffer): Promise<void> {
    for (let off = 0; off < chunk.length; ) {
      const n = chunk.copy(this.win, this.fill, off);
      this.fill += n;
      off += n;
      while (this.fill >= MAX_PIECE) {
        const end = pieceEnd(this.win.subarray(0, this.fill), false);
        const piece = pieceBuffers.take(end);
        this.win.copy(piece, 0, 0, end);
        this.win.copyWithin(0, end, this.fill);
        this.fill -= end;
        await this.add(piece);
      }
    }
  }

  /** The last pieces, then every compressed piece emitted. */
  async end(): Promise<void> {
    // Nothing is written into the window any more: the last pieces are views of it.
    let rest = this.win.subarray(0, this.fill);
    while (rest.length > 0) {
      const end = pieceEnd(rest, true);
      await this.add(rest.subarray(0, end));
      rest = rest.subarray(end);
    }
    while (this.queue.length) await this.emit(await this.queue.shift()!);
  }

  private async add(piece: Buffer): Promise<void> {
    // The piece's bytes are not used once compressed (a view of the window is not the pool's).
    this.queue.push(handled(pieceSlots.use(() => this.store.get(piece)).then((z) => (pieceBuffers.give(piece), z))));
    while (this.queue.length >= this.limit) await this.emit(await this.queue.shift()!);
  }
}

/**
 * A stream's gzip in pieces (an archive), written to a new file `out`: the same multi-member gzip as
 * compressPieced's, at `level`, cut from the stream as compressPieced cuts a file. Pieces are
 * compressed as many at once as there are cores; the stream is read while they are, a window ahead.
 * Each chunk is used before the next is asked for (a source may fill the same buffer again). A
 * failure leaves `out` for the caller to remove. Resolves to the pieces taken from the cache and the
 * bytes compressed now.
 */
export async function gzipPiecedToFile(chunks: AsyncIterable<Buffer>, out: string, opts: { cacheDir: string; level: number; signal?: AbortSignal }): Promise<{ cached: number; compressed: number }> {
  const store = new PieceStore({ id: `node:zlib ${process.versions.zlib} -${opts.level}`, compress: async (d) => gzip(d, { level: opts.level }) }, opts.cacheDir, 'gz', opts.signal);
  await mkdir(opts.cacheDir, { recursive: true });
  const fh = await open(out, 'wx');
  try {
    const pieces = new StreamPieces(store, async (z) => {
      let w = 0;
      while (w < z.length) w += (await fh.write(z, w, z.length - w)).bytesWritten;
      pieceBuffers.give(z);
    });
    for await (const chunk of chunks) {
      if (opts.signal?.aborted) throw new OemError('interrupted while compressing', { code: 'interrupted' });
      await pieces.write(chunk);
    }
    await pieces.end();
    return { cached: store.cached, compressed: store.compressed };
  } finally {
    await fh.close();
  }
}

/** The pieces of a file (pieceEnd), read once; windows wholly in a hole are not read (zeros do not cut). */
async function cutFile(src: FileHandle, total: number, hole: (a: number, b: number) => boolean): Promise<{ at: number; len: number }[]> {
  const pieces: { at: number; len: number }[] = [];
  const buf = Buffer.alloc(MAX_PIECE);
  for (let at = 0; at < total; ) {
    const end = Math.min(total, at + MAX_PIECE);
    let len: number;
    if (end - at <= MIN_PIECE || hole(at + MIN_PIECE - WINDOW, end)) len = end - at;
    else {
      const n = end - at;
      buf.fill(0, 0, MIN_PIECE - WINDOW);
      let got = MIN_PIECE - WINDOW;
      while (got < n) {
        const { bytesRead } = await src.read(buf, got, n - got, at + got);
        if (!bytesRead) throw new OemError(`the input changed while it was compressed (shorter than ${total} bytes)`);
        got += bytesRead;
      }
      len = pieceEnd(buf.subarray(0, n), end === total);
    }
    pieces.push({ at, len });
    at += len;
  }
  return pieces;
}

/**
 * Compresses `input` (and then `trailer`, bytes that follow it in the output's format) to a new file
 * `output`, in pieces cached in `cacheDir`. `output` is removed on failure.
 */
export async function compressPieced(
  input: string,
  output: string,
  kind: PiecedKind,
  opts: { cacheDir: string; trailer?: Buffer; signal?: AbortSignal; onProgress?: (done: number, total: number) => void },
): Promise<PiecedResult> {
  const c = await codec(kind);
  const store = new PieceStore(c, opts.cacheDir, kind, opts.signal);
  await mkdir(opts.cacheDir, { recursive: true });
  const src = await openInput(input);
  let dst: FileHandle | undefined;
  let created = false;
  let ok = false;
  try {
    const total = (await src.stat()).size;
    const data = await dataExtents(input, 0, total);
    const hole = (a: number, b: number) => data !== null && !data.some(([x, y]) => x < b && a < y);
    dst = await createOutput(output);
    // Created exclusively: from here on a failure removes it.
    created = true;
    const out = dst;
    const pieces: { at: number; len: number; bytes?: Buffer }[] = await cutFile(src, total, hole);
    if (opts.trailer?.length) pieces.push({ at: total, len: opts.trailer.length, bytes: opts.trailer });
    const piece = (p: (typeof pieces)[number]): Promise<Buffer> => pieceSlots.use(async () => {
      if (opts.signal?.aborted) throw new OemError('interrupted while compressing', { code: 'interrupted' });
      let bytes = p.bytes;
      if (!bytes) {
        // A hole is zeros (never written to); other pieces are read whole or fail.
        if (hole(p.at, p.at + p.len)) bytes = ZEROS.subarray(0, p.len);
        else {
          bytes = pieceBuffers.take(p.len);
          let got = 0;
          while (got < p.len) {
            const { bytesRead } = await src.read(bytes, got, p.len - got, p.at + got);
            if (!bytesRead) throw new OemError(`${input} changed while it was compressed (shorter than ${total} bytes)`);
            got += bytesRead;
          }
        }
      }
      const z = await store.get(bytes);
      pieceBuffers.give(bytes);
      return z;
    });
    let done = 0;
    await mapInOrder(pieces, availableParallelism() + 1, piece, async (z, i) => {
      let w = 0;
      while (w < z.length) w += (await out.write(z, w, z.length - w)).bytesWritten;
      pieceBuffers.give(z);
      done += pieces[i]!.len;
      opts.onProgress?.(done, total + (opts.trailer?.length ?? 0));
    });
    if (opts.signal?.aborted) throw new OemError('interrupted while compressing', { code: 'interrupted' });
    dst = undefined;
    await out.close();
    // Hashed once written (hash.ts: large files by openssl, off this thread).
    const { hex, size } = await hashFile(output, ['md5', 'sha1', 'sha512']);
    ok = true;
    return { tool: `${c.id} in pieces of about ${PIECE / 1048576} MiB`, pieces: pieces.length, cached: store.cached, compressed: store.compressed, size, ...hex };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') throw noSpace(output);
    throw err;
  } finally {
    await src.close();
    await dst?.close().catch(() => undefined);
    if (!ok && created) await rm(output, { force: true });
  }
}
