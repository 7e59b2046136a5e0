/**
 * Applies plan entries under a host directory that stands for a filesystem's root (a mounted
 * partition, or a staging copy of one), through the shared tree rules (src/shared/safe-fs.ts): a
 * symlink on the way is refused naming the partition, files and links are written under a
 * temporary name, given their owner and mode, then renamed into place.
 */
import { statfs } from 'node:fs/promises';
import { OemError } from '../shared/errors.js';
import { cleanPath, kindName, RootFs, type Entry } from '../shared/safe-fs.js';
import { sourceDateEpoch } from '../source-date.js';
import { entryPath, type PlanEntry } from './plan.js';
import { noInodes, noSpace, notADirectory, partName, symlinkRefusal, type PartitionTarget } from './session.js';

/** Largest file read back from an image (existing key sets, authorized_keys, grub.cfg). */
const MAX_READ_BYTES = 16 * 1024 * 1024;

export class DirWriter {
  private readonly fs: RootFs;

  /**
   * `mappedRoot`: the directory is written by an unprivileged user whose files will be read back
   * inside a user namespace where that user is root (the rootless btrfs rebuild); root-owned entries
   * are then simply left owned by the invoking user. `staging`: `root` is a staging copy on the
   * host (a full disk there is not a full partition).
   */
  constructor(
    private readonly root: string,
    private readonly target: PartitionTarget,
    mappedRoot = false,
    private readonly staging = false,
  ) {
    const epoch = sourceDateEpoch();
    this.fs = new RootFs(root, {
      refusals: {
        symlink: (path, at, to) => symlinkRefusal(target, path, at, to),
        notADirectory: (path, at, kind) => notADirectory(target, path, at, kindName(kind)),
      },
      mappedRoot,
      ...(epoch === undefined ? {} : { mtime: epoch }),
      // The session syncs the filesystem once when it closes.
      syncDirs: false,
    });
  }

  /** What is at `path`; a symlink there is refused (nothing in an image is read through one). */
  private async entry(p: string): Promise<Entry | null> {
    const e = await this.fs.inspect(p);
    if (e?.kind === 'symlink') throw symlinkRefusal(this.target, p, p, e.target);
    return e;
  }

  async readFile(path: string): Promise<Buffer | null> {
    const p = cleanPath(path);
    if ((await this.entry(p))?.kind !== 'file') return null;
    return this.fs.readFile(p, MAX_READ_BYTES);
  }

  async listDir(path: string): Promise<string[] | null> {
    const p = cleanPath(path);
    if (p !== '/' && (await this.entry(p))?.kind !== 'dir') return null;
    return this.fs.readdir(p);
  }

  private async wrapSpace(err: unknown, needed: number, entries: number): Promise<never> {
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC' || (err as NodeJS.ErrnoException).code === 'EDQUOT') {
      // A mounted partition with room left: it is the disk holding the image (behind the loop device) that is full.
      const st = this.staging ? null : await statfs(this.root).catch(() => null);
      // Out of inodes, with blocks to spare: the partition's file system, not the host's disk (a
      // file system without an inode count, btrfs, says files 0).
      if (st && st.files > 0 && st.ffree === 0) throw noInodes(this.target, entries, 0);
      if (this.staging || (st && st.bavail * st.bsize >= needed)) {
        throw new OemError(`no space left on the device holding ${this.staging ? `the staging copy of ${partName(this.target)} (${this.root})` : this.target.imagePath} while writing ${partName(this.target)}`, {
          code: 'noSpace',
          hint: 'free some space there, or write elsewhere (--output-dir, OEM_TMPDIR)',
        });
      }
      throw noSpace(this.target, needed, undefined);
    }
    throw err;
  }

  async apply(entries: PlanEntry[], needed: number): Promise<void> {
    for (const e of entries) {
      try {
        await this.applyOne(e);
      } catch (err) {
        if (err instanceof OemError) throw err;
        await this.wrapSpace(err, needed, entries.length);
      }
    }
  }

  private occupied(path: string, what: string, have: Entry): OemError {
    return new OemError(`cannot ${what} ${path} in ${partName(this.target)}: a ${have.kind === 'dir' ? 'directory' : 'special file'} is there`, { code: 'badImage' });
  }

  private async applyOne(e: PlanEntry): Promise<void> {
    const path = entryPath(e.path);
    if (!(await this.fs.checkParents(path))) throw new OemError(`internal: parent of ${path} missing (plan not normalized)`);
    const have = await this.fs.inspect(path);
    if (have?.kind === 'symlink' && e.kind !== 'symlink') throw symlinkRefusal(this.target, path, path, have.target);
    switch (e.kind) {
      case 'dir':
        if (have === null) return this.fs.mkdir(path, e.mode, e.uid, e.gid);
        if (have.kind !== 'dir') throw notADirectory(this.target, path + '/', path, kindName(have.kind));
        if (!e.ensureOnly) await this.fs.setOwnerMode(path, e.uid, e.gid, e.mode);
        return;
      case 'file':
        if (have?.kind === 'dir' || have?.kind === 'other') throw this.occupied(path, 'write file', have);
        return this.fs.writeFile(path, e.content, e.mode, e.uid, e.gid);
      case 'symlink':
        if (have?.kind === 'dir' || have?.kind === 'other') throw this.occupied(path, 'create symlink', have);
        return this.fs.symlink(path, e.target, e.uid, e.gid);
    }
  }
}

/** What a session whose filesystem is a host directory reads with: the writer's rules. */
export abstract class DirSession {
  constructor(protected readonly writer: DirWriter) {}

  readFile(path: string): Promise<Buffer | null> {
    return this.writer.readFile(path);
  }

  listDir(path: string): Promise<string[] | null> {
    return this.writer.listDir(path);
  }
}
