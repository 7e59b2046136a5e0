/**
 * GCE's sparse tar (src/artifacts/sparse-tar.ts) against GNU tar: for files whose data extents are
 * whole 64 KiB clusters, the archive must be the very bytes `tar --format=gnu --sparse` writes (map
 * entries in the header and in extension blocks, base-256 numbers past 8 GiB), and GNU tar must extract
 * it to the same file. A view with a region read from a working image archives that region's bytes.
 */
import { execa } from 'execa';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sparseTar } from '../src/artifacts/sparse-tar.js';
import { DiskView } from '../src/image/disk-view.js';
import { noise, noisyFile } from './helpers/small-disks.js';

const K = 64 * 1024;
const GiB = 1024 * 1024 * 1024;
const MTIME = 1_700_000_000;
let dir: string;
let n = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'oem-sparse-tar-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A sparse file of `size` bytes whose data is the given 64 KiB clusters, written whole (the last may be short). */
async function disk(size: number, clusters: number[]): Promise<string> {
  const sub = join(dir, `d-${++n}`);
  await mkdir(sub);
  const path = join(sub, 'disk.raw');
  await noisyFile(path, size, clusters.map((c) => [c * K, Math.min(K, size - c * K)]));
  return path;
}

async function ours(view: DiskView): Promise<Buffer> {
  const out = join(dir, `ours-${++n}.tar`);
  await pipeline(Readable.from(sparseTar(view, 'disk.raw', MTIME, { shareBase: false })), createWriteStream(out, { flags: 'wx' }));
  return readFile(out);
}

async function gnu(path: string): Promise<Buffer> {
  const r = await execa('tar', ['--format=gnu', '--owner=root:0', '--group=root:0', '--mode=0644', `--mtime=@${MTIME}`, '--sparse', '-C', join(path, '..'), '-cf', '-', 'disk.raw'], { encoding: 'buffer' });
  return Buffer.from(r.stdout);
}

describe('sparse tar as GNU tar writes it', () => {
  const odd = (count: number) => Array.from({ length: count }, (_, i) => 2 * i + 1);
  const shapes: [string, number, number[]][] = [
    ['one run, ending in a hole', 160 * K, [3]],
    ['ending with data', 4 * K, [3]],
    ['a last cluster that is short', 100 * K + 1000, [0, 100]],
    ['three runs (four entries: the header only)', 100 * K, odd(3)],
    ['four runs (an extension block)', 100 * K, odd(4)],
    ['24 runs (a full extension block)', 100 * K, odd(24)],
    ['25 runs (two extension blocks)', 100 * K, odd(25)],
    ['47 runs', 200 * K, odd(47)],
    ['adjacent clusters make one run', 100 * K, [2, 3, 4, 9, 10]],
    ['no data at all', 100 * K, []],
    ['past 8 GiB (base-256 numbers)', 10 * GiB, [5, (9 * GiB) / K, (9 * GiB) / K + 1, (10 * GiB) / K - 1]],
  ];
  for (const [name, size, clusters] of shapes) {
    it(`${name}: the same bytes, and GNU tar extracts the same file`, async () => {
      const path = await disk(size, clusters);
      const view = await DiskView.open(path);
      let tar: Buffer;
      try {
        tar = await ours(view);
      } finally {
        await view.close();
      }
      const theirs = await gnu(path);
      expect(tar.length).toBe(theirs.length);
      expect(tar.equals(theirs)).toBe(true);
      expect(tar.length % 10240).toBe(0);
      if (size > GiB) return; // extracting 10 GiB (sparse) proves nothing more than the bytes above
      const x = join(dir, `x-${++n}`);
      await mkdir(x);
      const file = join(dir, `t-${n}.tar`);
      await writeFile(file, tar);
      await execa('tar', ['-xSf', file, '-C', x]);
      expect((await readFile(join(x, 'disk.raw'))).equals(await readFile(path))).toBe(true);
    });
  }
});

describe('from a view of a built disk', () => {
  it('archives the region from the working image and the rest from the base; zeros written there are not data', async () => {
    const base = await disk(64 * K, [1, 2, 10, 11, 40]);
    // The working image: the build wrote clusters 10-19 (zeros at 10 and 12-19, data at 11).
    const work = join(dir, 'work.raw');
    await writeFile(work, '');
    await truncate(work, 64 * K);
    const fh = await open(work, 'r+');
    await fh.write(Buffer.alloc(K), 0, K, 10 * K);
    await fh.write(noise(K, 'written'), 0, K, 11 * K);
    await fh.close();
    const view = await DiskView.open(base, { path: work, regions: [{ offset: 10 * K, size: 10 * K }] });
    let tar: Buffer;
    try {
      tar = await ours(view);
    } finally {
      await view.close();
    }
    // The disk as built, assembled by hand, archived by GNU tar.
    const built = await disk(64 * K, [1, 2, 11, 40]);
    const b = await open(built, 'r+');
    const want = await readFile(base);
    for (const c of [1, 2, 40]) await b.write(want, c * K, K, c * K);
    await b.write(noise(K, 'written'), 0, K, 11 * K);
    await b.close();
    expect(tar.equals(await gnu(built))).toBe(true);
  });
});
