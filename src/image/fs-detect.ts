import type { ByteSource } from './byte-source.js';

/** Filesystem found in a partition by its superblock (the same signatures blkid uses). */
export type FsType = 'vfat' | 'ext2' | 'ext3' | 'ext4' | 'btrfs' | 'none';

export interface FsInfo {
  type: FsType;
  label?: string;
  uuid?: string;
  /** For ext*: block size and block count; for btrfs: total bytes; for vfat: FAT12/16/32. */
  detail?: Record<string, string | number>;
  /** Size the filesystem claims, in bytes (ext, btrfs). */
  fsSize?: number;
  /** Why the filesystem must not be written as it is (ext: not cleanly unmounted, errors). */
  dirty?: string;
}

function trimLabel(b: Buffer): string {
  const nul = b.indexOf(0);
  return (nul >= 0 ? b.subarray(0, nul) : b).toString('utf8').trimEnd();
}

function uuidString(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

// ext feature bits that ext3 already had; anything beyond them makes the filesystem ext4.
const EXT3_INCOMPAT = 0x0002 | 0x0004 | 0x0010; // filetype, recover, meta_bg
const EXT3_RO_COMPAT = 0x0001 | 0x0002 | 0x0004; // sparse_super, large_file, btree_dir
const EXT_HAS_JOURNAL = 0x0004;
const EXT_JOURNAL_DEV = 0x0008;

function detectExt(sb: Buffer): FsInfo | null {
  if (sb.length < 1024 || sb.readUInt16LE(0x38) !== 0xef53) return null;
  const compat = sb.readUInt32LE(0x5c);
  const incompat = sb.readUInt32LE(0x60);
  const roCompat = sb.readUInt32LE(0x64);
  if (incompat & EXT_JOURNAL_DEV) return null; // an external journal, not a filesystem
  let type: FsType;
  if (incompat & ~EXT3_INCOMPAT || roCompat & ~EXT3_RO_COMPAT) type = 'ext4';
  else if (compat & EXT_HAS_JOURNAL) type = 'ext3';
  else type = 'ext2';
  const logBlock = sb.readUInt32LE(0x18);
  const blockSize = 1024 << Math.min(logBlock, 6);
  const blocks = sb.readUInt32LE(0x04) + (incompat & 0x80 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
  const info: FsInfo = {
    type,
    uuid: uuidString(sb.subarray(0x68, 0x78)),
    detail: { blockSize, blocks },
    fsSize: blockSize * blocks,
  };
  const state = sb.readUInt16LE(0x3a);
  if (incompat & 0x0004) info.dirty = 'its journal needs recovery (it was not cleanly unmounted)';
  else if (state & 0x0002) info.dirty = 'it has errors recorded (run e2fsck)';
  else if (!(state & 0x0001)) info.dirty = 'it was not cleanly unmounted (run e2fsck)';
  const label = trimLabel(sb.subarray(0x78, 0x88));
  if (label) info.label = label;
  return info;
}

function detectBtrfs(sb: Buffer): FsInfo | null {
  if (sb.length < 0x1000 || sb.toString('latin1', 0x40, 0x48) !== '_BHRfS_M') return null;
  const info: FsInfo = {
    type: 'btrfs',
    uuid: uuidString(sb.subarray(0x20, 0x30)),
    detail: { totalBytes: Number(sb.readBigUInt64LE(0x70)) },
    fsSize: Number(sb.readBigUInt64LE(0x70)),
  };
  const label = trimLabel(sb.subarray(0x12b, 0x12b + 256));
  if (label) info.label = label;
  return info;
}

function detectVfat(bs: Buffer): FsInfo | null {
  if (bs.length < 512 || bs.readUInt16LE(510) !== 0xaa55) return null;
  const bytesPerSector = bs.readUInt16LE(11);
  if (![512, 1024, 2048, 4096].includes(bytesPerSector) || bs[13] === 0 || bs[16] === 0) return null;
  let off: number;
  let kind: string;
  if (bs.toString('latin1', 0x52, 0x57) === 'FAT32') {
    off = 0x43;
    kind = 'FAT32';
  } else if (bs.toString('latin1', 0x36, 0x3b) === 'FAT12' || bs.toString('latin1', 0x36, 0x3b) === 'FAT16') {
    off = 0x27;
    kind = bs.toString('latin1', 0x36, 0x3b);
  } else {
    return null;
  }
  const serial = bs.readUInt32LE(off);
  const hex = serial.toString(16).toUpperCase().padStart(8, '0');
  const info: FsInfo = { type: 'vfat', uuid: `${hex.slice(0, 4)}-${hex.slice(4)}`, detail: { fat: kind } };
  const label = bs.toString('latin1', off + 4, off + 15).trimEnd();
  if (label && label !== 'NO NAME') info.label = label;
  return info;
}

/** Detects the filesystem at the start of `src` (a partition). */
export async function detectFilesystem(src: ByteSource): Promise<FsInfo> {
  const head = await src.read(0, 0x11000);
  return (
    detectExt(head.subarray(1024, 2048)) ??
    detectBtrfs(head.subarray(0x10000, 0x11000)) ??
    detectVfat(head.subarray(0, 512)) ?? { type: 'none' }
  );
}
