/**
 * normalizeBtrfs and the unused space of tree blocks: mkfs.btrfs --rootdir leaves there whatever the
 * block's memory held (inode items moved out, with the staging files' ctimes: a build of the
 * full-size release a second later gave another OEM partition). Two copies of one filesystem, one
 * with noise written into every leaf's gap between item headers and data and after every node's key
 * pointers (checksums recomputed), are byte-identical once normalized, and pass `btrfs check`.
 */
import { execa } from 'execa';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crc32c } from '../src/image/crc32c.js';
import { normalizeBtrfs } from '../src/write/btrfs-normalize.js';
import { noise } from './helpers/small-disks.js';

const SIZE = 64 * 1024 * 1024;
let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-btrfs-norm-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Noise in the unused space of every tree block of the btrfs image `img`; returns how many blocks got some. */
async function dirtyUnused(img: string): Promise<number> {
  const b = await readFile(img);
  const fsid = b.subarray(65536 + 32, 65536 + 48);
  const nodesize = b.readUInt32LE(65536 + 0x94);
  let dirtied = 0;
  for (let at = 0; at + nodesize <= b.length; at += nodesize) {
    const blk = b.subarray(at, at + nodesize);
    if (!blk.subarray(32, 48).equals(fsid) || blk.readUInt32LE(0) !== crc32c(blk.subarray(32))) continue;
    const n = blk.readUInt32LE(96);
    let [from, to] = [101 + n * 33, nodesize];
    if (blk[100] === 0) {
      from = 101 + n * 25;
      for (let i = 0; i < n; i++) to = Math.min(to, 101 + blk.readUInt32LE(101 + i * 25 + 17));
    }
    if (to - from < 16) continue;
    noise(to - from, `block ${at}`).copy(blk, from);
    blk.fill(0, 0, 32);
    blk.writeUInt32LE(crc32c(blk.subarray(32)), 0);
    dirtied++;
  }
  await writeFile(img, b);
  return dirtied;
}

describe('normalizeBtrfs', () => {
  it('zeros the unused space of tree blocks: a filesystem with noise there normalizes to the same bytes, and stays valid', async () => {
    const stage = join(work, 'stage');
    for (const [path, size] of [['grub.cfg', 61], ['base/base.ign', 3359], ['bin/oem-agent.xz', 3_000_000], ['system/oem.target', 128]] as const) {
      await mkdir(dirname(join(stage, path)), { recursive: true });
      await writeFile(join(stage, path), noise(size, path));
    }
    const clean = join(work, 'clean.img');
    await writeFile(clean, '');
    await truncate(clean, SIZE);
    await execa('mkfs.btrfs', ['-q', '-f', '--rootdir', stage, '-L', 'OEM', clean]);
    const dirty = join(work, 'dirty.img');
    await copyFile(clean, dirty);
    expect(await dirtyUnused(dirty)).toBeGreaterThan(3);
    const check = async (img: string) => {
      const r = await execa('btrfs', ['check', '--readonly', img], { reject: false });
      expect(r.exitCode, r.stderr).toBe(0);
    };
    await check(dirty);
    expect((await readFile(dirty)).equals(await readFile(clean))).toBe(false);
    // (mkfs.btrfs may make the file larger than it was.)
    for (const img of [clean, dirty]) expect(await normalizeBtrfs(img, 0, (await stat(img)).size, 1_700_000_000)).toBe(true);
    expect((await readFile(dirty)).equals(await readFile(clean))).toBe(true);
    await check(dirty);
  });
});
