import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as openpgp from 'openpgp';
import {
  compressBzip2,
  digestsFile,
  generateTestKey,
  publishRelease,
  signDetached,
  versionTxt,
  type TestKey,
} from '../scripts/lib/mirror.js';
import { startMirrorServer, type MirrorServer } from '../scripts/lib/mirror-server.js';

const RAW_SIZE = 300 * 1024;

let work: string;
let key: TestKey;
let raw: string;
let rawBytes: Buffer;
let bz2: string;

async function openpgpVerify(data: Uint8Array, sig: Uint8Array, armoredPublic: string) {
  const publicKey = await openpgp.readKey({ armoredKey: armoredPublic });
  const signature = await openpgp.readSignature({ binarySignature: sig });
  const message = await openpgp.createMessage({ binary: data });
  const result = await openpgp.verify({ message, signature, verificationKeys: publicKey, format: 'binary' });
  const first = result.signatures[0];
  if (!first) throw new Error('no signatures');
  return { first, count: result.signatures.length, publicKey };
}

/** A raw HTTP GET that sends the path exactly as given (fetch would normalize `..` and `%2e%2e`). */
function rawGet(url: string, path: string): Promise<{ status: number; body: Buffer }> {
  const u = new URL(url);
  return new Promise((ok, fail) => {
    const req = request({ host: u.hostname, port: u.port, path, method: 'GET', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => ok({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', fail);
    });
    req.on('error', fail);
    req.end();
  });
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-mirror-test-'));
  key = await generateTestKey();
  raw = join(work, 'image.bin');
  // Half random, half zeros: compressible but not trivially.
  rawBytes = Buffer.concat([randomBytes(RAW_SIZE / 2), Buffer.alloc(RAW_SIZE / 2)]);
  await writeFile(raw, rawBytes);
  bz2 = join(work, 'image.bin.bz2');
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('mirror files', () => {
  it('compresses with lbzip2 or bzip2, output accepted by bzip2 -t', async () => {
    const tool = await compressBzip2(raw, bz2);
    expect(['lbzip2', 'bzip2']).toContain(tool);
    await execa('bzip2', ['-t', bz2]);
    const { stdout } = await execa('bzip2', ['-dc', bz2], { encoding: 'buffer' });
    expect(Buffer.compare(Buffer.from(stdout), rawBytes)).toBe(0);
    expect((await stat(bz2)).size).toBeLessThan(RAW_SIZE);
  });

  it('generates a key with a separate signing subkey', async () => {
    const priv = await openpgp.readPrivateKey({ armoredKey: key.armoredPrivate });
    expect(priv.isDecrypted()).toBe(true);
    expect(priv.keyPacket.version).toBe(4);
    expect(priv.getFingerprint()).toBe(key.fingerprint);
    expect(priv.subkeys).toHaveLength(1);
    expect(priv.subkeys[0]?.getFingerprint()).toBe(key.signingSubkeyFingerprint);
    expect(key.signingSubkeyFingerprint).not.toBe(key.fingerprint);
    expect(key.armoredPublic).toContain('BEGIN PGP PUBLIC KEY BLOCK');
    expect(key.armoredPublic).not.toContain('PRIVATE');
  });

  it('signs with the subkey; openpgp verifies, and rejects tampered data', async () => {
    const sig = await signDetached(bz2, key.armoredPrivate);
    const data = await readFile(bz2);
    const { first, count, publicKey } = await openpgpVerify(data, sig, key.armoredPublic);
    expect(count).toBe(1);
    await expect(first.verified).resolves.toBe(true);
    expect(first.keyID.toHex()).toBe(key.signingSubkeyFingerprint.slice(-16));
    expect(first.keyID.equals(publicKey.getKeyID())).toBe(false);
    const sigPacket = (await first.signature).packets[0];
    expect(sigPacket?.issuerFingerprint && Buffer.from(sigPacket.issuerFingerprint).toString('hex')).toBe(
      key.signingSubkeyFingerprint,
    );

    const bad = Buffer.from(data);
    bad[bad.length >> 1]! ^= 0x01;
    const tampered = await openpgpVerify(bad, sig, key.armoredPublic);
    await expect(tampered.first.verified).rejects.toThrow();
    await expect(signDetached(join(work, 'missing.bin'), key.armoredPrivate)).rejects.toThrow(/ENOENT/);
  });

  it('gpg --verify accepts the signature and rejects a flipped byte', async () => {
    const home = await mkdtemp(join(tmpdir(), 'oem-gpg-'));
    const env = { GNUPGHOME: home };
    try {
      const pub = join(home, 'pub.asc');
      await writeFile(pub, key.armoredPublic);
      await execa('gpg', ['--batch', '--quiet', '--import', pub], { env });
      const file = join(home, 'image.bin.bz2');
      const sigPath = `${file}.sig`;
      await writeFile(file, await readFile(bz2));
      await writeFile(sigPath, await signDetached(file, key.armoredPrivate));
      const good = await execa('gpg', ['--batch', '--verify', sigPath, file], { env, reject: false });
      expect(good.exitCode, good.stderr).toBe(0);
      expect(good.stderr).toContain(key.signingSubkeyFingerprint.toUpperCase());
      expect(good.stderr).toMatch(/Good signature/);

      const bytes = await readFile(file);
      bytes[100]! ^= 0xff;
      await writeFile(file, bytes);
      const bad = await execa('gpg', ['--batch', '--verify', sigPath, file], { env, reject: false });
      expect(bad.exitCode).not.toBe(0);
      expect(bad.stderr).toMatch(/BAD signature/);
    } finally {
      await execa('gpgconf', ['--kill', 'all'], { env, reject: false });
      await rm(home, { recursive: true, force: true });
    }
  });

  it('honours signing subkey expiry and explicit signing key IDs', async () => {
    const day = 24 * 3600 * 1000;
    const created = new Date(Date.now() - 2 * day);
    const k = await generateTestKey({ date: created, signingSubkeyExpirySeconds: 3600 });
    await expect(signDetached(raw, k.armoredPrivate)).rejects.toThrow();
    const sig = await signDetached(raw, k.armoredPrivate, { date: new Date(created.getTime() + 60_000) });
    const old = await openpgpVerify(rawBytes, sig, k.armoredPublic);
    expect(old.first.keyID.toHex()).toBe(k.signingSubkeyFingerprint.slice(-16));

    // Explicit IDs: the subkey by fingerprint, the primary by key ID (it can sign too).
    const bySub = await signDetached(raw, key.armoredPrivate, { signingKeyID: key.signingSubkeyFingerprint.toUpperCase() });
    expect((await openpgpVerify(rawBytes, bySub, key.armoredPublic)).first.keyID.toHex()).toBe(
      key.signingSubkeyFingerprint.slice(-16),
    );
    const byPrimary = await signDetached(raw, key.armoredPrivate, { signingKeyID: key.fingerprint.slice(-16) });
    expect((await openpgpVerify(rawBytes, byPrimary, key.armoredPublic)).first.keyID.toHex()).toBe(key.fingerprint.slice(-16));
  });

  it('writes DIGESTS matching node:crypto', async () => {
    const data = await readFile(bz2);
    const h = (alg: string) => createHash(alg).update(data).digest('hex');
    const text = await digestsFile(bz2);
    expect(text).toBe(
      `# MD5 HASH\n${h('md5')}  image.bin.bz2\n# SHA1 HASH\n${h('sha1')}  image.bin.bz2\n# SHA512 HASH\n${h('sha512')}  image.bin.bz2\n`,
    );
  });

  it('writes version.txt', () => {
    expect(versionTxt('flatcar', '3975.2.2', '3975.1.0')).toBe(
      'FLATCAR_BUILD=3975\nFLATCAR_BRANCH=2\nFLATCAR_PATCH=2\nFLATCAR_VERSION=3975.2.2\nFLATCAR_VERSION_ID=3975.2.2\n' +
        'FLATCAR_BUILD_ID=""\nFLATCAR_SDK_VERSION=3975.1.0\n',
    );
    const c = versionTxt('coreos', '2512.3.0');
    expect(c).toContain('COREOS_BUILD=2512\nCOREOS_BRANCH=3\nCOREOS_PATCH=0\n');
    expect(c).toContain('COREOS_SDK_VERSION=2512.0.0\n');
    expect(c).not.toContain('FLATCAR');
    expect(() => versionTxt('flatcar', '3975.2')).toThrow();
  });
});

describe('publishRelease and the mirror server', () => {
  let mirror: string;
  let server: MirrorServer;
  let image: Buffer;
  const base = '/stable/amd64-usr';
  const imgPath = `${base}/3975.2.2/flatcar_production_image.bin.bz2`;

  beforeAll(async () => {
    mirror = join(work, 'mirror');
    const pub = await publishRelease({
      mirrorDir: mirror,
      distro: 'flatcar',
      channel: 'stable',
      board: 'amd64-usr',
      version: '3975.2.2',
      imageBz2: bz2,
      armoredPrivateKey: key.armoredPrivate,
      current: true,
    });
    expect(pub.dir).toBe(join(mirror, 'stable', 'amd64-usr', '3975.2.2'));
    expect(pub.currentDir).toBe(join(mirror, 'stable', 'amd64-usr', 'current'));
    expect(pub.files.image).toBe(join(pub.dir, 'flatcar_production_image.bin.bz2'));
    image = await readFile(pub.files.image);
    server = await startMirrorServer(mirror);
  });

  afterAll(async () => {
    await server?.close();
  });

  it('published a consistent release, with current/ alongside', async () => {
    const dir = join(mirror, 'stable', 'amd64-usr', '3975.2.2');
    expect(Buffer.compare(image, await readFile(bz2))).toBe(0);
    const sig = await readFile(join(dir, 'flatcar_production_image.bin.bz2.sig'));
    const { first } = await openpgpVerify(image, sig, key.armoredPublic);
    await expect(first.verified).resolves.toBe(true);
    expect(await readFile(join(dir, 'flatcar_production_image.bin.bz2.DIGESTS'), 'utf8')).toBe(
      await digestsFile(join(dir, 'flatcar_production_image.bin.bz2')),
    );
    expect(await readFile(join(dir, 'version.txt'), 'utf8')).toBe(versionTxt('flatcar', '3975.2.2'));
    for (const name of ['version.txt', 'flatcar_production_image.bin.bz2', 'flatcar_production_image.bin.bz2.sig']) {
      const a = await readFile(join(dir, name));
      const b = await readFile(join(mirror, 'stable', 'amd64-usr', 'current', name));
      expect(Buffer.compare(a, b)).toBe(0);
    }
    const st = await stat(join(mirror, 'stable', 'amd64-usr', 'current', 'flatcar_production_image.bin.bz2'));
    expect(st.nlink).toBe(2); // hard link on the same filesystem
  });

  it('listens on 127.0.0.1 only', () => {
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it('serves a full GET and HEAD', async () => {
    const res = await fetch(server.url + imgPath);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe(String(image.length));
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    expect(Buffer.compare(Buffer.from(await res.arrayBuffer()), image)).toBe(0);

    const head = await fetch(server.url + imgPath, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(image.length));
    expect((await head.arrayBuffer()).byteLength).toBe(0);

    const v = await fetch(`${server.url}${base}/current/version.txt`);
    expect(await v.text()).toContain('FLATCAR_VERSION=3975.2.2');
    expect(server.requests.at(-1)).toEqual({ method: 'GET', path: `${base}/current/version.txt`, status: 200 });
  });

  it('serves ranges, and 416 when unsatisfiable', async () => {
    const r = await fetch(server.url + imgPath, { headers: { Range: 'bytes=100-1099' } });
    expect(r.status).toBe(206);
    expect(r.headers.get('content-range')).toBe(`bytes 100-1099/${image.length}`);
    expect(r.headers.get('content-length')).toBe('1000');
    expect(Buffer.compare(Buffer.from(await r.arrayBuffer()), image.subarray(100, 1100))).toBe(0);
    expect(server.requests.at(-1)).toMatchObject({ range: 'bytes=100-1099', status: 206 });

    const open = await fetch(server.url + imgPath, { headers: { Range: `bytes=${image.length - 10}-` } });
    expect(open.status).toBe(206);
    expect(Buffer.compare(Buffer.from(await open.arrayBuffer()), image.subarray(image.length - 10))).toBe(0);

    const past = await fetch(server.url + imgPath, { headers: { Range: `bytes=${image.length}-` } });
    expect(past.status).toBe(416);
    expect(past.headers.get('content-range')).toBe(`bytes */${image.length}`);
    await past.arrayBuffer();
  });

  it('answers 404 for missing files and directories', async () => {
    for (const p of [`${base}/9999.0.0/version.txt`, `${base}/current/`, '/']) {
      const r = await fetch(server.url + p);
      expect(r.status, p).toBe(404);
      await r.arrayBuffer();
    }
  });

  it('refuses path traversal, encoded or not, and symlinks out of the root', async () => {
    const outside = join(work, 'secret.txt');
    await writeFile(outside, 'SECRET');
    await mkdir(join(mirror, 'links'), { recursive: true });
    await symlink(outside, join(mirror, 'links', 'escape.txt'));
    for (const p of [
      '/../secret.txt',
      '/../../../../../../etc/passwd',
      '/%2e%2e/secret.txt',
      '/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
      '/stable/%2e%2e%2f%2e%2e%2fsecret.txt',
      '/stable/..%2f..%2fsecret.txt',
      '/links/escape.txt',
      '/%ff%fe',
    ]) {
      const r = await rawGet(server.url, p);
      expect([400, 404], p).toContain(r.status);
      expect(r.body.toString()).not.toContain('SECRET');
      expect(r.body.toString()).not.toContain('root:');
    }
  });

  it('injects failTimes: 500 then 200', async () => {
    server.faults.failTimes = [{ match: 'version.txt', times: 2 }, { match: '.DIGESTS', times: 1, status: 503 }];
    const url = `${server.url}${base}/current/version.txt`;
    expect((await fetch(url)).status).toBe(500);
    expect((await fetch(url)).status).toBe(500);
    expect((await fetch(url)).status).toBe(200);
    expect((await fetch(server.url + imgPath + '.DIGESTS')).status).toBe(503);
    expect((await fetch(server.url + imgPath + '.DIGESTS')).status).toBe(200);
    expect(server.requests.slice(-5).map((r) => r.status)).toEqual([500, 500, 200, 503, 200]);
    server.faults.failTimes = [];
  });

  it('injects dropAfter: headers promise the full length, the body breaks off', async () => {
    server.faults.dropAfter = [{ match: '.bin.bz2', bytes: 1000 }];
    const r = await fetch(server.url + imgPath);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-length')).toBe(String(image.length));
    await expect(r.arrayBuffer()).rejects.toThrow();

    // Exhausted after one use: a ranged resume now works.
    const resume = await fetch(server.url + imgPath, { headers: { Range: 'bytes=1000-' } });
    expect(resume.status).toBe(206);
    expect(Buffer.compare(Buffer.from(await resume.arrayBuffer()), image.subarray(1000))).toBe(0);

    // Zero bytes, and ranged requests cut short too.
    server.faults.dropAfter = [{ match: '.bin.bz2', bytes: 0, times: 2 }];
    await expect(fetch(server.url + imgPath).then((x) => x.arrayBuffer())).rejects.toThrow();
    const ranged = await fetch(server.url + imgPath, { headers: { Range: 'bytes=10-' } });
    expect(ranged.status).toBe(206);
    await expect(ranged.arrayBuffer()).rejects.toThrow();
    server.faults.dropAfter = [];
  });

  it('injects noRange and notFound', async () => {
    server.faults.noRange = true;
    const r = await fetch(server.url + imgPath, { headers: { Range: 'bytes=0-9' } });
    expect(r.status).toBe(200);
    expect(Buffer.compare(Buffer.from(await r.arrayBuffer()), image)).toBe(0);
    server.faults.noRange = false;

    server.faults.notFound = ['.sig'];
    const s = await fetch(server.url + imgPath + '.sig');
    expect(s.status).toBe(404);
    await s.arrayBuffer();
    server.faults.notFound = [];
    const s2 = await fetch(server.url + imgPath + '.sig');
    expect(s2.status).toBe(200);
    expect(Buffer.from(await s2.arrayBuffer()).length).toBeGreaterThan(50);
  });

  it('close() does not hang on an open, stalled download', async () => {
    const other = await startMirrorServer(mirror);
    const big = join(mirror, 'big.bin');
    await writeFile(big, Buffer.alloc(32 * 1024 * 1024));
    const res = await fetch(other.url + '/big.bin');
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    await reader.read(); // take one chunk, then stall
    await other.close();
    await expect(
      (async () => {
        for (;;) if ((await reader.read()).done) break;
      })(),
    ).rejects.toThrow();
    await rm(big);
  });
});
