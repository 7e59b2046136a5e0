/**
 * The second stage, per provider: its image. A working copy of the decoded base is made (only the
 * partition tables, OEM and ROOT when the raw `.bz2` is made from the release's own blocks; the
 * rest is copied only when another format needs the whole disk), then the provider's OEM content
 * and the user's keys (for `core` on ROOT, as `oem inject-key` writes them) go in through one
 * session per partition.
 */
import { rm, truncate, writeFile } from 'node:fs/promises';
import type { Region } from '../artifacts/bzip2-reuse.js';
import { copyRanges } from '../image/sparse.js';
import { keyPlan } from '../inject-key.js';
import type { SshKey } from '../shared/ssh-keys.js';
import { partitionTargets, withSession } from '../write/apply.js';
import { OemError } from '../shared/errors.js';
import { contentSize, normalizePlan, planBytes, type PlanEntry } from '../write/plan.js';
import type { BackendName } from '../write/session.js';
import type { Layout } from './base.js';

export interface WorkingImage {
  path: string;
  /** The partitions written (OEM, and ROOT with keys): everything else is the base's. */
  written: Region[];
  /** Where the partition tables are (the primary's start, the backup's end of the disk): the base's, until the disk grows. */
  tables: [number, number][];
  /** Makes the working image whole (copies what is not there yet); no-op when it is. */
  whole(): Promise<void>;
  remove(): Promise<void>;
}

/** A working copy of the base at `path`: the partition tables and the partitions a build writes, or the whole disk. */
export async function workingImage(baseRaw: string, layout: Layout, path: string, whole: boolean): Promise<Omit<WorkingImage, 'written'>> {
  let complete = false;
  const makeWhole = async () => {
    if (complete) return;
    const inside = [...layout.gpt, ...layout.written].sort((a, b) => a[0] - b[0]);
    const rest: [number, number][] = [];
    let at = 0;
    for (const [a, b] of inside) {
      if (a > at) rest.push([at, a]);
      at = Math.max(at, b);
    }
    if (at < layout.size) rest.push([at, layout.size]);
    await copyRanges(baseRaw, path, rest);
    complete = true;
  };
  await writeFile(path, '', { flag: 'wx' });
  await truncate(path, layout.size);
  await copyRanges(baseRaw, path, [...layout.gpt, ...layout.written]);
  if (whole) await makeWhole();
  return { path, tables: layout.gpt, whole: makeWhole, remove: () => rm(path, { force: true }) };
}

/** Bytes a filesystem of this size leaves for files: metadata, journals and btrfs' chunks take the rest. */
function usableBytes(size: number): number {
  return Math.floor(size * 0.85) - 4 * 1024 * 1024;
}

/** Refuses, before anything is written, OEM content larger than the OEM partition can hold, naming the largest files. */
function checkFits(entries: PlanEntry[], target: { number: number; label: string; size: number }): void {
  const need = planBytes(entries);
  const room = usableBytes(target.size);
  if (need <= room) return;
  const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
  const largest = entries
    .filter((e): e is Extract<PlanEntry, { kind: 'file' }> => e.kind === 'file')
    .sort((a, b) => contentSize(b.content) - contentSize(a.content))
    .slice(0, 3)
    .map((e) => `${e.path} ${mib(contentSize(e.content))}`);
  throw new OemError(`the OEM content (${mib(need)}) does not fit partition ${target.number} (${target.label}) of ${mib(target.size)}, which holds about ${mib(room)} of files: the largest are ${largest.join(', ')}`, {
    code: 'noSpace',
    hint: 'leave something out (--no-agent, a --sysext), or use a release whose OEM partition is 1 GiB (Flatcar 4593 and later)',
  });
}

/** Writes the provider's OEM entries, and ROOT's (the user's keys for `core`, extension links) when there are any. */
export async function writePartitions(img: Omit<WorkingImage, 'written'>, oemEntries: PlanEntry[], sshKeys: SshKey[], backend: BackendName, rootEntries: PlanEntry[] = []): Promise<WorkingImage> {
  const writesRoot = sshKeys.length > 0 || rootEntries.length > 0;
  const targets = await partitionTargets(img.path, writesRoot ? ['oem', 'root'] : ['oem']);
  const oemPlan = normalizePlan({ partitions: { oem: oemEntries } }).partitions.oem!;
  checkFits(oemPlan, targets.oem);
  await withSession(targets.oem, backend, (s) => s.apply(oemPlan));
  if (writesRoot) {
    await withSession(targets.root, backend, async (r) => {
      const kp = sshKeys.length ? (await keyPlan(r, sshKeys, 'core', 1000, 1000, 'oem')).entries : [];
      await r.apply(normalizePlan({ partitions: { root: [...rootEntries, ...(kp as PlanEntry[])] } }).partitions.root!);
    });
  }
  const written = [targets.oem, ...(writesRoot ? [targets.root] : [])].map((t) => ({ offset: t.offset, size: t.size }));
  return { ...img, written };
}
