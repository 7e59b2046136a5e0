/**
 * `oem inspect` on Flatcar releases whose provider content is a system extension (3760 and later):
 * the generation and its evidence, every extension on OEM and ROOT with its extension-release and
 * whether systemd-sysext would merge it, the active-oem markers, and the warning for a marker that
 * blocks OS updates.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestImage, TEST_OEMS, type TreeEntry } from '../scripts/lib/test-image.js';
import type { InspectReport } from '../src/image/inspect.js';
import type { SysextFormat } from '../src/sysext/make.js';
import { testExtension } from './helpers/sysext.js';
import { oem, oemJson } from './helpers/cli.js';

let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-inspect-sysext-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** An extension image's bytes, with `release` as its extension-release.<name>. */
async function extension(name: string, release: string, format: SysextFormat = 'squashfs'): Promise<Buffer> {
  return readFile(await testExtension(work, name, release, format));
}

describe('oem inspect on the extension era', () => {
  it('shows every extension, whether it merges, the markers, and the marker that blocks updates', { timeout: 120_000 }, async () => {
    const oemTree: TreeEntry[] = [
      { path: 'grub.cfg', content: 'set oem_id="azure"\n' },
      { path: 'oem-release', content: 'ID=azure\nVERSION_ID=4593.1.0\nNAME="Microsoft Azure"\n' },
      { path: 'sysext/oem-azure-4593.1.0.raw', content: await extension('oem-azure', 'ID=flatcar\nVERSION_ID=4593.1.0\nARCHITECTURE=x86-64\n') },
      { path: 'sysext/active-oem-azure', content: '' },
      { path: 'sysext/active-oem-acme', content: '' },
      { path: 'acme.raw', content: await extension('acme', 'ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\n') },
      { path: 'arm.raw', content: await extension('arm', 'ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=arm64\n', 'erofs') },
    ];
    const rootTree: TreeEntry[] = [
      { path: 'etc/extensions/acme.raw', target: '/oem/acme.raw' },
      { path: 'etc/extensions/arm.raw', target: '/oem/arm.raw' },
      { path: 'etc/extensions/gone.raw', target: '/oem/missing.raw' },
      { path: 'var/lib/extensions/tools.raw', content: await extension('tools', 'ID=_any\n', 'erofs') },
    ];
    const img = await buildTestImage({ path: join(work, 'sysext.bin'), generation: 'flatcar-sysext', oem: oemTree, root: rootTree });
    const { result, json } = await oemJson<InspectReport>(['inspect', img.path]);
    expect(result.exitCode).toBe(0);
    expect(json.generation.name).toBe('flatcar-sysext');
    expect(json.generation.oemMountPoint).toBe('/oem');
    expect(json.generation.sysext).toEqual({ format: 'squashfs', oems: [...TEST_OEMS].sort() });
    expect(json.generation.evidence).toEqual(expect.arrayContaining(['USR-A os-release SYSEXT_LEVEL=1.0', 'the OEM partition is 1 GiB']));
    expect(json.activeOem).toEqual(['acme', 'azure']);
    const byPath = Object.fromEntries((json.extensions ?? []).map((x) => [`${x.partition}:${x.path}`, x]));
    expect(Object.keys(byPath).sort()).toEqual([
      'oem:/acme.raw',
      'oem:/arm.raw',
      'oem:/sysext/oem-azure-4593.1.0.raw',
      'root:/etc/extensions/acme.raw',
      'root:/etc/extensions/arm.raw',
      'root:/etc/extensions/gone.raw',
      'root:/var/lib/extensions/tools.raw',
    ]);
    expect(byPath['oem:/sysext/oem-azure-4593.1.0.raw']).toMatchObject({ name: 'oem-azure', format: 'squashfs', merges: true, release: { ID: 'flatcar', VERSION_ID: '4593.1.0', ARCHITECTURE: 'x86-64' } });
    expect(byPath['root:/etc/extensions/acme.raw']).toMatchObject({ name: 'acme', target: '/oem/acme.raw', format: 'squashfs', merges: true });
    expect(byPath['root:/etc/extensions/arm.raw']).toMatchObject({ name: 'arm', format: 'erofs', merges: false, reason: 'arm is for the architecture arm64, the image is x86-64' });
    expect(byPath['root:/etc/extensions/gone.raw']).toMatchObject({ merges: false, reason: 'gone: the link leads to /oem/missing.raw, which is not a file on OEM' });
    expect(byPath['root:/var/lib/extensions/tools.raw']).toMatchObject({ format: 'erofs', merges: true, release: { ID: '_any' } });
    // The custom id with a marker: every update would fail. Azure's marker is fine.
    expect(json.warnings).toEqual([expect.stringMatching(/^sysext\/active-oem-acme marks an OEM extension Flatcar does not publish .*every OS update will try to fetch oem-acme and fail$/)]);

    const text = (await oem(['inspect', img.path])).stdout;
    expect(text).toMatch(/^Generation:\s+flatcar-sysext 4593\.1\.0 \(OEM mounted at \/oem\)/m);
    expect(text).toMatch(/^System extensions \(active OEM markers: acme, azure\):$/m);
    expect(text).toMatch(/^ {2}oem-azure: OEM \/sysext\/oem-azure-4593\.1\.0\.raw, squashfs, merges: /m);
    expect(text).toMatch(/^ {2}arm: ROOT \/etc\/extensions\/arm\.raw -> \/oem\/arm\.raw, erofs, would not merge: arm is for the architecture arm64/m);
    expect(text).toMatch(/^Warning:\s+sysext\/active-oem-acme marks/m);
  });

  it('tells the eras apart: plain files before 3760, squashfs extensions to 4593, EROFS from 4628', { timeout: 120_000 }, async () => {
    const cases: [string, 'flatcar' | 'flatcar-sysext', string, string | undefined][] = [
      ['3700.0.0', 'flatcar', 'flatcar', undefined],
      ['3815.2.0', 'flatcar', 'flatcar-sysext', 'squashfs'],
      ['4628.0.0', 'flatcar-sysext', 'flatcar-sysext', 'erofs'],
    ];
    for (const [version, generation, name, format] of cases) {
      const img = await buildTestImage({ path: join(work, `era-${version}.bin`), generation, version, versionTxt: false });
      const { json } = await oemJson<InspectReport>(['inspect', img.path]);
      expect(json.generation.name, version).toBe(name);
      expect(json.generation.sysext?.format, version).toBe(format);
      if (name === 'flatcar-sysext') expect(json.generation.evidence.join(', ')).toMatch(new RegExp(`version ${version.replace(/\./g, '\\.')} is 3760 or later`));
    }
  });
});
