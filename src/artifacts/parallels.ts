/**
 * The Parallels expanding disk (the `.hds` data file of a `.pvm` bundle's hard disk), written here
 * from a view of the disk (disk-view.ts) in the layout `qemu-img convert -O parallels` writes, so that
 * the bundle needs no whole copy of the disk:
 *
 *   header (64 bytes: "WithouFreSpacExt", version 2, 16 heads, cylinders, 1 MiB clusters, the BAT's
 *   entries, the disk's sectors, closed, where the data begins) | BAT (one 32-bit entry per cluster of
 *   the disk: the file cluster that holds it, 0 for none) | zeros to the next cluster |
 *   every cluster of the disk that holds a byte that is not zero, whole, in disk order
 *
 * For the same disk the file is byte for byte qemu-img's (test/parallels.test.ts compares them), and
 * qemu-img checks and reads it. Disks whose BAT does not fit in the first cluster (over 256 GiB) are
 * converted by qemu-img.
 */
import type { Segment } from './bzip2-reuse.js';

export const PARALLELS_CLUSTER = 1024 * 1024;
const SECTOR = 512;
const HEADER = 64;
const CLUSTER_SECTORS = PARALLELS_CLUSTER / SECTOR;

function batEntries(size: number): number {
  return Math.ceil(Math.ceil(size / SECTOR) / CLUSTER_SECTORS);
}

/** Whether a disk of `size` bytes is written here (its header and BAT fit in the first cluster), not by qemu-img. */
export function parallelsFits(size: number): boolean {
  return HEADER + 4 * batEntries(size) <= PARALLELS_CLUSTER;
}

/** The Parallels image of a disk of `size` bytes whose 1 MiB clusters `stored` (1: holds data) are stored, as segments. */
export function parallelsSegments(size: number, stored: Uint8Array): Segment[] {
  if (!parallelsFits(size)) throw new Error(`a Parallels image of ${size} bytes is written by qemu-img`);
  const sectors = Math.ceil(size / SECTOR);
  const entries = batEntries(size);
  if (stored.length !== entries) throw new Error(`${stored.length} clusters given for a disk of ${entries}`);
  const head = Buffer.alloc(PARALLELS_CLUSTER);
  head.write('WithouFreSpacExt', 0, 'latin1');
  head.writeUInt32LE(2, 16);
  head.writeUInt32LE(16, 20);
  head.writeUInt32LE(Math.floor(sectors / 16 / 32), 24);
  head.writeUInt32LE(CLUSTER_SECTORS, 28);
  head.writeUInt32LE(entries, 32);
  head.writeBigUInt64LE(BigInt(sectors), 36);
  head.writeUInt32LE(CLUSTER_SECTORS, 48);
  const segments: Segment[] = [{ bytes: head }];
  let next = 1;
  for (let c = 0; c < entries; c++) {
    if (!stored[c]) continue;
    head.writeUInt32LE(next++, HEADER + 4 * c);
    const [a, b] = [c * PARALLELS_CLUSTER, Math.min(size, (c + 1) * PARALLELS_CLUSTER)];
    segments.push({ image: [a, b] });
    if (b - a < PARALLELS_CLUSTER) segments.push({ bytes: Buffer.alloc(PARALLELS_CLUSTER - (b - a)) });
  }
  return segments;
}
