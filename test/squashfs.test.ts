/**
 * oem's squashfs writer, read back by the independent readers: unsquashfs (every test) and Linux
 * itself (a loop mount, as root). The tree covers what the format splits: blocks (exactly one, one
 * and a byte, sparse, incompressible), metadata blocks (hundreds of inodes and a listing over 8 KiB),
 * directory headers, symlinks, modes; the store of compressed blocks is checked for reuse, damage and
 * providers writing at once.
 */
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rememberSource, StoreMiss, storedSource, writeSquashfs } from '../src/sysext/squashfs.js';

const isRoot = process.getuid?.() === 0;
const MTIME = 1_700_000_000;
let dir: string;
let tree: string;
let n = 0;

/** Bytes that compress somewhat (like an executable), the same for the same seed. */
function data(length: number, seed: string): Buffer {
  const out = Buffer.alloc(length);
  let block = createHash('sha256').update(seed).digest();
  for (let at = 0; at < length; at += 64) {
    block = createHash('sha256').update(block).digest();
    block.copy(out, at, 0, Math.min(16, length - at)); // 16 random bytes, 48 zeros
  }
  return out;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'oem-squashfs-'));
  tree = join(dir, 'tree');
  await mkdir(join(tree, 'usr/lib/acme/empty-dir'), { recursive: true });
  await mkdir(join(tree, 'many'));
  await writeFile(join(tree, 'usr/lib/acme/empty'), '');
  await writeFile(join(tree, 'usr/lib/acme/one-block'), data(128 * 1024, 'one'));
  await writeFile(join(tree, 'usr/lib/acme/one-block-and-a-byte'), data(128 * 1024 + 1, 'two'));
  // Random (stored uncompressed), zeros (sparse), a short tail.
  const { randomBytes } = await import('node:crypto');
  await writeFile(join(tree, 'usr/lib/acme/mixed'), Buffer.concat([randomBytes(128 * 1024), Buffer.alloc(256 * 1024), Buffer.from('tail\n')]));
  await writeFile(join(tree, 'usr/lib/acme/setuid'), '#!/bin/sh\n');
  await chmod(join(tree, 'usr/lib/acme/setuid'), 0o4750);
  await symlink('../acme/one-block', join(tree, 'usr/lib/acme/link'));
  await symlink('/nowhere/at/all', join(tree, 'usr/lib/dangling'));
  await writeFile(join(tree, 'x'.repeat(255)), 'long name\n');
  for (let i = 0; i < 700; i++) await writeFile(join(tree, 'many', `a-file-with-a-rather-long-name-${String(i).padStart(4, '0')}`), `${i}\n`);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Every entry under `root`: its type, permission bits, and content or target. */
async function listing(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    const p = join(root, rel);
    const st = await lstat(p);
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isDirectory()) {
      out.set(rel || '/', `dir ${mode}`);
      for (const name of (await readdir(p)).sort()) await walk(join(rel, name));
    } else if (st.isSymbolicLink()) out.set(rel, `link -> ${await readlink(p)}`);
    else out.set(rel, `file ${mode} ${createHash('sha256').update(await readFile(p)).digest('hex')}`);
  };
  await walk('');
  return out;
}

/** An image's SHA-256 (vitest's toEqual on megabytes of Buffer takes seconds). */
const sha = async (file: string) => createHash('sha256').update(await readFile(file)).digest('hex');

async function made(store?: string, from = tree): Promise<string> {
  const out = join(dir, `out-${n++}.raw`);
  await writeSquashfs(from, out, { mtime: MTIME, name: 'acme', ...(store ? { store } : {}) });
  return out;
}

describe('the squashfs writer', () => {
  it('writes what unsquashfs reads back: every file, mode, link and name, root-owned, at the given time', async () => {
    const img = await made();
    const x = join(dir, `x-${n++}`);
    await execa('unsquashfs', ['-no-progress', '-d', x, img]);
    expect(await listing(x)).toEqual(await listing(tree));
    const sb = (await execa('unsquashfs', ['-s', img])).stdout;
    expect(sb).toContain('Compression gzip');
    expect(sb).toContain('Block size 131072');
    expect(sb).toMatch(/Number of inodes 71\d/);
    const ls = (await execa('unsquashfs', ['-lln', '-UTC', img])).stdout.trim().split('\n').slice(1);
    expect(ls.length).toBeGreaterThan(700);
    for (const l of ls) expect(l, l).toMatch(/^\S+ 0\/0 +\d+ 2023-11-14 22:13 /);
    expect((await stat(img)).size % 4096).toBe(0);
  });

  it('gives the same bytes for the same tree', async () => {
    expect(await sha(await made())).toBe(await sha(await made()));
  });

  it('refuses what an extension cannot hold, and leaves no image', async () => {
    const t = join(dir, `fifo-tree-${n++}`);
    await mkdir(t);
    await execa('mkfifo', [join(t, 'pipe')]);
    const out = join(dir, 'fifo.raw');
    await expect(writeSquashfs(t, out, { mtime: MTIME, name: 'acme' })).rejects.toThrow(/only directories, regular files and symbolic links/);
    await expect(stat(out)).rejects.toThrow(/ENOENT/);
  });

  it.runIf(isRoot)('[root] is read by Linux: a loop mount shows the same tree, owners and times', { timeout: 60_000 }, async () => {
    const img = await made();
    const m = join(dir, `mnt-${n++}`);
    await mkdir(m);
    await execa('mount', ['-t', 'squashfs', '-o', 'loop,ro', img, m]);
    try {
      expect(await listing(m)).toEqual(await listing(tree));
      const st = await lstat(join(m, 'usr/lib/acme/setuid'));
      expect([st.uid, st.gid, st.mtimeMs / 1000, st.nlink]).toEqual([0, 0, MTIME, 1]);
      expect((await lstat(join(m, 'usr/lib'))).nlink).toBe(3); // itself, its entry in usr, acme/
      expect((await readdir(join(m, 'many'))).length).toBe(700);
    } finally {
      await execa('umount', [m]);
    }
  });
});

describe('the store of compressed blocks', () => {
  let big: string;
  beforeAll(async () => {
    big = join(dir, 'big-tree');
    await mkdir(join(big, 'usr/lib/acme'), { recursive: true });
    await writeFile(join(big, 'usr/lib/acme/agent'), data(5 * 1024 * 1024 + 1000, 'agent'));
    await writeFile(join(big, 'usr/lib/acme/small'), 'small\n');
  });

  const entries = async (store: string) => (await readdir(store)).filter((f) => f.endsWith('.gz128k'));

  it('keeps a large file\'s blocks and takes them from there: the same bytes as without', async () => {
    const store = join(dir, `store-${n++}`);
    const plain = await sha(await made(undefined, big));
    expect(await sha(await made(store, big))).toBe(plain);
    const [entry] = await entries(store);
    expect(entry).toBe(`${createHash('sha256').update(await readFile(join(big, 'usr/lib/acme/agent'))).digest('hex')}.gz128k`);
    expect(await sha(await made(store, big))).toBe(plain);

    // Taken from the store, not compressed again: an entry with other (well-formed) data shows up in the image.
    const path = join(store, entry!);
    const e = await readFile(path);
    const blocks = e.readUInt32LE(8);
    const head = 12 + 4 * blocks + 32;
    e[head + 100] = e[head + 100]! ^ 0xff;
    createHash('sha256').update(e.subarray(8, head - 32)).update(e.subarray(head)).digest().copy(e, head - 32); // over the sizes and the data
    await writeFile(path, e);
    expect(await sha(await made(store, big))).not.toBe(plain);
  });

  it('makes a damaged entry again (a flipped byte, a truncated file, another file\'s blocks, sizes swapped)', async () => {
    const store = join(dir, `store-${n++}`);
    const plain = await sha(await made(undefined, big));
    await made(store, big);
    const [entry] = await entries(store);
    const path = join(store, entry!);
    const good = await readFile(path);
    const flipped = Buffer.from(good);
    flipped[flipped.length - 5] = flipped[flipped.length - 5]! ^ 1;
    const other = Buffer.from(good);
    other.writeUInt32LE(3, 8);
    // Two blocks' sizes swapped: the same total, every block cut in the wrong place.
    const swapped = Buffer.from(good);
    expect(good.readUInt32LE(12)).not.toBe(good.readUInt32LE(16));
    swapped.writeUInt32LE(good.readUInt32LE(16), 12);
    swapped.writeUInt32LE(good.readUInt32LE(12), 16);
    for (const bad of [flipped, good.subarray(0, good.length - 1000), other, swapped, Buffer.from('nothing')]) {
      await writeFile(path, bad);
      expect(await sha(await made(store, big))).toBe(plain);
      expect((await readFile(path)).equals(good)).toBe(true);
    }
  });

  it('is shared by writers running at once: one compresses, the others wait and copy, all get the same bytes', async () => {
    const store = join(dir, `store-${n++}`);
    const plain = await sha(await made(undefined, big));
    const outs = await Promise.all([1, 2, 3].map(async () => {
      const out = join(dir, `out-${n++}.raw`);
      return { out, ...(await writeSquashfs(big, out, { mtime: MTIME, name: 'acme', store })) };
    }));
    for (const o of outs) expect(await sha(o.out)).toBe(plain);
    // One compressed the agent; the two others waited for it and took its blocks.
    expect(outs.map((o) => o.stored.length).sort()).toEqual([0, 1, 1]);
    expect((await readdir(store)).length).toBe(1); // one entry, no temporary file left
  });

  it('places a file it has from an earlier image, without the file: the same bytes as with it', async () => {
    const store = join(dir, `store-${n++}`);
    const agent = join(big, 'usr/lib/acme/agent');
    const plain = await sha(await made(undefined, big));
    await made(store, big);
    // The agent came from an .xz: the store learns which file that makes.
    const xz = join(dir, `agent-${n++}.xz`);
    await writeFile(xz, 'stands in for the compressed agent');
    expect(await storedSource(store, xz)).toBeUndefined();
    await rememberSource(store, xz, agent);
    const known = await storedSource(store, xz);
    expect(known).toEqual({ sha256: createHash('sha256').update(await readFile(agent)).digest('hex'), size: (await stat(agent)).size });

    // The tree without the agent, and the agent from the store: the image is the same.
    const without = join(dir, `without-${n++}`);
    await mkdir(join(without, 'usr/lib/acme'), { recursive: true });
    await writeFile(join(without, 'usr/lib/acme/small'), 'small\n');
    await chmod(join(without, 'usr/lib/acme/small'), (await stat(join(big, 'usr/lib/acme/small'))).mode & 0o7777);
    for (const d of [without, join(without, 'usr'), join(without, 'usr/lib'), join(without, 'usr/lib/acme')]) {
      await chmod(d, (await stat(join(big, d.slice(without.length)))).mode & 0o7777);
    }
    const out = join(dir, `out-${n++}.raw`);
    const r = await writeSquashfs(without, out, { mtime: MTIME, name: 'acme', store, stored: [{ path: '/usr/lib/acme/agent', mode: (await stat(agent)).mode & 0o7777, ...known! }] });
    expect(r.stored).toEqual(['usr/lib/acme/agent']);
    expect(await sha(out)).toBe(plain);

    // Into a directory the tree does not have, which sorts before its sibling: entries stay in order
    // (Linux's lookup stops at the first name past the one it looks for).
    const placed = join(dir, `out-${n++}.raw`);
    await writeSquashfs(without, placed, { mtime: MTIME, name: 'acme', store, stored: [{ path: '/usr/lib/a-new-dir/agent', mode: 0o755, ...known! }] });
    const order = (await execa('unsquashfs', ['-l', placed])).stdout.split('\n').filter((l) => l.startsWith('squashfs-root/usr/lib/'));
    expect(order).toEqual(['squashfs-root/usr/lib/a-new-dir', 'squashfs-root/usr/lib/a-new-dir/agent', 'squashfs-root/usr/lib/acme', 'squashfs-root/usr/lib/acme/small']);

    // Gone from the store: StoreMiss (the caller then makes the file), no image left, and storedSource no longer offers it.
    await rm(join(store, `${known!.sha256}.gz128k`));
    const gone = join(dir, `out-${n++}.raw`);
    await expect(writeSquashfs(without, gone, { mtime: MTIME, name: 'acme', store, stored: [{ path: '/usr/lib/acme/agent', mode: 0o755, ...known! }] })).rejects.toBeInstanceOf(StoreMiss);
    await expect(stat(gone)).rejects.toThrow(/ENOENT/);
    expect(await storedSource(store, xz)).toBeUndefined();
  });

  it('only saves time: a store that cannot be written changes nothing but the time', async () => {
    const blocked = join(dir, `not-a-dir-${n++}`);
    await writeFile(blocked, 'a file where the store would be');
    const plain = await sha(await made(undefined, big));
    expect(await sha(await made(join(blocked, 'store'), big))).toBe(plain);
  });
});
