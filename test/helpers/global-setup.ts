/**
 * Builds the shared test fixtures once per test run: a small CoreOS-style and a small Flatcar-style
 * image (raw and .bin.bz2), with some OEM and ROOT content. Tests that need variants build their own
 * with buildTestImage.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { buildTestImage } from '../../scripts/lib/test-image.js';
import { compressBzip2, generateTestKey, publishRelease, type TestKey } from '../../scripts/lib/mirror.js';

export interface Fixture {
  generation: 'coreos' | 'flatcar';
  version: string;
  raw: string;
  bz2: string;
  versionTxt: string;
}

export interface Fixtures {
  dir: string;
  coreos: Fixture;
  flatcar: Fixture;
  /**
   * A release mirror: `{mirror}/{distro}/{channel}/{board}/{version|current}/` for flatcar (stable, and
   * alpha) and coreos (stable), signed by the signing subkey of a throw-away key. Serve it with
   * startMirrorServer(mirror) and use `${url}/${distro}/{channel}/{board}` as the base URL template.
   */
  mirror: string;
  key: TestKey & { publicKeyPath: string };
}

declare module 'vitest' {
  export interface ProvidedContext {
    fixtures: Fixtures;
  }
}

/** OEM content of the shared fixtures, so inspect has something to show. */
export const FIXTURE_OEM = [
  { path: 'grub.cfg', content: '# test\nset oem_id="qemu"\nset linux_append="console=ttyS0"\n', mode: 0o644 },
  { path: 'oem-release', content: 'ID=qemu\nVERSION_ID=0.0.1\nNAME="QEMU"\nHOME_URL="https://example.org/"\nBUG_REPORT_URL="https://example.org/bugs"\n', mode: 0o644 },
  { path: 'bin', type: 'dir' as const, mode: 0o755 },
  { path: 'bin/tool', content: '#!/bin/sh\necho hi\n', mode: 0o755 },
];

let dir: string | undefined;

export async function setup(project: TestProject): Promise<void> {
  dir = await mkdtemp(join(tmpdir(), 'oem-fixtures-'));
  const make = async (generation: 'coreos' | 'flatcar'): Promise<Fixture> => {
    const raw = join(dir!, `${generation}_production_image.bin`);
    const img = await buildTestImage({ path: raw, generation, oem: FIXTURE_OEM });
    const bz2 = `${raw}.bz2`;
    await compressBzip2(raw, bz2);
    return { generation, version: img.version, raw, bz2, versionTxt: img.versionTxtPath! };
  };
  const [coreos, flatcar] = await Promise.all([make('coreos'), make('flatcar')]);
  const key = await generateTestKey({ name: 'oem test releases' });
  const publicKeyPath = join(dir, 'test-key.pub.asc');
  await writeFile(publicKeyPath, key.armoredPublic);
  const mirror = join(dir, 'mirror');
  for (const f of [coreos, flatcar]) {
    await publishRelease({
      mirrorDir: join(mirror, f.generation),
      distro: f.generation,
      channel: 'stable',
      board: 'amd64-usr',
      version: f.version,
      imageBz2: f.bz2,
      armoredPrivateKey: key.armoredPrivate,
      current: true,
    });
  }
  project.provide('fixtures', { dir, coreos, flatcar, mirror, key: { ...key, publicKeyPath } });
}

export async function teardown(): Promise<void> {
  if (dir) await rm(dir, { recursive: true, force: true });
}
