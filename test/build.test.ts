/** oem build: options, local images, templates, failures, Ctrl-C, a full disk, the agent embedded per board. */
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { access, mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BuildResult } from '../src/build.js';
import { expectCleanError, oem, oemJson } from './helpers/cli.js';
import { part, readTree, restoreBtrfs } from './helpers/image-read.js';
import { startMirrorServer } from '../scripts/lib/mirror-server.js';
import { loadProviders } from '../src/providers/registry.js';
import { KNOWN_OEM_IDS, missingExtension, sysextMode, type SysextImage } from '../src/sysext/oem.js';
import { agent, fixtures, key, mirrorArgs, next, OTHER_ARCH, PROVIDERS, raw, server, sha512, SYSEXT_ONLY, useBuildEnv, work } from './helpers/build-env.js';

useBuildEnv();

const exists = (p: string) => access(p).then(() => true, () => false);

describe('oem build options and failures', () => {
  it('lists providers, with --json', async () => {
    const { json } = await oemJson<{ id: string; oemId: string; aliases: string[] }[]>(['providers']);
    expect(json.map((p) => p.id)).toEqual([...PROVIDERS, ...SYSEXT_ONLY, ...OTHER_ARCH].sort());
    expect(json.find((p) => p.id === 'ec2')!.aliases).toEqual(['ami', 'aws']);
    expect(json.find((p) => p.id === 'gce')!.aliases).toEqual(['gcp']);
  });

  it('lists every platform of Flatcar\'s image pipeline and of Afterburn, with its formats and what the agent does there', async () => {
    type Listed = { id: string; aliases: string[]; oemId: string; formats: string[]; diskSize?: number; architectures?: string[]; agent: { does: string[]; reads?: string; afterburnNames?: string } };
    const { json } = await oemJson<Listed[]>(['providers']);
    const find = (name: string) => json.find((p) => p.id === name || p.aliases.includes(name));
    // flatcar/scripts image_to_vm.sh platforms (with packet and rackspace, dropped in 2026) and Afterburn's.
    const flatcar = ['akamai', 'ami', 'azure', 'cloudsigma', 'cloudstack', 'digitalocean', 'exoscale', 'gce', 'hetzner', 'hyperv', 'kubevirt', 'nutanix', 'openstack', 'oraclecloud', 'parallels', 'proxmoxve', 'qemu', 'scaleway', 'stackit', 'vagrant', 'virtualbox', 'vmware', 'packet', 'rackspace'];
    const afterburn = ['akamai', 'aliyun', 'aws', 'azure', 'azurestack', 'cloudstack', 'digitalocean', 'exoscale', 'gcp', 'hetzner', 'ibmcloud', 'ibmcloud-classic', 'kubevirt', 'openstack', 'oraclecloud', 'packet', 'powervs', 'proxmoxve', 'scaleway', 'upcloud', 'vultr', 'vmware'];
    for (const name of [...flatcar, ...afterburn]) expect(find(name), name).toBeDefined();
    expect(find('ami')!.oemId).toBe('ec2');
    expect(find('stackit')!.oemId).toBe('openstack');
    expect(find('exoscale')).toMatchObject({ formats: ['qcow2'], diskSize: 10 * 1024 ** 3 });
    expect(find('hyperv')!.formats).toEqual(['vhd', 'vhdx']);
    expect(find('cloudstack')!.formats).toEqual(['raw', 'vhd']);
    expect(find('powervs')!.architectures).toEqual(['ppc64-le']);
    // The agent's reach: for every Afterburn platform whose image runs oem's agent, its Afterburn names.
    expect(find('azure')!.agent).toMatchObject({ does: ['attributes', 'ssh-keys', 'userdata', 'hostname', 'check-in'], afterburnNames: 'AFTERBURN_AZURE_*' });
    expect(find('packet')!.agent.does).toContain('check-in');
    expect(find('ec2')!.agent.afterburnNames).toBe('AFTERBURN_AWS_*');
    expect(find('akamai')!.agent.does).toEqual([]);
    const text = await oem(['providers']);
    expect(text.stdout).toMatch(/^exoscale +Exoscale\n +oem_id=exoscale; 3760\+: .*; formats: qcow2 \(10 GiB disk\)\n +agent: attributes, ssh-keys, userdata, hostname from /m);
  });

  it('refuses a provider whose agent units ask the agent for what it does not do on that platform', async () => {
    const t = join(work, `tpl-units-${next()}`);
    await mkdir(join(t, 'vmware'), { recursive: true });
    await writeFile(join(t, 'vmware', 'provider.yml'), 'id: vmware\nname: VMware\noem_id: vmware\nagent_units: [userdata, network, check-in]\n');
    await expect(loadProviders(t)).rejects.toThrow(/provider\.yml: the agent does not do network, check-in on vmware \(it does: userdata\)$/);
    await writeFile(join(t, 'vmware', 'provider.yml'), 'id: vmware\nname: VMware\noem_id: vmware\ndisk_size: 1000\n');
    await expect(loadProviders(t)).rejects.toThrow(/disk_size: the disk size 1000 is not a whole number of MiB/);
    await writeFile(join(t, 'vmware', 'provider.yml'), 'id: vmware\nname: VMware\noem_id: vmware\narchitectures: [sparc]\n');
    await expect(loadProviders(t)).rejects.toThrow(/unknown architecture "sparc" \(known: x86-64, arm64, ppc64-le\)/);
    await writeFile(join(t, 'vmware', 'provider.yml'), 'id: vmware\nname: VMware\noem_id: vmware\ndisk_layout: huge\n');
    await expect(loadProviders(t)).rejects.toThrow(/unknown disk_layout "huge" \(known: vm, azure, vagrant, from templates\/_common\/disk-layouts\.yml\)/);
    expect((await loadProviders()).find((p) => p.id === 'qemu')!.rootSectors).toBe(12943360);
  });

  it('refuses a provider of another architecture, and a disk size that is not whole MiB', async () => {
    const r = await oem(['build', '--provider', 'powervs', '--image', fixtures.flatcar.raw, '--insecure', '--output-dir', join(work, `arch-${next()}`), '--agent', agent]);
    expect(r.exitCode).toBe(2);
    expect(expectCleanError(r)).toMatch(/^provider powervs cannot be built from flatcar [\d.]+: it is for ppc64-le images, this is an x86-64 image$/);
    const d = await oem(['build', '--provider', 'qemu', '--disk-size', '10.5GB', '--image', fixtures.flatcar.raw, '--insecure', '--output-dir', join(work, `size-${next()}`), '--agent', agent]);
    expect(d.exitCode).toBe(2);
    expect(expectCleanError(d)).toBe('--disk-size: the disk size "10.5GB" is not a whole number of MiB (e.g. 10GiB, 8704MiB)');
  });

  it('shows each step: plain oem: lines without a terminal, listr2 on one, nothing but the result on stdout with --json', async () => {
    // A cache of its own: the release is downloaded and the base decoded, as on a first run.
    // qcow2 in the first run only: a converted format's line; the other two show the same steps for raw.
    const args = (tag: string) => ['build', '--provider', 'qemu', '--format', 'raw', ...(tag === 'plain' ? ['--format', 'qcow2'] : []), '--distro', 'flatcar', '--base-url', `${server.url}/flatcar/{channel}/{board}`, '--key', fixtures.key.publicKeyPath, '--cache-dir', join(work, `steps-cache-${tag}`), '--output-dir', join(work, `steps-${tag}`), '--no-agent'];
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
    // The qcow2's disk data from the release's own bzip2 blocks, as the raw image's (layout.ts).
    expect(plain.stderr).toMatch(/^oem: qemu: flatcar_production_qemu_image\.qcow2\.bz2 \(\d+ bytes, compressed with l?bzip2 for \d+\.\d MiB \(of \d+\.\d MiB of the disk not in the release's blocks, and the qcow2's tables; the rest from the piece cache\), the release's bzip2 blocks for the rest \(\d+ of \d+\)\)$/m);
    // stdout: every artifact, one per line, the provider's name on its first.
    expect(plain.stdout).toMatch(/^qemu {15}\/\S+\/qemu\/flatcar_production_qemu_image\.bin\.bz2\n {19}\/\S+\/qemu\/flatcar_production_qemu_image\.qcow2\.bz2$/m);
    const json = await oemJson<BuildResult>(args('json'));
    expect(json.result.exitCode).toBe(0);
    expect(json.result.stdout.trim().startsWith('{')).toBe(true);
    for (const step of steps.slice(0, -1)) expect(json.result.stderr.split('\n')).toContain(step);
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
    expect(screen).toMatch(/qemu: flatcar_production_qemu_image\.bin\.bz2/);
    expect(screen).not.toMatch(/^oem: /m);
  });

  it('builds from a local image by alias, with a forced generation and the user config', async () => {
    const out = join(work, `local-${next()}`);
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
    const r = await oem(['build', '--provider', 'qemu', '--format', 'raw', '--image', fixtures.flatcar.raw, '--output-dir', join(work, 'x'), '--agent', agent]);
    expect(r.exitCode).toBe(4);
    expect(expectCleanError(r)).toMatch(/has no signature to verify/);
    const dir = join(fixtures.mirror, 'flatcar', 'stable', 'amd64-usr', fixtures.flatcar.version);
    const ok = await oemJson<BuildResult>(
      ['build', '--provider', 'qemu', '--format', 'raw', '--image', join(dir, 'flatcar_production_image.bin.bz2'), '--key', fixtures.key.publicKeyPath, '--output-dir', join(work, `signed-${next()}`), '--agent', agent],
      { env: { OEM_TMPDIR: work } },
    );
    expect(ok.result.exitCode).toBe(0);
    expect(ok.json.base).toMatchObject({ verified: true, insecure: false });
    expect(ok.json.version).toBe(fixtures.flatcar.version);
  });

  it('says the agent is missing rather than writing a placeholder; --no-agent builds without it', async () => {
    const r = await oem(['build', '--provider', 'qemu', '--format', 'raw', ...mirrorArgs('flatcar'), '--output-dir', join(work, 'noagent'), '--agent', join(work, 'nope')]);
    expect(r.exitCode).toBe(2);
    expect(expectCleanError(r)).toMatch(/^the runtime agent for amd64-usr is missing: /);
    expect(r.stderr).toMatch(/hint: build it with `npm run build:agent`/);
    const out = join(work, `noagent-${next()}`);
    const ok = await oemJson<BuildResult>(['build', '--provider', 'qemu', '--format', 'raw', ...mirrorArgs('flatcar'), '--output-dir', out, '--no-agent'], { env: { OEM_TMPDIR: work } });
    expect(ok.result.exitCode).toBe(0);
    const img = await raw(ok.json.builds[0]!.image);
    const tree = await readTree(img, 6, 'btrfs');
    expect(tree.has('/bin/oem-agent')).toBe(false);
    expect(tree.has('/bin/oem-agent.xz')).toBe(false);
    expect([...tree.keys()].filter((p) => p.includes('oem-agent-'))).toEqual([]);
    expect(tree.has('/system/oem.target')).toBe(true);
  });

  it('overlays a user template tree: a new provider and an overridden shared file', async () => {
    const t = join(work, `tpl-${next()}`);
    await mkdir(join(t, 'acme', 'files', 'etc'), { recursive: true });
    await mkdir(join(t, '_common', 'system'), { recursive: true });
    // A platform of its own for the agent's units: refused, since the agent does not serve it.
    await writeFile(join(t, 'acme', 'provider.yml'), 'id: acme\nname: "ACME Cloud"\noem_id: acme\ngrub:\n  linux_append: "acme.debug=1"\nagent_units: [metadata]\n');
    const refused = await oem(['build', '--provider', 'acme', '--templates', t, ...mirrorArgs('coreos'), '--output-dir', join(work, `acme-${next()}`), '--agent', agent]);
    expect(refused.exitCode).toBe(2);
    expect(expectCleanError(refused)).toBe('provider acme: its units run the agent for "acme", a platform the agent does not serve');
    expect(refused.stderr).toMatch(/hint: set oem_id to one it serves \(akamai, aliyun, azure, .*\) or leave agent_units out of provider\.yml/);
    // A platform the agent serves (as Flatcar's STACKIT image uses openstack's).
    await writeFile(join(t, 'acme', 'provider.yml'), 'id: acme\nname: "ACME Cloud"\noem_id: openstack\ngrub:\n  linux_append: "acme.debug=1"\nagent_units: [metadata]\n');
    await writeFile(join(t, 'acme', 'files', 'etc', 'acme.conf'), 'provider={{provider}} version={{version}} channel={{channel}} id={{oem_id}}\n');
    await writeFile(join(t, '_common', 'system', 'oem.target'), '[Unit]\nDescription=Custom {{name}} target\n\n[Install]\nWantedBy=multi-user.target\n');
    const providers = await oemJson<{ id: string }[]>(['providers', '--templates', t]);
    expect(providers.json.map((p) => p.id)).toContain('acme');
    const out = join(work, `acme-${next()}`);
    const { result, json } = await oemJson<BuildResult>(['build', '--provider', 'acme', '--templates', t, ...mirrorArgs('coreos'), '--output-dir', out, '--agent', agent], { env: { OEM_TMPDIR: work } });
    expect(result.exitCode).toBe(0);
    const tree = await readTree(await raw(json.builds[0]!.image), 6, 'ext4');
    expect(tree.get('/etc/acme.conf')!.content).toBe(`provider=acme version=${fixtures.coreos.version} channel=stable id=openstack\n`);
    expect(tree.get('/system/oem-agent-metadata.service')!.content).toContain('oem-agent metadata --provider openstack');
    expect(tree.get('/system/oem.target')!.content).toContain('Description=Custom ACME Cloud target');
    expect(tree.get('/grub.cfg')!.content).toContain('set linux_append="acme.debug=1"');
    expect(tree.has('/system/oem-agent-metadata.service')).toBe(true);
    expect(tree.has('/system/oem-agent-userdata.service')).toBe(false);
  });

  it('refuses unknown template variables and units that do not validate, leaving no output', async () => {
    const t = join(work, `bad-${next()}`);
    await mkdir(join(t, 'qemu', 'files', 'system'), { recursive: true });
    await writeFile(join(t, 'qemu', 'files', 'motd'), 'hello {{user}}\n');
    const out = join(work, `bad-out-${next()}`);
    let r = await oem(['build', '--provider', 'qemu', '--format', 'raw', '--templates', t, ...mirrorArgs('flatcar'), '--output-dir', out, '--agent', agent], { env: { OEM_TMPDIR: work } });
    expect(r.exitCode).toBe(2);
    expect(expectCleanError(r)).toMatch(/motd: unknown template variable \{\{user\}\} \(allowed: version, channel, provider, oem_id, name\)/);
    await rm(join(t, 'qemu', 'files', 'motd'));
    await writeFile(join(t, 'qemu', 'files', 'system', 'bad.service'), '[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\nBogusKey=1\n[Install]\nWantedBy=oem.target\n');
    r = await oem(['build', '--provider', 'qemu', '--format', 'raw', '--templates', t, ...mirrorArgs('flatcar'), '--output-dir', out, '--agent', agent], { env: { OEM_TMPDIR: work } });
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
    r = await oem(['build', '--provider', 'qemu', '--format', 'raw', '--image', fixtures.flatcar.raw, '--insecure', '--config', cfg, '--agent', agent]);
    expect(expectCleanError(r)).toMatch(/--config .*bad\.yml is not a valid provisioning config: error at \$\.version \(line 1, col \d+\): version must be 1/);
    expect(r.stderr).toMatch(/hint: oem validate .*bad\.yml lists every problem/);
  });
});

describe.runIf(process.getuid?.() === 0)('Ctrl-C during oem build [root]', () => {
  it('removes the partial outputs and the work directory, and releases mounts and loop devices', async () => {
    const { BIN } = await import('./helpers/cli.js');
    const { leftovers } = await import('./helpers/image-read.js');
    const out = join(work, `int-${next()}`);
    const child = execa(process.execPath, [BIN, 'build', '--provider', 'qemu', '--format', 'raw', '--provider', 'ec2', ...mirrorArgs('coreos'), '--output-dir', out, '--agent', agent, '--backend', 'mount'], {
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
    // The output directory was made by the build: nothing of it is left.
    expect(await stat(out).catch(() => null)).toBeNull();
  });
});

describe('a local image and --release', () => {
  it('the version is the image\'s: another --release is refused, its own is taken', async () => {
    const args = (release: string) => ['build', '--provider', 'qemu', '--format', 'raw', '--compress', 'none', '--image', fixtures.flatcar.raw, '--insecure', '--no-agent', '--release', release, '--output-dir', join(work, `release-${next()}`)];
    const other = await oem(args('9999.1.2'));
    expect(other.exitCode).toBe(2);
    expect(expectCleanError(other)).toBe(`the image is flatcar ${fixtures.flatcar.version}, not --release 9999.1.2`);
    const same = await oem(args(fixtures.flatcar.version));
    expect(same.exitCode, same.stderr).toBe(0);
  });
});

describe('output directories that cannot be made', () => {
  it('under /proc (where mkdir answers ENOENT for a parent that exists): refused, no endless retry', async () => {
    const r = await oem(['build', '--provider', 'qemu', '--format', 'raw', '--image', fixtures.flatcar.raw, '--insecure', '--no-agent', '--output-dir', '/proc/oem-test-out']);
    expect(r.exitCode).toBe(2);
    expect(expectCleanError(r)).toBe('--output-dir /proc/oem-test-out: /proc: files cannot be made there (ENOENT)');
  });
});

describe('a ROOT file system without free inodes', () => {
  const backends = process.getuid?.() === 0 ? (['mount', 'rootless'] as const) : (['rootless'] as const);
  for (const backend of backends) {
    it(`${backend} backend: says so (not that a disk is full), exit 7`, async () => {
      const { part } = await import('./helpers/image-read.js');
      const img = join(work, `inodes-${next()}.bin`);
      await execa('cp', ['--sparse=always', fixtures.flatcar.raw, img]);
      const root = await part(img, 9);
      // ROOT made again with as few inodes as mke2fs allows, and those taken by empty directories.
      await execa('mke2fs', ['-q', '-F', '-t', 'ext4', '-N', '16', '-L', 'ROOT', '-E', `offset=${root.offset}`, img, `${root.size / 1024}k`]);
      const free = Number(/Free inodes:\s+(\d+)/.exec((await execa('dumpe2fs', ['-h', `${img}?offset=${root.offset}`], { reject: false })).stdout)?.[1] ?? NaN);
      const cmds = Array.from({ length: free }, (_, i) => `mkdir /fill${i}`).join('\n');
      await execa('debugfs', ['-w', '-f', '-', `${img}?offset=${root.offset}`], { input: cmds, reject: false });
      const r = await oem(['build', '--provider', 'qemu', '--format', 'raw', '--compress', 'none', '--image', img, '--insecure', '--no-agent', '--ssh-key', key, '--backend', backend, '--output-dir', join(work, `inodes-out-${next()}`)], { env: { OEM_TMPDIR: work } });
      expect(r.exitCode, r.stderr).toBe(7);
      expect(expectCleanError(r)).toMatch(/^partition 9 \(ROOT\) has no room for more files: the plan adds up to \d+ files and directories but only 0 inodes are free$/);
    });
  }
});

describe('Ctrl-C on a terminal during a first build', () => {
  it('the whole process group signalled while the release is decoded: exit 130, nothing left in the output or the cache', async () => {
    const { BIN } = await import('./helpers/cli.js');
    const out = join(work, `int-group-${next()}`);
    const cache = join(work, `int-group-cache-${next()}`);
    const args = mirrorArgs('flatcar').map((a) => (a === join(work, 'cache') ? cache : a));
    // In a process group of its own, as a shell runs it: the terminal's SIGINT reaches oem and the
    // lbzip2 processes decoding the release at once, and a decoder may be seen failing first.
    const child = execa('setsid', ['-w', process.execPath, BIN, 'build', '--provider', 'qemu', '--format', 'raw', ...args, '--output-dir', out, '--no-agent'], { reject: false });
    const deadline = Date.now() + 60_000;
    const decoding = async () => (await readdir(join(cache, 'bases')).catch(() => [] as string[])).some((f) => f.startsWith('.tmp-'));
    while (Date.now() < deadline && !(await decoding())) await new Promise((r) => setTimeout(r, 5));
    expect(await decoding()).toBe(true);
    // setsid, not a group leader itself, makes a new group and runs node in its place: the group is oem's pid.
    const pgid = child.pid!;
    const tools = (await execa('pgrep', ['-g', String(pgid)], { reject: false })).stdout.trim().split('\n').filter(Boolean).map(Number).filter((p) => p !== pgid);
    // The worst order: the decoders die first, and oem sees one of them fail before its own signal.
    for (const p of tools) process.kill(p, 'SIGINT');
    await new Promise((r) => setTimeout(r, 100));
    process.kill(-pgid, 'SIGINT');
    const r = await child;
    expect(r.exitCode, r.stderr).toBe(130);
    expect(r.stderr).not.toMatch(/oem: error:/);
    expect((await execa('find', [out], { reject: false })).stdout, r.stderr).toBe('');
    const tmp = (await execa('find', [cache, '-name', '*.tmp-*', '-o', '-name', '.tmp-*'])).stdout.trim();
    expect(tmp).toBe('');
  });
});

describe.runIf(process.getuid?.() === 0)('another copy of the release attached [root: a loop device]', () => {
  it('a rootless build keeps the OEM filesystem UUID although a device in the system carries it too', async () => {
    // Every copy of a release has the same OEM UUID; mkfs.btrfs refuses a UUID it sees on a device.
    const oemPart = await part(fixtures.flatcar.raw, 6);
    const loop = (await execa('losetup', ['-r', '-f', '--show', '-o', String(oemPart.offset), '--sizelimit', String(oemPart.size), fixtures.flatcar.raw])).stdout.trim();
    try {
      expect((await execa('blkid', ['-p', '-s', 'TYPE', '-o', 'value', loop])).stdout.trim()).toBe('btrfs');
      const out = join(work, `twin-${next()}`);
      const r = await oemJson<BuildResult>(['build', '--provider', 'qemu', '--format', 'raw', '--backend', 'rootless', ...mirrorArgs('flatcar'), '--output-dir', out, '--no-agent'], { env: { OEM_TMPDIR: work } });
      expect(r.result.exitCode, r.result.stderr).toBe(0);
      const img = await raw(r.json.builds[0]!.image);
      const uuid = async (file: string) => (await execa('blkid', ['-p', '-s', 'UUID', '-o', 'value', '-O', String(oemPart.offset), file])).stdout.trim();
      expect(await uuid(img)).toBe(await uuid(fixtures.flatcar.raw));
      expect((await readTree(img, 6, 'btrfs')).get('/grub.cfg')?.content).toContain('oem_id="qemu"');
    } finally {
      await execa('losetup', ['-d', loop]);
    }
  });
});

describe.runIf(process.getuid?.() === 0)('a full disk during oem build [root]', () => {
  for (const backend of ['mount', 'rootless'] as const) {
    it(`${backend} backend: a clear error, no artifact under a final name, nothing left mounted or behind`, async () => {
      const { leftovers } = await import('./helpers/image-read.js');
      // The output directory on a 12 MiB tmpfs: the working image's OEM (the 29 MB agent) cannot fit.
      const out = join(work, `full-${backend}-${next()}`);
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

  it('an executable --agent that cannot be compressed into the full output directory: noSpace, nothing left', async () => {
    const { leftovers } = await import('./helpers/image-read.js');
    const out = join(work, `full-agent-${next()}`);
    await mkdir(out);
    // 14 MB that xz cannot shrink, as an ELF file: the build compresses it into its work directory.
    const elf = join(work, `big-agent-${next()}`);
    await writeFile(elf, Buffer.concat([Buffer.from('\x7fELF', 'latin1'), randomBytes(14 * 1024 * 1024)]));
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=12m', 'oem-test-full', out]);
    try {
      const r = await oem(['build', '--provider', 'qemu', '--format', 'raw', ...mirrorArgs('flatcar'), '--output-dir', out, '--agent', elf], { env: { OEM_TMPDIR: work } });
      expect(r.exitCode).toBe(7);
      expect(expectCleanError(r)).toMatch(/^no space left on the device of .*\.oem-work-\d+ to compress the agent$/);
      expect(await readdir(out)).toEqual([]);
      expect((await leftovers(out)).filter((l) => !l.startsWith('oem-test-full '))).toEqual([]);
    } finally {
      await execa('umount', [out]);
      await rm(elf);
    }
  });
});

describe('the built agent in images', () => {
  const builtAgent = (arch: string) => join(__dirname, '..', 'dist', 'agent', `oem-agent-linux-${arch}.xz`);

  for (const board of ['amd64-usr', 'arm64-usr'] as const) {
    it(`${board}: embeds the agent built for the board, which unpacks to a standalone executable`, async () => {
      // A release of the test image for this board, in a private mirror.
      const { publishRelease, compressBzip2 } = await import('../scripts/lib/mirror.js');
      const m = join(work, `board-${board}-${next()}`);
      let bz2 = fixtures.flatcar.bz2;
      if (board !== 'amd64-usr') {
        // An image that says it is for this board (os-release): a release directory holds only such.
        const { buildTestImage } = await import('../scripts/lib/test-image.js');
        const img = await buildTestImage({ path: join(work, `board-${board}-${next()}.bin`), generation: 'flatcar', board, version: fixtures.flatcar.version });
        bz2 = `${img.path}.bz2`;
        await compressBzip2(img.path, bz2);
        await rm(img.path);
        // The same image as a local --image: its own board is taken; another --board is refused.
        const other = await oem(['build', '--provider', 'qemu', '--format', 'raw', '--image', bz2, '--insecure', '--board', 'amd64-usr', '--output-dir', join(work, `board-other-${next()}`)], { env: { OEM_TMPDIR: work } });
        expect(other.exitCode).toBe(2);
        expect(expectCleanError(other)).toBe(`the image is for ${board} (its os-release), not amd64-usr`);
        const own = await oemJson<BuildResult>(['build', '--provider', 'qemu', '--format', 'raw', '--compress', 'none', '--image', bz2, '--insecure', '--output-dir', join(work, `board-own-${next()}`)], { env: { OEM_TMPDIR: work } });
        expect(own.result.exitCode, own.result.stderr).toBe(0);
        expect(JSON.parse(await readFile(own.json.builds[0]!.manifest, 'utf8')).board).toBe(board);
        // A release directory of this board that holds an amd64 image: a bad image.
        const wrong = join(work, `board-wrong-${next()}`);
        await publishRelease({ mirrorDir: wrong, distro: 'flatcar', channel: 'stable', board, version: fixtures.flatcar.version, imageBz2: fixtures.flatcar.bz2, armoredPrivateKey: fixtures.key.armoredPrivate, current: true });
        const ws = await startMirrorServer(wrong);
        try {
          const r = await oem(['build', '--provider', 'qemu', '--format', 'raw', '--board', board, '--base-url', `${ws.url}/{channel}/{board}`, '--key', fixtures.key.publicKeyPath, '--cache-dir', join(work, `board-wrong-cache-${next()}`), '--output-dir', join(work, `board-wrong-out-${next()}`)], { env: { OEM_TMPDIR: work } });
          expect(r.exitCode).toBe(3);
          expect(expectCleanError(r)).toBe(`the image is for amd64-usr (its os-release), not ${board}`);
        } finally {
          await ws.close();
        }
      }
      await publishRelease({ mirrorDir: m, distro: 'flatcar', channel: 'stable', board, version: fixtures.flatcar.version, imageBz2: bz2, armoredPrivateKey: fixtures.key.armoredPrivate, current: true });
      const srv = await startMirrorServer(m);
      try {
        const out = join(work, `board-out-${next()}`);
        // Uncompressed: the 28 MiB agent is the image's only content that bzip2 would have to work on.
        const { result, json } = await oemJson<BuildResult>(
          ['build', '--provider', 'qemu', '--format', 'raw', '--compress', 'none', '--board', board, '--base-url', `${srv.url}/{channel}/{board}`, '--key', fixtures.key.publicKeyPath, '--cache-dir', join(work, 'cache'), '--output-dir', out],
          { env: { OEM_TMPDIR: work } },
        );
        expect(result.exitCode).toBe(0);
        const img = json.builds[0]!.image;
        expect(img).toMatch(/\.bin$/);
        // Read the embedded bytes back with btrfs restore and compare with the build output.
        const { root, release } = await restoreBtrfs(img, 6);
        const xzFile = join(root, 'bin', 'oem-agent.xz');
        expect((await stat(xzFile)).isFile()).toBe(true);
        expect(await sha512(xzFile)).toBe(await sha512(builtAgent(board === 'amd64-usr' ? 'x64' : 'arm64')));
        let elf: Buffer;
        if (board === 'amd64-usr') {
          const exe = join(work, `agent-${next()}`);
          await execa('sh', ['-c', `xz -dc "${xzFile}" > "${exe}" && chmod 0755 "${exe}"`]);
          elf = await readFile(exe);
          const v = await execa(exe, ['version'], { env: {}, extendEnv: false });
          expect(v.stdout).toMatch(/^oem-agent \S+ \(node 22\.\d+\.\d+ x64\)$/);
          await rm(exe);
        } else {
          // Not run here: its ELF header is enough.
          elf = (await execa('sh', ['-c', `xz -dc "${xzFile}" | head -c 64`], { encoding: 'buffer' })).stdout as unknown as Buffer;
        }
        await release();
        expect(Buffer.from(elf.subarray(0, 4)).toString('latin1')).toBe('\x7fELF');
        // e_machine: 0x3e x86-64, 0xb7 aarch64.
        expect(Buffer.from(elf).readUInt16LE(18)).toBe(board === 'amd64-usr' ? 0x3e : 0xb7);
        const m2 = JSON.parse(await readFile(json.builds[0]!.manifest, 'utf8'));
        expect(m2.agent).toBe(true);
        expect(m2.board).toBe(board);
      } finally {
        await srv.close();
      }
    });
  }
});

describe('the providers an extension-era image can have', () => {
  it('a platform that came with Flatcar\'s extensions needs the image to list it; the others have their own extension', async () => {
    const providers = await loadProviders();
    const img = (oems: string[]): SysextImage => ({ distro: 'flatcar', version: '4459.2.0', os: {}, arch: 'x86-64', oems });
    const missing = (oems: string[]) => providers.filter((p) => missingExtension(p, img(oems)) !== undefined).map((p) => p.id).sort();
    // As Flatcar 4459.2.0's image lists them: the platforms of Flatcar 3760+ only, but STACKIT, are missing.
    expect(missing(['azure', 'digitalocean', 'gce', 'openstack', 'qemu', 'stackit'])).toEqual(['akamai', 'hetzner', 'kubevirt', 'nutanix', 'oraclecloud', 'proxmoxve', 'scaleway']);
    expect(missingExtension(providers.find((p) => p.id === 'hetzner')!, img(['gce']))).toBe('the release publishes no OEM extension for hetzner (the image lists gce in /usr/share/flatcar/oems)');
    // An image that does not list its extensions: every platform's is taken from the release.
    expect(missing([])).toEqual([]);
    // Every provider that gets its own extension names, in its grub.cfg, a platform Ignition knows.
    const own = providers.filter((p) => p.generations.includes('flatcar-sysext') && sysextMode(p, img(['gce'])).kind === 'custom' && missingExtension(p, img(['gce'])) === undefined);
    expect(own.map((p) => p.id)).toEqual(expect.arrayContaining(['aliyun', 'azurestack', 'ibmcloud', 'upcloud', 'vultr', 'parallels']));
    for (const p of own) expect(KNOWN_OEM_IDS, p.id).toContain(p.ignitionPlatform);
  });
});
