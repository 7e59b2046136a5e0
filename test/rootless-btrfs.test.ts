/**
 * The rootless btrfs backend rebuilds the filesystem from `btrfs restore`'s files: what that cannot
 * keep (special files, hard links, subvolumes) is found in the filesystem's trees first, so that the
 * backend refuses instead of dropping it.
 */
import { execa } from 'execa';
import { link, mkdir, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unkept } from '../src/write/rootless-btrfs.js';

let work: string;
let n = 0;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-rootless-btrfs-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** A btrfs image made by mkfs.btrfs --rootdir from a tree that `fill` makes. */
async function fsWith(fill: (root: string) => Promise<unknown>): Promise<string> {
  const root = join(work, `root-${n}`);
  await mkdir(join(root, 'dir'), { recursive: true });
  await writeFile(join(root, 'dir', 'file'), 'content\n');
  await fill(root);
  const img = join(work, `fs-${n++}.img`);
  await writeFile(img, '');
  await truncate(img, 128 * 1024 * 1024);
  await execa('mkfs.btrfs', ['-q', '--rootdir', root, img]);
  return img;
}

describe('what a rebuild would lose', () => {
  it('nothing in plain files, directories and symlinks', async () => {
    expect(await unkept(await fsWith((r) => execa('ln', ['-s', 'dir/file', join(r, 'link')])))).toBeNull();
  });
  it('a FIFO, a device, hard links: named', async () => {
    expect(await unkept(await fsWith((r) => execa('mkfifo', [join(r, 'dir', 'pipe')])))).toBe('the special file pipe (a FIFO)');
    expect(await unkept(await fsWith((r) => link(join(r, 'dir', 'file'), join(r, 'again'))))).toMatch(/^the hard links of inode \d+ \(2 names\)$/);
  });
});

describe.runIf(process.getuid?.() === 0)('a subvolume [root: mount]', () => {
  it('is found in the root tree', async () => {
    const img = await fsWith(async () => undefined);
    const mnt = await mkdtemp(join(work, 'mnt-'));
    await execa('mount', ['-o', 'loop', img, mnt]);
    try {
      await execa('btrfs', ['subvolume', 'create', join(mnt, 'sub')]);
    } finally {
      await execa('umount', [mnt]);
    }
    expect(await unkept(img)).toBe('a subvolume or snapshot (tree 256)');
  });
});
