import { crc32 } from 'node:zlib';
import { badImage } from '../shared/errors.js';
import type { ByteSource } from './byte-source.js';

/**
 * A strict GPT reader over a ByteSource. It checks the protective MBR, both headers and both entry
 * arrays with their CRC32s, and the partition entries against each other and the disk. A damaged
 * table that the other copy can stand in for is reported as a warning; anything it cannot trust is an
 * OemError (exit code badImage) with a one-line reason.
 */

export const SECTOR = 512;
const SIGNATURE = 'EFI PART';
const REVISION = 0x00010000;
const MAX_ENTRY_BYTES = 1024 * 1024;

export interface GptPartition {
  number: number;
  label: string;
  typeGuid: string;
  uniqueGuid: string;
  firstLba: number;
  lastLba: number;
  /** Size in bytes. */
  size: number;
  /** Byte offset of the first sector. */
  offset: number;
  attributes: bigint;
}

export interface GptHeader {
  myLba: number;
  alternateLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  diskGuid: string;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
  entriesCrc: number;
}

export interface Gpt {
  sectorSize: number;
  diskGuid: string;
  primary: GptHeader | null;
  backup: GptHeader | null;
  firstUsableLba: number;
  lastUsableLba: number;
  entryCount: number;
  entrySize: number;
  /** Non-empty entries, by partition number. */
  partitions: GptPartition[];
  /** Problems the reader worked around (a damaged copy the other stood in for). */
  warnings: string[];
}

/** Formats a GUID stored in the GPT mixed-endian layout. */
export function formatGuid(b: Buffer): string {
  const hex = (x: Buffer) => x.toString('hex');
  const le = (x: Buffer) => hex(Buffer.from(x).reverse());
  return [le(b.subarray(0, 4)), le(b.subarray(4, 6)), le(b.subarray(6, 8)), hex(b.subarray(8, 10)), hex(b.subarray(10, 16))]
    .join('-')
    .toUpperCase();
}

export function parseGuid(s: string): Buffer {
  const m = /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$/i.exec(s);
  if (!m) throw new Error(`not a GUID: ${s}`);
  const rev = (h: string) => Buffer.from(h, 'hex').reverse();
  return Buffer.concat([rev(m[1]!), rev(m[2]!), rev(m[3]!), Buffer.from(m[4]!, 'hex'), Buffer.from(m[5]!, 'hex')]);
}

const ZERO_GUID = '00000000-0000-0000-0000-000000000000';

function u64(buf: Buffer, off: number): number {
  const v = buf.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) return Number.MAX_SAFE_INTEGER;
  return Number(v);
}

interface HeaderResult {
  header?: GptHeader;
  entries?: Buffer;
  problem?: string;
  /** A header that is intact but describes a disk larger than the file. */
  beyondEnd?: GptHeader;
}

async function readExactly(src: ByteSource, offset: number, length: number): Promise<Buffer | null> {
  if (offset < 0 || offset + length > src.size) return null;
  const b = await src.read(offset, length);
  return b.length === length ? b : null;
}

function describeLba(which: string, lba: number): string {
  return `${which} GPT header (LBA ${lba})`;
}

/** Reads and checks one header and its entry array; returns a problem string instead of throwing. */
async function readHeader(src: ByteSource, lba: number, which: 'primary' | 'backup', totalSectors: number): Promise<HeaderResult> {
  const where = describeLba(which, lba);
  const sec = await readExactly(src, lba * SECTOR, SECTOR);
  if (!sec) return { problem: `${where} lies beyond the end of the file` };
  if (sec.toString('latin1', 0, 8) !== SIGNATURE) return { problem: `${where} has no "EFI PART" signature` };
  const revision = sec.readUInt32LE(8);
  if (revision !== REVISION) return { problem: `${where} has unsupported revision 0x${revision.toString(16)}` };
  const headerSize = sec.readUInt32LE(12);
  if (headerSize < 92 || headerSize > SECTOR) return { problem: `${where} has an invalid header size ${headerSize}` };
  const storedCrc = sec.readUInt32LE(16);
  const copy = Buffer.from(sec.subarray(0, headerSize));
  copy.writeUInt32LE(0, 16);
  const crc = crc32(copy) >>> 0;
  if (crc !== storedCrc) {
    return { problem: `${where} CRC32 mismatch (stored 0x${storedCrc.toString(16).padStart(8, '0')}, computed 0x${crc.toString(16).padStart(8, '0')})` };
  }
  const h: GptHeader = {
    myLba: u64(sec, 24),
    alternateLba: u64(sec, 32),
    firstUsableLba: u64(sec, 40),
    lastUsableLba: u64(sec, 48),
    diskGuid: formatGuid(sec.subarray(56, 72)),
    entriesLba: u64(sec, 72),
    entryCount: sec.readUInt32LE(80),
    entrySize: sec.readUInt32LE(84),
    entriesCrc: sec.readUInt32LE(88),
  };
  if (h.myLba !== lba) return { problem: `${where} says it is at LBA ${h.myLba}` };
  if (h.entrySize < 128 || h.entrySize % 128 !== 0 || (h.entrySize & (h.entrySize - 1)) !== 0) {
    return { problem: `${where} has an invalid partition entry size ${h.entrySize}` };
  }
  const entryBytes = h.entryCount * h.entrySize;
  if (h.entryCount === 0 || entryBytes > MAX_ENTRY_BYTES) {
    return { problem: `${where} has an implausible partition entry count ${h.entryCount}` };
  }
  if (h.firstUsableLba > h.lastUsableLba) {
    return { problem: `${where} has first usable LBA ${h.firstUsableLba} after last usable LBA ${h.lastUsableLba}` };
  }
  const entrySectors = Math.ceil(entryBytes / SECTOR);
  const entriesEnd = h.entriesLba + entrySectors - 1;
  if (h.entriesLba < 2 || (h.entriesLba <= h.lastUsableLba && entriesEnd >= h.firstUsableLba)) {
    return { problem: `${where} places its partition entries (LBA ${h.entriesLba}-${entriesEnd}) inside the usable area` };
  }
  if (entriesEnd >= totalSectors && h.lastUsableLba < totalSectors && h.alternateLba < totalSectors) {
    // The disk the header describes fits the file: its entry array's place is what is wrong.
    return { problem: `${where} places its partition entries (LBA ${h.entriesLba}-${entriesEnd}) beyond the end of the disk (${totalSectors} sectors)` };
  }
  if (h.lastUsableLba >= totalSectors || entriesEnd >= totalSectors || h.alternateLba >= totalSectors) {
    return { beyondEnd: h, problem: `${where} describes a disk of at least ${Math.max(h.lastUsableLba, entriesEnd) + 1} sectors but the file has ${totalSectors}` };
  }
  const entries = await readExactly(src, h.entriesLba * SECTOR, entryBytes);
  if (!entries) return { problem: `${which} partition entries (LBA ${h.entriesLba}) lie beyond the end of the file` };
  const ecrc = crc32(entries) >>> 0;
  if (ecrc !== h.entriesCrc) {
    return {
      problem: `${which} partition entry array CRC32 mismatch (stored 0x${h.entriesCrc.toString(16).padStart(8, '0')}, computed 0x${ecrc.toString(16).padStart(8, '0')})`,
    };
  }
  return { header: h, entries };
}

function parseEntries(entries: Buffer, h: GptHeader): GptPartition[] {
  const parts: GptPartition[] = [];
  for (let i = 0; i < h.entryCount; i++) {
    const e = entries.subarray(i * h.entrySize, (i + 1) * h.entrySize);
    const typeGuid = formatGuid(e.subarray(0, 16));
    if (typeGuid === ZERO_GUID) continue;
    const firstLba = u64(e, 32);
    const lastLba = u64(e, 40);
    let label = e.subarray(56, 128).toString('utf16le');
    const nul = label.indexOf('\0');
    if (nul >= 0) label = label.slice(0, nul);
    parts.push({
      number: i + 1,
      label,
      typeGuid,
      uniqueGuid: formatGuid(e.subarray(16, 32)),
      firstLba,
      lastLba,
      size: (lastLba - firstLba + 1) * SECTOR,
      offset: firstLba * SECTOR,
      attributes: e.readBigUInt64LE(48),
    });
  }
  return parts;
}

function checkMbr(mbr: Buffer): { protective: boolean; types: number[]; signature: boolean } {
  const signature = mbr.readUInt16LE(510) === 0xaa55;
  const types: number[] = [];
  for (let i = 0; i < 4; i++) {
    const t = mbr[446 + i * 16 + 4]!;
    if (t !== 0) types.push(t);
  }
  return { signature, types, protective: signature && types.includes(0xee) };
}

function partDesc(p: GptPartition): string {
  return p.label ? `partition ${p.number} (${p.label})` : `partition ${p.number}`;
}

/** Reads and validates the GPT of a disk image with 512-byte logical sectors. */
export async function readGpt(src: ByteSource): Promise<Gpt> {
  if (src.size < SECTOR * 3) {
    throw badImage(`not a disk image: ${src.size} bytes is too small to hold a partition table`);
  }
  const mbr = await src.read(0, SECTOR);
  const mbrInfo = checkMbr(mbr);
  if (!mbrInfo.signature && (await src.read(SECTOR, 8)).toString('latin1') !== SIGNATURE) {
    throw badImage('not a disk image: no GPT header at LBA 1 and no protective MBR');
  }
  if (src.size % SECTOR !== 0) {
    throw badImage(`not a whole number of 512-byte sectors: ${src.size} bytes (truncated or not a disk image)`);
  }
  const totalSectors = src.size / SECTOR;
  const warnings: string[] = [];

  const primary = await readHeader(src, 1, 'primary', totalSectors);
  if (primary.beyondEnd) {
    const lba = Math.max(primary.beyondEnd.alternateLba, primary.beyondEnd.lastUsableLba);
    throw badImage(
      `image is truncated: the GPT puts its backup header at LBA ${lba} (byte ${lba * SECTOR}) but the file is only ${src.size} bytes`,
      'download or decompress the image again',
    );
  }
  // Where to look for the backup: where the primary says, else the last sector.
  const backupLba = primary.header ? primary.header.alternateLba : totalSectors - 1;
  const backup = await readHeader(src, backupLba, 'backup', totalSectors);

  if (!primary.header && !backup.header) {
    const sig4k = await readExactly(src, 4096, 8);
    if (sig4k?.toString('latin1') === SIGNATURE) {
      throw badImage('wrong sector size: the GPT is laid out for 4096-byte sectors; Container Linux images use 512-byte sectors');
    }
    const hdrSig = (await readExactly(src, SECTOR, 8))?.toString('latin1');
    if (hdrSig !== SIGNATURE && mbrInfo.signature && mbrInfo.types.length > 0 && !mbrInfo.protective) {
      const types = mbrInfo.types.map((t) => '0x' + t.toString(16).padStart(2, '0')).join(', ');
      throw badImage(`MBR-only disk: no GPT, only an MBR partition table (types ${types}); Container Linux images use GPT`);
    }
    if (hdrSig !== SIGNATURE) {
      throw badImage('not a disk image: no GPT header at LBA 1 and no protective MBR');
    }
    throw badImage(`corrupt partition table: ${primary.problem}; and ${backup.problem}`);
  }

  if (!mbrInfo.signature) warnings.push('protective MBR is missing (no 0x55AA boot signature at LBA 0)');
  else if (!mbrInfo.protective) warnings.push('MBR at LBA 0 has no protective 0xEE partition (hybrid or foreign MBR)');

  let h: GptHeader;
  let entries: Buffer;
  if (primary.header && backup.header) {
    const p = primary.header;
    const b = backup.header;
    const diffs: string[] = [];
    if (b.alternateLba !== 1) diffs.push(`backup header points to its alternate at LBA ${b.alternateLba}, not 1`);
    if (p.diskGuid !== b.diskGuid) diffs.push(`disk GUID ${p.diskGuid} vs ${b.diskGuid}`);
    if (p.firstUsableLba !== b.firstUsableLba || p.lastUsableLba !== b.lastUsableLba) {
      diffs.push(`usable LBAs ${p.firstUsableLba}-${p.lastUsableLba} vs ${b.firstUsableLba}-${b.lastUsableLba}`);
    }
    if (p.entryCount !== b.entryCount || p.entrySize !== b.entrySize) {
      diffs.push(`entry count/size ${p.entryCount}x${p.entrySize} vs ${b.entryCount}x${b.entrySize}`);
    } else if (!primary.entries!.equals(backup.entries!)) {
      const pp = parseEntries(primary.entries!, p);
      const bp = parseEntries(backup.entries!, b);
      const nums = new Set([...pp, ...bp].map((x) => x.number));
      const differing = [...nums].filter((n) => {
        const x = pp.find((q) => q.number === n);
        const y = bp.find((q) => q.number === n);
        return JSON.stringify(x, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) !==
          JSON.stringify(y, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
      });
      diffs.push(`partition entries differ (${differing.length ? 'entries ' + differing.join(', ') : 'unused entry bytes'})`);
    }
    if (diffs.length) {
      throw badImage(`primary and backup GPT disagree: ${diffs.join('; ')}`, 'repair the table with a partitioning tool (e.g. sgdisk -v) before using this image');
    }
    h = p;
    entries = primary.entries!;
  } else if (primary.header) {
    warnings.push(`backup GPT is damaged: ${backup.problem}; the primary stands in`);
    h = primary.header;
    entries = primary.entries!;
  } else {
    warnings.push(`primary GPT is damaged: ${primary.problem}; the backup at LBA ${backupLba} stands in`);
    h = backup.header!;
    entries = backup.entries!;
  }

  const partitions = parseEntries(entries, h);
  for (const p of partitions) {
    if (p.firstLba > p.lastLba) {
      throw badImage(`${partDesc(p)} starts at LBA ${p.firstLba} after its end at LBA ${p.lastLba}`);
    }
    if (p.lastLba >= totalSectors) {
      throw badImage(`${partDesc(p)} ends at LBA ${p.lastLba}, beyond the end of the disk (${totalSectors} sectors)`);
    }
    if (p.firstLba < h.firstUsableLba || p.lastLba > h.lastUsableLba) {
      throw badImage(
        `${partDesc(p)} (LBA ${p.firstLba}-${p.lastLba}) lies outside the usable area (LBA ${h.firstUsableLba}-${h.lastUsableLba})`,
      );
    }
  }
  const sorted = [...partitions].sort((a, b) => a.firstLba - b.firstLba);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (b.firstLba <= a.lastLba) {
      throw badImage(`${partDesc(a)} and ${partDesc(b)} overlap at LBA ${b.firstLba}-${Math.min(a.lastLba, b.lastLba)}`);
    }
  }

  return {
    sectorSize: SECTOR,
    diskGuid: h.diskGuid,
    primary: primary.header ?? null,
    backup: backup.header ?? null,
    firstUsableLba: h.firstUsableLba,
    lastUsableLba: h.lastUsableLba,
    entryCount: h.entryCount,
    entrySize: h.entrySize,
    partitions,
    warnings,
  };
}
