/**
 * bzip2 files as sequences of independently decodable blocks, for reusing a release's compressed
 * bytes (see src/image/base-cache.ts and src/artifacts/bzip2-reuse.ts).
 *
 * A block starts with the 48-bit magic 0x314159265359 at any bit offset and runs to the next block
 * magic or to the stream's end-of-stream magic 0x177245385090 (followed by the stream CRC and padding;
 * streams may be concatenated, as pbzip2 writes them). Any run of consecutive blocks of one stream can
 * be made into a standalone stream: `BZh9`, the blocks' bits shifted to start on a byte, the
 * end-of-stream magic, the combined CRC (`rotl1(c) ^ blockCrc` over the run) and padding. Stock
 * bzip2, lbzip2 and pbzip2 decode concatenations of such streams.
 */
import type { FileHandle } from 'node:fs/promises';

/** A block of a bzip2 file: bits [bit, end) from the start of the file. */
export interface Bzip2Block {
  bit: number;
  end: number;
  /** The block CRC stored after the magic. */
  crc: number;
}

const BLOCK_MAGIC = 0x314159265359;
const EOS_MAGIC = 0x177245385090;
const WINDOW = 8 * 1024 * 1024;
const OVERLAP = 16;

/**
 * For each value of two bytes, which bit shifts s (0-7) of either magic put that value in the magic's
 * second and third bytes (a magic starting at bit s of byte k covers bytes k+1 and k+2 whole).
 */
const SHIFTS = (() => {
  const t = new Uint8Array(65536);
  for (const magic of [BLOCK_MAGIC, EOS_MAGIC]) {
    for (let s = 0; s < 8; s++) t[Math.floor(magic / 2 ** (24 + s)) & 0xffff]! |= 1 << s;
  }
  return t;
})();

/** Reads n <= 32 bits at a bit offset of `data`; bits past its end read as zeros. */
function bitsAt(data: Uint8Array, bitOffset: number, n: number): number {
  const byte = bitOffset >>> 3;
  const s = bitOffset & 7;
  const hi = (((data[byte] ?? 0) << 24) | ((data[byte + 1] ?? 0) << 16) | ((data[byte + 2] ?? 0) << 8) | (data[byte + 3] ?? 0)) >>> 0;
  const lo = data[byte + 4] ?? 0;
  const v = (hi * 256 + lo) / 2 ** (40 - s - n);
  return Math.floor(v) % 2 ** n;
}

function magicAt(data: Uint8Array, bitOffset: number): number {
  return bitsAt(data, bitOffset, 24) * 2 ** 24 + bitsAt(data, bitOffset + 24, 24);
}

export class Bzip2IndexError extends Error {}

/** The blocks of a bzip2 file and the stream CRCs, checked against each other. */
export async function indexBlocks(fh: FileHandle, size: number): Promise<Bzip2Block[]> {
  const markers: { bit: number; eos: boolean; crc: number }[] = [];
  const buf = Buffer.alloc(WINDOW + OVERLAP);
  for (let start = 0; start < size; start += WINDOW) {
    const want = Math.min(WINDOW + OVERLAP, size - start);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await fh.read(buf, got, want - got, start + got);
      if (bytesRead === 0) throw new Bzip2IndexError('the file ended while reading it');
      got += bytesRead;
    }
    const data = buf.subarray(0, got);
    // Magics starting in this window (byte k < WINDOW); the overlap lets them be read whole.
    const last = Math.min(got - 1, WINDOW);
    for (let k = 0; k < last; k++) {
      const m = SHIFTS[(data[k + 1]! << 8) | data[k + 2]!]!;
      if (m === 0) continue;
      for (let s = 0; s < 8; s++) {
        if (!(m & (1 << s))) continue;
        const at = k * 8 + s;
        if (at + 80 > got * 8) continue;
        const magic = magicAt(data, at);
        if (magic !== BLOCK_MAGIC && magic !== EOS_MAGIC) continue;
        markers.push({ bit: start * 8 + at, eos: magic === EOS_MAGIC, crc: bitsAt(data, at + 48, 32) });
      }
    }
  }
  const blocks: Bzip2Block[] = [];
  let streamCrc = 0;
  let inStream = 0;
  for (let i = 0; i < markers.length; i++) {
    const m = markers[i]!;
    if (m.eos) {
      if (inStream === 0) throw new Bzip2IndexError(`an empty stream at bit ${m.bit}`);
      if (streamCrc >>> 0 !== m.crc) throw new Bzip2IndexError(`the stream CRC at bit ${m.bit} does not combine the block CRCs before it`);
      streamCrc = 0;
      inStream = 0;
      continue;
    }
    const next = markers[i + 1];
    if (!next) throw new Bzip2IndexError(`the block at bit ${m.bit} has no end (truncated?)`);
    blocks.push({ bit: m.bit, end: next.bit, crc: m.crc });
    streamCrc = (((streamCrc << 1) | (streamCrc >>> 31)) ^ m.crc) >>> 0;
    inStream++;
  }
  if (inStream) throw new Bzip2IndexError('the last stream has no end (truncated?)');
  return blocks;
}

/** The stream CRC of a run of blocks. */
export function combinedCrc(crcs: Iterable<number>): number {
  let c = 0;
  for (const crc of crcs) c = (((c << 1) | (c >>> 31)) ^ crc) >>> 0;
  return c;
}

const PIECE = 4 * 1024 * 1024;

/**
 * A standalone bzip2 stream of the contiguous bits [startBit, endBit) of `fh` (whole blocks of one
 * stream), yielded in pieces of at most 4 MiB. `reuse`: every piece is yielded in the same buffer,
 * which the caller must be done with before it asks for the next (for a caller that writes each
 * away: no new 4 MiB buffer per piece for the garbage collector).
 */
export async function* runStream(fh: FileHandle, startBit: number, endBit: number, crcs: number[], opts: { reuse?: boolean } = {}): AsyncGenerator<Buffer> {
  yield Buffer.from('BZh9', 'latin1');
  const s = startBit & 7;
  const bits = endBit - startBit;
  const fullBytes = Math.floor(bits / 8);
  const firstByte = Math.floor(startBit / 8);
  // Not zeroed: every byte used is read first, or zero-filled where the file ends. As large as the run
  // needs (most are a block or a few), not a whole PIECE: one is made for every run.
  const src = Buffer.allocUnsafe(Math.min(PIECE, fullBytes) + 2);
  const reused = opts.reuse ? Buffer.allocUnsafe(Math.min(PIECE, fullBytes)) : null;
  let tail = 0;
  for (let done = 0; done <= fullBytes; done += PIECE) {
    // Output bytes [done, done + n) need source bytes up to done + n + 1 (the shift, the tail).
    const n = Math.min(PIECE, fullBytes - done);
    const want = n + 2;
    let got = 0;
    while (got < want) {
      const { bytesRead } = await fh.read(src, got, want - got, firstByte + done + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got < want) src.fill(0, got, want);
    const out = reused ? reused.subarray(0, n) : Buffer.allocUnsafe(n);
    if (s === 0) {
      src.copy(out, 0, 0, n);
    } else {
      const r = 8 - s;
      for (let i = 0; i < n; i++) out[i] = ((src[i]! << s) | (src[i + 1]! >>> r)) & 0xff;
    }
    tail = ((src[n]! << s) | (src[n + 1]! >>> (8 - s))) & 0xff;
    if (n) yield out;
    if (n < PIECE) break;
  }
  // The last bits % 8 bits of the run, the end-of-stream magic, the stream CRC, padding.
  const rest = bits % 8;
  const w = new BitWriter();
  if (rest) w.put(tail >>> (8 - rest), rest);
  w.put(Math.floor(EOS_MAGIC / 2 ** 24), 24);
  w.put(EOS_MAGIC % 2 ** 24, 24);
  w.put(combinedCrc(crcs) >>> 16, 16);
  w.put(combinedCrc(crcs) & 0xffff, 16);
  yield w.finish();
}

class BitWriter {
  private bytes: number[] = [];
  private acc = 0;
  private n = 0;
  /** Appends the low `count` (<= 24) bits of v, most significant first. */
  put(v: number, count: number): void {
    this.acc = (this.acc << count) | (v & ((1 << count) - 1));
    this.n += count;
    while (this.n >= 8) {
      this.n -= 8;
      this.bytes.push((this.acc >>> this.n) & 0xff);
    }
    this.acc &= (1 << this.n) - 1;
  }
  finish(): Buffer {
    if (this.n) this.put(0, 8 - this.n);
    return Buffer.from(this.bytes);
  }
}

/** A standalone stream of the blocks, in memory (for a block or a few). */
export async function blocksToStream(fh: FileHandle, blocks: Bzip2Block[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of runStream(fh, blocks[0]!.bit, blocks[blocks.length - 1]!.end, blocks.map((b) => b.crc))) parts.push(p);
  return Buffer.concat(parts);
}
