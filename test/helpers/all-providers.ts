/**
 * The oem build --all-providers suite, run per generation by test/build-providers-*.test.ts: every
 * provider's content, checked with oem inspect and independent tools. Builds use the mount backend
 * when run as root (CI), else rootless.
 */
import { execa } from 'execa';
import { readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import type { BuildResult } from '../../src/build.js';
import type { InspectReport } from '../../src/image/inspect.js';
import { checkCloudConfig, checkIgnition } from '../../src/providers/validate.js';
import { oemJson } from './cli.js';
import { part, readTree } from './image-read.js';
import { agent, fixtures, key, mirrorArgs, OTHER_ARCH, PROVIDERS, raw, sha512, SYSEXT_ONLY, work } from './build-env.js';

// Both with the default bz2, as users build (the raw .bz2 made from the release's own blocks): the
// content checks read the first image as built (oem inspect reads .bz2) and every one through stock
// lbzip2. Uncompressed output is tested in build-artifacts.test.ts; here it would mean writing and
// hashing a whole disk per provider.
/** The --all-providers suite for one generation (one test file each, so that the two run at once). */
export function allProvidersSuite(gen: 'coreos' | 'flatcar'): void {
  describe(`oem build --all-providers, ${gen}-style release`, () => {
    let result: BuildResult;
    let stderr: string;
    let out: string;
    let baseRaw: string;

    beforeAll(async () => {
      out = join(work, `out-${gen}`);
      const { result: r, json } = await oemJson<BuildResult>(['build', '--all-providers', '--format', 'raw', ...mirrorArgs(gen), '--output-dir', out, '--agent', agent, '--ssh-key', key], { env: { OEM_TMPDIR: work } });
      if (r.exitCode !== 0) throw new Error(`build failed: ${r.stderr}`);
      result = json;
      stderr = r.stderr;
      baseRaw = fixtures[gen].raw;
    }, 600_000);

    it('builds every provider, each in its own directory, and nothing else', async () => {
      expect(result.builds.map((b) => b.provider).sort()).toEqual(PROVIDERS);
      // The platforms that came with Flatcar's extensions are skipped on this generation, and said so.
      for (const p of SYSEXT_ONLY) expect(stderr).toContain(`oem: skipping ${p}: it is for flatcar-sysext images, this is a ${gen} image`);
      for (const p of OTHER_ARCH) expect(stderr).toContain(`oem: skipping ${p}: it is for ppc64-le images, this is an x86-64 image`);
      expect(result).toMatchObject({ distro: gen, version: fixtures[gen].version, generation: gen, base: { verified: true, insecure: false } });
      expect((await readdir(out)).sort()).toEqual(PROVIDERS);
      for (const p of PROVIDERS) {
        expect((await readdir(join(out, p))).sort()).toEqual([`${gen}_production_${p}_image.bin.bz2`, `${gen}_production_${p}_image.bin.bz2.DIGESTS`, 'manifest.json', 'version.txt']);
      }
    });

    it('writes manifest.json, version.txt and .DIGESTS that match the artifact', async () => {
      for (const [i, b] of result.builds.entries()) {
        const m = JSON.parse(await readFile(b.manifest, 'utf8'));
        const sha = await sha512(b.image);
        expect(m).toMatchObject({ provider: b.provider, distro: gen, version: fixtures[gen].version, agent: true, base: { sha512: await sha512(fixtures[gen].bz2), verified: true } });
        expect(m.artifacts).toEqual([{ name: `${gen}_production_${b.provider}_image.bin.bz2`, format: 'raw', compression: 'bz2', size: (await stat(b.image)).size, sha512: sha }]);
        expect(await readFile(b.digests, 'utf8')).toContain(`# SHA512 HASH\n${sha}  ${gen}_production_${b.provider}_image.bin.bz2`);
        const P = gen === 'coreos' ? 'COREOS' : 'FLATCAR';
        const vt = await readFile(b.versionTxt, 'utf8');
        expect(vt).toContain(`${P}_VERSION=${fixtures[gen].version}\n`);
        expect(vt).toContain(`${P}_OEM_ID=${b.oemId}\n`);
        expect(vt).toContain(`${P}_OEM_PROVIDER=${b.provider}\n`);
        // bzip2 -t accepts it (one is enough here: every .bz2 is decoded by the next test).
        if (i === 0) await execa('bzip2', ['-t', b.image]);
      }
    });

    it('puts the provider content into OEM, checked by oem inspect and independent tools', { timeout: 300_000 }, async () => {
      for (const [i, b] of result.builds.entries()) {
        const img = await raw(b.image);
        // The oem inspect command reads the first .bz2 itself (inspect of every output format is
        // tested in build-artifacts.test.ts); every provider's OEM is read back with independent tools.
        if (i === 0) {
          const ins = (await oemJson<InspectReport>(['inspect', b.image])).json;
          expect(ins.oem?.oemId).toBe(b.oemId);
          expect(ins.oem?.oemRelease).toMatchObject({ ID: b.oemId, VERSION_ID: fixtures[gen].version });
        }
        const tree = await readTree(img, 6, gen === 'coreos' ? 'ext4' : 'btrfs');
        const grub = tree.get('/grub.cfg')!;
        expect(grub).toMatchObject({ type: 'file', mode: 0o644, uid: 0, gid: 0 });
        for (const line of grub.content!.trim().split('\n')) expect(line).toMatch(/^(#.*|set [a-z_]+="[^"]*")$/);
        expect(grub.content).toContain(`set oem_id="${b.oemId}"`);
        const release = Object.fromEntries(tree.get('/oem-release')!.content!.trim().split('\n').map((l) => l.split('=', 2) as [string, string]));
        expect(release).toMatchObject({ ID: b.oemId, VERSION_ID: fixtures[gen].version });
        expect(tree.get('/bin/oem-agent')).toMatchObject({ type: 'file', mode: 0o755, uid: 0, gid: 0 });
        expect(tree.get('/bin/oem-agent')!.content).toContain('xz -dc "$here/oem-agent.xz"');
        expect(tree.get('/bin/oem-agent.xz')).toMatchObject({ type: 'file', mode: 0o644, uid: 0, gid: 0 });
        expect(tree.get('/system/oem.target')).toMatchObject({ type: 'file', mode: 0o644 });
        expect(tree.get('/system/oem-agent-provision.service')).toBeDefined();
        expect(tree.get('/config.yml')?.content).toBe('version: 1\n');
        expect(tree.get('/authorized_keys')?.content).toBe(await readFile(key, 'utf8'));
        expect(tree.has('/config.ign')).toBe(false);
        for (const [path, node] of tree) {
          if (path.startsWith('/system/') && path.endsWith('.service')) {
            expect(node.content).toMatch(/WantedBy=oem\.target/);
            if (path.includes('metadata')) expect(node.content).toMatch(/RequiredBy=coreos-metadata\.target/);
          }
        }
        if (gen === 'coreos') {
          const cc = tree.get('/cloud-config.yml')!.content!;
          expect(checkCloudConfig(cc)).toEqual([]);
          const doc = parseYaml(cc) as { coreos: { units: { name: string; command?: string }[]; oem: { id: string } } };
          expect(doc.coreos.oem.id).toBe(b.oemId);
          expect(doc.coreos.units.find((u) => u.name === 'oem.target')?.command).toBe('start');
          expect(tree.get('/run')).toMatchObject({ mode: 0o755 });
          expect(tree.get('/run')!.content).toContain('systemctl enable --runtime /usr/share/oem/system/*');
          expect(tree.has('/base/base.ign')).toBe(false);
        } else {
          const ign = tree.get('/base/base.ign')!.content!;
          expect(checkIgnition(ign)).toEqual([]);
          const doc = JSON.parse(ign) as { ignition: { version: string }; systemd: { units: { name: string; enabled?: boolean }[] } };
          expect(doc.ignition.version).toBe('3.3.0');
          expect(doc.systemd.units.find((u) => u.name === 'oem.target')?.enabled).toBe(true);
          expect(tree.has('/cloud-config.yml')).toBe(false);
        }
        // The keys for core on ROOT, as inject-key writes them.
        const root = await readTree(img, 9, 'ext4');
        expect(root.get('/home/core/.ssh/authorized_keys.d/oem')).toMatchObject({ mode: 0o600, uid: 1000, gid: 1000 });
        await rm(img);
      }
    });

    it('leaves USR-A, USR-B, the ESP, the other partitions, the attributes and the disk GUID byte-identical', async () => {
      const b = result.builds.find((x) => x.provider === 'ec2')!;
      const img = await raw(b.image);
      for (const p of [1, 2, 3, 4, 7]) {
        const { offset, size } = await part(img, p);
        expect((await execa('cmp', ['-i', `${offset}:${offset}`, '-n', String(size), baseRaw, img], { reject: false })).exitCode).toBe(0);
      }
      // Both GPT copies (headers and entries) too.
      expect((await execa('cmp', ['-n', String(34 * 512), baseRaw, img], { reject: false })).exitCode).toBe(0);
      const sz = (await stat(img)).size;
      const tail = 33 * 512;
      expect((await execa('cmp', ['-i', `${sz - tail}:${sz - tail}`, baseRaw, img], { reject: false })).exitCode).toBe(0);
      const { json } = await oemJson<InspectReport>(['inspect', img]);
      expect(json.diskGuid).toBe('00000000-0000-0000-0000-000000000001');
      expect(json.partitions.find((p) => p.number === 3)!.attributes).toBe('0x0101000000000000');
      await rm(img);
    });
  });
}
