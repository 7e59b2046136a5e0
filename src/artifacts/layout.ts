/**
 * Where a virtual disk file keeps the disk's bytes. A qcow2 or dynamic VHDX that qemu-img converts
 * from a raw image stores each allocated cluster (block) of the disk verbatim; the rest of the file is
 * its tables. Read from the file's own tables, the file is a list of segments: ranges of the disk
 * image, and the bytes in between. bzip2-reuse.ts compresses such a list from the release's own bzip2
 * blocks wherever the image did not change, as it does the raw image: the .qcow2.bz2 and .vhdx.bz2
 * need no compression of unchanged data.
 *
 * Only what qemu-img writes on conversion is accepted: no backing file, no snapshots, no compressed
 * or encrypted clusters, no external data file, no partially present VHDX blocks. Anything else is
 * an error, and callers then compress the file as it is.
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
 * The tables and headers of a file from qemu-img are small (a VHDX's, with its log, 16 MiB): more
 * than this in between is refused (they are held in memory), and the file is compressed as it is.
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

/** GUIDs as stored in a VHDX (the first three fields little-endian). */
export const guid = (s: string): Buffer => {
  const h = s.replace(/-/g, '');
  const b = Buffer.from(h, 'hex');
  return Buffer.concat([Buffer.from(b.subarray(0, 4)).reverse(), Buffer.from(b.subarray(4, 6)).reverse(), Buffer.from(b.subarray(6, 8)).reverse(), b.subarray(8)]);
};
const BAT = guid('2DC27766-F623-4200-9D64-115E9BFD4A08');
export const VHDX_METADATA_REGION = guid('8B7CA206-4790-4B9A-B8FE-575F050F886E');
export const VHDX_PAGE83 = guid('BECA12AB-B2E6-4523-93EF-C309E000C746');
const FILE_PARAMETERS = guid('CAA16737-FA36-4D43-B3B6-33F0AA44E76B');
const VIRTUAL_DISK_SIZE = guid('2FA54224-CD1B-4876-B211-5DBED83BF4B8');
const LOGICAL_SECTOR_SIZE = guid('8141BF1D-A96F-4709-BA47-F233A8FAAB5F');
const MiB = 1024 * 1024;

/** The segments of a dynamic VHDX that qemu-img converted from a disk of `diskSize` bytes. */
export async function vhdxLayout(path: string, diskSize: number): Promise<Segment[]> {
  const fh = await open(path, 'r');
  try {
    const fileSize = (await fh.stat()).size;
    if ((await readAt(fh, 0, 8)).toString('latin1') !== 'vhdxfile') throw new OemError(`${path} is not a VHDX file`);
    const regions = await readAt(fh, 192 * 1024, 64 * 1024);
    if (regions.toString('latin1', 0, 4) !== 'regi') throw new OemError('no region table');
    let batAt = -1;
    let batLength = 0;
    let metaAt = -1;
    const count = regions.readUInt32LE(8);
    if (count > 2047) throw new OemError(`region table of ${count} entries`);
    for (let i = 0; i < count; i++) {
      const e = 16 + i * 32;
      const id = regions.subarray(e, e + 16);
      const at = safe(regions.readBigUInt64LE(e + 16), 'VHDX region offset');
      if (id.equals(BAT)) [batAt, batLength] = [at, regions.readUInt32LE(e + 24)];
      else if (id.equals(VHDX_METADATA_REGION)) metaAt = at;
    }
    if (batAt < 0 || metaAt < 0) throw new OemError('no BAT or metadata region');
    const table = await readAt(fh, metaAt, 64 * 1024);
    if (table.toString('latin1', 0, 8) !== 'metadata') throw new OemError('no metadata table');
    const item = async (id: Buffer, n: number): Promise<Buffer> => {
      for (let j = 0; j < table.readUInt16LE(10) && j < 2047; j++) {
        const m = 32 + j * 32;
        if (table.subarray(m, m + 16).equals(id)) return readAt(fh, metaAt + table.readUInt32LE(m + 16), n);
      }
      throw new OemError('a metadata item is missing');
    };
    const params = await item(FILE_PARAMETERS, 8);
    const blockSize = params.readUInt32LE(0);
    if (params.readUInt32LE(4) & 2) throw new OemError('the VHDX has a parent');
    const size = safe((await item(VIRTUAL_DISK_SIZE, 8)).readBigUInt64LE(0), 'VHDX disk size');
    const sector = (await item(LOGICAL_SECTOR_SIZE, 4)).readUInt32LE(0);
    if (size !== diskSize) throw new OemError(`the VHDX's disk is ${size} bytes, the image ${diskSize}`);
    if (blockSize < MiB || blockSize > 256 * MiB || (blockSize & (blockSize - 1)) !== 0 || (sector !== 512 && sector !== 4096)) {
      throw new OemError(`VHDX block size ${blockSize}, sector size ${sector}`);
    }
    const chunkRatio = (2 ** 23 * sector) / blockSize;
    const blocks = Math.ceil(size / blockSize);
    const entries = blocks + Math.floor((blocks - 1) / chunkRatio);
    if (entries * 8 > batLength) throw new OemError('the BAT is too short');
    const bat = await readAt(fh, batAt, entries * 8);
    const mapped: Mapped[] = [];
    for (let i = 0; i < blocks; i++) {
      const e = bat.readBigUInt64LE((i + Math.floor(i / chunkRatio)) * 8);
      const state = Number(e & 7n);
      if (state === 7) throw new OemError('the VHDX has partially present blocks');
      if (state !== 6) continue; // not present, undefined, zero or unmapped: no data in the file
      mapped.push({ host: safe(e >> 20n, 'VHDX block offset') * MiB, guest: i * blockSize, length: blockSize });
    }
    return await toSegments(fh, fileSize, size, mapped);
  } catch (err) {
    throw err instanceof OemError ? new OemError(`cannot read the layout of ${path}: ${err.message}`) : err;
  } finally {
    await fh.close();
  }
}
