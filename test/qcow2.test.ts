/**
 * qcow2.ts (the project's qcow2 writer) over disk-view.ts (the base with a build's regions from its
 * working image): qemu-img, the independent reader, finds no errors or leaks and reads exactly the
 * disk; only clusters with data are stored; a disk of three L2 tables whose size is not a whole
 * number of clusters; the file up to the split is the same whatever a build wrote after it.
 */
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QCOW2_CLUSTER, qcow2Segments, writeSegments } from '../src/artifacts/qcow2.js';
import { DiskView, nonZeroClusters } from '../src/image/disk-view.js';

const MiB = 1024 * 1024;
// Three L2 tables (512 MiB each), and a last cluster of 4608 bytes.
const SIZE = 1100 * MiB + 4608;
const REGION = { offset: 600 * MiB, size: 200 * MiB };
let work: string;
let base: string;

async function put(path: string, at: number, b: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  await fh.write(b, 0, b.length, at);
  await fh.close();
}

/** A sparse file of SIZE bytes. */
async function sparse(path: string): Promise<string> {
  await writeFile(path, '');
  await truncate(path, SIZE);
  return path;
}

/** A working image as a build leaves it: only the region (and the rest holes), with `data` at `at` in it. */
async function overlay(name: string, writes: [number, Buffer][]): Promise<string> {
  const path = await sparse(join(work, name));
  for (const [at, b] of writes) await put(path, at, b);
  return path;
}

/** The disk the view reads: the base with the region from the overlay (by cp and dd, not disk-view.ts). */
async function flat(over: string, name: string): Promise<string> {
  const out = join(work, name);
  await copyFile(base, out);
  await execa('dd', [`if=${over}`, `of=${out}`, 'bs=1M', `skip=${REGION.offset / MiB}`, `seek=${REGION.offset / MiB}`, `count=${REGION.size / MiB}`, 'conv=notrunc', 'status=none']);
  return out;
}

async function qcow2Of(over: string | null, name: string): Promise<{ path: string; stored: number }> {
  const view = await DiskView.open(base, over ? { path: over, regions: [REGION] } : undefined);
  try {
    const map = await nonZeroClusters(view, QCOW2_CLUSTER);
    const path = join(work, name);
    await writeSegments(view, qcow2Segments(view.size, map, REGION.offset), path);
    return { path, stored: map.reduce((a, b) => a + b, 0) };
  } finally {
    await view.close();
  }
}

async function check(qcow2: string): Promise<{ allocated: number; end: number }> {
  const r = await execa('qemu-img', ['check', '--output', 'json', '-f', 'qcow2', qcow2], { reject: false });
  expect(r.exitCode, r.stdout + r.stderr).toBe(0);
  const j = JSON.parse(r.stdout) as { 'allocated-clusters': number; 'image-end-offset': number; leaks?: number; corruptions?: number };
  expect(j.leaks ?? 0).toBe(0);
  expect(j.corruptions ?? 0).toBe(0);
  return { allocated: j['allocated-clusters'], end: j['image-end-offset'] };
}

async function compare(raw: string, qcow2: string): Promise<void> {
  const r = await execa('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', raw, qcow2], { reject: false });
  expect(r.stdout).toContain('Images are identical');
  expect(r.exitCode).toBe(0);
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-qcow2-'));
  base = await sparse(join(work, 'base.bin'));
  // Data in the first group (a run of clusters, one of them all zeros but written: stored as nothing),
  // before the region in the second, inside the region (the base's, which the overlay replaces), and the last partial cluster.
  await put(base, 1 * MiB, randomBytes(3 * MiB));
  await put(base, 2 * MiB, Buffer.alloc(QCOW2_CLUSTER));
  await put(base, 590 * MiB + 12345, randomBytes(100_000));
  await put(base, 650 * MiB, randomBytes(2 * MiB));
  await put(base, SIZE - 100, randomBytes(100));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('qcow2 written by the project', () => {
  it('of a whole disk: no errors or leaks, exactly the disk, only the clusters with data stored', async () => {
    const q = await qcow2Of(null, 'whole.qcow2');
    const { allocated } = await check(q.path);
    // 3 MiB less the zero cluster, 100 000 bytes over 2 clusters, 2 MiB, the last cluster.
    expect(q.stored).toBe(48 - 1 + 2 + 32 + 1);
    expect(allocated).toBe(q.stored);
    await compare(base, q.path);
    const info = JSON.parse((await execa('qemu-img', ['info', '--output', 'json', q.path])).stdout) as { 'virtual-size': number; 'format-specific': { data: { compat: string } } };
    expect(info['virtual-size']).toBe(SIZE);
    expect(info['format-specific'].data.compat).toBe('1.1');
  });

  it('of the base with a build\'s region: the region from the working image, its holes as zeros, the base elsewhere', async () => {
    // The build wrote 1 MiB at the region's start and left the rest a hole: the base's 2 MiB there is gone.
    const over = await overlay('build-a.bin', [[REGION.offset, randomBytes(MiB)]]);
    const q = await qcow2Of(over, 'a.qcow2');
    const disk = await flat(over, 'a.bin');
    expect(q.stored).toBe(48 - 1 + 2 + 16 + 1);
    expect((await check(q.path)).allocated).toBe(q.stored);
    await compare(disk, q.path);
  });

  it('the file up to the split is the same for every build; it differs only after', async () => {
    const a = await qcow2Of(await overlay('build-b.bin', [[REGION.offset + 5 * MiB, randomBytes(3 * MiB)]]), 'b.qcow2');
    const b = await qcow2Of(await overlay('build-c.bin', [[REGION.offset + 70 * MiB, randomBytes(7 * MiB + 1)]]), 'c.qcow2');
    await check(a.path);
    await check(b.path);
    const [x, y] = [await readFile(a.path), await readFile(b.path)];
    // The header, the L1 and refcount tables, the first group's L2 table and the clusters before the region.
    const head = QCOW2_CLUSTER * 4 + (48 - 1 + 2) * QCOW2_CLUSTER;
    expect(x.subarray(0, head).equals(y.subarray(0, head))).toBe(true);
    expect(x.subarray(head).equals(y.subarray(head))).toBe(false);
  });
});
