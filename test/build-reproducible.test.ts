/** SOURCE_DATE_EPOCH: builds made twice at once, with separate caches, are byte-identical. */
import { execa } from 'execa';
import { copyFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { oem } from './helpers/cli.js';
import { fsck, readTree } from './helpers/image-read.js';
import { agent, fixtures, key, next, raw, server, sha512, useBuildEnv, work } from './helpers/build-env.js';

useBuildEnv();

describe('SOURCE_DATE_EPOCH', () => {
  const ALL_FORMATS = ['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'gce', 'vagrant-libvirt', 'vagrant-virtualbox', 'ova'].flatMap((f) => ['--format', f]);

  /**
   * Builds the same thing twice at the same time, each with its own cache (so neither reuses the
   * other's decoded base or compressed pieces) and its own output, on a machine kept busy by the two;
   * every file of the two outputs must be byte-identical. Returns the first output directory.
   */
  async function buildTwiceAtOnce(distro: 'flatcar' | 'coreos', provider: string, extra: string[]): Promise<string> {
    const tag = next();
    const outs = [join(work, `rep-${tag}-a`), join(work, `rep-${tag}-b`)];
    const build = (out: string, cache: string) =>
      oem(['build', '--provider', provider, ...ALL_FORMATS, ...extra, '--distro', distro, '--base-url', `${server.url}/${distro}/{channel}/{board}`, '--key', fixtures.key.publicKeyPath, '--cache-dir', cache, '--output-dir', out, '--agent', agent], {
        env: { OEM_TMPDIR: work, SOURCE_DATE_EPOCH: '1700000000' },
      });
    const runs = await Promise.all(outs.map((out) => build(out, `${out}-cache`)));
    for (const r of runs) expect(r.exitCode, r.stderr).toBe(0);
    // And once more from the first one's cache, warm: every compressed piece comes from the piece cache.
    const warm = join(work, `rep-${tag}-warm`);
    const again = await build(warm, `${outs[0]!}-cache`);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/ 0\.0 MiB compressed now, (\d+) of \1 pieces from the piece cache/);
    const files = (await readdir(join(outs[0]!, provider))).sort();
    expect(files).toEqual((await readdir(join(outs[1]!, provider))).sort());
    expect(files).toEqual((await readdir(join(warm, provider))).sort());
    expect(files.filter((f) => !/\.(DIGESTS|json|txt)$/.test(f))).toHaveLength(9);
    for (const f of files) {
      const want = await sha512(join(outs[0]!, provider, f));
      expect(await sha512(join(outs[1]!, provider, f)), f).toBe(want);
      expect(await sha512(join(warm, provider, f)), `${f}, warm`).toBe(want);
    }
    return outs[0]!;
  }

  it('makes rootless builds of an ext4-OEM (CoreOS-style) image reproducible in every format, zstd-compressed, two built at once with separate caches', async () => {
    // zstd -T0 here, lbzip2 and the release's own blocks in the Flatcar-style test below.
    await buildTwiceAtOnce('coreos', 'cloudstack', ['--backend', 'rootless', '--compress', 'zst']);
  });

  it('makes default builds of a btrfs-OEM (Flatcar-style) image reproducible in every format, with keys, two built at once with separate caches; the filesystems stay valid', async () => {
    const out = await buildTwiceAtOnce('flatcar', 'azure', ['--ssh-key', key]);
    const disk = await raw(join(out, 'azure', 'flatcar_production_azure_image.bin.bz2'));
    await fsck(disk, 6, 'btrfs');
    await fsck(disk, 9, 'ext4');
    const tree = await readTree(disk, 6, 'btrfs');
    expect(tree.get('/grub.cfg')?.content).toContain('oem_id="azure"');
  });

  it('gives an output the same bytes whether its run makes it alone or with others (a run of one output shares no prefix)', async () => {
    const tag = next();
    const cache = join(work, `rep-${tag}-cache`);
    const build = async (out: string, formats: string[]) => {
      const r = await oem(['build', '--provider', 'azure', ...formats.flatMap((f) => ['--format', f]), '--ssh-key', key, '--distro', 'flatcar', '--base-url', `${server.url}/flatcar/{channel}/{board}`, '--key', fixtures.key.publicKeyPath, '--cache-dir', cache, '--output-dir', out, '--agent', agent], {
        env: { OEM_TMPDIR: work, SOURCE_DATE_EPOCH: '1700000000' },
      });
      expect(r.exitCode, r.stderr).toBe(0);
      return (f: string) => sha512(join(out, 'azure', f));
    };
    const alone = await build(join(work, `rep-${tag}-raw`), ['raw']);
    const qcow2 = await build(join(work, `rep-${tag}-qcow2`), ['qcow2']);
    const together = await build(join(work, `rep-${tag}-all`), ['raw', 'qcow2', 'vhd']);
    for (const [f, one] of [['flatcar_production_azure_image.bin.bz2', alone], ['flatcar_production_azure_image.qcow2.bz2', qcow2]] as const) {
      expect(await one(f), f).toBe(await together(f));
    }
  });

  it.runIf(process.getuid?.() === 0)('makes Flatcar-style builds reproducible without root too [root: runs them as nobody]', async () => {
    // The rootless backend, mkfs.btrfs in user and mount namespaces; two at once, separate caches.
    const { BIN } = await import('./helpers/cli.js');
    const shared = await mkdtemp(join(tmpdir(), 'oem-nobody-'));
    try {
      await execa('chmod', ['0777', shared]);
      for (const f of [fixtures.key.publicKeyPath, agent, key]) await copyFile(f, join(shared, f.split('/').pop()!));
      await execa('chmod', ['-R', 'a+rX', shared]);
      const digests = await Promise.all(
        ['x', 'y'].map(async (side) => {
          const out = join(shared, side);
          const args = ['build', '--provider', 'azure', '--format', 'raw', '--compress', 'none', '--ssh-key', join(shared, key.split('/').pop()!), '--distro', 'flatcar', '--base-url', `${server.url}/flatcar/{channel}/{board}`, '--key', join(shared, fixtures.key.publicKeyPath.split('/').pop()!), '--cache-dir', join(shared, `cache-${side}`), '--output-dir', out, '--agent', join(shared, agent.split('/').pop()!)];
          const r = await execa('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, BIN, ...args], { reject: false, env: { HOME: shared, SOURCE_DATE_EPOCH: '1700000000', OEM_TMPDIR: shared, TMPDIR: shared } });
          expect(r.exitCode, String(r.stderr)).toBe(0);
          expect(String(r.stdout)).toContain('rootless backend');
          return sha512(join(out, 'azure', 'flatcar_production_azure_image.bin'));
        }),
      );
      expect(digests[1]).toBe(digests[0]);
    } finally {
      await rm(shared, { recursive: true, force: true });
    }
  });
});
