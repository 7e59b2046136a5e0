/**
 * OpenPGP signing of artifacts: detached binary signatures of (large) files, read as a stream, and
 * cleartext-signed texts (the `.DIGESTS.asc`). The output is what gpg 2.2 reads: v4 signatures
 * made by the key's newest valid signing subkey, else by the primary key.
 *
 * Signature time: the `date` given, else SOURCE_DATE_EPOCH when set, else now. With
 * SOURCE_DATE_EPOCH set, signatures are also made deterministic: openpgp.js v6 by default adds a
 * random "salt@notations.openpgpjs.org" notation to every v4 signature (a defence against fault
 * attacks on EdDSA), which is left out then, so that the same key, data and time give the same
 * bytes. That holds for EdDSA (ed25519, RFC 8032 signatures are deterministic) and RSA (PKCS#1
 * v1.5 is deterministic); ECDSA (nistp256 etc.) signatures use a random nonce and differ anyway.
 * A signature cannot predate the key that makes it (gpg then reports a time conflict and fails), so
 * a SOURCE_DATE_EPOCH older than the signing key is raised to the time from which the key is valid.
 */
import { open, readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import * as openpgp from 'openpgp';
import { OemError, describe } from '../shared/errors.js';

export interface SigningKey {
  /** The decrypted secret key. */
  key: openpgp.PrivateKey;
  /** Fingerprint of the primary key, uppercase hex. */
  fingerprint: string;
  /** Fingerprint of the (sub)key that signs, uppercase hex (the primary key's if it signs itself). */
  signingKeyFingerprint: string;
}

const PASSPHRASE_HINT = 'set OEM_SIGN_PASSPHRASE or --sign-passphrase-file';

function usage(message: string, hint?: string): OemError {
  return new OemError(message, { code: 'usage', ...(hint === undefined ? {} : { hint }) });
}

type AnyKey = openpgp.PrivateKey | openpgp.Subkey;

function secretPacket(k: AnyKey): openpgp.SecretKeyPacket | openpgp.SecretSubkeyPacket {
  return k.keyPacket as openpgp.SecretKeyPacket | openpgp.SecretSubkeyPacket;
}

/**
 * Reads an OpenPGP secret key (armored, as `gpg --export-secret-keys --armor` writes it, or binary)
 * and decrypts it with `passphrase` when it is protected. Picks the signing key: the newest valid
 * signing subkey whose secret is in the file, else the primary key. Every problem is an OemError
 * with code 'usage' saying what is wrong with the file.
 */
export async function loadSigningKey(path: string, passphrase?: string): Promise<SigningKey> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (err) {
    throw usage(`cannot read signing key ${path}: ${describe(err)}`);
  }
  const text = data.toString('latin1');
  const armoredPrivate = text.includes('-----BEGIN PGP PRIVATE KEY BLOCK-----');
  if (!armoredPrivate && text.includes('-----BEGIN PGP PUBLIC KEY BLOCK-----')) {
    throw usage(`${path} is a public key; --sign-key needs the secret key`, 'export it with gpg --export-secret-keys --armor KEYID');
  }
  let keys: openpgp.Key[];
  try {
    if (armoredPrivate) keys = await openpgp.readKeys({ armoredKeys: text });
    else if (text.includes('-----BEGIN PGP ')) throw new Error('the file holds no key block');
    else keys = await openpgp.readKeys({ binaryKeys: new Uint8Array(data) });
  } catch (err) {
    throw usage(`${path} is not an OpenPGP secret key: ${describe(err)}`);
  }
  const first = keys[0];
  if (!first) throw usage(`${path} is not an OpenPGP secret key: it holds no key`);
  if (keys.length > 1) {
    throw usage(`${path} holds ${keys.length} keys (${keys.map((k) => k.getFingerprint().toUpperCase()).join(', ')}); give a file with one`, 'export one key: gpg --export-secret-keys --armor KEYID');
  }
  if (!first.isPrivate()) throw usage(`${path} is a public key; --sign-key needs the secret key`, 'export it with gpg --export-secret-keys --armor KEYID');
  let key: openpgp.PrivateKey = first;

  const locked = key.getKeys().some((k) => {
    const p = secretPacket(k);
    return !p.isMissingSecretKeyMaterial() && !p.isDecrypted();
  });
  if (locked) {
    if (passphrase === undefined) throw usage(`${path} is protected by a passphrase: ${PASSPHRASE_HINT}`);
    try {
      key = await openpgp.decryptKey({ privateKey: key, passphrase });
    } catch (err) {
      const why = describe(err);
      if (/passphrase/i.test(why)) {
        throw usage(`wrong passphrase for the signing key ${path}`, PASSPHRASE_HINT);
      }
      throw usage(`cannot decrypt the signing key ${path}: ${why}`);
    }
  }

  // openpgp's order of preference: subkeys newest first, then the primary key. Stubs (the secret
  // part kept elsewhere: gpg --export-secret-subkeys, smartcards) cannot sign.
  const candidates: AnyKey[] = [
    ...key.subkeys.slice().sort((a, b) => b.getCreationTime().getTime() - a.getCreationTime().getTime() || b.keyPacket.algorithm - a.keyPacket.algorithm),
    key,
  ];
  const now = new Date();
  let lastError: unknown;
  let stubs = 0;
  for (const c of candidates) {
    if (secretPacket(c).isMissingSecretKeyMaterial()) {
      stubs++;
      continue;
    }
    try {
      const signing = await key.getSigningKey(c.getKeyID(), now);
      return { key, fingerprint: key.getFingerprint().toUpperCase(), signingKeyFingerprint: signing.getFingerprint().toUpperCase() };
    } catch (err) {
      lastError = err;
    }
  }
  const why = lastError === undefined ? '' : `: ${describe(lastError).replace(/^Could not find valid signing key packet in key \w+: /, '')}`;
  throw usage(
    `${path} has no valid signing key${why}`,
    stubs ? 'some of its secret keys are not in the file (stubs, e.g. kept on a smartcard)' : 'the key must have a signing (sub)key that has not expired and is not revoked',
  );
}

function sourceDateEpoch(): Date | undefined {
  const v = process.env.SOURCE_DATE_EPOCH?.trim();
  if (v === undefined || v === '') return undefined;
  // OpenPGP timestamps are unsigned 32-bit seconds.
  if (!/^\d{1,10}$/.test(v) || Number(v) > 0xffffffff) {
    throw usage(`SOURCE_DATE_EPOCH must be a number of seconds since 1970, got ${JSON.stringify(v)}`);
  }
  return new Date(Number(v) * 1000);
}

function signingSubkeyOf(signer: SigningKey): AnyKey {
  const want = signer.signingKeyFingerprint.toLowerCase();
  const k = signer.key.getKeys().find((x) => x.getFingerprint().toLowerCase() === want);
  if (!k) throw usage(`the key ${signer.fingerprint} has no (sub)key ${signer.signingKeyFingerprint}`);
  return k;
}

function earliest(dates: (Date | null | undefined)[]): number {
  const t = dates.filter((d): d is Date => d instanceof Date).map((d) => d.getTime());
  return t.length ? Math.min(...t) : 0;
}

/** The first moment the signing key can sign: no earlier than its own and its certifications' creation. */
function validFrom(signer: SigningKey, signing: AnyKey): Date {
  const key = signer.key;
  const times = [key.keyPacket.created.getTime(), earliest(key.users.flatMap((u) => u.selfCertifications.map((s) => s.created)))];
  if (signing !== key) {
    const sub = signing as openpgp.Subkey;
    times.push(sub.keyPacket.created.getTime(), earliest(sub.bindingSignatures.map((s) => s.created)), earliest(sub.bindingSignatures.map((s) => s.embeddedSignature?.created)));
  }
  return new Date(Math.max(...times));
}

interface SignAt {
  date: Date;
  config: openpgp.PartialConfig;
  keyID: openpgp.KeyID;
}

/** The signature time, the config (deterministic with SOURCE_DATE_EPOCH) and the signing key ID; checks the key can sign then. */
async function signAt(signer: SigningKey, date: Date | undefined): Promise<SignAt> {
  const signing = signingSubkeyOf(signer);
  const epoch = sourceDateEpoch();
  let when: Date;
  if (date) when = date;
  else if (epoch) when = new Date(Math.max(epoch.getTime(), validFrom(signer, signing).getTime()));
  else when = new Date();
  try {
    await signer.key.getSigningKey(signing.getKeyID(), when);
  } catch (err) {
    throw usage(`the signing key ${signer.signingKeyFingerprint} cannot sign at ${when.toISOString()}: ${describe(err)}`);
  }
  return { date: when, config: { nonDeterministicSignaturesViaNotation: epoch === undefined }, keyID: signing.getKeyID() };
}

async function collect(data: unknown): Promise<Buffer> {
  if (data instanceof Uint8Array) return Buffer.from(data);
  if (typeof data === 'string') return Buffer.from(data);
  const chunks: Buffer[] = [];
  const reader = (data as ReadableStream<Uint8Array>).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(Buffer.from(value));
  }
  return Buffer.concat(chunks);
}

async function drain(data: unknown): Promise<void> {
  if (data === null || data instanceof Uint8Array || typeof data === 'string') return;
  const reader = (data as ReadableStream<Uint8Array>).getReader();
  while (!(await reader.read()).done) {
    // discard
  }
}

/**
 * A detached binary signature (as `gpg --detach-sign` makes, the `.sig` of a release) of a file.
 * The file is read once as a stream, never held in memory.
 */
export async function signFile(path: string, signer: SigningKey, date?: Date): Promise<Buffer> {
  const at = await signAt(signer, date);
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw new OemError(`cannot read ${path}: ${describe(err)}`, { cause: err });
  }
  const stream = fh.createReadStream({ highWaterMark: 1024 * 1024, autoClose: false });
  try {
    const message = await openpgp.createMessage({ binary: Readable.toWeb(stream) as unknown as ReadableStream<Uint8Array> });
    // Not format 'binary': for a detached signature of a stream, openpgp.sign() then drains the
    // message with readToEnd(), holding the whole file in memory. With format 'object' we drive the
    // data through the hash ourselves: the hash reads a passive clone of the literal data, which only
    // advances as the literal data itself is read, so read and drop it alongside.
    const signature = await openpgp.sign({
      message,
      signingKeys: signer.key,
      signingKeyIDs: at.keyID,
      detached: true,
      format: 'object',
      date: at.date,
      config: at.config,
    });
    const bytes = collect(signature.write());
    const drained = drain(message.getLiteralData());
    // Both settle before returning (no rejection left unhandled); the first error wins.
    const [b, d] = await Promise.allSettled([bytes, drained]);
    if (d.status === 'rejected') throw d.reason;
    if (b.status === 'rejected') throw b.reason;
    return b.value;
  } catch (err) {
    if (err instanceof OemError) throw err;
    throw new OemError(`cannot sign ${path}: ${describe(err)}`, { cause: err });
  } finally {
    stream.destroy();
    await fh.close().catch(() => undefined);
  }
}

/**
 * A cleartext-signed message (as `gpg --clearsign` makes, the `.DIGESTS.asc` of a release): the
 * text, readable as it is, followed by an armored signature.
 */
export async function clearsign(text: string, signer: SigningKey, date?: Date): Promise<string> {
  const at = await signAt(signer, date);
  const message = await openpgp.createCleartextMessage({ text });
  try {
    const signed = await openpgp.sign({ message, signingKeys: signer.key, signingKeyIDs: at.keyID, date: at.date, config: at.config, format: 'armored' });
    // openpgp.js writes the text with CRLF line ends; gpg --clearsign keeps the text's own. The
    // signature covers the canonical (CRLF) form either way, so give the text back as it was
    // written: a .DIGESTS.asc stays readable by sha512sum -c and grep.
    return signed.replace(/\r\n/g, '\n');
  } catch (err) {
    throw new OemError(`cannot sign: ${describe(err)}`, { cause: err });
  }
}
