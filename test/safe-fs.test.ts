/**
 * The one set of tree rules (src/shared/safe-fs.ts) that the builder's DirWriter and the agent's
 * provisioning both write through, against hostile trees: links to `/`, to `..`, to the host,
 * loops, a file where a directory is expected, FIFOs and files that grow. A canary directory on
 * the host must stay untouched through all of it.
 */
import { execFileSync } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OemError } from '../src/shared/errors.js';
import { cleanPath, exists, isCleanPath, linkTargetProblem, hostFile, readBounded, readFileIn, resolveIn, RootFs } from '../src/shared/safe-fs.js';
import { DirWriter } from '../src/write/dir-writer.js';
import type { PartitionTarget } from '../src/write/session.js';

let base: string;
let root: string;
let canary: string;

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'oem-safe-fs-'));
  root = join(base, 'root');
  canary = join(base, 'canary');
  await mkdir(join(root, 'etc'), { recursive: true });
  await mkdir(canary);
  await writeFile(join(canary, 'secret'), 'SECRET');
});

afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

/** Everything under the canary, with content: it must never change. */
async function canaryState(): Promise<string[]> {
  const names = (await readdir(canary, { recursive: true })).sort();
  return Promise.all(names.map(async (n) => `${n}=${(await lstat(join(canary, n))).isFile() ? await readFile(join(canary, n), 'utf8') : 'dir'}`));
}

/**
 * The hostile shapes every writer meets, each as [name, make it under `root`, the path written
 * through it]. Each must be refused, naming the offending component, and write nothing anywhere.
 */
const HOSTILE: [string, () => Promise<void>, string, RegExp][] = [
  ['a link to the host /', () => symlink('/', join(root, 'etc/sys')), `/etc/sys/tmp/oem-safe-fs-${process.pid}`, /\/etc\/sys/],
  ['a link to the canary (absolute host path)', () => symlink(canary, join(root, 'etc/sys')), '/etc/sys/x', /\/etc\/sys/],
  ['a link climbing out with ..', () => symlink('../../canary', join(root, 'etc/sys')), '/etc/sys/x', /\/etc\/sys/],
  ['a link to ..', () => symlink('..', join(root, 'etc/sys')), '/etc/sys/canary/x', /\/etc\/sys/],
  ['a link loop', () => symlink('loop', join(root, 'etc/loop')), '/etc/loop/x', /\/etc\/loop/],
  ['a file where a directory is expected', () => writeFile(join(root, 'etc/file'), 'x'), '/etc/file/x', /\/etc\/file .*not a directory|\/etc\/file is a regular file/],
];

describe('paths', () => {
  it('one rule for every path written or read inside a tree', () => {
    expect(cleanPath('/etc//ssh/./sshd_config/')).toBe('/etc/ssh/sshd_config');
    expect(cleanPath('/')).toBe('/');
    for (const [bad, why] of [
      ['etc/motd', /not an absolute path/],
      ['', /not an absolute path/],
      ['/etc/../etc/shadow', /has a "\.\." component/],
      ['/..', /has a "\.\." component/],
      ['/etc/mo\ntd', /control characters/],
      ['/etc/a\0b', /control characters/],
      ['/etc/tab\there', /control characters/],
      [`/${'x'.repeat(256)}`, /name longer than 255 bytes/],
      [`/${'é'.repeat(128)}`, /name longer than 255 bytes/],
      [`/${'a/'.repeat(2048)}b`, /longer than 4096 bytes/],
    ] as const) {
      expect(() => cleanPath(bad), bad).toThrow(why);
      try {
        cleanPath(bad);
      } catch (err) {
        expect((err as OemError).code).toBe('usage');
      }
    }
    expect(isCleanPath('/etc/motd')).toBe(true);
    expect(isCleanPath('/etc//motd')).toBe(false);
    expect(isCleanPath('/etc/motd/')).toBe(false);
    expect(isCleanPath('/etc/./motd')).toBe(false);
    expect(linkTargetProblem('../motd')).toBeNull();
    expect(linkTargetProblem('')).toBe('empty');
    expect(linkTargetProblem('a\nb')).toMatch(/line break/);
  });
});

describe('RootFs writes (the agent)', () => {
  for (const [name, make, path, names] of HOSTILE) {
    it(`refuses ${name}, writing nothing`, async () => {
      await make();
      const before = await canaryState();
      const fs = new RootFs(root);
      await expect(fs.writeFile(path, Buffer.from('pwned'), 0o644, process.getuid!(), process.getgid!())).rejects.toThrow(names);
      await expect(fs.symlink(path, '/x', process.getuid!(), process.getgid!())).rejects.toThrow(names);
      await expect(fs.mkdir(path, 0o755, process.getuid!(), process.getgid!())).rejects.toThrow(names);
      await expect(fs.inspect(path)).rejects.toThrow(OemError);
      expect(await canaryState()).toEqual(before);
      // Followed, the link to / would have written onto the host's /tmp.
      expect(await exists(`/tmp/oem-safe-fs-${process.pid}`)).toBe(false);
    });
  }

  it('replaces a final symlink itself, never what it points to', async () => {
    await symlink(join(canary, 'secret'), join(root, 'etc/motd'));
    const fs = new RootFs(root);
    await fs.writeFile('/etc/motd', Buffer.from('hello\n'), 0o640, process.getuid!(), process.getgid!());
    expect(await readFile(join(canary, 'secret'), 'utf8')).toBe('SECRET');
    const st = await lstat(join(root, 'etc/motd'));
    expect(st.isFile()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o640);
    expect(await readFile(join(root, 'etc/motd'), 'utf8')).toBe('hello\n');
    await fs.symlink('/etc/motd', '/etc/issue', process.getuid!(), process.getgid!());
    expect(await readlink(join(root, 'etc/motd'))).toBe('/etc/issue');
    expect((await readdir(join(root, 'etc'))).filter((n) => n.startsWith('.oem-tmp'))).toEqual([]);
  });

  it('writes a host file\'s bytes (large content is copied, not held), and refuses one whose size changed since it was chosen', async () => {
    const src = join(root, '..', `host-src-${process.pid}`);
    // Over the copy's 1 MiB chunk, not a multiple of it.
    const bytes = Buffer.alloc(2 * 1024 * 1024 + 123);
    for (let i = 0; i < bytes.length; i += 4096) bytes[i] = (i / 4096) & 0xff;
    await writeFile(src, bytes);
    try {
      const fs = new RootFs(root);
      const content = await hostFile(src);
      expect(content).toEqual({ hostPath: src, size: bytes.length });
      await fs.writeFile('/etc/big', content, 0o600, process.getuid!(), process.getgid!());
      expect((await readFile(join(root, 'etc/big'))).equals(bytes)).toBe(true);
      for (const changed of [Buffer.concat([bytes, Buffer.from('more')]), bytes.subarray(0, 1000)]) {
        await writeFile(src, changed);
        await expect(fs.writeFile('/etc/big2', content, 0o600, process.getuid!(), process.getgid!())).rejects.toThrow(/changed while it was being used/);
        expect(await exists(join(root, 'etc/big2'))).toBe(false);
      }
      expect((await readdir(join(root, 'etc'))).filter((n) => n.startsWith('.oem-tmp'))).toEqual([]);
      await expect(hostFile(join(root, 'etc'))).rejects.toThrow(/not a regular file/);
    } finally {
      await rm(src, { force: true });
    }
  });

  it('refuses to put a file or a link where a directory or special file is', async () => {
    await mkdir(join(root, 'etc/dir'));
    execFileSync('mkfifo', [join(root, 'etc/fifo')]);
    const fs = new RootFs(root);
    await expect(fs.writeFile('/etc/dir', Buffer.from('x'), 0o644, process.getuid!(), process.getgid!())).rejects.toThrow(/a directory is there/);
    await expect(fs.symlink('/etc/fifo', 'x', process.getuid!(), process.getgid!())).rejects.toThrow(/a special file is there/);
    await expect(fs.hardlink('/etc/h', '/etc/fifo')).rejects.toThrow(/not a regular file/);
  });

  it('gives everything written the given time (SOURCE_DATE_EPOCH), and leaves root-owned entries to a mapped root', async () => {
    const fs = new RootFs(root, { mtime: 1_000_000_000, mappedRoot: true });
    await fs.mkdir('/etc/d', 0o750, 0, 0);
    await fs.writeFile('/etc/d/f', Buffer.from('x'), 0o600, 0, 0);
    await fs.symlink('/etc/d/l', 'f', 0, 0);
    for (const p of ['etc/d/f', 'etc/d/l']) {
      const st = await lstat(join(root, p));
      expect(st.mtimeMs, p).toBe(1_000_000_000_000);
      expect(st.uid, p).toBe(process.getuid!());
    }
    expect((await stat(join(root, 'etc/d'))).mode & 0o7777).toBe(0o750);
  });
});

describe('DirWriter (the builder) writes through the same rules', () => {
  const target = { number: 6, label: 'OEM', role: 'oem', imagePath: '/img.bin', offset: 0, size: 1 << 20 } as PartitionTarget;

  for (const [name, make, path, names] of HOSTILE) {
    it(`refuses ${name}, naming the partition`, async () => {
      await make();
      const before = await canaryState();
      const w = new DirWriter(root, target, true, true);
      const uid = process.getuid!();
      const err = await w.apply([{ kind: 'file', path, content: Buffer.from('pwned'), mode: 0o644, uid, gid: uid }], 5).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OemError);
      expect((err as OemError).message).toMatch(names);
      expect((err as OemError).message).toMatch(/partition 6 \(OEM\)/);
      expect((err as OemError).code).toBe('badImage');
      expect(await canaryState()).toEqual(before);
    });
  }

  it('refuses to read a file or list a directory through a symlink', async () => {
    await symlink(canary, join(root, 'etc/ssh'));
    await symlink(join(canary, 'secret'), join(root, 'etc/key'));
    const w = new DirWriter(root, target);
    await expect(w.readFile('/etc/ssh/secret')).rejects.toThrow(/\/etc\/ssh is a symlink/);
    await expect(w.readFile('/etc/key')).rejects.toThrow(/\/etc\/key is a symlink/);
    await expect(w.listDir('/etc/ssh')).rejects.toThrow(/\/etc\/ssh is a symlink/);
    expect(await w.listDir('/')).toEqual(['etc']);
  });
});

describe('reads that follow links, as a chroot would', () => {
  beforeEach(async () => {
    await mkdir(join(root, 'a/b'), { recursive: true });
    await writeFile(join(root, 'a/b/file'), 'inside');
    await symlink('/a/b', join(root, 'abs'));
    await symlink('../a/./b', join(root, 'a/rel'));
    await symlink('loop', join(root, 'loop'));
    await symlink('/', join(root, 'a/toroot'));
    await symlink('../../../../../../../canary', join(root, 'a/climb'));
    await symlink(canary, join(root, 'a/host'));
  });

  it('resolves absolute targets at the root and stops `..` there', async () => {
    expect(await resolveIn(root, '/abs/file')).toBe(join(root, 'a/b/file'));
    expect(await resolveIn(root, 'a/rel/file')).toBe(join(root, 'a/b/file'));
    expect(await resolveIn(root, '/a/toroot/a/b/file')).toBe(join(root, 'a/b/file'));
    // `..` above the root stays at the root; an absolute host path is a path inside the tree.
    expect(await resolveIn(root, '/a/climb/secret')).toBeNull();
    expect(await resolveIn(root, '/a/host/secret')).toBeNull();
    await mkdir(join(root, 'canary'));
    await writeFile(join(root, 'canary/secret'), 'decoy');
    expect((await readFileIn(root, '/a/climb/secret', 100))?.toString()).toBe('decoy');
    expect(await resolveIn(root, '/a/missing/file')).toBeNull();
    expect(await resolveIn(root, '/a/b/file/x')).toBeNull();
    await expect(resolveIn(root, '/loop/x')).rejects.toThrow(/too many levels of symlinks/);
  });

  it('reads with a bound, only regular files, and never hangs on a FIFO', async () => {
    execFileSync('mkfifo', [join(root, 'a/fifo')]);
    await writeFile(join(root, 'a/big'), Buffer.alloc(101));
    await writeFile(join(root, 'a/fits'), Buffer.alloc(100, 1));
    expect((await readFileIn(root, '/a/fits', 100))?.length).toBe(100);
    await expect(readFileIn(root, '/a/big', 100)).rejects.toThrow(/larger than 100 bytes/);
    await expect(readFileIn(root, '/a/fifo', 100)).rejects.toThrow(/not a regular file/);
    await expect(readFileIn(root, '/a/b', 100)).rejects.toThrow(/not a regular file/);
    expect(await readFileIn(root, '/a/none', 100)).toBeNull();
    // A file whose stat says 0 bytes is read to its end, still within the bound.
    expect((await readBounded('/proc/self/status', 1 << 20))!.toString()).toMatch(/^Name:/);
    await expect(readBounded('/proc/self/status', 10)).rejects.toThrow(/larger than 10 bytes/);
    await expect(readBounded(join(root, 'abs'), 10, { follow: false })).rejects.toThrow(/is a symlink; not followed/);
  });

  it('RootFs follows links inside the tree only for reading', async () => {
    const fs = new RootFs(root);
    expect((await fs.readFileFollow('/abs/file'))?.toString()).toBe('inside');
    expect(await fs.readFileFollow('/a/host/secret')).toBeNull();
    await expect(fs.readFile('/abs/file')).rejects.toThrow(/refusing to follow the symlink \/abs/);
  });
});
