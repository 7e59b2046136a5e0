import { copyFile, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { FileSource } from '../src/image/byte-source.js';
import { formatGuid, parseGuid, readGpt, type Gpt } from '../src/image/gpt.js';
import { LAYOUT, roleOf } from '../src/image/layout.js';
import { OemError } from '../src/shared/errors.js';
import { patchGpt, readCopy, setEntryLbas, writeAt } from './helpers/gpt-patch.js';

const fixtures = inject('fixtures');
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-gpt-test-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function gptOf(path: string): Promise<Gpt> {
  const src = await FileSource.open(path);
  try {
    return await readGpt(src);
  } finally {
    await src.close();
  }
}

async function gptError(path: string): Promise<OemError> {
  try {
    await gptOf(path);
  } catch (err) {
    expect(err).toBeInstanceOf(OemError);
    expect((err as OemError).exitCode).toBe(3);
    return err as OemError;
  }
  throw new Error('expected readGpt to refuse the image');
}

let n = 0;
async function copyOf(which: 'coreos' | 'flatcar' = 'flatcar'): Promise<string> {
  const p = join(work, `img-${n++}.bin`);
  await copyFile(fixtures[which].raw, p);
  return p;
}

describe('GUIDs', () => {
  it('round-trips the mixed-endian layout', () => {
    const g = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
    const b = parseGuid(g);
    expect(b.subarray(0, 4).toString('hex')).toBe('28732ac1');
    expect(formatGuid(b)).toBe(g);
  });
});

describe('readGpt on the test images', () => {
  for (const gen of ['coreos', 'flatcar'] as const) {
    it(`${gen}: has partitions 1,2,3,4,6,7,9 at their labels, types and roles`, async () => {
      const gpt = await gptOf(fixtures[gen].raw);
      expect(gpt.warnings).toEqual([]);
      expect(gpt.diskGuid).toBe('00000000-0000-0000-0000-000000000001');
      expect(gpt.entryCount).toBe(128);
      expect(gpt.partitions.map((p) => p.number)).toEqual([1, 2, 3, 4, 6, 7, 9]);
      for (const p of gpt.partitions) {
        const want = LAYOUT.find((l) => l.number === p.number)!;
        expect(p.label).toBe(want.label);
        expect(p.typeGuid).toBe(want.type);
        expect(roleOf(p.number, p.label, p.typeGuid)).toBe(want.role);
      }
      const usrA = gpt.partitions.find((p) => p.number === 3)!;
      expect(usrA.attributes).toBe(0x0101000000000000n);
      expect(gpt.partitions.find((p) => p.number === 4)!.attributes).toBe(0n);
    });
  }
});

describe('readGpt on damaged tables', () => {
  it('lets the backup stand in for a primary header with a bad CRC, with a warning', async () => {
    const p = await copyOf();
    await writeAt(p, 512 + 56, Buffer.from([0xff])); // a byte of the disk GUID
    const gpt = await gptOf(p);
    expect(gpt.warnings.join('\n')).toMatch(/primary GPT is damaged: primary GPT header \(LBA 1\) CRC32 mismatch.*backup.*stands in/);
    expect(gpt.diskGuid).toBe('00000000-0000-0000-0000-000000000001');
    expect(gpt.partitions).toHaveLength(7);
  });

  it('lets the backup stand in for a damaged primary entry array', async () => {
    const p = await copyOf();
    await writeAt(p, 1024 + 60, Buffer.from('XX', 'latin1'));
    const gpt = await gptOf(p);
    expect(gpt.warnings.join('\n')).toMatch(/primary partition entry array CRC32 mismatch/);
    expect(gpt.partitions.find((x) => x.number === 1)!.label).toBe('EFI-SYSTEM');
  });

  it('lets the primary stand in for a damaged backup', async () => {
    const p = await copyOf('coreos');
    const { lba } = await readCopy(p, 'backup');
    await writeAt(p, lba * 512, Buffer.alloc(8));
    const gpt = await gptOf(p);
    expect(gpt.warnings.join('\n')).toMatch(/backup GPT is damaged: backup GPT header \(LBA \d+\) has no "EFI PART" signature; the primary stands in/);
  });

  it('refuses an image whose both tables are corrupt', async () => {
    const p = await copyOf();
    const { lba } = await readCopy(p, 'backup');
    await writeAt(p, 512 + 56, Buffer.from([0xff]));
    await writeAt(p, lba * 512 + 56, Buffer.from([0xff]));
    const err = await gptError(p);
    expect(err.message).toMatch(/^corrupt partition table: primary GPT header \(LBA 1\) CRC32 mismatch.*backup GPT header.*CRC32 mismatch/);
  });

  it('refuses tables that disagree, each valid on its own', async () => {
    const p = await copyOf();
    await patchGpt(p, ['backup'], (raw) => setEntryLbas(raw, 9, 409600, 500000));
    const err = await gptError(p);
    expect(err.message).toBe('primary and backup GPT disagree: partition entries differ (entries 9)');
    expect(err.hint).toMatch(/sgdisk/);
  });

  it('refuses tables with different disk GUIDs', async () => {
    const p = await copyOf();
    await patchGpt(p, ['backup'], (raw) => parseGuid('11111111-2222-3333-4444-555555555555').copy(raw.header, 56));
    expect((await gptError(p)).message).toMatch(/disagree: disk GUID 00000000-0000-0000-0000-000000000001 vs 11111111-2222-3333-4444-555555555555/);
  });

  it('refuses a truncated image', async () => {
    const p = await copyOf();
    await truncate(p, 200 * 1024 * 1024);
    const err = await gptError(p);
    expect(err.message).toMatch(/^image is truncated: the GPT puts its backup header at LBA \d+ .* but the file is only 209715200 bytes$/);
  });

  it('refuses a file that is not a whole number of sectors', async () => {
    const p = await copyOf();
    await truncate(p, 200 * 1024 * 1024 + 100);
    expect((await gptError(p)).message).toMatch(/not a whole number of 512-byte sectors/);
  });

  it('refuses a file that is not a disk image', async () => {
    const p = join(work, 'random.bin');
    const buf = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < buf.length; i++) buf[i] = (i * 7919) % 251;
    await writeFile(p, buf);
    expect((await gptError(p)).message).toBe('not a disk image: no GPT header at LBA 1 and no protective MBR');
  });

  it('refuses a tiny file', async () => {
    const p = join(work, 'tiny.bin');
    await writeFile(p, 'hello');
    expect((await gptError(p)).message).toMatch(/^not a disk image: 5 bytes is too small/);
  });

  it('refuses an MBR-only disk', async () => {
    const p = join(work, 'mbr.bin');
    const disk = Buffer.alloc(8 * 1024 * 1024);
    // One Linux (0x83) partition from sector 2048, and the boot signature.
    const e = 446;
    disk[e + 4] = 0x83;
    disk.writeUInt32LE(2048, e + 8);
    disk.writeUInt32LE(4096, e + 12);
    disk.writeUInt16LE(0xaa55, 510);
    await writeFile(p, disk);
    expect((await gptError(p)).message).toBe('MBR-only disk: no GPT, only an MBR partition table (types 0x83); Container Linux images use GPT');
  });

  it('refuses a GPT laid out for 4096-byte sectors', async () => {
    const p = await copyOf();
    const { raw } = await readCopy(p, 'primary');
    const { lba } = await readCopy(p, 'backup');
    await writeAt(p, 4096, raw.header);
    await writeAt(p, 512, Buffer.alloc(512));
    await writeAt(p, lba * 512, Buffer.alloc(512));
    expect((await gptError(p)).message).toMatch(/^wrong sector size: the GPT is laid out for 4096-byte sectors/);
  });

  it('refuses a partition that ends beyond the last usable LBA', async () => {
    const p = await copyOf();
    await patchGpt(p, ['primary', 'backup'], (raw) => setEntryLbas(raw, 9, 409600, 544760));
    expect((await gptError(p)).message).toBe('partition 9 (ROOT) (LBA 409600-544760) lies outside the usable area (LBA 34-544734)');
  });

  it('refuses a partition that ends beyond the end of the disk', async () => {
    const p = await copyOf();
    await patchGpt(p, ['primary', 'backup'], (raw) => setEntryLbas(raw, 9, 409600, 9_000_000));
    expect((await gptError(p)).message).toBe('partition 9 (ROOT) ends at LBA 9000000, beyond the end of the disk (544768 sectors)');
  });

  it('an entry array placed past the end of a disk that fits the file: corrupt, not truncated', async () => {
    const { crc32 } = await import('node:zlib');
    const p = await copyOf();
    for (const which of ['primary', 'backup'] as const) {
      const { lba, raw } = await readCopy(p, which);
      const h = Buffer.from(raw.header);
      h.writeBigUInt64LE(600_000n, 72);
      h.writeUInt32LE(0, 16);
      h.writeUInt32LE(crc32(h.subarray(0, h.readUInt32LE(12))), 16);
      await writeAt(p, lba * 512, h);
    }
    const err = await gptError(p);
    expect(err.message).toBe('corrupt partition table: primary GPT header (LBA 1) places its partition entries (LBA 600000-600031) beyond the end of the disk (544768 sectors); and backup GPT header (LBA 544767) places its partition entries (LBA 600000-600031) beyond the end of the disk (544768 sectors)');
    expect(err.code).toBe('badImage');
  });

  it('refuses overlapping partitions', async () => {
    const p = await copyOf();
    await patchGpt(p, ['primary', 'backup'], (raw) => setEntryLbas(raw, 4, 100000, 139263));
    expect((await gptError(p)).message).toBe('partition 3 (USR-A) and partition 4 (USR-B) overlap at LBA 100000-106495');
  });

  it('refuses a partition whose start is after its end', async () => {
    const p = await copyOf();
    await patchGpt(p, ['primary', 'backup'], (raw) => setEntryLbas(raw, 7, 409599, 401408));
    expect((await gptError(p)).message).toBe('partition 7 (OEM-CONFIG) starts at LBA 409599 after its end at LBA 401408');
  });

  it('warns about a missing protective MBR', async () => {
    const p = await copyOf();
    await writeAt(p, 510, Buffer.alloc(2));
    const gpt = await gptOf(p);
    expect(gpt.warnings).toEqual(['protective MBR is missing (no 0x55AA boot signature at LBA 0)']);
  });
});
