/**
 * Artifact formats, each checked with an independent reader: qemu-img (info, compare, check), GNU tar
 * (listing, extraction, and archives GNU tar itself writes from the extracted files, which must be
 * byte-identical), sha256sum, python's XML parser for the OVF when python3 is installed.
 */
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, readdir, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { COMPRESSIBLE, FORMATS, FORMAT_EXTENSION, artifactName, convert, type Format } from '../src/artifacts/formats.js';
import { writeTar } from '../src/artifacts/tar.js';
import { writeVmdkGrains } from '../src/artifacts/vmdk.js';
import { OemError } from '../src/shared/errors.js';
import { makeDisk, noise, qemuInfo } from './helpers/small-disks.js';
import { useSmallTmpfs } from './helpers/full-fs.js';

const MiB = 1024 * 1024;
const MTIME = new Date('2024-01-02T03:04:05Z');
const EPOCH = MTIME.getTime() / 1000;
const NAME = 'flatcar_production_test_image';

let dir: string;
/** 40 MiB, GPT, random data at a few places. */
let raw: string;
/** 40 MiB + 3 sectors: not a whole number of MiB, with data in its last MiB. */
let odd: string;
let n = 0;
const outPath = (ext: string) => join(dir, `out-${++n}.${ext}`);

/** qemu-img compare exits 0 when the guest-visible contents are identical (a larger image's extra area must be zero). */
async function sameContents(rawPath: string, image: string, format?: string): Promise<void> {
  const r = await execa('qemu-img', ['compare', '-f', 'raw', ...(format ? ['-F', format] : []), rawPath, image], { reject: false });
  expect(r.stdout).toContain('Images are identical');
  expect(r.exitCode).toBe(0);
}

/**
 * A streamOptimized VMDK split for comparison: its descriptor's text without the content ID, and the
 * file's other bytes up to `end`. qemu-img writes its random CID without leading zeros (1 to 8 hex
 * digits), so two VMDKs that differ only there compare equal.
 */
function vmdkWithoutCid(x: Buffer, end = x.length): { descriptor: string; rest: Buffer } {
  const [d0, d1] = [Number(x.readBigUInt64LE(28)) * 512, Number(x.readBigUInt64LE(28) + x.readBigUInt64LE(36)) * 512];
  const descriptor = x.toString('latin1', d0, d1).replace(/\0+$/, '').replace(/^CID=[0-9a-f]{1,8}$/m, 'CID=');
  return { descriptor, rest: Buffer.concat([x.subarray(0, d0), x.subarray(d1, end)]) };
}

async function sha256(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

async function extract(archive: string, gz: boolean): Promise<string> {
  const to = await mkdtemp(join(dir, 'x-'));
  await execa('tar', [gz ? '-xzf' : '-xf', archive, '-C', to]);
  return to;
}

async function tarList(archive: string, gz: boolean): Promise<string[]> {
  const { stdout } = await execa('tar', [gz ? '-tzf' : '-tf', archive]);
  return stdout.split('\n').filter(Boolean);
}

/** What GNU tar writes for these files in this order, with our owner, mode and mtime. */
async function gnuTar(from: string, names: string[], format: 'gnu' | 'ustar', extra: string[] = []): Promise<Buffer> {
  const r = await execa('tar', [`--format=${format}`, '--owner=root:0', '--group=root:0', '--mode=0644', `--mtime=@${EPOCH}`, ...extra, '-C', from, '-cf', '-', ...names], { encoding: 'buffer' });
  return Buffer.from(r.stdout);
}

/** A sparse copy of `from` holding exactly its 64 KiB clusters that are not all zeros, each written whole. */
async function clustersOnly(from: string, to: string): Promise<void> {
  const data = await readFile(from);
  await writeFile(to, '');
  await truncate(to, data.length);
  const fh = await open(to, 'r+');
  try {
    for (let at = 0; at < data.length; at += 64 * 1024) {
      const c = data.subarray(at, at + 64 * 1024);
      if (c.some((b) => b !== 0)) await fh.write(c, 0, c.length, at);
    }
  } finally {
    await fh.close();
  }
}

const done = new Map<string, string>();
/** Converts once per (input, format) and remembers the output. */
async function converted(input: string, format: Format): Promise<string> {
  const key = `${input}:${format}`;
  const have = done.get(key);
  if (have) return have;
  const out = outPath(FORMAT_EXTENSION[format]);
  await convert(input, format, out, { name: NAME, mtime: MTIME });
  done.set(key, out);
  return out;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'oem-formats-'));
  raw = join(dir, 'disk.bin');
  odd = join(dir, 'odd.bin');
  await makeDisk(raw, 40 * MiB, [
    [MiB, 64 * 1024],
    [20 * MiB, 256 * 1024],
    [24 * MiB, 1536 * 1024],
    [39 * MiB, 4096],
  ]);
  await makeDisk(odd, 40 * MiB + 3 * 512, [
    [MiB, 4096],
    [40 * MiB - 8192, 8192],
  ]);
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('names', () => {
  it('{distro}_production_{provider}_image.{ext}; the two box formats never collide', () => {
    expect(FORMATS.map((f) => artifactName('flatcar', 'vagrant', f))).toEqual([
      'flatcar_production_vagrant_image.bin',
      'flatcar_production_vagrant_image.qcow2',
      'flatcar_production_vagrant_image.vmdk',
      'flatcar_production_vagrant_image.vhd',
      'flatcar_production_vagrant_image.vhdx',
      'flatcar_production_vagrant_image.tar.gz',
      'flatcar_production_vagrant_image.libvirt.box',
      'flatcar_production_vagrant_image.virtualbox.box',
      'flatcar_production_vagrant_image.ova',
      'flatcar_production_vagrant_image.virtualbox.ova',
      'flatcar_production_vagrant_image.pvm.tgz',
    ]);
    expect(FORMATS.filter((f) => COMPRESSIBLE[f])).toEqual(['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx']);
  });
});

describe('disk formats (qemu-img as the reader)', () => {
  it('raw: a sparse, identical copy', async () => {
    const out = await converted(raw, 'raw');
    expect((await readFile(out)).equals(await readFile(raw))).toBe(true);
    const st = await stat(out);
    expect(st.blocks * 512).toBeLessThan(st.size / 4);
  });

  it('qcow2: compat 1.1, same virtual size and contents', async () => {
    const out = await converted(raw, 'qcow2');
    const info = await qemuInfo(out);
    expect(info.format).toBe('qcow2');
    expect(info['virtual-size']).toBe(40 * MiB);
    expect((info['format-specific'] as { data: { compat: string } }).data.compat).toBe('1.1');
    await sameContents(raw, out);
  });

  it('vmdk: streamOptimized, descriptor names the artifact, reproducible CID', async () => {
    const out = await converted(raw, 'vmdk');
    const info = await qemuInfo(out);
    expect(info.format).toBe('vmdk');
    expect(info['virtual-size']).toBe(40 * MiB);
    expect((info['format-specific'] as { data: { 'create-type': string } }).data['create-type']).toBe('streamOptimized');
    await sameContents(raw, out);
    expect((await execa('qemu-img', ['check', out])).exitCode).toBe(0);
    const descriptor = (await readFile(out)).subarray(512, 2048).toString('latin1');
    expect(descriptor).toContain(`SPARSE "${NAME}.vmdk"`);
    expect(descriptor).toMatch(/^CID=[0-9a-f]{8}$/m);
    // Laid out as qemu-img's own conversion: the same header, descriptor (but the random CID), grain
    // directories and grain tables, so every grain at the same place; then an end-of-stream marker.
    const theirs = join(dir, `theirs-${++n}`, `${NAME}.vmdk`);
    await execa('mkdir', ['-p', dirname(theirs)]);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, theirs]);
    const [a, b] = [await readFile(out), await readFile(theirs)];
    const overhead = Number(a.readBigUInt64LE(64)) * 512;
    // The descriptor's text but the CID, and the rest of the overhead byte for byte.
    const [ours, qemu] = [vmdkWithoutCid(a, overhead), vmdkWithoutCid(b, overhead)];
    expect(ours.descriptor).toBe(qemu.descriptor);
    expect(qemu.descriptor).toMatch(/^CID=$/m);
    expect(ours.rest.toString('hex')).toBe(qemu.rest.toString('hex'));
    const tables = (x: Buffer) => {
      const gd = Number(x.readBigUInt64LE(56)) * 512;
      return [0, 1, 2, 3].map((t) => x.readUInt32LE(gd + t * 4)).filter(Boolean).map((s) => x.subarray(s * 512, s * 512 + 2048).toString('hex')).join('');
    };
    expect(tables(a)).toBe(tables(b));
    expect(a.subarray(-512).equals(Buffer.alloc(512))).toBe(true);
  });

  it('vhd: fixed, virtual size rounded up to whole MiB, footer time = mtime, padding zero', async () => {
    const out = await converted(odd, 'vhd');
    const info = await qemuInfo(out, 'vpc'); // a fixed VHD has no header: qemu-img would probe it as raw
    const vs = info['virtual-size'];
    expect(vs % MiB).toBe(0);
    expect(vs).toBe(41 * MiB);
    expect((await stat(out)).size).toBe(vs + 512);
    // The footer, read by hand (VHD spec): cookie, disk type 2 = fixed, current size, timestamp, checksum.
    const f = (await readFile(out)).subarray(-512);
    expect(f.toString('latin1', 0, 8)).toBe('conectix');
    expect(f.readUInt32BE(60)).toBe(2);
    expect(Number(f.readBigUInt64BE(48))).toBe(vs);
    expect(f.readUInt32BE(24)).toBe(EPOCH - 946_684_800);
    let sum = 0;
    f.forEach((b, i) => (sum += i >= 64 && i < 68 ? 0 : b));
    expect(f.readUInt32BE(64)).toBe(~sum >>> 0);
    // Different sizes are allowed by compare when the larger image's extra area reads as zeros.
    await sameContents(odd, out, 'vpc');
    // An input that is already whole MiB keeps its size.
    const aligned = await converted(raw, 'vhd');
    expect((await qemuInfo(aligned, 'vpc'))['virtual-size']).toBe(40 * MiB);
    await sameContents(raw, aligned, 'vpc');
    // What qemu-img's own conversion writes, byte for byte, but for the footer's time, unique ID and checksum.
    const theirs = outPath('vhd');
    await execa('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on', theirs, String(41 * MiB)]);
    await execa('qemu-img', ['convert', '-n', '--target-is-zero', '-f', 'raw', '-O', 'vpc', odd, theirs]);
    const [a, b] = [await readFile(out), await readFile(theirs)];
    expect(a.length).toBe(b.length);
    expect(a.subarray(0, -512).equals(b.subarray(0, -512))).toBe(true);
    const [fa, fb] = [a.subarray(-512), b.subarray(-512)];
    for (const [from, to] of [[0, 24], [28, 64], [84, 512]]) expect(fa.subarray(from, to).equals(fb.subarray(from, to)), `footer bytes ${from}-${to}`).toBe(true);
  });

  it('vhdx: dynamic, same contents', async () => {
    const out = await converted(raw, 'vhdx');
    const info = await qemuInfo(out);
    expect(info.format).toBe('vhdx');
    expect(info['virtual-size']).toBe(40 * MiB);
    await sameContents(raw, out);
  });
});

describe('progress', () => {
  it('archives report the bytes archived, a VHD, a VHDX and a qcow2 their bytes, each up to the whole', async () => {
    for (const format of ['qcow2', 'vhd', 'gce', 'vhdx'] as const) {
      const seen: [number, number][] = [];
      const out = outPath(FORMAT_EXTENSION[format]);
      await convert(raw, format, out, { name: NAME, mtime: MTIME, onProgress: (d, t) => seen.push([d, t]) });
      expect(seen.length, format).toBeGreaterThan(0);
      const [done, total] = seen[seen.length - 1]!;
      expect(done, format).toBe(total);
      // gce: the disk's data archived, its 64 KiB clusters that are not all zeros.
      const gce = async () => {
        const d = await readFile(raw);
        let n = 0;
        for (let at = 0; at < d.length; at += 64 * 1024) if (d.subarray(at, at + 64 * 1024).some((b) => b !== 0)) n += Math.min(64 * 1024, d.length - at);
        return n;
      };
      expect(total, format).toBe(format === 'gce' ? await gce() : format === 'vhd' ? 40 * MiB + 512 : (await stat(out)).size);
      expect(seen.every(([d], i) => i === 0 || d >= seen[i - 1]![0]), format).toBe(true);
    }
  });
});

describe('archives (GNU tar as the reader)', () => {
  it('gce: a gzip with no timestamp, a GNU sparse tar with exactly disk.raw (its all-zero 64 KiB clusters not archived), as GNU tar writes it', async () => {
    const out = await converted(raw, 'gce');
    const { stdout } = await execa('tar', ['-tvzf', out]);
    const lines = stdout.split('\n').filter(Boolean);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^-rw-r--r-- root/root +${40 * MiB} 2024-01-02 0\\d:\\d\\d disk\\.raw$`));
    const gz = await readFile(out);
    expect([...gz.subarray(0, 4)]).toEqual([0x1f, 0x8b, 8, 0]); // deflate, no flags (no name, no comment)
    expect(gz.readUInt32LE(4)).toBe(0); // no mtime in the gzip header
    const tar = gunzipSync(gz);
    expect(tar.toString('latin1', 257, 265)).toBe('ustar  \0'); // GNU magic
    // GNU tar archives a file's data extents: a copy of the disk whose data is exactly its clusters
    // with a byte that is not zero, each written whole, gives GNU tar the same map.
    const same = await mkdtemp(join(dir, 'g-'));
    await clustersOnly(raw, join(same, 'disk.raw'));
    expect(tar.equals(await gnuTar(same, ['disk.raw'], 'gnu', ['--sparse']))).toBe(true);
    expect(tar.length).toBeLessThan((await stat(raw)).size / 2);
    const x = await extract(out, true);
    expect(await readdir(x)).toEqual(['disk.raw']);
    expect((await readFile(join(x, 'disk.raw'))).equals(await readFile(raw))).toBe(true);
  });

  it('vagrant-libvirt: metadata, qcow2 box.img, Vagrantfile', async () => {
    const out = await converted(raw, 'vagrant-libvirt');
    expect(await tarList(out, true)).toEqual(['Vagrantfile', 'box.img', 'metadata.json']);
    const x = await extract(out, true);
    expect(JSON.parse(await readFile(join(x, 'metadata.json'), 'utf8'))).toEqual({ provider: 'libvirt', format: 'qcow2', virtual_size: 1 });
    expect(await readFile(join(x, 'Vagrantfile'), 'utf8')).toMatch(/config\.vm\.provider :libvirt do \|libvirt\|\n\s+libvirt\.driver = "kvm"\n\s+end/);
    expect((await qemuInfo(join(x, 'box.img'))).format).toBe('qcow2');
    await sameContents(raw, join(x, 'box.img'));
    expect(gunzipSync(await readFile(out)).equals(await gnuTar(x, ['Vagrantfile', 'box.img', 'metadata.json'], 'gnu'))).toBe(true);
  });

  it('vagrant-virtualbox: metadata, OVF describing the streamOptimized disk, Vagrantfile', async () => {
    const out = await converted(raw, 'vagrant-virtualbox');
    const names = ['Vagrantfile', 'box-disk1.vmdk', 'box.ovf', 'metadata.json'];
    expect(await tarList(out, true)).toEqual(names);
    const x = await extract(out, true);
    expect(JSON.parse(await readFile(join(x, 'metadata.json'), 'utf8'))).toEqual({ provider: 'virtualbox' });
    expect(await readFile(join(x, 'Vagrantfile'), 'utf8')).toContain('config.vm.provider :virtualbox do |vb|');
    const disk = join(x, 'box-disk1.vmdk');
    expect((await qemuInfo(disk)).format).toBe('vmdk');
    await sameContents(raw, disk);
    await checkOvf(join(x, 'box.ovf'), 'box-disk1.vmdk', (await stat(disk)).size, 40 * MiB);
    expect(gunzipSync(await readFile(out)).equals(await gnuTar(x, names, 'gnu'))).toBe(true);
  });

  it('ova: ustar, .ovf first, then the disk, then a SHA256 manifest that sha256sum agrees with', async () => {
    const out = await converted(raw, 'ova');
    const names = [`${NAME}.ovf`, `${NAME}-disk1.vmdk`, `${NAME}.mf`];
    expect(await tarList(out, false)).toEqual(names);
    const bytes = await readFile(out);
    expect(bytes.toString('latin1', 257, 265)).toBe('ustar\u000000'); // POSIX magic and version
    const x = await extract(out, false);
    const { stdout } = await execa('sha256sum', [names[0]!, names[1]!], { cwd: x });
    const expected = stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const [hash, file] = l.split(/\s+\*?/);
        return `SHA256(${file})= ${hash}`;
      });
    expect((await readFile(join(x, names[2]!), 'utf8')).split('\n').filter(Boolean)).toEqual(expected);
    await sameContents(raw, join(x, names[1]!));
    await checkOvf(join(x, names[0]!), names[1]!, (await stat(join(x, names[1]!))).size, 40 * MiB);
    expect(bytes.equals(await gnuTar(x, names, 'ustar'))).toBe(true);
  });

  it('archives through GNU tar: names beyond 100 bytes in both formats, members in the given order, unmoved by TAR_OPTIONS', async () => {
    const long = `${'x'.repeat(120)}.raw`;
    const file = join(dir, 'member.bin');
    await writeFile(file, noise(3000, 'member'));
    vi.stubEnv('TAR_OPTIONS', '--format=v7 --owner=nobody');
    try {
      for (const format of ['gnu', 'ustar'] as const) {
        const out = outPath('tar');
        await writeTar(out, [{ name: 'z-first', data: Buffer.from('one\n') }, { name: long, path: file }], { format, gzip: false, mtime: EPOCH, stage: join(dir, `stage-${n}`) });
        const r = await execa('tar', ['-tvf', out], { env: { TAR_OPTIONS: '' } });
        const lines = r.stdout.trim().split('\n');
        expect(lines[0]).toMatch(/^-rw-r--r-- root\/root +4 2024-01-02 0\d:\d\d z-first$/);
        expect(lines[1]).toMatch(new RegExp(`^-rw-r--r-- root/root +3000 2024-01-02 0\\d:\\d\\d ${long.replace('.', '\\.')}$`));
        expect(lines).toHaveLength(2);
        const x = await extract(out, false);
        expect((await readFile(join(x, long))).equals(await readFile(file))).toBe(true);
        expect((await readFile(out)).toString('latin1', 257, 263)).toBe(format === 'gnu' ? 'ustar ' : 'ustar\0');
      }
    } finally {
      vi.unstubAllEnvs();
    }
    // A member that cannot be read: a one-line error, and tar's output is not kept by convert's callers.
    const out = outPath('tar');
    await expect(writeTar(out, [{ name: 'gone', path: join(dir, 'no-such-file') }], { format: 'gnu', gzip: false, mtime: EPOCH, stage: join(dir, `stage-${n}`) })).rejects.toThrow(/no-such-file/);
  });

  it('writeTar gzip: tar\'s whole output, in pieces from a cache (cold, then warm: the same bytes) or in one stream', async () => {
    // Larger than a piece's window: tar's output must be read from its start (none of it lost while
    // the output file is opened) and cut into several pieces.
    const file = join(dir, 'member.bin');
    const member = Buffer.concat([noise(6 * MiB, 'member'), Buffer.alloc(3 * MiB, 1)]);
    await writeFile(file, member);
    const entries = [{ name: 'box.img', path: file }, { name: 'metadata.json', data: Buffer.from('{"provider":"libvirt"}\n') }];
    const cache = join(dir, `pieces-${++n}`);
    const outs: string[] = [];
    for (const pieceCache of [cache, cache, undefined]) {
      const out = outPath('tar.gz');
      await writeTar(out, entries, { format: 'gnu', gzip: true, mtime: EPOCH, stage: join(dir, `stage-${n}`), ...(pieceCache ? { pieceCache } : {}) });
      expect((await execa('gzip', ['-t', out], { reject: false })).exitCode).toBe(0);
      const x = await extract(out, true);
      expect((await readFile(join(x, 'box.img'))).equals(member)).toBe(true);
      expect(await readFile(join(x, 'metadata.json'), 'utf8')).toBe('{"provider":"libvirt"}\n');
      outs.push(out);
    }
    expect((await readFile(outs[1]!)).equals(await readFile(outs[0]!))).toBe(true);
    expect(gunzipSync(await readFile(outs[2]!)).equals(gunzipSync(await readFile(outs[0]!)))).toBe(true);
  });

});

/** The OVF parsed by an XML parser (python3, when installed), else checked textually. */
async function checkOvf(path: string, disk: string, diskSize: number, capacity: number): Promise<void> {
  const text = await readFile(path, 'utf8');
  const py = await execa('python3', ['--version'], { reject: false }).catch(() => ({ exitCode: 1 }));
  if (py.exitCode === 0) {
    const script = [
      'import sys, json, xml.etree.ElementTree as E',
      'O = "{http://schemas.dmtf.org/ovf/envelope/1}"',
      'R = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"',
      'root = E.parse(sys.argv[1]).getroot()',
      'f = root.find(O + "References/" + O + "File")',
      'd = root.find(O + "DiskSection/" + O + "Disk")',
      'items = root.findall(".//" + O + "VirtualHardwareSection/" + O + "Item")',
      'print(json.dumps({"href": f.get(O + "href"), "size": f.get(O + "size"), "capacity": d.get(O + "capacity"), "format": d.get(O + "format"),',
      '  "items": {i.find(R + "ResourceType").text: (i.find(R + "VirtualQuantity").text if i.find(R + "VirtualQuantity") is not None else None) for i in items}}))',
    ].join('\n');
    const { stdout } = await execa('python3', ['-c', script, path]);
    expect(JSON.parse(stdout)).toEqual({
      href: disk,
      size: String(diskSize),
      capacity: String(capacity),
      format: 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized',
      items: { '3': '1', '4': '1024', '20': null, '10': null, '17': null }, // 1 CPU, 1024 MiB, SATA, NIC, disk
    });
  } else {
    expect(text).toContain(`ovf:href="${disk}" ovf:id="file1" ovf:size="${diskSize}"`);
    expect(text).toContain(`ovf:capacity="${capacity}"`);
  }
  expect(text).toContain('<rasd:Connection>NAT</rasd:Connection>');
  expect(text).toContain('<rasd:ResourceSubType>AHCI</rasd:ResourceSubType>');
}

describe('reproducibility', () => {
  // Same input, name and mtime: same bytes. qemu-img's random VMDK CID, VHD footer time/ID and VHDX
  // sequence numbers and GUIDs are replaced by derived values in formats.ts, so every format is
  // reproducible.
  const reproducible: Format[] = ['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'gce', 'vagrant-libvirt', 'vagrant-virtualbox', 'ova'];
  for (const format of reproducible) {
    it(`${format}: converting twice gives the same bytes`, async () => {
      const a = outPath(FORMAT_EXTENSION[format]);
      const b = outPath(FORMAT_EXTENSION[format]);
      await convert(raw, format, a, { name: NAME, mtime: MTIME });
      await new Promise((r) => setTimeout(r, 1100)); // a second later: anything clock-dependent would differ
      await convert(raw, format, b, { name: NAME, mtime: MTIME });
      expect(await sha256(a)).toBe(await sha256(b));
    });
  }

  it('vmdk: a second conversion takes every grain from the piece cache, and writes the same bytes', async () => {
    const cache = join(dir, 'vmdk-cache');
    // The same file name in two directories: the descriptor names its extent file.
    const grains = async (sub: string) => {
      await mkdir(join(dir, sub));
      const out = join(dir, sub, 'disk.vmdk');
      await execa('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=streamOptimized', out, String((await stat(raw)).size)]);
      return { out, ...(await writeVmdkGrains(raw, out, { cacheDir: cache })) };
    };
    const cold = await grains('vmdk-cold');
    expect(cold.cachedPieces).toBe(0);
    const kept = (await readdir(cache)).filter((f) => f.endsWith('.seg'));
    expect(kept.length).toBeGreaterThanOrEqual(4); // the pieces holding the disk's data, at least
    const warm = await grains('vmdk-warm');
    expect(warm.cachedPieces).toBe(kept.length);
    // The same file but for the random content ID qemu-img create writes (convert replaces it).
    const [w, c] = [vmdkWithoutCid(await readFile(warm.out)), vmdkWithoutCid(await readFile(cold.out))];
    expect(w.descriptor).toBe(c.descriptor);
    expect(w.rest.equals(c.rest)).toBe(true);
    await sameContents(raw, warm.out, 'vmdk');
  });

  it('vhdx: written here, with IDs derived from the name and time (qemu-img check, compare)', async () => {
    const a = outPath('vhdx');
    await convert(raw, 'vhdx', a, { name: NAME, mtime: MTIME });
    expect((await execa('qemu-img', ['check', '-f', 'vhdx', a], { reject: false })).exitCode).toBe(0);
    expect((await execa('qemu-img', ['compare', '-f', 'raw', '-F', 'vhdx', raw, a], { reject: false })).exitCode).toBe(0);
    const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', a])).stdout) as { 'virtual-size': number };
    expect(info['virtual-size']).toBeGreaterThanOrEqual((await stat(raw)).size);
  });

  it('a different mtime changes the archives and the VHD footer', async () => {
    const later = new Date(MTIME.getTime() + 86_400_000);
    for (const format of ['gce', 'vhd'] as const) {
      const a = outPath(FORMAT_EXTENSION[format]);
      await convert(raw, format, a, { name: NAME, mtime: later });
      expect(await sha256(a)).not.toBe(await sha256(await converted(raw, format)));
    }
  });
});

describe('failures', () => {
  it('without qemu-img on PATH: missingTool naming qemu-utils; raw, gce and vhdx need no qemu-img', async () => {
    const bin = await mkdtemp(join(dir, 'bin-'));
    for (const t of ['cp', 'tar', 'gzip', 'sgdisk', 'sha256sum', 'rm', 'mv']) {
      const { stdout } = await execa('sh', ['-c', `command -v ${t}`]);
      await symlink(stdout.trim(), join(bin, t));
    }
    const savedPath = process.env.PATH;
    process.env.PATH = bin;
    try {
      vi.resetModules(); // a fresh tools.js: its which() cache has seen qemu-img
      const fresh = await import('../src/artifacts/formats.js');
      for (const format of ['qcow2', 'vmdk', 'vhd', 'vagrant-libvirt', 'vagrant-virtualbox', 'ova'] as const) {
        const out = outPath(FORMAT_EXTENSION[format]);
        const err = await fresh.convert(raw, format, out, { name: NAME, mtime: MTIME }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toMatchObject({ name: 'OemError', code: 'missingTool' });
        expect((err as OemError).message).toContain('qemu-img');
        expect((err as OemError).hint).toContain('qemu-utils');
        await expect(stat(out)).rejects.toMatchObject({ code: 'ENOENT' });
      }
      for (const format of ['raw', 'gce', 'vhdx'] as const) {
        const out = outPath(FORMAT_EXTENSION[format]);
        await fresh.convert(raw, format, out, { name: NAME, mtime: MTIME });
        expect((await stat(out)).size).toBeGreaterThan(0);
      }
    } finally {
      process.env.PATH = savedPath;
      vi.resetModules();
    }
  });

  it('a conversion aborted while it runs is interrupted and leaves no output, nor its work directory', async () => {
    // 48 MiB of incompressible data: gzip (in-process) and the VMDK's deflate (qemu-img) take seconds.
    const busy = join(dir, 'busy.bin');
    await makeDisk(busy, 64 * MiB, []);
    await execa('sh', ['-c', `head -c ${48 * MiB} /dev/urandom | dd of="${busy}" bs=1M seek=16 conv=notrunc status=none`]);
    for (const format of ['gce', 'vmdk', 'ova', 'virtualbox', 'parallels'] as const) {
      const sub = await mkdtemp(join(dir, 'abort-'));
      const out = join(sub, `out.${FORMAT_EXTENSION[format]}`);
      const ctrl = new AbortController();
      const running = convert(busy, format, out, { name: NAME, mtime: MTIME, signal: ctrl.signal });
      // Abort once the conversion has written something (the output or a file in its work directory).
      const started = async (): Promise<boolean> => {
        for (const e of await readdir(sub)) {
          const p = join(sub, e);
          const st = await stat(p).catch(() => null);
          if (st?.isFile() && st.size > 0) return true;
          if (st?.isDirectory()) for (const f of await readdir(p).catch(() => [])) if (((await stat(join(p, f)).catch(() => null))?.size ?? 0) > 0) return true;
        }
        return false;
      };
      let settled = false;
      void running.catch(() => undefined).finally(() => (settled = true));
      while (!settled && !(await started())) await new Promise((r) => setTimeout(r, 5));
      expect(settled, `${format}: the conversion ended before it could be aborted`).toBe(false);
      ctrl.abort();
      await expect(running).rejects.toMatchObject({ code: 'interrupted' });
      expect(await readdir(sub), format).toEqual([]);
    }
  });

  it('refuses an existing output (and leaves it alone) and a missing input', async () => {
    const out = outPath('qcow2');
    await writeFile(out, 'keep');
    await expect(convert(raw, 'qcow2', out, { name: NAME, mtime: MTIME })).rejects.toBeInstanceOf(OemError);
    expect(await readFile(out, 'utf8')).toBe('keep');
    await expect(convert(join(dir, 'missing.bin'), 'gce', outPath('tar.gz'), { name: NAME, mtime: MTIME })).rejects.toBeInstanceOf(OemError);
  });

  describe.runIf(process.getuid?.() === 0)('a full file system [root: mounts a 1 MiB tmpfs]', () => {
    const small = useSmallTmpfs(() => dir);

    for (const format of ['gce', 'qcow2', 'vhdx', 'vmdk', 'vhd', 'ova', 'virtualbox', 'parallels'] as const) {
      it(`${format}: noSpace naming the output, which is removed`, async (ctx) => {
        const mnt = small();
        if (!mnt) return ctx.skip(); // mount not permitted here (e.g. an unprivileged container)
        const out = join(mnt, `out.${FORMAT_EXTENSION[format]}`);
        const err = await convert(raw, format, out, { name: NAME, mtime: MTIME }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(OemError);
        expect(err).toMatchObject({ code: 'noSpace' });
        expect((err as OemError).message).toContain(out);
        expect(await readdir(mnt)).toEqual([]);
      });
    }

    // The OVAs' VMDK fills the disk before their tar runs; here only the archive does not fit: GNU tar
    // writing the file itself (uncompressed), and the gzip stream written by this process.
    for (const gzip of [false, true]) {
      it(`an archive${gzip ? ' (.gz)' : ''} that does not fit: noSpace naming it`, async (ctx) => {
        const mnt = small();
        if (!mnt) return ctx.skip();
        const out = join(mnt, `archive-${++n}.tar${gzip ? '.gz' : ''}`);
        const stage = join(dir, `stage-${n}`);
        const err = await writeTar(out, [{ name: 'disk.raw', path: raw }], { format: 'gnu', gzip, mtime: EPOCH, stage }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(OemError);
        expect(err).toMatchObject({ code: 'noSpace' });
        expect((err as OemError).message).toContain(out);
        await rm(out, { force: true });
      });
    }
  });
});
