/**
 * A release's OEM system extensions (Flatcar 3760 and later): `oem-<id>.raw` from the image's
 * version directory, with its .sig and .DIGESTS, fetched, cached and verified like the image,
 * from a mirror on 127.0.0.1 signed like the real one.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { publishRelease, type TestKey } from '../scripts/lib/mirror.js';
import { startMirrorServer, type MirrorServer } from '../scripts/lib/mirror-server.js';
import type { FetchResult, OemSysextResult } from '../src/release/fetch.js';
import { testExtension } from './helpers/sysext.js';
import { expectCleanError, oem, oemJson } from './helpers/cli.js';

const fixtures = inject('fixtures');
const VERSION = '4593.1.0';
let work: string;
let n = 0;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-fetch-sysext-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const azureRaw = () => testExtension(work, 'oem-azure', `ID=flatcar\nVERSION_ID=${VERSION}\nARCHITECTURE=x86-64\n`);

interface Mirror {
  dir: string;
  versionDir: string;
  server: MirrorServer;
  args: (...extra: string[]) => string[];
  cache: string;
}

async function mirror(): Promise<Mirror> {
  const dir = join(work, `m${++n}`);
  const key = fixtures.key as TestKey;
  const pub = await publishRelease({
    mirrorDir: dir,
    distro: 'flatcar',
    channel: 'stable',
    board: 'amd64-usr',
    version: VERSION,
    imageBz2: fixtures.flatcar.bz2,
    armoredPrivateKey: key.armoredPrivate,
    current: true,
    oemSysexts: { azure: await azureRaw() },
  });
  const keyFile = join(dir, 'key.pub.asc');
  await writeFile(keyFile, key.armoredPublic);
  const server = await startMirrorServer(dir);
  const cache = join(dir, 'cache');
  return {
    dir,
    versionDir: pub.dir,
    server,
    cache,
    args: (...extra) => ['fetch', '--base-url', `${server.url}/{channel}/{board}`, '--key', keyFile, '--cache-dir', cache, ...extra],
  };
}

describe('oem fetch --oem-sysext', () => {
  it('fetches oem-<id>.raw from the version directory, verified like the image, then reuses the cache', async () => {
    const m = await mirror();
    try {
      const { result, json } = await oemJson<FetchResult & { oemSysexts: OemSysextResult[] }>(m.args('--oem-sysext', 'azure'));
      expect(result.exitCode).toBe(0);
      const entry = join(m.cache, 'flatcar', 'amd64-usr', VERSION);
      expect(json.oemSysexts).toEqual([
        expect.objectContaining({ platform: 'azure', path: join(entry, 'oem-azure.raw'), cached: false, insecure: false, url: expect.stringMatching(new RegExp(`/stable/amd64-usr/${VERSION}/oem-azure\\.raw$`)) }),
      ]);
      expect(json.oemSysexts[0]!.verified!.signingKeyFingerprint).toBe(fixtures.key.signingSubkeyFingerprint.toUpperCase());
      expect((await readFile(join(entry, 'oem-azure.raw'))).equals(await readFile(join(m.versionDir, 'oem-azure.raw')))).toBe(true);
      expect((await readdir(entry)).filter((f) => f.startsWith('oem-')).sort()).toEqual(['oem-azure.raw', 'oem-azure.raw.DIGESTS', 'oem-azure.raw.sig']);
      const before = m.server.requests.filter((r) => r.path.endsWith('/oem-azure.raw')).length;
      const again = await oemJson<FetchResult & { oemSysexts: OemSysextResult[] }>(m.args('--oem-sysext', 'azure'));
      expect(again.json.oemSysexts[0]!.cached).toBe(true);
      expect(m.server.requests.filter((r) => r.path.endsWith('/oem-azure.raw')).length).toBe(before);
      expect((await oem(m.args('--oem-sysext', 'azure'))).stdout).toMatch(/^oem-azure\.raw: .*\(cached\), \d+ bytes, signed by [0-9A-F]{40}$/m);
    } finally {
      await m.server.close();
    }
  });

  it('refuses a tampered extension (exit 4) and keeps nothing of it', async () => {
    const m = await mirror();
    try {
      const raw = join(m.versionDir, 'oem-azure.raw');
      const bytes = await readFile(raw);
      bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 1;
      await writeFile(raw, bytes);
      const r = await oem(m.args('--oem-sysext', 'azure'));
      expect(r.exitCode).toBe(4);
      expect(expectCleanError(r)).toMatch(/oem-azure\.raw/);
      const entry = join(m.cache, 'flatcar', 'amd64-usr', VERSION);
      expect((await readdir(entry)).filter((f) => f.startsWith('oem-'))).toEqual([]);
    } finally {
      await m.server.close();
    }
  });

  it('an unsigned extension is a verification error; an unpublished one says so', async () => {
    const m = await mirror();
    try {
      await rm(join(m.versionDir, 'oem-azure.raw.sig'));
      const unsigned = await oem(m.args('--oem-sysext', 'azure'));
      expect(unsigned.exitCode).toBe(4);
      expect(expectCleanError(unsigned)).toMatch(/^no signature for oem-azure\.raw: .*oem-azure\.raw\.sig is missing \(HTTP 404\)$/);
      const missing = await oem(m.args('--oem-sysext', 'acme'));
      expect(missing.exitCode).toBe(5);
      expect(expectCleanError(missing)).toMatch(new RegExp(`^flatcar ${VERSION.replace(/\./g, '\\.')} publishes no oem-acme\\.raw `));
      const bad = await oem(m.args('--oem-sysext', '../x'));
      expect(bad.exitCode).toBe(2);
    } finally {
      await m.server.close();
    }
  });
});
