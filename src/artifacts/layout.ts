/**
 * Where a qcow2 that qemu-img wrote keeps the disk's bytes (qemu-img writes the qcow2s too large for
 * qcow2.ts). A qcow2 that qemu-img converts from a raw image stores each allocated cluster of the disk
 * verbatim; the rest of the file is its tables. Read from the file's own tables, the file is a list of
 * segments: ranges of the disk image, and the bytes in between. bzip2-reuse.ts compresses such a list
 * from the release's own bzip2 blocks wherever the image did not change, as it does the raw image: the
 * .qcow2.bz2 needs no compression of unchanged data.
 *
 * Only what qemu-img writes on conversion is accepted: no backing file, no snapshots, no compressed
 * or encrypted clusters, no external data file. Anything else is an error, and callers then compress
 * the file as it is.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { OemError } from '../shared/errors.js';
import type { Segment } from './bzip2-reuse.js';

/** A run of the file holding the disk's bytes [guest, guest + length). */
interface Mapped {
  host: number;
  guest: number;
  length: number;
}

/**
 * The tables of a qcow2 from qemu-img are small: more than this in between is refused (they are held
 * in memory), and the file is compressed as it is.
 */
const MAX_BYTES = 64 * 1024 * 1024;

async function readAt(fh: FileHandle, at: number, n: number): Promise<Buffer> {
  const b = Buffer.alloc(n);
  let got = 0;
  while (got < n) {
    const { bytesRead } = await fh.read(b, got, n - got, at + got);
    if (!bytesRead) break;
    got += bytesRead;
  }
  if (got !== n) throw new OemError(`unexpected end of file at ${at + got}`);
  return b;
}

const safe = (n: bigint, what: string): number => {
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new OemError(`${what} out of range`);
  return Number(n);
};

/** The file `path` as segments: its mapped runs as image ranges, everything else as its bytes. */
async function toSegments(fh: FileHandle, fileSize: number, diskSize: number, mapped: Mapped[]): Promise<Segment[]> {
  mapped.sort((a, b) => a.host - b.host);
  const runs: Mapped[] = [];
  for (const m of mapped) {
    const last = runs[runs.length - 1];
    if (last && m.host < last.host + last.length) throw new OemError(`two parts of the disk share file offset ${m.host}`);
    if (last && last.host + last.length === m.host && last.guest + last.length === m.guest) last.length += m.length;
    else runs.push({ ...m });
  }
  const segments: Segment[] = [];
  let at = 0;
  let bytes = 0;
  const literal = async (from: number, to: number) => {
    if (from >= to) return;
    bytes += to - from;
    if (bytes > MAX_BYTES) throw new OemError(`more than ${MAX_BYTES} bytes outside the disk's data`);
    segments.push({ bytes: await readAt(fh, from, to - from) });
  };
  for (const r of runs) {
    if (r.host >= fileSize) break;
    await literal(at, r.host);
    // The file may end inside the last run (what is past its end reads as zeros); the disk may end inside the last block.
    const inFile = Math.min(r.length, fileSize - r.host);
    const onDisk = Math.max(0, Math.min(inFile, diskSize - r.guest));
    if (onDisk) segments.push({ image: [r.guest, r.guest + onDisk] });
    await literal(r.host + onDisk, r.host + inFile);
    at = r.host + inFile;
  }
  await literal(at, fileSize);
  return segments;
}

/** The segments of a qcow2 (version 2 or 3) that qemu-img converted from a disk of `diskSize` bytes. */
export async function qcow2Layout(path: string, diskSize: number): Promise<Segment[]> {
  const fh = await open(path, 'r');
  try {
    const fileSize = (await fh.stat()).size;
    const h = await readAt(fh, 0, 104);
    if (h.readUInt32BE(0) !== 0x514649fb) throw new OemError(`${path} is not a qcow2 file`);
    const version = h.readUInt32BE(4);
    const clusterBits = h.readUInt32BE(20);
    const size = safe(h.readBigUInt64BE(24), 'qcow2 virtual size');
    if (version !== 2 && version !== 3) throw new OemError(`qcow2 version ${version}`);
    if (h.readBigUInt64BE(8) !== 0n) throw new OemError('the qcow2 has a backing file');
    if (clusterBits < 9 || clusterBits > 21) throw new OemError(`qcow2 cluster bits ${clusterBits}`);
    if (h.readUInt32BE(32) !== 0) throw new OemError('the qcow2 is encrypted');
    if (h.readUInt32BE(60) !== 0) throw new OemError('the qcow2 has snapshots');
    if (version === 3 && h.readBigUInt64BE(72) !== 0n) throw new OemError(`the qcow2 has incompatible features 0x${h.readBigUInt64BE(72).toString(16)}`);
    if (size !== diskSize) throw new OemError(`the qcow2's disk is ${size} bytes, the image ${diskSize}`);
    const cluster = 2 ** clusterBits;
    const perL2 = cluster / 8;
    const l1Size = h.readUInt32BE(36);
    const l1At = safe(h.readBigUInt64BE(40), 'qcow2 L1 table offset');
    if (l1Size * perL2 * cluster < size || l1Size > 1 << 22) throw new OemError(`qcow2 L1 table of ${l1Size} entries`);
    const l1 = await readAt(fh, l1At, l1Size * 8);
    const mapped: Mapped[] = [];
    const OFFSET = 0x00ff_ffff_ffff_fe00n;
    for (let i = 0; i < l1Size; i++) {
      const l2At = safe(l1.readBigUInt64BE(i * 8) & OFFSET, 'qcow2 L2 offset');
      if (!l2At) continue;
      const l2 = await readAt(fh, l2At, cluster);
      for (let j = 0; j < perL2; j++) {
        const guest = (i * perL2 + j) * cluster;
        if (guest >= size) break;
        const e = l2.readBigUInt64BE(j * 8);
        if (e & (1n << 62n)) throw new OemError('the qcow2 has compressed clusters');
        const host = safe(e & OFFSET, 'qcow2 cluster offset');
        // Unallocated, or a zero cluster (its file cluster, if any, is not the disk's bytes).
        if (!host || e & 1n) continue;
        mapped.push({ host, guest, length: cluster });
      }
    }
    return await toSegments(fh, fileSize, size, mapped);
  } catch (err) {
    throw err instanceof OemError ? new OemError(`cannot read the layout of ${path}: ${err.message}`) : err;
  } finally {
    await fh.close();
  }
}
