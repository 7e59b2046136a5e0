/**
 * The Parallels expanding disk written by the project (src/artifacts/parallels.ts): for the same disk,
 * the very bytes `qemu-img convert -O parallels` writes (header, BAT, clusters in disk order, a short
 * last cluster stored whole), and qemu-img as the reader: `qemu-img check` and `qemu-img compare`.
 * A view with a region from a working image stores the region's clusters as the build wrote them.
 */
import { execa } from 'execa';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PARALLELS_CLUSTER, parallelsFits, parallelsSegments } from '../src/artifacts/parallels.js';
import { writeSegments } from '../src/artifacts/qcow2.js';
import { DiskView } from '../src/image/disk-view.js';
import { noisyFile } from './helpers/small-disks.js';

const MiB = 1024 * 1024;
let dir: string;
let n = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'oem-parallels-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A sparse disk of `size` bytes with `bytes` of noise at each offset. */
async function disk(size: number, data: [offset: number, bytes: number][]): Promise<string> {
  const path = join(dir, `disk-${++n}.raw`);
  await noisyFile(path, size, data);
  return path;
}

/** The clusters of `path` that hold a byte that is not zero, read here. */
async function storedOf(path: string, size: number): Promise<Uint8Array> {
  const bytes = await readFile(path);
  const stored = new Uint8Array(Math.ceil(Math.ceil(size / 512) / 2048));
  for (let c = 0; c < stored.length; c++) stored[c] = bytes.subarray(c * PARALLELS_CLUSTER, (c + 1) * PARALLELS_CLUSTER).some((b) => b !== 0) ? 1 : 0;
  return stored;
}

async function ours(view: DiskView, stored: Uint8Array): Promise<string> {
  const out = join(dir, `ours-${++n}.hds`);
  await writeSegments(view, parallelsSegments(view.size, stored), out);
  return out;
}

describe('the Parallels disk as qemu-img writes it', () => {
  const shapes: [string, number, [number, number][]][] = [
    ['a few clusters, some with a few bytes', 40 * MiB, [[3 * MiB + 5, 100], [20 * MiB, 3_000_000]]],
    ['a size that is not whole sectors, data in its short last cluster', 40 * MiB + 1000, [[40 * MiB + 900, 10], [0, 512]]],
    ['a size of whole sectors, not whole clusters', 40 * MiB + 4096, [[40 * MiB + 4000, 96]]],
    ['no data at all', 8 * MiB, []],
  ];
  for (const [name, size, data] of shapes) {
    it(`${name}: the same bytes; qemu-img check and compare agree`, async () => {
      const raw = await disk(size, data);
      const view = await DiskView.open(raw);
      let out: string;
      try {
        out = await ours(view, await storedOf(raw, size));
      } finally {
        await view.close();
      }
      const theirs = join(dir, `qemu-${++n}.hds`);
      await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'parallels', raw, theirs]);
      expect((await readFile(out)).equals(await readFile(theirs))).toBe(true);
      const check = await execa('qemu-img', ['check', '-f', 'parallels', out], { reject: false });
      expect(check.exitCode, check.stdout + check.stderr).toBe(0);
      const cmp = await execa('qemu-img', ['compare', '-f', 'raw', '-F', 'parallels', raw, out], { reject: false });
      expect(cmp.exitCode, cmp.stdout + cmp.stderr).toBe(0);
    });
  }

  it('from a view: the region read from the working image, the rest from the base', async () => {
    const base = await disk(16 * MiB, [[1 * MiB, 4096], [5 * MiB, 100], [9 * MiB, MiB]]);
    // The build wrote 4-8 MiB: zeros over the base's data at 5 MiB, data at 6 MiB.
    const work = await disk(16 * MiB, [[6 * MiB + 10, 300]]);
    const view = await DiskView.open(base, { path: work, regions: [{ offset: 4 * MiB, size: 4 * MiB }] });
    const built = join(dir, 'built.raw');
    await execa('cp', ['--sparse=always', base, built]);
    await execa('dd', [`if=${work}`, `of=${built}`, 'bs=1M', 'skip=4', 'seek=4', 'count=4', 'conv=notrunc', 'status=none']);
    let out: string;
    try {
      out = await ours(view, await storedOf(built, 16 * MiB));
    } finally {
      await view.close();
    }
    const cmp = await execa('qemu-img', ['compare', '-f', 'raw', '-F', 'parallels', built, out], { reject: false });
    expect(cmp.exitCode, cmp.stdout + cmp.stderr).toBe(0);
    const theirs = join(dir, `qemu-${++n}.hds`);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'parallels', built, theirs]);
    expect((await readFile(out)).equals(await readFile(theirs))).toBe(true);
  });

  it('disks whose BAT does not fit in the first cluster are left to qemu-img', () => {
    expect(parallelsFits(256 * 1024 * MiB - 64 * MiB)).toBe(true);
    expect(parallelsFits(256 * 1024 * MiB)).toBe(false);
    expect(() => parallelsSegments(300 * 1024 * MiB, new Uint8Array(300 * 1024))).toThrow(/qemu-img/);
  });
});
