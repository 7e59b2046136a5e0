/**
 * Read-only access to a partition's filesystem inside an image file, without root and without
 * mounting: ext2/3/4 through `debugfs -c` at the partition's offset, btrfs through `btrfs restore`
 * of a sparse copy of the partition, vfat through mtools. Nothing here follows a symlink: links are
 * reported with their targets.
 */
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { OemError } from '../shared/errors.js';
import { run } from '../tools.js';
import type { FsType } from './fs-detect.js';
import { sparseCopyRange } from './sparse.js';

export interface FsEntry {
  /** Absolute path inside the filesystem. */
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  /** Permission bits (07777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  target?: string;
}

export interface FsReader {
  list(): Promise<FsEntry[]>;
  /** Contents of a regular file, or null if there is none at that path. */
  readFile(path: string): Promise<Buffer | null>;
  close(): Promise<void>;
}

export interface PartitionRef {
  imagePath: string;
  offset: number;
  size: number;
  fs: FsType;
  /** For messages, e.g. "partition 6 (OEM)". */
  name: string;
}

const MAX_ENTRIES = 20000;
const MAX_DEPTH = 32;

function typeOfMode(mode: number): FsEntry['type'] {
  switch (mode & 0o170000) {
    case 0o040000:
      return 'dir';
    case 0o100000:
      return 'file';
    case 0o120000:
      return 'symlink';
    default:
      return 'other';
  }
}

function safeDebugfsPath(p: string): string {
  if (/["\n\r\0\\]/.test(p)) throw new OemError(`cannot read path with quote, backslash or control characters: ${JSON.stringify(p)}`);
  return `"${p}"`;
}

/** ext2/3/4 through debugfs, opened read-only in catastrophic mode (no bitmaps needed). */
class ExtReader implements FsReader {
  private readonly device: string;
  constructor(private readonly part: PartitionRef) {
    this.device = `${part.imagePath}?offset=${part.offset}`;
  }

  private async debugfs(commands: string[]): Promise<string> {
    const r = await run('debugfs', ['-c', '-f', '-', this.device], `read ${this.part.name}`, {
      input: commands.join('\n') + '\n',
    });
    return r.stdout;
  }

  /** Splits `debugfs -f` output into the output of each command. */
  private static sections(out: string): string[][] {
    const res: string[][] = [];
    for (const line of out.split('\n')) {
      if (line.startsWith('debugfs: ')) res.push([]);
      else if (res.length) res[res.length - 1]!.push(line);
    }
    return res;
  }

  async list(): Promise<FsEntry[]> {
    const entries: FsEntry[] = [];
    let level = ['/'];
    for (let depth = 0; level.length && depth < MAX_DEPTH; depth++) {
      const out = await this.debugfs(level.map((d) => `ls -p ${safeDebugfsPath(d)}`));
      const secs = ExtReader.sections(out);
      const next: string[] = [];
      level.forEach((dir, i) => {
        for (const line of secs[i] ?? []) {
          const m = /^\/(\d+)\/([0-7]+)\/(\d+)\/(\d+)\/([^/]*)\/(\d*)\/$/.exec(line);
          if (!m) continue;
          const name = m[5]!;
          if (name === '.' || name === '..' || name === '') continue;
          const mode = parseInt(m[2]!, 8);
          const path = posix.join(dir, name);
          const e: FsEntry = {
            path,
            type: typeOfMode(mode),
            mode: mode & 0o7777,
            uid: Number(m[3]),
            gid: Number(m[4]),
            size: m[6] ? Number(m[6]) : 0,
          };
          entries.push(e);
          if (e.type === 'dir') next.push(path);
        }
      });
      if (entries.length > MAX_ENTRIES) throw new OemError(`${this.part.name} holds more than ${MAX_ENTRIES} entries; refusing to list it`);
      level = next;
    }
    const links = entries.filter((e) => e.type === 'symlink');
    if (links.length) {
      const secs = ExtReader.sections(await this.debugfs(links.map((l) => `stat ${safeDebugfsPath(l.path)}`)));
      links.forEach((l, i) => {
        const text = (secs[i] ?? []).join('\n');
        const m = /Fast link dest: "(.*)"/.exec(text);
        if (m) l.target = m[1]!;
      });
      // Slow symlinks (long targets) keep their target in a data block: cat prints it.
      for (const l of links.filter((x) => x.target === undefined)) {
        const b = await this.readRaw(l.path);
        if (b) l.target = b.toString('utf8');
      }
    }
    return entries.sort((a, b) => a.path.localeCompare(b.path));
  }

  private async readRaw(path: string): Promise<Buffer | null> {
    const r = await run('debugfs', ['-c', '-R', `cat ${safeDebugfsPath(path)}`, this.device], `read ${path} from ${this.part.name}`, {
      encoding: 'buffer',
    } as never);
    if (/not found|File not found|is a directory/i.test(r.stderr)) return null;
    return r.stdoutBytes;
  }

  async readFile(path: string): Promise<Buffer | null> {
    const out = await this.debugfs([`stat ${safeDebugfsPath(path)}`]);
    if (!/Type: regular/.test(out)) return null;
    return this.readRaw(path);
  }

  async close(): Promise<void> {}
}

/** btrfs through `btrfs restore` of a sparse copy of the partition into a private directory. */
class BtrfsReader implements FsReader {
  private dir?: string;
  private root?: string;
  constructor(private readonly part: PartitionRef) {}

  private async extract(): Promise<string> {
    if (this.root) return this.root;
    this.dir = await mkdtemp(join(tmpdir(), 'oem-btrfs-'));
    const img = join(this.dir, 'part.img');
    await sparseCopyRange(this.part.imagePath, this.part.offset, this.part.size, img);
    const root = join(this.dir, 'root');
    await mkdir(root);
    await run('btrfs', ['restore', '-S', '-m', '-i', '-x', img, root], `read the btrfs filesystem of ${this.part.name}`, {
      allowFail: true,
    }).then((r) => {
      if (r.exitCode !== 0) {
        const last = r.stderr.trim().split('\n').pop() ?? `exit code ${r.exitCode}`;
        throw new OemError(`cannot read the btrfs filesystem of ${this.part.name}: ${last}`, { code: 'badImage' });
      }
    });
    await rm(img, { force: true });
    this.root = root;
    return root;
  }

  async list(): Promise<FsEntry[]> {
    const root = await this.extract();
    const entries: FsEntry[] = [];
    const walk = async (rel: string, depth: number): Promise<void> => {
      if (depth > MAX_DEPTH) return;
      for (const name of (await readdir(join(root, rel))).sort()) {
        const p = posix.join(rel, name);
        const st = await lstat(join(root, p));
        const e: FsEntry = {
          path: p,
          type: typeOfMode(st.mode),
          mode: st.mode & 0o7777,
          uid: st.uid,
          gid: st.gid,
          size: st.isFile() ? st.size : 0,
        };
        if (e.type === 'symlink') e.target = await readlink(join(root, p));
        entries.push(e);
        if (entries.length > MAX_ENTRIES) throw new OemError(`${this.part.name} holds more than ${MAX_ENTRIES} entries; refusing to list it`);
        if (e.type === 'dir') await walk(p, depth + 1);
      }
    };
    await walk('/', 0);
    return entries;
  }

  async readFile(path: string): Promise<Buffer | null> {
    const root = await this.extract();
    const clean = posix.normalize('/' + path);
    // Refuse to go through symlinks: check every component with lstat.
    let cur = root;
    const parts = clean.split('/').filter(Boolean);
    for (let i = 0; i < parts.length; i++) {
      cur = join(cur, parts[i]!);
      try {
        const st = await lstat(cur);
        if (st.isSymbolicLink()) return null;
        if (i === parts.length - 1 && !st.isFile()) return null;
      } catch {
        return null;
      }
    }
    return readFile(cur);
  }

  async close(): Promise<void> {
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}

/** vfat through mtools: listing only (names, types and sizes). */
class VfatReader implements FsReader {
  constructor(private readonly part: PartitionRef) {}
  private get img(): string {
    return `${this.part.imagePath}@@${this.part.offset}`;
  }
  async list(): Promise<FsEntry[]> {
    const r = await run('mdir', ['-i', this.img, '-/', '-b', '::/'], `read the vfat filesystem of ${this.part.name}`);
    return r.stdout
      .split('\n')
      .filter((l) => l.startsWith('::/'))
      .map((l) => {
        const isDir = l.endsWith('/');
        const path = '/' + l.slice(3).replace(/\/$/, '');
        return { path, type: isDir ? 'dir' : 'file', mode: isDir ? 0o755 : 0o644, uid: 0, gid: 0, size: 0 } as FsEntry;
      })
      .sort((a, b) => a.path.localeCompare(b.path));
  }
  async readFile(path: string): Promise<Buffer | null> {
    const r = await run('mtype', ['-i', this.img, `::${path}`], `read ${path} from ${this.part.name}`, { allowFail: true });
    return r.exitCode === 0 ? Buffer.from(r.stdout) : null;
  }
  async close(): Promise<void> {}
}

export function openFsReader(part: PartitionRef): FsReader {
  switch (part.fs) {
    case 'ext2':
    case 'ext3':
    case 'ext4':
      return new ExtReader(part);
    case 'btrfs':
      return new BtrfsReader(part);
    case 'vfat':
      return new VfatReader(part);
    default:
      throw new OemError(`${part.name} has no filesystem that can be read`, { code: 'badImage' });
  }
}
