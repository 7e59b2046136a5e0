/**
 * compressPieced: the concatenated pieces decode with the stock tools to exactly the input (and the
 * trailer), the same bytes come from a cold and a warm cache, only changed pieces are compressed
 * again, pieces are cut by content (the same data shifted in the file finds its pieces), holes are not
 * read, and failures leave no output.
 */
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pieceSlots } from '../src/concurrency.js';
import { compressPieced, gzipPiecedToFile, MAX_PIECE, MIN_PIECE, pieceEnd, PIECE, type PiecedKind } from '../src/artifacts/pieced.js';

let work: string;
/**
 * 5 MiB of incompressible data (cut by content: the same on every run), text, a hole of several MiB,
 * and a few bytes at the end.
 */
let input: string;
const SIZE = 4 * PIECE + 12345;
const DATA = 5 * 1024 * 1024;

/** Bytes that look random and are the same on every run (SHA-256 in counter mode). */
function pseudoRandom(n: number, seed: string): Buffer {
  const out = Buffer.alloc(n);
  for (let at = 0, i = 0; at < n; at += 32, i++) createHash('sha256').update(`${seed} ${i}`).digest().copy(out, at);
  return out;
}

const DECODERS: Record<PiecedKind, string[]> = {
  bz2: ['bzip2 -dc', 'lbzip2 -dc', 'pbzip2 -dc'],
  gz: ['gzip -dc'],
  xz: ['xz -dc'],
  zst: ['zstd -dcq'],
};

async function decodesTo(cmd: string, file: string, expected: string): Promise<void> {
  const r = await execa('bash', ['-o', 'pipefail', '-c', `${cmd} < "$1" | cmp - "$2"`, 'bash', file, expected], { reject: false });
  expect(r.exitCode, `${cmd}: ${r.stderr}${r.stdout}`).toBe(0);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const sha512 = async (p: string) => createHash('sha512').update(await readFile(p)).digest('hex');

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-pieced-test-'));
  input = join(work, 'input.bin');
  const fh = await open(input, 'wx');
  try {
    await fh.truncate(SIZE);
    await fh.write(pseudoRandom(DATA, 'b'), 0, DATA, 0);
    await fh.write(Buffer.from('flatcar oem piece\n'.repeat(4000)), 0, 72000, DATA + 200_000);
    await fh.write(pseudoRandom(100, 'end'), 0, 100, SIZE - 100);
  } finally {
    await fh.close();
  }
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Where the input's pieces end, found the way pieceEnd says, reading the whole input. */
let cuts: number[] = [];
beforeAll(async () => {
  let data = await readFile(input);
  let at = 0;
  cuts = [];
  while (data.length) {
    const end = pieceEnd(data, true);
    cuts.push((at += end));
    data = data.subarray(end);
  }
});

describe('pieceEnd', () => {
  it('cuts data by its content, between MIN_PIECE and MAX_PIECE; zeros never cut', () => {
    // The input's incompressible data is cut by its content, not at MAX_PIECE.
    expect(cuts[0]).toBeGreaterThanOrEqual(MIN_PIECE);
    expect(cuts[0]).toBeLessThan(MAX_PIECE);
    expect(cuts[cuts.length - 1]).toBe(SIZE);
    for (let i = 1; i < cuts.length; i++) expect(cuts[i]! - cuts[i - 1]!).toBeLessThanOrEqual(MAX_PIECE);
    expect(pieceEnd(Buffer.alloc(MAX_PIECE + 5), false)).toBe(MAX_PIECE);
    expect(pieceEnd(Buffer.alloc(MIN_PIECE + 5), false)).toBe(-1);
    expect(pieceEnd(Buffer.alloc(MIN_PIECE + 5), true)).toBe(MIN_PIECE + 5);
    // The same bytes after a prefix of another length are cut at the same places.
    const data = pseudoRandom(3 * MAX_PIECE, 'shift-2');
    const at = (b: Buffer) => {
      const out: number[] = [];
      for (let x = 0; x < b.length; ) out.push((x += pieceEnd(b.subarray(x), true)));
      return out;
    };
    const plain = at(data);
    const shifted = at(Buffer.concat([Buffer.alloc(777, 1), data])).map((x) => x - 777);
    expect(plain.length).toBeGreaterThan(3);
    // Every cut but the last is by content (a cut forced at MAX_PIECE does not find its place again).
    for (let i = 0; i < plain.length - 1; i++) expect(plain[i]! - (plain[i - 1] ?? 0)).toBeLessThan(MAX_PIECE);
    // (A cut could fall into the first 777 bytes' reach, about one time in 1,300; not with these bytes.)
    expect(shifted).toEqual(plain);
  });
});

describe('compressPieced', () => {
  for (const kind of ['bz2', 'gz', 'xz', 'zst'] as const) {
    it(`${kind}: decodes with ${DECODERS[kind].map((d) => d.split(' ')[0]).join(', ')} to the input; the same bytes warm and cold`, async () => {
      const cache = join(work, `cache-${kind}`);
      const a = join(work, `a.${kind}`);
      const first = await compressPieced(input, a, kind, { cacheDir: cache });
      expect(first.pieces).toBe(cuts.length);
      expect(first.compressed).toBeGreaterThan(DATA);
      expect(first.compressed).toBeLessThanOrEqual(SIZE);
      expect(first.sha512).toBe(await sha512(a));
      for (const d of DECODERS[kind]) await decodesTo(d, a, input);
      // Warm: nothing compressed, the same bytes.
      const b = join(work, `b.${kind}`);
      const second = await compressPieced(input, b, kind, { cacheDir: cache });
      expect(second).toMatchObject({ cached: cuts.length, compressed: 0, sha512: first.sha512, size: first.size });
      // Another cache, cold: the same bytes again.
      const c = join(work, `c.${kind}`);
      expect((await compressPieced(input, c, kind, { cacheDir: join(work, `other-${kind}`) })).sha512).toBe(first.sha512);
      for (const f of [a, b, c]) await rm(f);
    });
  }

  it('compresses again only the pieces that changed, and appends a trailer as one more stream', async () => {
    const cache = join(work, 'cache-change');
    await compressPieced(input, join(work, 'before.bz2'), 'bz2', { cacheDir: cache });
    const changed = join(work, 'changed.bin');
    await execa('cp', ['--sparse=always', input, changed]);
    const fh = await open(changed, 'r+');
    await fh.write(Buffer.from('changed'), 0, 7, PIECE + 5);
    await fh.close();
    const trailer = Buffer.concat([Buffer.alloc(1000), Buffer.from('conectix-like footer')]);
    const out = join(work, 'changed.bz2');
    const r = await compressPieced(changed, out, 'bz2', { cacheDir: cache, trailer });
    expect(r.pieces).toBe(cuts.length + 1);
    // The piece with the change, and the trailer.
    const k = cuts.findIndex((c) => c > PIECE + 5);
    expect(r.compressed).toBe(cuts[k]! - (k ? cuts[k - 1]! : 0) + trailer.length);
    expect(r.cached).toBe(cuts.length - 1);
    const whole = join(work, 'whole.bin');
    await execa('sh', ['-c', `cat "$1" > "$3" && printf '%s' "$2" | base64 -d >> "$3"`, 'sh', changed, trailer.toString('base64'), whole]);
    await decodesTo('bzip2 -dc', out, whole);
    await decodesTo('lbzip2 -dc', out, whole);
  });

  it('gzipPiecedToFile: a stream (an archive) in pieces that gzip reads as the stream; the same bytes warm, and from a source that fills one buffer again', async () => {
    const cache = join(work, 'cache-stream');
    const data = await readFile(input);
    // Chunks of odd sizes, as a pipe delivers them; with `refill`, each in the same buffer, filled
    // again for the next (as sparse-tar.ts's reading of the disk).
    const run = (out: string, chunk = 65_537, refill = false, cacheDir = cache) => {
      const buf = Buffer.alloc(chunk);
      const chunks = async function* () {
        for (let at = 0; at < data.length; at += chunk) {
          if (!refill) yield data.subarray(at, at + chunk);
          else yield buf.subarray(0, data.copy(buf, 0, at, at + chunk));
        }
      };
      return gzipPiecedToFile(chunks(), out, { cacheDir, level: 6 });
    };
    const a = join(work, 'stream-a.gz');
    const first = await run(a);
    expect(first.compressed).toBeLessThanOrEqual(SIZE);
    await decodesTo('gzip -dc', a, input);
    expect((await execa('gzip', ['-t', a], { reject: false })).exitCode).toBe(0);
    const b = join(work, 'stream-b.gz');
    const second = await run(b);
    expect(second.compressed).toBe(0);
    expect(second.cached).toBe(cuts.length);
    expect(await sha512(b)).toBe(await sha512(a));
    // The whole input in one chunk, larger than the stream's window: cut at the same places.
    const c = join(work, 'stream-c.gz');
    expect(SIZE).toBeGreaterThan(MAX_PIECE + MIN_PIECE);
    await run(c, SIZE);
    expect(await sha512(c)).toBe(await sha512(a));
    // One buffer filled again: cold (pieces compressed while the source goes on) and warm.
    for (const name of ['refilled-cold.gz', 'refilled-warm.gz']) {
      const out = join(work, name);
      await run(out, 100_003, true, join(work, 'cache-refill'));
      expect(await sha512(out)).toBe(await sha512(a));
    }
  });

  it('gzipPiecedToFile: the pieces of the stream\'s end are the right ones when they wait for a slot', async () => {
    // Every slot of the process busy while the stream ends: its last pieces wait (a build of another
    // provider compressing at the same time). Less than MAX_PIECE, cut by content: all at the end.
    const data = pseudoRandom(MAX_PIECE - 12345, 'b');
    expect(pieceEnd(data, true)).toBeLessThan(data.length);
    const busy = Array.from({ length: availableParallelism() + 1 }, () => pieceSlots.use(() => sleep(300)));
    const out = join(work, 'busy.gz');
    const r = await gzipPiecedToFile(
      (async function* () {
        yield data;
      })(),
      out,
      { cacheDir: join(work, 'cache-busy'), level: 1 },
    );
    await Promise.all(busy);
    expect(r.compressed).toBe(data.length);
    const back = join(work, 'busy.bin');
    await writeFile(back, data);
    await decodesTo('gzip -dc', out, back);
  });

  it('gzipPiecedToFile refuses an existing output and stops when interrupted', async () => {
    const out = join(work, 'exists-stream.gz');
    await writeFile(out, 'mine');
    const one = async function* () {
      yield pseudoRandom(1000, 'c');
    };
    await expect(gzipPiecedToFile(one(), out, { cacheDir: join(work, 'c-exists'), level: 6 })).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await readFile(out, 'utf8')).toBe('mine');
    const aborted = join(work, 'interrupted-stream.gz');
    await expect(gzipPiecedToFile(one(), aborted, { cacheDir: join(work, 'c-abort'), level: 6, signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'interrupted' });
  });

  it('the same data behind a longer header (another container\'s tables) is compressed again only up to its first cut', async () => {
    const cache = join(work, 'cache-shift');
    const first = await compressPieced(input, join(work, 'unshifted.gz'), 'gz', { cacheDir: cache });
    const shifted = join(work, 'shifted.bin');
    await writeFile(shifted, Buffer.concat([Buffer.from('a header of another length\n'.repeat(40)), await readFile(input)]));
    const out = join(work, 'shifted.gz');
    const r = await compressPieced(shifted, out, 'gz', { cacheDir: cache });
    expect(r.cached).toBe(first.pieces - 1);
    expect(r.compressed).toBe(cuts[0]! + 40 * 27);
    await decodesTo('gzip -dc', out, shifted);
  });

  it('refuses an existing output, and removes the partial output when interrupted', async () => {
    const out = join(work, 'exists.gz');
    await writeFile(out, 'mine');
    await expect(compressPieced(input, out, 'gz', { cacheDir: join(work, 'c1') })).rejects.toThrow(/cannot create .*exists\.gz.*EEXIST|already exists/);
    expect(await readFile(out, 'utf8')).toBe('mine');
    const aborted = join(work, 'aborted.xz');
    await expect(compressPieced(input, aborted, 'xz', { cacheDir: join(work, 'c2'), signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'interrupted' });
    expect(existsSync(aborted)).toBe(false);
    expect((await readdir(work)).filter((f) => f.startsWith('aborted'))).toEqual([]);
  });
});
