/**
 * `oem fetch`: a channel's release (current or pinned), labelled by version.txt, downloaded into a
 * cache keyed by distro, board and version, and verified before it gets its final name.
 *
 * Cache entry: {cache}/{distro}/{board}/{version}/ with the image, .sig, .DIGESTS and version.txt.
 * The image is downloaded to `{image}.part` (kept across runs, so an interrupted download resumes),
 * verified, and only then renamed. A cached entry is re-verified on every fetch.
 */
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../cleanup.js';
import { OemError, describe } from '../shared/errors.js';
import { boardUrl, checkRef, DISTROS, defaultImageName } from './channels.js';
import { downloadFile, fetchBytes, type RetryOptions } from './download.js';
import { parseVersionTxt, isVersion } from './version.js';
import { checkDigests, loadTrustedKeys, precheckSignature, verifyDetached, type Distro, type TrustedKeys } from './verify.js';
import { exists } from '../shared/safe-fs.js';

export interface FetchOptions extends RetryOptions {
  distro: Distro;
  channel: string;
  board: string;
  /** 'current' or X.Y.Z */
  release: string;
  baseUrl?: string;
  imageName?: string;
  keyFiles?: string[];
  cacheDir?: string;
  insecure?: boolean;
  log?: (line: string) => void;
  onProgress?: (received: number, total: number | undefined) => void;
}

export interface FetchResult {
  distro: Distro;
  channel: string;
  board: string;
  release: string;
  version: string;
  url: string;
  /** True when the image came from the cache (no image transfer). */
  cached: boolean;
  dir: string;
  image: string;
  signature: string | null;
  digests: string | null;
  versionTxt: string;
  size: number;
  sha512: string;
  verified: { key: string; keyFingerprint: string; signingKeyFingerprint: string; signedAt: string } | null;
  digestsChecked: boolean;
  insecure: boolean;
}

export function defaultCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'oem');
}


interface Checked {
  sha512: string;
  size: number;
  verified: FetchResult['verified'];
  digestsChecked: boolean;
}

/** Verifies a file against its signature (unless insecure) and the SHA512 line of its DIGESTS. */
async function check(
  file: string,
  name: string,
  sig: Buffer | null,
  digests: Buffer | null,
  trusted: TrustedKeys,
  insecure: boolean,
  log: (l: string) => void,
): Promise<Checked> {
  let sha512: string;
  let size: number;
  let verified: FetchResult['verified'] = null;
  if (sig && !insecure) {
    const v = await verifyDetached(file, sig, `${name}.sig`, trusted, name);
    sha512 = v.sha512;
    size = v.size;
    verified = { key: v.key, keyFingerprint: v.keyFingerprint, signingKeyFingerprint: v.signingKeyFingerprint, signedAt: v.signedAt };
    log(`verified ${name}: good signature by subkey ${v.signingKeyFingerprint} of ${v.key}, made ${v.signedAt}`);
  } else {
    const { createHash } = await import('node:crypto');
    const { createReadStream } = await import('node:fs');
    const h = createHash('sha512');
    size = 0;
    for await (const c of createReadStream(file)) {
      h.update(c as Buffer);
      size += (c as Buffer).length;
    }
    sha512 = h.digest('hex');
  }
  let digestsChecked = false;
  if (digests) {
    checkDigests(digests.toString('utf8'), `${name}.DIGESTS`, name, sha512);
    digestsChecked = true;
    log(`checked ${name}: SHA512 matches ${name}.DIGESTS`);
  }
  return { sha512, size, verified, digestsChecked };
}

/** Where a release's files come from and go: its version directory on the server and in the cache. */
interface ReleaseDir {
  opts: FetchOptions;
  trusted: TrustedKeys;
  insecure: boolean;
  log: (line: string) => void;
  /** URL of the version directory. */
  url: string;
  /** Cache directory of the version. */
  dir: string;
}

interface SignedFile {
  path: string;
  url: string;
  sig: string | null;
  digests: string | null;
  checked: Checked;
  cached: boolean;
}

/**
 * One signed file of a release's version directory (the image, an OEM extension): reused from the
 * cache when it still verifies, else its .sig and .DIGESTS first, then the file (resumed from
 * `.part`), verified, and only then given its name. No signature is a verification error unless
 * --insecure.
 */
async function fetchSigned(rd: ReleaseDir, name: string): Promise<SignedFile> {
  const { opts, trusted, insecure, log } = rd;
  const path = join(rd.dir, name);
  const sigPath = `${path}.sig`;
  const digestsPath = `${path}.DIGESTS`;
  const url = `${rd.url}/${name}`;
  const done = (checked: Checked, cached: boolean, sig: boolean, dig: boolean): SignedFile => ({
    path,
    url,
    sig: sig ? sigPath : null,
    digests: dig ? digestsPath : null,
    checked,
    cached,
  });

  // A cached file: re-verify what is on disk; no transfer.
  if ((await exists(path)) && ((await exists(sigPath)) || insecure)) {
    const sig = (await exists(sigPath)) ? await readFile(sigPath) : null;
    const dig = (await exists(digestsPath)) ? await readFile(digestsPath) : null;
    try {
      const c = await check(path, name, sig, dig, trusted, insecure, log);
      log(`cached: ${path}`);
      return done(c, true, sig !== null, dig !== null);
    } catch (err) {
      if (!(err instanceof OemError) || err.code !== 'verification') throw err;
      log(`cached ${name} failed verification (${err.message}); removed it and downloading again`);
      await rm(path, { force: true });
      await rm(sigPath, { force: true });
      await rm(digestsPath, { force: true });
    }
  }

  // The small files first: no point downloading a file whose signature is missing.
  let sig: Buffer | null = null;
  try {
    sig = await fetchBytes(`${url}.sig`, { ...opts, maxBytes: 64 * 1024 });
  } catch (err) {
    if (!(err instanceof OemError) || !/HTTP 404/.test(err.message)) throw err;
    if (!insecure) {
      throw new OemError(`no signature for ${name}: ${url}.sig is missing (HTTP 404)`, {
        code: 'verification',
        hint: 'an unsigned file cannot be verified; --insecure skips the check (never for published images)',
      });
    }
    log(`WARNING: ${url}.sig is missing`);
  }
  let digests: Buffer | null = null;
  try {
    digests = await fetchBytes(`${url}.DIGESTS`, { ...opts, maxBytes: 1024 * 1024 });
  } catch (err) {
    if (!(err instanceof OemError) || !/HTTP 404/.test(err.message)) throw err;
    log(`note: ${url}.DIGESTS is missing; relying on the signature alone`);
  }

  // Refuse before the big transfer when the signature cannot be ours (unknown or revoked key).
  if (sig && !insecure) await precheckSignature(sig, `${name}.sig`, trusted, name);

  const part = `${path}.part`;
  log(`downloading ${url}`);
  const t0 = Date.now();
  const d = await downloadFile(url, part, {
    ...opts,
    onRetry: (attempt, reason, delay) => log(`retrying ${name} in ${(delay / 1000).toFixed(1)} s (attempt ${attempt + 1}): ${reason}`),
  });
  const secs = Math.max(0.001, (Date.now() - t0) / 1000);
  log(`downloaded ${name}: ${d.size} bytes${d.resumed ? ' (resumed)' : ''}, ${(d.transferred / secs / 1048576).toFixed(1)} MiB/s`);

  let c: Checked;
  try {
    c = await check(part, name, sig, digests, trusted, insecure, log);
  } catch (err) {
    await rm(part, { force: true });
    if (err instanceof OemError) throw err;
    throw new OemError(`cannot verify ${name}: ${describe(err)}`, { code: 'verification' });
  }
  if (sig) await writeFileAtomic(sigPath, sig);
  else await rm(sigPath, { force: true });
  if (digests) await writeFileAtomic(digestsPath, digests);
  else await rm(digestsPath, { force: true });
  await rename(part, path);
  return done(c, false, sig !== null, digests !== null);
}

function checkFetchOptions(opts: FetchOptions): void {
  checkRef(opts.distro, opts.channel, opts.board);
  if (opts.release !== 'current' && !isVersion(opts.release)) {
    throw new OemError(`--release is "current" or a version X.Y.Z, not ${JSON.stringify(opts.release)}`, { code: 'usage' });
  }
}

async function releaseDir(opts: FetchOptions, version: string, keys?: TrustedKeys): Promise<ReleaseDir> {
  const insecure = opts.insecure ?? false;
  const trusted = keys ?? (await loadTrustedKeys(opts.distro, opts.keyFiles));
  const base = boardUrl(opts.baseUrl ?? DISTROS[opts.distro].baseUrl, opts.channel, opts.board);
  const dir = join(opts.cacheDir ?? defaultCacheDir(), opts.distro, opts.board, version);
  await mkdir(dir, { recursive: true });
  return { opts, trusted, insecure, log: opts.log ?? (() => {}), url: `${base}/${version}`, dir };
}

export async function fetchRelease(opts: FetchOptions): Promise<FetchResult> {
  const log = opts.log ?? (() => {});
  checkFetchOptions(opts);
  const imageName = opts.imageName ?? defaultImageName(opts.distro);
  if (!/^[A-Za-z0-9._-]+$/.test(imageName) || imageName.startsWith('.')) {
    throw new OemError(`--image-name must be a plain file name, not ${JSON.stringify(imageName)}`, { code: 'usage' });
  }
  const base = boardUrl(opts.baseUrl ?? DISTROS[opts.distro].baseUrl, opts.channel, opts.board);
  // The keys first: a --key file that cannot be read is a usage error, before any download.
  const trusted = await loadTrustedKeys(opts.distro, opts.keyFiles);

  // version.txt names the release: the channel's current one, or the pinned one.
  const vtUrl = `${base}/${opts.release}/version.txt`;
  const vtBytes = await fetchBytes(vtUrl, { ...opts, maxBytes: 64 * 1024 });
  const rv = parseVersionTxt(vtBytes.toString('utf8'), opts.distro, vtUrl);
  if (opts.release !== 'current' && rv.version !== opts.release) {
    throw new OemError(`${vtUrl} says version ${rv.version}, not ${opts.release}`, { code: 'badImage' });
  }
  const version = rv.version;
  log(`${opts.distro} ${opts.channel} ${opts.board}: ${opts.release === 'current' ? `current is ${version}` : `release ${version}`}`);

  const rd = await releaseDir(opts, version, trusted);
  if (rd.insecure) log('WARNING: --insecure: the signature is NOT checked; do not publish what you build from this');
  const f = await fetchSigned(rd, imageName);
  const vtPath = join(rd.dir, 'version.txt');
  await writeFileAtomic(vtPath, vtBytes);
  return {
    distro: opts.distro,
    channel: opts.channel,
    board: opts.board,
    release: opts.release,
    version,
    url: f.url,
    cached: f.cached,
    dir: rd.dir,
    image: f.path,
    signature: f.sig,
    digests: f.digests,
    versionTxt: vtPath,
    size: f.checked.size,
    sha512: f.checked.sha512,
    verified: f.checked.verified,
    digestsChecked: f.checked.digestsChecked,
    insecure: rd.insecure,
  };
}

export interface OemSysextResult {
  platform: string;
  path: string;
  url: string;
  cached: boolean;
  sha512: string;
  size: number;
  verified: FetchResult['verified'];
  insecure: boolean;
}

/**
 * A release's OEM system extension for a platform, `oem-<platform>.raw` from the same version
 * directory as the image, fetched, cached and verified like the image (with the same keys).
 */
export async function fetchOemSysext(opts: Omit<FetchOptions, 'release' | 'imageName'> & { version: string; platform: string }): Promise<OemSysextResult> {
  checkFetchOptions({ ...opts, release: opts.version });
  if (!/^[a-z0-9][a-z0-9_-]{0,62}$/.test(opts.platform)) throw new OemError(`invalid platform id ${JSON.stringify(opts.platform)}`, { code: 'usage' });
  const rd = await releaseDir({ ...opts, release: opts.version }, opts.version);
  const name = `oem-${opts.platform}.raw`;
  let f: SignedFile;
  try {
    f = await fetchSigned(rd, name);
  } catch (err) {
    // A missing .sig is a verification error, unless the extension itself is missing too.
    const missing = err instanceof OemError && /HTTP 404/.test(err.message) && (err.code !== 'verification' || (await fetch(`${rd.url}/${name}`, { method: 'HEAD' }).then((r) => r.status === 404, () => false)));
    if (missing) {
      throw new OemError(`${opts.distro} ${opts.version} publishes no ${name} (${rd.url}/${name}: HTTP 404)`, {
        code: 'network',
        hint: 'the platform may have no OEM extension in this release; check the release directory',
      });
    }
    throw err;
  }
  return { platform: opts.platform, path: f.path, url: f.url, cached: f.cached, sha512: f.checked.sha512, size: f.checked.size, verified: f.checked.verified, insecure: rd.insecure };
}
