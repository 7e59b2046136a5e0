/**
 * How a release's fan-out is split into CI build jobs: each provider (with all its formats: a
 * provider's output directory is made by one build) goes to one group, and the groups are balanced by
 * the work their formats cost, greedy longest-first into N bins.
 *
 * The weights are measured costs, relative to a raw `.bin.bz2` (1: it reuses the release's bzip2
 * blocks and compresses only the changed ones, see "Fast from a cached release" in the README), of
 * each format's first artifact in a job (a job starts with the decoded base but no compressed pieces):
 * the full-size test release on 2 cores (`npm run bench`: each format's cold row less raw's), in units
 * of about 1.6 s. A fixed VHD reuses the raw image's blocks (1); so do a VHDX and a qcow2 (written
 * here, as segments of the disk), after mapping the release's blocks at their clusters' edges the
 * first time (1: within a second of raw's cold row in the runs of 2026-12-04); an OVA or the VirtualBox
 * appliance deflates every grain of the disk once (9); the libvirt box and GCE's tar.gz gzip the disk
 * (10, 11); the VirtualBox box and the Parallels bundle do both (13); a VMDK's .bz2 deflates every
 * grain and then bzip2s them (25: 39-40 s more than raw in both runs of 2026-12-04). They only need to
 * order the work.
 */
import type { Format } from '../artifacts/formats.js';
import type { Provider } from '../providers/registry.js';

/** The estimated cost of one artifact of each format (see the module comment). */
export const FORMAT_WEIGHTS: Readonly<Record<Format, number>> = {
  raw: 1,
  vhd: 1,
  vhdx: 1,
  qcow2: 1,
  ova: 9,
  virtualbox: 9,
  'vagrant-libvirt': 10,
  gce: 11,
  'vagrant-virtualbox': 13,
  parallels: 13,
  vmdk: 25,
};

/** Every provider's own work (writing OEM and ROOT, the manifest, the digests). */
export const PROVIDER_WEIGHT = 1;
/** Added per non-raw format when the provider's disk is grown (disk_size, disk_layout): more disk to convert. */
export const GROWTH_WEIGHT = 1;
/** The work one default job is sized for, when --jobs is not given. */
export const JOB_TARGET = 20;

export interface PlanItem {
  provider: string;
  formats: Format[];
  weight: number;
}

export interface PlanGroup {
  /** 1-based. */
  index: number;
  providers: string[];
  /** Each provider's formats. */
  formats: Record<string, Format[]>;
  weight: number;
  /** The group's share of the whole work, 0..1 (rounded to 3 places). */
  share: number;
}

export interface Plan {
  groups: PlanGroup[];
  total: number;
  /** Set when --jobs was larger than the number of providers. */
  clamped?: { asked: number; jobs: number };
}

/** A provider's work: its formats (--format, else its own) and what they are estimated to cost. */
export function planItem(p: Pick<Provider, 'id' | 'formats' | 'diskSize' | 'rootSectors'>, formats?: Format[]): PlanItem {
  const fs = formats?.length ? [...new Set(formats)] : p.formats;
  const grown = p.diskSize !== undefined || p.rootSectors !== undefined;
  const weight = PROVIDER_WEIGHT + fs.reduce((a, f) => a + FORMAT_WEIGHTS[f] + (grown && f !== 'raw' ? GROWTH_WEIGHT : 0), 0);
  return { provider: p.id, formats: fs, weight };
}

/** The default number of jobs: enough for the work (JOB_TARGET each), at most one per provider. */
export function defaultJobs(items: PlanItem[]): number {
  const total = items.reduce((a, i) => a + i.weight, 0);
  return Math.max(1, Math.min(items.length, Math.ceil(total / JOB_TARGET)));
}

/**
 * Greedy longest-first: items by weight (heaviest first, then by id), each into the lightest bin so
 * far (the first of equals). Deterministic; every item lands in exactly one bin; no bin is empty.
 */
export function plan(items: PlanItem[], jobs?: number): Plan {
  if (!items.length) return { groups: [], total: 0 };
  const ids = new Set<string>();
  for (const i of items) {
    if (ids.has(i.provider)) throw new Error(`provider ${i.provider} given twice`);
    ids.add(i.provider);
  }
  const asked = jobs ?? defaultJobs(items);
  const n = Math.max(1, Math.min(asked, items.length));
  const bins: { items: PlanItem[]; weight: number }[] = Array.from({ length: n }, () => ({ items: [], weight: 0 }));
  const sorted = [...items].sort((a, b) => b.weight - a.weight || cmp(a.provider, b.provider));
  for (const item of sorted) {
    let best = bins[0]!;
    for (const b of bins) if (b.weight < best.weight) best = b;
    best.items.push(item);
    best.weight += item.weight;
  }
  const total = items.reduce((a, i) => a + i.weight, 0);
  const groups = bins.map((b, k) => {
    const its = [...b.items].sort((x, y) => cmp(x.provider, y.provider));
    return {
      index: k + 1,
      providers: its.map((i) => i.provider),
      formats: Object.fromEntries(its.map((i) => [i.provider, i.formats])),
      weight: b.weight,
      share: Math.round((b.weight / total) * 1000) / 1000,
    };
  });
  return { groups, total, ...(asked > n ? { clamped: { asked, jobs: n } } : {}) };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The plan in lines for stderr: one per job. */
export function describePlan(p: Plan): string[] {
  const lines = p.groups.map((g) => {
    const what = g.providers.map((id) => `${id} (${g.formats[id]!.join(', ')})`).join(', ');
    return `job ${g.index}: ${(g.share * 100).toFixed(1)}% of the work (weight ${g.weight}): ${what}`;
  });
  if (p.clamped) lines.unshift(`--jobs ${p.clamped.asked} is more than the ${p.clamped.jobs} providers: ${p.clamped.jobs} jobs`);
  return lines;
}
