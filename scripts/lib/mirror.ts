/**
 * Builds a fake Container Linux release mirror on disk, laid out like the real servers:
 *
 *   {mirrorDir}/{channel}/{board}/{version|current}/
 *     version.txt
 *     {distro}_production_image.bin.bz2
 *     {distro}_production_image.bin.bz2.sig       (detached binary OpenPGP signature)
 *     {distro}_production_image.bin.bz2.DIGESTS   (MD5, SHA1, SHA512)
 *     oem-{platform}.raw, .raw.sig, .raw.DIGESTS   (extension era: the OEM system extensions)
 *
 * Signatures are made with a throw-away key whose separate signing subkey does the signing, as
 * with the real Flatcar/CoreOS image signing keys. Everything streams, so 300 MB images are fine.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, link, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import * as openpgp from 'openpgp';
import { compressBzip2 as compressWithBzip2 } from '../../src/artifacts/compress.js';
import { signFile } from '../../src/artifacts/sign.js';

export type Distro = 'flatcar' | 'coreos';

export interface TestKeyOptions {
  name?: string;
  email?: string;
  /** Creation time of the key and its subkey (default: now). */
  date?: Date;
  /** Lifetime of the signing subkey in seconds (default: never expires). */
  signingSubkeyExpirySeconds?: number;
}

export interface TestKey {
  armoredPrivate: string;
  armoredPublic: string;
  /** Primary key fingerprint, lowercase hex (as openpgp's getFingerprint()). */
  fingerprint: string;
  /** Signing subkey fingerprint, lowercase hex. */
  signingSubkeyFingerprint: string;
}

/** An unencrypted v4 ed25519 (legacy) key with one separate signing subkey. */
export async function generateTestKey(opts: TestKeyOptions = {}): Promise<TestKey> {
  const date = opts.date ?? new Date();
  const { privateKey, publicKey } = await openpgp.generateKey({
    type: 'ecc',
    curve: 'curve25519Legacy',
    userIDs: [{ name: opts.name ?? 'OEM Test Image Signing Key', email: opts.email ?? 'test-signing@example.invalid' }],
    date,
    format: 'object',
    subkeys: [
      {
        sign: true,
        date,
        ...(opts.signingSubkeyExpirySeconds !== undefined ? { keyExpirationTime: opts.signingSubkeyExpirySeconds } : {}),
      },
    ],
  });
  const subkey = privateKey.subkeys[0];
  if (!subkey) throw new Error('openpgp.generateKey produced no subkey');
  return {
    armoredPrivate: privateKey.armor(),
    armoredPublic: publicKey.armor(),
    fingerprint: privateKey.getFingerprint(),
    signingSubkeyFingerprint: subkey.getFingerprint(),
  };
}

export interface SignOptions {
  /** Signature creation time (default: now). The signing key must be valid at this time. */
  date?: Date;
  /** Key ID (16 hex) or fingerprint (40 hex) of the key to sign with. Default: the newest valid signing subkey. */
  signingKeyID?: string;
}

/** Detached binary signature of a file, made by the signing subkey; the file is streamed, not buffered. */
export async function signDetached(filePath: string, armoredPrivateKey: string, opts: SignOptions = {}): Promise<Buffer> {
  const date = opts.date ?? new Date();
  const privateKey = await openpgp.readPrivateKey({ armoredKey: armoredPrivateKey });
  let keyID: openpgp.KeyID;
  if (opts.signingKeyID !== undefined) {
    const hex = opts.signingKeyID.replace(/\s+/g, '').replace(/^0x/i, '').toLowerCase();
    if (!/^[0-9a-f]{16}$|^[0-9a-f]{40}$/.test(hex)) throw new Error(`bad signing key ID: ${opts.signingKeyID}`);
    // openpgp v6 declares KeyID in its types but does not export it at runtime, so take the
    // KeyID object from the matching (sub)key instead of KeyID.fromID().
    const match = privateKey.getKeys().find((k) => k.getKeyID().toHex() === hex.slice(-16));
    if (!match) throw new Error(`key has no (sub)key with ID ${opts.signingKeyID}`);
    keyID = match.getKeyID();
  } else {
    // getSigningKey() prefers subkeys and falls back to the primary key; we insist on a subkey.
    const signing = await privateKey.getSigningKey(undefined, date);
    if (signing === privateKey || signing.getKeyID().equals(privateKey.getKeyID())) {
      throw new Error('key has no valid signing subkey at ' + date.toISOString());
    }
    keyID = signing.getKeyID();
  }
  const signing = privateKey.getKeys(keyID)[0];
  if (!signing) throw new Error(`key has no (sub)key with ID ${keyID.toHex()}`);
  // Streams the file: see signFile.
  return signFile(
    filePath,
    { key: privateKey, fingerprint: privateKey.getFingerprint().toUpperCase(), signingKeyFingerprint: signing.getFingerprint().toUpperCase() },
    date,
  );
}

/** The `.DIGESTS` text of a file (MD5, SHA1, SHA512), hashed in one streaming pass. */
export async function digestsFile(filePath: string): Promise<string> {
  const md5 = createHash('md5');
  const sha1 = createHash('sha1');
  const sha512 = createHash('sha512');
  for await (const chunk of createReadStream(filePath)) {
    md5.update(chunk as Buffer);
    sha1.update(chunk as Buffer);
    sha512.update(chunk as Buffer);
  }
  const name = basename(filePath);
  return [
    '# MD5 HASH',
    `${md5.digest('hex')}  ${name}`,
    '# SHA1 HASH',
    `${sha1.digest('hex')}  ${name}`,
    '# SHA512 HASH',
    `${sha512.digest('hex')}  ${name}`,
    '',
  ].join('\n');
}

function splitVersion(version: string): [string, string, string] {
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(version);
  if (!m) throw new Error(`version must be X.Y.Z, got ${JSON.stringify(version)}`);
  return [m[1]!, m[2]!, m[3]!];
}

/** version.txt of a release; the SDK version defaults to X.0.0. */
export function versionTxt(distro: Distro, version: string, sdkVersion?: string): string {
  const [build, branch, patch] = splitVersion(version);
  const P = distro === 'coreos' ? 'COREOS' : 'FLATCAR';
  return [
    `${P}_BUILD=${build}`,
    `${P}_BRANCH=${branch}`,
    `${P}_PATCH=${patch}`,
    `${P}_VERSION=${version}`,
    `${P}_VERSION_ID=${version}`,
    `${P}_BUILD_ID=""`,
    `${P}_SDK_VERSION=${sdkVersion ?? `${build}.0.0`}`,
    '',
  ].join('\n');
}

function tmpName(target: string): string {
  return join(dirname(target), `.${basename(target)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** Runs `produce(tmp)` then renames tmp over target; removes tmp on failure. */
async function atomically(target: string, produce: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = tmpName(target);
  try {
    await produce(tmp);
    await rename(tmp, target);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export interface PublishOptions {
  mirrorDir: string;
  distro: Distro;
  channel: string;
  board: string;
  version: string;
  /** Path of an existing .bin.bz2. */
  imageBz2: string;
  armoredPrivateKey: string;
  /** Default `${distro}_production_image.bin.bz2`. */
  imageName?: string;
  /** Also publish under current/. */
  current?: boolean;
  /** SDK version in version.txt (default X.0.0). */
  sdkVersion?: string;
  /** Signature time (default now). */
  signDate?: Date;
  /** OEM system extensions published beside the image (extension era): platform id -> a .raw file. */
  oemSysexts?: Record<string, string>;
}

export interface PublishedFiles {
  image: string;
  sig: string;
  digests: string;
  versionTxt: string;
  /** Each published `oem-<id>.raw` with its .sig and .DIGESTS. */
  oemSysexts: string[];
}

export interface PublishResult {
  dir: string;
  currentDir?: string;
  files: PublishedFiles;
}

function checkSegment(what: string, s: string): void {
  if (s === '' || s === '.' || s === '..' || s.includes('/') || s.includes('\\') || s.includes('\0')) {
    throw new Error(`bad ${what}: ${JSON.stringify(s)}`);
  }
}

/** Writes `{mirrorDir}/{channel}/{board}/{version}/` (and `current/` as hard links or copies). */
export async function publishRelease(opts: PublishOptions): Promise<PublishResult> {
  splitVersion(opts.version);
  const imageName = opts.imageName ?? `${opts.distro}_production_image.bin.bz2`;
  checkSegment('channel', opts.channel);
  checkSegment('board', opts.board);
  checkSegment('image name', imageName);
  const dir = join(opts.mirrorDir, opts.channel, opts.board, opts.version);
  await mkdir(dir, { recursive: true });
  const files: PublishedFiles = {
    image: join(dir, imageName),
    sig: join(dir, `${imageName}.sig`),
    digests: join(dir, `${imageName}.DIGESTS`),
    versionTxt: join(dir, 'version.txt'),
    oemSysexts: [],
  };

  await atomically(files.image, (tmp) => copyFile(opts.imageBz2, tmp));
  // Sign and hash the published copy, so the three always agree.
  const sig = await signDetached(files.image, opts.armoredPrivateKey, opts.signDate ? { date: opts.signDate } : {});
  await atomically(files.sig, (tmp) => writeFile(tmp, sig));
  const digests = await digestsFile(files.image);
  await atomically(files.digests, (tmp) => writeFile(tmp, digests));
  await atomically(files.versionTxt, (tmp) => writeFile(tmp, versionTxt(opts.distro, opts.version, opts.sdkVersion)));
  // As Flatcar's release pipeline does: each OEM extension signed by the image signing key, with DIGESTS.
  for (const [id, raw] of Object.entries(opts.oemSysexts ?? {})) {
    checkSegment('platform id', id);
    const target = join(dir, `oem-${id}.raw`);
    await atomically(target, (tmp) => copyFile(raw, tmp));
    const s = await signDetached(target, opts.armoredPrivateKey, opts.signDate ? { date: opts.signDate } : {});
    await atomically(`${target}.sig`, (tmp) => writeFile(tmp, s));
    await atomically(`${target}.DIGESTS`, async (tmp) => writeFile(tmp, await digestsFile(target)));
    files.oemSysexts.push(target);
  }

  if (!opts.current) return { dir, files };

  const currentDir = join(opts.mirrorDir, opts.channel, opts.board, 'current');
  await mkdir(currentDir, { recursive: true });
  for (const src of [files.image, files.sig, files.digests, files.versionTxt, ...files.oemSysexts.flatMap((f) => [f, `${f}.sig`, `${f}.DIGESTS`])]) {
    const target = join(currentDir, basename(src));
    await atomically(target, async (tmp) => {
      try {
        await link(src, tmp);
      } catch {
        await copyFile(src, tmp);
      }
    });
  }
  return { dir, currentDir, files };
}


/** Compresses with `lbzip2 -9 -c` if available, else `bzip2 -9 -c`, into a temp file renamed to outPath. */
export async function compressBzip2(rawPath: string, outPath: string): Promise<'lbzip2' | 'bzip2'> {
  let tool = '';
  await atomically(outPath, async (tmp) => {
    await rm(tmp, { force: true });
    tool = await compressWithBzip2(rawPath, tmp);
  });
  return tool as 'lbzip2' | 'bzip2';
}

/**
 * Revokes the signing subkey(s) of a test key (as key owners do when a subkey is compromised or
 * retired). Returns the updated key, public and private, armored.
 */
export async function revokeSigningSubkeys(armoredPrivateKey: string, date = new Date()): Promise<{ armoredPublic: string; armoredPrivate: string }> {
  const key = await openpgp.readPrivateKey({ armoredKey: armoredPrivateKey });
  for (let i = 0; i < key.subkeys.length; i++) {
    const sub = key.subkeys[i]!;
    const flags = sub.bindingSignatures[0]?.keyFlags?.[0] ?? 0;
    if (flags & openpgp.enums.keyFlags.signData) {
      key.subkeys[i] = await sub.revoke(key.keyPacket as openpgp.SecretKeyPacket, { flag: openpgp.enums.reasonForRevocation.keyCompromised, string: 'test' }, date);
    }
  }
  return { armoredPublic: key.toPublic().armor(), armoredPrivate: key.armor() };
}
