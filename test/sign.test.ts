/**
 * Signing with keys made by gpg (ed25519, RSA 3072, passphrase-protected, with a signing subkey)
 * and by openpgp.js: gpg 2.2 and oem's own verifyDetached accept the signatures, cleartext
 * signatures verify with gpg, bad keys are refused with clear messages, and a big file is signed
 * without holding it in memory.
 */
import { execa } from 'execa';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as openpgp from 'openpgp';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { clearsign, loadSigningKey, signFile, type SigningKey } from '../src/artifacts/sign.js';
import { OemError } from '../src/shared/errors.js';
import { loadTrustedKeys, verifyDetached } from '../src/release/verify.js';
import { generateTestKey } from '../scripts/lib/mirror.js';

const MiB = 1024 * 1024;
const repo = resolve(import.meta.dirname, '..');

let work: string;
let home: string;
/** A 50 MiB file: random and zero blocks. */
let data: string;

interface GpgKey {
  fingerprint: string;
  /** Fingerprints of all (sub)keys, primary first. */
  fingerprints: string[];
  secret: string;
  public: string;
}
const keys: Record<'ed' | 'rsa' | 'pass' | 'certOnly' | 'sub', GpgKey> = {} as never;
const PASSPHRASE = 'correct horse battery staple';

async function gpg(args: string[], passphrase = '') {
  return execa('gpg', ['--batch', '--no-tty', '--pinentry-mode', 'loopback', '--passphrase', passphrase, ...args], {
    env: { GNUPGHOME: home, LC_ALL: 'C' },
    reject: false,
  });
}

async function gpgOk(args: string[], passphrase = '') {
  const r = await gpg(args, passphrase);
  if (r.exitCode !== 0) throw new Error(`gpg ${args.join(' ')}: ${r.stderr}`);
  return r;
}

async function makeGpgKey(name: keyof typeof keys, uid: string, algo: string, usage: string, passphrase = '', subkey?: string): Promise<void> {
  await gpgOk(['--quick-gen-key', uid, algo, usage, 'never'], passphrase);
  const list = await gpgOk(['--with-colons', '--list-secret-keys', uid]);
  let fingerprints = list.stdout
    .split('\n')
    .filter((l) => l.startsWith('fpr:'))
    .map((l) => l.split(':')[9]!);
  if (subkey) {
    await gpgOk(['--quick-add-key', fingerprints[0]!, subkey, 'sign', 'never'], passphrase);
    const again = await gpgOk(['--with-colons', '--list-secret-keys', uid]);
    fingerprints = again.stdout
      .split('\n')
      .filter((l) => l.startsWith('fpr:'))
      .map((l) => l.split(':')[9]!);
  }
  const fpr = fingerprints[0]!;
  const secret = join(work, `${name}.sec.asc`);
  const pub = join(work, `${name}.pub.asc`);
  await writeFile(secret, (await gpgOk(['--armor', '--export-secret-keys', fpr], passphrase)).stdout);
  await writeFile(pub, (await gpgOk(['--armor', '--export', fpr])).stdout);
  keys[name] = { fingerprint: fpr, fingerprints, secret, public: pub };
}

/** gpg --verify in the test GNUPGHOME (which holds all the public keys). */
async function gpgVerify(sig: string, file?: string) {
  return gpg(['--verify', sig, ...(file ? [file] : [])]);
}

async function sha512(path: string): Promise<string> {
  const h = createHash('sha512');
  for await (const c of (await open(path)).createReadStream()) h.update(c as Buffer);
  return h.digest('hex');
}

async function signatureTime(sig: Buffer): Promise<Date | null> {
  const s = await openpgp.readSignature({ binarySignature: new Uint8Array(sig) });
  return s.packets[0]?.created ?? null;
}

async function refusal(p: Promise<unknown>): Promise<OemError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(OemError);
  expect((err as OemError).code).toBe('usage');
  return err as OemError;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-sign-test-'));
  home = await mkdtemp(join(tmpdir(), 'oem-gpg-'));
  await makeGpgKey('ed', 'Test Ed <ed@example>', 'ed25519', 'sign');
  await makeGpgKey('rsa', 'Test RSA <rsa@example>', 'rsa3072', 'sign');
  await makeGpgKey('pass', 'Test Pass <pass@example>', 'ed25519', 'sign', PASSPHRASE);
  await makeGpgKey('certOnly', 'Test Cert <cert@example>', 'ed25519', 'cert');
  await makeGpgKey('sub', 'Test Sub <sub@example>', 'ed25519', 'cert', '', 'ed25519');
  data = join(work, 'image.bin.bz2');
  const fh = await open(data, 'w');
  for (let i = 0; i < 50; i++) await fh.write(i % 3 === 0 ? Buffer.alloc(MiB) : randomBytes(MiB));
  await fh.write(randomBytes(12345));
  await fh.close();
}, 300_000);

afterAll(async () => {
  if (home) {
    await execa('gpgconf', ['--kill', 'all'], { env: { GNUPGHOME: home }, reject: false });
    await rm(home, { recursive: true, force: true });
  }
  if (work) await rm(work, { recursive: true, force: true });
});

afterEach(() => {
  delete process.env.SOURCE_DATE_EPOCH;
});

describe('loadSigningKey', () => {
  it('reads gpg secret keys: ed25519 and RSA sign with the primary key, a subkey when there is one', async () => {
    for (const name of ['ed', 'rsa'] as const) {
      const s = await loadSigningKey(keys[name].secret);
      expect(s.fingerprint).toBe(keys[name].fingerprint);
      expect(s.signingKeyFingerprint).toBe(keys[name].fingerprint);
      expect(s.key.isDecrypted()).toBe(true);
    }
    const sub = await loadSigningKey(keys.sub.secret);
    expect(keys.sub.fingerprints).toHaveLength(2);
    expect(sub.fingerprint).toBe(keys.sub.fingerprints[0]);
    expect(sub.signingKeyFingerprint).toBe(keys.sub.fingerprints[1]);
  });

  it('also reads a binary (unarmored) secret key', async () => {
    const bin = join(work, 'ed.sec.gpg');
    const r = await execa('gpg', ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--export-secret-keys', keys.ed.fingerprint], {
      env: { GNUPGHOME: home },
      encoding: 'buffer',
      // execa strips a final 0x0a even from binary output; 1 key in 256 ends with one.
      stripFinalNewline: false,
    });
    await writeFile(bin, r.stdout);
    expect((await loadSigningKey(bin)).fingerprint).toBe(keys.ed.fingerprint);
  });

  it('decrypts a protected key with its passphrase, and says what is wrong otherwise', async () => {
    const f = keys.pass.secret;
    const none = await refusal(loadSigningKey(f));
    expect(none.message).toBe(`${f} is protected by a passphrase: set OEM_SIGN_PASSPHRASE or --sign-passphrase-file`);
    const wrong = await refusal(loadSigningKey(f, 'incorrect horse'));
    expect(wrong.message).toBe(`wrong passphrase for the signing key ${f}`);
    await refusal(loadSigningKey(f, ''));
    const s = await loadSigningKey(f, PASSPHRASE);
    expect(s.fingerprint).toBe(keys.pass.fingerprint);
    expect(s.key.isDecrypted()).toBe(true);
    // A passphrase given for an unprotected key is not needed, and harmless.
    expect((await loadSigningKey(keys.ed.secret, 'unused')).fingerprint).toBe(keys.ed.fingerprint);
  });

  it('refuses a public key, garbage, a signature, a missing file, several keys, a key that cannot sign', async () => {
    const pub = await refusal(loadSigningKey(keys.ed.public));
    expect(pub.message).toBe(`${keys.ed.public} is a public key; --sign-key needs the secret key`);
    // A binary public key too.
    const binPub = join(work, 'ed.pub.gpg');
    await writeFile(binPub, (await execa('gpg', ['--batch', '--export', keys.ed.fingerprint], { env: { GNUPGHOME: home }, encoding: 'buffer', stripFinalNewline: false })).stdout);
    expect((await refusal(loadSigningKey(binPub))).message).toBe(`${binPub} is a public key; --sign-key needs the secret key`);

    const garbage = join(work, 'garbage.asc');
    await writeFile(garbage, randomBytes(3000));
    expect((await refusal(loadSigningKey(garbage))).message).toMatch(new RegExp(`^${garbage} is not an OpenPGP secret key`));
    const textFile = join(work, 'text.asc');
    await writeFile(textFile, 'hello\n');
    expect((await refusal(loadSigningKey(textFile))).message).toMatch(/is not an OpenPGP secret key/);
    const sigFile = join(work, 'a.sig.asc');
    await writeFile(sigFile, (await gpgOk(['--armor', '--local-user', keys.ed.fingerprint, '--detach-sign', '--output', '-', keys.ed.public])).stdout);
    expect((await refusal(loadSigningKey(sigFile))).message).toMatch(/is not an OpenPGP secret key/);
    expect((await refusal(loadSigningKey(join(work, 'missing.asc')))).message).toMatch(/cannot read signing key .*missing\.asc: ENOENT/);

    const two = join(work, 'two.sec.asc');
    await writeFile(two, (await gpgOk(['--armor', '--export-secret-keys', keys.ed.fingerprint, keys.rsa.fingerprint])).stdout);
    expect((await refusal(loadSigningKey(two))).message).toMatch(/holds 2 keys/);

    const cert = await refusal(loadSigningKey(keys.certOnly.secret));
    expect(cert.message).toMatch(new RegExp(`^${keys.certOnly.secret} has no valid signing key`));
  });

  it('refuses an expired key, and one whose signing secret is only a stub', async () => {
    const day = 24 * 3600 * 1000;
    const { privateKey } = await openpgp.generateKey({
      type: 'ecc',
      curve: 'curve25519Legacy',
      userIDs: [{ name: 'expired' }],
      date: new Date(Date.now() - 2 * day),
      keyExpirationTime: 3600,
      format: 'armored',
    });
    const expired = join(work, 'expired.sec.asc');
    await writeFile(expired, privateKey);
    expect((await refusal(loadSigningKey(expired))).message).toMatch(/has no valid signing key: .*expired/i);

    // gpg --export-secret-subkeys leaves the primary key as a stub: signing works with the subkey.
    const subOnly = join(work, 'sub-only.sec.asc');
    await writeFile(subOnly, (await gpgOk(['--armor', '--export-secret-subkeys', keys.sub.fingerprint])).stdout);
    const s = await loadSigningKey(subOnly);
    expect(s.signingKeyFingerprint).toBe(keys.sub.fingerprints[1]);
    const sigPath = join(work, 'sub-only.sig');
    const small = join(work, 'small.txt');
    await writeFile(small, 'small\n');
    await writeFile(sigPath, await signFile(small, s));
    expect((await gpgVerify(sigPath, small)).exitCode).toBe(0);
    // And a key of which only the primary is a stub and that has no signing subkey: nothing can sign.
    const certStub = join(work, 'cert-stub.sec.asc');
    const k = await openpgp.readPrivateKey({ armoredKey: await readFile(keys.ed.secret, 'utf8') });
    (k.keyPacket as openpgp.SecretKeyPacket).makeDummy();
    await writeFile(certStub, k.armor());
    expect((await refusal(loadSigningKey(certStub))).hint).toMatch(/stub/);
  });
});

describe('signFile', () => {
  for (const name of ['ed', 'rsa', 'sub'] as const) {
    it(`${name}: gpg --verify and verifyDetached accept a detached signature of a 50 MiB file; tampering is caught`, { timeout: 120_000 }, async () => {
      const signer = await loadSigningKey(keys[name].secret);
      const sig = await signFile(data, signer);
      expect(sig[0]! & 0x80).toBe(0x80); // binary packet, not armored
      const sigPath = `${data}.${name}.sig`;
      await writeFile(sigPath, sig);
      const good = await gpgVerify(sigPath, data);
      expect(good.exitCode, good.stderr).toBe(0);
      expect(good.stderr).toMatch(/Good signature/);
      expect(good.stderr).toContain(signer.signingKeyFingerprint);

      const trusted = await loadTrustedKeys('flatcar', [keys[name].public]);
      const v = await verifyDetached(data, sig, 'image.bin.bz2.sig', trusted);
      expect(v.keyFingerprint).toBe(keys[name].fingerprint);
      expect(v.signingKeyFingerprint).toBe(signer.signingKeyFingerprint);
      expect(v.size).toBe(50 * MiB + 12345);
      expect(v.sha512).toBe(await sha512(data));

      // A flipped byte in a copy: both refuse.
      const copy = join(work, `tampered-${name}.bin`);
      const bytes = await readFile(data);
      bytes[bytes.length - 5]! ^= 0x01;
      await writeFile(copy, bytes);
      const bad = await gpgVerify(sigPath, copy);
      expect(bad.exitCode).not.toBe(0);
      expect(bad.stderr).toMatch(/BAD signature/);
      await expect(verifyDetached(copy, sig, 'image.bin.bz2.sig', trusted)).rejects.toMatchObject({ code: 'verification' });
      await rm(copy);
    });
  }

  it('signs with a passphrase-protected key once decrypted', async () => {
    const signer = await loadSigningKey(keys.pass.secret, PASSPHRASE);
    const small = join(work, 'pass.txt');
    await writeFile(small, 'protected\n');
    await writeFile(`${small}.sig`, await signFile(small, signer));
    expect((await gpgVerify(`${small}.sig`, small)).exitCode).toBe(0);
  });

  it('signs with a key made by openpgp.js (signing subkey), as the test mirror does', async () => {
    const k = await generateTestKey({ name: 'openpgp.js key' });
    const secret = join(work, 'openpgpjs.sec.asc');
    const pub = join(work, 'openpgpjs.pub.asc');
    await writeFile(secret, k.armoredPrivate);
    await writeFile(pub, k.armoredPublic);
    await gpgOk(['--import', pub]);
    const signer = await loadSigningKey(secret);
    expect(signer.fingerprint).toBe(k.fingerprint.toUpperCase());
    expect(signer.signingKeyFingerprint).toBe(k.signingSubkeyFingerprint.toUpperCase());
    const sig = await signFile(data, signer);
    await writeFile(`${data}.js.sig`, sig);
    const good = await gpgVerify(`${data}.js.sig`, data);
    expect(good.exitCode, good.stderr).toBe(0);
    const v = await verifyDetached(data, sig, 'x.sig', await loadTrustedKeys('flatcar', [pub]));
    expect(v.signingKeyFingerprint).toBe(k.signingSubkeyFingerprint.toUpperCase());

    // Encrypted with openpgp.js: decrypted with the passphrase.
    const locked = await openpgp.encryptKey({ privateKey: signer.key, passphrase: 'js secret' });
    const lockedPath = join(work, 'openpgpjs-locked.sec.asc');
    await writeFile(lockedPath, locked.armor());
    await refusal(loadSigningKey(lockedPath));
    await refusal(loadSigningKey(lockedPath, 'nope'));
    expect((await loadSigningKey(lockedPath, 'js secret')).signingKeyFingerprint).toBe(signer.signingKeyFingerprint);
  });

  it('uses the date given, else SOURCE_DATE_EPOCH (then deterministic for ed25519 and RSA), else now', { timeout: 60_000 }, async () => {
    const small = join(work, 'det.txt');
    await writeFile(small, 'deterministic\n');
    for (const name of ['ed', 'rsa'] as const) {
      const signer = await loadSigningKey(keys[name].secret);
      // Without SOURCE_DATE_EPOCH: now, and openpgp.js salts every signature.
      delete process.env.SOURCE_DATE_EPOCH;
      const before = Math.floor(Date.now() / 1000) * 1000;
      const a = await signFile(small, signer);
      const b = await signFile(small, signer);
      expect((await signatureTime(a))!.getTime()).toBeGreaterThanOrEqual(before);
      expect(a.equals(b)).toBe(false);

      // With it: that time, and the same bytes every time.
      const created = signer.key.getCreationTime().getTime() / 1000;
      process.env.SOURCE_DATE_EPOCH = String(created + 100);
      const c = await signFile(small, signer);
      const d = await signFile(small, signer);
      expect((await signatureTime(c))!.getTime()).toBe((created + 100) * 1000);
      expect(c.equals(d), `${name} signatures differ under SOURCE_DATE_EPOCH`).toBe(true);
      expect(c.length).toBeLessThan(a.length); // no salt notation
      await writeFile(`${small}.sig`, c);
      expect((await gpgVerify(`${small}.sig`, small)).exitCode).toBe(0);
      expect(await clearsign('x\n', signer)).toBe(await clearsign('x\n', signer));

      // An explicit date wins over SOURCE_DATE_EPOCH.
      const explicit = new Date((created + 5000) * 1000);
      expect((await signatureTime(await signFile(small, signer, explicit)))!.getTime()).toBe(explicit.getTime());

      // A SOURCE_DATE_EPOCH older than the key is raised to the key's creation: gpg would refuse
      // a signature older than its key.
      process.env.SOURCE_DATE_EPOCH = '315532800'; // 1980
      const old = await signFile(small, signer);
      expect((await signatureTime(old))!.getTime()).toBe(created * 1000);
      await writeFile(`${small}.sig`, old);
      const v = await gpgVerify(`${small}.sig`, small);
      expect(v.exitCode, v.stderr).toBe(0);
      expect(v.stderr).not.toMatch(/newer than the signature|time warp/);
    }
    process.env.SOURCE_DATE_EPOCH = 'yesterday';
    const signer = await loadSigningKey(keys.ed.secret);
    expect((await refusal(signFile(small, signer))).message).toMatch(/SOURCE_DATE_EPOCH must be a number/);
  });

  it('refuses a date the key cannot sign at, and a missing file', async () => {
    const signer = await loadSigningKey(keys.ed.secret);
    const small = join(work, 'early.txt');
    await writeFile(small, 'early\n');
    const early = await refusal(signFile(small, signer, new Date('1990-01-01T00:00:00Z')));
    expect(early.message).toMatch(/cannot sign at 1990-01-01/);
    const missing = await signFile(join(work, 'missing.bin'), signer).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(OemError);
    expect((missing as Error).message).toMatch(/ENOENT/);
  });

  it('streams: signing a 200 MiB file grows the memory by far less than its size', { timeout: 120_000 }, async () => {
    const big = join(work, 'big.bin');
    const fh = await open(big, 'w');
    await fh.truncate(200 * MiB);
    for (let i = 0; i < 200; i += 8) await fh.write(randomBytes(MiB), 0, MiB, i * MiB);
    await fh.close();
    const script = join(work, 'mem.mts');
    await writeFile(
      script,
      `import { loadSigningKey, signFile } from ${JSON.stringify(join(repo, 'src/artifacts/sign.ts'))};
import { writeFileSync } from 'node:fs';
const signer = await loadSigningKey(process.argv[2]);
writeFileSync(process.argv[3] + '.warm', 'warm up\\n');
await signFile(process.argv[3] + '.warm', signer);
globalThis.gc?.();
const base = process.memoryUsage().rss;
let peak = base;
const t = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 10);
const sig = await signFile(process.argv[3], signer);
clearInterval(t);
peak = Math.max(peak, process.memoryUsage().rss);
writeFileSync(process.argv[4], sig);
console.log(JSON.stringify({ base, peak }));
`,
    );
    const sigPath = `${big}.sig`;
    const r = await execa(process.execPath, ['--expose-gc', '--import', 'tsx', script, keys.ed.secret, big, sigPath], { cwd: repo, reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    const { base, peak } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { base: number; peak: number };
    expect(peak - base).toBeLessThan(100 * MiB);
    const v = await gpgVerify(sigPath, big);
    expect(v.exitCode, v.stderr).toBe(0);
  });
});

describe('clearsign', () => {
  let signer: SigningKey;
  beforeAll(async () => {
    signer = await loadSigningKey(keys.sub.secret);
  });

  it('makes a .DIGESTS.asc that gpg verifies and that reads back as the same text', async () => {
    const text = [
      '# MD5 HASH',
      `${'0'.repeat(32)}  flatcar_production_qemu_image.img.bz2`,
      '# SHA1 HASH',
      `${'1'.repeat(40)}  flatcar_production_qemu_image.img.bz2`,
      '# SHA512 HASH',
      `${'a'.repeat(128)}  flatcar_production_qemu_image.img.bz2`,
      `${'b'.repeat(128)}  -dash-leading name`,
      '',
    ].join('\n');
    const asc = await clearsign(text, signer);
    // The text as it is, with Unix line ends (openpgp.js writes CRLF), so sha512sum -c can read it.
    expect(asc).toMatch(/^-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA\d+\n\n/);
    expect(asc).toContain(`\n\n${text}\n-----BEGIN PGP SIGNATURE-----\n`);
    expect(asc).not.toContain('\r');
    expect(asc).toContain('-----BEGIN PGP SIGNATURE-----');
    const path = join(work, 'image.DIGESTS.asc');
    await writeFile(path, asc);
    const v = await gpgVerify(path);
    expect(v.exitCode, v.stderr).toBe(0);
    expect(v.stderr).toMatch(/Good signature/);
    expect(v.stderr).toContain(signer.signingKeyFingerprint);
    // What gpg extracts is the text (the final newline belongs to the armor, not the text).
    const out = await gpg(['--decrypt', path]);
    expect(out.stdout.trimEnd()).toBe(text.trimEnd());
    // openpgp.js agrees.
    const msg = await openpgp.readCleartextMessage({ cleartextMessage: asc });
    const pub = await openpgp.readKey({ armoredKey: await readFile(keys.sub.public, 'utf8') });
    const res = await openpgp.verify({ message: msg, verificationKeys: pub });
    await expect(res.signatures[0]!.verified).resolves.toBe(true);
    expect(res.data.trimEnd()).toBe(text.trimEnd());

    // An edited line fails.
    await writeFile(path, asc.replace('a'.repeat(128), `c${'a'.repeat(127)}`));
    const bad = await gpgVerify(path);
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr).toMatch(/BAD signature/);
  });
});
