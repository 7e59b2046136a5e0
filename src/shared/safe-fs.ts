/**
 * The one set of rules for reading and writing inside a filesystem tree that is not the host's to
 * trust: a partition of an image mounted or staged on the host (the builder), the system the agent
 * provisions (`/`, or `--root`), a config drive. A tree is a host directory that stands for its
 * root; paths are absolute paths inside the tree.
 *
 * - **Paths** (cleanPath): absolute, no `..`, no control characters, names of at most 255 bytes and
 *   paths of at most 4096; `.`, repeated and trailing slashes are normalized away.
 * - **Writes never follow a symlink.** Every ancestor of a path is checked component by component
 *   with lstat; a symlink on the way, or something that is not a directory, is refused with an
 *   error naming it. Files and links are made under a temporary name in the same directory
 *   (files with O_EXCL|O_NOFOLLOW), given their owner and mode, then renamed into place: a rename
 *   replaces the name itself, never what a link points to.
 * - **Reads that follow links** (resolve, readFileIn) do it the way a chroot at the tree's root
 *   would: absolute targets start again at the root, `..` at the root stays there (as `/..` is `/`),
 *   at most 40 links are followed (then: "too many levels of symlinks"). Nothing outside the tree is
 *   ever read.
 * - **Reads are bounded** (readBounded): only regular files (a FIFO never hangs the open), at most
 *   `limit` bytes whatever the stat says (files in /proc have size 0).
 */
import { constants } from 'node:fs';
import { type FileHandle, lchown, link, lstat, lutimes, mkdir, open, readdir, readlink, rename, rm, stat, symlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { describe, OemError } from './errors.js';

export const MAX_PATH_BYTES = 4096;
export const MAX_NAME_BYTES = 255;
/** Symlinks followed while resolving one path (Linux's MAXSYMLINKS). */
export const MAX_SYMLINKS = 40;

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

/** Why `p` is not a usable path inside a tree, or null when it is (see cleanPath). */
export function pathProblem(p: unknown): string | null {
  if (typeof p !== 'string' || !p.startsWith('/')) return 'not an absolute path';
  if (Buffer.byteLength(p) > MAX_PATH_BYTES) return `longer than ${MAX_PATH_BYTES} bytes`;
  if (CONTROL.test(p)) return 'has control characters';
  const parts = p.split('/');
  if (parts.includes('..')) return 'has a ".." component';
  if (parts.some((x) => Buffer.byteLength(x) > MAX_NAME_BYTES)) return `has a name longer than ${MAX_NAME_BYTES} bytes`;
  return null;
}

/** Why `t` is not a usable symlink target (stored as given, never resolved when writing), or null. */
export function linkTargetProblem(t: unknown): string | null {
  if (typeof t !== 'string' || t === '') return 'empty';
  if (Buffer.byteLength(t) > MAX_PATH_BYTES) return `longer than ${MAX_PATH_BYTES} bytes`;
  if (/[\0\n\r]/.test(t)) return 'has a NUL or a line break';
  return null;
}

/** The normalized form of a path inside a tree (`/` included); throws a usage error when pathProblem finds one. */
export function cleanPath(p: string): string {
  const problem = pathProblem(p);
  if (problem !== null) {
    const shown = typeof p === 'string' && p.length > 80 ? `${JSON.stringify(p.slice(0, 60))}...` : JSON.stringify(p);
    throw new OemError(`invalid path ${shown}: ${problem}`, { code: 'usage' });
  }
  return '/' + p.split('/').filter((x) => x !== '' && x !== '.').join('/');
}

/** Whether `p` is a path in its normalized form (what a config must spell). */
export function isCleanPath(p: unknown): boolean {
  return pathProblem(p) === null && cleanPath(p as string) === p;
}

/** The ancestors of a clean path, outermost first, without `/` itself: /a/b/c -> [/a, /a/b]. */
export function ancestors(p: string): string[] {
  const parts = p.split('/').filter(Boolean);
  const out: string[] = [];
  for (let i = 1; i < parts.length; i++) out.push('/' + parts.slice(0, i).join('/'));
  return out;
}

export type Kind = 'dir' | 'file' | 'symlink' | 'other';

export function kindName(kind: Kind): string {
  return kind === 'dir' ? 'directory' : kind === 'file' ? 'regular file' : kind === 'symlink' ? 'symlink' : 'special file';
}

export interface Entry {
  kind: Kind;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  ino: number;
  dev: number;
  mtimeMs: number;
  /** Symlinks: the target. */
  target?: string;
}

function errno(err: unknown): string {
  return String((err as NodeJS.ErrnoException | undefined)?.code ?? '');
}

/** What is at a host path, not following a final symlink; null when nothing is. */
export async function lstatEntry(hostPath: string): Promise<Entry | null> {
  try {
    const st = await lstat(hostPath);
    const kind: Kind = st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
    const e: Entry = { kind, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: st.size, ino: st.ino, dev: st.dev, mtimeMs: st.mtimeMs };
    if (kind === 'symlink') e.target = await readlink(hostPath);
    return e;
  } catch (err) {
    if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return null;
    throw err;
  }
}

/** Whether a host path names anything (`follow`: and, for a symlink, what it points to exists). */
export async function exists(hostPath: string, opts: { follow?: boolean } = {}): Promise<boolean> {
  try {
    await (opts.follow === false ? lstat(hostPath) : stat(hostPath));
    return true;
  } catch (err) {
    if (['ENOENT', 'ENOTDIR', 'ELOOP'].includes(errno(err))) return false;
    throw err;
  }
}

/** Why a bounded read refused a file: the message says it, `reason` tells a caller that maps it. */
export class ReadRefused extends OemError {
  constructor(
    message: string,
    readonly reason: 'notFile' | 'tooBig' | 'symlink' | 'denied' | 'io',
    cause?: unknown,
  ) {
    super(message, cause === undefined ? {} : { cause });
  }
}

/** A byte count as people say it: "4 MiB", "16 KiB", else bytes. */
export function sizeText(n: number): string {
  if (n >= 1024 * 1024 && n % (1024 * 1024) === 0) return `${n / (1024 * 1024)} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} bytes`;
}

/**
 * The content of the regular file at a host path, at most `limit` bytes; null when it does not
 * exist. Anything else (not a regular file, larger, a final symlink with `follow: false`, not
 * readable) is a ReadRefused naming `what` (default: the path).
 */
export async function readBounded(hostPath: string, limit: number, opts: { what?: string; follow?: boolean } = {}): Promise<Buffer | null> {
  const what = opts.what ?? hostPath;
  let fh;
  try {
    // O_NONBLOCK: opening a FIFO must not hang; it is refused below as not a regular file.
    fh = await open(hostPath, constants.O_RDONLY | constants.O_NONBLOCK | (opts.follow === false ? constants.O_NOFOLLOW : 0));
  } catch (err) {
    const code = errno(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    if (code === 'ELOOP') throw new ReadRefused(`${what} is a symlink; not followed`, 'symlink', err);
    if (code === 'EACCES' || code === 'EPERM') throw new ReadRefused(`cannot read ${what}: permission denied`, 'denied', err);
    throw new ReadRefused(`cannot read ${what}: ${describe(err)}`, 'io', err);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new ReadRefused(`${what} is not a regular file`, 'notFile');
    const tooBig = () => new ReadRefused(`${what} is larger than ${sizeText(limit)}`, 'tooBig');
    if (st.size > limit) throw tooBig();
    const chunks: Buffer[] = [];
    let total = 0;
    // One read past the stat'ed size finds the end (or growth); files in /proc say size 0.
    let buf = Buffer.alloc(Math.min(limit + 1, Math.max(st.size + 1, 64 * 1024)));
    while (true) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > limit) throw tooBig();
      chunks.push(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead));
      buf = Buffer.alloc(Math.min(limit + 1 - total, 64 * 1024));
    }
    return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total);
  } catch (err) {
    if (err instanceof OemError) throw err;
    throw new ReadRefused(`cannot read ${what}: ${describe(err)}`, 'io', err);
  } finally {
    await fh.close();
  }
}

/** How a tree names the paths it refuses; the builder names the partition of the image. */
export interface Refusals {
  /** `at`, an ancestor of `path` (or `path` itself), is a symlink. */
  symlink(path: string, at: string, target: string | undefined): Error;
  /** `at`, an ancestor of `path`, is something other than a directory. */
  notADirectory(path: string, at: string, kind: Kind): Error;
}

export interface RootFsOptions {
  refusals?: Refusals;
  /**
   * Leave entries meant to be owned by root (uid and gid 0) owned by the invoking user: the tree is
   * read back inside a user namespace where that user is root (the builder's rootless btrfs rebuild).
   */
  mappedRoot?: boolean;
  /** A time (seconds since the epoch) given to everything written: SOURCE_DATE_EPOCH. */
  mtime?: number;
  /** fsync a directory after changing it (default true; the builder syncs the image once at the end). */
  syncDirs?: boolean;
}

/**
 * Bytes kept in a host file rather than in memory, copied when they are written (large content: the
 * agent, extension images). `size` is the file's size when it was chosen; a copy that finds another
 * size fails rather than write something else.
 */
export interface HostFile {
  hostPath: string;
  size: number;
}

/** Bytes to write: in memory, or a host file's. */
export type FileContent = Buffer | HostFile;

export function contentSize(c: FileContent): number {
  return Buffer.isBuffer(c) ? c.length : c.size;
}

/** The regular file at `hostPath` as content to copy later (its size now). */
export async function hostFile(hostPath: string): Promise<HostFile> {
  const st = await stat(hostPath);
  if (!st.isFile()) throw new OemError(`${hostPath} is not a regular file`);
  return { hostPath, size: st.size };
}

function hostFileChanged(f: HostFile, now: number | 'none'): OemError {
  return new OemError(`${f.hostPath} changed while it was being used: it had ${f.size} bytes, now ${now}`, { hint: 'leave the file alone while oem runs' });
}

/** Refuses a host file that is no longer a regular file of the size it had when it was taken as content (for writers that read it themselves). */
export async function checkHostFile(f: HostFile): Promise<void> {
  const st = await stat(f.hostPath).catch(() => null);
  if (!st?.isFile() || st.size !== f.size) throw hostFileChanged(f, st?.isFile() ? st.size : 'none');
}

const COPY_CHUNK = 1024 * 1024;

/** Writes `data` to the open file `fh` from its start: the buffer, or the host file's bytes in chunks. */
export async function writeContent(fh: FileHandle, data: FileContent): Promise<void> {
  if (Buffer.isBuffer(data)) return fh.writeFile(data);
  const src = await open(data.hostPath, constants.O_RDONLY);
  try {
    const buf = Buffer.allocUnsafe(Math.min(COPY_CHUNK, Math.max(1, data.size)));
    let done = 0;
    for (;;) {
      const { bytesRead } = await src.read(buf, 0, buf.length, done);
      if (bytesRead === 0) break;
      if (done + bytesRead > data.size) break;
      for (let w = 0; w < bytesRead; ) w += (await fh.write(buf, w, bytesRead - w, done + w)).bytesWritten;
      done += bytesRead;
    }
    const now = (await src.stat()).size;
    if (done !== data.size || now !== data.size) throw hostFileChanged(data, now);
  } finally {
    await src.close();
  }
}

/** Creates the new file `hostPath` (it must not exist) with `data` and `mode`. */
export async function writeNewFile(hostPath: string, data: FileContent, mode: number): Promise<void> {
  const fh = await open(hostPath, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    await writeContent(fh, data);
    await fh.chmod(mode);
  } finally {
    await fh.close();
  }
}

/** Files the bounded readers of a tree accept by default. */
export const DEFAULT_READ_LIMIT = 64 * 1024 * 1024;

export class RootFs {
  private tmpCounter = 0;
  private readonly refusals: Refusals;

  constructor(
    readonly root: string,
    private readonly opts: RootFsOptions = {},
  ) {
    this.refusals = opts.refusals ?? {
      symlink: (path, at, target) =>
        new OemError(`refusing to follow the symlink ${this.show(at)} -> ${target ?? '?'} on the way to ${path}: symlinks are never followed when writing`, {
          hint: `Replace ${at} with a real directory, or use a path that does not go through it.`,
        }),
      notADirectory: (path, at, kind) => new OemError(`cannot use ${path}: ${this.show(at)} is a ${kindName(kind)}, not a directory`),
    };
  }

  /** The host path of a path inside the tree. */
  host(p: string): string {
    return join(this.root, cleanPath(p));
  }

  /** How a tree path is shown in messages: the path, and the host path when the root is not `/`. */
  show(p: string): string {
    return this.root === '/' ? p : `${p} (${this.host(p)})`;
  }

  /**
   * Checks every ancestor of `path` (no symlinks, only directories); returns false when one is
   * missing. `virtualDirs` are directories a dry run would have created.
   */
  async checkParents(path: string, virtualDirs?: ReadonlySet<string>): Promise<boolean> {
    return (await this.missingParents(path, virtualDirs)).length === 0;
  }

  /** The ancestors of `path` that do not exist yet, outermost first (checks the ones that do). */
  async missingParents(path: string, virtualDirs?: ReadonlySet<string>): Promise<string[]> {
    const p = cleanPath(path);
    const missing: string[] = [];
    for (const a of ancestors(p)) {
      if (missing.length) {
        missing.push(a);
        continue;
      }
      const e = await lstatEntry(this.host(a));
      if (e === null) {
        if (!virtualDirs?.has(a)) missing.push(a);
        continue;
      }
      if (e.kind === 'symlink') throw this.refusals.symlink(p, a, e.target);
      if (e.kind !== 'dir') throw this.refusals.notADirectory(p, a, e.kind);
    }
    return missing;
  }

  /** What is at `path` (not following a final symlink); null when absent. Parents are checked. */
  async inspect(path: string, virtualDirs?: ReadonlySet<string>): Promise<Entry | null> {
    const p = cleanPath(path);
    if (!(await this.checkParents(p, virtualDirs))) return null;
    return lstatEntry(this.host(p));
  }

  private async needParents(p: string): Promise<void> {
    if (!(await this.checkParents(p))) throw new OemError(`internal: the parent of ${p} is missing`);
  }

  private async own(fh: { chown(uid: number, gid: number): Promise<void> }, uid: number, gid: number): Promise<void> {
    if (this.opts.mappedRoot && uid === 0 && gid === 0) return;
    await fh.chown(uid, gid);
  }

  private async stamp(hostPath: string): Promise<void> {
    if (this.opts.mtime !== undefined) await lutimes(hostPath, this.opts.mtime, this.opts.mtime);
  }

  /** Creates one directory (its parent must exist) with exact owner and mode. */
  async mkdir(path: string, mode: number, uid: number, gid: number): Promise<void> {
    const p = cleanPath(path);
    await this.needParents(p);
    await mkdir(this.host(p), { mode: 0o700 });
    await this.setOwnerMode(p, uid, gid, mode);
    await this.syncDir(posix.dirname(p));
  }

  /** Sets owner and mode of an existing file or directory, never through a symlink. */
  async setOwnerMode(path: string, uid: number, gid: number, mode: number): Promise<void> {
    const p = cleanPath(path);
    await this.needParents(p);
    const fh = await open(this.host(p), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const st = await fh.stat();
      if (!st.isFile() && !st.isDirectory()) throw new OemError(`cannot set the owner and mode of ${this.show(p)}: not a file or directory`);
      // chown first: it clears set-id bits, which chmod then sets.
      await this.own(fh, uid, gid);
      await fh.chmod(mode);
    } finally {
      await fh.close();
    }
    await this.stamp(this.host(p));
  }

  /** Sets the owner of a symlink itself. */
  async lchown(path: string, uid: number, gid: number): Promise<void> {
    const p = cleanPath(path);
    await this.needParents(p);
    await this.own({ chown: (u, g) => lchown(this.host(p), u, g) }, uid, gid);
  }

  /** A regular file's content (at most `limit` bytes); null when absent or not a regular file. Parents must not be symlinks. */
  async readFile(path: string, limit = DEFAULT_READ_LIMIT): Promise<Buffer | null> {
    const e = await this.inspect(path);
    if (e === null || e.kind !== 'file') return null;
    return readBounded(this.host(path), limit, { what: this.show(cleanPath(path)), follow: false });
  }

  /** A directory's names, sorted; null when absent or not a directory. */
  async readdir(path: string): Promise<string[] | null> {
    const e = await this.inspect(path);
    if (e === null || e.kind !== 'dir') return null;
    return (await readdir(this.host(path))).sort();
  }

  private tmpName(p: string): string {
    return posix.join(posix.dirname(p), `.oem-tmp-${process.pid}-${this.tmpCounter++}`);
  }

  /** The entry at `p` that a new file or link may replace (not a directory or special file). */
  private async replaceable(p: string, what: string): Promise<void> {
    const have = await this.inspect(p);
    if (have === null) await this.needParents(p);
    else if (have.kind === 'dir' || have.kind === 'other') throw new OemError(`cannot create the ${what} ${this.show(p)}: a ${kindName(have.kind)} is there`);
  }

  /** Moves the finished temporary `tmp` onto `p` (removing it when that fails), then syncs the directory. */
  private async commit(tmp: string, p: string): Promise<void> {
    try {
      await this.stamp(this.host(tmp));
      await rename(this.host(tmp), this.host(p));
    } catch (err) {
      await rm(this.host(tmp), { force: true });
      throw err;
    }
    await this.syncDir(posix.dirname(p));
  }

  /** Replaces or creates a regular file atomically: temp file, owner, mode, fsync, rename, fsync dir. */
  async writeFile(path: string, data: FileContent, mode: number, uid: number, gid: number): Promise<void> {
    const p = cleanPath(path);
    await this.replaceable(p, 'file');
    const tmp = this.tmpName(p);
    const fh = await open(this.host(tmp), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      await writeContent(fh, data);
      await this.own(fh, uid, gid);
      await fh.chmod(mode);
      await fh.sync();
    } catch (err) {
      await fh.close();
      await rm(this.host(tmp), { force: true });
      throw err;
    }
    await fh.close();
    await this.commit(tmp, p);
  }

  /** Creates or replaces a symlink atomically. */
  async symlink(path: string, target: string, uid: number, gid: number): Promise<void> {
    const p = cleanPath(path);
    await this.replaceable(p, 'symlink');
    const tmp = this.tmpName(p);
    await symlink(target, this.host(tmp));
    try {
      await this.own({ chown: (u, g) => lchown(this.host(tmp), u, g) }, uid, gid);
    } catch (err) {
      await rm(this.host(tmp), { force: true });
      throw err;
    }
    await this.commit(tmp, p);
  }

  /** Makes `path` a hard link to the regular file `existing` (both inside the tree), atomically. */
  async hardlink(path: string, existing: string): Promise<void> {
    const p = cleanPath(path);
    const src = cleanPath(existing);
    const e = await this.inspect(src);
    if (e === null) throw new OemError(`cannot create the hard link ${p}: its target ${this.show(src)} does not exist`);
    if (e.kind !== 'file') throw new OemError(`cannot create the hard link ${p}: its target ${this.show(src)} is a ${kindName(e.kind)}, not a regular file`);
    await this.replaceable(p, 'hard link');
    const tmp = this.tmpName(p);
    // link(2) does not follow a symlink at the source on Linux; it was checked to be a file anyway.
    await link(this.host(src), this.host(tmp));
    await this.commit(tmp, p);
  }

  private async syncDir(dir: string): Promise<void> {
    if (this.opts.syncDirs === false) return;
    try {
      const fh = await open(this.host(dir), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch {
      /* best effort */
    }
  }

  /**
   * Resolves a path the way a chroot at the tree's root would (see the top of this file). Returns
   * the resolved tree path, or null when some component is missing or not a directory.
   */
  async resolve(path: string): Promise<string | null> {
    let todo = cleanPath(path).split('/').filter(Boolean);
    let cur = '/';
    let links = 0;
    while (todo.length) {
      const name = todo.shift()!;
      if (name === '.' || name === '') continue;
      if (name === '..') {
        cur = posix.dirname(cur);
        continue;
      }
      const next = posix.join(cur, name);
      const e = await lstatEntry(join(this.root, next));
      if (e === null) return null;
      if (e.kind === 'symlink') {
        if (++links > MAX_SYMLINKS) throw new OemError(`too many levels of symlinks resolving ${path} in ${this.root}`);
        const t = e.target ?? '';
        if (t.startsWith('/')) cur = '/';
        todo = [...t.split('/'), ...todo];
        continue;
      }
      if (todo.length && e.kind !== 'dir') return null;
      cur = next;
    }
    return cur;
  }

  /** Reads a regular file (at most `limit` bytes) following symlinks inside the tree (see resolve); null when absent. */
  async readFileFollow(path: string, limit = DEFAULT_READ_LIMIT): Promise<Buffer | null> {
    const r = await this.resolve(path);
    if (r === null) return null;
    // O_NOFOLLOW: the name was resolved above; if it became a link since, it is refused.
    return readBounded(join(this.root, r), limit, { what: this.show(cleanPath(path)), follow: false });
  }

  /** Whether the host path of the tree's root is usable (an existing directory). */
  async checkRoot(): Promise<void> {
    let st;
    try {
      st = await stat(this.root);
    } catch (err) {
      if (errno(err) === 'ENOENT') throw new OemError(`the root directory ${this.root} does not exist`, { code: 'usage' });
      throw err;
    }
    if (!st.isDirectory()) throw new OemError(`the root ${this.root} is not a directory`, { code: 'usage' });
  }
}

/** A path inside a tree as shown in messages. */
function where(root: string, path: string): string {
  return root === '/' ? path : `${path} (under ${root})`;
}

/**
 * The host path of `path` inside the tree whose host directory is `root`, resolved the way a chroot
 * would (RootFs.resolve); null when it, or a directory on the way, does not exist.
 */
export async function resolveIn(root: string, path: string): Promise<string | null> {
  const resolved = await new RootFs(root).resolve(path.startsWith('/') ? path : `/${path}`);
  return resolved === null ? null : join(root, resolved);
}

/**
 * A regular file of at most `limit` bytes at `path` inside the tree rooted at `root`, links followed
 * as in a chroot; null when it does not exist. Anything else is an OemError naming `what`.
 */
export async function readFileIn(root: string, path: string, limit: number, what = where(root, path)): Promise<Buffer | null> {
  const host = await resolveIn(root, path);
  if (host === null) return null;
  return readBounded(host, limit, { what, follow: false });
}
