import { execFileSync } from 'node:child_process';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BZIP2_OUTPUT_CHUNK, bunzip2Length, bunzip2Stream } from '../src/image/bzip2.js';
import { indexBlocks } from '../src/image/bzip2-blocks.js';

/** Compresses with a real bzip2 implementation (bzip2, lbzip2 or pbzip2). */
function compress(data: Uint8Array, tool = 'bzip2', args: string[] = ['-9']): Buffer {
  return execFileSync(tool, [...args, '-c'], { input: data, maxBuffer: 1 << 30 });
}

/** Deterministic pseudo-random bytes (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function randomBytes(n: number, seed = 1): Buffer {
  const r = prng(seed);
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = r() & 0xff;
  return b;
}

function text(n: number, seed = 2): Buffer {
  const r = prng(seed);
  const words: string[] = [];
  for (let i = 0; i < 3000; i++) {
    let w = '';
    const len = 2 + (r() % 9);
    for (let j = 0; j < len; j++) w += String.fromCharCode(97 + (r() % 26));
    words.push(w);
  }
  const parts: string[] = [];
  let size = 0;
  while (size < n) {
    const line = `${Array.from({ length: 3 + (r() % 12) }, () => words[r() % words.length]).join(' ')} ${r() % 100000}\n`;
    parts.push(line);
    size += line.length;
  }
  return Buffer.from(parts.join('').slice(0, n), 'latin1');
}

/** Feeds a buffer as chunks of a fixed size, or of random sizes (1 byte to 64 KiB). */
async function* chunks(buf: Uint8Array, size: number | 'random' = 65536): AsyncGenerator<Buffer> {
  const r = prng(buf.length);
  for (let off = 0; off < buf.length; ) {
    const n = size === 'random' ? 1 + (r() % 65536) : size;
    yield Buffer.from(buf.subarray(off, off + n));
    off += n;
  }
}

async function decode(compressed: Uint8Array, size: number | 'random' = 65536): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of bunzip2Stream(chunks(compressed, size))) {
    expect(c.length).toBeGreaterThan(0);
    expect(c.length).toBeLessThanOrEqual(BZIP2_OUTPUT_CHUNK);
    parts.push(c);
  }
  return Buffer.concat(parts);
}

/**
 * Decodes and expects byte-exact output (compared without printing megabytes on failure), and the
 * same length from bunzip2Length, which walks the same blocks without writing them.
 */
async function expectRoundTrip(compressed: Uint8Array, original: Uint8Array, size: number | 'random' = 65536): Promise<void> {
  const out = await decode(compressed, size);
  expect(out.length).toBe(original.length);
  expect(out.equals(original)).toBe(true);
  expect(await bunzip2Length(chunks(compressed, size))).toBe(original.length);
}

async function decodeError(compressed: Uint8Array): Promise<Error> {
  try {
    await decode(compressed);
  } catch (err) {
    expect(err).toBeInstanceOf(Error);
    return err as Error;
  }
  throw new Error('expected bunzip2Stream to reject the input');
}

function flipBit(buf: Buffer, bitOffset: number): Buffer {
  const b = Buffer.from(buf);
  b[bitOffset >> 3]! ^= 0x80 >> (bitOffset & 7);
  return b;
}

function bitsAt(buf: Uint8Array, bit: number, n: number): number {
  let v = 0;
  for (let i = 0; i < n; i++) v = v * 2 + ((buf[(bit + i) >> 3]! >> (7 - ((bit + i) & 7))) & 1);
  return v;
}

/** Bit offset of the end-of-stream magic of a single-stream file (it is within the last 11 bytes). */
function endOfStreamBit(buf: Buffer): number {
  for (let bit = (buf.length - 11) * 8; bit + 80 <= buf.length * 8; bit++) {
    if (bitsAt(buf, bit, 48) === 0x177245385090) return bit;
  }
  throw new Error('no end-of-stream magic');
}

describe('bunzip2Stream', () => {
  it('decodes empty input, one byte and all 256 byte values', async () => {
    await expectRoundTrip(compress(Buffer.alloc(0)), Buffer.alloc(0));
    await expectRoundTrip(compress(Buffer.from('x')), Buffer.from('x'), 1);
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    await expectRoundTrip(compress(all), all);
    const allRev = Buffer.concat([all, Buffer.from(all).reverse(), all]);
    await expectRoundTrip(compress(allRev, 'bzip2', ['-1']), allRev, 7);
    // Every byte value in runs long enough for RLE1.
    const runs = Buffer.concat(Array.from({ length: 256 }, (_, i) => Buffer.alloc(300 + i, i)));
    await expectRoundTrip(compress(runs), runs);
  });

  it('decodes runs around the RLE1 edges (1-9, 250-262, 508-516, 1000 equal bytes)', async () => {
    const lengths = [1, 2, 3, 4, 5, 6, 7, 8, 9, 250, 251, 252, 253, 254, 255, 256, 257, 258, 259, 260, 261, 262, 508, 509, 510, 511, 512, 513, 514, 515, 516, 1000];
    const all: Buffer[] = [];
    for (const n of lengths) {
      const run = Buffer.alloc(n, 0x61);
      await expectRoundTrip(compress(run), run); // the run alone: at the start and end of the block
      all.push(Buffer.from('x'), run, Buffer.from('y'), Buffer.alloc(n, 0), Buffer.alloc(n + 1, 0x61));
    }
    const mixed = Buffer.concat(all);
    await expectRoundTrip(compress(mixed), mixed);
    // Alternating short runs: 4 equal bytes followed by a count of 0 everywhere.
    const fours = Buffer.concat(Array.from({ length: 5000 }, (_, i) => Buffer.alloc(4, i % 3)));
    await expectRoundTrip(compress(fours), fours);
  });

  it('decodes runs that straddle a block boundary (-1)', async () => {
    // bzip2 -1 fills a block with 99981 bytes of RLE1 output; land a run on every position near that.
    const rnd = randomBytes(100_000, 3);
    for (let at = 99_970; at <= 99_990; at += 2) {
      const data = Buffer.concat([rnd.subarray(0, at), Buffer.alloc(600, 0x7a), rnd.subarray(0, 1000)]);
      await expectRoundTrip(compress(data, 'bzip2', ['-1']), data);
    }
  });

  it('decodes random data and text at -1, -5 and -9, fed in chunks of any size', async () => {
    const data = Buffer.concat([randomBytes(700_000, 4), text(1_500_000), Buffer.alloc(200_000), randomBytes(300_000, 5)]);
    for (const level of ['-1', '-5', '-9']) {
      await expectRoundTrip(compress(data, 'bzip2', [level]), data, 'random');
    }
    const small = Buffer.concat([randomBytes(150_000, 6), text(150_000, 7)]);
    await expectRoundTrip(compress(small, 'bzip2', ['-1']), small, 1);
  });

  it('decodes 50 MB of zeros in bounded chunks', async () => {
    const zeros = Buffer.alloc(50_000_000);
    for (const [tool, args] of [
      ['bzip2', ['-9']],
      ['lbzip2', ['-9', '-n', '2']],
    ] as const) {
      const bz = compress(zeros, tool, [...args]);
      let total = 0;
      for await (const c of bunzip2Stream(chunks(bz, 4096))) {
        expect(c.length).toBeLessThanOrEqual(BZIP2_OUTPUT_CHUNK);
        expect(c.equals(zeros.subarray(0, c.length))).toBe(true);
        total += c.length;
      }
      expect(total).toBe(zeros.length);
      expect(await bunzip2Length(chunks(bz, 4096))).toBe(zeros.length);
    }
  });

  it('decodes concatenated streams (cat a.bz2 empty.bz2 b.bz2)', async () => {
    const a = Buffer.concat([text(400_000, 8), Buffer.alloc(1000, 0xff)]);
    const b = randomBytes(250_000, 9);
    const cat = Buffer.concat([compress(a, 'bzip2', ['-1']), compress(Buffer.alloc(0)), compress(b, 'bzip2', ['-9']), compress(Buffer.from('!'))]);
    await expectRoundTrip(cat, Buffer.concat([a, b, Buffer.from('!')]), 'random');
  });

  it('decodes pbzip2 (many streams) and lbzip2 (many blocks) output', async () => {
    const data = Buffer.concat([text(1_200_000, 10), Buffer.alloc(3_000_000), randomBytes(400_000, 11), Buffer.alloc(777, 1)]);
    const pbz = compress(data, 'pbzip2', ['-b1', '-p2', '-9']);
    expect(pbz.indexOf('BZh9', 4)).toBeGreaterThan(0); // more than one stream
    await expectRoundTrip(pbz, data, 'random');
    const lbz = compress(data, 'lbzip2', ['-n', '2', '-1']);
    expect((await blocksOf(lbz)).length).toBeGreaterThan(5);
    await expectRoundTrip(lbz, data);
  });

  it('ignores zero padding after the last stream', async () => {
    const data = text(10_000);
    await expectRoundTrip(Buffer.concat([compress(data), Buffer.alloc(1000)]), data);
  });

  it('stops reading its input when the consumer stops early', async () => {
    let closed = false;
    const bz = compress(Buffer.alloc(5_000_000, 7));
    async function* src(): AsyncGenerator<Buffer> {
      try {
        yield* chunks(bz, 10);
      } finally {
        closed = true;
      }
    }
    for await (const c of bunzip2Stream(src())) {
      expect(c.length).toBe(BZIP2_OUTPUT_CHUNK);
      break;
    }
    expect(closed).toBe(true);
  });

  describe('rejects', () => {
    const data = Buffer.concat([text(250_000, 12), randomBytes(40_000, 13)]);
    const bz = compress(data, 'bzip2', ['-1']);

    it('truncated input', async () => {
      for (const cut of [0, 2, 3, 4, 9, 20, 1000, bz.length >> 1, bz.length - 12, bz.length - 1]) {
        expect((await decodeError(bz.subarray(0, cut))).message, `cut at ${cut}`).toBe('bzip2 data is truncated');
      }
      const two = Buffer.concat([bz, bz]);
      expect((await decodeError(two.subarray(0, bz.length + 3))).message).toBe('bzip2 data is truncated');
    });

    it('a bad block CRC, a bad stream CRC and corrupted block data', async () => {
      const blocks = await blocksOf(bz);
      expect(blocks.length).toBe(3);
      expect((await decodeError(flipBit(bz, blocks[0]!.bit + 48 + 31))).message).toBe('bzip2 block CRC mismatch at block 1');
      expect((await decodeError(flipBit(bz, blocks[2]!.bit + 48 + 5))).message).toBe('bzip2 block CRC mismatch at block 3');
      expect((await decodeError(flipBit(bz, endOfStreamBit(bz) + 48 + 9))).message).toBe('bzip2 stream CRC mismatch in stream 1');
      for (const at of [blocks[1]!.bit + 20_000, bz.length * 4, bz.length * 8 - 2000]) {
        expect((await decodeError(flipBit(bz, at))).message).toMatch(/^bzip2 (data is corrupt|data is truncated|block CRC mismatch at block \d)/);
      }
      const byte = Buffer.from(bz);
      byte[byte.length >> 1]! ^= 0xff;
      expect((await decodeError(byte)).message).toMatch(/^bzip2 (data is corrupt|data is truncated|block CRC mismatch at block \d)/);
    });

    it('data that is not bzip2', async () => {
      for (const bad of [Buffer.from('hello world'), gzipSync(data), Buffer.from('BZh0xxxxxxxxxxxx'), Buffer.from('BZx9')]) {
        expect((await decodeError(bad)).message).toBe('not bzip2 data (bad magic)');
      }
      const badBlockMagic = Buffer.from(bz);
      badBlockMagic[5]! ^= 1;
      expect((await decodeError(badBlockMagic)).message).toBe('bzip2 data is corrupt: bad block magic');
    });

    it('garbage after the last stream', async () => {
      const small = compress(Buffer.from('abc'));
      expect((await decodeError(Buffer.concat([small, Buffer.from('garbage')]))).message).toBe('bzip2 data is followed by trailing garbage');
      expect((await decodeError(Buffer.concat([small, Buffer.from([0, 0, 1])]))).message).toBe('bzip2 data is followed by trailing garbage');
      expect((await decodeError(Buffer.concat([small, Buffer.from('BZh9garbagegarbage')]))).message).toBe('bzip2 data is corrupt: bad block magic');
    });
  });
});

/** The blocks indexBlocks finds in `buf` (written to a file, as the cache indexes releases). */
async function blocksOf(buf: Buffer): Promise<{ bit: number; crc: number }[]> {
  const dir = await mkdtemp(join(tmpdir(), 'oem-bz2-'));
  try {
    await writeFile(join(dir, 'x.bz2'), buf);
    const fh = await open(join(dir, 'x.bz2'), 'r');
    try {
      return (await indexBlocks(fh, buf.length)).map((b) => ({ bit: b.bit, crc: b.crc }));
    } finally {
      await fh.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('indexBlocks, with the decoder as the judge', () => {
  it('finds every block at its bit offset with the CRC the decoder checks', async () => {
    const data = randomBytes(350_000, 14);
    const bz = compress(data, 'bzip2', ['-1']);
    const blocks = await blocksOf(bz);
    expect(blocks.length).toBe(4); // 99981 bytes per block
    expect(blocks[0]!.bit).toBe(32);
    for (const b of blocks) {
      expect(bitsAt(bz, b.bit, 48)).toBe(0x314159265359);
      expect(b.crc).toBe(bitsAt(bz, b.bit + 48, 32));
    }
    // Offsets are not all byte aligned, and the block CRCs combine to the stream CRC.
    expect(blocks.some((b) => b.bit % 8 !== 0)).toBe(true);
    let combined = 0;
    for (const b of blocks) combined = (((combined << 1) | (combined >>> 31)) ^ b.crc) >>> 0;
    expect(combined).toBe(bitsAt(bz, endOfStreamBit(bz) + 48, 32));
    // Each stored CRC is the one checked when decoding.
    for (let i = 0; i < blocks.length; i++) {
      expect((await decodeError(flipBit(bz, blocks[i]!.bit + 48))).message).toBe(`bzip2 block CRC mismatch at block ${i + 1}`);
    }
  });

  it('finds the blocks of every stream of concatenated and pbzip2 files', async () => {
    const a = compress(text(300_000, 15), 'bzip2', ['-1']);
    const b = compress(randomBytes(100_000, 16), 'bzip2', ['-9']);
    const blocksA = await blocksOf(a);
    const blocksB = await blocksOf(b);
    const both = await blocksOf(Buffer.concat([a, b]));
    expect(both).toEqual([...blocksA, ...blocksB.map((x) => ({ ...x, bit: x.bit + a.length * 8 }))]);
    expect(blocksB).toEqual([{ bit: 32, crc: bitsAt(b, 80, 32) }]);

    const pbz = compress(Buffer.concat([text(500_000, 17), randomBytes(100_000, 18)]), 'pbzip2', ['-b1', '-p2', '-1']);
    const streamStarts: number[] = [];
    for (let i = pbz.indexOf('BZh1'); i >= 0; i = pbz.indexOf('BZh1', i + 1)) streamStarts.push(i);
    const found = (await blocksOf(pbz)).map((x) => x.bit);
    expect(found.length).toBeGreaterThanOrEqual(streamStarts.length);
    for (const s of streamStarts) expect(found).toContain((s + 4) * 8);
    const lbz = compress(randomBytes(600_000, 20), 'lbzip2', ['-n', '2', '-1']);
    expect((await blocksOf(lbz)).length).toBeGreaterThan(5);
  });

  it('finds nothing in data without blocks, and refuses a stream without blocks or cut short', async () => {
    expect(await blocksOf(Buffer.alloc(0))).toEqual([]);
    expect(await blocksOf(randomBytes(100_000, 19))).toEqual([]);
    await expect(blocksOf(compress(Buffer.alloc(0)))).rejects.toThrow(/empty stream/);
    const bz = compress(Buffer.from('abc'));
    await expect(blocksOf(bz.subarray(0, 4 + 6 + 4))).rejects.toThrow(/truncated/);
  });
});
