/**
 * Rootless writes into btrfs: there is no offline btrfs writer, so the filesystem is rebuilt. Its files
 * are extracted with `btrfs restore` (owners, modes, times, xattrs, symlinks) into a private staging
 * directory, the plan is applied there as in a mounted filesystem, and `mkfs.btrfs --rootdir` makes a
 * new filesystem of the same size, label and UUID, which replaces the partition's bytes.
 *
 * Without root, the staging copy belongs to the invoking user and mkfs.btrfs runs in a user namespace
 * where that user is root (`unshare --user --map-root-user`), so root-owned files stay root-owned.
 *
 * With SOURCE_DATE_EPOCH the result is reproducible: mkfs.btrfs takes inode numbers from the staging
 * files, so it is given a copy on a fresh tmpfs in a private mount namespace (REPRODUCIBLE_MKFS), and
 * src/write/btrfs-normalize.ts replaces what mkfs.btrfs draws at random or from the clock.
 *
 * What it cannot do: keep hard links, snapshots and subvolumes, special files, or the original
 * on-disk layout and compression (files are stored uncompressed); and without root it cannot give a
 * file an owner other than root (all files come out root-owned), so such plans are refused.
 */
import { sourceDateEpoch } from '../source-date.js';
import { normalizeBtrfs } from './btrfs-normalize.js';
import { execa } from 'execa';
import { mkdir, open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../cleanup.js';
import { OemError } from '../shared/errors.js';
import { sparseCopyInto, sparseCopyRange } from '../image/sparse.js';
import { run, which } from '../tools.js';
import { DirSession, DirWriter } from './dir-writer.js';
import { planBytes, type PlanEntry } from './plan.js';
import { noSpace, partName, type PartitionSession, type PartitionTarget } from './session.js';

const isRoot = () => process.getuid?.() === 0;

/**
 * mkfs.btrfs runs in a private mount namespace that hides the machine's block devices
 * (/proc/partitions and /sys/block, and no blkid cache): it refuses a UUID that a device in the
 * system already carries, and the OEM filesystem keeps the UUID it has in the image, which every
 * other copy of the release (a loop device of a concurrent build, say) has too.
 *
 * With SOURCE_DATE_EPOCH it is also given a copy of the staging tree in a fresh tmpfs, whose inode
 * numbers (which mkfs.btrfs keeps) follow the copy's order (by name): the same tree gives the same
 * filesystem. The tmpfs goes away with the namespace.
 *
 * Arguments: the tmpfs size, the tmpfs mount point and the staging tree (empty strings without
 * SOURCE_DATE_EPOCH), then the mkfs.btrfs command.
 */
const MKFS_IN_NAMESPACE =
  'set -e; mount --bind /dev/null /proc/partitions; mount -t tmpfs -o size=64k oem-no-devices /sys/block; ' +
  'if [ -n "$1" ]; then mount -t tmpfs -o "mode=755,size=$1" oem-staging "$2"; ' +
  // Copied in name order (not the host directory's order, which depends on its history).
  'tar -C "$3" --sort=name --xattrs --numeric-owner -cf - . | tar -C "$2" --xattrs --numeric-owner -xpf -; fi; shift 3; exec "$@"';

export class RootlessBtrfsSession extends DirSession implements PartitionSession {
  private changed = false;
  private constructor(
    private readonly target: PartitionTarget,
    private readonly work: { path: string; release: () => Promise<void> },
    private readonly root: string,
    writer: DirWriter,
  ) {
    super(writer);
  }

  static async open(target: PartitionTarget): Promise<RootlessBtrfsSession> {
    const work = await tempDir('btrfs');
    try {
      const img = join(work.path, 'part.img');
      await sparseCopyRange(target.imagePath, target.offset, target.size, img);
      const root = join(work.path, 'root');
      await mkdir(root, { mode: 0o755 });
      // Not root: restore in a user namespace where we are root, so owners and modes restore cleanly.
      const r = isRoot()
        ? await run('btrfs', ['restore', '-S', '-m', '-x', img, root], `extract the btrfs filesystem of ${partName(target)}`, { allowFail: true })
        : await run('unshare', ['--user', '--map-root-user', (await which('btrfs')) ?? 'btrfs', 'restore', '-S', '-m', '-x', img, root], `extract the btrfs filesystem of ${partName(target)}`, { allowFail: true });
      if (r.exitCode !== 0) {
        throw new OemError(`cannot read the btrfs filesystem of ${partName(target)}: ${r.stderr.trim().split('\n').pop() ?? ''}`, { code: 'badImage' });
      }
      const lost = await unkept(img);
      if (lost) {
        throw new OemError(`the rootless btrfs backend would lose ${lost} in ${partName(target)} (it rebuilds the filesystem from its files)`, {
          code: 'usage',
          hint: 'use --backend mount (as root), which writes into the filesystem as it is',
        });
      }
      await rm(img);
      return new RootlessBtrfsSession(target, work, root, new DirWriter(root, target, !isRoot(), true));
    } catch (err) {
      await work.release();
      throw err;
    }
  }

  async apply(entries: PlanEntry[]): Promise<void> {
    if (!isRoot()) {
      const foreign = entries.find((e) => (e.uid !== 0 || e.gid !== 0) && !(e.kind === 'dir' && e.ensureOnly));
      if (foreign) {
        throw new OemError(
          `the rootless btrfs backend cannot give ${foreign.path} the owner ${foreign.uid}:${foreign.gid} without root (only root-owned files)`,
          { code: 'usage', hint: 'run as root (either backend works then)' },
        );
      }
    }
    await this.writer.apply(entries, planBytes(entries));
    this.changed = true;
  }

  private async mkfs(fresh: string, extra: string[]): Promise<void> {
    const t = this.target;
    await rm(fresh, { force: true });
    const fh = await open(fresh, 'wx');
    await fh.truncate(t.size);
    await fh.close();
    const reproducible = sourceDateEpoch() !== undefined;
    const stage = join(this.work.path, 'stage');
    if (reproducible) await mkdir(stage, { recursive: true });
    const args = ['-q', '-f', ...extra, '--rootdir', reproducible ? stage : this.root, ...(t.fs.label ? ['-L', t.fs.label] : []), ...(t.fs.uuid ? ['-U', t.fs.uuid] : []), fresh];
    const mkfsBin = (await which('mkfs.btrfs')) ?? 'mkfs.btrfs';
    const sh = (await which('sh')) ?? 'sh';
    const cmd = ['--mount', sh, '-c', MKFS_IN_NAMESPACE, 'sh', ...(reproducible ? [String(2 * t.size), stage, this.root] : ['', '', '']), mkfsBin, ...args];
    // Not root: in a user namespace the invoking user's files are root's, as they should be in OEM.
    const unshare = (await which('unshare')) ?? 'unshare';
    const env = { BLKID_FILE: '/dev/null' };
    const mkfs = await execa(unshare, isRoot() ? cmd : ['--user', '--map-root-user', ...cmd], { reject: false, env });
    if (mkfs.exitCode !== 0) {
      const why = String(mkfs.stderr).trim().split('\n').filter((l) => /ERROR|error/.test(l)).pop() ?? String(mkfs.stderr).trim().split('\n').pop() ?? '';
      if (/no space|too small|ENOSPC|not enough/i.test(why)) {
        const { stdout } = await execa('du', ['-sb', this.root]);
        throw noSpace(t, Number(stdout.split('\t')[0]), undefined);
      }
      throw new OemError(`cannot rebuild the btrfs filesystem of ${partName(t)}: ${why}`);
    }
  }

  async close(commit: boolean): Promise<void> {
    try {
      if (!commit || !this.changed) return;
      const t = this.target;
      const fresh = join(this.work.path, 'new.img');
      // mkfs.btrfs 6.2 with --rootdir can make a filesystem larger than the file it is given (with DUP
      // metadata); it must never spill past the partition, so then it is made again with single
      // metadata, and refused if that does not fit either.
      await this.mkfs(fresh, []);
      if ((await stat(fresh)).size > t.size) await this.mkfs(fresh, ['-m', 'single']);
      const made = (await stat(fresh)).size;
      if (made > t.size) {
        const { stdout } = await execa('du', ['-sb', this.root]);
        throw noSpace(t, Number(stdout.split('\t')[0]), undefined);
      }
      const epoch = sourceDateEpoch();
      if (epoch !== undefined) await normalizeBtrfs(fresh, 0, t.size, epoch);
      // Replace the partition's bytes: zero the range (as holes), then copy the new filesystem in.
      const punch = await run('fallocate', ['--punch-hole', '--keep-size', '--offset', String(t.offset), '--length', String(t.size), t.imagePath], 'clear the old filesystem', { allowFail: true });
      if (punch.exitCode !== 0) {
        const zero = Buffer.alloc(1024 * 1024);
        const out = await open(t.imagePath, 'r+');
        try {
          for (let off = 0; off < t.size; off += zero.length) await out.write(zero, 0, Math.min(zero.length, t.size - off), t.offset + off);
        } finally {
          await out.close();
        }
      }
      await sparseCopyInto(fresh, t.imagePath, t.offset);
    } finally {
      await this.work.release();
    }
  }
}


/**
 * What a rebuild from `btrfs restore`'s files cannot keep, read from the filesystem's trees: a
 * subvolume or snapshot, a special file (FIFO, device, socket), a file with hard links. The first
 * one found, described; null when there is none.
 */
export async function unkept(img: string): Promise<string | null> {
  const roots = await run('btrfs', ['inspect-internal', 'dump-tree', '-t', 'ROOT_TREE', img], 'read the btrfs trees');
  const sub = /key \((\d+) ROOT_ITEM \d+\)/g;
  for (const m of roots.stdout.matchAll(sub)) if (Number(m[1]) >= 256) return `a subvolume or snapshot (tree ${m[1]})`;
  const fs = (await run('btrfs', ['inspect-internal', 'dump-tree', '-t', 'FS_TREE', img], 'read the btrfs trees')).stdout;
  const special = /key \(\d+ DIR_INDEX \d+\)[^\n]*\n\s*location key \(\d+ INODE_ITEM \d+\) type (FIFO|CHRDEV|BLKDEV|SOCK)\n[^\n]*\n\s*name: ([^\n]*)/.exec(fs);
  if (special) return `the special file ${special[2]} (${{ FIFO: 'a FIFO', CHRDEV: 'a character device', BLKDEV: 'a block device', SOCK: 'a socket' }[special[1]!]})`;
  const linked = /key \((\d+) INODE_ITEM 0\)[^\n]*\n[^\n]*\n\s*block group \d+ mode (\d+) links (\d+)/g;
  for (const m of fs.matchAll(linked)) {
    if (!m[2]!.startsWith('4') && Number(m[3]) > 1) return `the hard links of inode ${m[1]} (${m[3]} names)`;
  }
  return null;
}
