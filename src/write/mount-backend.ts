/**
 * The mount backend (root): a loop device over exactly the partition's bytes (`losetup --offset
 * --sizelimit` from the GPT; no dependence on partition scanning or udev), mounted with its
 * filesystem type, nosuid,nodev,noexec. Loop device and mount are registered with the cleanup
 * registry, so they are released on success, on error and on signals.
 */
import { mkdtemp, rmdir, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { acquire } from '../cleanup.js';
import { exists } from '../shared/safe-fs.js';
import { OemError } from '../shared/errors.js';
import { run } from '../tools.js';
import { DirSession, DirWriter } from './dir-writer.js';
import { planBytes, type PlanEntry } from './plan.js';
import { noSpace, partName, type PartitionSession, type PartitionTarget } from './session.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function attachLoop(imagePath: string, offset: number, size: number, readOnly: boolean): Promise<{ dev: string; release: () => Promise<void> }> {
  const args = ['--find', '--show', '--offset', String(offset), '--sizelimit', String(size), ...(readOnly ? ['--read-only'] : []), imagePath];
  const r = await run('losetup', args, 'attach a loop device', { allowFail: true });
  if (r.exitCode !== 0) {
    const why = r.stderr.trim().split('\n').pop() ?? '';
    throw new OemError(`cannot attach a loop device to ${imagePath}: ${why}`, {
      hint: 'the mount backend needs root and free loop devices (in a container: --privileged); --backend rootless needs neither',
    });
  }
  const dev = r.stdout.trim();
  const release = acquire(`loop device ${dev}`, async () => {
    for (let i = 0; ; i++) {
      const d = await run('losetup', ['-d', dev], 'detach a loop device', { allowFail: true });
      if (d.exitCode === 0 || i >= 10) break;
      await sleep(100 * (i + 1));
    }
    // While another process has the device open (a tool scanning block devices, such as the btrfs
    // tools), the kernel only marks it to be cleared when that one closes it: wait for that, so
    // nothing is left attached when the command ends.
    const backing = `/sys/block/${basename(dev)}/loop/backing_file`;
    for (let i = 0; i < 100 && (await exists(backing)); i++) await sleep(50);
  });
  return { dev, release };
}

export async function mountDevice(dev: string, fsType: string, readOnly: boolean): Promise<{ dir: string; release: () => Promise<void> }> {
  const dir = await mkdtemp(join(process.env.OEM_TMPDIR ?? tmpdir(), 'oem-mnt-'));
  // noinit_itable: the kernel would otherwise zero uninitialized inode tables in the background,
  // writing far more of the image than the build changes.
  const opts = ['nosuid', 'nodev', 'noexec', ...(readOnly ? ['ro'] : fsType === 'ext4' ? ['noinit_itable'] : [])].join(',');
  const r = await run('mount', ['-t', fsType, '-o', opts, dev, dir], 'mount a partition', { allowFail: true });
  if (r.exitCode !== 0) {
    await rmdir(dir).catch(() => {});
    throw new OemError(`cannot mount ${dev} as ${fsType}: ${r.stderr.trim().split('\n').pop() ?? ''}`, { code: 'badImage' });
  }
  const release = acquire(`mount ${dir}`, async () => {
    for (let i = 0; ; i++) {
      const u = await run('umount', [dir], 'unmount a partition', { allowFail: true });
      if (u.exitCode === 0) break;
      if (i >= 10) {
        await run('umount', ['-l', dir], 'unmount a partition', { allowFail: true });
        break;
      }
      await sleep(100 * (i + 1));
    }
    await rmdir(dir).catch(() => {});
  });
  return { dir, release };
}

export class MountSession extends DirSession implements PartitionSession {
  private constructor(
    private readonly target: PartitionTarget,
    private readonly dir: string,
    writer: DirWriter,
    private readonly releaseMount: () => Promise<void>,
    private readonly releaseLoop: () => Promise<void>,
  ) {
    super(writer);
  }

  static async open(target: PartitionTarget, readOnly = false): Promise<MountSession> {
    const loop = await attachLoop(target.imagePath, target.offset, target.size, readOnly);
    try {
      const m = await mountDevice(loop.dev, target.fs.type, readOnly);
      const pause = Number(process.env.OEM_DEBUG_PAUSE_AFTER_MOUNT_MS ?? 0);
      if (pause > 0) await sleep(pause);
      return new MountSession(target, m.dir, new DirWriter(m.dir, target), m.release, loop.release);
    } catch (err) {
      await loop.release();
      throw err;
    }
  }

  async apply(entries: PlanEntry[]): Promise<void> {
    const needed = planBytes(entries) + entries.length * 4096;
    const st = await statfs(this.dir);
    const free = st.bfree * st.bsize; // as root, the reserved blocks are ours too
    if (needed > free) throw noSpace(this.target, needed, free);
    await this.writer.apply(entries, needed);
  }

  async close(_commit: boolean): Promise<void> {
    try {
      await run('sync', ['-f', this.dir], `flush ${partName(this.target)}`, { allowFail: true });
      await this.releaseMount();
    } finally {
      await this.releaseLoop();
    }
  }
}
