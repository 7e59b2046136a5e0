/**
 * The unit of work of every write into an image: a plan, i.e. a list of directories, files and
 * symlinks with content, mode, uid and gid, per partition role. Backends apply plans; nothing else
 * writes into images.
 */
import { OemError } from '../shared/errors.js';
import { ancestors, cleanPath, contentSize, type FileContent, linkTargetProblem } from '../shared/safe-fs.js';

export { contentSize, type FileContent, type HostFile } from '../shared/safe-fs.js';

export type PartitionRole = 'oem' | 'root';

export interface PlanDir {
  kind: 'dir';
  path: string;
  mode: number;
  uid: number;
  gid: number;
  /** Create with this mode and owner if missing; leave an existing directory as it is. */
  ensureOnly?: boolean;
}

export interface PlanFile {
  kind: 'file';
  path: string;
  content: FileContent;
  mode: number;
  uid: number;
  gid: number;
}

export interface PlanSymlink {
  kind: 'symlink';
  path: string;
  target: string;
  uid: number;
  gid: number;
}

export type PlanEntry = PlanDir | PlanFile | PlanSymlink;

export interface WritePlan {
  /** Entries per partition, applied in order (parents before children). */
  partitions: Partial<Record<PartitionRole, PlanEntry[]>>;
}

/** The clean form of an entry's path (the shared path rules; the filesystem root itself is not an entry). */
export function entryPath(p: string): string {
  const clean = cleanPath(p);
  if (clean === '/') throw new OemError('cannot write the filesystem root itself', { code: 'usage' });
  return clean;
}

function checkIds(e: PlanEntry): void {
  for (const [k, v] of [['uid', e.uid], ['gid', e.gid]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xfffffffe) throw new OemError(`${e.path}: invalid ${k} ${v}`, { code: 'usage' });
  }
  if (e.kind !== 'symlink' && (!Number.isInteger(e.mode) || e.mode < 0 || e.mode > 0o7777)) {
    throw new OemError(`${e.path}: mode ${e.mode.toString(8)} is outside 0-07777`, { code: 'usage' });
  }
}

/**
 * Validates a plan and returns it normalized: clean paths, parents before children, no path twice
 * with different kinds. Missing parent directories are added as root-owned 0755.
 */
export function normalizePlan(plan: WritePlan): WritePlan {
  const out: WritePlan = { partitions: {} };
  for (const [role, entries] of Object.entries(plan.partitions) as [PartitionRole, PlanEntry[]][]) {
    const byPath = new Map<string, PlanEntry>();
    for (const e of entries) {
      const path = entryPath(e.path);
      const n = { ...e, path } as PlanEntry;
      checkIds(n);
      if (n.kind === 'symlink') {
        const problem = linkTargetProblem(n.target);
        if (problem !== null) throw new OemError(`${path}: invalid symlink target (${problem})`, { code: 'usage' });
      }
      const prev = byPath.get(path);
      if (prev && prev.kind !== n.kind) throw new OemError(`${path} is planned both as ${prev.kind} and as ${n.kind}`, { code: 'usage' });
      byPath.set(path, n);
    }
    for (const e of [...byPath.values()]) {
      for (const p of ancestors(e.path)) {
        const have = byPath.get(p);
        if (!have) byPath.set(p, { kind: 'dir', path: p, mode: 0o755, uid: 0, gid: 0, ensureOnly: true });
        else if (have.kind !== 'dir') throw new OemError(`${e.path} needs ${p} to be a directory, but it is planned as a ${have.kind}`, { code: 'usage' });
      }
    }
    const sorted = [...byPath.values()].sort((a, b) => {
      const da = a.path.split('/').length;
      const db = b.path.split('/').length;
      return da - db || a.path.localeCompare(b.path);
    });
    out.partitions[role] = sorted;
  }
  return out;
}

/** Bytes the plan's files need, for space checks. */
export function planBytes(entries: PlanEntry[]): number {
  return entries.reduce((n, e) => n + (e.kind === 'file' ? contentSize(e.content) : 0), 0);
}

/** A human-readable listing (for --dry-run). */
export function describePlan(plan: WritePlan): string {
  const lines: string[] = [];
  for (const [role, entries] of Object.entries(plan.partitions) as [PartitionRole, PlanEntry[]][]) {
    lines.push(`${role.toUpperCase()}:`);
    for (const e of entries) {
      const mode = e.kind === 'symlink' ? 'lrwxrwxrwx' : e.mode.toString(8).padStart(4, '0');
      const what = e.kind === 'file' ? `file (${contentSize(e.content)} bytes)` : e.kind === 'dir' ? 'dir' : `symlink -> ${e.target}`;
      lines.push(`  ${mode} ${e.uid}:${e.gid} ${e.path} ${what}`);
    }
  }
  return lines.join('\n');
}

/** The plan as JSON-friendly data (file contents as sizes and sha256, not bytes). */
export function planSummary(plan: WritePlan): Record<string, unknown[]> {
  const out: Record<string, unknown[]> = {};
  for (const [role, entries] of Object.entries(plan.partitions) as [PartitionRole, PlanEntry[]][]) {
    out[role] = entries.map((e) =>
      e.kind === 'file'
        ? { kind: e.kind, path: e.path, mode: '0' + e.mode.toString(8), uid: e.uid, gid: e.gid, size: contentSize(e.content) }
        : e.kind === 'dir'
          ? { kind: e.kind, path: e.path, mode: '0' + e.mode.toString(8), uid: e.uid, gid: e.gid }
          : { kind: e.kind, path: e.path, target: e.target, uid: e.uid, gid: e.gid },
    );
  }
  return out;
}
