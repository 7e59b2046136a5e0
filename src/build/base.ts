/**
 * The first stage of a build: the base image. A channel release is fetched and verified (or a local
 * image is verified, unless --insecure), decoded once into the cache (src/image/base-cache.ts), and
 * read: where the partition tables and the partitions a build writes (OEM, ROOT) lie, the image's
 * generation, and for a local image its distribution and version.
 */
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { OemError } from '../shared/errors.js';
import { prepareBase, type BaseIndex } from '../image/base-cache.js';
import { FileSource, SliceSource } from '../image/byte-source.js';
import { detectFilesystem, type FsInfo } from '../image/fs-detect.js';
import { detectGeneration, parseKeyValues, type GenerationName } from '../image/generation.js';
import { readGpt } from '../image/gpt.js';
import { partitionReports, roleOf } from '../image/layout.js';
import type { ProgressUnit } from '../progress.js';
import type { Generation } from '../providers/render.js';
import type { SysextImage } from '../sysext/oem.js';
import { boardArchitecture } from '../sysext/release.js';
import { defaultCacheDir, fetchRelease, type FetchOptions } from '../release/fetch.js';
import { loadTrustedKeys, verifyDetached, type Distro } from '../release/verify.js';
import { hashes } from './digests.js';

export interface Base {
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

/** Where a build writes (OEM, ROOT) and the partition tables, as byte ranges of the image. */
export interface Layout {
  size: number;
  gpt: [number, number][];
  written: [number, number][];
}

export interface PreparedImage {
  /** The decoded base (sparse, in the cache; never written). */
  raw: string;
  /** The release's bzip2 block map, for reusing its blocks. */
  index: BaseIndex | null;
  layout: Layout;
  generation: Generation;
  /** The extension era (Flatcar 3760 and later): what the build needs to know of the image. */
  sysext: SysextImage | null;
}

export interface BaseSource {
  image?: string;
  signature?: string;
  keyFiles?: string[];
  insecure?: boolean;
  fetch?: Omit<FetchOptions, 'keyFiles' | 'insecure' | 'log' | 'onProgress'>;
}

interface Report {
  log: (line: string) => void;
  step: (title: string) => void;
  progress: (done: number, total: number | undefined, unit?: ProgressUnit) => void;
}

/** The base release: fetched and verified, or a local image (verified unless --insecure). */
export async function resolveBase(src: BaseSource, r: Report): Promise<Base> {
  if (src.image) {
    r.step(`checking the local image ${basename(src.image)}`);
    const lb = await localBase(src, r.log);
    return { ...lb, distro: 'flatcar', version: '', versionFields: lb.versionTxt ?? {} };
  }
  r.step(`fetching the ${src.fetch?.distro ?? 'flatcar'} ${src.fetch?.channel ?? 'stable'} release`);
  const f = await fetchRelease({
    ...(src.fetch as FetchOptions),
    ...(src.keyFiles?.length ? { keyFiles: src.keyFiles } : {}),
    insecure: src.insecure ?? false,
    log: r.log,
    onProgress: (d, t) => r.progress(d, t, 'bytes'),
  });
  return {
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

/**
 * Verifies a local file of a release (the image, an OEM extension) against its detached signature
 * with the bundled Flatcar and CoreOS keys (or --key); without a signature only --insecure lets it
 * through (and it is logged).
 */
export async function verifyLocal(
  file: string,
  sigPath: string,
  src: Pick<BaseSource, 'keyFiles' | 'insecure'>,
  log: (l: string) => void,
  hint = 'put its signature next to it (FILE.sig), or build from unverified files with --insecure (recorded in the manifest)',
): Promise<{ verified: boolean; signedBy: string | null; sha512: string }> {
  const sig = await readFile(sigPath).catch(() => null);
  if (sig && !src.insecure) {
    const trusted = src.keyFiles?.length
      ? await loadTrustedKeys('flatcar', src.keyFiles)
      : await Promise.all([loadTrustedKeys('flatcar'), loadTrustedKeys('coreos')]).then((t) => ({ keys: t.flatMap((x) => x.keys), source: 'the bundled Flatcar and CoreOS image signing keys' }));
    const v = await verifyDetached(file, sig, basename(sigPath), trusted);
    log(`verified ${basename(file)}: good signature by subkey ${v.signingKeyFingerprint} of ${v.key}`);
    return { verified: true, signedBy: v.signingKeyFingerprint, sha512: v.sha512 };
  }
  if (!src.insecure) {
    throw new OemError(`${file} has no signature to verify (${sigPath} is missing)`, {
      code: 'verification',
      hint,
    });
  }
  log(`WARNING: --insecure: ${basename(file)} is NOT verified`);
  return { verified: false, signedBy: null, sha512: (await hashes(file)).sha512 };
}

async function localBase(src: BaseSource, log: (l: string) => void): Promise<Omit<Base, 'distro' | 'version' | 'versionFields'> & { versionTxt?: Record<string, string> }> {
  const image = resolve(src.image!);
  if (!(await stat(image).catch(() => null))?.isFile()) throw new OemError(`no such image: ${src.image}`, { code: 'usage' });
  const v = await verifyLocal(image, src.signature ?? `${image}.sig`, src, log, 'give it with --signature FILE, or build from an unverified image with --insecure (recorded in the manifest)');
  const { verified, signedBy, sha512 } = v;
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
    channel: src.fetch?.channel ?? 'stable',
    board: src.fetch?.board ?? 'amd64-usr',
    sha512,
    verified,
    signedBy,
    ...(versionTxt ? { versionTxt } : {}),
  };
}

/**
 * Decodes the base once (kept in the cache for the next build) and reads what it is. For a local
 * image, `base` gets its distribution and version from the image itself where no version.txt said.
 */
/** A generation a build can be told to use (--generation). */
export type BuildGeneration = Exclude<GenerationName, 'unknown'>;

export async function prepareImage(
  base: Base,
  opts: { cacheDir?: string; work: string; generation?: BuildGeneration; /** A local --image. */ local?: boolean; /** --board given on the command line. */ boardGiven?: boolean; /** --release as given on the command line. */ releaseGiven?: string },
  r: Report,
): Promise<PreparedImage> {
  r.step('preparing the base image');
  const prepared = await prepareBase(base.compressed, base.sha512, {
    cacheDir: opts.cacheDir ?? defaultCacheDir(),
    workDir: opts.work,
    log: r.log,
    onProgress: (done, total) => r.progress(done, total, 'percent'),
  });
  const src = await FileSource.open(prepared.raw);
  let gen;
  let layout: Layout;
  try {
    const gpt = await readGpt(src);
    const ss = gpt.sectorSize;
    const part = (role: string): [number, number][] => gpt.partitions.filter((p) => roleOf(p.number, p.label, p.typeGuid) === role).map((p) => [p.offset, p.offset + p.size]);
    layout = {
      size: prepared.size,
      gpt: [[0, gpt.firstUsableLba * ss], [(gpt.lastUsableLba + 1) * ss, prepared.size]],
      written: [...part('oem'), ...part('root')],
    };
    const fss = new Map<number, FsInfo>();
    for (const p of gpt.partitions) fss.set(p.number, await detectFilesystem(new SliceSource(src, p.offset, p.size)));
    gen = await detectGeneration(prepared.raw, partitionReports(gpt, fss), Object.keys(base.versionFields).length ? base.versionFields : undefined);
  } finally {
    await src.close();
  }
  // The board the image says it is for (USR-A's os-release): a local image's, unless --board was
  // given otherwise; a fetched release's board directory must hold images for that board.
  const own = gen.osRelease?.FLATCAR_BOARD ?? gen.osRelease?.COREOS_BOARD;
  if (own && own !== base.board) {
    if (!opts.local || opts.boardGiven) {
      throw new OemError(`the image is for ${own} (its os-release), not ${base.board}`, {
        code: opts.local ? 'usage' : 'badImage',
        hint: opts.local ? `leave --board out, or give --board ${own}` : 'check --board and --base-url: the release directory holds images of another board',
      });
    }
    r.log(`base: the image is for ${own} (its os-release)`);
    base.board = own;
  }
  const chosen: BuildGeneration = opts.generation ?? (gen.name === 'unknown' ? 'flatcar' : gen.name);
  const generation: Generation = chosen === 'coreos' ? 'coreos' : 'flatcar';
  if (!base.version) {
    base.distro = gen.name === 'coreos' ? 'coreos' : 'flatcar';
    base.version = base.versionFields.FLATCAR_VERSION ?? base.versionFields.COREOS_VERSION ?? gen.version ?? '0.0.0';
    if (!Object.keys(base.versionFields).length) {
      const P = base.distro === 'coreos' ? 'COREOS' : 'FLATCAR';
      base.versionFields = { [`${P}_VERSION`]: base.version, [`${P}_VERSION_ID`]: base.version };
    }
  }
  if (opts.local && opts.releaseGiven && opts.releaseGiven !== 'current' && opts.releaseGiven !== base.version) {
    throw new OemError(`the image is ${base.distro} ${base.version}, not --release ${opts.releaseGiven}`, { code: 'usage', hint: 'leave --release out with --image: the version is the image\'s' });
  }
  const sysext: SysextImage | null =
    chosen === 'flatcar-sysext'
      ? { distro: base.distro, version: base.version, os: gen.osRelease ?? {}, arch: boardArchitecture(gen.osRelease?.FLATCAR_BOARD ?? base.board), oems: gen.sysext?.oems ?? [] }
      : null;
  r.log(`base: ${base.distro} ${base.version} (${sysext ? 'provider content as system extensions' : `${generation}-style image`}${opts.generation ? ', forced' : ''})`);
  return { raw: prepared.raw, index: prepared.index, layout, generation, sysext };
}
