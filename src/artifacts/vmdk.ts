/**
 * The streamOptimized VMDK (EC2, VMware, the OVAs, the Vagrant VirtualBox box), written here in the
 * layout qemu-img writes, so that only what a build changed is deflated again.
 *
 * qemu-img's streamOptimized file is: the header, the descriptor, the redundant and the primary grain
 * directory with their grain tables (all in the "overhead" before the first grain), then every grain
 * that is not all zeros, in disk order, each as a marker (its first sector, u64; its compressed size,
 * u32) followed by its zlib stream and zeros to the next sector, then an end-of-stream marker (a zero
 * sector). A grain table entry is the file sector of its grain's marker. The header, descriptor and
 * directories are taken from `qemu-img create` of an empty disk of the same size and options (the
 * file is just that overhead); the grains and the tables are written here.
 *
 * The grains of each 2 MiB of the disk, with their markers, are kept in the piece cache by the
 * SHA-256 of the disk's bytes there and their offset (a marker names its sector): every build shares
 * what the release did not change. Grains are deflated (zlib, level 6 as qemu-img's compress()) as
 * many at once as there are cores.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { deflate as deflateCb } from 'node:zlib';
import { pieceBuffers } from '../buffer-pool.js';
import { mapInOrder, pieceSlots } from '../concurrency.js';
import { DiskView } from '../image/disk-view.js';
import { OemError } from '../shared/errors.js';
import { sha256Hex } from './hash.js';

const deflate = promisify(deflateCb);

const SECTOR = 512;
const GRAIN_SECTORS = 128;
const GRAIN = GRAIN_SECTORS * SECTOR;
/** Grains per piece of the disk that is cached as one (2 MiB). */
const PIECE_GRAINS = 32;
/** Grains deflated at once per piece (zlib's state is about 256 KiB each). */
const DEFLATES = 4;
const PIECE = PIECE_GRAINS * GRAIN;
const FLAG_COMPRESSED = 1 << 16;
const FLAG_MARKERS = 1 << 17;
const ZERO_GRAIN = Buffer.alloc(GRAIN);

export interface VmdkHeader {
  capacity: number;
  descriptorOffset: number;
  descriptorSize: number;
  numGTEsPerGT: number;
  rgdOffset: number;
  gdOffset: number;
  overHead: number;
}

/** The header of a streamOptimized VMDK as qemu-img writes it, checked for what this writer relies on. */
export function readVmdkHeader(h: Buffer, path: string): VmdkHeader {
  const bad = (why: string) => new OemError(`${path}: not the streamOptimized VMDK this writer expects: ${why}`);
  if (h.toString('latin1', 0, 4) !== 'KDMV') throw bad('no KDMV magic');
  if (h.readUInt32LE(4) !== 3) throw bad(`version ${h.readUInt32LE(4)}`);
  const flags = h.readUInt32LE(8);
  if (!(flags & FLAG_COMPRESSED) || !(flags & FLAG_MARKERS)) throw bad('grains not compressed with markers');
  const n = (at: number) => Number(h.readBigUInt64LE(at));
  if (n(20) !== GRAIN_SECTORS) throw bad(`grain of ${n(20)} sectors`);
  if (h.readUInt16LE(77) !== 1) throw bad('not deflate');
  const x: VmdkHeader = { capacity: n(12), descriptorOffset: n(28), descriptorSize: n(36), numGTEsPerGT: h.readUInt32LE(44), rgdOffset: n(48), gdOffset: n(56), overHead: n(64) };
  if (x.numGTEsPerGT !== 512 || !x.rgdOffset || !x.gdOffset || x.gdOffset === 2 ** 64 - 1) throw bad('its grain directories are not in the overhead');
  return x;
}

/** One piece's grains as stored: each grain's index in the piece and sector in `bytes`, and the bytes. */
interface Segment {
  grains: [number, number][];
  bytes: Buffer;
}

/** The head of a cached segment (its grains' places); the segment's bytes follow it in the file. */
function segmentHead(s: Segment): Buffer {
  const head = Buffer.alloc(4 + s.grains.length * 8);
  head.writeUInt32LE(s.grains.length, 0);
  s.grains.forEach(([g, sec], i) => {
    head.writeUInt32LE(g, 4 + i * 8);
    head.writeUInt32LE(sec, 8 + i * 8);
  });
  return head;
}

function decodeSegment(b: Buffer): Segment {
  const count = b.readUInt32LE(0);
  const grains: [number, number][] = [];
  for (let i = 0; i < count; i++) grains.push([b.readUInt32LE(4 + i * 8), b.readUInt32LE(8 + i * 8)]);
  return { grains, bytes: b.subarray(4 + count * 8) };
}

/** The markers and zlib streams of the non-zero grains of `data`, the disk's bytes from `offset`. */
async function makeSegment(data: Buffer, offset: number): Promise<Segment> {
  const grains: [number, number][] = [];
  let sectors = 0;
  const indexes = Array.from({ length: Math.ceil(data.length / GRAIN) }, (_, g) => g);
  const zs = await mapInOrder(indexes, DEFLATES, async (g) => {
    const grain = data.subarray(g * GRAIN, (g + 1) * GRAIN);
    const whole = grain.length === GRAIN ? grain : Buffer.concat([grain, Buffer.alloc(GRAIN - grain.length)]);
    return whole.equals(ZERO_GRAIN) ? null : deflate(whole, { level: 6 });
  });
  zs.forEach((z, g) => {
    if (!z) return;
    grains.push([g, sectors]);
    sectors += Math.ceil((12 + z.length) / SECTOR);
  });
  // One buffer for the whole segment: each grain's marker and zlib stream, zeros to the next sector.
  const bytes = pieceBuffers.take(sectors * SECTOR).fill(0);
  for (const [g, sec] of grains) {
    const z = zs[g]!;
    const at = sec * SECTOR;
    bytes.writeBigUInt64LE(BigInt(offset / SECTOR + g * GRAIN_SECTORS), at);
    bytes.writeUInt32LE(z.length, at + 8);
    z.copy(bytes, at + 12);
  }
  return { grains, bytes };
}

/**
 * Writes the grains of the disk (a raw image, or a view of the base and a build's partitions) into
 * `out`, which holds what `qemu-img create` made for it (the overhead only), then the tables and the
 * end-of-stream marker.
 */
export async function writeVmdkGrains(
  disk: string | DiskView,
  out: string,
  opts: { cacheDir?: string; signal?: AbortSignal; onProgress?: (done: number, total: number) => void },
): Promise<{ cachedPieces: number; pieces: number }> {
  const fh = await open(out, 'r+');
  const src = typeof disk === 'string' ? await DiskView.open(disk) : disk;
  try {
    const header = Buffer.alloc(SECTOR);
    await fh.read(header, 0, SECTOR, 0);
    const h = readVmdkHeader(header, out);
    const { size: templateSize } = await fh.stat();
    if (templateSize !== h.overHead * SECTOR) throw new OemError(`${out}: qemu-img's empty VMDK is ${templateSize} bytes, its overhead ${h.overHead * SECTOR}`);
    const size = src.size;
    if (Math.ceil(size / SECTOR) > h.capacity) throw new OemError(`${out}: a capacity of ${h.capacity} sectors for ${size} bytes`);
    const grains = Math.ceil((h.capacity * SECTOR) / GRAIN);
    const tables = Math.ceil(grains / h.numGTEsPerGT);
    // Where each grain table is (the same in both directories' order), from the directories qemu-img wrote.
    const dir = async (at: number) => {
      const b = Buffer.alloc(Math.ceil((tables * 4) / SECTOR) * SECTOR);
      await fh.read(b, 0, b.length, at * SECTOR);
      return Array.from({ length: tables }, (_, i) => b.readUInt32LE(i * 4));
    };
    const [gd, rgd] = [await dir(h.gdOffset), await dir(h.rgdOffset)];
    if ([...gd, ...rgd].some((s) => s === 0 || s + 4 > h.overHead)) throw new OemError(`${out}: qemu-img's grain directories point outside the overhead`);
    const gt = new Uint32Array(tables * h.numGTEsPerGT);

    const pieces: number[] = [];
    for (let at = 0; at < size; at += PIECE) pieces.push(at);
    if (opts.cacheDir) await mkdir(opts.cacheDir, { recursive: true });
    let cachedPieces = 0;
    const segment = (at: number): Promise<Segment> => pieceSlots.use(async () => {
      if (opts.signal?.aborted) throw new OemError('interrupted while writing the VMDK', { code: 'interrupted' });
      const len = Math.min(PIECE, size - at);
      if (src.hole(at, at + len)) return { grains: [], bytes: Buffer.alloc(0) };
      // The disk's bytes are needed until hashed and deflated; the segment's until written (below).
      const bytes = await src.readInto(pieceBuffers.take(len), at);
      const file = opts.cacheDir ? join(opts.cacheDir, `vmdk-${process.versions.zlib}-${at}-${sha256Hex(bytes)}.seg`) : null;
      const hit = file ? await pieceBuffers.readFile(file) : null;
      if (hit) {
        pieceBuffers.give(bytes);
        cachedPieces++;
        return decodeSegment(hit);
      }
      const s = await makeSegment(bytes, at);
      pieceBuffers.give(bytes);
      if (file) {
        const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
        await writeFile(tmp, [segmentHead(s), s.bytes])
          .then(() => rename(tmp, file))
          .catch(() => rm(tmp, { force: true }));
      }
      return s;
    });
    let sector = h.overHead;
    await mapInOrder(pieces, availableParallelism() + 1, segment, async (s, i) => {
      const first = pieces[i]! / GRAIN;
      for (const [g, rel] of s.grains) gt[first + g] = sector + rel;
      await writeAll(fh, s.bytes, sector * SECTOR);
      sector += s.bytes.length / SECTOR;
      pieceBuffers.give(s.bytes);
      opts.onProgress?.(Math.min(size, pieces[i]! + PIECE), size);
    });
    // The end-of-stream marker, then both copies of every grain table.
    await writeAll(fh, Buffer.alloc(SECTOR), sector * SECTOR);
    for (let t = 0; t < tables; t++) {
      const table = Buffer.from(gt.buffer, t * h.numGTEsPerGT * 4, h.numGTEsPerGT * 4);
      await writeAll(fh, table, gd[t]! * SECTOR);
      await writeAll(fh, table, rgd[t]! * SECTOR);
    }
    return { cachedPieces, pieces: pieces.length };
  } finally {
    if (typeof disk === 'string') await src.close();
    await fh.close();
  }
}

async function writeAll(fh: FileHandle, b: Buffer, at: number): Promise<void> {
  let done = 0;
  while (done < b.length) done += (await fh.write(b, done, b.length - done, at + done)).bytesWritten;
}
