/**
 * What a backend offers for one partition: read what is there, apply plan entries, close. And the
 * target description shared by the backends.
 */
import { OemError } from '../shared/errors.js';
import type { FsInfo } from '../image/fs-detect.js';
import type { PartitionRole, PlanEntry } from './plan.js';

export interface PartitionTarget {
  imagePath: string;
  number: number;
  label: string;
  role: PartitionRole;
  /** Byte offset and size of the partition in the image. */
  offset: number;
  size: number;
  fs: FsInfo;
}

export interface PartitionSession {
  /** Contents of a regular file, or null if absent. Symlinks on the way are refused. */
  readFile(path: string): Promise<Buffer | null>;
  /** Names in a directory, or null if absent. */
  listDir(path: string): Promise<string[] | null>;
  apply(entries: PlanEntry[]): Promise<void>;
  /** Writes everything back (commit) or discards, and releases what the session holds. */
  close(commit: boolean): Promise<void>;
}

export type BackendName = 'mount' | 'rootless';

export function partName(t: Pick<PartitionTarget, 'number' | 'label'>): string {
  return `partition ${t.number} (${t.label})`;
}

/** A symlink on the way to a path inside the image: never followed, always an error. */
export function symlinkRefusal(t: PartitionTarget, path: string, at: string, target?: string): OemError {
  return new OemError(
    `refusing to write ${path} in ${partName(t)}: ${at} is a symlink${target !== undefined ? ` (to ${target})` : ''}; a symlink in the image is never followed`,
    { code: 'badImage', hint: 'the image holds a symlink where a directory or file is expected; inspect it with `oem inspect`' },
  );
}

export function notADirectory(t: PartitionTarget, path: string, at: string, what: string): OemError {
  return new OemError(`cannot write ${path} in ${partName(t)}: ${at} is a ${what}, not a directory`, { code: 'badImage' });
}

/** The partition's file system has no inode left for the plan's `entries` new files and directories. */
export function noInodes(t: PartitionTarget, entries: number, free: number): OemError {
  return new OemError(`${partName(t)} has no room for more files: the plan adds up to ${entries} files and directories but only ${free} inodes are free`, {
    code: 'noSpace',
    hint: 'remove files from this partition, or use an image whose file system has more inodes',
  });
}

export function noSpace(t: PartitionTarget, needed: number, free: number | undefined): OemError {
  const fmt = (n: number) => `${n} bytes (${(n / 1048576).toFixed(1)} MiB)`;
  return new OemError(
    `${partName(t)} is full: the plan needs about ${fmt(needed)}${free !== undefined ? ` but only ${fmt(free)} is free` : ''}`,
    { code: 'noSpace', hint: 'write less into this partition, or use an image whose partition is larger' },
  );
}
