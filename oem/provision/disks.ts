/**
 * The storage section of the provisioning config: GPT partitions (sgdisk), software RAID (mdadm), LVM
 * (pvcreate/vgcreate/lvcreate), filesystems (mkfs.*, mkswap) and the systemd .mount/.swap units that
 * mount them.
 *
 * planStorage turns a Storage section plus what a Probe sees on the machine into the exact commands to
 * run, in order, and the unit files to write. It is idempotent: what already exists as configured is
 * kept (a disk partitioned as configured, an assembled array, a volume group, a logical volume, a
 * filesystem of the configured format and label), so a second run plans no commands. It never destroys
 * data the config does not ask it to: a device holding something else is refused unless the filesystem
 * says force (or, for a disk, wipe_table).
 *
 * applyStorage runs a plan (or, with dryRun, prints it) and writes and enables the units under a root.
 */
import { lstat, mkdir, readFile, readlink, rename, symlink, unlink, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Filesystem, FilesystemFormat, Partition, Raid, Storage, VolumeGroup } from '../../src/shared/config/types.js';
import { OemError, describe } from '../../src/shared/errors.js';
import { exists } from '../../src/shared/safe-fs.js';

/** One command of a plan. allowFail: a failure is logged and ignored. waitFor: device nodes to wait for first. */
export type Command = { cmd: string; args: string[]; why: string; allowFail?: boolean; waitFor?: string[] };

export type RunResult = { stdout: string; stderr: string; exitCode: number };
export type Run = (cmd: string, args: string[]) => Promise<RunResult>;

/** What blkid sees on a device; null: nothing (or no such device). */
export type BlkidInfo = { type?: string; label?: string; uuid?: string };

export type ExistingPartition = {
  number: number;
  /** First and last sector (inclusive), in the disk's logical sectors. */
  start: number;
  end: number;
  label: string;
  typeGuid: string;
  guid: string;
};

export type DiskInfo = {
  /** gpt: a GUID partition table; none: no table and no signature; other: anything else (MBR, a filesystem, ...). */
  table: 'gpt' | 'none' | 'other';
  /** What the disk holds when table is other, e.g. "dos partition table". */
  holds?: string;
  /** Logical sector size in bytes. */
  sectorSize: number;
  partitions: ExistingPartition[];
};

export type Probe = {
  blkid(dev: string): Promise<BlkidInfo | null>;
  mdExists(name: string): Promise<boolean>;
  vgExists(name: string): Promise<boolean>;
  lvExists(vg: string, lv: string): Promise<boolean>;
  /**
   * The partition table of a disk, or null when it cannot be read (no such device). Optional: without
   * it every disk is partitioned as if it were empty, with 512-byte sectors.
   */
  disk?(dev: string): Promise<DiskInfo | null>;
};

export type UnitFile = { name: string; content: string };

export type StoragePlan = {
  commands: Command[];
  units: UnitFile[];
  /** Why things were left alone (already as configured), one line each. */
  notes: string[];
};

export const LINUX_FILESYSTEM_GUID = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
const MIB = 1024 * 1024;
const LEVELS: Raid['level'][] = ['linear', 'raid0', 'raid1', 'raid4', 'raid5', 'raid6', 'raid10'];
/** Fewest active (non-spare) devices mdadm builds each level from without --force. */
const MIN_ACTIVE: Record<Raid['level'], number> = { linear: 1, raid0: 2, raid1: 2, raid4: 3, raid5: 3, raid6: 4, raid10: 2 };
const FORMATS: FilesystemFormat[] = ['ext4', 'btrfs', 'xfs', 'vfat', 'swap'];
/** Longest label (bytes) each mkfs accepts. */
const LABEL_MAX: Record<FilesystemFormat, number> = { ext4: 16, btrfs: 255, xfs: 12, vfat: 11, swap: 16 };
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const VFAT_ID_RE = /^[0-9a-f]{4}-?[0-9a-f]{4}$/i;
const GUID_RE = UUID_RE;

function configError(message: string, hint?: string): OemError {
  return new OemError(message, { code: 'usage', ...(hint === undefined ? {} : { hint }) });
}

function refuse(message: string, hint: string): OemError {
  return new OemError(message, { code: 'failure', hint });
}

// ---------------------------------------------------------------------------------------------------
// systemd names

/** `systemd-escape --path`: /var/lib/data → var-lib-data, /srv/x-y → srv-x\x2dy, / → -. */
export function systemdEscapePath(path: string): string {
  if (!path.startsWith('/')) throw configError(`not an absolute path: ${JSON.stringify(path)}`);
  const parts = path.split('/').filter((p) => p !== '');
  if (parts.some((p) => p === '.' || p === '..')) throw configError(`not a normalized path: ${JSON.stringify(path)}`);
  if (parts.length === 0) return '-';
  const bytes = Buffer.from(parts.join('/'), 'utf8');
  let out = '';
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    const c = String.fromCharCode(b);
    if (c === '/') out += '-';
    else if ((c === '.' && i === 0) || !/[A-Za-z0-9:_.]/.test(c) || b >= 0x80) out += `\\x${b.toString(16).padStart(2, '0')}`;
    else out += c;
  }
  return out;
}

/** The shell form of a command, quoted only where needed. */
export function commandLine(c: Pick<Command, 'cmd' | 'args'>): string {
  const q = (s: string) => (/^[A-Za-z0-9_\-+=:,./@%^]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  return [c.cmd, ...c.args].map(q).join(' ');
}

// ---------------------------------------------------------------------------------------------------
// Planning

type Wanted = { p: Partition; number: number; label?: string; typeGuid: string; guid?: string; startMib: number; sizeMib: number };

function checkMib(v: number | undefined, what: string): number {
  if (v === undefined) return 0;
  if (!Number.isSafeInteger(v) || v < 0) throw configError(`${what} must be a whole number of MiB ≥ 0, not ${String(v)}`);
  return v;
}

function checkDevice(dev: unknown, what: string): string {
  if (typeof dev !== 'string' || !dev.startsWith('/') || dev.includes('\0') || /\s/.test(dev)) {
    throw configError(`${what}: not an absolute device path: ${JSON.stringify(dev)}`);
  }
  return dev;
}

/** Device paths a partition of `disk` gets: the kernel name, by-id/by-path -partN, by-partlabel, by-partuuid. */
export function partitionPaths(disk: string, number: number, label?: string, guid?: string): string[] {
  const out: string[] = [];
  if (/^\/dev\/disk\/by-(id|path)\//.test(disk)) out.push(`${disk}-part${number}`);
  else out.push(`${disk}${/[0-9]$/.test(basename(disk)) ? 'p' : ''}${number}`);
  if (label) out.push(`/dev/disk/by-partlabel/${label}`);
  if (guid) out.push(`/dev/disk/by-partuuid/${guid.toLowerCase()}`);
  return out;
}

function partitionMatches(w: Wanted, e: ExistingPartition | undefined, spm: number): boolean {
  if (!e) return false;
  if (w.label !== undefined && e.label !== w.label) return false;
  if (e.typeGuid.toUpperCase() !== w.typeGuid) return false;
  if (w.guid !== undefined && e.guid.toUpperCase() !== w.guid) return false;
  if (w.startMib && e.start !== w.startMib * spm) return false;
  if (w.sizeMib && e.end - e.start + 1 !== w.sizeMib * spm) return false;
  return true;
}

function describePartition(e: ExistingPartition, spm: number): string {
  const mib = (n: number) => (n / spm) % 1 === 0 ? `${n / spm} MiB` : `${n} sectors`;
  return `label ${JSON.stringify(e.label)}, type ${e.typeGuid}, start ${mib(e.start)}, size ${mib(e.end - e.start + 1)}`;
}

export async function planStorage(storage: Storage, probe: Probe): Promise<StoragePlan> {
  const commands: Command[] = [];
  const notes: string[] = [];
  /** Devices this plan creates or wipes: nothing on them is worth keeping, and they may not exist yet. */
  const fresh = new Set<string>();
  const waitFor = (devs: string[]) => {
    const w = devs.filter((d) => fresh.has(d));
    return w.length ? { waitFor: w } : {};
  };

  // Disks ------------------------------------------------------------------------------------------
  const seenDisks = new Set<string>();
  for (const [di, disk] of (storage.disks ?? []).entries()) {
    const dev = checkDevice(disk.device, `disks[${di}].device`);
    if (seenDisks.has(dev)) throw configError(`disk ${dev} is listed twice`);
    seenDisks.add(dev);
    const info = probe.disk ? await probe.disk(dev) : null;
    const sectorSize = info?.sectorSize ?? 512;
    const spm = MIB / sectorSize;
    if (!Number.isInteger(spm)) throw new OemError(`${dev}: unsupported sector size ${sectorSize}`);

    const parts = disk.partitions ?? [];
    const explicit = new Set<number>();
    for (const [pi, p] of parts.entries()) {
      const n = p.number ?? 0;
      if (!Number.isInteger(n) || n < 0 || n > 128) throw configError(`${dev}: partition number must be 1-128 (or 0 for the next free one), not ${String(n)}`);
      if (n && explicit.has(n)) throw configError(`${dev}: partition number ${n} is listed twice`);
      if (n) explicit.add(n);
      if (p.label !== undefined) {
        const units = p.label.length; // UTF-16 code units, as GPT stores them
        if (units === 0 || units > 36) throw configError(`${dev}: partition label ${JSON.stringify(p.label)} must be 1-36 characters`);
      }
      if (p.type_guid !== undefined && !GUID_RE.test(p.type_guid)) throw configError(`${dev}: partitions[${pi}].type_guid is not a GUID: ${p.type_guid}`);
      if (p.guid !== undefined && !GUID_RE.test(p.guid)) throw configError(`${dev}: partitions[${pi}].guid is not a GUID: ${p.guid}`);
    }

    const wipe = disk.wipe_table === true;
    if (!wipe && info?.table === 'other') {
      throw refuse(`${dev} holds ${info.holds ?? 'something other than a GPT'}, not a GPT; refusing to repartition it`, 'set wipe_table: true to replace it with a new GPT (this destroys the disk\'s data)');
    }
    const existing = !wipe && info?.table === 'gpt' ? info.partitions : [];
    const taken = new Set<number>([...explicit, ...existing.map((e) => e.number)]);
    const claimed = new Set<number>(explicit);
    const wanted: Wanted[] = parts.map((p) => {
      let number = p.number ?? 0;
      if (!number && p.label !== undefined) {
        // On a re-run an automatically numbered partition is the unclaimed existing one with its label.
        const same = existing.find((e) => e.label === p.label && !claimed.has(e.number));
        if (same) number = same.number;
      }
      if (!number) {
        number = 1;
        while (taken.has(number)) number++;
        if (number > 128) throw configError(`${dev}: no free partition number left`);
      }
      taken.add(number);
      claimed.add(number);
      return {
        p,
        number,
        ...(p.label === undefined ? {} : { label: p.label }),
        typeGuid: (p.type_guid ?? LINUX_FILESYSTEM_GUID).toUpperCase(),
        ...(p.guid === undefined ? {} : { guid: p.guid.toUpperCase() }),
        startMib: checkMib(p.start_mib, `${dev}: partition ${number} start_mib`),
        sizeMib: checkMib(p.size_mib, `${dev}: partition ${number} size_mib`),
      };
    });

    const newPartition = (w: Wanted): Command => {
      const start = w.startMib ? String(w.startMib * spm) : '0';
      const end = w.sizeMib ? `+${w.sizeMib * spm}` : '0';
      const args = [`--new=${w.number}:${start}:${end}`];
      if (w.label !== undefined) args.push(`--change-name=${w.number}:${w.label}`);
      args.push(`--typecode=${w.number}:${w.typeGuid}`);
      if (w.guid !== undefined) args.push(`--partition-guid=${w.number}:${w.guid}`);
      args.push(dev);
      for (const path of partitionPaths(dev, w.number, w.label, w.guid)) fresh.add(path);
      const size = w.sizeMib ? `${w.sizeMib} MiB` : 'the rest of the free space';
      return { cmd: 'sgdisk', args, why: `create partition ${w.number}${w.label ? ` (${w.label})` : ''} on ${dev}: ${size}` };
    };
    const reread: Command[] = [
      { cmd: 'blockdev', args: ['--rereadpt', dev], why: `have the kernel re-read the partition table of ${dev}`, allowFail: true },
      { cmd: 'partx', args: ['-u', dev], why: `update the kernel's partitions of ${dev} (when the table could not be re-read as a whole)`, allowFail: true },
    ];

    if (wipe) {
      const byNumber = new Map((info?.table === 'gpt' ? info.partitions : []).map((e) => [e.number, e]));
      const same = info?.table === 'gpt' && info.partitions.length === wanted.length && wanted.every((w) => partitionMatches(w, byNumber.get(w.number), spm));
      if (same) {
        notes.push(`${dev}: already partitioned as configured; keeping its partition table`);
        continue;
      }
      fresh.add(dev);
      commands.push({ cmd: 'sgdisk', args: ['--zap-all', dev], why: `wipe_table: destroy the partition tables on ${dev}` });
      commands.push({ cmd: 'sgdisk', args: ['--clear', dev], why: `wipe_table: write a new, empty GPT to ${dev}` });
      for (const w of wanted) commands.push(newPartition(w));
      commands.push(...reread);
      continue;
    }

    let created = 0;
    for (const w of wanted) {
      const e = existing.find((x) => x.number === w.number);
      if (e) {
        if (!partitionMatches(w, e, spm)) {
          throw refuse(
            `${dev}: partition ${w.number} exists but differs from the config (${describePartition(e, spm)}); refusing to change it`,
            'set wipe_table: true to repartition the disk (this destroys its data), or make the config match',
          );
        }
        notes.push(`${dev}: partition ${w.number}${w.label ? ` (${w.label})` : ''} already exists as configured`);
        continue;
      }
      commands.push(newPartition(w));
      created++;
    }
    if (created) commands.push(...reread);
  }

  // Members of an array or a volume group: refuse devices holding something else.
  const checkMember = async (dev: string, allowed: string, what: string) => {
    if (fresh.has(dev)) return;
    const b = await probe.blkid(dev);
    if (b?.type && b.type !== allowed) {
      throw refuse(
        `${dev} holds ${describeFs(b)}; refusing to make it ${what}`,
        `if its data is not needed, clear it first (wipefs -a ${dev}) or use a device the config partitions with wipe_table`,
      );
    }
  };

  // RAID -------------------------------------------------------------------------------------------
  const seenArrays = new Set<string>();
  for (const [ri, r] of (storage.raid ?? []).entries()) {
    if (typeof r.name !== 'string' || !/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(r.name)) throw configError(`raid[${ri}].name is not a valid array name: ${JSON.stringify(r.name)}`);
    if (seenArrays.has(r.name)) throw configError(`RAID array ${r.name} is listed twice`);
    seenArrays.add(r.name);
    if (!LEVELS.includes(r.level)) throw configError(`raid ${r.name}: unknown level ${JSON.stringify(r.level)} (one of ${LEVELS.join(', ')})`);
    const devices = (r.devices ?? []).map((d, i) => checkDevice(d, `raid ${r.name} devices[${i}]`));
    if (new Set(devices).size !== devices.length) throw configError(`raid ${r.name}: a device is listed twice`);
    const spares = r.spares ?? 0;
    if (!Number.isInteger(spares) || spares < 0) throw configError(`raid ${r.name}: spares must be a whole number ≥ 0`);
    if (spares && (r.level === 'linear' || r.level === 'raid0')) throw configError(`raid ${r.name}: ${r.level} has no redundancy and cannot have spares`);
    const active = devices.length - spares;
    if (active < MIN_ACTIVE[r.level]) {
      throw configError(`raid ${r.name}: ${r.level} needs at least ${MIN_ACTIVE[r.level]} active devices, the config gives ${active} (${devices.length} devices, ${spares} spares)`);
    }
    const md = `/dev/md/${r.name}`;
    if (await probe.mdExists(r.name)) {
      notes.push(`${md}: the array already exists`);
      continue;
    }
    for (const d of devices) await checkMember(d, 'linux_raid_member', `a member of RAID array ${r.name}`);
    const args = ['--create', md, '--run', `--level=${r.level}`, `--raid-devices=${active}`];
    if (spares) args.push(`--spare-devices=${spares}`);
    args.push('--metadata=1.2', '--homehost=any', ...devices);
    commands.push({ cmd: 'mdadm', args, why: `create the ${r.level} array ${r.name} from ${devices.length} devices`, ...waitFor(devices) });
    fresh.add(md);
  }

  // LVM --------------------------------------------------------------------------------------------
  const lvmName = /^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$/;
  const seenVgs = new Set<string>();
  for (const [vi, vg] of (storage.volume_groups ?? []).entries()) {
    if (typeof vg.name !== 'string' || !lvmName.test(vg.name) || vg.name === '.' || vg.name === '..') {
      throw configError(`volume_groups[${vi}].name is not a valid volume group name: ${JSON.stringify(vg.name)}`);
    }
    if (seenVgs.has(vg.name)) throw configError(`volume group ${vg.name} is listed twice`);
    seenVgs.add(vg.name);
    const devices = (vg.devices ?? []).map((d, i) => checkDevice(d, `volume group ${vg.name} devices[${i}]`));
    if (devices.length === 0) throw configError(`volume group ${vg.name} has no devices`);
    if (new Set(devices).size !== devices.length) throw configError(`volume group ${vg.name}: a device is listed twice`);
    const lvs = orderLvs(vg);
    const exists = await probe.vgExists(vg.name);
    if (exists) {
      notes.push(`volume group ${vg.name} already exists`);
    } else {
      for (const d of devices) await checkMember(d, 'LVM2_member', `a physical volume of ${vg.name}`);
      for (const d of devices) commands.push({ cmd: 'pvcreate', args: ['-ff', '-y', d], why: `make ${d} an LVM physical volume`, ...waitFor([d]) });
      commands.push({ cmd: 'vgcreate', args: [vg.name, ...devices], why: `create the volume group ${vg.name}` });
    }
    for (const lv of lvs) {
      if (exists && (await probe.lvExists(vg.name, lv.name))) {
        notes.push(`logical volume ${vg.name}/${lv.name} already exists`);
        continue;
      }
      const size = lv.size_mib ? ['-L', `${lv.size_mib}m`] : ['-l', '100%FREE'];
      commands.push({
        cmd: 'lvcreate',
        args: ['-y', '-n', lv.name, ...size, vg.name],
        why: `create the logical volume ${vg.name}/${lv.name}: ${lv.size_mib ? `${lv.size_mib} MiB` : 'all the free space left'}`,
      });
      fresh.add(`/dev/${vg.name}/${lv.name}`);
      fresh.add(`/dev/mapper/${vg.name.replace(/-/g, '--')}-${lv.name.replace(/-/g, '--')}`);
    }
  }

  // Filesystems ------------------------------------------------------------------------------------
  const units: UnitFile[] = [];
  const seenFs = new Set<string>();
  const seenMounts = new Set<string>();
  for (const [fi, fs] of (storage.filesystems ?? []).entries()) {
    const dev = checkDevice(fs.device, `filesystems[${fi}].device`);
    if (seenFs.has(dev)) throw configError(`filesystem device ${dev} is listed twice`);
    seenFs.add(dev);
    checkFilesystem(fs, dev);
    const force = fs.force === true;
    const existing = fresh.has(dev) ? null : await probe.blkid(dev);
    const what = `${fs.format}${fs.label !== undefined ? ` labelled ${JSON.stringify(fs.label)}` : ''}`;
    if (!force && existing?.type) {
      if (sameFilesystem(fs, existing)) {
        notes.push(`${dev}: already holds ${describeFs(existing)}; keeping it`);
      } else {
        throw refuse(
          `${dev} already holds ${describeFs(existing)}, not ${what}${fs.uuid ? ` with UUID ${fs.uuid}` : ''}; refusing to reformat it`,
          `set force: true on this filesystem to reformat ${dev} (this destroys its data)`,
        );
      }
    } else {
      if (force) commands.push({ cmd: 'wipefs', args: ['-a', dev], why: `force: erase the signatures on ${dev}`, ...waitFor([dev]) });
      commands.push({ ...mkfsCommand(fs, dev), ...waitFor([dev]) });
    }
    if (fs.format === 'swap') {
      if (fs.mount) throw configError(`${dev}: swap is not mounted (it gets a .swap unit); remove mount`);
      units.push({ name: `${systemdEscapePath(dev)}.swap`, content: swapUnit(dev) });
    } else if (fs.mount) {
      const where = fs.mount.path;
      if (typeof where !== 'string' || !where.startsWith('/')) throw configError(`${dev}: mount path must be absolute, not ${JSON.stringify(where)}`);
      const name = `${systemdEscapePath(where)}.mount`;
      if (name === '-.mount') throw configError(`${dev}: cannot mount over /`);
      if (seenMounts.has(name)) throw configError(`two filesystems are mounted at ${where}`);
      seenMounts.add(name);
      units.push({ name, content: mountUnit(dev, normalizePath(where), fs.format, fs.mount.options) });
    }
  }
  return { commands, units, notes };
}

function orderLvs(vg: VolumeGroup) {
  const lvs = vg.logical_volumes ?? [];
  const seen = new Set<string>();
  for (const lv of lvs) {
    if (typeof lv.name !== 'string' || !/^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$/.test(lv.name) || lv.name === '.' || lv.name === '..' || /^(snapshot|pvmove)$/.test(lv.name)) {
      throw configError(`volume group ${vg.name}: not a valid logical volume name: ${JSON.stringify(lv.name)}`);
    }
    if (seen.has(lv.name)) throw configError(`volume group ${vg.name}: logical volume ${lv.name} is listed twice`);
    seen.add(lv.name);
    checkMib(lv.size_mib, `logical volume ${vg.name}/${lv.name} size_mib`);
  }
  const rest = lvs.filter((lv) => !lv.size_mib);
  if (rest.length > 1) throw configError(`volume group ${vg.name}: only one logical volume can take the rest of the space (size_mib 0 or absent): ${rest.map((l) => l.name).join(', ')}`);
  // The one taking all the free space goes last, whatever its place in the config.
  return [...lvs.filter((lv) => lv.size_mib), ...rest];
}

function checkFilesystem(fs: Filesystem, dev: string): void {
  if (!FORMATS.includes(fs.format)) throw configError(`${dev}: unknown filesystem format ${JSON.stringify(fs.format)} (one of ${FORMATS.join(', ')})`);
  if (fs.label !== undefined) {
    const bytes = Buffer.byteLength(fs.label, 'utf8');
    if (bytes === 0 || bytes > LABEL_MAX[fs.format] || /[\0\n]/.test(fs.label)) {
      throw configError(`${dev}: ${fs.format} label ${JSON.stringify(fs.label)} must be 1-${LABEL_MAX[fs.format]} bytes`);
    }
  }
  if (fs.uuid !== undefined) {
    const ok = fs.format === 'vfat' ? VFAT_ID_RE.test(fs.uuid) : UUID_RE.test(fs.uuid);
    if (!ok) throw configError(`${dev}: ${JSON.stringify(fs.uuid)} is not a ${fs.format === 'vfat' ? 'FAT volume id (XXXX-XXXX)' : 'UUID'}`);
  }
  if (fs.options !== undefined && (!Array.isArray(fs.options) || fs.options.some((o) => typeof o !== 'string'))) throw configError(`${dev}: options must be a list of strings`);
}

function normUuid(u: string): string {
  return u.toLowerCase().replace(/-/g, '');
}

function sameFilesystem(fs: Filesystem, b: BlkidInfo): boolean {
  if (b.type !== fs.format) return false;
  if (fs.label !== undefined && b.label !== fs.label) return false;
  if (fs.uuid !== undefined && (b.uuid === undefined || normUuid(b.uuid) !== normUuid(fs.uuid))) return false;
  return true;
}

function describeFs(b: BlkidInfo): string {
  return `${b.type ?? 'data'}${b.label !== undefined ? ` labelled ${JSON.stringify(b.label)}` : ''}`;
}

function mkfsCommand(fs: Filesystem, dev: string): Command {
  const opts = fs.options ?? [];
  const label = fs.label;
  const why = `create ${fs.format === 'swap' ? 'swap space' : `an ${fs.format} filesystem`} on ${dev}`;
  switch (fs.format) {
    case 'ext4':
      return { cmd: 'mkfs.ext4', args: ['-F', ...(label !== undefined ? ['-L', label] : []), ...(fs.uuid ? ['-U', fs.uuid] : []), ...opts, dev], why };
    case 'btrfs':
      return { cmd: 'mkfs.btrfs', args: ['-f', ...(label !== undefined ? ['-L', label] : []), ...(fs.uuid ? ['-U', fs.uuid] : []), ...opts, dev], why };
    case 'xfs':
      return { cmd: 'mkfs.xfs', args: ['-f', ...(label !== undefined ? ['-L', label] : []), ...(fs.uuid ? ['-m', `uuid=${fs.uuid}`] : []), ...opts, dev], why };
    case 'vfat':
      return { cmd: 'mkfs.vfat', args: [...(label !== undefined ? ['-n', label] : []), ...(fs.uuid ? ['-i', fs.uuid.replace('-', '')] : []), ...opts, dev], why };
    case 'swap':
      return { cmd: 'mkswap', args: [...(label !== undefined ? ['-L', label] : []), ...(fs.uuid ? ['-U', fs.uuid] : []), ...opts, dev], why };
  }
}

function normalizePath(p: string): string {
  return '/' + p.split('/').filter(Boolean).join('/');
}

const HEADER = '# Written by oem provisioning (storage.filesystems).\n';

function mountUnit(dev: string, where: string, type: FilesystemFormat, options?: string[]): string {
  return (
    HEADER +
    `[Unit]\nDescription=Mount ${dev} at ${where}\n\n` +
    `[Mount]\nWhat=${dev}\nWhere=${where}\nType=${type}\nOptions=${options?.length ? options.join(',') : 'defaults'}\n\n` +
    `[Install]\nWantedBy=local-fs.target\n`
  );
}

function swapUnit(dev: string): string {
  return HEADER + `[Unit]\nDescription=Swap on ${dev}\n\n[Swap]\nWhat=${dev}\n\n[Install]\nWantedBy=swap.target\n`;
}

// ---------------------------------------------------------------------------------------------------
// The real probe

function parseExport(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i <= 0) continue;
    out[line.slice(0, i)] = line.slice(i + 1).replace(/\\(.)/g, '$1');
  }
  return out;
}

function lastLine(text: string): string {
  return text.trim().split('\n').map((l) => l.trim()).filter(Boolean).pop() ?? '';
}

/** A Probe that asks the machine: blkid -p -o export, sgdisk, mdadm --detail, vgs, lvs. */
export function systemProbe(run: Run): Probe {
  /** The blkid keys of a device; null when blkid finds nothing (or there is no such device). */
  const blkidRaw = async (dev: string): Promise<Record<string, string> | null> => {
    const r = await run('blkid', ['-p', '-o', 'export', dev]);
    if (r.exitCode === 2) return null;
    if (r.exitCode === 8) return { TYPE: `several signatures (see wipefs ${dev})` };
    if (r.exitCode !== 0) throw new OemError(`blkid -p ${dev} failed (exit ${r.exitCode}): ${lastLine(r.stderr) || 'no message'}`);
    return parseExport(r.stdout);
  };
  const ok = async (cmd: string, args: string[]) => {
    try {
      return (await run(cmd, args)).exitCode === 0;
    } catch {
      return false;
    }
  };
  return {
    async blkid(dev) {
      const k = await blkidRaw(dev);
      if (!k) return null;
      const type = k.TYPE ?? (k.PTTYPE ? `a ${k.PTTYPE} partition table` : undefined);
      if (type === undefined) return null;
      return { type, ...(k.LABEL !== undefined ? { label: k.LABEL } : {}), ...(k.UUID !== undefined ? { uuid: k.UUID } : {}) };
    },
    mdExists: (name) => ok('mdadm', ['--detail', `/dev/md/${name}`]),
    vgExists: (name) => ok('vgs', ['--noheadings', '-o', 'vg_name', name]),
    lvExists: (vg, lv) => ok('lvs', ['--noheadings', '-o', 'lv_name', `${vg}/${lv}`]),
    async disk(dev) {
      const p = await run('sgdisk', ['--print', dev]);
      if (p.exitCode !== 0) return null;
      const ss = /Sector size \(logical(?:\/physical)?\): (\d+)/.exec(p.stdout);
      const sectorSize = ss ? Number(ss[1]) : 512;
      const k = await blkidRaw(dev);
      if (!k || (!k.PTTYPE && !k.TYPE)) return { table: 'none', sectorSize, partitions: [] };
      if (k.PTTYPE !== 'gpt') {
        return { table: 'other', holds: k.PTTYPE ? `a ${k.PTTYPE} partition table` : `${k.TYPE}${k.LABEL ? ` labelled ${JSON.stringify(k.LABEL)}` : ''}`, sectorSize, partitions: [] };
      }
      const partitions: ExistingPartition[] = [];
      for (const m of p.stdout.matchAll(/^\s*(\d+)\s+(\d+)\s+(\d+)\s/gm)) {
        const number = Number(m[1]);
        const i = await run('sgdisk', [`--info=${number}`, dev]);
        if (i.exitCode !== 0) throw new OemError(`sgdisk --info=${number} ${dev} failed: ${lastLine(i.stderr)}`);
        const get = (re: RegExp) => re.exec(i.stdout)?.[1] ?? '';
        partitions.push({
          number,
          start: Number(m[2]),
          end: Number(m[3]),
          typeGuid: get(/^Partition GUID code: ([0-9A-Fa-f-]{36})/m).toUpperCase(),
          guid: get(/^Partition unique GUID: ([0-9A-Fa-f-]{36})/m).toUpperCase(),
          label: get(/^Partition name: '(.*)'$/m),
        });
      }
      return { table: 'gpt', sectorSize, partitions };
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Applying

export type ApplyOptions = {
  run: Run;
  probe?: Probe;
  dryRun?: boolean;
  log?: (line: string) => void;
  /** Where the units go: <root>/etc/systemd/system/. */
  root: string;
  /** How long to wait for a device node the plan creates (default 10 s). */
  deviceTimeoutMs?: number;
};


async function waitForDevice(path: string, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (!(await exists(path))) {
    if (Date.now() >= until) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

/**
 * Plans and runs the storage section: the commands in order (stopping at the first failure), then
 * writes the .mount/.swap units to <root>/etc/systemd/system/ and enables them. With dryRun it only
 * logs the commands, one a line, exactly as they would run. Returns the plan.
 */
export async function applyStorage(storage: Storage, opts: ApplyOptions): Promise<StoragePlan> {
  const log = opts.log ?? ((l: string) => void process.stdout.write(`${l}\n`));
  const plan = await planStorage(storage, opts.probe ?? systemProbe(opts.run));
  if (opts.dryRun) {
    for (const c of plan.commands) log(commandLine(c));
    return plan;
  }
  for (const n of plan.notes) log(`# ${n}`);
  for (const c of plan.commands) {
    const line = commandLine(c);
    const timeout = opts.deviceTimeoutMs ?? 10_000;
    for (const dev of c.waitFor ?? []) {
      if (!(await waitForDevice(dev, timeout))) {
        const waited = timeout < 1000 ? `${timeout} ms` : `${timeout / 1000} s`;
        throw new OemError(`${line}: ${dev} did not appear (waited ${waited})`, { hint: `needed to ${c.why}` });
      }
    }
    log(`+ ${line}`);
    let r: RunResult;
    try {
      r = await opts.run(c.cmd, c.args);
    } catch (err) {
      if (c.allowFail) {
        log(`  (ignored: ${describe(err)})`);
        continue;
      }
      throw new OemError(`${line} could not run: ${describe(err)}`, { hint: `needed to ${c.why}`, cause: err });
    }
    if (r.exitCode !== 0) {
      const last = lastLine(r.stderr) || lastLine(r.stdout) || 'no message';
      if (c.allowFail) {
        log(`  (ignored: exit ${r.exitCode}: ${last})`);
        continue;
      }
      throw new OemError(`${line} failed (exit ${r.exitCode}): ${last}`, { hint: `needed to ${c.why}` });
    }
  }
  await writeUnits(plan.units, opts.root, log);
  return plan;
}

async function writeUnits(units: UnitFile[], root: string, log: (l: string) => void): Promise<void> {
  if (units.length === 0) return;
  const dir = join(root, 'etc/systemd/system');
  await mkdir(dir, { recursive: true });
  for (const u of units) {
    const path = join(dir, u.name);
    const old = await readFile(path, 'utf8').catch(() => null);
    if (old !== u.content) {
      const tmp = `${path}.oem-tmp`;
      await writeFile(tmp, u.content, { mode: 0o644 });
      await rename(tmp, path);
      log(`wrote ${path}`);
    }
    const target = u.name.endsWith('.swap') ? 'swap.target' : 'local-fs.target';
    const wants = join(dir, `${target}.wants`);
    await mkdir(wants, { recursive: true });
    const link = join(wants, u.name);
    const dest = `/etc/systemd/system/${u.name}`;
    const cur = await lstat(link).then((s) => (s.isSymbolicLink() ? readlink(link) : 'not a link'), () => null);
    if (cur === dest) continue;
    if (cur !== null) await unlink(link);
    await symlink(dest, link);
    log(`enabled ${u.name} (${target})`);
  }
}
