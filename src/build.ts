/**
 * `oem build`: from a channel release (fetched and verified) or a local image to provider images a
 * distributor can publish. The base is decompressed once; each provider gets a sparse (or reflinked)
 * copy, its OEM content (and the user's keys and config), and is compressed, hashed and described.
 * Each provider's outputs are written in a temporary directory and appear under their final names
 * only when complete.
 */
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { acquire } from './cleanup.js';
import { readAndValidateConfig } from '../oem/config/validate.js';
import { formatProblem } from '../oem/config/types.js';
import { OemError } from './errors.js';
import { compressFile, COMPRESSION_SUFFIX, type Compression } from './artifacts/compress.js';
import type { ProgressSink, ProgressUnit } from './progress.js';
import { artifactName, COMPRESSIBLE, convert, type Format } from './artifacts/formats.js';
import { clearsign, loadSigningKey, signFile, type SigningKey } from './artifacts/sign.js';
import { FileSource, SliceSource } from './image/byte-source.js';
import { prepareBase, type BaseIndex } from './image/base-cache.js';
import { detectFilesystem, type FsInfo } from './image/fs-detect.js';
import { detectGeneration, parseKeyValues } from './image/generation.js';
import { readGpt } from './image/gpt.js';
import { roleOf } from './image/layout.js';
import { copyRanges } from './image/sparse.js';
import { partitionReports } from './image/inspect.js';
import { keyPlan } from './inject-key.js';
import { packageRoot } from './paths.js';
import { renderProvider, type Generation } from './providers/render.js';
import { findProvider, loadProviders, type Provider } from './providers/registry.js';
import { validateRendered } from './providers/validate.js';
import { defaultCacheDir, fetchRelease, type FetchOptions } from './release/fetch.js';
import { compressReusing, type Region, type SharedPrefixes } from './artifacts/bzip2-reuse.js';
import { loadTrustedKeys, verifyDetached, type Distro } from './release/verify.js';
import { readKeyFile, type SshKey } from './ssh-keys.js';
import { run } from './tools.js';
import { sourceDateEpoch } from './source-date.js';
import { openSession, partitionTargets, resolveBackend, type BackendChoice } from './write/apply.js';
import { normalizePlan, type PlanEntry } from './write/plan.js';

export interface BuildOptions {
  providers: string[];
  allProviders?: boolean;
  /** A local base image instead of fetching. */
  image?: string;
  signature?: string;
  keyFiles?: string[];
  insecure?: boolean;
  fetch?: Omit<FetchOptions, 'keyFiles' | 'insecure' | 'log' | 'onProgress'>;
  sshKeyFiles?: string[];
  config?: string;
  templates?: string;
  outputDir: string;
  backend?: BackendChoice;
  generation?: Generation;
  /** Embed this agent executable instead of the one built for the board. */
  agent?: string;
  noAgent?: boolean;
  /** Artifact formats (default: the provider's). */
  formats?: Format[];
  /** Compression of raw and disk-format artifacts (default bz2, like the releases). */
  compress?: Compression;
  /** Armored OpenPGP secret key to sign every artifact and its DIGESTS with. */
  signKey?: string;
  signPassphrase?: string;
  concurrency?: number;
  log?: (line: string) => void;
  /** Steps and their progress (downloading, decoding, each provider's artifacts). */
  progress?: ProgressSink;
}

export interface ArtifactInfo {
  name: string;
  path: string;
  format: string;
  compression: string;
  size: number;
  sha512: string;
}

export interface ProviderBuild {
  provider: string;
  oemId: string;
  dir: string;
  image: string;
  versionTxt: string;
  digests: string;
  manifest: string;
  artifacts: ArtifactInfo[];
}

export interface BuildResult {
  distro: Distro;
  channel: string;
  board: string;
  version: string;
  generation: Generation;
  base: { image: string; sha512: string; verified: boolean; insecure: boolean; signedBy: string | null };
  backend: string;
  outputDir: string;
  builds: ProviderBuild[];
}

function builderVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

/** The time written into manifests: SOURCE_DATE_EPOCH when set (reproducible builds), else now. */
export function buildTime(): Date {
  const e = sourceDateEpoch();
  return e !== undefined ? new Date(e * 1000) : new Date();
}

async function hashes(path: string): Promise<{ md5: string; sha1: string; sha512: string; size: number }> {
  const h = { md5: createHash('md5'), sha1: createHash('sha1'), sha512: createHash('sha512') };
  let size = 0;
  for await (const c of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) {
    for (const x of Object.values(h)) x.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { md5: h.md5.digest('hex'), sha1: h.sha1.digest('hex'), sha512: h.sha512.digest('hex'), size };
}

/** A .DIGESTS file in the release format (MD5, SHA1, SHA512 sections). */
export function digestsText(entries: { name: string; md5: string; sha1: string; sha512: string }[]): string {
  const out: string[] = [];
  for (const [title, key] of [['MD5', 'md5'], ['SHA1', 'sha1'], ['SHA512', 'sha512']] as const) {
    out.push(`# ${title} HASH`);
    for (const e of entries) out.push(`${e[key]}  ${e.name}`);
  }
  return out.join('\n') + '\n';
}

const AGENT_ARCH: Record<string, string> = { 'amd64-usr': 'x64', 'arm64-usr': 'arm64' };

/** The agent for the board, xz-compressed: the one `npm run build:agent` made, or --agent FILE. */
async function loadAgent(opts: BuildOptions, board: string): Promise<Buffer | null> {
  if (opts.noAgent) return null;
  const path = opts.agent ?? join(packageRoot(), 'dist', 'agent', `oem-agent-linux-${AGENT_ARCH[board] ?? board}.xz`);
  const st = await stat(path).catch(() => null);
  if (!st?.isFile()) {
    throw new OemError(`the runtime agent for ${board} is missing: ${path}`, {
      code: 'usage',
      hint: 'build it with `npm run build:agent`, give one with --agent FILE, or build without it with --no-agent',
    });
  }
  const data = await readFile(path);
  if (data.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return data;
  if (data.subarray(0, 4).toString('latin1') !== '\x7fELF') throw new OemError(`--agent ${path} is neither an executable (ELF) nor .xz`, { code: 'usage' });
  const r = await run('xz', ['-6', '-T0', '-c', path], 'compress the agent', { encoding: 'buffer' } as never);
  return r.stdoutBytes;
}

/** The user's provisioning config, validated by the agent's own validator; or the default one. */
async function loadConfig(path: string | undefined): Promise<Buffer> {
  if (!path) return readFile(join(packageRoot(), 'templates', '_common', 'config.yml'));
  const r = await readAndValidateConfig(path);
  const errors = r.problems.filter((p) => p.severity === 'error');
  if (errors.length) {
    throw new OemError(
      `--config ${path} is not a valid provisioning config: ${formatProblem(errors[0]!)}${errors.length > 1 ? ` (and ${errors.length - 1} more)` : ''}`,
      { code: 'usage', hint: `oem validate ${path} lists every problem` },
    );
  }
  return readFile(path);
}

interface Base {
  compressed: string;
  distro: Distro;
  channel: string;
  board: string;
  version: string;
  versionFields: Record<string, string>;
  sha512: string;
  verified: boolean;
  signedBy: string | null;
}

async function localBase(opts: BuildOptions, log: (l: string) => void): Promise<Omit<Base, 'distro' | 'version' | 'versionFields'> & { versionTxt?: Record<string, string> }> {
  const image = resolve(opts.image!);
  if (!(await stat(image).catch(() => null))?.isFile()) throw new OemError(`no such image: ${opts.image}`, { code: 'usage' });
  const sigPath = opts.signature ?? `${image}.sig`;
  const sig = await readFile(sigPath).catch(() => null);
  let verified = false;
  let signedBy: string | null = null;
  let sha512: string;
  if (sig && !opts.insecure) {
    const trusted = opts.keyFiles?.length
      ? await loadTrustedKeys('flatcar', opts.keyFiles)
      : await Promise.all([loadTrustedKeys('flatcar'), loadTrustedKeys('coreos')]).then((t) => ({ keys: t.flatMap((x) => x.keys), source: 'the bundled Flatcar and CoreOS image signing keys' }));
    const v = await verifyDetached(image, sig, basename(sigPath), trusted);
    verified = true;
    signedBy = v.signingKeyFingerprint;
    sha512 = v.sha512;
    log(`verified ${basename(image)}: good signature by subkey ${v.signingKeyFingerprint} of ${v.key}`);
  } else {
    if (!opts.insecure) {
      throw new OemError(`${opts.image} has no signature to verify (${sigPath} is missing)`, {
        code: 'verification',
        hint: 'give it with --signature FILE, or build from an unverified image with --insecure (recorded in the manifest)',
      });
    }
    log(`WARNING: --insecure: ${basename(image)} is NOT verified`);
    sha512 = (await hashes(image)).sha512;
  }
  const stem = basename(image).replace(/(\.bin)?(\.bz2|\.gz|\.xz|\.zst)?$/, '');
  let versionTxt: Record<string, string> | undefined;
  for (const p of [join(dirname(image), `${stem}.version.txt`), join(dirname(image), 'version.txt')]) {
    const t = await readFile(p, 'utf8').catch(() => null);
    if (t) {
      versionTxt = parseKeyValues(t);
      break;
    }
  }
  return {
    compressed: image,
    channel: opts.fetch?.channel ?? 'stable',
    board: opts.fetch?.board ?? 'amd64-usr',
    sha512,
    verified,
    signedBy,
    ...(versionTxt ? { versionTxt } : {}),
  };
}

/** Runs `fn` over items with at most `n` at a time, in order of completion; fails fast. */
async function pool<T, R>(items: T[], n: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (next < items.length && failed === undefined) {
      const i = next++;
      try {
        results[i] = await fn(items[i]!);
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(n, items.length)) }, worker));
  if (failed !== undefined) throw failed;
  return results;
}

export async function build(opts: BuildOptions): Promise<BuildResult> {
  const log = opts.log ?? (() => {});
  const step = opts.progress?.step ?? (() => {});
  const progress = opts.progress?.progress ?? (() => {});
  const all = await loadProviders(opts.templates);
  const wanted: Provider[] = opts.allProviders ? all : [...new Map(opts.providers.map((n) => findProvider(all, n)).map((p) => [p.id, p])).values()];
  if (!wanted.length) throw new OemError('no provider given: use --provider P (repeatable) or --all-providers', { code: 'usage', hint: 'see oem providers' });

  const sshKeys: SshKey[] = [];
  for (const f of opts.sshKeyFiles ?? []) sshKeys.push(...(await readKeyFile(f)));
  const config = await loadConfig(opts.config);
  const backend = resolveBackend(opts.backend ?? 'auto');
  if (backend === 'mount' && sourceDateEpoch() !== undefined) {
    log('WARNING: SOURCE_DATE_EPOCH with --backend mount: the kernel stamps what it writes with the real time, so the images are not byte-reproducible (--backend auto or rootless are)');
  }
  // The signing key is checked before anything is fetched or built.
  const signer = opts.signKey ? await loadSigningKey(opts.signKey, opts.signPassphrase) : null;

  // The base release: fetched and verified, or a local image (verified unless --insecure).
  let base: Base;
  if (opts.image) {
    step(`checking the local image ${basename(opts.image)}`);
    const lb = await localBase(opts, log);
    base = { ...lb, distro: 'flatcar', version: '', versionFields: lb.versionTxt ?? {} };
  } else {
    step(`fetching the ${opts.fetch?.distro ?? 'flatcar'} ${opts.fetch?.channel ?? 'stable'} release`);
    const f = await fetchRelease({
      ...(opts.fetch as FetchOptions),
      ...(opts.keyFiles?.length ? { keyFiles: opts.keyFiles } : {}),
      insecure: opts.insecure ?? false,
      log,
      onProgress: (d, t) => progress(d, t, 'bytes'),
    });
    base = {
      compressed: f.image,
      distro: f.distro,
      channel: f.channel,
      board: f.board,
      version: f.version,
      versionFields: parseKeyValues(await readFile(f.versionTxt, 'utf8')),
      sha512: f.sha512,
      verified: f.verified !== null,
      signedBy: f.verified?.signingKeyFingerprint ?? null,
    };
  }
  const agent = await loadAgent(opts, base.board);

  const outputDir = resolve(opts.outputDir);
  await mkdir(outputDir, { recursive: true });
  const work = join(outputDir, `.oem-work-${process.pid}`);
  await mkdir(work);
  const releaseWork = acquire(`work directory ${work}`, () => rm(work, { recursive: true, force: true }));
  try {
    // Decompress the base once (kept in the cache for the next build); every provider starts from a
    // sparse or reflinked copy of it.
    step('preparing the base image');
    const prepared = await prepareBase(base.compressed, base.sha512, {
      cacheDir: opts.fetch?.cacheDir ?? defaultCacheDir(),
      workDir: work,
      log,
      onProgress: (done, total) => progress(done, total, 'percent'),
    });
    const baseRaw = prepared.raw;

    // What the base is: generation and version from the image itself where the release did not say.
    const src = await FileSource.open(baseRaw);
    let gen;
    let layout: Layout;
    try {
      const gpt = await readGpt(src);
      const ss = gpt.sectorSize;
      const part = (role: string): [number, number][] =>
        gpt.partitions.filter((p) => roleOf(p.number, p.label, p.typeGuid) === role).map((p) => [p.offset, p.offset + p.size]);
      layout = {
        size: prepared.size,
        gpt: [[0, gpt.firstUsableLba * ss], [(gpt.lastUsableLba + 1) * ss, prepared.size]],
        written: [...part('oem'), ...part('root')],
      };
      const fss = new Map<number, FsInfo>();
      for (const p of gpt.partitions) fss.set(p.number, await detectFilesystem(new SliceSource(src, p.offset, p.size)));
      gen = await detectGeneration(baseRaw, partitionReports(gpt, fss), Object.keys(base.versionFields).length ? base.versionFields : undefined);
    } finally {
      await src.close();
    }
    const generation: Generation = opts.generation ?? (gen.name === 'unknown' ? 'flatcar' : gen.name);
    if (opts.image) {
      base.distro = gen.name === 'coreos' ? 'coreos' : 'flatcar';
      base.version = base.versionFields.FLATCAR_VERSION ?? base.versionFields.COREOS_VERSION ?? gen.version ?? '0.0.0';
      if (!Object.keys(base.versionFields).length) {
        const P = base.distro === 'coreos' ? 'COREOS' : 'FLATCAR';
        base.versionFields = { [`${P}_VERSION`]: base.version, [`${P}_VERSION_ID`]: base.version };
      }
    }
    log(`base: ${base.distro} ${base.version} (${generation}-style image${opts.generation ? ', forced' : ''})`);

    const prefixes: SharedPrefixes = { dir: work, made: new Map() };
    const concurrency = opts.concurrency ?? Math.max(1, Math.min(availableParallelism(), 4));
    const builds = await pool(wanted, concurrency, (p) => buildOne(p, { opts, signer, base, baseRaw, baseIndex: prepared.index, layout: layout!, prefixes, generation, agent, sshKeys, config, backend, outputDir, work, log, step, progress })).catch(
      (err: unknown) => {
        if (!(err instanceof OemError) && (err as NodeJS.ErrnoException).code === 'ENOSPC') {
          throw new OemError(`no space left on the device of ${outputDir} (the working images and the artifacts are written there)`, { code: 'noSpace', hint: 'free some space, or use another --output-dir' });
        }
        throw err;
      },
    );
    return {
      distro: base.distro,
      channel: base.channel,
      board: base.board,
      version: base.version,
      generation,
      base: { image: basename(base.compressed), sha512: base.sha512, verified: base.verified, insecure: opts.insecure ?? false, signedBy: base.signedBy },
      backend,
      outputDir,
      builds,
    };
  } finally {
    await releaseWork();
  }
}

/** Where a build writes (OEM, ROOT) and the partition tables, as byte ranges of the image. */
interface Layout {
  size: number;
  gpt: [number, number][];
  written: [number, number][];
}

interface Ctx {
  opts: BuildOptions;
  signer: SigningKey | null;
  base: Base;
  baseRaw: string;
  baseIndex: BaseIndex | null;
  layout: Layout;
  prefixes: SharedPrefixes;
  generation: Generation;
  agent: Buffer | null;
  sshKeys: SshKey[];
  config: Buffer;
  backend: ReturnType<typeof resolveBackend>;
  outputDir: string;
  work: string;
  log: (l: string) => void;
  step: (title: string) => void;
  progress: (done: number, total: number | undefined, unit?: ProgressUnit) => void;
}

async function buildOne(p: Provider, c: Ctx): Promise<ProviderBuild> {
  const { base } = c;
  const rendered = await renderProvider({
    provider: p,
    distro: base.distro,
    version: base.version,
    channel: base.channel,
    generation: c.generation,
    agent: c.agent,
    sshKeys: c.sshKeys,
    config: c.config,
  });
  await validateRendered(p.id, rendered);

  const tmpDir = join(c.outputDir, `.${p.id}.oem-tmp-${process.pid}`);
  await rm(tmpDir, { recursive: true, force: true });
  await mkdir(tmpDir);
  const releaseTmp = acquire(`temporary output ${tmpDir}`, () => rm(tmpDir, { recursive: true, force: true }));
  try {
    const formats = c.opts.formats?.length ? c.opts.formats : p.formats;
    const compression = c.opts.compress ?? 'bz2';
    const reuse = c.baseIndex !== null && compression === 'bz2';
    // Only raw .bz2 from the release's blocks: the working image needs the partition tables and the
    // partitions the build writes, nothing else. Otherwise a whole copy.
    const raw = join(c.work, `${p.id}.bin`);
    let whole = false;
    const wholeImage = async () => {
      if (whole) return;
      const inside = [...c.layout.gpt, ...c.layout.written].sort((a, b) => a[0] - b[0]);
      const rest: [number, number][] = [];
      let at = 0;
      for (const [a, b] of inside) {
        if (a > at) rest.push([at, a]);
        at = Math.max(at, b);
      }
      if (at < c.layout.size) rest.push([at, c.layout.size]);
      await copyRanges(c.baseRaw, raw, rest);
      whole = true;
    };
    await writeFile(raw, '', { flag: 'wx' });
    await truncate(raw, c.layout.size);
    await copyRanges(c.baseRaw, raw, [...c.layout.gpt, ...c.layout.written]);
    if (!(reuse && formats.every((f) => f === 'raw'))) await wholeImage();
    const targets = await partitionTargets(raw, c.sshKeys.length ? ['oem', 'root'] : ['oem']);
    const oemPlan = normalizePlan({ partitions: { oem: rendered.entries } }).partitions.oem!;
    const written: Region[] = [targets.oem, ...(c.sshKeys.length ? [targets.root] : [])].map((t) => ({ offset: t.offset, size: t.size }));
    c.step(`${p.id}: writing the OEM partition${c.sshKeys.length ? ' and the keys into ROOT' : ''}`);
    const s = await openSession(targets.oem, c.backend);
    let ok = false;
    try {
      await s.apply(oemPlan);
      ok = true;
    } finally {
      await s.close(ok);
    }
    if (c.sshKeys.length) {
      const r = await openSession(targets.root, c.backend);
      ok = false;
      try {
        const kp = await keyPlan(r, c.sshKeys, 'core', 1000, 1000, 'oem');
        await r.apply(normalizePlan({ partitions: { root: kp.entries as PlanEntry[] } }).partitions.root!);
        ok = true;
      } finally {
        await r.close(ok);
      }
    }

    // Artifacts: each format converted from the written raw image, compressed where that applies,
    // hashed, and signed when a key is given.
    const mtime = buildTime();
    const artifacts: ArtifactInfo[] = [];
    for (const format of formats) {
      const plain = artifactName(base.distro, p.id, format);
      const compress = COMPRESSIBLE[format] && compression !== 'none';
      const name = compress ? plain + COMPRESSION_SUFFIX[compression] : plain;
      const out = join(tmpDir, name);
      c.step(`${p.id}: ${name}`);
      const onProgress = (done: number, total: number) => c.progress(done, total, 'percent');
      let tool = '';
      let h: { md5: string; sha1: string; sha512: string; size: number } | undefined;
      if (format === 'raw' && reuse && c.baseIndex) {
        // The release's own compressed blocks for everything this build did not change.
        const r = await compressReusing(c.baseIndex, c.baseRaw, raw, out, written, { pieceCache: join(dirname(c.baseIndex.file), 'pieces'), shared: c.prefixes });
        const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
        tool = `${r.tool} for ${mib(r.recompressed)} (of ${mib(r.changed)} changed; the rest from the piece cache), the release's bzip2 blocks for the rest (${r.reusedBlocks} of ${r.blocks})`;
        h = r;
      } else if (format === 'raw' && compress) {
        await wholeImage();
        tool = (await compressFile(raw, out, compression, undefined, onProgress)).tool;
      } else {
        const converted = compress ? join(c.work, `${p.id}.${format}`) : out;
        await convert(raw, format, converted, { name: plain.replace(/\.[^.]+$/, ''), mtime, onProgress });
        if (compress) {
          tool = (await compressFile(converted, out, compression, undefined, onProgress)).tool;
          await rm(converted, { force: true });
        }
      }
      h ??= await hashes(out);
      const digests = digestsText([{ name, ...h }]);
      await writeFile(join(tmpDir, `${name}.DIGESTS`), digests);
      if (c.signer) {
        await writeFile(join(tmpDir, `${name}.sig`), await signFile(out, c.signer));
        await writeFile(join(tmpDir, `${name}.DIGESTS.asc`), await clearsign(digests, c.signer));
      }
      c.log(`${p.id}: ${name} (${h.size} bytes${tool ? `, compressed with ${tool}` : ''}${c.signer ? ', signed' : ''})`);
      artifacts.push({ name, path: name, format, compression: compress ? compression : 'none', size: h.size, sha512: h.sha512 });
    }
    await rm(raw, { force: true });

    const P = base.distro === 'coreos' ? 'COREOS' : 'FLATCAR';
    const vt = { ...base.versionFields, [`${P}_OEM_ID`]: p.oemId, [`${P}_OEM_NAME`]: p.name, [`${P}_OEM_PROVIDER`]: p.id };
    const vtText = Object.entries(vt).map(([k, v]) => `${k}=${/^[A-Za-z0-9._-]*$/.test(v) && v !== '' ? v : JSON.stringify(v)}`).join('\n') + '\n';
    await writeFile(join(tmpDir, 'version.txt'), vtText);
    const manifest = {
      provider: p.id,
      oemId: p.oemId,
      name: p.name,
      distro: base.distro,
      channel: base.channel,
      board: base.board,
      version: base.version,
      generation: c.generation,
      base: { image: basename(base.compressed), sha512: base.sha512, verified: base.verified, insecure: c.opts.insecure ?? false, signedBy: base.signedBy },
      builder: { name: 'oem', version: builderVersion() },
      agent: c.agent !== null,
      sshKeys: c.sshKeys.map((k) => k.fingerprint),
      config: c.opts.config !== undefined,
      createdAt: mtime.toISOString(),
      signingKey: c.signer ? { fingerprint: c.signer.fingerprint, signingKeyFingerprint: c.signer.signingKeyFingerprint } : null,
      artifacts: artifacts.map(({ path: _p, ...a }) => a),
    };
    await writeFile(join(tmpDir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');

    // Appear only when complete: swap the finished directory into place.
    const finalDir = join(c.outputDir, p.id);
    const old = join(c.outputDir, `.${p.id}.oem-old-${process.pid}`);
    const hadOld = await stat(finalDir).then(() => true, () => false);
    if (hadOld) await rename(finalDir, old);
    await rename(tmpDir, finalDir);
    await releaseTmp();
    if (hadOld) await rm(old, { recursive: true, force: true });
    return {
      provider: p.id,
      oemId: p.oemId,
      dir: finalDir,
      // The raw image when there is one (what inspect and tools read), else the first artifact.
      image: join(finalDir, (artifacts.find((a) => a.format === 'raw') ?? artifacts[0]!).name),
      versionTxt: join(finalDir, 'version.txt'),
      digests: join(finalDir, `${(artifacts.find((a) => a.format === 'raw') ?? artifacts[0]!).name}.DIGESTS`),
      manifest: join(finalDir, 'manifest.json'),
      artifacts: artifacts.map((a) => ({ ...a, path: join(finalDir, a.name) })),
    };
  } catch (err) {
    await releaseTmp();
    throw err;
  }
}
