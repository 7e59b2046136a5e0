import { execa } from 'execa';
import { copyFile, mkdtemp, rm, truncate, writeFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { InspectReport } from '../src/image/inspect.js';
import { buildTestImage } from '../scripts/lib/test-image.js';
import { expectCleanError, oem, oemJson } from './helpers/cli.js';
import { readCopy, writeAt } from './helpers/gpt-patch.js';

const fixtures = inject('fixtures');
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-inspect-test-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

interface SgdiskPart {
  number: number;
  first: number;
  last: number;
  name: string;
  typeGuid: string;
  uniqueGuid: string;
  attributes: string;
}

/** What sgdisk says about an image: disk GUID, sector size and every partition. */
async function sgdisk(image: string): Promise<{ diskGuid: string; sectorSize: number; parts: SgdiskPart[] }> {
  const p = (await execa('sgdisk', ['-p', image])).stdout;
  const diskGuid = /Disk identifier \(GUID\): (\S+)/.exec(p)![1]!;
  const sectorSize = Number(/Sector size \(logical\): (\d+)/.exec(p)![1]);
  const numbers = [...p.matchAll(/^\s+(\d+)\s+(\d+)\s+(\d+)\s/gm)].map((m) => Number(m[1]));
  const parts: SgdiskPart[] = [];
  for (const n of numbers) {
    const i = (await execa('sgdisk', ['-i', String(n), image])).stdout;
    parts.push({
      number: n,
      first: Number(/First sector: (\d+)/.exec(i)![1]),
      last: Number(/Last sector: (\d+)/.exec(i)![1]),
      name: /Partition name: '(.*)'/.exec(i)![1]!,
      typeGuid: /Partition GUID code: (\S+)/.exec(i)![1]!,
      uniqueGuid: /Partition unique GUID: (\S+)/.exec(i)![1]!,
      attributes: /Attribute flags: (\S+)/.exec(i)![1]!,
    });
  }
  return { diskGuid, sectorSize, parts };
}

/** What blkid says about the filesystem at a byte offset ({} when it finds none). */
async function blkid(image: string, offset: number, size: number): Promise<Record<string, string>> {
  const r = await execa('blkid', ['-p', '-o', 'export', '-O', String(offset), '-S', String(size), image], { reject: false });
  const out: Record<string, string> = {};
  for (const line of r.stdout.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

describe('oem inspect agrees with sgdisk and blkid', () => {
  for (const gen of ['coreos', 'flatcar'] as const) {
    it(`${gen} image`, async () => {
      const image = fixtures[gen].raw;
      const { result, json } = await oemJson<InspectReport>(['inspect', image]);
      expect(result.exitCode).toBe(0);
      const sg = await sgdisk(image);
      expect(json.diskGuid).toBe(sg.diskGuid);
      expect(json.sectorSize).toBe(sg.sectorSize);
      expect(json.size).toBe((await stat(image)).size);
      expect(json.partitions.map((p) => p.number)).toEqual(sg.parts.map((p) => p.number));
      for (const sp of sg.parts) {
        const p = json.partitions.find((x) => x.number === sp.number)!;
        expect(p.label).toBe(sp.name);
        expect(p.firstLba).toBe(sp.first);
        expect(p.lastLba).toBe(sp.last);
        expect(p.size).toBe((sp.last - sp.first + 1) * 512);
        expect(p.typeGuid).toBe(sp.typeGuid);
        expect(p.uniqueGuid).toBe(sp.uniqueGuid);
        expect(p.attributes).toBe('0x' + sp.attributes.toLowerCase());
        const b = await blkid(image, sp.first * 512, p.size);
        expect(p.filesystem.type).toBe(b.TYPE ?? 'none');
        expect(p.filesystem.label).toBe(b.LABEL);
        expect(p.filesystem.uuid?.toLowerCase()).toBe(b.UUID?.toLowerCase());
      }
      const roles = Object.fromEntries(json.partitions.map((p) => [p.number, p.role]));
      expect(roles).toEqual({ 1: 'esp', 2: 'bios-boot', 3: 'usr-a', 4: 'usr-b', 6: 'oem', 7: 'oem-config', 9: 'root' });
      expect(json.partitions.find((p) => p.number === 3)!.usr).toEqual({ priority: 1, tries: 0, successful: true });
      expect(json.partitions.find((p) => p.number === 6)!.filesystem.type).toBe(gen === 'coreos' ? 'ext4' : 'btrfs');

      expect(json.generation.name).toBe(gen);
      expect(json.generation.version).toBe(fixtures[gen].version);
      expect(json.generation.oemMountPoint).toBe('/usr/share/oem');
      expect(json.generation.evidence).toContain(`USR-A os-release ID=${gen}`);
      expect(json.generation.evidence).toContain(`ESP has ${gen}/first_boot`);

      expect(json.oem?.readable).toBe(true);
      expect(json.oem?.oemId).toBe('qemu');
      expect(json.oem?.grub).toEqual({ oem_id: 'qemu', linux_append: 'console=ttyS0' });
      expect(json.oem?.oemRelease?.ID).toBe('qemu');
      expect(json.oem?.oemRelease?.NAME).toBe('QEMU');
      const tool = json.oem!.files.find((f) => f.path === '/bin/tool')!;
      expect(tool).toMatchObject({ type: 'file', mode: 0o755, size: 18 });
      expect(json.oem!.files.find((f) => f.path === '/grub.cfg')).toMatchObject({ type: 'file', mode: 0o644 });
    });
  }

  it('prints a readable table without --json', async () => {
    const r = await oem(['inspect', fixtures.flatcar.raw]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/Disk GUID:\s+00000000-0000-0000-0000-000000000001/);
    expect(r.stdout).toMatch(/^3\s+USR-A\s+usr-a .* ext2 "USR-A" .*priority 1, tries 0, successful 1/m);
    expect(r.stdout).toMatch(/^6\s+OEM\s+oem .* btrfs "OEM"/m);
    expect(r.stdout).toMatch(/OEM partition \(btrfs\): oem_id "qemu"/);
    expect(r.stdout).toMatch(/0755 \d+:\d+ \/bin\/tool \(18 bytes\)/);
  });

  it('reads a .bin.bz2 by streaming it, with the same result as the raw image', async () => {
    for (const gen of ['coreos', 'flatcar'] as const) {
      const raw = (await oemJson<InspectReport>(['inspect', fixtures[gen].raw])).json;
      const { result, json } = await oemJson<InspectReport>(['inspect', fixtures[gen].bz2]);
      expect(result.exitCode).toBe(0);
      expect(json.compression).toBe('bz2');
      expect(['lbzip2', 'bzip2']).toContain(json.decompressor);
      expect(json.image).toBe(fixtures[gen].bz2);
      const strip = (r: InspectReport) => ({ ...r, image: '', compression: '', decompressor: '' });
      expect(strip(json)).toEqual(strip(raw));
    }
  });

  it('reads .gz, .xz and .zst images too, with the same result', async () => {
    const raw = (await oemJson<InspectReport>(['inspect', fixtures.flatcar.raw])).json;
    for (const [ext, cmd, compression] of [['gz', 'gzip -1 -c', 'gz'], ['xz', 'xz -0 -T0 -c', 'xz'], ['zst', 'zstd -1 -q -c', 'zst']] as const) {
      const p = join(work, `image.bin.${ext}`);
      await execa('sh', ['-c', `${cmd} "${fixtures.flatcar.raw}" > "${p}"`]);
      const { result, json } = await oemJson<InspectReport>(['inspect', p]);
      expect(result.exitCode).toBe(0);
      expect(json.compression).toBe(compression);
      expect(json.partitions).toEqual(raw.partitions);
      expect(json.oem).toEqual(raw.oem);
    }
  });

  it('falls back to the built-in bzip2 decoder (OEM_BZIP2=js), with the same result', async () => {
    const raw = (await oemJson<InspectReport>(['inspect', fixtures.coreos.raw])).json;
    const { result, json } = await oemJson<InspectReport>(['inspect', fixtures.coreos.bz2], { env: { OEM_BZIP2: 'js' } });
    expect(result.exitCode).toBe(0);
    expect(json.decompressor).toBe('js');
    expect(json.partitions).toEqual(raw.partitions);
    expect(json.oem).toEqual(raw.oem);
    const p = join(work, 'trunc-js.bin.bz2');
    await copyFile(fixtures.coreos.bz2, p);
    await truncate(p, 3000);
    const bad = await oem(['inspect', p], { env: { OEM_BZIP2: 'js' } });
    expect(bad.exitCode).toBe(3);
    expect(expectCleanError(bad)).toMatch(/is corrupt or truncated: bzip2 data is truncated/);
  });

  it('detects a newer Flatcar with its OEM at /oem from os-release', async () => {
    const img = await buildTestImage({ path: join(work, 'new.bin'), generation: 'flatcar', version: '3700.0.0', versionTxt: false });
    const { json } = await oemJson<InspectReport>(['inspect', img.path]);
    expect(json.generation).toMatchObject({ name: 'flatcar', version: '3700.0.0', oemMountPoint: '/oem' });
    expect(json.oem).toMatchObject({ readable: true, filesystem: 'btrfs', files: [] });
  });

  it('reports a damaged primary table the backup stands in for, and exits 0', async () => {
    const p = join(work, 'damaged.bin');
    await copyFile(fixtures.coreos.raw, p);
    await writeAt(p, 512 + 60, Buffer.from([1, 2, 3]));
    const { result, json } = await oemJson<InspectReport>(['inspect', p]);
    expect(result.exitCode).toBe(0);
    expect(json.warnings[0]).toMatch(/^primary GPT is damaged: .*CRC32 mismatch.*backup.*stands in$/);
    expect(json.partitions).toHaveLength(7);
    expect((await oem(['inspect', p])).stdout).toMatch(/Warning:\s+primary GPT is damaged/);
  });
});

describe('oem inspect refuses bad input with one line and a non-zero exit', () => {
  const cases: [string, () => Promise<string>, RegExp][] = [
    ['a missing file', async () => join(work, 'nope.bin'), /^no such image: /],
    ['a directory', async () => work, /^not a regular file: /],
    [
      'a text file',
      async () => {
        const p = join(work, 'text.bin');
        await writeFile(p, 'hello world\n'.repeat(1000));
        return p;
      },
      /^not a disk image/,
    ],
    [
      'a truncated raw image',
      async () => {
        const p = join(work, 'trunc.bin');
        await copyFile(fixtures.flatcar.raw, p);
        await truncate(p, 100 * 1024 * 1024);
        return p;
      },
      /^image is truncated: /,
    ],
    [
      'a truncated .bin.bz2',
      async () => {
        const p = join(work, 'trunc.bin.bz2');
        await copyFile(fixtures.flatcar.bz2, p);
        await truncate(p, Math.floor((await stat(p)).size / 2));
        return p;
      },
      /is corrupt or truncated: (lbzip2|bzip2) says: /,
    ],
    [
      'both tables corrupt',
      async () => {
        const p = join(work, 'both.bin');
        await copyFile(fixtures.flatcar.raw, p);
        const { lba } = await readCopy(p, 'backup');
        await writeAt(p, 512 + 60, Buffer.from([9]));
        await writeAt(p, lba * 512 + 60, Buffer.from([9]));
        return p;
      },
      /^corrupt partition table: /,
    ],
  ];
  for (const [name, make, re] of cases) {
    it(name, async () => {
      const p = await make();
      const r = await oem(['inspect', p]);
      expect(expectCleanError(r)).toMatch(re);
      expect(r.exitCode).toBeGreaterThan(1);
      const j = await oem(['inspect', p, '--json']);
      expect(j.exitCode).toBe(r.exitCode);
      expect(JSON.parse(j.stdout).error.message).toMatch(re);
    });
  }

  it('refuses an unknown flag as a usage error', async () => {
    const r = await oem(['inspect', fixtures.coreos.raw, '--bogus']);
    expect(r.exitCode).toBe(2);
    expect(expectCleanError(r)).toMatch(/Nonexistent flag: --bogus/);
  });
});
