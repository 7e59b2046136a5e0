/**
 * Opens the partitions of an image for writing (checked first: a filesystem of the expected type,
 * clean, not larger than its partition) and applies plans with the chosen backend.
 */
import { OemError } from '../shared/errors.js';
import { sourceDateEpoch } from '../source-date.js';
import { FileSource, SliceSource } from '../image/byte-source.js';
import { detectFilesystem } from '../image/fs-detect.js';
import { readGpt } from '../image/gpt.js';
import { roleOf } from '../image/layout.js';
import { MountSession } from './mount-backend.js';
import { normalizePlan, type PartitionRole, type WritePlan } from './plan.js';
import { RootlessBtrfsSession } from './rootless-btrfs.js';
import { RootlessExtSession } from './rootless-ext.js';
import { partName, type BackendName, type PartitionSession, type PartitionTarget } from './session.js';

export type BackendChoice = BackendName | 'auto';

const isRoot = () => process.getuid?.() === 0;

export function resolveBackend(choice: BackendChoice): BackendName {
  // With SOURCE_DATE_EPOCH, rootless: the kernel stamps what it writes with the real time.
  if (choice === 'auto') return isRoot() && sourceDateEpoch() === undefined ? 'mount' : 'rootless';
  if (choice === 'mount' && !isRoot()) {
    throw new OemError('the mount backend needs root (loop devices and mount)', { code: 'usage', hint: 'run as root, or use --backend rootless' });
  }
  return choice;
}

const EXPECTED: Record<PartitionRole, string[]> = {
  oem: ['ext4', 'ext3', 'ext2', 'btrfs'],
  root: ['ext4', 'ext3', 'ext2', 'btrfs'],
};

/** Finds and checks the partitions with the given roles. */
export async function partitionTargets(imagePath: string, roles: PartitionRole[]): Promise<Record<PartitionRole, PartitionTarget>> {
  const src = await FileSource.open(imagePath);
  try {
    const gpt = await readGpt(src);
    const out: Partial<Record<PartitionRole, PartitionTarget>> = {};
    for (const role of roles) {
      const p = gpt.partitions.find((x) => roleOf(x.number, x.label, x.typeGuid) === role);
      if (!p) throw new OemError(`the image has no ${role.toUpperCase()} partition`, { code: 'badImage', hint: 'is this a Container Linux image? see `oem inspect`' });
      const fs = await detectFilesystem(new SliceSource(src, p.offset, p.size));
      const t: PartitionTarget = { imagePath, number: p.number, label: p.label, role, offset: p.offset, size: p.size, fs };
      checkFilesystem(t);
      out[role] = t;
    }
    return out as Record<PartitionRole, PartitionTarget>;
  } finally {
    await src.close();
  }
}

export function checkFilesystem(t: PartitionTarget): void {
  const want = EXPECTED[t.role];
  if (t.fs.type === 'none') {
    throw new OemError(`${partName(t)} has no filesystem (expected ${want[0]}${t.role === 'oem' ? ' or btrfs' : ''})`, { code: 'badImage' });
  }
  if (!want.includes(t.fs.type)) {
    throw new OemError(`${partName(t)} holds ${t.fs.type}, not one of ${want.join(', ')}`, { code: 'badImage' });
  }
  if (t.fs.dirty) {
    throw new OemError(`${partName(t)} cannot be written: ${t.fs.type} ${t.fs.dirty}`, { code: 'badImage', hint: 'was this image booted or copied while mounted? use a fresh release image' });
  }
  if (t.fs.fsSize !== undefined && t.fs.fsSize > t.size) {
    throw new OemError(`${partName(t)}: its ${t.fs.type} filesystem claims ${t.fs.fsSize} bytes, more than the partition's ${t.size}`, { code: 'badImage' });
  }
}

export async function openSession(t: PartitionTarget, backend: BackendName): Promise<PartitionSession> {
  if (backend === 'mount') return MountSession.open(t);
  if (t.fs.type === 'btrfs') return RootlessBtrfsSession.open(t);
  return RootlessExtSession.open(t);
}

/**
 * Opens a session on a partition, runs `fn` with it and closes it: what `fn` wrote is kept when it
 * succeeds (unless `commit` is false, as for a dry run), dropped when it throws.
 */
export async function withSession<T>(t: PartitionTarget, backend: BackendName, fn: (s: PartitionSession) => Promise<T>, opts: { commit?: boolean } = {}): Promise<T> {
  const session = await openSession(t, backend);
  let ok = false;
  try {
    const result = await fn(session);
    ok = opts.commit ?? true;
    return result;
  } finally {
    await session.close(ok);
  }
}

/** Applies a whole plan to an image, partition by partition. */
export async function applyPlan(imagePath: string, plan: WritePlan, backend: BackendName): Promise<void> {
  const norm = normalizePlan(plan);
  const roles = Object.keys(norm.partitions) as PartitionRole[];
  const targets = await partitionTargets(imagePath, roles);
  for (const role of roles) await withSession(targets[role], backend, (s) => s.apply(norm.partitions[role]!));
}
