/**
 * The dynamic VHDX (what Hyper-V imports) written by the project from a view of the disk
 * (disk-view.ts), as a list of segments (bzip2-reuse.ts): its headers and tables as bytes, its payload
 * blocks as ranges of the disk. A build's `.vhdx.bz2` is then made from the release's bzip2 blocks like
 * the raw image's, without a whole copy of the disk and without writing the VHDX first; an uncompressed
 * VHDX is written from the same segments (qcow2.ts's `writeSegments`).
 *
 * The layout is the one `qemu-img convert -O vhdx -o subformat=dynamic` writes (VHDX 1.0):
 *
 *   file identifier ("vhdxfile", the creator) | header 1 (64 KiB) | header 2 (128 KiB) |
 *   region table and its copy (192, 256 KiB) | log (1 MiB at 1 MiB, empty) | BAT (at 2 MiB) |
 *   metadata (1 MiB: table, then file parameters, virtual size, disk ID, sector sizes) |
 *   4 MiB left free | every block of the disk that holds a byte that is not zero, whole, in disk order
 *
 * Blocks of 8 MiB up to a 1 GiB disk, 16 MiB up to 100 GiB, 32 MiB up to 32 TiB, then 64 MiB (qemu-img's
 * choice); the other blocks are "zero" in the BAT (read as zeros, nothing stored). What qemu-img makes
 * random or leaves as history is fixed here: both headers' GUIDs and the disk ID are given by the
 * caller (derived from the artifact's name and time), header 2 is current (sequence 2, as it is in
 * qemu-img's files), and the log holds nothing and is not in use. For the same disk and IDs, the file
 * is qemu-img's byte for byte but for the creator (test/vhdx.test.ts compares them), and qemu-img checks
 * and reads it.
 */
import { crc32c } from '../image/crc32c.js';
import { OemError } from '../shared/errors.js';
import type { Segment } from './bzip2-reuse.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;
const SECTOR = 512;
/** The largest disk a VHDX holds (VHDX 1.0, and qemu-img's limit). */
export const VHDX_MAX_SIZE = 64 * TiB;
const LOG_OFFSET = MiB;
const LOG_LENGTH = MiB;
const BAT_OFFSET = LOG_OFFSET + LOG_LENGTH;
const METADATA_LENGTH = MiB;
const CREATOR = 'oem';

/** A GUID as a VHDX stores it (the first three fields little-endian). */
export const guid = (s: string): Buffer => {
  const b = Buffer.from(s.replace(/-/g, ''), 'hex');
  return Buffer.concat([Buffer.from(b.subarray(0, 4)).reverse(), Buffer.from(b.subarray(4, 6)).reverse(), Buffer.from(b.subarray(6, 8)).reverse(), b.subarray(8)]);
};
export const VHDX_BAT_REGION = guid('2DC27766-F623-4200-9D64-115E9BFD4A08');
export const VHDX_METADATA_REGION = guid('8B7CA206-4790-4B9A-B8FE-575F050F886E');
export const VHDX_PAGE83 = guid('BECA12AB-B2E6-4523-93EF-C309E000C746');
const FILE_PARAMETERS = guid('CAA16737-FA36-4D43-B3B6-33F0AA44E76B');
const VIRTUAL_DISK_SIZE = guid('2FA54224-CD1B-4876-B211-5DBED83BF4B8');
const LOGICAL_SECTOR_SIZE = guid('8141BF1D-A96F-4709-BA47-F233A8FAAB5F');
const PHYSICAL_SECTOR_SIZE = guid('CDA348C7-445D-4471-9CC9-E9885251C556');
const PAYLOAD_ZERO = 2n;
const PAYLOAD_FULLY_PRESENT = 6n;

/** The block size qemu-img picks for a disk of `size` bytes. */
export function vhdxBlockSize(size: number): number {
  if (size > 32 * TiB) return 64 * MiB;
  if (size > 100 * GiB) return 32 * MiB;
  if (size > GiB) return 16 * MiB;
  return 8 * MiB;
}

/** The IDs qemu-img would make random: both headers' file and data write GUIDs, and the disk's ID (16 bytes each). */
export interface VhdxIds {
  fileWrite: Buffer;
  dataWrite: Buffer;
  disk: Buffer;
}

/**
 * The VHDX of a disk of `size` bytes as segments, given which of its `cluster`-byte clusters hold a
 * byte that is not zero (`stored`, 1 each; a block is stored when any of its clusters is).
 */
export function vhdxSegments(size: number, stored: Uint8Array, cluster: number, ids: VhdxIds): Segment[] {
  if (size > VHDX_MAX_SIZE) throw new OemError(`a VHDX holds at most 64 TiB; the disk is ${size} bytes`);
  const virtual = Math.ceil(size / SECTOR) * SECTOR;
  const block = vhdxBlockSize(virtual);
  if (block % cluster !== 0) throw new Error(`VHDX blocks of ${block} bytes are not whole clusters of ${cluster}`);
  if (stored.length !== Math.ceil(size / cluster)) throw new Error(`a cluster map of ${stored.length} clusters for a disk of ${size} bytes`);
  const perBlock = block / cluster;
  const blocks = Math.ceil(virtual / block);
  const chunkRatio = (2 ** 23 * SECTOR) / block;
  const entries = blocks + Math.floor((blocks - 1) / chunkRatio);
  const batLength = Math.ceil((entries * 8) / MiB) * MiB;
  const metadataOffset = BAT_OFFSET + batLength;
  const dataOffset = BAT_OFFSET + batLength + 5 * MiB;

  const head = Buffer.alloc(LOG_OFFSET);
  head.write('vhdxfile', 0, 'latin1');
  head.write(CREATOR, 8, 'utf16le');
  for (const [at, sequence] of [[64 * KiB, 1n], [128 * KiB, 2n]] as const) {
    const h = head.subarray(at, at + 4 * KiB);
    h.write('head', 0, 'latin1');
    h.writeBigUInt64LE(sequence, 8);
    ids.fileWrite.copy(h, 16, 0, 16);
    ids.dataWrite.copy(h, 32, 0, 16);
    // LogGuid (48) zero: no log to replay. LogVersion 0, Version 1.
    h.writeUInt16LE(1, 66);
    h.writeUInt32LE(LOG_LENGTH, 68);
    h.writeBigUInt64LE(BigInt(LOG_OFFSET), 72);
    h.writeUInt32LE(crc32c(h), 4);
  }
  const regions = head.subarray(192 * KiB, 256 * KiB);
  regions.write('regi', 0, 'latin1');
  regions.writeUInt32LE(2, 8);
  VHDX_BAT_REGION.copy(regions, 16);
  regions.writeBigUInt64LE(BigInt(BAT_OFFSET), 32);
  regions.writeUInt32LE(batLength, 40);
  VHDX_METADATA_REGION.copy(regions, 48);
  regions.writeBigUInt64LE(BigInt(metadataOffset), 64);
  regions.writeUInt32LE(METADATA_LENGTH, 72);
  regions.writeUInt32LE(crc32c(regions), 4);
  regions.copy(head, 256 * KiB);

  const metadata = Buffer.alloc(METADATA_LENGTH);
  metadata.write('metadata', 0, 'latin1');
  const items: [Buffer, Buffer, number][] = [
    [FILE_PARAMETERS, u32(block, 0), 4], // block size; no flags (dynamic, no parent). Required.
    [VIRTUAL_DISK_SIZE, u64(virtual), 6], // required, of the virtual disk
    [VHDX_PAGE83, Buffer.from(ids.disk.subarray(0, 16)), 6],
    [LOGICAL_SECTOR_SIZE, u32(SECTOR), 6],
    [PHYSICAL_SECTOR_SIZE, u32(SECTOR), 6],
  ];
  metadata.writeUInt16LE(items.length, 10);
  let itemAt = 64 * KiB;
  items.forEach(([id, value, flags], i) => {
    const e = 32 + i * 32;
    id.copy(metadata, e);
    metadata.writeUInt32LE(itemAt, e + 16);
    metadata.writeUInt32LE(value.length, e + 20);
    metadata.writeUInt32LE(flags, e + 24);
    value.copy(metadata, itemAt);
    itemAt += value.length;
  });

  const bat = Buffer.alloc(batLength);
  const segments: Segment[] = [];
  let next = dataOffset;
  for (let b = 0; b < blocks; b++) {
    const first = b * perBlock;
    let any = false;
    for (let c = first; c < first + perBlock && c < stored.length && !any; c++) any = stored[c] === 1;
    const at = (b + Math.floor(b / chunkRatio)) * 8;
    if (!any) {
      bat.writeBigUInt64LE(PAYLOAD_ZERO, at);
      continue;
    }
    bat.writeBigUInt64LE(PAYLOAD_FULLY_PRESENT | (BigInt(next / MiB) << 20n), at);
    const [from, to] = [b * block, Math.min(size, (b + 1) * block)];
    const last = segments[segments.length - 1];
    if (last && 'image' in last && last.image[1] === from) last.image = [last.image[0], to];
    else segments.push({ image: [from, to] });
    if (to - from < block) segments.push({ bytes: Buffer.alloc(block - (to - from)) });
    next += block;
  }
  // Apart, not joined: the zeros (most of these 8 MiB) stay pages never written (fresh mappings: no memory).
  const tables = [head, Buffer.alloc(LOG_LENGTH), bat, metadata, Buffer.alloc(dataOffset - metadataOffset - METADATA_LENGTH)];
  return [...tables.map((bytes) => ({ bytes })), ...segments];
}

function u32(...values: number[]): Buffer {
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeUInt32LE(v, 4 * i));
  return b;
}

function u64(v: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
}
