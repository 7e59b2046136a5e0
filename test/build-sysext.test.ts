/**
 * oem build on Flatcar releases whose provider content is a system extension (3760 and later),
 * from a mirror on 127.0.0.1 that publishes oem-<id>.raw beside the image, signed like it:
 * Flatcar's own extension for a platform it publishes, the provider's own extension otherwise,
 * the user's extensions and Ignition config, and the bad inputs. Results are read back with
 * btrfs restore, debugfs, unsquashfs and (as root) systemd-sysext itself.
 */
import { execa } from 'execa';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { compressBzip2, publishRelease, type TestKey } from '../scripts/lib/mirror.js';
import { startMirrorServer, type MirrorServer } from '../scripts/lib/mirror-server.js';
import { buildTestImage } from '../scripts/lib/test-image.js';
import type { BuildResult } from '../src/build.js';
import type { InspectReport } from '../src/image/inspect.js';
import type { SysextFormat } from '../src/sysext/make.js';
import { testExtension } from './helpers/sysext.js';
import { expectCleanError, oem, oemJson } from './helpers/cli.js';
import { isRoot, readExtTree, restoreBtrfs } from './helpers/image-read.js';

const fixtures = inject('fixtures');
// Flatcar 4459: extensions (squashfs), OEM still 128 MiB (test/inspect-sysext.test.ts has the 1 GiB one of 4593).
const VERSION = '4459.2.0';
let work: string;
let server: MirrorServer;
let mirrorDir: string;
let versionDir: string;
let agent: string;
let n = 0;

const extension = (name: string, release: string, format: SysextFormat = 'squashfs') => testExtension(work, name, release, format);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-build-sysext-'));
  agent = join(work, 'oem-agent');
  await copyFile('/bin/true', agent);
  const img = await buildTestImage({ path: join(work, 'flatcar_production_image.bin'), generation: 'flatcar-sysext', version: VERSION });
  const bz2 = join(work, 'flatcar_production_image.bin.bz2');
  await compressBzip2(img.path, bz2);
  mirrorDir = join(work, 'mirror');
  const oemRelease = (id: string) => `ID=flatcar\nVERSION_ID=${VERSION}\nARCHITECTURE=x86-64\n# ${id}\n`;
  const pub = await publishRelease({
    mirrorDir,
    distro: 'flatcar',
    channel: 'stable',
    board: 'amd64-usr',
    version: VERSION,
    imageBz2: bz2,
    armoredPrivateKey: (fixtures.key as TestKey).armoredPrivate,
    current: true,
    oemSysexts: { azure: await extension('oem-azure', oemRelease('azure')), openstack: await extension('oem-openstack', oemRelease('openstack')), stackit: await extension('oem-stackit', oemRelease('stackit')) },
  });
  versionDir = pub.dir;
  server = await startMirrorServer(mirrorDir);
}, 300_000);

afterAll(async () => {
  await server?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

function buildArgs(provider: string, out: string, ...extra: string[]): string[] {
  return [
    'build', '--provider', provider, '--distro', 'flatcar', '--base-url', `${server.url}/{channel}/{board}`, '--key', fixtures.key.publicKeyPath,
    '--cache-dir', join(work, 'cache'), '--output-dir', out, '--format', 'raw', '--compress', 'none', '--agent', agent, ...extra,
  ];
}

async function built(provider: string, ...extra: string[]): Promise<{ image: string; json: BuildResult; stderr: string }> {
  const out = join(work, `out-${++n}`);
  const { result, json } = await oemJson<BuildResult>(buildArgs(provider, out, ...extra));
  expect(result.exitCode, result.stderr).toBe(0);
  return { image: join(out, provider, `flatcar_production_${provider}_image.bin`), json, stderr: result.stderr };
}

async function oemFiles(image: string): Promise<{ root: string; release: () => Promise<void> }> {
  return restoreBtrfs(image, 6);
}

describe('oem build on the extension era', () => {
  it('a platform Flatcar publishes: its verified extension, the active marker, oem-release and Flatcar\'s grub.cfg, nothing else', { timeout: 300_000 }, async () => {
    const { image, json, stderr } = await built('azure');
    expect(json.generation).toBe('flatcar-sysext');
    expect(stderr).toMatch(/verified oem-azure\.raw: good signature by subkey/);
    const o = await oemFiles(image);
    try {
      const all = (await readdir(o.root, { recursive: true })).sort();
      expect(all).toEqual(['grub.cfg', 'oem-release', 'sysext', 'sysext/active-oem-azure', `sysext/oem-azure-${VERSION}.raw`]);
      expect((await readFile(join(o.root, `sysext/oem-azure-${VERSION}.raw`))).equals(await readFile(join(versionDir, 'oem-azure.raw')))).toBe(true);
      expect(await readFile(join(o.root, 'sysext/active-oem-azure'), 'utf8')).toBe('');
      expect(await readFile(join(o.root, 'oem-release'), 'utf8')).toMatch(new RegExp(`^ID=azure\nVERSION_ID=${VERSION.replace(/\./g, '\\.')}\nNAME="Microsoft Azure"\n`));
      expect(await readFile(join(o.root, 'grub.cfg'), 'utf8')).toBe(await readFile(new URL('../templates/azure/flatcar/grub.cfg', import.meta.url), 'utf8'));
    } finally {
      await o.release();
    }
    // inspect agrees: Flatcar's extension, merging, marked active, no warning.
    const { json: report } = await oemJson<InspectReport>(['inspect', image]);
    expect(report.activeOem).toEqual(['azure']);
    expect(report.extensions).toEqual([expect.objectContaining({ partition: 'oem', name: 'oem-azure', merges: true })]);
    expect(report.warnings).toEqual([]);
  });

  it('any other provider: its own extension with the agent, units and config, linked from /etc/extensions, no marker', { timeout: 300_000 }, async () => {
    const config = join(work, 'config.yml');
    await writeFile(config, 'version: 1\nfiles:\n  - path: /etc/motd\n    content: "hello\\n"\n');
    // Under a umask that closes new directories: the extension's must still be 0755 (systemd-sysext's
    // overlay takes a directory's mode from the topmost layer, so a 0700 usr/ would close /usr).
    const umask = process.umask(0o077);
    const { image, stderr } = await built('pxe', '--config', config).finally(() => process.umask(umask));
    expect(stderr).toMatch(/pxe: the provider's own extension pxe\.raw \(squashfs; \d+ units, the agent, the config\), linked from \/etc\/extensions, no active-oem marker/);
    const o = await oemFiles(image);
    try {
      const all = (await readdir(o.root, { recursive: true })).sort();
      expect(all).toEqual(['base', 'base/base.ign', 'grub.cfg', 'oem-release', 'pxe.raw']);
      expect(await readFile(join(o.root, 'grub.cfg'), 'utf8')).toMatch(/^set oem_id="metal"$/m);
      expect(await readFile(join(o.root, 'oem-release'), 'utf8')).toMatch(/^ID=pxe$/m);
      const ign = JSON.parse(await readFile(join(o.root, 'base/base.ign'), 'utf8'));
      expect(ign).toEqual({ ignition: { version: '3.3.0' }, storage: { links: [{ path: '/etc/extensions/pxe.raw', target: '/oem/pxe.raw', hard: false, overwrite: true }] } });
      // The extension, read by unsquashfs.
      const listing = (await execa('unsquashfs', ['-lln', join(o.root, 'pxe.raw')])).stdout;
      for (const p of ['usr/lib/pxe/oem-agent', 'usr/lib/pxe/config.yml', 'usr/lib/systemd/system/oem.target', 'usr/lib/systemd/system/oem-agent-provision.service', 'usr/lib/systemd/system/multi-user.target.d/10-pxe.conf', 'usr/lib/extension-release.d/extension-release.pxe']) {
        expect(listing, p).toMatch(new RegExp(`^-?[-rwx]+ 0/0 .* squashfs-root/${p.replace(/\./g, '\\.')}$`, 'm'));
      }
      const cat = async (p: string) => (await execa('unsquashfs', ['-cat', join(o.root, 'pxe.raw'), p])).stdout;
      expect(await cat('usr/lib/extension-release.d/extension-release.pxe')).toBe('ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\nEXTENSION_RELOAD_MANAGER=1');
      expect(await cat('usr/lib/systemd/system/oem-agent-provision.service')).toMatch(/^ExecStart=\/usr\/lib\/pxe\/oem-agent provision --config \/usr\/lib\/pxe\/config\.yml$/m);
      expect(await cat('usr/lib/systemd/system/multi-user.target.d/10-pxe.conf')).toMatch(/^Wants=oem\.target$/m);
      expect(await cat('usr/lib/pxe/config.yml')).toContain('/etc/motd');
      const dirs = listing.split('\n').filter((l) => l.startsWith('d'));
      expect(dirs.length).toBeGreaterThan(5);
      for (const d of dirs) expect(d).toMatch(/^drwxr-xr-x 0\/0 /);
      // The agent: --agent's executable, compressed for the build and unpacked into the extension, the same bytes, executable.
      expect(listing).toMatch(/^-rwxr-xr-x 0\/0 .* squashfs-root\/usr\/lib\/pxe\/oem-agent$/m);
      const inside = (await execa('unsquashfs', ['-cat', join(o.root, 'pxe.raw'), 'usr/lib/pxe/oem-agent'], { encoding: 'buffer' })).stdout;
      expect(Buffer.from(inside).equals(await readFile(agent))).toBe(true);
    } finally {
      await o.release();
    }
    const root = await readExtTree(image, 9);
    expect(root.get('/etc/extensions/pxe.raw')).toMatchObject({ type: 'symlink', target: '/oem/pxe.raw' });
    const { json: report } = await oemJson<InspectReport>(['inspect', image]);
    expect(report.activeOem).toEqual([]);
    expect(report.extensions).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ partition: 'oem', path: '/pxe.raw', name: 'pxe', merges: true, format: 'squashfs' }),
        expect.objectContaining({ partition: 'root', path: '/etc/extensions/pxe.raw', target: '/oem/pxe.raw', merges: true }),
      ]),
    );
    expect(report.warnings).toEqual([]);
  });

  it('compresses an agent once for every provider and later build: its blocks are kept in the cache', { timeout: 300_000 }, async () => {
    // An agent large enough for the store (4 MiB and more): the stand-in executable, then text.
    const big = join(work, 'big-agent');
    const lines = Array.from({ length: 120_000 }, (_, i) => `line ${i} of the stand-in agent ${(i * 2654435761) % 4294967296}\n`).join('');
    await writeFile(big, Buffer.concat([await readFile('/bin/true'), Buffer.from(lines)]));
    expect((await stat(big)).size).toBeGreaterThan(5 << 20);
    const cache = join(work, `cache-store-${n}`);
    const args = (out: string, ...providers: string[]) => [
      'build', ...providers.flatMap((p) => ['--provider', p]), '--distro', 'flatcar', '--base-url', `${server.url}/{channel}/{board}`, '--key', fixtures.key.publicKeyPath,
      '--cache-dir', cache, '--output-dir', out, '--format', 'raw', '--compress', 'none', '--agent', big,
    ];
    const fromCache = /the agent \(its compressed blocks from the cache\)/;
    const out1 = join(work, `out-${++n}`);
    const first = await oem(args(out1, 'pxe', 'ipxe'));
    expect(first.exitCode, first.stderr).toBe(0);
    // One provider compressed the agent, the other took its blocks.
    expect(first.stderr.split('\n').filter((l) => fromCache.test(l))).toHaveLength(1);
    const kept = await readdir(join(cache, 'bases'), { recursive: true });
    const entries = kept.filter((f) => /squashfs\/[0-9a-f]{64}\.gz128k$/.test(f));
    expect(entries).toHaveLength(1);
    // And which agent .xz those blocks are of, so a later build need not unpack it.
    expect(kept.filter((f) => /squashfs\/[0-9a-f]{64}\.source$/.test(f))).toHaveLength(1);
    const out2 = join(work, `out-${++n}`);
    const again = await oem(args(out2, 'pxe'));
    expect(again.exitCode, again.stderr).toBe(0);
    expect(again.stderr).toMatch(fromCache);
    // A damaged entry: the build unpacks and compresses the agent again.
    const entry = join(cache, 'bases', entries[0]!);
    const bytes = await readFile(entry);
    bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 1;
    await writeFile(entry, bytes);
    const out3 = join(work, `out-${++n}`);
    const third = await oem(args(out3, 'pxe'));
    expect(third.exitCode, third.stderr).toBe(0);
    expect(third.stderr).not.toMatch(fromCache);
    for (const [out, p] of [[out1, 'pxe'], [out1, 'ipxe'], [out2, 'pxe'], [out3, 'pxe']] as const) {
      const o = await oemFiles(join(out, p, `flatcar_production_${p}_image.bin`));
      try {
        const inside = (await execa('unsquashfs', ['-cat', join(o.root, `${p}.raw`), `usr/lib/${p}/oem-agent`], { encoding: 'buffer', maxBuffer: 64 << 20, stripFinalNewline: false })).stdout;
        expect(Buffer.from(inside).equals(await readFile(big)), `${out} ${p}`).toBe(true);
      } finally {
        await o.release();
      }
    }
  });

  it.runIf(isRoot)('[root] systemd-sysext merges the provider\'s own extension over the image\'s /usr and unmerges it cleanly', { timeout: 300_000 }, async () => {
    const { image } = await built('pxe', '--sysext-format', 'erofs');
    const o = await oemFiles(image);
    const tree = join(work, `merge-${++n}`);
    try {
      await mkdir(join(tree, 'usr/lib/systemd/system'), { recursive: true });
      await mkdir(join(tree, 'etc/extensions'), { recursive: true });
      await writeFile(join(tree, 'usr/lib/os-release'), `ID=flatcar\nID_LIKE=coreos\nVERSION_ID=${VERSION}\nSYSEXT_LEVEL=1.0\n`);
      const raws = (await readdir(o.root)).filter((f) => f.endsWith('.raw'));
      expect(raws).toHaveLength(1);
      await copyFile(join(o.root, raws[0]!), join(tree, 'etc/extensions', raws[0]!));
      const script = 'set -e; mount -t tmpfs tmpfs /run; systemd-sysext --root="$1" merge >/dev/null; ls "$1/usr/lib/systemd/system"; systemd-sysext --root="$1" unmerge >/dev/null; ls "$1/usr/lib/systemd/system" | wc -l';
      const r = await execa('unshare', ['-m', '--propagation', 'shared', 'sh', '-c', script, 'sh', tree]);
      const lines = r.stdout.trim().split('\n');
      expect(Number(lines.pop())).toBe(0);
      expect(lines).toEqual(expect.arrayContaining(['oem.target', 'oem-agent-provision.service', 'multi-user.target.d']));
      expect((await readFile('/proc/self/mounts', 'utf8')).includes(tree)).toBe(false);
    } finally {
      await o.release();
    }
  });

  it('adds the user\'s extension and Ignition config, checked first', { timeout: 300_000 }, async () => {
    const tools = await extension('tools', 'ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\n', 'erofs');
    const ign = join(work, 'config.ign');
    await writeFile(ign, JSON.stringify({ ignition: { version: '3.3.0' }, passwd: { users: [{ name: 'core', sshAuthorizedKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHv8 test'] }] } }));
    const { image } = await built('azure', '--sysext', tools, '--ignition', ign);
    const o = await oemFiles(image);
    try {
      const all = (await readdir(o.root, { recursive: true })).sort();
      expect(all).toEqual(['base', 'base/base.ign', 'config.ign', 'grub.cfg', 'oem-release', 'sysext', 'sysext/active-oem-azure', `sysext/oem-azure-${VERSION}.raw`, 'tools.raw']);
      expect(await readFile(join(o.root, 'config.ign'), 'utf8')).toBe(await readFile(ign, 'utf8'));
      expect(JSON.parse(await readFile(join(o.root, 'base/base.ign'), 'utf8')).storage.links).toEqual([{ path: '/etc/extensions/tools.raw', target: '/oem/tools.raw', hard: false, overwrite: true }]);
      expect((await readFile(join(o.root, 'tools.raw'))).equals(await readFile(tools))).toBe(true);
    } finally {
      await o.release();
    }
    expect((await readExtTree(image, 9)).get('/etc/extensions/tools.raw')).toMatchObject({ type: 'symlink', target: '/oem/tools.raw' });
  });

  it('refuses bad input with one line, and writes nothing', { timeout: 300_000 }, async () => {
    const out = join(work, `bad-${++n}`);
    const cases: [string, string[], number, RegExp][] = [
      ['an extension for arm64', ['--sysext', await extension('armtool', 'ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=arm64\n')], 3, /^--sysext .*armtool\.raw would not be merged by systemd-sysext on this image: armtool is for the architecture arm64, the image is x86-64$/],
      ['an Ignition file that is not JSON', ['--ignition', await writeFile(join(work, 'bad.ign'), '{ nope').then(() => join(work, 'bad.ign'))], 2, /^--ignition .*bad\.ign is not JSON: /],
      ['Butane YAML', ['--ignition', await writeFile(join(work, 'c.bu'), 'variant: flatcar\nversion: 1.0.0\n').then(() => join(work, 'c.bu'))], 2, /is Butane YAML, not an Ignition config$/],
      ['an Ignition version this Ignition does not read', ['--ignition', await writeFile(join(work, 'old.ign'), '{"ignition":{"version":"2.2.0"}}').then(() => join(work, 'old.ign'))], 2, /ignition\.version "2\.2\.0" is not one Flatcar 4459\.2\.0's Ignition reads \(3\.0\.0, 3\.1\.0, 3\.2\.0, 3\.3\.0, 3\.4\.0\)$/],
    ];
    for (const [what, extra, code, message] of cases) {
      const r = await oem(buildArgs('azure', out, ...extra));
      expect(r.exitCode, `${what}: ${r.stderr}`).toBe(code);
      expect(expectCleanError(r), what).toMatch(message);
    }
    expect(await readdir(out).catch(() => [])).toEqual([]);
  });

  it('refuses a tampered extension (exit 4) and one from another release (exit 3)', { timeout: 300_000 }, async () => {
    // Another release's extension, signed properly: VERSION_ID tells.
    const other = await extension('oem-openstack', 'ID=flatcar\nVERSION_ID=4230.2.0\nARCHITECTURE=x86-64\n');
    const dir = join(work, `local-${++n}`);
    await mkdir(dir);
    await copyFile(join(versionDir, 'flatcar_production_image.bin.bz2'), join(dir, 'flatcar_production_image.bin.bz2'));
    await copyFile(join(versionDir, 'flatcar_production_image.bin.bz2.sig'), join(dir, 'flatcar_production_image.bin.bz2.sig'));
    await copyFile(other, join(dir, 'oem-openstack.raw'));
    const { signDetached } = await import('../scripts/lib/mirror.js');
    await writeFile(join(dir, 'oem-openstack.raw.sig'), await signDetached(join(dir, 'oem-openstack.raw'), (fixtures.key as TestKey).armoredPrivate));
    const out = join(work, `bad-${++n}`);
    const local = ['build', '--provider', 'openstack', '--image', join(dir, 'flatcar_production_image.bin.bz2'), '--key', fixtures.key.publicKeyPath, '--cache-dir', join(work, 'cache'), '--output-dir', out, '--format', 'raw', '--compress', 'none', '--no-agent'];
    const wrong = await oem(local);
    expect(wrong.exitCode, wrong.stderr).toBe(3);
    expect(expectCleanError(wrong)).toMatch(/^oem-openstack\.raw would not be merged by systemd-sysext on this image: oem-openstack is for version 4230\.2\.0, the image is 4459\.2\.0$/);
    // Another platform's extension under this name, signed: its SYSEXT_ID tells.
    const azureAsOpenstack = await extension('oem-openstack', `ID=flatcar\nVERSION_ID=${VERSION}\nARCHITECTURE=x86-64\nSYSEXT_ID=oem-azure\n`);
    await copyFile(azureAsOpenstack, join(dir, 'oem-openstack.raw'));
    await writeFile(join(dir, 'oem-openstack.raw.sig'), await signDetached(join(dir, 'oem-openstack.raw'), (fixtures.key as TestKey).armoredPrivate));
    const swapped = await oem(local);
    expect(swapped.exitCode, swapped.stderr).toBe(3);
    expect(expectCleanError(swapped)).toBe('oem-openstack.raw is the extension "oem-azure", not oem-openstack');
    // Tampered after signing.
    const bytes = await readFile(join(dir, 'oem-openstack.raw'));
    bytes[100] = bytes[100]! ^ 1;
    await writeFile(join(dir, 'oem-openstack.raw'), bytes);
    const tampered = await oem(local);
    expect(tampered.exitCode, tampered.stderr).toBe(4);
    expect(expectCleanError(tampered)).toMatch(/oem-openstack\.raw/);
    // No signature at all: only --insecure lets it through.
    await rm(join(dir, 'oem-openstack.raw.sig'));
    const unsigned = await oem(local);
    expect(unsigned.exitCode).toBe(4);
    expect(expectCleanError(unsigned)).toMatch(/oem-openstack\.raw has no signature to verify/);
    expect(await readdir(out).catch(() => [])).toEqual([]);
  });
});

describe('oem build on the extension era: more of what users give it', () => {
  it('makes the provider\'s own extension byte for byte again with SOURCE_DATE_EPOCH', { timeout: 300_000 }, async () => {
    const ext = async () => {
      const out = join(work, `repro-${++n}`);
      // The extension's bytes do not depend on how OEM is written: as root the quicker mount backend does.
      const r = await oem(buildArgs('pxe', out, '--sysext-format', 'erofs', ...(isRoot ? ['--backend', 'mount'] : [])), { env: { SOURCE_DATE_EPOCH: '1700000000' } });
      expect(r.exitCode, r.stderr).toBe(0);
      const o = await oemFiles(join(out, 'pxe', 'flatcar_production_pxe_image.bin'));
      try {
        return await readFile(join(o.root, 'pxe.raw'));
      } finally {
        await o.release();
      }
    };
    const [a, b] = [await ext(), await ext()];
    expect(a.equals(b)).toBe(true);
    expect(a.readUInt32LE(1024)).toBe(0xe0f5e1e2); // EROFS
  });

  it('takes the release\'s extension from --oem-sysext for a local image', { timeout: 300_000 }, async () => {
    const dir = join(work, `given-${++n}`);
    await mkdir(dir);
    for (const f of ['flatcar_production_image.bin.bz2', 'flatcar_production_image.bin.bz2.sig']) await copyFile(join(versionDir, f), join(dir, f));
    const given = join(work, `elsewhere-${++n}`);
    await mkdir(given);
    for (const f of ['oem-openstack.raw', 'oem-openstack.raw.sig']) await copyFile(join(versionDir, f), join(given, f));
    const out = join(work, `out-${++n}`);
    const args = ['build', '--provider', 'openstack', '--image', join(dir, 'flatcar_production_image.bin.bz2'), '--key', fixtures.key.publicKeyPath, '--cache-dir', join(work, 'cache'), '--output-dir', out, '--format', 'raw', '--compress', 'none', '--no-agent'];
    const missing = await oem(args);
    expect(missing.exitCode).toBe(2);
    expect(expectCleanError(missing)).toMatch(/^no oem-openstack\.raw next to .*: a local image of Flatcar 4459\.2\.0 needs its OEM extension for openstack$/);
    const r = await oem([...args, '--oem-sysext', join(given, 'oem-openstack.raw')]);
    expect(r.exitCode, r.stderr).toBe(0);
    const o = await oemFiles(join(out, 'openstack', 'flatcar_production_openstack_image.bin'));
    try {
      expect((await readFile(join(o.root, `sysext/oem-openstack-${VERSION}.raw`))).equals(await readFile(join(given, 'oem-openstack.raw')))).toBe(true);
      expect(await readFile(join(o.root, 'grub.cfg'), 'utf8')).toMatch(/^set oem_id="openstack"$/m);
    } finally {
      await o.release();
    }
  });

  it('a --templates provider needs an oem_id Ignition knows, named by ignition_platform', { timeout: 300_000 }, async () => {
    const tpl = join(work, `tpl-${++n}`);
    await mkdir(join(tpl, 'acme'), { recursive: true });
    const yml = (extra: string) => `id: acme\nname: "ACME Cloud"\noem_id: acme\nhome_url: "https://acme.example/"\nbug_report_url: "https://acme.example/bugs"\nagent_units: []\n${extra}`;
    await writeFile(join(tpl, 'acme', 'provider.yml'), yml(''));
    const out = join(work, `out-${++n}`);
    const refused = await oem(buildArgs('acme', out, '--templates', tpl));
    expect(refused.exitCode).toBe(2);
    expect(expectCleanError(refused)).toMatch(/^provider acme: oem_id acme is not a platform Flatcar's Ignition knows, so the image would not boot its config$/);
    await writeFile(join(tpl, 'acme', 'provider.yml'), yml('ignition_platform: openstack\n'));
    const { image } = await built('acme', '--templates', tpl);
    const o = await oemFiles(image);
    try {
      expect(await readFile(join(o.root, 'grub.cfg'), 'utf8')).toMatch(/^set oem_id="openstack"$/m);
      expect(await readFile(join(o.root, 'oem-release'), 'utf8')).toMatch(/^ID=acme$/m);
      expect((await readdir(o.root)).sort()).toEqual(['acme.raw', 'base', 'grub.cfg', 'oem-release']);
    } finally {
      await o.release();
    }
  });
});

describe('--ignition and the size check on a Flatcar image with plain OEM files', () => {
  let plain: MirrorServer;
  beforeAll(async () => {
    plain = await startMirrorServer(fixtures.mirror);
  });
  afterAll(async () => {
    await plain?.close();
  });
  const plainArgs = (provider: string, out: string, ...extra: string[]) => [
    'build', '--provider', provider, '--distro', 'flatcar', '--base-url', `${plain.url}/flatcar/{channel}/{board}`, '--key', fixtures.key.publicKeyPath,
    '--cache-dir', join(work, 'cache-plain'), '--output-dir', out, '--format', 'raw', '--compress', 'none', '--no-agent', ...extra,
  ];

  it('writes config.ign beside base/base.ign, and refuses content larger than the 128 MiB OEM', { timeout: 300_000 }, async () => {
    const ign = join(work, `plain-${++n}.ign`);
    await writeFile(ign, JSON.stringify({ ignition: { version: '3.3.0' } }));
    const out = join(work, `out-${++n}`);
    const r = await oem(plainArgs('qemu', out, '--ignition', ign));
    expect(r.exitCode, r.stderr).toBe(0);
    const o = await oemFiles(join(out, 'qemu', 'flatcar_production_qemu_image.bin'));
    try {
      expect(await readFile(join(o.root, 'config.ign'), 'utf8')).toBe(await readFile(ign, 'utf8'));
      expect((await readdir(o.root)).includes('base')).toBe(true);
    } finally {
      await o.release();
    }
    // A template file of 110 MiB: more than the partition holds; refused before anything is written.
    const tpl = join(work, `big-${++n}`);
    await mkdir(join(tpl, 'qemu', 'files'), { recursive: true });
    await execa('sh', ['-c', `head -c ${110 * 1024 * 1024} /dev/urandom > "${join(tpl, 'qemu', 'files', 'big.bin')}"`]);
    const bigOut = join(work, `out-${++n}`);
    const big = await oem(plainArgs('qemu', bigOut, '--templates', tpl));
    expect(big.exitCode).toBe(7);
    expect(expectCleanError(big)).toMatch(/^the OEM content \([\d.]+ MiB\) does not fit partition 6 \(OEM\) of 128\.0 MiB, which holds about [\d.]+ MiB of files: the largest are \/big\.bin 110\.0 MiB/);
    // The output directory the build made is removed with the rest.
    expect(await stat(bigOut).catch(() => null)).toBeNull();
    // --sysext needs the extension era.
    const notYet = await oem(plainArgs('qemu', bigOut, '--sysext', ign));
    expect(notYet.exitCode).toBe(2);
    expect(expectCleanError(notYet)).toMatch(/^--sysext and --oem-sysext are for Flatcar 3760 and later; flatcar 3510\.2\.8 keeps provider content as plain files$/);
  });
});

describe('the platforms that came with Flatcar\'s extensions', () => {
  it('STACKIT: Flatcar\'s oem-stackit with oem_id "openstack"; Hetzner: refused where the release has none, and on older images', { timeout: 300_000 }, async () => {
    const { image } = await built('stackit');
    const o = await oemFiles(image);
    try {
      expect((await readdir(o.root, { recursive: true })).sort()).toEqual(['grub.cfg', 'oem-release', 'sysext', 'sysext/active-oem-stackit', `sysext/oem-stackit-${VERSION}.raw`]);
      expect(await readFile(join(o.root, 'grub.cfg'), 'utf8')).toMatch(/^set oem_id="openstack"$/m);
      expect(await readFile(join(o.root, 'oem-release'), 'utf8')).toMatch(/^ID=stackit$/m);
    } finally {
      await o.release();
    }
    const out = join(work, `out-${++n}`);
    // Refused before anything is built, with a provider the release has.
    const none = await oem(buildArgs('stackit', out, '--provider', 'hetzner'));
    expect(none.exitCode).toBe(2);
    expect(expectCleanError(none)).toMatch(/^provider hetzner cannot be built from flatcar 4459\.2\.0: the release publishes no OEM extension for hetzner \(the image lists azure, digitalocean, gce, openstack, qemu, stackit in \/usr\/share\/flatcar\/oems\)$/);
    const plain = await startMirrorServer(fixtures.mirror);
    try {
      const older = await oem(['build', '--provider', 'hetzner', '--distro', 'flatcar', '--base-url', `${plain.url}/flatcar/{channel}/{board}`, '--key', fixtures.key.publicKeyPath, '--cache-dir', join(work, 'cache-plain'), '--output-dir', out, '--no-agent']);
      expect(older.exitCode).toBe(2);
      expect(expectCleanError(older)).toMatch(/^provider hetzner cannot be built from flatcar 3510\.2\.8: it is for flatcar-sysext images, this is a flatcar image$/);
    } finally {
      await plain.close();
    }
    expect(await readdir(out).catch(() => [])).toEqual([]);
  });
});
