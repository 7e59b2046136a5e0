/**
 * oem build: every provider on both generations from the local release mirror, checked with oem
 * inspect and independent tools. Builds use the mount backend when run as root (CI), else rootless.
 */
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { access, copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startMirrorServer, type MirrorServer } from '../scripts/lib/mirror-server.js';
import type { BuildResult } from '../src/build.js';
import type { InspectReport } from '../src/image/inspect.js';
import { checkCloudConfig, checkIgnition } from '../src/providers/validate.js';
import { expectCleanError, oem, oemJson } from './helpers/cli.js';
import { fsck, part, readTree } from './helpers/image-read.js';

const fixtures = inject('fixtures');
let work: string;
let server: MirrorServer;
let agent: string;
let key: string;
let n = 0;

const PROVIDERS = ['azure', 'cloudsigma', 'cloudstack', 'digitalocean', 'ec2', 'exoscale', 'gce', 'hyperv', 'ipxe', 'niftycloud', 'openstack', 'pxe', 'qemu', 'rackspace', 'rackspace-onmetal', 'vagrant', 'vmware'];
const exists = (p: string) => access(p).then(() => true, () => false);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-build-test-'));
  server = await startMirrorServer(fixtures.mirror);
  // A real executable stands in for the agent (the agent issue builds the real one).
  agent = join(work, 'oem-agent');
  await copyFile('/bin/true', agent);
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'builder@example', '-f', join(work, 'k')]);
  key = join(work, 'k.pub');
});
afterAll(async () => {
  await server.close();
  await rm(work, { recursive: true, force: true });
});

function mirrorArgs(distro: 'flatcar' | 'coreos'): string[] {
  return ['--distro', distro, '--base-url', `${server.url}/${distro}/{channel}/{board}`, '--key', fixtures.key.publicKeyPath, '--cache-dir', join(work, 'cache')];
}

async function raw(bz2: string): Promise<string> {
  const out = join(work, `raw-${n++}.bin`);
  await execa('sh', ['-c', `bzip2 -dc "${bz2}" > "${out}"`]);
  return out;
}

async function sha512(p: string): Promise<string> {
  return createHash('sha512').update(await readFile(p)).digest('hex');
}

for (const gen of ['coreos', 'flatcar'] as const) {
  describe(`oem build --all-providers, ${gen}-style release`, () => {
    let result: BuildResult;
    let out: string;
    let baseRaw: string;

    beforeAll(async () => {
      out = join(work, `out-${gen}`);
      const { result: r, json } = await oemJson<BuildResult>(['build', '--all-providers', '--format', 'raw', ...mirrorArgs(gen), '--output-dir', out, '--agent', agent, '--ssh-key', key], { env: { OEM_TMPDIR: work } });
      if (r.exitCode !== 0) throw new Error(`build failed: ${r.stderr}`);
      result = json;
      baseRaw = fixtures[gen].raw;
    }, 600_000);

    it('builds every provider, each in its own directory, and nothing else', async () => {
      expect(result.builds.map((b) => b.provider).sort()).toEqual(PROVIDERS);
      expect(result).toMatchObject({ distro: gen, version: fixtures[gen].version, generation: gen, base: { verified: true, insecure: false } });
      expect((await readdir(out)).sort()).toEqual(PROVIDERS);
      for (const p of PROVIDERS) {
        expect((await readdir(join(out, p))).sort()).toEqual([`${gen}_production_${p}_image.bin.bz2`, `${gen}_production_${p}_image.bin.bz2.DIGESTS`, 'manifest.json', 'version.txt']);
      }
    });

    it('writes manifest.json, version.txt and .DIGESTS that match the artifact', async () => {
      for (const b of result.builds) {
        const m = JSON.parse(await readFile(b.manifest, 'utf8'));
        const sha = await sha512(b.image);
        expect(m).toMatchObject({ provider: b.provider, distro: gen, version: fixtures[gen].version, agent: true, base: { sha512: await sha512(fixtures[gen].bz2), verified: true } });
        expect(m.artifacts).toEqual([{ name: `${gen}_production_${b.provider}_image.bin.bz2`, format: 'raw', compression: 'bz2', size: (await readFile(b.image)).length, sha512: sha }]);
        expect(await readFile(b.digests, 'utf8')).toContain(`# SHA512 HASH\n${sha}  ${gen}_production_${b.provider}_image.bin.bz2`);
        const P = gen === 'coreos' ? 'COREOS' : 'FLATCAR';
        const vt = await readFile(b.versionTxt, 'utf8');
        expect(vt).toContain(`${P}_VERSION=${fixtures[gen].version}\n`);
        expect(vt).toContain(`${P}_OEM_ID=${b.oemId}\n`);
        expect(vt).toContain(`${P}_OEM_PROVIDER=${b.provider}\n`);
        // bzip2 -t accepts it.
        await execa('bzip2', ['-t', b.image]);
      }
    });

    it('puts the provider content into OEM, checked by oem inspect and independent tools', async () => {
      for (const b of result.builds) {
        const { json: ins } = await oemJson<InspectReport>(['inspect', b.image]);
        expect(ins.oem?.oemId).toBe(b.oemId);
        expect(ins.oem?.oemRelease).toMatchObject({ ID: b.oemId, VERSION_ID: fixtures[gen].version });
        const img = await raw(b.image);
        const tree = await readTree(img, 6, gen === 'coreos' ? 'ext4' : 'btrfs');
        const grub = tree.get('/grub.cfg')!;
        expect(grub).toMatchObject({ type: 'file', mode: 0o644, uid: 0, gid: 0 });
        for (const line of grub.content!.trim().split('\n')) expect(line).toMatch(/^(#.*|set [a-z_]+="[^"]*")$/);
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
      const sz = (await readFile(img)).length;
      const tail = 33 * 512;
      expect((await execa('cmp', ['-i', `${sz - tail}:${sz - tail}`, baseRaw, img], { reject: false })).exitCode).toBe(0);
      const { json } = await oemJson<InspectReport>(['inspect', img]);
      expect(json.diskGuid).toBe('00000000-0000-0000-0000-000000000001');
      expect(json.partitions.find((p) => p.number === 3)!.attributes).toBe('0x0101000000000000');
      await rm(img);
    });
  });
}

describe('oem build options and failures', () => {
  it('lists providers, with --json', async () => {
    const { json } = await oemJson<{ id: string; oemId: string; aliases: string[] }[]>(['providers']);
    expect(json.map((p) => p.id)).toEqual(PROVIDERS);
    expect(json.find((p) => p.id === 'ec2')!.aliases).toEqual(['ami', 'aws']);
    expect(json.find((p) => p.id === 'gce')!.aliases).toEqual(['gcp']);
  });

  it('shows each step: plain oem: lines without a terminal, listr2 on one, nothing but the result on stdout with --json', async () => {
    // A cache of its own: the release is downloaded and the base decoded, as on a first run.
    const args = (tag: string) => ['build', '--provider', 'qemu', '--format', 'raw', '--format', 'qcow2', '--distro', 'flatcar', '--base-url', `${server.url}/flatcar/{channel}/{board}`, '--key', fixtures.key.publicKeyPath, '--cache-dir', join(work, `steps-cache-${tag}`), '--output-dir', join(work, `steps-${tag}`), '--no-agent'];
    const steps = [
      'oem: fetching the flatcar stable release',
      'oem: preparing the base image',
      'oem: qemu: writing the OEM partition',
      'oem: qemu: flatcar_production_qemu_image.bin.bz2',
      'oem: qemu: flatcar_production_qemu_image.qcow2.bz2',
    ];
    const plain = await oem(args('plain'));
    expect(plain.exitCode, plain.stderr).toBe(0);
    const lines = plain.stderr.split('\n');
    let at = -1;
    for (const step of steps) {
      const i = lines.indexOf(step);
      expect(i, `${step} in order in:\n${plain.stderr}`).toBeGreaterThan(at);
      at = i;
    }
    expect(plain.stderr).toMatch(/^oem: qemu: flatcar_production_qemu_image\.qcow2\.bz2 \(\d+ bytes, compressed with l?bzip2\)$/m);
    const json = await oemJson<BuildResult>(args('json'));
    expect(json.result.exitCode).toBe(0);
    expect(json.result.stdout.trim().startsWith('{')).toBe(true);
    for (const step of steps) expect(json.result.stderr.split('\n')).toContain(step);
    // On a terminal (a pty from script(1)); not under CI, which always gets plain lines.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'CI')) as Record<string, string>;
    const { BIN } = await import('./helpers/cli.js');
    const cmd = [process.execPath, BIN, ...args('tty')].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
    const tty = await execa('script', ['-qfec', `stty cols 200 rows 50; ${cmd}`, '/dev/null'], { env: { ...env, TERM: 'xterm', NO_COLOR: '1' }, extendEnv: false, reject: false, stdin: 'ignore' });
    expect(tty.exitCode, String(tty.stdout)).toBe(0);
    const screen = String(tty.stdout);
    // Step titles come and go with the renderer's frames; the task and the milestone lines stay.
    // eslint-disable-next-line no-control-regex
    expect(screen).toMatch(/✔(?:\x1b\[[0-9;]*m)* Building/);
    expect(screen).toMatch(/qemu: flatcar_production_qemu_image\.qcow2\.bz2 \(\d+ bytes/);
    expect(screen).not.toMatch(/^oem: /m);
  });

  it('builds from a local image by alias, with a forced generation and the user config', async () => {
    const out = join(work, `local-${n++}`);
    const cfg = join(work, 'config.yml');
    await writeFile(cfg, 'version: 1\nusers:\n  - name: ops\n');
    const { result, json } = await oemJson<BuildResult>(
      ['build', '--provider', 'aws', '--image', fixtures.flatcar.raw, '--insecure', '--generation', 'coreos', '--config', cfg, '--output-dir', out, '--agent', agent],
      { env: { OEM_TMPDIR: work } },
    );
    expect(result.exitCode).toBe(0);
    expect(json).toMatchObject({ generation: 'coreos', base: { verified: false, insecure: true } });
    expect(result.stderr).toMatch(/WARNING: --insecure/);
    const m = JSON.parse(await readFile(join(out, 'ec2', 'manifest.json'), 'utf8'));
    expect(m).toMatchObject({ provider: 'ec2', generation: 'coreos', config: true, base: { insecure: true, verified: false } });
    const img = await raw(json.builds[0]!.image);
    const tree = await readTree(img, 6, 'btrfs');
    expect(tree.get('/config.yml')!.content).toBe('version: 1\nusers:\n  - name: ops\n');
    expect(tree.has('/cloud-config.yml')).toBe(true);
  });

  it('a local image needs a verifiable signature or --insecure', async () => {
    const r = await oem(['build', '--provider', 'qemu', '--image', fixtures.flatcar.raw, '--output-dir', join(work, 'x'), '--agent', agent]);
    expect(r.exitCode).toBe(4);
    expect(expectCleanError(r)).toMatch(/has no signature to verify/);
    const dir = join(fixtures.mirror, 'flatcar', 'stable', 'amd64-usr', fixtures.flatcar.version);
    const ok = await oemJson<BuildResult>(
      ['build', '--provider', 'qemu', '--image', join(dir, 'flatcar_production_image.bin.bz2'), '--key', fixtures.key.publicKeyPath, '--output-dir', join(work, `signed-${n++}`), '--agent', agent],
      { env: { OEM_TMPDIR: work } },
    );
    expect(ok.result.exitCode).toBe(0);
    expect(ok.json.base).toMatchObject({ verified: true, insecure: false });
    expect(ok.json.version).toBe(fixtures.flatcar.version);
  });

  it('says the agent is missing rather than writing a placeholder; --no-agent builds without it', async () => {
    const r = await oem(['build', '--provider', 'qemu', ...mirrorArgs('flatcar'), '--output-dir', join(work, 'noagent'), '--agent', join(work, 'nope')]);
    expect(r.exitCode).toBe(2);
    expect(expectCleanError(r)).toMatch(/^the runtime agent for amd64-usr is missing: /);
    expect(r.stderr).toMatch(/hint: build it with `npm run build:agent`/);
    const out = join(work, `noagent-${n++}`);
    const ok = await oemJson<BuildResult>(['build', '--provider', 'qemu', ...mirrorArgs('flatcar'), '--output-dir', out, '--no-agent'], { env: { OEM_TMPDIR: work } });
    expect(ok.result.exitCode).toBe(0);
    const img = await raw(ok.json.builds[0]!.image);
    const tree = await readTree(img, 6, 'btrfs');
    expect(tree.has('/bin/oem-agent')).toBe(false);
    expect(tree.has('/bin/oem-agent.xz')).toBe(false);
    expect([...tree.keys()].filter((p) => p.includes('oem-agent-'))).toEqual([]);
    expect(tree.has('/system/oem.target')).toBe(true);
  });

  it('overlays a user template tree: a new provider and an overridden shared file', async () => {
    const t = join(work, `tpl-${n++}`);
    await mkdir(join(t, 'acme', 'files', 'etc'), { recursive: true });
    await mkdir(join(t, '_common', 'system'), { recursive: true });
    await writeFile(join(t, 'acme', 'provider.yml'), 'id: acme\nname: "ACME Cloud"\noem_id: acme\ngrub:\n  linux_append: "acme.debug=1"\nagent_units: [metadata]\n');
    await writeFile(join(t, 'acme', 'files', 'etc', 'acme.conf'), 'provider={{provider}} version={{version}} channel={{channel}} id={{oem_id}}\n');
    await writeFile(join(t, '_common', 'system', 'oem.target'), '[Unit]\nDescription=Custom {{name}} target\n\n[Install]\nWantedBy=multi-user.target\n');
    const providers = await oemJson<{ id: string }[]>(['providers', '--templates', t]);
    expect(providers.json.map((p) => p.id)).toContain('acme');
    const out = join(work, `acme-${n++}`);
    const { result, json } = await oemJson<BuildResult>(['build', '--provider', 'acme', '--templates', t, ...mirrorArgs('coreos'), '--output-dir', out, '--agent', agent], { env: { OEM_TMPDIR: work } });
    expect(result.exitCode).toBe(0);
    const tree = await readTree(await raw(json.builds[0]!.image), 6, 'ext4');
    expect(tree.get('/etc/acme.conf')!.content).toBe(`provider=acme version=${fixtures.coreos.version} channel=stable id=acme\n`);
    expect(tree.get('/system/oem.target')!.content).toContain('Description=Custom ACME Cloud target');
    expect(tree.get('/grub.cfg')!.content).toContain('set linux_append="acme.debug=1"');
    expect(tree.has('/system/oem-agent-metadata.service')).toBe(true);
    expect(tree.has('/system/oem-agent-userdata.service')).toBe(false);
  });

  it('refuses unknown template variables and units that do not validate, leaving no output', async () => {
    const t = join(work, `bad-${n++}`);
    await mkdir(join(t, 'qemu', 'files', 'system'), { recursive: true });
    await writeFile(join(t, 'qemu', 'files', 'motd'), 'hello {{user}}\n');
    const out = join(work, `bad-out-${n++}`);
    let r = await oem(['build', '--provider', 'qemu', '--templates', t, ...mirrorArgs('flatcar'), '--output-dir', out, '--agent', agent], { env: { OEM_TMPDIR: work } });
    expect(r.exitCode).toBe(2);
    expect(expectCleanError(r)).toMatch(/motd: unknown template variable \{\{user\}\} \(allowed: version, channel, provider, oem_id, name\)/);
    await rm(join(t, 'qemu', 'files', 'motd'));
    await writeFile(join(t, 'qemu', 'files', 'system', 'bad.service'), '[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\nBogusKey=1\n[Install]\nWantedBy=oem.target\n');
    r = await oem(['build', '--provider', 'qemu', '--templates', t, ...mirrorArgs('flatcar'), '--output-dir', out, '--agent', agent], { env: { OEM_TMPDIR: work } });
    expect(r.exitCode).toBe(2);
    expect(expectCleanError(r)).toMatch(/provider qemu: generated content does not validate: \/system\/bad\.service: line 5: unknown key BogusKey in section \[Service\]/);
    expect(await exists(join(out, 'qemu'))).toBe(false);
    expect((await readdir(out).catch(() => [])).filter((f) => !f.startsWith('.') || f.includes('oem-'))).toEqual([]);
  });

  it('refuses unknown providers and a bad --config', async () => {
    let r = await oem(['build', '--provider', 'nosuch', '--image', fixtures.flatcar.raw, '--insecure']);
    expect(r.exitCode).toBe(2);
    expect(expectCleanError(r)).toBe('unknown provider "nosuch"');
    const cfg = join(work, 'bad.yml');
    await writeFile(cfg, 'version: 2\n');
    r = await oem(['build', '--provider', 'qemu', '--image', fixtures.flatcar.raw, '--insecure', '--config', cfg, '--agent', agent]);
    expect(expectCleanError(r)).toMatch(/--config .*bad\.yml is not a valid provisioning config: error at \$\.version \(line 1, col \d+\): version must be 1/);
    expect(r.stderr).toMatch(/hint: oem validate .*bad\.yml lists every problem/);
  });
});

describe.runIf(process.getuid?.() === 0)('Ctrl-C during oem build [root]', () => {
  it('removes the partial outputs and the work directory, and releases mounts and loop devices', async () => {
    const { BIN } = await import('./helpers/cli.js');
    const { leftovers } = await import('./helpers/image-read.js');
    const out = join(work, `int-${n++}`);
    const child = execa(process.execPath, [BIN, 'build', '--provider', 'qemu', '--provider', 'ec2', ...mirrorArgs('coreos'), '--output-dir', out, '--agent', agent, '--backend', 'mount'], {
      reject: false,
      env: { OEM_TMPDIR: work, OEM_DEBUG_PAUSE_AFTER_MOUNT_MS: '20000' },
    });
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && (await leftovers(out)).length < 2) await new Promise((r) => setTimeout(r, 50));
    expect((await leftovers(out)).length).toBeGreaterThanOrEqual(2);
    child.kill('SIGINT');
    const r = await child;
    expect(r.exitCode).toBe(130);
    expect(await leftovers(out)).toEqual([]);
    expect(await leftovers(work)).toEqual([]);
    expect(await readdir(out)).toEqual([]);
  });
});

describe.runIf(process.getuid?.() === 0)('a full disk during oem build [root]', () => {
  for (const backend of ['mount', 'rootless'] as const) {
    it(`${backend} backend: a clear error, no artifact under a final name, nothing left mounted or behind`, async () => {
      const { leftovers } = await import('./helpers/image-read.js');
      // The output directory on a 12 MiB tmpfs: the working image's OEM (the 26 MB agent) cannot fit.
      const out = join(work, `full-${backend}-${n++}`);
      await mkdir(out);
      await execa('mount', ['-t', 'tmpfs', '-o', 'size=12m', 'oem-test-full', out]);
      try {
        const bigAgent = join(__dirname, '..', 'dist', 'agent', 'oem-agent-linux-x64.xz');
        const r = await oem(['build', '--provider', 'qemu', '--format', 'raw', ...mirrorArgs('flatcar'), '--output-dir', out, '--agent', bigAgent, '--backend', backend], { env: { OEM_TMPDIR: work } });
        const line = expectCleanError(r);
        expect(line).toMatch(/^no space left on the device (holding|of) /);
        expect(await readdir(out)).toEqual([]);
        // Nothing but the test's own tmpfs.
        expect((await leftovers(out)).filter((l) => !l.startsWith('oem-test-full '))).toEqual([]);
      } finally {
        await execa('umount', [out]);
      }
    });
  }
});

describe('the built agent in images', () => {
  const builtAgent = (arch: string) => join(__dirname, '..', 'dist', 'agent', `oem-agent-linux-${arch}.xz`);

  for (const board of ['amd64-usr', 'arm64-usr'] as const) {
    it(`${board}: embeds the agent built for the board, which unpacks to a standalone executable`, async () => {
      // A release of the test image for this board, in a private mirror.
      const { publishRelease } = await import('../scripts/lib/mirror.js');
      const m = join(work, `board-${board}-${n++}`);
      await publishRelease({ mirrorDir: m, distro: 'flatcar', channel: 'stable', board, version: fixtures.flatcar.version, imageBz2: fixtures.flatcar.bz2, armoredPrivateKey: fixtures.key.armoredPrivate, current: true });
      const srv = await startMirrorServer(m);
      try {
        const out = join(work, `board-out-${n++}`);
        const { result, json } = await oemJson<BuildResult>(
          ['build', '--provider', 'qemu', '--board', board, '--base-url', `${srv.url}/{channel}/{board}`, '--key', fixtures.key.publicKeyPath, '--cache-dir', join(work, 'cache'), '--output-dir', out],
          { env: { OEM_TMPDIR: work } },
        );
        expect(result.exitCode).toBe(0);
        const img = await raw(json.builds[0]!.image);
        const { offset } = await part(img, 6);
        const xzFile = join(work, `agent-${n++}.xz`);
        const tree = await readTree(img, 6, 'btrfs');
        expect(tree.has('/bin/oem-agent.xz')).toBe(true);
        // Read the embedded bytes back with btrfs restore and compare with the build output.
        const dir = await mkdtemp(join(work, 'restore-'));
        await execa('sh', ['-c', `dd if="${img}" of="${dir}/p.img" bs=1M iflag=skip_bytes,count_bytes skip=${offset} count=${128 * 1024 * 1024} status=none && mkdir "${dir}/r" && btrfs restore "${dir}/p.img" "${dir}/r"`]);
        await copyFile(join(dir, 'r', 'bin', 'oem-agent.xz'), xzFile);
        expect(await sha512(xzFile)).toBe(await sha512(builtAgent(board === 'amd64-usr' ? 'x64' : 'arm64')));
        const exe = join(work, `agent-${n++}`);
        await execa('sh', ['-c', `xz -dc "${xzFile}" > "${exe}" && chmod 0755 "${exe}"`]);
        const elf = await readFile(exe);
        expect(elf.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
        // e_machine: 0x3e x86-64, 0xb7 aarch64.
        expect(elf.readUInt16LE(18)).toBe(board === 'amd64-usr' ? 0x3e : 0xb7);
        if (board === 'amd64-usr') {
          const v = await execa(exe, ['version'], { env: {}, extendEnv: false });
          expect(v.stdout).toMatch(/^oem-agent \S+ \(node 22\.\d+\.\d+ x64\)$/);
        }
        const m2 = JSON.parse(await readFile(json.builds[0]!.manifest, 'utf8'));
        expect(m2.agent).toBe(true);
        expect(m2.board).toBe(board);
      } finally {
        await srv.close();
      }
    });
  }
});

describe('oem build artifacts: formats, compression, signatures', () => {
  it('builds each provider\'s default formats, readable by independent tools', async () => {
    const out = join(work, `formats-${n++}`);
    const { result } = await oemJson<BuildResult>(
      ['build', '--provider', 'ec2', '--provider', 'azure', '--provider', 'gce', '--provider', 'openstack', '--provider', 'vmware', '--provider', 'vagrant', ...mirrorArgs('flatcar'), '--output-dir', out, '--no-agent'],
      { env: { OEM_TMPDIR: work } },
    );
    expect(result.exitCode).toBe(0);
    const names = (p: string) => readdir(join(out, p)).then((l) => l.filter((f) => !/\.(DIGESTS|json|txt)$/.test(f)).sort());
    expect(await names('ec2')).toEqual(['flatcar_production_ec2_image.bin.bz2', 'flatcar_production_ec2_image.vmdk.bz2']);
    expect(await names('azure')).toEqual(['flatcar_production_azure_image.vhd.bz2']);
    expect(await names('gce')).toEqual(['flatcar_production_gce_image.tar.gz']);
    expect(await names('openstack')).toEqual(['flatcar_production_openstack_image.qcow2.bz2']);
    expect(await names('vmware')).toEqual(['flatcar_production_vmware_image.ova', 'flatcar_production_vmware_image.vmdk.bz2']);
    expect(await names('vagrant')).toEqual(['flatcar_production_vagrant_image.libvirt.box', 'flatcar_production_vagrant_image.virtualbox.box']);
    // Every disk format holds the same disk as the raw artifact.
    const ec2Raw = await raw(join(out, 'ec2', 'flatcar_production_ec2_image.bin.bz2'));
    for (const [p, f, fmt] of [['ec2', 'vmdk', 'vmdk'], ['azure', 'vhd', 'vpc'], ['openstack', 'qcow2', 'qcow2']] as const) {
      const disk = join(work, `disk-${n++}.${f}`);
      await execa('sh', ['-c', `bzip2 -dc "${join(out, p, `flatcar_production_${p}_image.${f}.bz2`)}" > "${disk}"`]);
      // A fixed VHD is raw data plus a footer: qemu-img only reads it as vpc when told to.
      const info = JSON.parse((await execa('qemu-img', ['info', '--output', 'json', ...(f === 'vhd' ? ['-f', 'vpc'] : []), disk])).stdout) as { format: string; 'virtual-size': number };
      expect(info.format).toBe(fmt);
      if (f === 'vhd') expect(info['virtual-size'] % (1024 * 1024)).toBe(0);
    }
    // ec2's disk is the provider's own; compare the layout and the OEM content through inspect of each raw.
    const ins = (await oemJson<InspectReport>(['inspect', ec2Raw])).json;
    expect(ins.oem?.oemId).toBe('ec2');
    const list = (await execa('tar', ['-tvzf', join(out, 'gce', 'flatcar_production_gce_image.tar.gz')])).stdout.trim().split('\n');
    expect(list).toHaveLength(1);
    expect(list[0]).toMatch(/ disk\.raw$/);
    const box = (await execa('tar', ['-tzf', join(out, 'vagrant', 'flatcar_production_vagrant_image.libvirt.box')])).stdout.split('\n').sort();
    expect(box).toEqual(['Vagrantfile', 'box.img', 'metadata.json']);
    const ova = (await execa('tar', ['-tf', join(out, 'vmware', 'flatcar_production_vmware_image.ova')])).stdout.split('\n');
    expect(ova[0]).toMatch(/\.ovf$/);
    const m = JSON.parse(await readFile(join(out, 'ec2', 'manifest.json'), 'utf8'));
    expect(m.artifacts.map((a: { format: string; compression: string }) => `${a.format}/${a.compression}`)).toEqual(['vmdk/bz2', 'raw/bz2']);
  });

  for (const [kind, tool] of [['gz', 'gzip'], ['xz', 'xz'], ['zst', 'zstd'], ['none', '']] as const) {
    it(`--compress ${kind}: the raw image decompresses with stock ${tool || 'nothing'} to the same disk as bz2`, async () => {
      const out = join(work, `c-${kind}-${n++}`);
      const r = await oemJson<BuildResult>(['build', '--provider', 'qemu', '--compress', kind, ...mirrorArgs('coreos'), '--output-dir', out, '--no-agent'], { env: { OEM_TMPDIR: work, SOURCE_DATE_EPOCH: '1700000000' } });
      expect(r.result.exitCode).toBe(0);
      const name = `coreos_production_qemu_image.bin${kind === 'none' ? '' : `.${kind}`}`;
      expect(r.json.builds[0]!.image).toBe(join(out, 'qemu', name));
      const disk = join(work, `d-${kind}-${n++}.bin`);
      if (kind === 'none') await copyFile(join(out, 'qemu', name), disk);
      else await execa('sh', ['-c', `${tool} -dc "${join(out, 'qemu', name)}" > "${disk}"`]);
      const ins = (await oemJson<InspectReport>(['inspect', disk])).json;
      expect(ins.oem?.oemId).toBe('qemu');
      const m = JSON.parse(await readFile(join(out, 'qemu', 'manifest.json'), 'utf8'));
      expect(m.createdAt).toBe('2023-11-14T22:13:20.000Z');
      expect(m.artifacts[0].compression).toBe(kind);
    });
  }

  it('the .bz2 made from the release\'s own blocks decodes with stock bzip2, lbzip2 and pbzip2 to exactly the built raw image', async () => {
    // Rootless with SOURCE_DATE_EPOCH is reproducible, so --compress none gives the very image the
    // .bz2 stands for. OEM and ROOT (--ssh-key) are both written; two providers in one run share the
    // output's first part.
    const env = { OEM_TMPDIR: work, SOURCE_DATE_EPOCH: '1700000000' };
    const common = ['build', '--provider', 'qemu', '--provider', 'gce', '--format', 'raw', '--backend', 'rootless', '--ssh-key', key, ...mirrorArgs('coreos'), '--agent', agent];
    const plain = join(work, `plain-${n++}`);
    expect((await oem([...common, '--compress', 'none', '--output-dir', plain], { env })).exitCode).toBe(0);
    const packed = join(work, `packed-${n++}`);
    const r = await oem([...common, '--output-dir', packed], { env });
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toMatch(/the release's bzip2 blocks for the rest/);
    for (const provider of ['qemu', 'gce']) {
      const want = await sha512(join(plain, provider, `coreos_production_${provider}_image.bin`));
      const bz2 = join(packed, provider, `coreos_production_${provider}_image.bin.bz2`);
      for (const tool of ['bzip2', 'lbzip2', 'pbzip2']) {
        const disk = join(work, `reuse-${tool}-${n++}.bin`);
        await execa('sh', ['-c', `${tool} -dc "${bz2}" > "${disk}"`]);
        expect(await sha512(disk), `${provider}: ${tool}`).toBe(want);
        await rm(disk);
      }
      // The DIGESTS and manifest describe the file as written.
      const digests = await readFile(join(packed, provider, `coreos_production_${provider}_image.bin.bz2.DIGESTS`), 'utf8');
      expect(digests).toContain(`${await sha512(bz2)}  coreos_production_${provider}_image.bin.bz2`);
    }
  });

  it('--sign-key: a detached .sig per artifact (gpg and oem verify accept it) and a clearsigned .DIGESTS.asc', async () => {
    const gnupg = await mkdtemp(join(work, 'gpg-'));
    const env = { GNUPGHOME: gnupg };
    await execa('gpg', ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--quick-gen-key', 'Builder <builder@example.org>', 'ed25519', 'sign', 'never'], { env });
    const secret = join(work, `secret-${n++}.asc`);
    await writeFile(secret, (await execa('gpg', ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--export-secret-keys', '--armor'], { env })).stdout);
    const pub = join(work, `public-${n++}.asc`);
    await writeFile(pub, (await execa('gpg', ['--batch', '--export', '--armor'], { env })).stdout);
    const out = join(work, `signed-${n++}`);
    // A release pipeline's SOURCE_DATE_EPOCH (its last commit) is older than its signing key: the
    // signatures carry the key's creation time instead, the one deterministic time the key can sign at.
    const r = await oemJson<BuildResult>(['build', '--provider', 'qemu', '--sign-key', secret, ...mirrorArgs('flatcar'), '--output-dir', out, '--no-agent'], { env: { OEM_TMPDIR: work, SOURCE_DATE_EPOCH: '1700000000' } });
    expect(r.result.exitCode, r.result.stderr).toBe(0);
    const img = r.json.builds[0]!.image;
    await execa('gpg', ['--batch', '--verify', `${img}.sig`, img], { env });
    await execa('gpg', ['--batch', '--verify', `${img}.DIGESTS.asc`], { env });
    const keyCreated = (await execa('gpg', ['--batch', '--with-colons', '--list-keys'], { env })).stdout.split('\n').find((l) => l.startsWith('pub:'))!.split(':')[5]!;
    expect(Number(keyCreated)).toBeGreaterThan(1700000000);
    for (const f of [`${img}.sig`, `${img}.DIGESTS.asc`]) {
      const packets = (await execa('gpg', ['--batch', '--list-packets', f], { env, reject: false })).stdout;
      expect(packets, f).toContain(`created ${keyCreated}`);
    }
    const checked = await oemJson<{ verified: boolean; digests: string; signedDigests: string }>(['verify', img, '--key', pub]);
    expect(checked.result.exitCode).toBe(0);
    expect(checked.json).toMatchObject({ verified: true, digests: `${img}.DIGESTS`, signedDigests: `${img}.DIGESTS.asc` });
    // A .DIGESTS.asc that gpg --clearsign made reads the same way.
    const asc = await readFile(`${img}.DIGESTS.asc`, 'utf8');
    await execa('gpg', ['--batch', '--yes', '--clearsign', '--output', `${img}.DIGESTS.asc`, `${img}.DIGESTS`], { env });
    expect((await oem(['verify', img, '--key', pub])).exitCode).toBe(0);
    // One changed digit in the signed text: refused, whatever the detached .sig says.
    const sha = (await sha512(img)).slice(0, 8);
    await writeFile(`${img}.DIGESTS.asc`, asc.replace(sha, `${sha.slice(0, 7)}${sha[7] === '0' ? '1' : '0'}`));
    const tampered = await oem(['verify', img, '--key', pub]);
    expect(tampered.exitCode).toBe(4);
    expect(expectCleanError(tampered)).toMatch(/DIGESTS\.asc: BAD signature/);
    // Well signed, but for other bytes: refused on the SHA512 line.
    const wrongDigests = join(work, `wrong-${n++}.DIGESTS`);
    await writeFile(wrongDigests, (await readFile(`${img}.DIGESTS`, 'utf8')).replace(sha, `${sha.slice(0, 7)}${sha[7] === '0' ? '1' : '0'}`));
    await execa('gpg', ['--batch', '--yes', '--clearsign', '--output', `${img}.DIGESTS.asc`, wrongDigests], { env });
    const mismatch = await oem(['verify', img, '--key', pub]);
    expect(mismatch.exitCode).toBe(4);
    expect(expectCleanError(mismatch)).toMatch(/SHA512 .* does not match .*DIGESTS\.asc/);
    // Signed by a key that is not trusted: refused, naming the key.
    const other = await mkdtemp(join(work, 'gpg-'));
    await execa('gpg', ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--quick-gen-key', 'Other <other@example.org>', 'ed25519', 'sign', 'never'], { env: { GNUPGHOME: other } });
    await execa('gpg', ['--batch', '--yes', '--clearsign', '--output', `${img}.DIGESTS.asc`, `${img}.DIGESTS`], { env: { GNUPGHOME: other } });
    const untrusted = await oem(['verify', img, '--key', pub]);
    expect(untrusted.exitCode).toBe(4);
    expect(expectCleanError(untrusted)).toMatch(/DIGESTS\.asc: signed by unknown key/);
    await writeFile(`${img}.DIGESTS.asc`, asc);
    const m = JSON.parse(await readFile(join(out, 'qemu', 'manifest.json'), 'utf8'));
    expect(m.signingKey.fingerprint).toMatch(/^[0-9A-F]{40}$/);
    // A public key is not a signing key: refused before anything is built.
    const bad = await oem(['build', '--provider', 'qemu', '--sign-key', pub, ...mirrorArgs('flatcar'), '--output-dir', join(work, `bad-${n++}`), '--no-agent']);
    expect(bad.exitCode).toBe(2);
    expect(expectCleanError(bad)).toMatch(/is a public key/);
  });
});

describe('SOURCE_DATE_EPOCH', () => {
  it('makes rootless builds of an ext4-OEM (CoreOS-style) image reproducible: same inputs, same artifacts', async () => {
    const outs = [join(work, `rep-a-${n++}`), join(work, `rep-b-${n++}`)];
    for (const out of outs) {
      const r = await oem(['build', '--provider', 'openstack', '--format', 'raw', '--format', 'qcow2', '--format', 'gce', '--backend', 'rootless', ...mirrorArgs('coreos'), '--output-dir', out, '--agent', agent], {
        env: { OEM_TMPDIR: work, SOURCE_DATE_EPOCH: '1700000000' },
      });
      expect(r.exitCode).toBe(0);
    }
    const files = (await readdir(join(outs[0]!, 'openstack'))).sort();
    expect(files).toEqual((await readdir(join(outs[1]!, 'openstack'))).sort());
    for (const f of files) expect(await sha512(join(outs[1]!, 'openstack', f)), f).toBe(await sha512(join(outs[0]!, 'openstack', f)));
  });

  it('makes default builds of a btrfs-OEM (Flatcar-style) image reproducible, with keys and every disk format; the filesystems stay valid', async () => {
    const outs = [join(work, `rep-f-${n++}`), join(work, `rep-g-${n++}`)];
    for (const out of outs) {
      const r = await oem(['build', '--provider', 'azure', '--format', 'raw', '--format', 'vhd', '--format', 'vhdx', '--ssh-key', key, ...mirrorArgs('flatcar'), '--output-dir', out, '--agent', agent], {
        env: { OEM_TMPDIR: work, SOURCE_DATE_EPOCH: '1700000000' },
      });
      expect(r.exitCode, r.stderr).toBe(0);
      await new Promise((ok) => setTimeout(ok, 1100)); // anything clock-dependent would differ
    }
    const files = (await readdir(join(outs[0]!, 'azure'))).sort();
    expect(files).toEqual((await readdir(join(outs[1]!, 'azure'))).sort());
    for (const f of files) expect(await sha512(join(outs[1]!, 'azure', f)), f).toBe(await sha512(join(outs[0]!, 'azure', f)));
    const disk = await raw(join(outs[0]!, 'azure', 'flatcar_production_azure_image.bin.bz2'));
    // Without root too (the rootless backend, mkfs.btrfs in user and mount namespaces).
    if (process.getuid?.() === 0) {
      const { BIN } = await import('./helpers/cli.js');
      const shared = await mkdtemp(join(tmpdir(), 'oem-nobody-'));
      try {
        await execa('chmod', ['0777', shared]);
        for (const f of [fixtures.key.publicKeyPath, agent, key]) await copyFile(f, join(shared, f.split('/').pop()!));
        await execa('chmod', ['-R', 'a+rX', shared]);
        const digests: string[] = [];
        for (const side of ['x', 'y']) {
          const out = join(shared, side);
          const args = ['build', '--provider', 'azure', '--format', 'raw', '--compress', 'none', '--ssh-key', join(shared, key.split('/').pop()!), '--distro', 'flatcar', '--base-url', `${server.url}/flatcar/{channel}/{board}`, '--key', join(shared, fixtures.key.publicKeyPath.split('/').pop()!), '--cache-dir', join(shared, 'cache'), '--output-dir', out, '--agent', join(shared, agent.split('/').pop()!)];
          const r = await execa('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, BIN, ...args], { reject: false, env: { HOME: shared, SOURCE_DATE_EPOCH: '1700000000', OEM_TMPDIR: shared, TMPDIR: shared } });
          expect(r.exitCode, String(r.stderr)).toBe(0);
          expect(String(r.stdout)).toContain('rootless backend');
          digests.push(await sha512(join(out, 'azure', 'flatcar_production_azure_image.bin')));
          await new Promise((ok) => setTimeout(ok, 1100));
        }
        expect(digests[1]).toBe(digests[0]);
      } finally {
        await rm(shared, { recursive: true, force: true });
      }
    }
    await fsck(disk, 6, 'btrfs');
    await fsck(disk, 9, 'ext4');
    const tree = await readTree(disk, 6, 'btrfs');
    expect(tree.get('/grub.cfg')?.content).toContain('oem_id="azure"');
  });
});
