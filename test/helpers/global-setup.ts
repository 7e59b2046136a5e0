/**
 * Builds the shared test fixtures once per test run: a small CoreOS-style and a small Flatcar-style
 * image (raw and .bin.bz2), with some OEM and ROOT content. Tests that need variants build their own
 * with buildTestImage.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { buildTestImage, type Generation } from '../../scripts/lib/test-image.js';
import { compressBzip2 } from '../../scripts/lib/mirror.js';

export interface Fixture {
  generation: Generation;
  version: string;
  raw: string;
  bz2: string;
  versionTxt: string;
}

export interface Fixtures {
  dir: string;
  coreos: Fixture;
  flatcar: Fixture;
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
  const make = async (generation: Generation): Promise<Fixture> => {
    const raw = join(dir!, `${generation}_production_image.bin`);
    const img = await buildTestImage({ path: raw, generation, oem: FIXTURE_OEM });
    const bz2 = `${raw}.bz2`;
    await compressBzip2(raw, bz2);
    return { generation, version: img.version, raw, bz2, versionTxt: img.versionTxtPath! };
  };
  const [coreos, flatcar] = await Promise.all([make('coreos'), make('flatcar')]);
  project.provide('fixtures', { dir, coreos, flatcar });
}

export async function teardown(): Promise<void> {
  if (dir) await rm(dir, { recursive: true, force: true });
}
