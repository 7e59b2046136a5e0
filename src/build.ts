/**
 * `oem build`: from a channel release (fetched and verified) or a local image to provider images a
 * distributor can publish, in stages, each in its own file under src/build/:
 *
 *   inputs.ts     the agent and the provisioning config (checked before anything is fetched)
 *   base.ts       the base: fetched and verified (or local), decoded once into the cache, its layout
 *   assemble.ts   per provider: a working copy of the base, OEM content and keys written into it
 *   artifacts.ts  per provider: each format converted, compressed, hashed (and signed)
 *   publish.ts    per provider: DIGESTS, signatures, version.txt, manifest.json, the directory swap
 *   digests.ts    the hashes and .DIGESTS text of a file (used by base.ts, artifacts.ts, publish.ts)
 *
 * Providers are built concurrently; each one's outputs appear under their final names only when
 * complete.
 */
import { mkdir, readFile, rm, rmdir, stat } from 'node:fs/promises';
import { checkOutputDir, makeOutputDir } from './output-dir.js';
import { availableParallelism } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import type { SharedPrefixes } from './artifacts/bzip2-reuse.js';
import type { Compression } from './compression.js';
import type { Format } from './artifacts/formats.js';
import { loadSigningKey, type SigningKey } from './artifacts/sign.js';
import { workingImage, writePartitions } from './build/assemble.js';
import { makeArtifacts, needsWholeDisk } from './build/artifacts.js';
import { prepareImage, resolveBase, verifyLocal, type Base, type BaseSource, type BuildGeneration, type PreparedImage } from './build/base.js';
import { agentExecutable, agentXz, findAgent, loadConfig } from './build/inputs.js';
import type { HostFile } from './shared/safe-fs.js';
import { buildTime, publishProvider, type ProviderBuild } from './build/publish.js';
import { acquire } from './cleanup.js';
import { mapInOrder } from './concurrency.js';
import { OemError } from './shared/errors.js';
import type { ProgressSink, ProgressUnit } from './progress.js';
import { findProvider, loadProviders, unfitReason, type Provider } from './providers/registry.js';
import { renderProvider } from './providers/render.js';
import { checkUserIgnition, validateRendered } from './providers/validate.js';
import { fetchOemSysext, type FetchOptions } from './release/fetch.js';
import type { SysextFormat } from './sysext/make.js';
import { boardArchitecture } from './sysext/release.js';
import { addUserExtensions, customContent, missingExtension, officialContent, sysextMode, type SysextContent, type SysextImage } from './sysext/oem.js';
import type { PlanEntry } from './write/plan.js';
import type { Distro } from './release/verify.js';
import { sourceDateEpoch } from './source-date.js';
import { readKeyFile, type SshKey } from './shared/ssh-keys.js';
import { resolveBackend, type BackendChoice } from './write/apply.js';

export type { ArtifactInfo, ProviderBuild } from './build/publish.js';

export interface BuildOptions extends BaseSource {
  providers: string[];
  allProviders?: boolean;
  /** --board was given on the command line (else a local image's own board is taken). */
  boardGiven?: boolean;
  /** --release as given on the command line (a local image must be that version). */
  releaseGiven?: string;
  sshKeyFiles?: string[];
  config?: string;
  templates?: string;
  outputDir: string;
  backend?: BackendChoice;
  generation?: BuildGeneration;
  /** Extension era, one provider with Flatcar's extension: use this oem-<platform>.raw (its .sig beside it) instead of the release's. */
  oemSysext?: string;
  /** Extension era: the user's own extensions, placed on OEM and linked from /etc/extensions. */
  sysexts?: string[];
  /** Extension era: the file system of the provider's own extension (default squashfs). */
  sysextFormat?: SysextFormat;
  /** A user's Ignition config, written as config.ign on OEM (Flatcar images). */
  ignition?: string;
  /** Embed this agent executable instead of the one built for the board. */
  agent?: string;
  noAgent?: boolean;
  /** Artifact formats (default: the provider's). */
  formats?: Format[];
  /** Compression of raw and disk-format artifacts (default bz2, like the releases). */
  compress?: Compression;
  /** The disk size in bytes of the virtual disk formats (default: the provider's, else the image's). */
  diskSize?: number;
  /** Armored OpenPGP secret key to sign every artifact and its DIGESTS with. */
  signKey?: string;
  signPassphrase?: string;
  concurrency?: number;
  /** Fetch, verify and decode the base into the cache, and build nothing (a CI pipeline's prepare job). */
  prepareOnly?: boolean;
  log?: (line: string) => void;
  /** Steps and their progress (downloading, decoding, each provider's artifacts). */
  progress?: ProgressSink;
}

export interface BuildResult {
  distro: Distro;
  channel: string;
  board: string;
  version: string;
  generation: BuildGeneration;
  base: { image: string; sha512: string; verified: boolean; insecure: boolean; signedBy: string | null };
  backend: string;
  outputDir: string;
  builds: ProviderBuild[];
}

export async function build(opts: BuildOptions): Promise<BuildResult> {
  const log = opts.log ?? (() => {});
  const step = opts.progress?.step ?? (() => {});
  const progress = opts.progress?.progress ?? (() => {});
  const report = { log, step, progress };
  const all = await loadProviders(opts.templates);
  const wanted: Provider[] = opts.allProviders ? all : [...new Map(opts.providers.map((n) => findProvider(all, n)).map((p) => [p.id, p])).values()];
  if (!wanted.length && !opts.prepareOnly) throw new OemError('no provider given: use --provider P (repeatable) or --all-providers', { code: 'usage', hint: 'see oem providers' });

  const sshKeys: SshKey[] = [];
  for (const f of opts.sshKeyFiles ?? []) sshKeys.push(...(await readKeyFile(f)));
  const config = await loadConfig(opts.config);
  const backend = resolveBackend(opts.backend ?? 'auto');
  if (backend === 'mount' && sourceDateEpoch() !== undefined) {
    log('WARNING: SOURCE_DATE_EPOCH with --backend mount: the kernel stamps what it writes with the real time, so the images are not byte-reproducible (--backend auto or rootless are)');
  }
  for (const f of opts.sysexts ?? []) {
    if (!(await stat(f).catch(() => null))?.isFile()) throw new OemError(`--sysext ${f}: no such file`, { code: 'usage' });
  }
  if (opts.oemSysext && !(await stat(opts.oemSysext).catch(() => null))?.isFile()) throw new OemError(`--oem-sysext ${opts.oemSysext}: no such file`, { code: 'usage' });
  const ignition = opts.ignition ? await readFile(opts.ignition, 'utf8').catch(() => {
    throw new OemError(`--ignition ${opts.ignition}: cannot read it`, { code: 'usage' });
  }) : null;
  if (ignition !== null) {
    // The version rule needs the image; the file's shape is checked now, before anything is fetched.
    checkUserIgnition(ignition, opts.ignition!);
  }
  // The signing key is checked before anything is fetched or built.
  const signer = opts.signKey ? await loadSigningKey(opts.signKey, opts.signPassphrase) : null;

  await checkOutputDir(opts.outputDir);
  const base = await resolveBase(opts, report);
  let agentFile = opts.prepareOnly ? null : await findAgent(opts, base.board);

  const outputDir = resolve(opts.outputDir);
  // The first directory mkdir made, if it made any: a build that ends with nothing in it removes them.
  const made = await makeOutputDir(outputDir);
  const work = join(outputDir, `.oem-work-${process.pid}`);
  await mkdir(work);
  const releaseWork = acquire(`work directory ${work}`, async () => {
    await rm(work, { recursive: true, force: true });
    for (let d = outputDir; made !== undefined; d = dirname(d)) {
      // rmdir removes only an empty directory: one with outputs stays.
      if (!(await rmdir(d).then(() => true, () => false)) || d === made || dirname(d) === d) break;
    }
  });
  try {
    const boardBefore = base.board;
    const image = await prepareImage(
      base,
      { ...(opts.fetch?.cacheDir ? { cacheDir: opts.fetch.cacheDir } : {}), work, ...(opts.generation ? { generation: opts.generation } : {}), local: opts.image !== undefined, boardGiven: opts.boardGiven ?? false, ...(opts.releaseGiven ? { releaseGiven: opts.releaseGiven } : {}) },
      report,
    );
    // A local image of another board than the default: its agent.
    if (agentFile && base.board !== boardBefore && !opts.agent) agentFile = await findAgent(opts, base.board);
    const concurrency = opts.concurrency ?? Math.max(1, Math.min(availableParallelism(), 4));
    const generation: BuildGeneration = image.sysext ? 'flatcar-sysext' : image.generation;
    const result = (builds: ProviderBuild[]): BuildResult => ({
      distro: base.distro,
      channel: base.channel,
      board: base.board,
      version: base.version,
      generation,
      base: { image: basename(base.compressed), sha512: base.sha512, verified: base.verified, insecure: opts.insecure ?? false, signedBy: base.signedBy },
      backend,
      outputDir,
      builds,
    });
    if (opts.prepareOnly) return result([]);
    const arch = boardArchitecture(base.board);
    const unfit = wanted
      .map((p) => ({ p, why: unfitReason(p, generation, arch) ?? (image.sysext ? missingExtension(p, image.sysext) : undefined) }))
      .filter((u): u is { p: Provider; why: string } => u.why !== undefined);
    if (unfit.length && !opts.allProviders) {
      const { p, why } = unfit[0]!;
      throw new OemError(`provider ${p.id} cannot be built from ${base.distro} ${base.version}: ${why}`, {
        code: 'usage',
        hint: !p.generations.includes(generation) && p.generations.includes('flatcar-sysext') ? 'build it from Flatcar 3760 or later' : 'see oem providers',
      });
    }
    for (const { p, why } of unfit) log(`skipping ${p.id}: ${why}`);
    const buildable = wanted.filter((p) => !unfit.some((u) => u.p === p));
    if ((opts.sysexts?.length || opts.oemSysext) && !image.sysext) {
      throw new OemError(`--sysext and --oem-sysext are for Flatcar 3760 and later; ${base.distro} ${base.version} keeps provider content as plain files`, { code: 'usage' });
    }
    if (ignition !== null) checkUserIgnition(ignition, opts.ignition!, { distro: image.generation === 'coreos' ? 'coreos' : base.distro, version: base.version });
    const agent = agentFile ? await agentXz(agentFile, work) : null;
    // Prefixes are made once and copied into each output that shares one: with a single output there is
    // nothing to share, and writing the prefix beside it first would write its bytes twice.
    const outputs = buildable.reduce((n, p) => n + formatsOf(p, opts).length, 0);
    const prefixes: SharedPrefixes | undefined = outputs > 1 ? { dir: work, made: new Map() } : undefined;
    const ctx: Ctx = { opts, signer, base, image, ...(prefixes ? { prefixes } : {}), agent, sshKeys, config, ignition, backend, outputDir, work, log, step, progress };
    const builds = await mapInOrder(buildable, concurrency, (p) => buildOne(p, ctx)).catch((err: unknown) => {
      if (!(err instanceof OemError) && (err as NodeJS.ErrnoException).code === 'ENOSPC') {
        throw new OemError(`no space left on the device of ${outputDir} (the working images and the artifacts are written there)`, { code: 'noSpace', hint: 'free some space, or use another --output-dir' });
      }
      throw err;
    });
    return result(builds);
  } finally {
    await releaseWork();
  }
}

interface Ctx {
  opts: BuildOptions;
  signer: SigningKey | null;
  base: Base;
  image: PreparedImage;
  /** Output prefixes shared by the run's outputs (none when it makes only one). */
  prefixes?: SharedPrefixes;
  /** The agent, xz-compressed, as a file. */
  agent: HostFile | null;
  /** The agent unpacked (for providers' own extensions), made once when the first one needs it. */
  agentExecutable?: Promise<HostFile>;
  sshKeys: SshKey[];
  config: Buffer;
  ignition: string | null;
  backend: ReturnType<typeof resolveBackend>;
  outputDir: string;
  work: string;
  log: (l: string) => void;
  step: (title: string) => void;
  progress: (done: number, total: number | undefined, unit?: ProgressUnit) => void;
}

/** The formats a provider is built in: the --format flags, else its own defaults. */
function formatsOf(p: Provider, opts: BuildOptions): Format[] {
  return opts.formats?.length ? opts.formats : p.formats;
}

/** One provider: render and check its content, assemble its image, make its artifacts, publish them. */
async function buildOne(p: Provider, c: Ctx): Promise<ProviderBuild> {
  const { base, image } = c;
  const content = image.sysext ? await sysextContent(p, image.sysext, c) : await plainContent(p, c);

  const tmpDir = join(c.outputDir, `.${p.id}.oem-tmp-${process.pid}`);
  await rm(tmpDir, { recursive: true, force: true });
  await mkdir(tmpDir);
  const releaseTmp = acquire(`temporary output ${tmpDir}`, () => rm(tmpDir, { recursive: true, force: true }));
  try {
    const formats = formatsOf(p, c.opts);
    const compression = c.opts.compress ?? 'bz2';
    const size = c.opts.diskSize ?? p.diskSize;
    const grow = size !== undefined || p.rootSectors !== undefined ? { ...(size !== undefined ? { size } : {}), ...(p.rootSectors !== undefined ? { rootSectors: p.rootSectors } : {}) } : undefined;
    const job = { providerId: p.id, distro: base.distro, formats, ...(grow ? { grow } : {}), compression, base: { raw: image.raw, index: image.index }, ...(c.prefixes ? { prefixes: c.prefixes } : {}), pieceCache: image.index ? join(dirname(image.index.file), 'pieces') : join(c.work, 'pieces'), signer: c.signer, mtime: buildTime(), outDir: tmpDir, work: c.work, log: c.log, step: c.step, progress: (d: number, t: number) => c.progress(d, t, 'percent') };
    // The raw and fixed VHD .bz2 from the release's blocks, the qcow2 and the VMDK-based formats need no whole copy of the disk.
    const whole = needsWholeDisk(job, image.layout.size);
    const working = await workingImage(image.raw, image.layout, join(c.work, `${p.id}.bin`), whole);
    let artifacts;
    try {
      c.step(`${p.id}: writing the OEM partition${c.sshKeys.length ? ' and the keys into ROOT' : ''}`);
      const written = await writePartitions(working, content.oem, c.sshKeys, c.backend, content.root);
      artifacts = await makeArtifacts(written, job);
    } finally {
      await working.remove();
    }
    const published = await publishProvider(tmpDir, c.outputDir, {
      provider: p,
      base,
      generation: image.sysext ? 'flatcar-sysext' : image.generation,
      insecure: c.opts.insecure ?? false,
      agent: c.agent !== null,
      sshKeyFingerprints: c.sshKeys.map((k) => k.fingerprint),
      config: c.opts.config !== undefined,
      signer: c.signer,
      createdAt: job.mtime,
      artifacts,
    });
    await releaseTmp();
    return published;
  } catch (err) {
    await releaseTmp();
    throw err;
  }
}

/** What one provider writes: OEM entries, ROOT entries (besides the user's keys), and a line for the log. */
interface Content {
  oem: PlanEntry[];
  root: PlanEntry[];
}

const ignitionEntry = (text: string): PlanEntry => ({ kind: 'file', path: '/config.ign', content: Buffer.from(text), mode: 0o644, uid: 0, gid: 0 });

/** Plain files on OEM (CoreOS, and Flatcar before 3760): the rendered templates, and the user's config.ign. */
async function plainContent(p: Provider, c: Ctx): Promise<Content> {
  const { base, image } = c;
  const rendered = await renderProvider({ provider: p, distro: base.distro, version: base.version, channel: base.channel, generation: image.generation, agent: c.agent, sshKeys: c.sshKeys, config: c.config });
  if (c.ignition !== null) {
    rendered.entries.push(ignitionEntry(c.ignition));
    rendered.files.push({ path: '/config.ign', kind: 'ignition', content: c.ignition });
  }
  await validateRendered(p.id, rendered);
  return { oem: rendered.entries, root: [] };
}

/** The extension era: Flatcar's own OEM extension for the platform, or the provider's own one; then the user's. */
async function sysextContent(p: Provider, img: SysextImage, c: Ctx): Promise<Content> {
  const mode = sysextMode(p, img);
  let content: SysextContent;
  const missing = missingExtension(p, img);
  if (mode.kind === 'official') {
    content = await officialContent(p, img, mode.platform, await officialRaw(mode.platform, c));
  } else if (missing !== undefined) {
    throw new OemError(`provider ${p.id} cannot be built from ${c.base.distro} ${c.base.version}: ${missing}`, { code: 'usage', hint: `build ${p.id} from a release that has it` });
  } else {
    const rendered = await renderProvider({ provider: p, distro: c.base.distro, version: c.base.version, channel: c.base.channel, generation: 'flatcar', agent: c.agent, sshKeys: [], config: c.config });
    await validateRendered(p.id, rendered);
    const work = join(c.work, `${p.id}.sysext`);
    await mkdir(work);
    const xz = c.agent;
    const agent = xz ? { xz, executable: () => (c.agentExecutable ??= agentExecutable(xz, c.work)) } : null;
    // The agent's compressed blocks are kept beside the piece cache (and go with the base's cache entry).
    const store = c.image.index ? join(dirname(c.image.index.file), 'squashfs') : join(c.work, 'squashfs');
    content = await customContent(p, img, rendered, { name: mode.name, format: c.opts.sysextFormat ?? 'squashfs', mtime: Math.floor(buildTime().getTime() / 1000), agent, work, store });
  }
  content = await addUserExtensions(content, img, c.opts.sysexts ?? []);
  if (c.ignition !== null) {
    content.oem.push(ignitionEntry(c.ignition));
    content.files.push({ path: '/config.ign', kind: 'ignition', content: c.ignition });
  }
  await validateRendered(p.id, { entries: content.oem, files: content.files });
  c.log(`${p.id}: ${content.summary}`);
  return { oem: content.oem, root: content.root };
}

/** The release's verified oem-<platform>.raw: --oem-sysext, else the one beside a local --image, else fetched from the release. */
async function officialRaw(platform: string, c: Ctx): Promise<string> {
  const { opts } = c;
  const name = `oem-${platform}.raw`;
  const local = opts.oemSysext ?? (opts.image ? join(dirname(resolve(opts.image)), name) : undefined);
  if (local !== undefined) {
    if (!(await stat(local).catch(() => null))?.isFile()) {
      throw new OemError(`no ${name} next to ${opts.image}: a local image of Flatcar ${c.base.version} needs its OEM extension for ${platform}`, {
        code: 'usage',
        hint: `download ${name} and ${name}.sig from the release's directory beside the image, or give it with --oem-sysext FILE`,
      });
    }
    await verifyLocal(local, `${local}.sig`, opts, c.log);
    return local;
  }
  const f = await fetchOemSysext({
    ...(opts.fetch as FetchOptions),
    ...(opts.keyFiles?.length ? { keyFiles: opts.keyFiles } : {}),
    insecure: opts.insecure ?? false,
    log: c.log,
    version: c.base.version,
    platform,
  });
  return f.path;
}

