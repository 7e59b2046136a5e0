/**
 * Conversion of a built raw disk image into the formats platforms import: qemu-img for the virtual
 * disk formats (but the qcow2, the VHDX, the Parallels disk and the VMDK's grains, written here:
 * qcow2.ts, vhdx.ts, parallels.ts, vmdk.ts), and GNU tar
 * (tar.ts) for the archives (Vagrant boxes, OVAs, the Parallels .pvm bundle; GCE's sparse tar is
 * written here, sparse-tar.ts). Nothing holds an image in memory.
 *
 * Every output is written to the path the caller gives only (callers use temporary names and rename
 * when complete); on failure that path is removed. Intermediate files live in a work directory next
 * to the output (same file system: renames, and the space is counted where the output goes).
 *
 * Reproducibility: the same raw image, name and mtime give the same bytes for raw, qcow2, vmdk, vhd,
 * gce, both boxes, both OVAs and the Parallels bundle (its IDs and MAC addresses are derived like the
 * VMDK CID, see `seeded`). qemu-img itself writes a random content ID into VMDK descriptors and a
 * creation time and random unique ID into VHD footers; both are replaced here by values derived from
 * the name, mtime and size (see `seeded`), as are the VHDX's GUIDs and disk ID (`vhdxIds`).
 */
import { createHash } from 'node:crypto';
import { mkdtemp, open, rename, rm, stat, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { OemError, describe } from '../shared/errors.js';
import { lastLine, requireTool, run } from '../tools.js';
import { exists } from '../shared/safe-fs.js';
import { hashFile } from './hash.js';
import { writeGzip, writeTar, type TarEntry, type TarFormat } from './tar.js';
import { sparseTar } from './sparse-tar.js';
import { writeVmdkGrains } from './vmdk.js';
import { QCOW2_CLUSTER, qcow2Fits, qcow2Segments, writeSegments } from './qcow2.js';
import type { Segment } from './bzip2-reuse.js';
import { PARALLELS_CLUSTER, parallelsFits, parallelsSegments } from './parallels.js';
import { DiskView, nonZeroClusters } from '../image/disk-view.js';
import { vhdxSegments, type VhdxIds } from './vhdx.js';
import {
  PARALLELS_BASE_SNAPSHOT,
  PARALLELS_OUI,
  VIRTUALBOX_OUI,
  macFrom,
  parallelsConfig,
  parallelsDiskDescriptor,
  parallelsHeader,
  ovfEnvelope,
  uuidFrom,
  virtualboxOvf,
  type ParallelsHeader,
} from './vm-configs.js';

export type Format = 'raw' | 'qcow2' | 'vmdk' | 'vhd' | 'vhdx' | 'gce' | 'vagrant-libvirt' | 'vagrant-virtualbox' | 'ova' | 'virtualbox' | 'parallels';

export const FORMATS: readonly Format[] = ['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'gce', 'vagrant-libvirt', 'vagrant-virtualbox', 'ova', 'virtualbox', 'parallels'];

/**
 * File name extension of each format (without the compression suffix).
 *
 * Both Vagrant formats are `.box` files; their extensions name the Vagrant provider as well
 * (`.libvirt.box`, `.virtualbox.box`), always, so the two never collide and an artifact's name does
 * not depend on which other formats were requested. Vagrant does not look at the file name. Likewise
 * the VirtualBox appliance is a `.virtualbox.ova`, never the plain `.ova` of `ova` (VirtualBox needs
 * the name to end in .ova); the Parallels bundle is a gzip'd tar of a `.pvm` directory.
 */
export const FORMAT_EXTENSION: Record<Format, string> = {
  raw: 'bin',
  qcow2: 'qcow2',
  vmdk: 'vmdk',
  vhd: 'vhd',
  vhdx: 'vhdx',
  gce: 'tar.gz',
  'vagrant-libvirt': 'libvirt.box',
  'vagrant-virtualbox': 'virtualbox.box',
  ova: 'ova',
  virtualbox: 'virtualbox.ova',
  parallels: 'pvm.tgz',
};

/** Formats that get the build's compression suffix (.bz2, ...) added; archives are final as they are. */
export const COMPRESSIBLE: Record<Format, boolean> = {
  raw: true,
  qcow2: true,
  vmdk: true,
  vhd: true,
  vhdx: true,
  gce: false,
  'vagrant-libvirt': false,
  'vagrant-virtualbox': false,
  ova: false,
  virtualbox: false,
  parallels: false,
};

/** `{distro}_production_{provider}_image.{ext}`, e.g. flatcar_production_azure_image.vhd. */
export function artifactName(distro: string, provider: string, format: Format): string {
  return `${distro}_production_${provider}_image.${FORMAT_EXTENSION[format]}`;
}

export interface ConvertOptions {
  /** Base name of files inside archives (the OVA's .ovf/.vmdk/.mf, the VM name) and of VMDK descriptors. */
  name: string;
  /** SOURCE_DATE_EPOCH: the mtime of every tar entry, and every other time written (VHD footer). */
  mtime: Date;
  signal?: AbortSignal;
  /** How far the running step of the conversion is (qemu-img's own progress, or bytes archived). */
  onProgress?: (done: number, total: number) => void;
  /** Where gzip'd archives keep their compressed pieces by content (pieced.ts); none: one gzip stream. */
  pieceCache?: string;
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/**
 * The formats made from a view of the disk (disk-view.ts: the base and the partitions a build wrote)
 * as well as from a raw image: their writers read the disk's bytes themselves (qcow2.ts, vhdx.ts,
 * vmdk.ts, sparse-tar.ts, parallels.ts).
 */
export const FROM_VIEW: ReadonlySet<Format> = new Set<Format>(['qcow2', 'vhdx', 'vmdk', 'gce', 'ova', 'virtualbox', 'vagrant-libvirt', 'vagrant-virtualbox', 'parallels']);

/**
 * Converts the raw image `raw` (or, for the FROM_VIEW formats, a view of the disk, which the caller
 * closes) to `format`, writing exactly `out` (which must not exist yet).
 */
export async function convert(disk: string | DiskView, format: Format, out: string, opts: ConvertOptions): Promise<void> {
  if (!FORMATS.includes(format)) throw new OemError(`unknown image format ${String(format)}`, { code: 'usage' });
  if (!opts.name || /[/\0]/.test(opts.name)) throw new OemError(`invalid artifact base name ${JSON.stringify(opts.name)}`, { code: 'usage' });
  if (typeof disk !== 'string' && !FROM_VIEW.has(format)) throw new OemError(`a ${format} is made from a raw image, not a view of one`);
  const raw = typeof disk === 'string' ? disk : `the built disk (${disk.basePath} and the partitions written)`;
  const mtime = epochSeconds(opts.mtime);
  if (format !== 'raw' && format !== 'gce' && format !== 'vhdx') await requireTool('qemu-img', `convert images to ${format}`);
  let size: number;
  if (typeof disk !== 'string') size = disk.size;
  else try {
    const st = await stat(raw);
    if (!st.isFile()) throw new OemError(`${raw} is not a regular file`);
    size = st.size;
  } catch (err) {
    if (err instanceof OemError) throw err;
    throw new OemError(`cannot read the raw image ${raw}: ${describe(err)}`);
  }
  if (await exists(out, { follow: false })) throw new OemError(`${out} already exists`);

  const ctx: Ctx = {
    raw,
    ...(typeof disk === 'string' ? {} : { view: disk }),
    size,
    out,
    name: opts.name,
    mtime,
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    ...(opts.pieceCache ? { pieceCache: opts.pieceCache } : {}),
    work: '',
  };
  try {
    opts.signal?.throwIfAborted();
    ctx.work = await mkdtemp(join(dirname(out), `.${basename(out)}.work-`));
    await CONVERTERS[format](ctx);
    opts.signal?.throwIfAborted();
  } catch (err) {
    await rm(out, { force: true });
    throw failure(err, ctx, format);
  } finally {
    if (ctx.work) await rm(ctx.work, { recursive: true, force: true });
  }
}

interface Ctx {
  /** The raw image (or, with `view`, what to call the disk in messages). */
  raw: string;
  /** The disk to read, for the FROM_VIEW formats (else the raw image is). */
  view?: DiskView;
  size: number;
  out: string;
  name: string;
  /** Seconds since the epoch. */
  mtime: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
  pieceCache?: string;
  /** An empty directory next to `out`, removed afterwards. */
  work: string;
}

const CONVERTERS: Record<Format, (c: Ctx) => Promise<void>> = {
  raw: async (c) => {
    await tool('cp', ['--sparse=always', '--reflink=auto', '--', c.raw, c.out], `copy ${c.raw}`, c);
  },
  qcow2: (c) => qcow2(c, c.out),
  vmdk: async (c) => {
    // qemu-img writes the output's file name into the VMDK descriptor: convert under the final name.
    const tmp = join(c.work, `${c.name}.vmdk`);
    await vmdk(c, tmp);
    await rename(tmp, c.out);
  },
  vhd: (c) => vhd(c),
  vhdx: (c) =>
    // Written here (vhdx.ts) as qemu-img would, with IDs derived from the name and time; no qemu-img path (it has the same 64 TiB limit).
    segmentsFile(c, c.out, {
      noun: 'a VHDX',
      segments: (_view, stored) => vhdxSegments(c.size, stored, QCOW2_CLUSTER, vhdxIds(c.name, c.mtime, c.size)),
    }),
  gce: async (c) => {
    // GCE imports a gzip'd tar in GNU format whose only member is disk.raw, sparse as its import
    // documentation makes it (tar --format=oldgnu -S): only the disk's clusters with data are archived
    // (sparse-tar.ts, from the view: no copy of the disk).
    const view = c.view ?? (await DiskView.open(c.raw));
    try {
      const onData = c.onProgress;
      const archive = sparseTar(view, 'disk.raw', c.mtime, { shareBase: c.view !== undefined, reuse: true, ...(onData ? { onData } : {}) });
      await writeGzip(c.out, archive, { ...(c.pieceCache ? { pieceCache: c.pieceCache } : {}), ...(c.signal ? { signal: c.signal } : {}) });
    } finally {
      if (!c.view) await view.close();
    }
  },
  'vagrant-libvirt': async (c) => {
    const img = join(c.work, 'box.img');
    await qcow2(c, img);
    const metadata = { provider: 'libvirt', format: 'qcow2', virtual_size: Math.max(1, Math.ceil(c.size / GiB)) };
    await archive(
      c,
      sortEntries([
        { name: 'metadata.json', data: Buffer.from(`${JSON.stringify(metadata, null, 2)}\n`) },
        { name: 'box.img', path: img },
        { name: 'Vagrantfile', data: Buffer.from(vagrantfile('libvirt')) },
      ]),
      'gnu',
      true,
    );
  },
  'vagrant-virtualbox': async (c) => {
    const disk = join(c.work, 'box-disk1.vmdk');
    const capacity = await vmdk(c, disk);
    const ovf = ovfEnvelope({ name: c.name, disk: 'box-disk1.vmdk', diskSize: (await stat(disk)).size, capacity });
    await archive(
      c,
      sortEntries([
        { name: 'metadata.json', data: Buffer.from(`${JSON.stringify({ provider: 'virtualbox' }, null, 2)}\n`) },
        { name: 'box.ovf', data: Buffer.from(ovf) },
        { name: 'box-disk1.vmdk', path: disk },
        { name: 'Vagrantfile', data: Buffer.from(vagrantfile('virtualbox')) },
      ]),
      'gnu',
      true,
    );
  },
  ova: async (c) => {
    // OVF spec order: descriptor first, then the disk, then the manifest of both.
    const diskName = `${c.name}-disk1.vmdk`;
    const disk = join(c.work, diskName);
    const capacity = await vmdk(c, disk);
    await ovaPackage(c, Buffer.from(ovfEnvelope({ name: c.name, disk: diskName, diskSize: (await stat(disk)).size, capacity })), disk);
  },
  virtualbox: async (c) => {
    // Flatcar's virtualbox type (vm_image_util.sh: DISK_FORMAT vmdk_ide, CONF_FORMAT ovf_virtualbox)
    // as one appliance: the VMDK for an IDE adapter, streamOptimized as an OVA's disk is, and an OVF
    // for VirtualBox. Laid out as `ova`: descriptor, disk, SHA256 manifest of both.
    const diskName = `${c.name}-disk1.vmdk`;
    const disk = join(c.work, diskName);
    const capacity = await vmdk(c, disk, 'ide');
    const ovf = Buffer.from(
      virtualboxOvf({
        name: c.name,
        disk: diskName,
        diskSize: (await stat(disk)).size,
        capacity,
        diskUuid: uuidFrom(seeded('virtualbox disk', c)),
        machineUuid: uuidFrom(seeded('virtualbox machine', c)),
        mac: macFrom(VIRTUALBOX_OUI, seeded('virtualbox mac', c)),
        mtime: c.mtime,
      }),
    );
    await ovaPackage(c, ovf, disk);
  },
  parallels: async (c) => {
    // Flatcar's parallels type (DISK_FORMAT hdd, CONF_FORMAT pvs, BUNDLE_FORMAT pvm_tgz): a .pvm
    // bundle, `<name>.pvm/` with the VM's config.pvs and the hard disk directory `<name>.hdd/`
    // (DiskDescriptor.xml, the expanding image as the base snapshot's data file, written here as
    // qemu-img writes it, parallels.ts, and the empty file of the disk's own name that Parallels keeps
    // there), as a gzip'd GNU tar.
    // The artifact is <name>.pvm.tgz: the bundle is <name>.pvm, not <name>.pvm.pvm.
    const name = c.name.replace(/\.pvm$/, '');
    const pvm = `${name}.pvm`;
    const hdd = `${name}.hdd`;
    const dataName = `${hdd}.0.${PARALLELS_BASE_SNAPSHOT}.hds`;
    const data = join(c.work, dataName);
    await parallelsDisk(c, data);
    const header = await readParallelsHeader(data);
    const vs = await virtualSize(data, 'parallels', c);
    if (header.sectors * 512 !== vs || vs < c.size || vs - c.size >= 512) {
      throw new OemError(`the Parallels disk reads as ${vs} bytes (${header.sectors} sectors), made from an image of ${c.size} bytes`);
    }
    const descriptor = parallelsDiskDescriptor({ name, dataFile: dataName, header, uid: uuidFrom(seeded('parallels disk', c)) });
    const config = parallelsConfig({
      name,
      hdd,
      diskBytes: vs,
      dataBytes: (await stat(data)).size,
      vmUuid: uuidFrom(seeded('parallels vm', c)),
      hddUuid: uuidFrom(seeded('parallels hdd', c)),
      mac: macFrom(PARALLELS_OUI, seeded('parallels mac', c)),
      mtime: c.mtime,
    });
    await writeTar(
      c.out,
      [
        { name: pvm, dir: true },
        { name: `${pvm}/config.pvs`, data: Buffer.from(config) },
        { name: `${pvm}/${hdd}`, dir: true },
        { name: `${pvm}/${hdd}/DiskDescriptor.xml`, data: Buffer.from(descriptor) },
        { name: `${pvm}/${hdd}/${hdd}`, data: Buffer.alloc(0) },
        { name: `${pvm}/${hdd}/${dataName}`, path: data },
      ],
      {
        format: 'gnu',
        gzip: true,
        mtime: c.mtime,
        stage: join(c.work, 'archive'),
        ...(c.signal ? { signal: c.signal } : {}),
        ...(c.onProgress ? { onProgress: c.onProgress } : {}),
        ...(c.pieceCache ? { pieceCache: c.pieceCache } : {}),
      },
    );
  },
};

// ---------------------------------------------------------------------------------------------
// qemu-img formats

/** A qcow2, written by qcow2.ts (qemu-img for disks too large for it). */
async function qcow2(c: Ctx, out: string): Promise<void> {
  await segmentsFile(c, out, {
    noun: 'a qcow2',
    qemu: { fits: qcow2Fits(c.size), args: ['-O', 'qcow2', '-o', 'compat=1.1'] },
    // Split where the first region a build wrote starts, as for a .qcow2.bz2 (build/artifacts.ts): the same file either way.
    segments: (view, stored) => qcow2Segments(c.size, stored, Math.min(c.size, ...view.regions.map((r) => r.offset))),
  });
}

/**
 * The Parallels expanding disk (parallels.ts), its 1 MiB clusters folded from the 64 KiB map the
 * qcow2, the VMDK and GCE's archive share.
 */
async function parallelsDisk(c: Ctx, out: string): Promise<void> {
  const per = PARALLELS_CLUSTER / QCOW2_CLUSTER;
  await segmentsFile(c, out, {
    noun: 'a Parallels disk',
    qemu: { fits: parallelsFits(c.size), args: ['-O', 'parallels'] },
    segments: (_view, fine) => {
      const stored = new Uint8Array(Math.ceil(fine.length / per));
      for (let i = 0; i < fine.length; i++) if (fine[i]) stored[Math.floor(i / per)] = 1;
      return parallelsSegments(c.size, stored);
    },
  });
}

/**
 * A disk image file written here as segments (qcow2.ts, vhdx.ts, parallels.ts) of the view (or of the
 * raw image), given which of the disk's 64 KiB clusters hold data; or, for a disk too large for the
 * writer (`qemu.fits` false), converted by qemu-img from the raw image.
 */
async function segmentsFile(
  c: Ctx,
  out: string,
  w: { noun: string; qemu?: { fits: boolean; args: string[] }; segments: (view: DiskView, stored: Uint8Array) => Segment[] },
): Promise<void> {
  if (w.qemu && !w.qemu.fits) {
    if (c.view) throw new OemError(`${w.noun} of a disk of ${c.size} bytes is converted from a raw image, not a view of one`);
    await qemuImg(['convert', '-f', 'raw', ...w.qemu.args, c.raw, out], `convert the image to ${w.noun}`, c);
    return;
  }
  const view = c.view ?? (await DiskView.open(c.raw));
  try {
    const stored = await nonZeroClusters(view, QCOW2_CLUSTER, { shareBase: c.view !== undefined });
    await writeSegments(view, w.segments(view, stored), out, { ...(c.signal ? { signal: c.signal } : {}), ...(c.onProgress ? { onProgress: c.onProgress } : {}) });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') throw noSpace(c.out, err);
    throw err;
  } finally {
    if (!c.view) await view.close();
  }
}

/**
 * A streamOptimized VMDK (what EC2, VMware and VirtualBox import) with a reproducible CID; returns its
 * virtual size. `adapter` sets the descriptor's ddb.adapterType (qemu-img's default is ide).
 */
/**
 * A streamOptimized VMDK: qemu-img makes the empty disk (header, descriptor and grain directories, as
 * it would for a conversion), vmdk.ts writes the grains in qemu-img's layout, from the piece cache
 * where the disk did not change.
 */
async function vmdk(c: Ctx, out: string, adapter?: 'ide'): Promise<number> {
  const options = adapter ? `subformat=streamOptimized,adapter_type=${adapter}` : 'subformat=streamOptimized';
  await qemuImg(['create', '-q', '-f', 'vmdk', '-o', options, out, String(c.size)], 'create the VMDK', c);
  try {
    await writeVmdkGrains(c.view ?? c.raw, out, { ...(c.pieceCache ? { cacheDir: c.pieceCache } : {}), ...(c.signal ? { signal: c.signal } : {}), ...(c.onProgress ? { onProgress: c.onProgress } : {}) });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') throw noSpace(c.out, err);
    throw err;
  }
  await setVmdkCid(out, seeded('vmdk-cid', c).readUInt32BE(0));
  return virtualSize(out, 'vmdk', c);
}

/**
 * Azure: a fixed VHD whose virtual size is a whole number of MiB (rounded up, the padding zero). A
 * fixed VHD is the disk's bytes, then the 512-byte footer qemu-img writes (made here by `qemu-img
 * create` of an empty VHD of the same size, which costs nothing), so the raw image is copied (sparse,
 * a reflink where the file system can) and the padding and footer appended: no conversion.
 */
async function vhd(c: Ctx): Promise<void> {
  const trailer = await fixedVhdTrailer(c.size, { name: c.name, mtime: c.mtime, work: c.work });
  c.onProgress?.(0, c.size + trailer.length);
  await tool('cp', ['--sparse=always', '--reflink=auto', '--', c.raw, c.out], `copy ${c.raw}`, c);
  const fh = await open(c.out, 'r+');
  try {
    await fh.write(trailer, 0, trailer.length, c.size);
  } finally {
    await fh.close();
  }
  c.onProgress?.(c.size + trailer.length, c.size + trailer.length);
  const vs = await virtualSize(c.out, 'vpc', c);
  const fileSize = (await stat(c.out)).size;
  if (vs % MiB !== 0 || fileSize !== vs + 512 || vs < c.size) {
    throw new OemError(`the VHD made has virtual size ${vs} in a file of ${fileSize} bytes; Azure needs a fixed VHD of whole MiB + 512 bytes`);
  }
}

/**
 * What follows a disk of `size` bytes in its fixed VHD: zeros up to a whole MiB, then the footer of
 * qemu-img (`subformat=fixed,force_size=on`) with the time and unique ID made reproducible.
 */
export async function fixedVhdTrailer(size: number, opts: { name: string; mtime: Date | number; work?: string }): Promise<Buffer> {
  const rounded = Math.max(MiB, Math.ceil(size / MiB) * MiB);
  const dir = opts.work ?? (await mkdtemp(join(tmpdir(), 'oem-vhd-')));
  const empty = join(dir, `footer-${process.pid}.vhd`);
  const c: Ctx = { raw: '', size, out: empty, name: opts.name, mtime: typeof opts.mtime === 'number' ? opts.mtime : epochSeconds(opts.mtime), work: dir };
  try {
    await requireTool('qemu-img', 'make the VHD footer');
    await qemuImg(['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on', empty, String(rounded)], 'make the VHD footer', c);
    const fh = await open(empty, 'r');
    const footer = Buffer.alloc(512);
    try {
      const { size: fileSize } = await fh.stat();
      if (fileSize !== rounded + 512) throw new OemError(`qemu-img made a fixed VHD of ${fileSize} bytes for ${rounded}; expected ${rounded + 512}`);
      await fh.read(footer, 0, 512, rounded);
    } finally {
      await fh.close();
    }
    patchVhdFooterBuffer(footer, c, empty);
    return Buffer.concat([Buffer.alloc(rounded - size), footer]);
  } finally {
    await rm(empty, { force: true });
    if (!opts.work) await rm(dir, { recursive: true, force: true });
  }
}

/** Replaces the CID of a monolithic VMDK's embedded descriptor (qemu-img writes a random one). */
async function setVmdkCid(path: string, cid: number): Promise<void> {
  if (cid === 0xffffffff || cid === 0xfffffffe) cid = 0x7fffffff; // reserved meanings ("no parent")
  const fh = await open(path, 'r+');
  try {
    const header = Buffer.alloc(512);
    await fh.read(header, 0, 512, 0);
    if (header.toString('latin1', 0, 4) !== 'KDMV') throw new OemError(`${path} is not a VMDK with an embedded descriptor`);
    const offset = Number(header.readBigUInt64LE(28)) * 512;
    const length = Number(header.readBigUInt64LE(36)) * 512;
    if (offset === 0 || length === 0 || length > MiB) throw new OemError(`${path}: unexpected VMDK descriptor location`);
    const area = Buffer.alloc(length);
    await fh.read(area, 0, length, offset);
    const end = area.indexOf(0);
    const text = area.toString('latin1', 0, end < 0 ? length : end);
    if (!/^CID=[0-9a-fA-F]+$/m.test(text)) throw new OemError(`${path}: no CID in the VMDK descriptor`);
    const next = Buffer.from(text.replace(/^CID=[0-9a-fA-F]+$/m, `CID=${cid.toString(16).padStart(8, '0')}`), 'latin1');
    if (next.length > length) throw new OemError(`${path}: the VMDK descriptor area is full`);
    const updated = Buffer.alloc(length);
    next.copy(updated);
    await fh.write(updated, 0, length, offset);
  } finally {
    await fh.close();
  }
}

/** VHD footer: sets the timestamp to mtime and the unique ID to a seeded one, and fixes the checksum. */
function patchVhdFooterBuffer(f: Buffer, c: Ctx, path: string): void {
  if (f.toString('latin1', 0, 8) !== 'conectix' || f.readUInt32BE(60) !== 2) throw new OemError(`${path} does not end in a fixed VHD footer`);
  const VHD_EPOCH = 946_684_800; // 2000-01-01T00:00:00Z
  f.writeUInt32BE(Math.min(0xffffffff, Math.max(0, c.mtime - VHD_EPOCH)), 24);
  uuidInto(seeded('vhd-id', c), f, 68);
  f.writeUInt32BE(0, 64);
  let sum = 0;
  for (const b of f) sum += b;
  f.writeUInt32BE(~sum >>> 0, 64);
}

/** 32 bytes derived from the conversion's inputs, for IDs that qemu-img would make random. */
function seeded(purpose: string, c: Pick<Ctx, 'name' | 'mtime' | 'size'>): Buffer {
  return createHash('sha256').update(`${purpose}\0${c.name}\0${c.mtime}\0${c.size}`).digest();
}

/** The VHDX's GUIDs and disk ID for an artifact named `name` (its base name), made at `mtime` (a Date, or seconds), of a disk of `size` bytes. */
export function vhdxIds(name: string, mtime: Date | number, size: number): VhdxIds {
  const c = { name, mtime: typeof mtime === 'number' ? mtime : epochSeconds(mtime), size };
  const id = (purpose: string) => {
    const u = Buffer.alloc(16);
    uuidInto(seeded(purpose, c), u, 0);
    return u;
  };
  return { fileWrite: id('vhdx file write'), dataWrite: id('vhdx data write'), disk: id('vhdx disk id') };
}

/** Writes the first 16 bytes of `seed` as an RFC 9562 version 8 (custom) UUID. */
function uuidInto(seed: Buffer, to: Buffer, at: number): void {
  const u = Buffer.from(seed.subarray(0, 16));
  u[6] = (u[6]! & 0x0f) | 0x80;
  u[8] = (u[8]! & 0x3f) | 0x80;
  u.copy(to, at);
}

/** The header of the Parallels image qemu-img wrote, checked (parallelsHeader). */
async function readParallelsHeader(path: string): Promise<ParallelsHeader> {
  const fh = await open(path, 'r');
  try {
    const h = Buffer.alloc(64);
    await fh.read(h, 0, 64, 0);
    return parallelsHeader(h);
  } catch (err) {
    throw new OemError(`an unexpected Parallels image ${basename(path)}: ${describe(err)}`);
  } finally {
    await fh.close();
  }
}

async function virtualSize(path: string, format: string, c: Ctx): Promise<number> {
  const out = await qemuImg(['info', '-f', format, '--output', 'json', path], `read back ${basename(path)}`, c);
  const vs = (JSON.parse(out) as { 'virtual-size'?: unknown })['virtual-size'];
  if (typeof vs !== 'number') throw new OemError(`qemu-img info gave no virtual size for ${path}`);
  return vs;
}

/** qemu-img; a conversion reports its progress (`-p`: "(42.00/100%)" on stdout) to the context. */
async function qemuImg(args: string[], why: string, c: Ctx): Promise<string> {
  if (args[0] !== 'convert' || !c.onProgress) return tool('qemu-img', args, why, c);
  const report = c.onProgress;
  const onStdout = (text: string) => {
    const all = [...text.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
    if (all.length) report(Number(all[all.length - 1]![1]), 100);
  };
  return tool('qemu-img', ['convert', '-p', ...args.slice(1)], why, c, onStdout);
}

/**
 * Runs a tool; a failure for lack of space becomes a noSpace error naming the output. qemu-img does
 * not always say so (its streamOptimized VMDK writer reports a full disk as "Invalid argument"), so
 * a failure while the output's file system is (nearly) full counts as one too.
 */
async function tool(name: string, args: string[], why: string, c: Ctx, onStdout?: (text: string) => void): Promise<string> {
  const r = await run(name, args, why, { allowFail: true, ...(c.signal ? { cancelSignal: c.signal } : {}), ...(onStdout ? { onStdout } : {}) });
  if (r.exitCode !== 0) {
    const err = new OemError(`${name} failed to ${why}: ${lastLine(r.stderr, `exit code ${r.exitCode}`)}`);
    if (/no space left on device/i.test(r.stderr) || (await nearlyFull(c.out))) throw noSpace(c.out, err);
    throw err;
  }
  return r.stdout;
}

/** Whether the file system of `path` has less than 16 MiB left for this process. */
async function nearlyFull(path: string): Promise<boolean> {
  try {
    const s = await statfs(dirname(path));
    const blocks = process.getuid?.() === 0 ? s.bfree : s.bavail;
    return blocks * s.bsize < 16 * MiB;
  } catch {
    return false;
  }
}

function noSpace(out: string, cause?: unknown): OemError {
  return new OemError(`no space left on the device while writing ${out}`, {
    code: 'noSpace',
    hint: `free space in ${dirname(out)} or write the artifacts elsewhere`,
    ...(cause === undefined ? {} : { cause }),
  });
}

function failure(err: unknown, c: Ctx, format: Format): unknown {
  if (c.signal?.aborted) return new OemError(`interrupted while converting ${c.raw} to ${format}`, { code: 'interrupted' });
  if (err instanceof OemError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return noSpace(c.out, err);
  return new OemError(`cannot convert ${c.raw} to ${format}: ${describe(err)}`, { cause: err });
}


function epochSeconds(d: Date): number {
  const t = d.getTime();
  if (!Number.isFinite(t) || t < 0) throw new OemError(`invalid mtime ${String(d)}`, { code: 'usage' });
  return Math.floor(t / 1000);
}

// ---------------------------------------------------------------------------------------------
// Vagrant and OVF descriptors

/** The box's own Vagrantfile: defaults for Container Linux guests (user core, no guest additions). */
function vagrantfile(provider: 'libvirt' | 'virtualbox'): string {
  const providerBlock =
    provider === 'libvirt'
      ? ['  config.vm.provider :libvirt do |libvirt|', '    libvirt.driver = "kvm"', '  end']
      : ['  config.vm.provider :virtualbox do |vb|', '    vb.check_guest_additions = false', '    vb.functional_vboxsf = false', '  end'];
  return [
    '# Defaults of machines made from this box; the Vagrantfile of a project overrides them.',
    'Vagrant.configure("2") do |config|',
    '  config.ssh.username = "core"',
    '  config.vm.synced_folder ".", "/vagrant", disabled: true',
    ...providerBlock,
    'end',
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// archives

/** Vagrant boxes list their members by name (bytewise), as `tar` of a sorted directory would. */
/** An OVA: the descriptor `<name>.ovf` first, then the disk, then `<name>.mf` with the SHA256 of both (ustar, as OVF 1.0 requires). */
async function ovaPackage(c: Ctx, ovf: Buffer, disk: string): Promise<void> {
  const ovfName = `${c.name}.ovf`;
  const diskName = basename(disk);
  const diskSha = (await hashFile(disk, ['sha256'])).hex.sha256;
  const mf = `SHA256(${ovfName})= ${createHash('sha256').update(ovf).digest('hex')}\nSHA256(${diskName})= ${diskSha}\n`;
  await archive(
    c,
    [
      { name: ovfName, data: ovf },
      { name: diskName, path: disk },
      { name: `${c.name}.mf`, data: Buffer.from(mf) },
    ],
    'ustar',
    false,
  );
}

function sortEntries(entries: TarEntry[]): TarEntry[] {
  return entries.sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
}

async function archive(c: Ctx, entries: TarEntry[], format: TarFormat, gzip: boolean): Promise<void> {
  await writeTar(c.out, entries, {
    format,
    gzip,
    mtime: c.mtime,
    stage: join(c.work, 'archive'),
    ...(c.signal ? { signal: c.signal } : {}),
    ...(c.onProgress ? { onProgress: c.onProgress } : {}),
    ...(c.pieceCache ? { pieceCache: c.pieceCache } : {}),
  });
}
