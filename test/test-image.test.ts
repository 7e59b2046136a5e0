import { execa } from 'execa';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { sparseCopyRange } from '../src/image/sparse.js';
import { buildTestImage, FULL_SIZE } from '../scripts/lib/test-image.js';
import { parseKeyValues } from '../src/image/generation.js';

const fixtures = inject('fixtures');
let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-testimg-test-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function partStart(image: string, n: number): Promise<{ first: number; last: number }> {
  const i = (await execa('sgdisk', ['-i', String(n), image])).stdout;
  return { first: Number(/First sector: (\d+)/.exec(i)![1]), last: Number(/Last sector: (\d+)/.exec(i)![1]) };
}

describe('test images are real Container Linux-layout disks', () => {
  for (const gen of ['coreos', 'flatcar'] as const) {
    it(`${gen}: sgdisk, e2fsck, btrfs check and mtools accept it`, async () => {
      const image = fixtures[gen].raw;
      expect((await execa('sgdisk', ['-v', image])).stdout).toMatch(/No problems found/);
      for (const n of [5, 8]) expect((await execa('sgdisk', ['-i', String(n), image])).stdout).toMatch(/does not exist/);
      for (const n of [3, 9, ...(gen === 'coreos' ? [6] : [])]) {
        const { first } = await partStart(image, n);
        await execa('e2fsck', ['-fn', `${image}?offset=${first * 512}`]);
      }
      if (gen === 'flatcar') {
        const { first, last } = await partStart(image, 6);
        const part = join(work, `${gen}-oem.img`);
        await sparseCopyRange(image, first * 512, (last - first + 1) * 512, part);
        await execa('btrfs', ['check', '--readonly', part]);
        await rm(part);
      }
      const esp = await partStart(image, 1);
      const dir = (await execa('mdir', ['-i', `${image}@@${esp.first * 512}`, '-/', '-b', '::/'])).stdout;
      expect(dir).toContain(`::/${gen}/first_boot`);
      const vt = parseKeyValues(await readFile(fixtures[gen].versionTxt, 'utf8'));
      const P = gen === 'coreos' ? 'COREOS' : 'FLATCAR';
      expect(vt[`${P}_VERSION`]).toBe(fixtures[gen].version);
      expect(vt[`${P}_BUILD`]).toBe(fixtures[gen].version.split('.')[0]);
    });
  }

  it('sets owners and modes in ROOT as asked, also through debugfs', async () => {
    const img = await buildTestImage({
      path: join(work, 'owned.bin'),
      generation: 'coreos',
      root: [
        { path: 'home/core', type: 'dir', uid: 1000, gid: 1000, mode: 0o755 },
        { path: 'home/core/.ssh', target: '/root/.ssh' },
      ],
    });
    const { first } = await partStart(img.path, 9);
    const out = (await execa('debugfs', ['-R', 'ls -p /home', `${img.path}?offset=${first * 512}`])).stdout;
    expect(out).toMatch(/\/040755\/1000\/1000\/core\/\//);
    const link = (await execa('debugfs', ['-R', 'stat /home/core/.ssh', `${img.path}?offset=${first * 512}`])).stdout;
    expect(link).toMatch(/Fast link dest: "\/root\/.ssh"/);
  });

  it('builds the real full-size layout, sparse', async () => {
    const img = await buildTestImage({ path: join(work, 'full.bin'), generation: 'flatcar', size: 'full', usrDataBytes: 8 * 1024 * 1024 });
    const st = await stat(img.path);
    expect(st.size).toBe(FULL_SIZE);
    expect(st.size).toBe(4_756_340_736);
    expect(st.blocks * 512).toBeLessThan(400 * 1024 * 1024);
    const want: Record<number, [number, number]> = {
      1: [4096, 266239],
      2: [266240, 270335],
      3: [270336, 2367487],
      4: [2367488, 4464639],
      6: [4464640, 4726783],
      7: [4726784, 4857855],
      9: [4857856, 9285631],
    };
    for (const [n, [first, last]] of Object.entries(want)) expect(await partStart(img.path, Number(n))).toEqual({ first, last });
    const usr = await partStart(img.path, 3);
    const ls = (await execa('debugfs', ['-R', 'ls -p /data', `${img.path}?offset=${usr.first * 512}`])).stdout;
    expect(ls.split('\n').length).toBeGreaterThan(3);
    await rm(img.path);
  });
});

describe('the test release mirror', () => {
  it('serves signed releases on 127.0.0.1 in the release server layout', async () => {
    const { startMirrorServer } = await import('../scripts/lib/mirror-server.js');
    const server = await startMirrorServer(fixtures.mirror);
    const gnupg = await mkdtemp(join(tmpdir(), 'oem-gpg-'));
    try {
      expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      for (const gen of ['coreos', 'flatcar'] as const) {
        const base = `${server.url}/${gen}/stable/amd64-usr`;
        const vt = parseKeyValues(await (await fetch(`${base}/current/version.txt`)).text());
        expect(vt[`${gen === 'coreos' ? 'COREOS' : 'FLATCAR'}_VERSION`]).toBe(fixtures[gen].version);
        const dir = `${base}/${fixtures[gen].version}`;
        const name = `${gen}_production_image.bin.bz2`;
        const files: Record<string, Buffer> = {};
        for (const f of [name, `${name}.sig`, `${name}.DIGESTS`]) {
          const r = await fetch(`${dir}/${f}`);
          expect(r.status).toBe(200);
          files[f] = Buffer.from(await r.arrayBuffer());
        }
        expect(files[name]!.equals(await readFile(fixtures[gen].bz2))).toBe(true);
        expect(files[`${name}.DIGESTS`]!.toString()).toMatch(/# SHA512 HASH\n[0-9a-f]{128} {2}\w+_production_image\.bin\.bz2/);
        const { writeFile } = await import('node:fs/promises');
        await writeFile(join(gnupg, name), files[name]!);
        await writeFile(join(gnupg, `${name}.sig`), files[`${name}.sig`]!);
        const env = { GNUPGHOME: gnupg };
        await execa('gpg', ['--batch', '--import', fixtures.key.publicKeyPath], { env });
        const v = await execa('gpg', ['--batch', '--status-fd', '1', '--verify', join(gnupg, `${name}.sig`), join(gnupg, name)], { env });
        // Made by the signing subkey, not the primary.
        expect(v.stdout).toMatch(new RegExp(`VALIDSIG ${fixtures.key.signingSubkeyFingerprint.toUpperCase()} `));
      }
    } finally {
      await server.close();
      await rm(gnupg, { recursive: true, force: true });
    }
  });
});
