import { execa } from 'execa';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileSource } from '../src/image/byte-source.js';
import { detectFilesystem } from '../src/image/fs-detect.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-fs-test-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const MiB = 1024 * 1024;
const cases: [string, number, string[]][] = [
  ['ext2', 16, ['mkfs.ext2', '-q', '-L', 'USR-A']],
  ['ext3', 16, ['mkfs.ext3', '-q', '-L', 'J']],
  ['ext4', 16, ['mkfs.ext4', '-q', '-L', 'ROOT']],
  ['ext4-nolabel', 16, ['mkfs.ext4', '-q']],
  ['btrfs', 128, ['mkfs.btrfs', '-q', '-L', 'OEM']],
  ['vfat12', 2, ['mkfs.vfat', '-F', '12', '-n', 'SMALL']],
  ['vfat16', 32, ['mkfs.vfat', '-F', '16', '-n', 'EFI-SYSTEM']],
  ['vfat32', 64, ['mkfs.vfat', '-F', '32', '-n', 'EFI-SYSTEM']],
  ['vfat-nolabel', 32, ['mkfs.vfat']],
];

describe('detectFilesystem agrees with blkid', () => {
  for (const [name, mib, cmd] of cases) {
    it(name, async () => {
      const p = join(work, `${name}.img`);
      await writeFile(p, '');
      await truncate(p, mib * MiB);
      await execa(cmd[0]!, [...cmd.slice(1), p]);
      const b = Object.fromEntries(
        (await execa('blkid', ['-p', '-o', 'export', p])).stdout
          .split('\n')
          .map((l) => l.split('=') as [string, string])
          .filter((kv) => kv.length === 2),
      );
      const src = await FileSource.open(p);
      const info = await detectFilesystem(src);
      await src.close();
      expect(info.type).toBe(b.TYPE);
      expect(info.label).toBe(b.LABEL);
      expect(info.uuid?.toLowerCase()).toBe(b.UUID?.toLowerCase());
    });
  }

  it('finds nothing in zeros or random bytes', async () => {
    const p = join(work, 'none.img');
    const buf = Buffer.alloc(2 * MiB);
    for (let i = 0; i < buf.length; i++) buf[i] = (i * 2654435761) >>> 24;
    await writeFile(p, buf);
    const src = await FileSource.open(p);
    expect((await detectFilesystem(src)).type).toBe('none');
    await src.close();
  });
});
