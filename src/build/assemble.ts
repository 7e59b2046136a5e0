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
import { normalizePlan, type PlanEntry } from '../write/plan.js';
import type { BackendName } from '../write/session.js';
import type { Layout } from './base.js';

export interface WorkingImage {
  path: string;
  /** The partitions written (OEM, and ROOT with keys): everything else is the base's. */
  written: Region[];
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
  return { path, whole: makeWhole, remove: () => rm(path, { force: true }) };
}

/** Writes the provider's OEM entries, and the keys for `core` on ROOT when there are any. */
export async function writePartitions(img: Omit<WorkingImage, 'written'>, oemEntries: PlanEntry[], sshKeys: SshKey[], backend: BackendName): Promise<WorkingImage> {
  const targets = await partitionTargets(img.path, sshKeys.length ? ['oem', 'root'] : ['oem']);
  const oemPlan = normalizePlan({ partitions: { oem: oemEntries } }).partitions.oem!;
  await withSession(targets.oem, backend, (s) => s.apply(oemPlan));
  if (sshKeys.length) {
    await withSession(targets.root, backend, async (r) => {
      const kp = await keyPlan(r, sshKeys, 'core', 1000, 1000, 'oem');
      await r.apply(normalizePlan({ partitions: { root: kp.entries as PlanEntry[] } }).partitions.root!);
    });
  }
  const written = [targets.oem, ...(sshKeys.length ? [targets.root] : [])].map((t) => ({ offset: t.offset, size: t.size }));
  return { ...img, written };
}
