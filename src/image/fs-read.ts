/**
 * Read-only access to a partition's filesystem inside an image file, without root and without
 * mounting: ext2/3/4 through `debugfs -c` at the partition's offset, btrfs through `btrfs restore`
 * of a sparse copy of the partition, vfat through mtools. Nothing here follows a symlink: links are
 * reported with their targets.
 */
import { constants } from 'node:fs';
import { copyFile, lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { OemError } from '../shared/errors.js';
import { RootFs } from '../shared/safe-fs.js';
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
  /** What is at a path (a final symlink not followed), or null. */
  entry(path: string): Promise<FsEntry | null>;
  /** The names in a directory (sorted), or null if there is no directory at that path. */
  listDir(path: string): Promise<string[] | null>;
  /** Copies a regular file out to the host file `dest` (which must not exist); false if there is none at that path. */
  copyOut(path: string, dest: string): Promise<boolean>;
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

  async entry(path: string): Promise<FsEntry | null> {
    const text = (ExtReader.sections(await this.debugfs([`stat ${safeDebugfsPath(path)}`]))[0] ?? []).join('\n');
    const t = /Type: (\w+)\s+Mode:\s+([0-7]+)/.exec(text);
    if (!t) return null;
    const type: FsEntry['type'] = t[1] === 'regular' ? 'file' : t[1] === 'directory' ? 'dir' : t[1] === 'symlink' ? 'symlink' : 'other';
    const e: FsEntry = {
      path,
      type,
      mode: parseInt(t[2]!, 8) & 0o7777,
      uid: Number(/User:\s+(\d+)/.exec(text)?.[1] ?? 0),
      gid: Number(/Group:\s+(\d+)/.exec(text)?.[1] ?? 0),
      size: type === 'file' ? Number(/Size:\s+(\d+)/.exec(text)?.[1] ?? 0) : 0,
    };
    if (type === 'symlink') {
      const fast = /Fast link dest: "(.*)"/.exec(text);
      const target = fast ? fast[1]! : (await this.readRaw(path))?.toString('utf8');
      if (target !== undefined) e.target = target;
    }
    return e;
  }

  async listDir(path: string): Promise<string[] | null> {
    const [stat, ls] = ExtReader.sections(await this.debugfs([`stat ${safeDebugfsPath(path)}`, `ls -p ${safeDebugfsPath(path)}`]));
    if (!/Type: directory/.test((stat ?? []).join('\n'))) return null;
    return (ls ?? [])
      .map((line) => /^\/\d+\/[0-7]+\/\d+\/\d+\/([^/]*)\/\d*\/$/.exec(line)?.[1])
      .filter((n): n is string => n !== undefined && n !== '' && n !== '.' && n !== '..')
      .sort();
  }

  async copyOut(path: string, dest: string): Promise<boolean> {
    const out = await this.debugfs([`stat ${safeDebugfsPath(path)}`]);
    if (!/Type: regular/.test(out)) return false;
    await run('debugfs', ['-c', '-R', `dump ${safeDebugfsPath(path)} ${safeDebugfsPath(dest)}`, this.device], `copy ${path} out of ${this.part.name}`);
    return true;
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

  /** The host path of `path` in the restored tree when it is a `kind`, reached without a symlink. */
  private async found(path: string, kind: 'file' | 'dir'): Promise<string | null> {
    const root = await this.extract();
    const e = await new RootFs(root).inspect(posix.normalize('/' + path)).catch(() => null);
    if (e === null || e.kind !== kind) return null;
    return join(root, posix.normalize('/' + path));
  }

  async entry(path: string): Promise<FsEntry | null> {
    const root = await this.extract();
    const clean = posix.normalize('/' + path);
    const e = await new RootFs(root).inspect(clean).catch(() => null);
    if (e === null) return null;
    const out: FsEntry = { path: clean, type: e.kind, mode: e.mode, uid: e.uid, gid: e.gid, size: e.kind === 'file' ? e.size : 0 };
    if (e.target !== undefined) out.target = e.target;
    return out;
  }

  async readFile(path: string): Promise<Buffer | null> {
    const p = await this.found(path, 'file');
    return p === null ? null : readFile(p);
  }

  async listDir(path: string): Promise<string[] | null> {
    const p = path === '/' ? await this.extract() : await this.found(path, 'dir');
    return p === null ? null : (await readdir(p)).sort();
  }

  async copyOut(path: string, dest: string): Promise<boolean> {
    const p = await this.found(path, 'file');
    if (p === null) return false;
    await copyFile(p, dest, constants.COPYFILE_EXCL);
    return true;
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
  async entry(path: string): Promise<FsEntry | null> {
    return (await this.list()).find((e) => e.path === path) ?? null;
  }
  async listDir(path: string): Promise<string[] | null> {
    const dir = path.replace(/\/+$/, '');
    const names = (await this.list()).filter((e) => posix.dirname(e.path) === (dir || '/')).map((e) => posix.basename(e.path));
    return names.length || dir === '' ? names.sort() : null;
  }
  async copyOut(path: string, dest: string): Promise<boolean> {
    const r = await run('mcopy', ['-n', '-i', this.img, `::${path}`, dest], `copy ${path} out of ${this.part.name}`, { allowFail: true });
    return r.exitCode === 0;
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
