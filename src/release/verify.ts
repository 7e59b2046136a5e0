/**
 * OpenPGP verification of release files against trusted keys, and the SHA512 line of .DIGESTS.
 *
 * The file is read once: its bytes feed both the signature check and a SHA512 hash. openpgp only knows
 * whether a signature is good after the whole data stream has been drained, so nothing is reported
 * as verified before that. A signature counts when it was made by a trusted key or subkey that was
 * valid when it signed (an expired subkey's old signatures still verify) and that has not been
 * revoked since (a revoked subkey's signatures never verify).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import * as openpgp from 'openpgp';
import { OemError, describe } from '../shared/errors.js';
import { packageRoot } from '../paths.js';

export type Distro = 'flatcar' | 'coreos';


/** The bundled official image signing keys. */
export const OFFICIAL_KEYS: Record<Distro, { file: string; fingerprint: string }> = {
  flatcar: { file: 'flatcar-image-signing-key.asc', fingerprint: 'F88CFEDEFF29A5B4D9523864E25D9AED0593B34A' },
  coreos: { file: 'coreos-image-signing-key.asc', fingerprint: '04127D0BFABEC8871FFB2CCE50E0885593D2DCB4' },
};

export interface TrustedKeys {
  keys: openpgp.PublicKey[];
  /** Where they came from, for messages. */
  source: string;
}

export function keyName(k: openpgp.PublicKey): string {
  const uid = k.getUserIDs()[0];
  return `${uid ? `${uid} ` : ''}(${k.getFingerprint().toUpperCase()})`;
}

async function readKeyFile(path: string): Promise<openpgp.PublicKey[]> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (err) {
    throw new OemError(`cannot read key file ${path}: ${describe(err)}`, { code: 'usage', hint: 'give the path of an OpenPGP public key file (armored or binary)' });
  }
  try {
    const text = data.toString('utf8');
    if (text.includes('-----BEGIN PGP PRIVATE KEY BLOCK-----')) {
      throw new OemError(`${path} is a private key; give the public key to verify with`, { code: 'usage' });
    }
    const keys = text.includes('-----BEGIN PGP PUBLIC KEY BLOCK-----')
      ? await openpgp.readKeys({ armoredKeys: text })
      : await openpgp.readKeys({ binaryKeys: new Uint8Array(data) });
    return keys.map((k) => (k.isPrivate() ? k.toPublic() : (k as openpgp.PublicKey)));
  } catch (err) {
    if (err instanceof OemError) throw err;
    throw new OemError(`${path} is not an OpenPGP public key: ${describe(err)}`, { code: 'usage' });
  }
}

/** The keys to trust: the given key files, else the distro's bundled official key. */
export async function loadTrustedKeys(distro: Distro, keyFiles: string[] = []): Promise<TrustedKeys> {
  if (keyFiles.length) {
    const keys = (await Promise.all(keyFiles.map(readKeyFile))).flat();
    return { keys, source: keyFiles.join(', ') };
  }
  const path = join(packageRoot(), 'keys', OFFICIAL_KEYS[distro].file);
  return { keys: await readKeyFile(path), source: `the bundled ${distro} image signing key` };
}

export interface Verification {
  file: string;
  size: number;
  sha512: string;
  /** Primary key that vouches for the signature. */
  key: string;
  keyFingerprint: string;
  /** The (sub)key that made the signature. */
  signingKeyFingerprint: string;
  signedAt: string;
}

async function readSignature(sig: Buffer, sigName: string): Promise<openpgp.Signature> {
  try {
    const text = sig.toString('latin1');
    if (text.includes('-----BEGIN PGP SIGNATURE-----')) return await openpgp.readSignature({ armoredSignature: text });
    return await openpgp.readSignature({ binarySignature: new Uint8Array(sig) });
  } catch (err) {
    throw new OemError(`${sigName} is not an OpenPGP signature: ${describe(err)}`, { code: 'verification' });
  }
}

export interface SignatureCheck {
  sig: openpgp.Signature;
  packet: openpgp.SignaturePacket;
  /** The trusted key vouching for the signature, and the (sub)key that made it. */
  owner: openpgp.PublicKey;
  signer: openpgp.PublicKey | openpgp.Subkey;
}

/**
 * What can be known from a signature before reading the data: that it parses and that its issuer is
 * one of the trusted keys or subkeys (and not revoked). Lets callers refuse before downloading.
 */
export async function precheckSignature(signature: Buffer, sigName: string, trusted: TrustedKeys, name: string): Promise<SignatureCheck> {
  const sig = await readSignature(signature, sigName);
  const packet = sig.packets[0];
  if (!packet) throw new OemError(`${sigName} holds no signature`, { code: 'verification' });
  return { sig, packet, ...(await trustedSigner(packet.issuerKeyID, trusted, name)) };
}

/** The trusted key (and its subkey) that made a signature with this issuer, if neither is revoked. */
async function trustedSigner(
  issuerKeyID: openpgp.KeyID,
  trusted: TrustedKeys,
  name: string,
): Promise<{ owner: openpgp.PublicKey; signer: openpgp.PublicKey | openpgp.Subkey }> {
  const issuer = issuerKeyID.toHex().toUpperCase();
  for (const k of trusted.keys) {
    for (const candidate of [k, ...k.subkeys]) {
      if (candidate.getKeyID().toHex().toUpperCase() === issuer) {
        await checkNotRevoked(name, k, candidate);
        return { owner: k, signer: candidate };
      }
    }
  }
  throw new OemError(`${name}: signed by unknown key ${issuer}, not by ${trusted.source}`, {
    code: 'verification',
    hint: 'pass the right public key with --key, or check that the file comes from the official release server',
  });
}

async function checkNotRevoked(name: string, owner: openpgp.PublicKey, signer: openpgp.PublicKey | openpgp.Subkey): Promise<void> {
  // A revoked subkey's signatures never count, whenever they were made.
  if (signer !== owner && (await (signer as openpgp.Subkey).isRevoked(null as never, undefined as never, new Date()))) {
    throw new OemError(`${name}: signed by revoked subkey ${signer.getFingerprint().toUpperCase()} of ${keyName(owner)}`, {
      code: 'verification',
    });
  }
  if (await owner.isRevoked(null as never, undefined as never, new Date())) {
    throw new OemError(`${name}: signed by revoked key ${keyName(owner)}`, { code: 'verification' });
  }
}

/**
 * Verifies `file` against a detached signature with the trusted keys; returns the file's SHA512 too.
 * Throws an OemError (exit code 4) naming the file and the key on any failure. `name` is the file's
 * name in messages (default: its base name).
 */
export async function verifyDetached(
  file: string,
  signature: Buffer,
  sigName: string,
  trusted: TrustedKeys,
  name = basename(file),
): Promise<Verification> {
  const { sig, packet, owner, signer } = await precheckSignature(signature, sigName, trusted, name);

  // One pass over the file: the hash and the signature check read the same bytes.
  const hash = createHash('sha512');
  let size = 0;
  const tee = new PassThrough();
  tee.on('data', (c: Buffer) => {
    hash.update(c);
    size += c.length;
  });
  const src = createReadStream(file, { highWaterMark: 1024 * 1024 });
  src.on('error', (e) => tee.destroy(e));
  src.pipe(tee);
  const message = await openpgp.createMessage({ binary: Readable.toWeb(tee) as never });
  const result = await openpgp.verify({ message, signature: sig, verificationKeys: trusted.keys, format: 'binary', expectSigned: false });
  // Drain the data completely; only then is the verdict known.
  const reader = (result.data as unknown as ReadableStream<Uint8Array>).getReader();
  for (;;) {
    const { done } = await reader.read();
    if (done) break;
  }
  const v = result.signatures[0];
  if (!v) throw new OemError(`${name}: ${sigName} holds no signature`, { code: 'verification' });
  try {
    await v.verified;
  } catch (err) {
    const why = describe(err).replace(/^Could not find signing key with key ID.*/, 'key not trusted');
    const tampered = /digest did not match|Signed digest did not match|signature did not match/i.test(why);
    if (/revoked/i.test(why)) {
      throw new OemError(`${name}: signed by revoked ${signer === owner ? 'key' : `subkey ${signer.getFingerprint().toUpperCase()} of`} ${keyName(owner)}`, {
        code: 'verification',
      });
    }
    throw new OemError(
      tampered
        ? `${name}: BAD signature from ${keyName(owner)}: the file does not match ${sigName} (tampered, truncated or the wrong file)`
        : `${name}: signature by ${signer.getFingerprint().toUpperCase()} of ${keyName(owner)} does not verify: ${why}`,
      { code: 'verification' },
    );
  }
  await checkNotRevoked(name, owner, signer);
  return {
    file,
    size,
    sha512: hash.digest('hex'),
    key: keyName(owner),
    keyFingerprint: owner.getFingerprint().toUpperCase(),
    signingKeyFingerprint: signer.getFingerprint().toUpperCase(),
    signedAt: (packet.created ?? new Date(0)).toISOString(),
  };
}

/**
 * Verifies a cleartext-signed message (a release's `.DIGESTS.asc`, as `gpg --clearsign` writes it)
 * with the trusted keys and gives back the signed text; only that text may be used afterwards.
 */
export async function verifyCleartext(armored: string, name: string, trusted: TrustedKeys): Promise<string> {
  let message: openpgp.CleartextMessage;
  try {
    message = await openpgp.readCleartextMessage({ cleartextMessage: armored });
  } catch (err) {
    throw new OemError(`${name} is not a cleartext-signed message: ${describe(err)}`, { code: 'verification' });
  }
  const result = await openpgp.verify({ message, verificationKeys: trusted.keys, expectSigned: false });
  const v = result.signatures[0];
  if (!v) throw new OemError(`${name} holds no signature`, { code: 'verification' });
  const found = await trustedSigner(v.keyID, trusted, name);
  try {
    await v.verified;
  } catch (err) {
    const why = describe(err);
    throw new OemError(
      /digest did not match|signature did not match/i.test(why)
        ? `${name}: BAD signature from ${keyName(found.owner)}: the signed text was changed`
        : `${name}: signature by ${found.signer.getFingerprint().toUpperCase()} of ${keyName(found.owner)} does not verify: ${why}`,
      { code: 'verification' },
    );
  }
  return result.data as string;
}

/** Parses a .DIGESTS file: algorithm (md5, sha1, sha512, ...) -> file name -> hex digest. */
export function parseDigests(text: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  let algo: string | undefined;
  for (const line of text.split('\n')) {
    const h = /^#\s*(\w+)\s+HASH\s*$/i.exec(line.trim());
    if (h) {
      algo = h[1]!.toLowerCase();
      out[algo] ??= {};
      continue;
    }
    const m = /^([0-9a-fA-F]+)\s+\*?(.+)$/.exec(line.trim());
    if (m && algo) out[algo]![m[2]!.trim()] = m[1]!.toLowerCase();
  }
  return out;
}

/** Checks the SHA512 line for `name` in a .DIGESTS text. */
export function checkDigests(digestsText: string, digestsName: string, name: string, sha512: string): void {
  const d = parseDigests(digestsText);
  const want = d.sha512?.[name];
  if (!want) {
    throw new OemError(`${digestsName} has no SHA512 line for ${name}`, { code: 'verification' });
  }
  if (want !== sha512) {
    throw new OemError(`${name}: SHA512 ${sha512.slice(0, 16)}... does not match ${digestsName} (${want.slice(0, 16)}...)`, {
      code: 'verification',
    });
  }
}
