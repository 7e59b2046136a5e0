/**
 * qcow2 (version 3, 64 KiB clusters, 16-bit refcounts, no compression) written by the project, as a
 * list of segments (bzip2-reuse.ts): the file's own tables as bytes, and the disk's clusters as ranges
 * of the disk. A build's `.qcow2.bz2` is then made from the release's bzip2 blocks like the raw
 * image's, without a whole copy of the disk and without writing the qcow2 first; an uncompressed
 * qcow2 is written from the same segments (`writeSegments`). qemu-img reads it (the tests check
 * every one with `qemu-img check` and `qemu-img compare`).
 *
 * A cluster is stored when any of its bytes is not zero (as `qemu-img convert` does); the rest are
 * unallocated and read as zeros. Every table has a fixed place, so that the file up to the first
 * cluster a build may change is the same for every build of a release (bzip2-reuse.ts then makes
 * that part of the output once per run):
 *
 *   header | L1 table | refcount table | L2 tables of the groups wholly before `split` |
 *   the stored clusters before `split` | refcount blocks | the other L2 tables | the other stored clusters
 *
 * Every L2 table (one per 512 MiB of the disk) is there even when its clusters are all unallocated,
 * and there are as many refcount blocks as the largest file of this disk could need: their places
 * do not depend on what a build wrote. `split` is where the first region a build writes starts.
 */
import { open, rm } from 'node:fs/promises';
import { pieceBuffers } from '../buffer-pool.js';
import { OemError } from '../shared/errors.js';
import type { DiskView } from '../image/disk-view.js';
import { SPARSE_FLUSH, SparseWriter } from '../image/sparse.js';
import type { Segment } from './bzip2-reuse.js';

export const QCOW2_CLUSTER = 64 * 1024;
const PER_L2 = QCOW2_CLUSTER / 8;
const PER_REFBLOCK = QCOW2_CLUSTER / 2;
const COPIED = 1n << 63n;
/** Disks of at most this many L2 tables (each 512 MiB of the disk, 256 GiB in all) are written here; larger ones by qemu-img. */
const QCOW2_MAX_GROUPS = 512;

/** Whether a disk of `size` bytes is written here (qcow2Segments), not by qemu-img. */
export function qcow2Fits(size: number): boolean {
  return Math.ceil(size / QCOW2_CLUSTER / PER_L2) <= QCOW2_MAX_GROUPS;
}

/** The qcow2 of a disk of `size` bytes whose clusters `stored` (1: holds data) are stored, as segments. */
export function qcow2Segments(size: number, stored: Uint8Array, split: number): Segment[] {
  const C = QCOW2_CLUSTER;
  const n = Math.ceil(size / C);
  if (stored.length !== n) throw new OemError(`a cluster map of ${stored.length} clusters for a disk of ${n}`);
  const groups = Math.ceil(n / PER_L2);
  if (!qcow2Fits(size)) throw new OemError(`a qcow2 of ${groups} L2 tables is not written here`);
  const splitCluster = Math.max(0, Math.min(n, Math.floor(split / C)));
  const headGroups = Math.floor(splitCluster / PER_L2);
  const l1Clusters = Math.max(1, Math.ceil((groups * 8) / C));
  // As many refcount blocks as the largest file could need (every cluster stored), and their table.
  let rb = 1;
  let rt = 1;
  for (;;) {
    const most = 1 + l1Clusters + rt + rb + groups + n;
    const [rb2, rt2] = [Math.ceil(most / PER_REFBLOCK), Math.ceil((Math.ceil(most / PER_REFBLOCK) * 8) / C)];
    if (rb2 === rb && rt2 === rt) break;
    [rb, rt] = [rb2, rt2];
  }
  const l1At = 1;
  const rtAt = l1At + l1Clusters;
  const headL2At = rtAt + rt;
  let headStored = 0;
  for (let i = 0; i < splitCluster; i++) headStored += stored[i]!;
  const headDataAt = headL2At + headGroups;
  const rbAt = headDataAt + headStored;
  const tailL2At = rbAt + rb;
  const tailDataAt = tailL2At + (groups - headGroups);
  const l2At = (g: number) => (g < headGroups ? headL2At + g : tailL2At + g - headGroups);

  // Where each stored cluster goes, and the L2 tables.
  const l2 = Buffer.alloc(groups * C);
  const runs: { head: boolean; from: number; to: number }[] = [];
  let next = headDataAt;
  for (let i = 0; i < n; i++) {
    if (i === splitCluster) next = tailDataAt;
    if (!stored[i]) continue;
    l2.writeBigUInt64BE(BigInt(next * C) | COPIED, i * 8);
    const last = runs[runs.length - 1];
    const head = i < splitCluster;
    if (last && last.to === i && last.head === head) last.to = i + 1;
    else runs.push({ head, from: i, to: i + 1 });
    next++;
  }
  const total = Math.max(next, tailDataAt);
  if (total > rb * PER_REFBLOCK) throw new OemError('the qcow2 needs more refcount blocks than were reserved');

  const header = Buffer.alloc(C);
  header.writeUInt32BE(0x514649fb, 0);
  header.writeUInt32BE(3, 4);
  header.writeUInt32BE(16, 20); // cluster bits
  header.writeBigUInt64BE(BigInt(size), 24);
  header.writeUInt32BE(groups, 36); // L1 entries
  header.writeBigUInt64BE(BigInt(l1At * C), 40);
  header.writeBigUInt64BE(BigInt(rtAt * C), 48);
  header.writeUInt32BE(rt, 56);
  header.writeUInt32BE(4, 96); // refcount order: 16 bits
  header.writeUInt32BE(112, 100); // header length (with the compression type, zlib, and its padding)
  // No header extensions: the end-of-extensions marker (8 zero bytes) at 112 is already zeros.
  const l1 = Buffer.alloc(l1Clusters * C);
  for (let g = 0; g < groups; g++) l1.writeBigUInt64BE(BigInt(l2At(g) * C) | COPIED, g * 8);
  const refTable = Buffer.alloc(rt * C);
  for (let b = 0; b < rb; b++) refTable.writeBigUInt64BE(BigInt((rbAt + b) * C), b * 8);
  const refBlocks = Buffer.alloc(rb * C);
  for (let i = 0; i < total; i++) refBlocks.writeUInt16BE(1, i * 2);

  const segments: Segment[] = [{ bytes: Buffer.concat([header, l1, refTable, l2.subarray(0, headGroups * C)]) }];
  const data = (head: boolean) => {
    for (const r of runs) {
      if (r.head !== head) continue;
      const end = r.to * C;
      segments.push({ image: [r.from * C, Math.min(end, size)] });
      if (end > size) segments.push({ bytes: Buffer.alloc(end - size) });
    }
  };
  data(true);
  segments.push({ bytes: Buffer.concat([refBlocks, l2.subarray(headGroups * C)]) });
  data(false);
  return merged(segments);
}

/** Adjacent image ranges joined, empty parts left out. */
function merged(segments: Segment[]): Segment[] {
  const out: Segment[] = [];
  for (const s of segments) {
    const last = out[out.length - 1];
    if ('image' in s) {
      if (s.image[1] <= s.image[0]) continue;
      if (last && 'image' in last && last.image[1] === s.image[0]) last.image = [last.image[0], s.image[1]];
      else out.push({ image: [s.image[0], s.image[1]] });
    } else if (s.bytes.length) out.push(s);
  }
  return out;
}

const COPY = 4 * 1024 * 1024;

/**
 * Writes `segments` (the disk's ranges read from `view`) to a new file `out`, leaving all-zero
 * blocks as holes (sparse.ts's SparseWriter). `out` is removed on failure.
 */
export async function writeSegments(view: DiskView, segments: Segment[], out: string, opts: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {}): Promise<number> {
  const { signal, onProgress } = opts;
  const total = segments.reduce((n, s) => n + ('bytes' in s ? s.bytes.length : s.image[1] - s.image[0]), 0);
  const fh = await open(out, 'wx');
  let ok = false;
  try {
    const w = new SparseWriter(fh, 0);
    for (const s of segments) {
      if (signal?.aborted) throw new OemError('interrupted while writing the image', { code: 'interrupted' });
      if ('bytes' in s) {
        await w.write(s.bytes);
        onProgress?.(w.position, total);
        continue;
      }
      for (let a = s.image[0]; a < s.image[1]; a += COPY) {
        const n = Math.min(COPY, s.image[1] - a);
        if (view.hole(a, a + n)) await w.writeZeros(n);
        else {
          const b = await view.readInto(pieceBuffers.take(n), a);
          await w.write(b);
          // The writer may hold a shorter chunk until its next flush: that one is not used again.
          if (n >= SPARSE_FLUSH) pieceBuffers.give(b);
        }
        onProgress?.(w.position, total);
      }
    }
    await w.end();
    await fh.truncate(w.position);
    ok = true;
    return w.position;
  } finally {
    await fh.close();
    if (!ok) await rm(out, { force: true });
  }
}
