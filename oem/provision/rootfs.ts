/**
 * A filesystem tree seen from a host directory that stands for its root (`/` on the booted system,
 * a mounted partition in tests). Paths are absolute paths inside the tree.
 *
 * Writes never follow a symlink: every parent of a path is checked component by component with
 * lstat, and a symlink on the way is refused with an error naming it. Files and links are created
 * under a temporary name in the same directory (O_EXCL|O_NOFOLLOW for files), given their owner and
 * mode, then renamed into place; a rename replaces the name itself, never what a link points to.
 *
 * Reads of system files (passwd, unit files) may follow symlinks, but the way a chroot would:
 * absolute targets start again at the tree's root and `..` stops there, so nothing outside the tree
 * is ever read.
 */
import { constants } from 'node:fs';
import { lchown, link, lstat, mkdir, open, readdir, readlink, rename, rm, stat, symlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { OemError } from '../../src/shared/errors.js';

export type Kind = 'dir' | 'file' | 'symlink' | 'other';

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

const MAX_LINKS = 40;

/** An absolute, normalized path inside the tree; throws on relative paths and NUL bytes. */
export function cleanPath(p: string): string {
  if (typeof p !== 'string' || !p.startsWith('/')) throw new OemError(`not an absolute path: ${JSON.stringify(p)}`, { code: 'usage' });
  if (p.includes('\0')) throw new OemError(`path contains a NUL byte: ${JSON.stringify(p)}`, { code: 'usage' });
  const n = posix.normalize(p);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
}

/** The ancestors of a clean path, outermost first, without `/` itself: /a/b/c -> [/a, /a/b]. */
export function ancestors(p: string): string[] {
  const parts = p.split('/').filter(Boolean);
  const out: string[] = [];
  for (let i = 1; i < parts.length; i++) out.push('/' + parts.slice(0, i).join('/'));
  return out;
}

function isErrno(err: unknown, ...codes: string[]): boolean {
  return codes.includes((err as NodeJS.ErrnoException)?.code ?? '');
}

export class RootFs {
  private tmpCounter = 0;

  constructor(readonly root: string) {}

  /** The host path of a path inside the tree. */
  host(p: string): string {
    return join(this.root, cleanPath(p));
  }

  /** How a tree path is shown in messages: the path, and the host path when the root is not `/`. */
  show(p: string): string {
    return this.root === '/' ? p : `${p} (${this.host(p)})`;
  }

  private async lstatHost(hp: string): Promise<Entry | null> {
    try {
      const st = await lstat(hp);
      const kind: Kind = st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
      const e: Entry = { kind, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: st.size, ino: st.ino, dev: st.dev, mtimeMs: st.mtimeMs };
      if (kind === 'symlink') e.target = await readlink(hp);
      return e;
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return null;
      throw err;
    }
  }

  private symlinkOnTheWay(path: string, at: string, target: string | undefined): OemError {
    return new OemError(
      `refusing to follow the symlink ${this.show(at)} -> ${target ?? '?'} on the way to ${path}: symlinks are never followed when writing`,
      { hint: `Replace ${at} with a real directory, or use a path that does not go through it.` },
    );
  }

  private notADirectory(path: string, at: string, kind: Kind): OemError {
    return new OemError(`cannot use ${path}: ${this.show(at)} is a ${kindName(kind)}, not a directory`);
  }

  /**
   * Checks every ancestor of `path` (no symlinks, only directories); returns false when one is
   * missing. `virtualDirs` are directories a dry run would have created.
   */
  async checkParents(path: string, virtualDirs?: ReadonlySet<string>): Promise<boolean> {
    const p = cleanPath(path);
    for (const a of ancestors(p)) {
      const e = await this.lstatHost(this.host(a));
      if (e === null) {
        if (virtualDirs?.has(a)) continue;
        return false;
      }
      if (e.kind === 'symlink') throw this.symlinkOnTheWay(p, a, e.target);
      if (e.kind !== 'dir') throw this.notADirectory(p, a, e.kind);
    }
    return true;
  }

  /** What is at `path` (not following a final symlink); null when absent. Parents are checked. */
  async inspect(path: string, virtualDirs?: ReadonlySet<string>): Promise<Entry | null> {
    const p = cleanPath(path);
    if (!(await this.checkParents(p, virtualDirs))) return null;
    return this.lstatHost(this.host(p));
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
      const e = await this.lstatHost(this.host(a));
      if (e === null) {
        if (!virtualDirs?.has(a)) missing.push(a);
        continue;
      }
      if (e.kind === 'symlink') throw this.symlinkOnTheWay(p, a, e.target);
      if (e.kind !== 'dir') throw this.notADirectory(p, a, e.kind);
    }
    return missing;
  }

  /** Creates one directory (its parent must exist) with exact owner and mode. */
  async mkdir(path: string, mode: number, uid: number, gid: number): Promise<void> {
    const p = cleanPath(path);
    if (!(await this.checkParents(p))) throw new OemError(`internal: the parent of ${p} is missing`);
    const hp = this.host(p);
    await mkdir(hp, { mode: 0o700 });
    await this.setOwnerMode(p, uid, gid, mode);
  }

  /** Sets owner and mode of an existing file or directory, never through a symlink. */
  async setOwnerMode(path: string, uid: number, gid: number, mode: number): Promise<void> {
    const p = cleanPath(path);
    if (!(await this.checkParents(p))) throw new OemError(`internal: the parent of ${p} is missing`);
    const fh = await open(this.host(p), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const st = await fh.stat();
      if (!st.isFile() && !st.isDirectory()) throw new OemError(`cannot set the owner and mode of ${this.show(p)}: not a file or directory`);
      // chown first: it clears set-id bits, which chmod then sets.
      await fh.chown(uid, gid);
      await fh.chmod(mode);
    } finally {
      await fh.close();
    }
  }

  /** Sets the owner of a symlink itself. */
  async lchown(path: string, uid: number, gid: number): Promise<void> {
    const p = cleanPath(path);
    if (!(await this.checkParents(p))) throw new OemError(`internal: the parent of ${p} is missing`);
    await lchown(this.host(p), uid, gid);
  }

  /** A regular file's content; null when absent or not a regular file. Parents must not be symlinks. */
  async readFile(path: string): Promise<Buffer | null> {
    const e = await this.inspect(path);
    if (e === null || e.kind !== 'file') return null;
    const fh = await open(this.host(path), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      return await fh.readFile();
    } finally {
      await fh.close();
    }
  }

  /** A directory's names, sorted; null when absent or not a directory. */
  async readdir(path: string): Promise<string[] | null> {
    const e = await this.inspect(path);
    if (e === null || e.kind !== 'dir') return null;
    return (await readdir(this.host(path))).sort();
  }

  private tmpName(p: string): string {
    return posix.join(posix.dirname(p), `.oem-agent-tmp-${process.pid}-${this.tmpCounter++}`);
  }

  /** Replaces or creates a regular file atomically: temp file, owner, mode, fsync, rename, fsync dir. */
  async writeFile(path: string, data: Buffer, mode: number, uid: number, gid: number): Promise<void> {
    const p = cleanPath(path);
    const have = await this.inspect(p);
    if (have === null && !(await this.checkParents(p))) throw new OemError(`internal: the parent of ${p} is missing`);
    if (have && (have.kind === 'dir' || have.kind === 'other')) {
      throw new OemError(`cannot write the file ${this.show(p)}: a ${kindName(have.kind)} is there`);
    }
    const tmp = this.tmpName(p);
    const htmp = this.host(tmp);
    const fh = await open(htmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      await fh.writeFile(data);
      await fh.chown(uid, gid);
      await fh.chmod(mode);
      await fh.sync();
    } catch (err) {
      await fh.close();
      await rm(htmp, { force: true });
      throw err;
    }
    await fh.close();
    try {
      await rename(htmp, this.host(p));
    } catch (err) {
      await rm(htmp, { force: true });
      throw err;
    }
    await this.syncDir(posix.dirname(p));
  }

  /** Creates or replaces a symlink atomically. */
  async symlink(path: string, target: string, uid: number, gid: number): Promise<void> {
    const p = cleanPath(path);
    const have = await this.inspect(p);
    if (have === null && !(await this.checkParents(p))) throw new OemError(`internal: the parent of ${p} is missing`);
    if (have && (have.kind === 'dir' || have.kind === 'other')) {
      throw new OemError(`cannot create the symlink ${this.show(p)}: a ${kindName(have.kind)} is there`);
    }
    const tmp = this.tmpName(p);
    const htmp = this.host(tmp);
    await symlink(target, htmp);
    try {
      await lchown(htmp, uid, gid);
      await rename(htmp, this.host(p));
    } catch (err) {
      await rm(htmp, { force: true });
      throw err;
    }
    await this.syncDir(posix.dirname(p));
  }

  /** Makes `path` a hard link to the regular file `existing` (both inside the tree), atomically. */
  async hardlink(path: string, existing: string): Promise<void> {
    const p = cleanPath(path);
    const src = cleanPath(existing);
    const e = await this.inspect(src);
    if (e === null) throw new OemError(`cannot create the hard link ${p}: its target ${this.show(src)} does not exist`);
    if (e.kind !== 'file') throw new OemError(`cannot create the hard link ${p}: its target ${this.show(src)} is a ${kindName(e.kind)}, not a regular file`);
    const have = await this.inspect(p);
    if (have === null && !(await this.checkParents(p))) throw new OemError(`internal: the parent of ${p} is missing`);
    if (have && (have.kind === 'dir' || have.kind === 'other')) {
      throw new OemError(`cannot create the hard link ${this.show(p)}: a ${kindName(have.kind)} is there`);
    }
    const tmp = this.tmpName(p);
    const htmp = this.host(tmp);
    // link(2) does not follow a symlink at the source on Linux; it was checked to be a file anyway.
    await link(this.host(src), htmp);
    try {
      await rename(htmp, this.host(p));
    } catch (err) {
      await rm(htmp, { force: true });
      throw err;
    }
    await this.syncDir(posix.dirname(p));
  }

  private async syncDir(dir: string): Promise<void> {
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
   * Resolves a path the way a chroot at the tree's root would, following symlinks (at most 40) but
   * never leaving the tree. Returns the resolved tree path, or null when some component is missing
   * or not a directory.
   */
  async resolve(path: string): Promise<string | null> {
    let todo = cleanPath(path).split('/').filter(Boolean);
    let cur = '/';
    let links = 0;
    while (todo.length) {
      const name = todo.shift()!;
      if (name === '.') continue;
      if (name === '..') {
        cur = posix.dirname(cur);
        continue;
      }
      const next = posix.join(cur, name);
      const e = await this.lstatHost(join(this.root, next));
      if (e === null) return null;
      if (e.kind === 'symlink') {
        if (++links > MAX_LINKS) throw new OemError(`too many levels of symlinks resolving ${path} in ${this.root}`);
        const t = e.target ?? '';
        if (t.startsWith('/')) cur = '/';
        todo = [...t.split('/').filter(Boolean), ...todo];
        continue;
      }
      if (todo.length && e.kind !== 'dir') return null;
      cur = next;
    }
    return cur;
  }

  /** Reads a regular file following symlinks inside the tree (see resolve); null when absent. */
  async readFileFollow(path: string): Promise<Buffer | null> {
    const r = await this.resolve(path);
    if (r === null) return null;
    const e = await this.lstatHost(join(this.root, r));
    if (e === null || e.kind !== 'file') return null;
    const fh = await open(join(this.root, r), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      return await fh.readFile();
    } finally {
      await fh.close();
    }
  }

  /** Whether the host path of the tree's root is usable (an existing directory). */
  async checkRoot(): Promise<void> {
    let st;
    try {
      st = await stat(this.root);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw new OemError(`the root directory ${this.root} does not exist`, { code: 'usage' });
      throw err;
    }
    if (!st.isDirectory()) throw new OemError(`the root ${this.root} is not a directory`, { code: 'usage' });
  }
}

export function kindName(kind: Kind): string {
  return kind === 'dir' ? 'directory' : kind === 'file' ? 'regular file' : kind === 'symlink' ? 'symlink' : 'special file';
}
