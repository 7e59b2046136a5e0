/**
 * Test-only GPT surgery on image files: rewrite entries or header fields of one or both copies and
 * recompute the CRC32s, so tests can make consistent-but-wrong tables (overlaps, entries past the end)
 * as well as plainly corrupt ones.
 */
import { open } from 'node:fs/promises';
import { crc32 } from 'node:zlib';

const S = 512;

export interface RawGpt {
  header: Buffer;
  entries: Buffer;
}

export async function readAt(path: string, offset: number, len: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(len);
    await fh.read(b, 0, len, offset);
    return b;
  } finally {
    await fh.close();
  }
}

export async function writeAt(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

export async function readCopy(path: string, which: 'primary' | 'backup'): Promise<{ lba: number; raw: RawGpt }> {
  const primary = await readAt(path, S, S);
  const lba = which === 'primary' ? 1 : Number(primary.readBigUInt64LE(32));
  const header = which === 'primary' ? primary : await readAt(path, lba * S, S);
  const entriesLba = Number(header.readBigUInt64LE(72));
  const n = header.readUInt32LE(80) * header.readUInt32LE(84);
  return { lba, raw: { header, entries: await readAt(path, entriesLba * S, n) } };
}

/** Writes a copy back with fresh CRCs. */
export async function writeCopy(path: string, lba: number, raw: RawGpt): Promise<void> {
  const h = Buffer.from(raw.header);
  h.writeUInt32LE(crc32(raw.entries) >>> 0, 88);
  h.writeUInt32LE(0, 16);
  const size = h.readUInt32LE(12);
  h.writeUInt32LE(crc32(h.subarray(0, size)) >>> 0, 16);
  await writeAt(path, lba * S, h);
  await writeAt(path, Number(h.readBigUInt64LE(72)) * S, raw.entries);
}

/** Applies `mutate` to the chosen copies and rewrites them with valid CRCs. */
export async function patchGpt(path: string, copies: ('primary' | 'backup')[], mutate: (raw: RawGpt) => void): Promise<void> {
  for (const which of copies) {
    const { lba, raw } = await readCopy(path, which);
    mutate(raw);
    await writeCopy(path, lba, raw);
  }
}

/** Sets first/last LBA of partition `n` (1-based) in an entry array. */
export function setEntryLbas(raw: RawGpt, n: number, first: number, last: number): void {
  const size = raw.header.readUInt32LE(84);
  const off = (n - 1) * size;
  raw.entries.writeBigUInt64LE(BigInt(first), off + 32);
  raw.entries.writeBigUInt64LE(BigInt(last), off + 40);
}
