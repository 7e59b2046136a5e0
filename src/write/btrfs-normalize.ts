/**
 * Makes a btrfs filesystem made by `mkfs.btrfs --rootdir` reproducible (for SOURCE_DATE_EPOCH):
 * mkfs.btrfs 6.2 draws the device UUID, the chunk tree UUID and the subvolume UUID at random and
 * stamps inodes and roots with the time of the run (and the source files' ctimes), and leaves the
 * transid of directory entries unset, and the unused space of its tree blocks as their memory was.
 * This rewrites them: the UUIDs derived from the filesystem UUID, every inode and root time set to
 * the epoch, entry transids set to their block's generation, unused space zeroed, and the checksums
 * (crc32c) of the superblocks and of every tree block recomputed.
 *
 * Tree blocks are found as nodesize-aligned blocks that carry the filesystem's fsid and a valid
 * checksum. Only crc32c filesystems are handled; others are left as they are.
 */
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { crc32c } from '../image/crc32c.js';

const SB_OFFSETS = [64 * 1024, 64 * 1024 * 1024];
const SB_SIZE = 4096;
const HEADER = 101;
const ITEM = 25;
const KEY_PTR = 33;
const INODE_ITEM_KEY = 1;
const ROOT_ITEM_KEY = 132;
const XATTR_ITEM_KEY = 24;
const DIR_ITEM_KEY = 84;
const DIR_INDEX_KEY = 96;
const UUID_KEY_SUBVOL = 251;
const UUID_KEY_RECEIVED_SUBVOL = 252;

function checksumOk(block: Buffer): boolean {
  return block.readUInt32LE(0) === crc32c(block.subarray(32));
}

function setChecksum(block: Buffer): void {
  block.fill(0, 0, 32);
  block.writeUInt32LE(crc32c(block.subarray(32)), 0);
}

function derived(seed: string, what: string): Buffer {
  return createHash('sha256').update(`${seed}\0${what}`).digest().subarray(0, 16);
}

function replaceAll(buf: Buffer, from: Buffer, to: Buffer): boolean {
  let changed = false;
  for (let i = buf.indexOf(from); i >= 0; i = buf.indexOf(from, i + from.length)) {
    to.copy(buf, i);
    changed = true;
  }
  return changed;
}

function setTime(buf: Buffer, at: number, epoch: number): void {
  buf.writeBigUInt64LE(BigInt(epoch), at);
  buf.writeUInt32LE(0, at + 8);
}

/** The inode item's atime, ctime, mtime and otime, at `at`. */
function setInodeTimes(buf: Buffer, at: number, epoch: number): void {
  for (const off of [112, 124, 136, 148]) setTime(buf, at + off, epoch);
}

async function readAt(fh: FileHandle, buf: Buffer, pos: number): Promise<number> {
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await fh.read(buf, got, buf.length - got, pos + got);
    if (!bytesRead) break;
    got += bytesRead;
  }
  return got;
}

/**
 * Zeros what a tree block does not use: a leaf's gap between its item headers and their data, a
 * node's space after its key pointers. mkfs.btrfs leaves there whatever the block's memory held
 * before (items moved as others were inserted: inode items with the time of the run).
 */
function clearUnused(block: Buffer): void {
  const n = block.readUInt32LE(96);
  if (block[100] !== 0) {
    block.fill(0, Math.min(block.length, HEADER + n * KEY_PTR));
    return;
  }
  let data = block.length;
  for (let i = 0; i < n; i++) data = Math.min(data, HEADER + block.readUInt32LE(HEADER + i * ITEM + 17));
  const headers = HEADER + n * ITEM;
  if (headers < data) block.fill(0, headers, data);
}

/** Normalizes the btrfs filesystem at [offset, offset + size) of `path`. Returns false when it is not one it handles. */
export async function normalizeBtrfs(path: string, offset: number, size: number, epoch: number): Promise<boolean> {
  const fh = await open(path, 'r+');
  try {
    const sb = Buffer.alloc(SB_SIZE);
    if ((await readAt(fh, sb, offset + SB_OFFSETS[0]!)) < SB_SIZE || sb.toString('latin1', 64, 72) !== '_BHRfS_M') return false;
    if (sb.readUInt16LE(0xc4) !== 0 || !checksumOk(sb)) return false; // csum_type 0 = crc32c
    const fsid = Buffer.from(sb.subarray(32, 48));
    const seed = fsid.toString('hex');
    const nodesize = sb.readUInt32LE(0x94);
    const devUuid = Buffer.from(sb.subarray(0x10b, 0x11b));
    const newDev = derived(seed, 'device');
    if (nodesize < 4096 || nodesize > 65536) return false;

    // Pass 1: the chunk tree UUID (from any tree block header) and the subvolume UUIDs.
    const win = Buffer.alloc(Math.max(nodesize, 1024 * 1024) - (Math.max(nodesize, 1024 * 1024) % nodesize));
    let chunkUuid: Buffer | null = null;
    const subvol = new Map<string, Buffer>();
    const blocks: number[] = [];
    for (let pos = 0; pos < size; pos += win.length) {
      const got = await readAt(fh, win, offset + pos);
      for (let b = 0; b + nodesize <= got; b += nodesize) {
        const block = win.subarray(b, b + nodesize);
        if (!block.subarray(32, 48).equals(fsid) || !checksumOk(block)) continue;
        blocks.push(pos + b);
        chunkUuid ??= Buffer.from(block.subarray(0x40, 0x50));
        if (block[100] !== 0) continue;
        const n = block.readUInt32LE(96);
        for (let i = 0; i < n; i++) {
          const it = HEADER + i * ITEM;
          if (block[it + 8] !== ROOT_ITEM_KEY) continue;
          const data = HEADER + block.readUInt32LE(it + 17);
          if (block.readUInt32LE(it + 21) < 295) continue;
          const uuid = block.subarray(data + 247, data + 263);
          if (uuid.every((x) => x === 0)) continue;
          subvol.set(uuid.toString('hex'), derived(seed, `subvolume ${block.readBigUInt64LE(it)}`));
        }
      }
    }
    if (!chunkUuid) return false;
    const newChunk = derived(seed, 'chunk tree');

    // Pass 2: rewrite.
    const block = Buffer.alloc(nodesize);
    for (const at of blocks) {
      await readAt(fh, block, offset + at);
      clearUnused(block);
      replaceAll(block, devUuid, newDev);
      replaceAll(block, chunkUuid, newChunk);
      for (const [old, to] of subvol) replaceAll(block, Buffer.from(old, 'hex'), to);
      if (block[100] === 0) {
        const n = block.readUInt32LE(96);
        for (let i = 0; i < n; i++) {
          const it = HEADER + i * ITEM;
          const type = block[it + 8]!;
          const data = HEADER + block.readUInt32LE(it + 17);
          const len = block.readUInt32LE(it + 21);
          if (type === INODE_ITEM_KEY && len >= 160) setInodeTimes(block, data, epoch);
          if (type === DIR_ITEM_KEY || type === DIR_INDEX_KEY || type === XATTR_ITEM_KEY) {
            // mkfs.btrfs leaves the entries' transid unset: give them the block's generation.
            for (let e = data; e + 30 <= data + len; e += 30 + block.readUInt16LE(e + 25) + block.readUInt16LE(e + 27)) {
              block.writeBigUInt64LE(block.readBigUInt64LE(0x50), e + 17);
            }
          }
          if (type === ROOT_ITEM_KEY) {
            setInodeTimes(block, data, epoch);
            if (len >= 363) for (const t of [327, 339, 351]) if (block.readBigUInt64LE(data + t) !== 0n) setTime(block, data + t, epoch);
          }
          if (type === UUID_KEY_SUBVOL || type === UUID_KEY_RECEIVED_SUBVOL) {
            const key = Buffer.concat([block.subarray(it, it + 8), block.subarray(it + 9, it + 17)]);
            const to = subvol.get(key.toString('hex'));
            if (to) {
              to.copy(block, it, 0, 8);
              to.copy(block, it + 9, 8, 16);
            }
          }
        }
      }
      setChecksum(block);
      await fh.write(block, 0, nodesize, offset + at);
    }
    for (const sbAt of SB_OFFSETS) {
      if (sbAt + SB_SIZE > size) continue;
      const copy = Buffer.alloc(SB_SIZE);
      await readAt(fh, copy, offset + sbAt);
      if (copy.toString('latin1', 64, 72) !== '_BHRfS_M') continue;
      replaceAll(copy, devUuid, newDev);
      replaceAll(copy, chunkUuid, newChunk);
      setChecksum(copy);
      await fh.write(copy, 0, SB_SIZE, offset + sbAt);
    }
    return true;
  } finally {
    await fh.close();
  }
}
