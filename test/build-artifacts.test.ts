/** oem build artifacts: formats read back by independent tools, compressions, block reuse, signatures. */
import { execa } from 'execa';
import { copyFile, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BuildResult } from '../src/build.js';
import type { InspectReport } from '../src/image/inspect.js';
import { BIN, expectCleanError, oem, oemJson } from './helpers/cli.js';
import { agent, key, mirrorArgs, next, raw, sha512, useBuildEnv, work } from './helpers/build-env.js';

useBuildEnv();

describe('oem build artifacts: formats, compression, signatures', () => {
  it('builds each provider\'s default formats, readable by independent tools', async () => {
    const out = join(work, `formats-${next()}`);
    const { result } = await oemJson<BuildResult>(
      ['build', '--provider', 'ec2', '--provider', 'azure', '--provider', 'gce', '--provider', 'openstack', '--provider', 'vmware', '--provider', 'vagrant', '--provider', 'exoscale', '--provider', 'aliyun', '--provider', 'ibmcloud', ...mirrorArgs('flatcar'), '--output-dir', out, '--no-agent'],
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
    expect(await names('exoscale')).toEqual(['flatcar_production_exoscale_image.qcow2.bz2']);
    expect(await names('aliyun')).toEqual(['flatcar_production_aliyun_image.qcow2.bz2']);
    // Every disk format holds the same disk as the raw artifact: for ec2 exactly (qemu-img compare with
    // its own raw), for the other providers everywhere but their OEM partition (their own content,
    // read back by oem inspect), byte for byte with cmp over the disks qemu-img reads out of them.
    const ec2Raw = await raw(join(out, 'ec2', 'flatcar_production_ec2_image.bin.bz2'));
    const ec2Report = (await oemJson<InspectReport>(['inspect', ec2Raw])).json;
    const oemPart = ec2Report.partitions.find((x) => x.number === 6)!;
    const [oemStart, oemEnd] = [oemPart.firstLba * 512, (oemPart.lastLba + 1) * 512];
    // ROOT's size in Flatcar's disk layout for the providers that have one (templates/_common/disk-layouts.yml).
    const GROWN: Record<string, number | undefined> = { openstack: 12943360, vmware: 12943360 };
    // (aliyun and ibmcloud: two qcow2 of one layout, whose first part is made once for the run and shared.)
    const cases = [['ec2', 'vmdk.bz2', 'vmdk'], ['azure', 'vhd.bz2', 'vpc'], ['openstack', 'qcow2.bz2', 'qcow2'], ['aliyun', 'qcow2.bz2', 'qcow2'], ['ibmcloud', 'qcow2.bz2', 'qcow2'], ['vmware', 'vmdk.bz2', 'vmdk'], ['gce', 'tar.gz', 'raw']] as const;
    for (const [p, f, fmt] of cases) {
      const artifact = join(out, p, `flatcar_production_${p}_image.${f}`);
      let disk = join(work, `disk-${next()}.${fmt}`);
      if (f === 'tar.gz') {
        const x = await mkdtemp(join(work, 'gce-'));
        await execa('tar', ['-xzf', artifact, '-C', x]);
        disk = join(x, 'disk.raw');
      } else {
        await execa('sh', ['-c', `bzip2 -dc "${artifact}" | dd of="${disk}" bs=64K conv=sparse status=none`]);
      }
      // A fixed VHD is raw data plus a footer: qemu-img only reads it as vpc when told to.
      const info = JSON.parse((await execa('qemu-img', ['info', '--output', 'json', '-f', fmt, disk])).stdout) as { format: string; 'virtual-size': number };
      expect(info.format).toBe(fmt);
      if (fmt === 'vpc') expect(info['virtual-size'] % (1024 * 1024)).toBe(0);
      if (fmt === 'qcow2' || fmt === 'vmdk') {
        const check = await execa('qemu-img', ['check', '-f', fmt, disk], { reject: false });
        expect(check.exitCode, `${p} ${f}: ${check.stdout}${check.stderr}`).toBe(0);
      }
      if (p === 'ec2') {
        const cmp = await execa('qemu-img', ['compare', '-f', 'raw', '-F', fmt, ec2Raw, disk], { reject: false });
        expect(cmp.exitCode, `${p} ${f}: ${cmp.stdout}`).toBe(0);
        continue;
      }
      const flat = join(work, `flat-${next()}.bin`);
      await execa('qemu-img', ['convert', '-f', fmt, '-O', 'raw', disk, flat]);
      const size = ec2Report.size;
      const ins = (await oemJson<InspectReport>(['inspect', flat])).json;
      expect(ins.oem?.oemId, `${p} ${f}`).toBe(p);
      const rootPart = ec2Report.partitions.find((x) => x.number === 9)!;
      if (GROWN[p] !== undefined) {
        // Flatcar's "vm" layout: ROOT grown to its size, the disk by as much (to a whole MiB), the table valid, every other partition where it was.
        expect(ins.partitions.map((x) => [x.number, x.firstLba, x.number === 9 ? x.lastLba - x.firstLba + 1 : x.lastLba]), `${p} ${f}`).toEqual(
          ec2Report.partitions.map((x) => [x.number, x.firstLba, x.number === 9 ? GROWN[p] : x.lastLba]),
        );
        expect((await stat(flat)).size, `${p} ${f}: size`).toBe(Math.ceil(((rootPart.firstLba + GROWN[p]! + 33) * 512) / 1048576) * 1048576);
        expect((await execa('sgdisk', ['-v', flat])).stdout).toMatch(/No problems found/);
      } else {
        // The VHD is padded to whole MiB with zeros; the rest is the disk.
        expect((await stat(flat)).size - size, `${p} ${f}: size`).toBeLessThan(1024 * 1024);
      }
      // Byte for byte the same outside OEM: everything for an image of the release's size; the
      // partitions and ROOT's old extent for a grown one (its GPT names the new size).
      const ranges = GROWN[p] === undefined ? [[0, oemStart], [oemEnd, size]] : [[34 * 512, oemStart], [oemEnd, (rootPart.lastLba + 1) * 512]];
      for (const [from, to] of ranges as [number, number][]) {
        const cmp = await execa('cmp', ['-i', String(from), '-n', String(to - from), ec2Raw, flat], { reject: false });
        expect(cmp.exitCode, `${p} ${f}: bytes ${from}-${to} differ: ${cmp.stdout}`).toBe(0);
      }
      await rm(flat);
    }
    // Exoscale's disk is 10 GiB, as Flatcar makes it: the image grown, its backup GPT at the new end, every partition where it was.
    const exo = join(work, `exo-${next()}.qcow2`);
    await execa('sh', ['-c', `bzip2 -dc "${join(out, 'exoscale', 'flatcar_production_exoscale_image.qcow2.bz2')}" > "${exo}"`]);
    const exoInfo = JSON.parse((await execa('qemu-img', ['info', '--output', 'json', '-f', 'qcow2', exo])).stdout) as { 'virtual-size': number };
    expect(exoInfo['virtual-size']).toBe(10 * 1024 ** 3);
    const exoFlat = join(work, `exo-${next()}.bin`);
    await execa('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', exo, exoFlat]);
    expect((await execa('sgdisk', ['-v', exoFlat])).stdout).toMatch(/No problems found/);
    const exoIns = (await oemJson<InspectReport>(['inspect', exoFlat])).json;
    expect(exoIns.size).toBe(10 * 1024 ** 3);
    expect(exoIns.oem?.oemId).toBe('exoscale');
    expect(exoIns.partitions.map((x) => [x.number, x.firstLba, x.lastLba])).toEqual(ec2Report.partitions.map((x) => [x.number, x.firstLba, x.lastLba]));
    // The partitions before OEM are the same bytes as ec2's (the GPT headers differ: they name the new size).
    const firstPart = ec2Report.partitions.find((x) => x.number === 1)!.firstLba * 512;
    expect((await execa('cmp', ['-i', String(firstPart), '-n', String(oemStart - firstPart), ec2Raw, exoFlat], { reject: false })).exitCode).toBe(0);
    await rm(exoFlat);
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

  it('a grown disk with keys in ROOT: its qcow2 and VHDX (compressed and not), VMDK, GCE archive and Parallels disk hold the raw image\'s partitions, ROOT as the build wrote it', async () => {
    // openstack's disk grows (ROOT to Flatcar's "vm" size) for every format but raw; nothing of it is
    // copied whole: the qcow2, the VHDX, the VMDK, GCE's archive and the Parallels disk read the base
    // and what the build wrote, its GPT grown in place.
    const out = join(work, `grown-${next()}`);
    const args = ['build', '--provider', 'openstack', '--ssh-key', key, ...mirrorArgs('flatcar'), '--no-agent'];
    const env = { OEM_TMPDIR: work, SOURCE_DATE_EPOCH: '1700000000' };
    expect((await oem([...args, '--format', 'raw', '--format', 'qcow2', '--format', 'vhdx', '--format', 'vmdk', '--format', 'gce', '--format', 'parallels', '--output-dir', out], { env })).exitCode).toBe(0);
    expect((await oem([...args, '--format', 'qcow2', '--format', 'vhdx', '--compress', 'none', '--output-dir', `${out}-plain`], { env })).exitCode).toBe(0);
    // Reproducible builds: the uncompressed qcow2 and VHDX are the very files the .bz2s hold.
    for (const ext of ['qcow2', 'vhdx']) {
      const same = await execa('sh', ['-c', 'bzip2 -dc "$0" | cmp - "$1"', join(out, 'openstack', `flatcar_production_openstack_image.${ext}.bz2`), join(`${out}-plain`, 'openstack', `flatcar_production_openstack_image.${ext}`)], { reject: false });
      expect(same.exitCode, ext + same.stdout + same.stderr).toBe(0);
    }
    // The Parallels bundle is the artifact's name without .tgz: <name>.pvm/ with <name>.hdd/ in it.
    const pvm = (await execa('tar', ['-tzf', join(out, 'openstack', 'flatcar_production_openstack_image.pvm.tgz')])).stdout.split('\n');
    expect(pvm.filter((m) => !m.includes('/.'))).toEqual(expect.arrayContaining(['flatcar_production_openstack_image.pvm/', 'flatcar_production_openstack_image.pvm/config.pvs', 'flatcar_production_openstack_image.pvm/flatcar_production_openstack_image.hdd/DiskDescriptor.xml']));
    expect(pvm.every((m) => m.startsWith('flatcar_production_openstack_image.pvm/') && !m.includes('.pvm.pvm') && !m.includes('.pvm.hdd'))).toBe(true);
    const disk = await raw(join(out, 'openstack', 'flatcar_production_openstack_image.bin.bz2'));
    const report = (await oemJson<InspectReport>(['inspect', disk])).json;
    const root = report.partitions.find((x) => x.number === 9)!;
    const files = [
      ['qcow2', `sh -c 'bzip2 -dc "$0" > "$1"' ${join(out, 'openstack', 'flatcar_production_openstack_image.qcow2.bz2')}`],
      ['vmdk', `sh -c 'bzip2 -dc "$0" > "$1"' ${join(out, 'openstack', 'flatcar_production_openstack_image.vmdk.bz2')}`],
      ['qcow2', `cp ${join(`${out}-plain`, 'openstack', 'flatcar_production_openstack_image.qcow2')}`],
      ['vhdx', `sh -c 'bzip2 -dc "$0" > "$1"' ${join(out, 'openstack', 'flatcar_production_openstack_image.vhdx.bz2')}`],
      ['raw', `sh -c 'tar -xzOf "$0" disk.raw > "$1"' ${join(out, 'openstack', 'flatcar_production_openstack_image.tar.gz')}`],
      ['parallels', `sh -c 'tar -xzOf "$0" --wildcards "*.hds" > "$1"' ${join(out, 'openstack', 'flatcar_production_openstack_image.pvm.tgz')}`],
    ] as const;
    for (const [fmt, get] of files) {
      const file = join(work, `grown-${next()}.${fmt}`);
      await execa('sh', ['-c', `${get} "${file}"`]);
      if (fmt !== 'raw') {
        const check = await execa('qemu-img', ['check', '-f', fmt, file], { reject: false });
        expect(check.exitCode, `${get}: ${check.stdout}${check.stderr}`).toBe(0);
      }
      const flat = join(work, `grown-${next()}.bin`);
      await execa('qemu-img', ['convert', '-f', fmt, '-O', 'raw', file, flat]);
      expect((await execa('sgdisk', ['-v', flat])).stdout).toMatch(/No problems found/);
      const ins = (await oemJson<InspectReport>(['inspect', flat])).json;
      expect(ins.partitions.find((x) => x.number === 9)!.lastLba - root.firstLba + 1, get).toBe(12943360);
      // Every partition, OEM and ROOT with what the build wrote, byte for byte as in the raw image.
      const cmp = await execa('cmp', ['-i', String(34 * 512), '-n', String((root.lastLba + 1 - 34) * 512), disk, flat], { reject: false });
      expect(cmp.exitCode, `${get}: ${cmp.stdout}`).toBe(0);
      await rm(flat);
      await rm(file);
    }
    await rm(disk);
  });

  for (const [kind, tool] of [['gz', 'gzip'], ['xz', 'xz'], ['zst', 'zstd'], ['none', '']] as const) {
    it(`--compress ${kind}: the raw image decompresses with stock ${tool || 'nothing'} to the same disk as bz2`, async () => {
      const out = join(work, `c-${kind}-${next()}`);
      const r = await oemJson<BuildResult>(['build', '--provider', 'qemu', '--format', 'raw', '--compress', kind, ...mirrorArgs('coreos'), '--output-dir', out, '--no-agent'], { env: { OEM_TMPDIR: work, SOURCE_DATE_EPOCH: '1700000000' } });
      expect(r.result.exitCode).toBe(0);
      const name = `coreos_production_qemu_image.bin${kind === 'none' ? '' : `.${kind}`}`;
      expect(r.json.builds[0]!.image).toBe(join(out, 'qemu', name));
      const disk = join(work, `d-${kind}-${next()}.bin`);
      if (kind === 'none') await copyFile(join(out, 'qemu', name), disk);
      else await execa('sh', ['-c', `${tool} -dc "${join(out, 'qemu', name)}" | dd of="${disk}" bs=64K conv=sparse status=none`]);
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
    const plain = join(work, `plain-${next()}`);
    expect((await oem([...common, '--compress', 'none', '--output-dir', plain], { env })).exitCode).toBe(0);
    const packed = join(work, `packed-${next()}`);
    const r = await oem([...common, '--output-dir', packed], { env });
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toMatch(/the release's bzip2 blocks for the rest/);
    for (const provider of ['qemu', 'gce']) {
      const want = await sha512(join(plain, provider, `coreos_production_${provider}_image.bin`));
      const bz2 = join(packed, provider, `coreos_production_${provider}_image.bin.bz2`);
      // Every stock decoder on the first; the second (which shares the first's leading blocks) with lbzip2.
      for (const tool of provider === 'qemu' ? ['bzip2', 'lbzip2', 'pbzip2'] : ['lbzip2']) {
        const { stdout } = await execa('bash', ['-o', 'pipefail', '-c', `${tool} -dc "$1" | sha512sum`, 'bash', bz2]);
        expect(stdout.split(' ')[0], `${provider}: ${tool}`).toBe(want);
      }
      // The DIGESTS and manifest describe the file as written.
      const digests = await readFile(join(packed, provider, `coreos_production_${provider}_image.bin.bz2.DIGESTS`), 'utf8');
      expect(digests).toContain(`${await sha512(bz2)}  coreos_production_${provider}_image.bin.bz2`);
    }
  });

  it("a qcow2 from qemu-img (a disk over 256 GiB) whose layout block reuse does not accept (more than 64 MiB outside the disk's data) is compressed as it is, and said so", async () => {
    // qcow2.ts writes disks of up to 256 GiB; qemu-img converts larger ones, and their .bz2 reuses the
    // release's blocks after reading the file's layout (layout.ts). qemu-img on PATH that leaves 65 MiB
    // of zeros after the qcow2 it converts: still a qcow2 of the same disk, but more of the file than
    // its tables are not the disk's bytes, so it is not taken apart.
    const bin = join(work, `wrapper-${next()}`);
    await execa('mkdir', ['-p', bin]);
    const real = (await execa('sh', ['-c', 'command -v qemu-img'])).stdout.trim();
    await writeFile(join(bin, 'qemu-img'), `#!/bin/sh\nif [ "$1" = convert ]; then for last; do :; done; "${real}" "$@" && exec truncate -s +65M "$last"; fi\nexec "${real}" "$@"\n`, { mode: 0o755 });
    const out = join(work, `as-it-is-${next()}`);
    const r = await oem(['build', '--provider', 'openstack', '--format', 'raw', '--format', 'qcow2', '--disk-size', '260GiB', ...mirrorArgs('flatcar'), '--output-dir', out, '--no-agent'], {
      env: { OEM_TMPDIR: work, PATH: `${bin}:${process.env.PATH}` },
    });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^oem: openstack: flatcar_production_openstack_image\.qcow2\.bz2: compressed as it is: .*more than 67108864 bytes outside the disk's data/m);
    expect(r.stderr).toMatch(/flatcar_production_openstack_image\.qcow2\.bz2 \(\d+ bytes, compressed with lbzip2 -9 in pieces/);
    // A qcow2 of the grown disk (qemu-img check, its size) holding the raw artifact's partitions.
    const disk = await raw(join(out, 'openstack', 'flatcar_production_openstack_image.bin.bz2'));
    const qcow2 = join(work, `as-it-is-${next()}.qcow2`);
    await execa('sh', ['-c', `lbzip2 -dc "$1" > "$2"`, 'sh', join(out, 'openstack', 'flatcar_production_openstack_image.qcow2.bz2'), qcow2]);
    expect((await execa('qemu-img', ['check', '-f', 'qcow2', qcow2], { reject: false })).exitCode).toBe(0);
    const info = JSON.parse((await execa('qemu-img', ['info', '--output', 'json', '-f', 'qcow2', qcow2])).stdout) as { 'virtual-size': number };
    expect(info['virtual-size']).toBe(260 * 1024 ** 3);
    const flat = join(work, `as-it-is-${next()}.bin`);
    await execa('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', qcow2, flat]);
    // Between the partition tables (which growing rewrote), the raw artifact's bytes.
    const size = (await stat(disk)).size;
    await execa('cmp', ['-i', '1048576', '-n', String(size - 2 * 1048576), disk, flat]);
    await rm(qcow2);
    await rm(flat);
    await rm(disk);
  });

  it('run as a program, bin/run.js starts node with fixed glibc malloc settings, a value the user set winning', async () => {
    // lbzip2 on PATH that notes the environment it was started with: the build process's own.
    const bin = join(work, `wrapper-${next()}`);
    await execa('mkdir', ['-p', bin]);
    const real = (await execa('sh', ['-c', 'command -v lbzip2'])).stdout.trim();
    const noted = join(bin, 'env.txt');
    await writeFile(join(bin, 'lbzip2'), `#!/bin/sh\nenv | grep '^MALLOC_' | sort > "${noted}"\nexec "${real}" "$@"\n`, { mode: 0o755 });
    const out = join(work, `malloc-${next()}`);
    // A cache of its own: the release is decoded (by lbzip2) in this build. Started as a user's shell
    // starts `oem` (the file itself, by its #! line), not as `node bin/run.js`.
    const env: Record<string, string | undefined> = { ...process.env, OEM_TMPDIR: work, OEM_CACHE_DIR: join(work, `cache-${next()}`), PATH: `${bin}:${process.env.PATH}`, MALLOC_ARENA_MAX: '4' };
    delete env.MALLOC_MMAP_THRESHOLD_;
    const r = await execa(BIN, ['build', '--provider', 'qemu', '--format', 'raw', ...mirrorArgs('flatcar'), '--output-dir', out, '--no-agent'], { env, extendEnv: false, reject: false, stdin: 'ignore' });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await readFile(noted, 'utf8')).toBe('MALLOC_ARENA_MAX=4\nMALLOC_MMAP_THRESHOLD_=131072\n');
  });

  it('--sign-key: a detached .sig per artifact (gpg and oem verify accept it) and a clearsigned .DIGESTS.asc', async () => {
    const gnupg = await mkdtemp(join(work, 'gpg-'));
    const env = { GNUPGHOME: gnupg };
    await execa('gpg', ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--quick-gen-key', 'Builder <builder@example.org>', 'ed25519', 'sign', 'never'], { env });
    const secret = join(work, `secret-${next()}.asc`);
    await writeFile(secret, (await execa('gpg', ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--export-secret-keys', '--armor'], { env })).stdout);
    const pub = join(work, `public-${next()}.asc`);
    await writeFile(pub, (await execa('gpg', ['--batch', '--export', '--armor'], { env })).stdout);
    const out = join(work, `signed-${next()}`);
    // A release pipeline's SOURCE_DATE_EPOCH (its last commit) is older than its signing key: the
    // signatures carry the key's creation time instead, the one deterministic time the key can sign at.
    const r = await oemJson<BuildResult>(['build', '--provider', 'qemu', '--format', 'raw', '--sign-key', secret, ...mirrorArgs('flatcar'), '--output-dir', out, '--no-agent'], { env: { OEM_TMPDIR: work, SOURCE_DATE_EPOCH: '1700000000' } });
    expect(r.result.exitCode, r.result.stderr).toBe(0);
    const img = r.json.builds[0]!.image;
    await execa('gpg', ['--batch', '--verify', `${img}.sig`, img], { env });
    await execa('gpg', ['--batch', '--verify', `${img}.DIGESTS.asc`], { env });
    const keyCreated = (await execa('gpg', ['--batch', '--with-colons', '--list-keys'], { env })).stdout.split('\n').find((l) => l.startsWith('pub:'))!.split(':')[5]!;
    expect(Number(keyCreated)).toBeGreaterThan(1700000000);
    for (const args of [[`${img}.sig`, img], [`${img}.DIGESTS.asc`]]) {
      // VALIDSIG <fingerprint> <date> <signature timestamp> ...
      const status = (await execa('gpg', ['--batch', '--status-fd', '1', '--verify', ...args], { env })).stdout;
      expect(/^\[GNUPG:\] VALIDSIG \S+ \S+ (\d+) /m.exec(status)?.[1], args[0]).toBe(keyCreated);
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
    const wrongDigests = join(work, `wrong-${next()}.DIGESTS`);
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
    const bad = await oem(['build', '--provider', 'qemu', '--format', 'raw', '--sign-key', pub, ...mirrorArgs('flatcar'), '--output-dir', join(work, `bad-${next()}`), '--no-agent']);
    expect(bad.exitCode).toBe(2);
    expect(expectCleanError(bad)).toMatch(/is a public key/);
  });
});
