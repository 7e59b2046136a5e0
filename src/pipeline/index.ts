/**
 * `oem pipeline`: a ready CI pipeline for a release's whole fan-out (prepare, a build matrix of
 * balanced groups, publish), for GitHub Actions (github.ts) or GitLab CI (gitlab.ts).
 */
import { stat } from 'node:fs/promises';
import { isAbsolute, normalize, sep } from 'node:path';
import type { Format } from '../artifacts/formats.js';
import { OemError } from '../shared/errors.js';
import { findProvider, loadProviders, parseDiskSize, unfitReason, type Provider, type ProviderGeneration } from '../providers/registry.js';
import { boardArchitecture } from '../sysext/release.js';
import type { PipelineSpec } from './common.js';
import { githubWorkflow } from './github.js';
import { gitlabPipeline } from './gitlab.js';
import { plan, planItem, type Plan } from './plan.js';

export type { PipelineSpec } from './common.js';
export { describePlan, type Plan, type PlanGroup } from './plan.js';

/** The oem build options a pipeline's build jobs pass on. Paths are the jobs' paths: relative to the checkout. */
export interface JobBuildOptions {
  templates?: string;
  config?: string;
  sshKeys?: string[];
  ignition?: string;
  sysexts?: string[];
  sysextFormat?: string;
  compress?: string;
  diskSize?: string;
  agent?: string;
  noAgent?: boolean;
  backend?: string;
}

export interface PipelineOptions extends Omit<PipelineSpec, 'plan' | 'buildArgs'> {
  providers: string[];
  allProviders: boolean;
  jobs?: number;
  build?: JobBuildOptions;
  /** The arguments the pipeline was made with, recorded at its top. */
  argv: string[];
}

/**
 * The image generation the release will be, as far as the arguments tell: a pinned Flatcar version
 * (3760 and later: OEM system extensions), CoreOS; Flatcar's `current` is assumed to be 3760 or later
 * (every channel is), which the build jobs check.
 */
export function expectedGeneration(distro: string, release: string): { generation: ProviderGeneration; exact: boolean } {
  if (distro === 'coreos') return { generation: 'coreos', exact: true };
  const m = /^(\d+)\./.exec(release);
  if (!m) return { generation: 'flatcar-sysext', exact: false };
  return { generation: Number(m[1]) >= 3760 ? 'flatcar-sysext' : 'flatcar', exact: true };
}

export interface Skipped {
  provider: string;
  why: string;
}

/** A path the jobs read from their checkout: relative, inside it, and there now (the pipeline is made in the checkout). */
async function checkoutPath(flag: string, p: string, kind: 'file' | 'dir'): Promise<string> {
  const hint = 'the jobs run in a checkout of this repository: give paths relative to its top, of files committed to it';
  if (isAbsolute(p) || normalize(p).split(sep).includes('..')) throw new OemError(`--${flag} ${p}: not a path inside the checkout`, { code: 'usage', hint });
  const st = await stat(p).catch(() => null);
  if (!st || (kind === 'dir' ? !st.isDirectory() : !st.isFile())) throw new OemError(`--${flag} ${p}: no such ${kind === 'dir' ? 'directory' : 'file'} here`, { code: 'usage', hint });
  return normalize(p);
}

/** The build jobs' extra oem build flags, checked. */
export async function jobBuildArgs(b: JobBuildOptions = {}): Promise<string[]> {
  const a: string[] = [];
  if (b.templates !== undefined) a.push('--templates', await checkoutPath('templates', b.templates, 'dir'));
  if (b.config !== undefined) a.push('--config', await checkoutPath('config', b.config, 'file'));
  for (const k of b.sshKeys ?? []) a.push('--ssh-key', await checkoutPath('ssh-key', k, 'file'));
  if (b.ignition !== undefined) a.push('--ignition', await checkoutPath('ignition', b.ignition, 'file'));
  for (const x of b.sysexts ?? []) a.push('--sysext', await checkoutPath('sysext', x, 'file'));
  if (b.agent !== undefined) a.push('--agent', await checkoutPath('agent', b.agent, 'file'));
  if (b.noAgent) a.push('--no-agent');
  if (b.sysextFormat !== undefined) a.push('--sysext-format', b.sysextFormat);
  if (b.compress !== undefined) a.push('--compress', b.compress);
  if (b.diskSize !== undefined) {
    parseDiskSize(b.diskSize, '--disk-size');
    a.push('--disk-size', b.diskSize);
  }
  if (b.backend !== undefined) a.push('--backend', b.backend);
  return a;
}

export async function makePipeline(o: PipelineOptions): Promise<{ plan: Plan; text: string; skipped: Skipped[]; notes: string[] }> {
  const buildArgs = await jobBuildArgs(o.build);
  // The providers as the jobs will see them: a --templates tree adds or replaces some.
  const all = await loadProviders(o.build?.templates);
  const asked: Provider[] = o.allProviders ? all : [...new Map(o.providers.map((n) => findProvider(all, n)).map((p) => [p.id, p])).values()];
  // What oem build would skip (--all-providers) or refuse (--provider): another architecture, another generation.
  const arch = boardArchitecture(o.board);
  const gen = expectedGeneration(o.distro, o.release);
  const notes: string[] = [];
  const skipped: Skipped[] = [];
  const wanted: Provider[] = [];
  for (const p of asked) {
    const archWhy = unfitReason({ generations: [gen.generation], ...(p.architectures ? { architectures: p.architectures } : {}) }, gen.generation, arch);
    const genWhy = unfitReason({ generations: p.generations }, gen.generation, arch);
    const why = archWhy ?? (gen.exact ? genWhy : undefined);
    if (why === undefined) {
      if (genWhy !== undefined) notes.push(`${p.id} may not build: ${genWhy.replace('this is', 'a current release is most likely')} (give --release X.Y.Z to know)`);
      wanted.push(p);
    } else if (o.allProviders) {
      skipped.push({ provider: p.id, why });
    } else {
      throw new OemError(`provider ${p.id} cannot be built from ${o.distro} ${o.release} ${o.board}: ${why}`, { code: 'usage', hint: 'see oem providers' });
    }
  }
  if (!wanted.length) throw new OemError('no provider given: use --provider P (repeatable) or --all-providers', { code: 'usage', hint: 'see oem providers' });
  if (o.sourceDateEpoch !== undefined && !/^\d+$/.test(o.sourceDateEpoch)) throw new OemError(`--source-date-epoch ${o.sourceDateEpoch}: not a number of seconds`, { code: 'usage' });
  if (o.cacheDir.startsWith('/') || o.cacheDir.split('/').includes('..')) {
    throw new OemError(`--cache-dir ${o.cacheDir}: CI caches keep paths inside the checkout; give a relative path`, { code: 'usage' });
  }
  const p = plan(wanted.map((w) => planItem(w, o.formats as Format[] | undefined)), o.jobs);
  const { providers: _p, allProviders: _a, jobs: _j, build: _b, argv, ...rest } = o;
  const spec: PipelineSpec = { ...rest, buildArgs, plan: p };
  return { plan: p, skipped, notes, text: o.ci === 'github' ? githubWorkflow(spec, argv) : gitlabPipeline(spec, argv) };
}
