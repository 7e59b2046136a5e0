/**
 * Applies plan entries under a host directory that stands for a filesystem's root (a mounted
 * partition, or a staging copy of one). Every path is resolved inside that root component by
 * component with lstat: a symlink on the way is never followed but refused, and files are written to
 * a temporary name with O_NOFOLLOW|O_EXCL, given their owner and mode, then renamed into place.
 */
import { sourceDateEpoch } from '../source-date.js';
import { constants } from 'node:fs';
import { chmod, lchown, lstat, lutimes, mkdir, open, readdir, readlink, rename, rm, statfs, symlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { OemError } from '../shared/errors.js';
import { cleanPath, parents, type PlanEntry } from './plan.js';
import { noSpace, notADirectory, partName, symlinkRefusal, type PartitionTarget } from './session.js';

type Kind = 'dir' | 'file' | 'symlink' | 'other' | null;

async function kindOf(p: string): Promise<{ kind: Kind; target?: string }> {
  try {
    const st = await lstat(p);
    if (st.isSymbolicLink()) return { kind: 'symlink', target: await readlink(p).catch(() => undefined) as string };
    if (st.isDirectory()) return { kind: 'dir' };
    if (st.isFile()) return { kind: 'file' };
    return { kind: 'other' };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: null };
    throw err;
  }
}

export class DirWriter {
  private tmpCounter = 0;
  /**
   * `mappedRoot`: the directory is written by an unprivileged user whose files will be read back
   * inside a user namespace where that user is root (the rootless btrfs rebuild); root-owned entries
   * are then simply left owned by the invoking user.
   */
  constructor(
    private readonly root: string,
    private readonly target: PartitionTarget,
    private readonly mappedRoot = false,
    /** Whether `root` is a staging copy on the host (a full disk there is not a full partition). */
    private readonly staging = false,
  ) {}

  /** SOURCE_DATE_EPOCH, when set: the time given to everything written (reproducible builds). */
  private readonly epoch = sourceDateEpoch();

  private async stamp(hp: string): Promise<void> {
    if (this.epoch !== undefined) await lutimes(hp, this.epoch, this.epoch);
  }

  private async own(hp: string, uid: number, gid: number): Promise<void> {
    if (this.mappedRoot && uid === 0 && gid === 0) return;
    await lchown(hp, uid, gid);
  }

  private host(p: string): string {
    return join(this.root, p);
  }

  /** Checks that every parent of `path` is a real directory (or absent); returns whether all exist. */
  private async checkParents(path: string): Promise<boolean> {
    for (const p of parents(path)) {
      const k = await kindOf(this.host(p));
      if (k.kind === null) return false;
      if (k.kind === 'symlink') throw symlinkRefusal(this.target, path, p, k.target);
      if (k.kind !== 'dir') throw notADirectory(this.target, path, p, k.kind);
    }
    return true;
  }

  async readFile(path: string): Promise<Buffer | null> {
    const p = cleanPath(path);
    if (!(await this.checkParents(p))) return null;
    const k = await kindOf(this.host(p));
    if (k.kind === 'symlink') throw symlinkRefusal(this.target, p, p, k.target);
    if (k.kind !== 'file') return null;
    const fh = await open(this.host(p), constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      return await fh.readFile();
    } finally {
      await fh.close();
    }
  }

  async listDir(path: string): Promise<string[] | null> {
    const p = path === '/' ? '/' : cleanPath(path);
    if (p !== '/' && !(await this.checkParents(p))) return null;
    const k = await kindOf(this.host(p));
    if (k.kind === 'symlink') throw symlinkRefusal(this.target, p, p, k.target);
    if (k.kind !== 'dir') return null;
    return (await readdir(this.host(p))).sort();
  }

  private async wrapSpace(err: unknown, needed: number): Promise<never> {
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC' || (err as NodeJS.ErrnoException).code === 'EDQUOT') {
      // A mounted partition with room left: it is the disk holding the image (behind the loop device) that is full.
      const st = this.staging ? null : await statfs(this.root).catch(() => null);
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
        await this.wrapSpace(err, needed);
      }
    }
  }

  private async applyOne(e: PlanEntry): Promise<void> {
    const path = cleanPath(e.path);
    if (!(await this.checkParents(path))) {
      throw new OemError(`internal: parent of ${path} missing (plan not normalized)`);
    }
    const hp = this.host(path);
    const have = await kindOf(hp);
    if (have.kind === 'symlink' && e.kind !== 'symlink') throw symlinkRefusal(this.target, path, path, have.target);
    switch (e.kind) {
      case 'dir': {
        if (have.kind === null) await mkdir(hp, { mode: 0o700 });
        else if (have.kind !== 'dir') throw notADirectory(this.target, path + '/', path, have.kind);
        else if (e.ensureOnly) return;
        await this.own(hp, e.uid, e.gid);
        await chmod(hp, e.mode);
        await this.stamp(hp);
        return;
      }
      case 'file': {
        if (have.kind === 'dir' || have.kind === 'other') {
          throw new OemError(`cannot write file ${path} in partition ${this.target.number} (${this.target.label}): a ${have.kind === 'dir' ? 'directory' : 'special file'} is there`, { code: 'badImage' });
        }
        const tmp = join(posix.dirname(hp), `.oem-tmp-${process.pid}-${this.tmpCounter++}`);
        const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
        try {
          await fh.writeFile(e.content);
          if (!(this.mappedRoot && e.uid === 0 && e.gid === 0)) await fh.chown(e.uid, e.gid);
          await fh.chmod(e.mode);
          await fh.sync();
        } catch (err) {
          await fh.close();
          await rm(tmp, { force: true });
          throw err;
        }
        await fh.close();
        await this.stamp(tmp);
        await rename(tmp, hp);
        return;
      }
      case 'symlink': {
        if (have.kind === 'dir' || have.kind === 'other') {
          throw new OemError(`cannot create symlink ${path} in partition ${this.target.number} (${this.target.label}): a ${have.kind === 'dir' ? 'directory' : 'special file'} is there`, { code: 'badImage' });
        }
        const tmp = join(posix.dirname(hp), `.oem-tmp-${process.pid}-${this.tmpCounter++}`);
        await symlink(e.target, tmp);
        await this.own(tmp, e.uid, e.gid);
        await this.stamp(tmp);
        await rename(tmp, hp);
        return;
      }
    }
  }
}
