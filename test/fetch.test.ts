import { access, mkdtemp, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import * as openpgp from 'openpgp';
import { generateTestKey, publishRelease, revokeSigningSubkeys, signDetached, type TestKey } from '../scripts/lib/mirror.js';
import { startMirrorServer, type MirrorServer } from '../scripts/lib/mirror-server.js';
import { OFFICIAL_KEYS, loadTrustedKeys } from '../src/release/verify.js';
import { expectCleanError, oem, oemJson } from './helpers/cli.js';
import type { FetchResult } from '../src/release/fetch.js';

const fixtures = inject('fixtures');
const IMG = 'flatcar_production_image.bin.bz2';
let work: string;
let n = 0;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-fetch-test-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const exists = (p: string) => access(p).then(() => true, () => false);
const sha512 = async (p: string) => createHash('sha512').update(await readFile(p)).digest('hex');

interface Mirror {
  dir: string;
  server: MirrorServer;
  base: string;
  cache: string;
  pub: string;
  close: () => Promise<void>;
}

/** A private mirror with one flatcar release (as current), served on 127.0.0.1, and an empty cache. */
async function mirror(opts: { key?: TestKey; version?: string; signDate?: Date; current?: boolean } = {}): Promise<Mirror> {
  const dir = join(work, `m${n++}`);
  const key = opts.key ?? (fixtures.key as TestKey);
  await publishRelease({
    mirrorDir: dir,
    distro: 'flatcar',
    channel: 'stable',
    board: 'amd64-usr',
    version: opts.version ?? '3510.2.8',
    imageBz2: fixtures.flatcar.bz2,
    armoredPrivateKey: key.armoredPrivate,
    current: opts.current ?? true,
    ...(opts.signDate ? { signDate: opts.signDate } : {}),
  });
  const pub = join(dir, 'key.pub.asc');
  await writeFile(pub, key.armoredPublic);
  const server = await startMirrorServer(dir);
  return { dir, server, base: `${server.url}/{channel}/{board}`, cache: join(dir, 'cache'), pub, close: () => server.close() };
}

function fetchArgs(m: Mirror, ...extra: string[]): string[] {
  return ['fetch', '--base-url', m.base, '--key', m.pub, '--cache-dir', m.cache, ...extra];
}

const entry = (m: Mirror, v = '3510.2.8') => join(m.cache, 'flatcar', 'amd64-usr', v);
const imageRequests = (m: Mirror) => m.server.requests.filter((r) => r.path.endsWith('.bin.bz2'));

describe('oem fetch', () => {
  it('downloads current, verifies the signing subkey and DIGESTS, and caches under the version', async () => {
    const m = await mirror();
    try {
      const { result, json } = await oemJson<FetchResult>(fetchArgs(m));
      expect(result.exitCode).toBe(0);
      expect(json).toMatchObject({ distro: 'flatcar', channel: 'stable', board: 'amd64-usr', release: 'current', version: '3510.2.8', cached: false, insecure: false, digestsChecked: true });
      expect(json.image).toBe(join(entry(m), IMG));
      expect(json.sha512).toBe(await sha512(fixtures.flatcar.bz2));
      expect(json.size).toBe((await readFile(fixtures.flatcar.bz2)).length);
      expect(json.verified!.signingKeyFingerprint).toBe(fixtures.key.signingSubkeyFingerprint.toUpperCase());
      expect(json.verified!.keyFingerprint).toBe(fixtures.key.fingerprint.toUpperCase());
      expect((await readdir(entry(m))).sort()).toEqual([IMG, `${IMG}.DIGESTS`, `${IMG}.sig`, 'version.txt']);
      // Files come from the version directory, labelled by current/version.txt.
      expect(m.server.requests.map((r) => r.path)).toContain('/stable/amd64-usr/current/version.txt');
      expect(imageRequests(m).map((r) => r.path)).toEqual([`/stable/amd64-usr/3510.2.8/${IMG}`]);
    } finally {
      await m.close();
    }
  });

  it('a second fetch transfers only version.txt and re-checks the cached signature', async () => {
    const m = await mirror();
    try {
      expect((await oem(fetchArgs(m))).exitCode).toBe(0);
      m.server.requests.length = 0;
      const { result, json } = await oemJson<FetchResult>(fetchArgs(m));
      expect(result.exitCode).toBe(0);
      expect(json.cached).toBe(true);
      expect(json.verified).not.toBeNull();
      expect(m.server.requests.map((r) => r.path)).toEqual(['/stable/amd64-usr/current/version.txt']);
      expect(result.stderr).toMatch(/verified flatcar_production_image\.bin\.bz2: good signature/);
    } finally {
      await m.close();
    }
  });

  it('fetches a pinned release', async () => {
    const m = await mirror({ version: '3510.2.8', current: false });
    try {
      const { result, json } = await oemJson<FetchResult>(fetchArgs(m, '--release', '3510.2.8'));
      expect(result.exitCode).toBe(0);
      expect(json).toMatchObject({ release: '3510.2.8', version: '3510.2.8' });
      expect(m.server.requests[0]!.path).toBe('/stable/amd64-usr/3510.2.8/version.txt');
    } finally {
      await m.close();
    }
  });

  it('a new current does not overwrite another version, and a bad new release leaves the good cache untouched', async () => {
    const m = await mirror({ version: '3510.2.8' });
    try {
      expect((await oem(fetchArgs(m))).exitCode).toBe(0);
      const old = await sha512(join(entry(m), IMG));
      // The channel moves on to 3510.3.0, whose image is tampered with.
      await publishRelease({
        mirrorDir: m.dir, distro: 'flatcar', channel: 'stable', board: 'amd64-usr', version: '3510.3.0',
        imageBz2: fixtures.flatcar.bz2, armoredPrivateKey: fixtures.key.armoredPrivate, current: true,
      });
      const bad = join(m.dir, 'stable', 'amd64-usr', '3510.3.0', IMG);
      const buf = await readFile(bad);
      buf.writeUInt8(buf.readUInt8(buf.length - 100) ^ 0xff, buf.length - 100);
      await rm(bad);
      await writeFile(bad, buf);
      const r = await oem(fetchArgs(m));
      expect(r.exitCode).toBe(4);
      expect(expectCleanError(r)).toMatch(/^flatcar_production_image\.bin\.bz2: BAD signature from /);
      expect(await readdir(entry(m, '3510.3.0'))).toEqual([]);
      expect(await sha512(join(entry(m), IMG))).toBe(old);
      expect((await oem(fetchArgs(m, '--release', '3510.2.8'))).exitCode).toBe(0);
    } finally {
      await m.close();
    }
  });

  it('re-downloads a cached image that no longer verifies', async () => {
    const m = await mirror();
    try {
      expect((await oem(fetchArgs(m))).exitCode).toBe(0);
      const cached = join(entry(m), IMG);
      const buf = await readFile(cached);
      buf.writeUInt8(buf.readUInt8(200) ^ 1, 200);
      await writeFile(cached, buf);
      const { result, json } = await oemJson<FetchResult>(fetchArgs(m));
      expect(result.exitCode).toBe(0);
      expect(result.stderr).toMatch(/cached flatcar_production_image\.bin\.bz2 failed verification .*BAD signature.*downloading again/);
      expect(json.cached).toBe(false);
      expect(json.sha512).toBe(await sha512(fixtures.flatcar.bz2));
    } finally {
      await m.close();
    }
  });

  it('resumes an interrupted download with a Range request', async () => {
    const m = await mirror();
    m.server.faults.dropAfter = [{ match: '.bin.bz2$', bytes: 5000 }];
    try {
      const { result, json } = await oemJson<FetchResult>(fetchArgs(m));
      expect(result.exitCode).toBe(0);
      expect(json.sha512).toBe(await sha512(fixtures.flatcar.bz2));
      const reqs = imageRequests(m).filter((r) => r.method === 'GET');
      expect(reqs.length).toBe(2);
      expect(reqs[0]!.range).toBeUndefined();
      expect(reqs[1]!.range).toMatch(/^bytes=\d+-$/);
      expect(Number(/bytes=(\d+)-/.exec(reqs[1]!.range!)![1])).toBeGreaterThan(0);
      expect(reqs[1]!.status).toBe(206);
      expect(result.stderr).toMatch(/retrying .* connection dropped/);
      expect(result.stderr).toMatch(/\(resumed\)/);
    } finally {
      await m.close();
    }
  });

  it('resumes a download left behind by an earlier run', async () => {
    const m = await mirror();
    try {
      const { mkdir } = await import('node:fs/promises');
      await mkdir(entry(m), { recursive: true });
      const full = await readFile(fixtures.flatcar.bz2);
      await writeFile(join(entry(m), `${IMG}.part`), full.subarray(0, 1000));
      const { result, json } = await oemJson<FetchResult>(fetchArgs(m));
      expect(result.exitCode).toBe(0);
      expect(json.sha512).toBe(await sha512(fixtures.flatcar.bz2));
      expect(imageRequests(m)[0]!.range).toBe('bytes=1000-');
      expect(await exists(join(entry(m), `${IMG}.part`))).toBe(false);
    } finally {
      await m.close();
    }
  });

  it('restarts cleanly when the server does not support Range', async () => {
    const m = await mirror();
    m.server.faults.noRange = true;
    m.server.faults.dropAfter = [{ match: '.bin.bz2$', bytes: 7000 }];
    try {
      const { result, json } = await oemJson<FetchResult>(fetchArgs(m));
      expect(result.exitCode).toBe(0);
      expect(json.sha512).toBe(await sha512(fixtures.flatcar.bz2));
      expect(imageRequests(m).map((r) => r.status)).toEqual([200, 200]);
    } finally {
      await m.close();
    }
  });

  it('retries 500s with backoff, then succeeds', async () => {
    const m = await mirror();
    m.server.faults.failTimes = [{ match: '.bin.bz2$', times: 2, status: 500 }, { match: 'version.txt', times: 1, status: 503 }];
    try {
      const { result } = await oemJson<FetchResult>(fetchArgs(m));
      expect(result.exitCode).toBe(0);
      expect(imageRequests(m).map((r) => r.status)).toEqual([500, 500, 200]);
      expect(result.stderr).toMatch(/retrying flatcar_production_image\.bin\.bz2 in 1\.0 s \(attempt 2\): HTTP 500/);
    } finally {
      await m.close();
    }
  });

  it('says which URL was not found', async () => {
    const m = await mirror();
    try {
      const r = await oem(fetchArgs(m, '--release', '1.2.3'));
      expect(r.exitCode).toBe(5);
      expect(expectCleanError(r)).toBe(`not found (HTTP 404): ${m.server.url}/stable/amd64-usr/1.2.3/version.txt`);
      expect(r.stderr).toMatch(/hint: check --channel, --board, --release/);
      const r2 = await oem(fetchArgs(m, '--image-name', 'flatcar_production_openstack_image.img.bz2'));
      expect(r2.exitCode).toBeGreaterThan(0);
      expect(expectCleanError(r2)).toMatch(/flatcar_production_openstack_image\.img\.bz2/);
    } finally {
      await m.close();
    }
  });

  it('refuses a tampered image, removing it from the cache', async () => {
    const m = await mirror();
    const p = join(m.dir, 'stable', 'amd64-usr', '3510.2.8', IMG);
    const buf = await readFile(p);
    buf.writeUInt8(buf.readUInt8(1234) ^ 1, 1234);
    await rm(p);
    await writeFile(p, buf);
    try {
      const r = await oem(fetchArgs(m));
      expect(r.exitCode).toBe(4);
      expect(expectCleanError(r)).toMatch(/^flatcar_production_image\.bin\.bz2: BAD signature from .*: the file does not match flatcar_production_image\.bin\.bz2\.sig/);
      expect(await readdir(entry(m))).toEqual([]);
    } finally {
      await m.close();
    }
  });

  it('refuses a truncated image', async () => {
    const m = await mirror();
    const p = join(m.dir, 'stable', 'amd64-usr', '3510.2.8', IMG);
    await truncate(p, 10_000);
    try {
      const r = await oem(fetchArgs(m));
      expect(r.exitCode).toBe(4);
      expect(expectCleanError(r)).toMatch(/BAD signature/);
      expect(await readdir(entry(m))).toEqual([]);
    } finally {
      await m.close();
    }
  });

  it('refuses a signature by an unknown key before downloading the image', async () => {
    const m = await mirror();
    const other = await generateTestKey({ name: 'someone else' });
    const otherPub = join(m.dir, 'other.asc');
    await writeFile(otherPub, other.armoredPublic);
    try {
      const r = await oem(['fetch', '--base-url', m.base, '--key', otherPub, '--cache-dir', m.cache]);
      expect(r.exitCode).toBe(4);
      expect(expectCleanError(r)).toMatch(/^flatcar_production_image\.bin\.bz2: signed by unknown key [0-9A-F]{16}, not by .*other\.asc$/);
      expect(imageRequests(m).filter((q) => q.path.endsWith(IMG))).toEqual([]);
      // The bundled official key does not trust the test key either.
      const r2 = await oem(['fetch', '--base-url', m.base, '--cache-dir', m.cache]);
      expect(r2.exitCode).toBe(4);
      expect(expectCleanError(r2)).toMatch(/signed by unknown key .* not by the bundled flatcar image signing key/);
    } finally {
      await m.close();
    }
  });

  it('accepts a signature made while its subkey was valid, after the subkey expired', async () => {
    const created = new Date(Date.now() - 10 * 86400_000);
    const key = await generateTestKey({ date: created, signingSubkeyExpirySeconds: 86400 });
    const m = await mirror({ key, signDate: new Date(created.getTime() + 3600_000) });
    try {
      const k = await openpgp.readKey({ armoredKey: key.armoredPublic });
      expect(await k.subkeys[0]!.getExpirationTime()).toBeInstanceOf(Date);
      expect(((await k.subkeys[0]!.getExpirationTime()) as Date).getTime()).toBeLessThan(Date.now());
      const { result, json } = await oemJson<FetchResult>(fetchArgs(m));
      expect(result.exitCode).toBe(0);
      expect(new Date(json.verified!.signedAt).getTime()).toBeLessThan(Date.now() - 9 * 86400_000);
    } finally {
      await m.close();
    }
  });

  it('refuses a signature by a revoked subkey', async () => {
    const key = await generateTestKey();
    const m = await mirror({ key });
    const revoked = await revokeSigningSubkeys(key.armoredPrivate);
    await writeFile(m.pub, revoked.armoredPublic);
    try {
      const r = await oem(fetchArgs(m));
      expect(r.exitCode).toBe(4);
      expect(expectCleanError(r)).toMatch(new RegExp(`^flatcar_production_image\\.bin\\.bz2: signed by revoked subkey ${key.signingSubkeyFingerprint.toUpperCase()} of `));
      expect(imageRequests(m).filter((q) => q.path.endsWith(IMG))).toEqual([]);
    } finally {
      await m.close();
    }
  });

  it('refuses a release without .sig unless --insecure, which warns', async () => {
    const m = await mirror();
    await rm(join(m.dir, 'stable', 'amd64-usr', '3510.2.8', `${IMG}.sig`));
    try {
      const r = await oem(fetchArgs(m));
      expect(r.exitCode).toBe(4);
      expect(expectCleanError(r)).toMatch(/^no signature for flatcar_production_image\.bin\.bz2: .*\.sig is missing \(HTTP 404\)$/);
      expect(r.stderr).toMatch(/hint: .*--insecure/);
      const { result, json } = await oemJson<FetchResult>(fetchArgs(m, '--insecure'));
      expect(result.exitCode).toBe(0);
      expect(json).toMatchObject({ insecure: true, verified: null, digestsChecked: true });
      expect(result.stderr).toMatch(/WARNING: --insecure/);
    } finally {
      await m.close();
    }
  });

  it('refuses an image whose SHA512 does not match .DIGESTS', async () => {
    const m = await mirror();
    const d = join(m.dir, 'stable', 'amd64-usr', '3510.2.8', `${IMG}.DIGESTS`);
    const text = await readFile(d, 'utf8');
    await rm(d);
    await writeFile(d, text.replace(/# SHA512 HASH\n([0-9a-f])/, (_s, c: string) => `# SHA512 HASH\n${c === '0' ? '1' : '0'}`));
    try {
      const r = await oem(fetchArgs(m));
      expect(r.exitCode).toBe(4);
      expect(expectCleanError(r)).toMatch(/^flatcar_production_image\.bin\.bz2: SHA512 [0-9a-f]{16}\.\.\. does not match flatcar_production_image\.bin\.bz2\.DIGESTS/);
      expect(await readdir(entry(m))).toEqual([]);
    } finally {
      await m.close();
    }
  });

  it('refuses malformed or foreign version.txt', async () => {
    const m = await mirror();
    const vt = join(m.dir, 'stable', 'amd64-usr', 'current', 'version.txt');
    try {
      await rm(vt);
      await writeFile(vt, 'FLATCAR_VERSION=banana\n');
      let r = await oem(fetchArgs(m));
      expect(r.exitCode).toBe(3);
      expect(expectCleanError(r)).toMatch(/version\.txt: FLATCAR_VERSION="banana" is not a version X\.Y\.Z$/);
      await writeFile(vt, 'FLATCAR_BUILD=1\nFLATCAR_VERSION=3510.2.8\n');
      r = await oem(fetchArgs(m));
      expect(expectCleanError(r)).toMatch(/FLATCAR_BUILD="1" does not match FLATCAR_VERSION=3510\.2\.8$/);
      await writeFile(vt, 'COREOS_VERSION=2512.3.0\n');
      r = await oem(fetchArgs(m));
      expect(expectCleanError(r)).toMatch(/has no FLATCAR_VERSION$/);
      expect(r.stderr).toMatch(/hint: it has COREOS_\* keys: use --distro coreos/);
    } finally {
      await m.close();
    }
  });

  it('fetches CoreOS releases labelled by COREOS_* keys', async () => {
    const server = await startMirrorServer(join(fixtures.mirror, 'coreos'));
    const cache = join(work, 'coreos-cache');
    try {
      const { result, json } = await oemJson<FetchResult>([
        'fetch', '--distro', 'coreos', '--base-url', `${server.url}/{channel}/{board}`, '--key', fixtures.key.publicKeyPath, '--cache-dir', cache,
      ]);
      expect(result.exitCode).toBe(0);
      expect(json).toMatchObject({ distro: 'coreos', version: fixtures.coreos.version });
      expect(json.image).toBe(join(cache, 'coreos', 'amd64-usr', fixtures.coreos.version, 'coreos_production_image.bin.bz2'));
    } finally {
      await server.close();
    }
  });

  it('takes the base URL from OEM_BASE_URL and refuses channels a distro does not have', async () => {
    const m = await mirror();
    try {
      const r = await oem(['fetch', '--key', m.pub, '--cache-dir', m.cache], { env: { OEM_BASE_URL: m.base } });
      expect(r.exitCode).toBe(0);
      const bad = await oem(['fetch', '--distro', 'coreos', '--channel', 'lts', '--cache-dir', m.cache]);
      expect(bad.exitCode).toBe(2);
      expect(expectCleanError(bad)).toBe('coreos has no lts channel');
      const badRel = await oem(['fetch', '--release', 'latest', '--cache-dir', m.cache]);
      expect(expectCleanError(badRel)).toMatch(/--release is "current" or a version X\.Y\.Z/);
    } finally {
      await m.close();
    }
  });
});

describe('bundled official keys', () => {
  it('parse, with the expected primary fingerprints and rotating signing subkeys', async () => {
    for (const distro of ['flatcar', 'coreos'] as const) {
      const t = await loadTrustedKeys(distro);
      expect(t.keys).toHaveLength(1);
      expect(t.keys[0]!.getFingerprint().toUpperCase()).toBe(OFFICIAL_KEYS[distro].fingerprint);
      expect(t.keys[0]!.subkeys.length).toBeGreaterThan(3);
    }
    expect(OFFICIAL_KEYS.flatcar.fingerprint).toBe('F88CFEDEFF29A5B4D9523864E25D9AED0593B34A');
    expect(OFFICIAL_KEYS.coreos.fingerprint).toBe('04127D0BFABEC8871FFB2CCE50E0885593D2DCB4');
  });

  it('are the official key files, byte for byte (SHA-256 pinned from shared/keys/)', async () => {
    const pinned: Record<string, string> = {
      'flatcar-image-signing-key.asc': '74a1ecbc274577853f4e50596289eb7bcbb70737941df0135dc91ac79ae2c331',
      'coreos-image-signing-key.asc': '4177fe3f761494dce1b021841b670766d4250472e4f77dc2faba2a5b8e91c0ff',
    };
    for (const [f, sha] of Object.entries(pinned)) {
      expect(createHash('sha256').update(await readFile(join(__dirname, '..', 'keys', f))).digest('hex'), f).toBe(sha);
    }
  });

  // shared/ sits beside the checkout in CI and on the team's machines, not in a user's clone.
  it.runIf(existsSync(join(__dirname, '..', '..', 'shared', 'keys')))('are the same bytes as the keys in ../shared/keys/ [where shared/ is beside the checkout]', async () => {
    for (const f of ['flatcar-image-signing-key.asc', 'coreos-image-signing-key.asc']) {
      expect(await readFile(join(__dirname, '..', 'keys', f), 'utf8')).toBe(await readFile(join(__dirname, '..', '..', 'shared', 'keys', f), 'utf8'));
    }
  });
});

describe('oem verify', () => {
  it('verifies a local file with its .sig and .DIGESTS', async () => {
    const dir = join(fixtures.mirror, 'flatcar', 'stable', 'amd64-usr', fixtures.flatcar.version);
    const { result, json } = await oemJson<{ verified: boolean; sha512: string; digests: string }>(['verify', join(dir, IMG), '--key', fixtures.key.publicKeyPath]);
    expect(result.exitCode).toBe(0);
    expect(json.verified).toBe(true);
    expect(json.digests).toBe(join(dir, `${IMG}.DIGESTS`));
    const plain = await oem(['verify', join(dir, IMG), '--key', fixtures.key.publicKeyPath]);
    expect(plain.stdout).toMatch(/good signature by subkey/);
  });

  it('refuses a tampered file, a wrong key, and a missing signature', async () => {
    const f = join(work, 'file.bin');
    await writeFile(f, Buffer.alloc(100_000, 3));
    await writeFile(`${f}.sig`, await signDetached(f, fixtures.key.armoredPrivate));
    expect((await oem(['verify', f, '--key', fixtures.key.publicKeyPath])).exitCode).toBe(0);
    // Official keys only: the test key is unknown.
    let r = await oem(['verify', f]);
    expect(r.exitCode).toBe(4);
    expect(expectCleanError(r)).toMatch(/file\.bin: signed by unknown key .* not by the bundled Flatcar and CoreOS image signing keys/);
    await writeFile(f, Buffer.concat([Buffer.alloc(99_999, 3), Buffer.from([4])]));
    r = await oem(['verify', f, '--key', fixtures.key.publicKeyPath]);
    expect(r.exitCode).toBe(4);
    expect(expectCleanError(r)).toMatch(/file\.bin: BAD signature/);
    r = await oem(['verify', f, '--signature', join(work, 'nope.sig'), '--key', fixtures.key.publicKeyPath]);
    expect(r.exitCode).toBe(4);
    expect(expectCleanError(r)).toMatch(/no signature: .*nope\.sig does not exist/);
    await writeFile(join(work, 'priv.asc'), fixtures.key.armoredPrivate);
    r = await oem(['verify', f, '--key', join(work, 'priv.asc')]);
    expect(expectCleanError(r)).toMatch(/is a private key/);
  });
});
