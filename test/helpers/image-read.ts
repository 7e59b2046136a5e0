/**
 * Reading test outputs back with independent tools: sgdisk for the layout, debugfs for ext
 * filesystems, `btrfs restore` for btrfs. Nothing here uses the code under test.
 */
import { execa } from 'execa';
import { lstat, mkdtemp, readFile, readdir, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';

export interface Part {
  first: number;
  last: number;
  offset: number;
  size: number;
}

export async function part(image: string, n: number): Promise<Part> {
  const i = (await execa('sgdisk', ['-i', String(n), image])).stdout;
  const first = Number(/First sector: (\d+)/.exec(i)![1]);
  const last = Number(/Last sector: (\d+)/.exec(i)![1]);
  return { first, last, offset: first * 512, size: (last - first + 1) * 512 };
}

export interface Node {
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  uid: number;
  gid: number;
  content?: string;
  target?: string;
}

/** Every entry of an ext filesystem (via debugfs), with file contents. */
export async function readExtTree(image: string, n: number): Promise<Map<string, Node>> {
  const { offset } = await part(image, n);
  const dev = `${image}?offset=${offset}`;
  const out = new Map<string, Node>();
  const walk = async (dir: string): Promise<void> => {
    const ls = (await execa('debugfs', ['-c', '-R', `ls -p "${dir}"`, dev])).stdout;
    for (const line of ls.split('\n')) {
      const m = /^\/\d+\/([0-7]+)\/(\d+)\/(\d+)\/([^/]*)\/\d*\/$/.exec(line);
      if (!m || m[4] === '.' || m[4] === '..' || m[4] === 'lost+found') continue;
      const p = posix.join(dir, m[4]!);
      const mode = parseInt(m[1]!, 8);
      const t = mode & 0o170000;
      const node: Node = { type: t === 0o40000 ? 'dir' : t === 0o100000 ? 'file' : t === 0o120000 ? 'symlink' : 'other', mode: mode & 0o7777, uid: Number(m[2]), gid: Number(m[3]) };
      if (node.type === 'file') node.content = (await execa('debugfs', ['-c', '-R', `cat "${p}"`, dev], { stripFinalNewline: false })).stdout;
      if (node.type === 'symlink') node.target = /Fast link dest: "(.*)"/.exec((await execa('debugfs', ['-c', '-R', `stat "${p}"`, dev])).stdout)?.[1];
      out.set(p, node);
      if (node.type === 'dir') await walk(p);
    }
  };
  await walk('/');
  return out;
}

/** A btrfs partition restored (btrfs restore of a copy) into a directory; `release` removes it. */
export async function restoreBtrfs(image: string, n: number): Promise<{ root: string; release: () => Promise<void> }> {
  const { offset, size } = await part(image, n);
  const dir = await mkdtemp(join(tmpdir(), 'oem-read-'));
  try {
    const img = join(dir, 'p.img');
    await execa('dd', [`if=${image}`, `of=${img}`, 'bs=1M', `skip=${offset}`, `count=${size}`, 'iflag=skip_bytes,count_bytes', 'conv=sparse', 'status=none']);
    const root = join(dir, 'root');
    await execa('mkdir', [root]);
    await execa('btrfs', ['restore', '-S', '-m', img, root]);
    await rm(img);
    return { root, release: () => rm(dir, { recursive: true, force: true }) };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Every entry of a btrfs filesystem (via btrfs restore of a copy of the partition). */
export async function readBtrfsTree(image: string, n: number): Promise<Map<string, Node>> {
  const { root, release } = await restoreBtrfs(image, n);
  try {
    const out = new Map<string, Node>();
    const walk = async (rel: string): Promise<void> => {
      for (const name of await readdir(join(root, rel))) {
        const p = posix.join(rel, name);
        const st = await lstat(join(root, p));
        const node: Node = { type: st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other', mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
        if (node.type === 'file') node.content = await readFile(join(root, p), 'utf8');
        if (node.type === 'symlink') node.target = await readlink(join(root, p));
        out.set(p, node);
        if (node.type === 'dir') await walk(p);
      }
    };
    await walk('/');
    return out;
  } finally {
    await release();
  }
}

export async function readTree(image: string, n: number, fs: 'ext4' | 'btrfs'): Promise<Map<string, Node>> {
  return fs === 'btrfs' ? readBtrfsTree(image, n) : readExtTree(image, n);
}

/** e2fsck -fn or btrfs check --readonly on a partition; throws when not clean. */
export async function fsck(image: string, n: number, fs: 'ext4' | 'btrfs'): Promise<void> {
  const { offset, size } = await part(image, n);
  if (fs !== 'btrfs') {
    await execa('e2fsck', ['-fn', `${image}?offset=${offset}`]);
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'oem-fsck-'));
  try {
    const img = join(dir, 'p.img');
    await execa('dd', [`if=${image}`, `of=${img}`, 'bs=1M', `skip=${offset}`, `count=${size}`, 'iflag=skip_bytes,count_bytes', 'conv=sparse', 'status=none']);
    await execa('btrfs', ['check', '--readonly', img]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Loop devices and mounts that refer to a path (none should be left behind). */
export async function leftovers(pathPart: string): Promise<string[]> {
  const loops = (await execa('losetup', ['-a'], { reject: false })).stdout.split('\n').filter((l) => l.includes(pathPart));
  const mounts = (await readFile('/proc/mounts', 'utf8')).split('\n').filter((l) => l.includes(pathPart));
  return [...loops, ...mounts];
}

export const isRoot = process.getuid?.() === 0;
