/**
 * sparse.ts copyRanges (how a working image is made from the cached base): only the source's data in
 * the ranges is copied, at the same offsets, all-zero blocks left as holes; by dd in one shell, and
 * in this process, with the same bytes; a full disk is ENOSPC.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyRanges } from '../src/image/sparse.js';
import { useSmallTmpfs } from './helpers/full-fs.js';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
let work: string;
let src: string;
let srcBytes: Buffer;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-sparse-'));
  src = join(work, 'src.img');
  // Data at 1 MiB (3 MiB, with 1 MiB of zeros in its middle: a data extent that is partly zeros),
  // at 20 MiB (odd length) and at the last 4 KiB; holes elsewhere.
  await writeFile(src, '');
  await truncate(src, SIZE);
  const fh = await open(src, 'r+');
  const put = async (at: number, b: Buffer) => fh.write(b, 0, b.length, at);
  await put(1 * MiB, randomBytes(MiB));
  await put(2 * MiB, Buffer.alloc(MiB));
  await put(3 * MiB, randomBytes(MiB));
  await put(20 * MiB + 123, randomBytes(777_777));
  await put(SIZE - 4096, randomBytes(4096));
  await fh.close();
  srcBytes = await readFile(src);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** The expected destination: the source's bytes in the ranges, zeros elsewhere. */
function expected(ranges: [number, number][]): Buffer {
  const b = Buffer.alloc(SIZE);
  for (const [a, z] of ranges) srcBytes.copy(b, a, a, z);
  return b;
}

async function freshDest(name: string): Promise<string> {
  const p = join(work, name);
  await writeFile(p, '');
  await truncate(p, SIZE);
  return p;
}

describe('copyRanges', () => {
  // Ranges that cut data extents, a range that is all hole, and one up to the end.
  const ranges: [number, number][] = [
    [0, 4096],
    [MiB + 5000, 3 * MiB + 100],
    [10 * MiB, 12 * MiB],
    [20 * MiB, 21 * MiB],
    [SIZE - 8192, SIZE],
  ];

  for (const inProcess of [false, true]) {
    it(`${inProcess ? 'in this process' : 'by dd'}: the ranges' data at the same offsets, zeros elsewhere, zero blocks left as holes`, async () => {
      const dst = await freshDest(`dst-${inProcess}`);
      await copyRanges(src, dst, ranges, { inProcess });
      const got = await readFile(dst);
      expect(got.length).toBe(SIZE);
      expect(got.equals(expected(ranges))).toBe(true);
      // Allocated: the random data in the ranges (about 1.75 MiB), not the MiB of zeros in the first
      // extent (2.75 MiB and more if it were written).
      const blocks = (await stat(dst)).blocks * 512;
      expect(blocks).toBeGreaterThan(1.7 * MiB);
      expect(blocks).toBeLessThan(2.5 * MiB);
    });
  }

  it('by dd and in this process: the same file', async () => {
    const all: [number, number][] = [[0, SIZE]];
    const [a, b] = [await freshDest('all-dd'), await freshDest('all-here')];
    await copyRanges(src, a, all);
    await copyRanges(src, b, all, { inProcess: true });
    expect((await readFile(a)).equals(srcBytes)).toBe(true);
    expect((await readFile(b)).equals(srcBytes)).toBe(true);
  });

  it('a source path with spaces and quotes is copied (the paths are arguments, not script text)', async () => {
    const dir = join(work, `a "dir" with 'quotes' and $HOME`);
    await mkdir(dir);
    const odd = join(dir, 'src img');
    await writeFile(odd, srcBytes);
    const dst = await freshDest('dst-odd');
    await copyRanges(odd, dst, [[MiB, 4 * MiB]]);
    expect((await readFile(dst)).equals(expected([[MiB, 4 * MiB]]))).toBe(true);
  });

  describe.runIf(process.getuid?.() === 0)('a full file system [root: mounts a 1 MiB tmpfs]', () => {
    const small = useSmallTmpfs(() => work);

    for (const inProcess of [false, true]) {
      it(`${inProcess ? 'in this process' : 'by dd'}: ENOSPC`, async (ctx) => {
        const mnt = small();
        if (!mnt) return ctx.skip(); // mount not permitted here (e.g. an unprivileged container)
        const dst = join(mnt, `dst-${inProcess}`);
        await writeFile(dst, '');
        await truncate(dst, SIZE);
        await expect(copyRanges(src, dst, [[0, SIZE]], { inProcess })).rejects.toMatchObject({ code: 'ENOSPC' });
        await rm(dst);
      });
    }
  });
});
