import { execa } from 'execa';
import { access, lstat, mkdtemp, readFile, readlink, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Storage } from '../src/shared/config/types.js';
import {
  applyStorage,
  commandLine,
  planStorage,
  systemdEscapePath,
  systemProbe,
  LINUX_FILESYSTEM_GUID,
  type BlkidInfo,
  type DiskInfo,
  type Probe,
  type Run,
  type RunResult,
  type StoragePlan,
} from '../oem/provision/disks.js';
import { OemError } from '../src/shared/errors.js';
import { checkUnit } from '../src/shared/units.js';
import { which } from '../src/tools.js';

const EFI = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
const SWAP_GUID = '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F';
const LFS = LINUX_FILESYSTEM_GUID;

// ---------------------------------------------------------------------------------------------------
// A fake probe: the machine as data.

type FakeState = {
  fs?: Record<string, BlkidInfo>;
  md?: string[];
  vg?: string[];
  lv?: string[];
  disks?: Record<string, DiskInfo>;
};

function fakeProbe(s: FakeState = {}): Probe & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    async blkid(dev) {
      asked.push(`blkid ${dev}`);
      return s.fs?.[dev] ?? null;
    },
    async mdExists(name) {
      asked.push(`md ${name}`);
      return (s.md ?? []).includes(name);
    },
    async vgExists(name) {
      asked.push(`vg ${name}`);
      return (s.vg ?? []).includes(name);
    },
    async lvExists(vg, lv) {
      asked.push(`lv ${vg}/${lv}`);
      return (s.lv ?? []).includes(`${vg}/${lv}`);
    },
    async disk(dev) {
      asked.push(`disk ${dev}`);
      return s.disks?.[dev] ?? null;
    },
  };
}

const lines = (p: StoragePlan) => p.commands.map(commandLine);

async function plan(storage: Storage, state: FakeState = {}): Promise<StoragePlan> {
  return planStorage(storage, fakeProbe(state));
}

async function refusal(storage: Storage, state: FakeState = {}): Promise<OemError> {
  try {
    await plan(storage, state);
  } catch (err) {
    expect(err).toBeInstanceOf(OemError);
    return err as OemError;
  }
  throw new Error('expected planStorage to refuse');
}

const emptyDisk = (sectorSize = 512): DiskInfo => ({ table: 'none', sectorSize, partitions: [] });

// ---------------------------------------------------------------------------------------------------

describe('systemdEscapePath', () => {
  const cases: [string, string][] = [
    ['/var/lib/data', 'var-lib-data'],
    ['/srv/my-data', 'srv-my\\x2ddata'],
    ['/dev/vg0/swap', 'dev-vg0-swap'],
    ['/dev/disk/by-partlabel/DATA', 'dev-disk-by\\x2dpartlabel-DATA'],
    ['//mnt//a b/', 'mnt-a\\x20b'],
    ['/mnt/.hidden/x.y', 'mnt-.hidden-x.y'],
    ['/.snapshots', '\\x2esnapshots'],
    ['/mnt/ü:_\\', 'mnt-\\xc3\\xbc:_\\x5c'],
    ['/', '-'],
  ];
  it.each(cases)('%s → %s', (path, want) => {
    expect(systemdEscapePath(path)).toBe(want);
  });

  it('agrees with systemd-escape --path', async () => {
    const bin = await which('systemd-escape');
    if (!bin) {
      console.log('systemd-escape is not installed: compared with the expected table only');
      return;
    }
    for (const [path] of cases) {
      const r = await execa(bin, ['--path', path]);
      expect(systemdEscapePath(path), path).toBe(r.stdout.trim());
    }
  });

  it('refuses relative and unnormalized paths', () => {
    expect(() => systemdEscapePath('var/lib')).toThrow(/absolute/);
    expect(() => systemdEscapePath('/a/../b')).toThrow(/normalized/);
    expect(() => systemdEscapePath('/a/./b')).toThrow(/normalized/);
  });
});

describe('partitioning plans', () => {
  it('wipe_table: zap, clear, one sgdisk per partition (MiB → sectors), re-read', async () => {
    const p = await plan(
      {
        disks: [
          {
            device: '/dev/sdb',
            wipe_table: true,
            partitions: [
              { number: 1, label: 'EFI-SYSTEM', size_mib: 128, type_guid: EFI.toLowerCase() },
              { number: 2, label: 'DATA', start_mib: 200, size_mib: 0, guid: '6a3c29f4-0000-4000-8000-000000000001' },
              { label: 'LOG', size_mib: 1 },
            ],
          },
        ],
      },
      { disks: { '/dev/sdb': emptyDisk() } },
    );
    expect(lines(p)).toEqual([
      'sgdisk --zap-all /dev/sdb',
      'sgdisk --clear /dev/sdb',
      `sgdisk --new=1:0:+262144 --change-name=1:EFI-SYSTEM --typecode=1:${EFI} /dev/sdb`,
      `sgdisk --new=2:409600:0 --change-name=2:DATA --typecode=2:${LFS} --partition-guid=2:6A3C29F4-0000-4000-8000-000000000001 /dev/sdb`,
      `sgdisk --new=3:0:+2048 --change-name=3:LOG --typecode=3:${LFS} /dev/sdb`,
      'blockdev --rereadpt /dev/sdb',
      'partx -u /dev/sdb',
    ]);
    expect(p.commands.filter((c) => c.allowFail).map((c) => c.cmd)).toEqual(['blockdev', 'partx']);
    expect(p.units).toEqual([]);
  });

  it('converts MiB with the disk\'s logical sector size (4Kn) and defaults (0) to sgdisk 0', async () => {
    const p = await plan(
      { disks: [{ device: '/dev/nvme0n1', partitions: [{ number: 1, start_mib: 2, size_mib: 1 }, { number: 2 }] }] },
      { disks: { '/dev/nvme0n1': emptyDisk(4096) } },
    );
    expect(lines(p)).toEqual([
      `sgdisk --new=1:512:+256 --typecode=1:${LFS} /dev/nvme0n1`,
      `sgdisk --new=2:0:0 --typecode=2:${LFS} /dev/nvme0n1`,
      'blockdev --rereadpt /dev/nvme0n1',
      'partx -u /dev/nvme0n1',
    ]);
    // Without a disk probe: 512-byte sectors.
    const q = await planStorage({ disks: [{ device: '/dev/vdb', partitions: [{ number: 1, size_mib: 1024 }] }] }, { ...fakeProbe(), disk: undefined });
    expect(lines(q)[0]).toBe(`sgdisk --new=1:0:+2097152 --typecode=1:${LFS} /dev/vdb`);
  });

  it('passes a label with spaces as one argument', async () => {
    const p = await plan({ disks: [{ device: '/dev/sdb', partitions: [{ number: 1, label: 'my data' }] }] });
    expect(p.commands[0]!.args).toEqual(['--new=1:0:0', '--change-name=1:my data', `--typecode=1:${LFS}`, '/dev/sdb']);
    expect(commandLine(p.commands[0]!)).toBe(`sgdisk --new=1:0:0 '--change-name=1:my data' --typecode=1:${LFS} /dev/sdb`);
  });

  it('re-run with wipe_table: a disk already partitioned as configured is left alone', async () => {
    const existing: DiskInfo = {
      table: 'gpt',
      sectorSize: 512,
      partitions: [
        { number: 1, start: 2048, end: 264191, label: 'EFI-SYSTEM', typeGuid: EFI, guid: 'AAAAAAAA-0000-4000-8000-000000000001' },
        { number: 2, start: 264192, end: 999999, label: 'DATA', typeGuid: LFS, guid: 'AAAAAAAA-0000-4000-8000-000000000002' },
      ],
    };
    const disk = {
      device: '/dev/sdb',
      wipe_table: true,
      partitions: [{ number: 1, label: 'EFI-SYSTEM', size_mib: 128, type_guid: EFI }, { label: 'DATA' }],
    };
    const same = await plan({ disks: [disk] }, { disks: { '/dev/sdb': existing } });
    expect(same.commands).toEqual([]);
    expect(same.notes).toEqual(['/dev/sdb: already partitioned as configured; keeping its partition table']);

    // A different size, or an extra partition on the disk: wiped and recreated.
    const bigger = await plan({ disks: [{ ...disk, partitions: [{ number: 1, label: 'EFI-SYSTEM', size_mib: 256, type_guid: EFI }, { label: 'DATA' }] }] }, { disks: { '/dev/sdb': existing } });
    expect(lines(bigger).slice(0, 3)).toEqual(['sgdisk --zap-all /dev/sdb', 'sgdisk --clear /dev/sdb', `sgdisk --new=1:0:+524288 --change-name=1:EFI-SYSTEM --typecode=1:${EFI} /dev/sdb`]);
    const fewer = await plan({ disks: [{ ...disk, partitions: [{ number: 1, label: 'EFI-SYSTEM', size_mib: 128, type_guid: EFI }] }] }, { disks: { '/dev/sdb': existing } });
    expect(lines(fewer)[0]).toBe('sgdisk --zap-all /dev/sdb');
  });

  it('without wipe_table: keeps matching partitions, adds missing ones, numbers automatic ones after the existing', async () => {
    const existing: DiskInfo = {
      table: 'gpt',
      sectorSize: 512,
      partitions: [
        { number: 1, start: 2048, end: 4095, label: 'A', typeGuid: LFS, guid: 'AAAAAAAA-0000-4000-8000-000000000001' },
        { number: 2, start: 4096, end: 8191, label: 'OLD', typeGuid: LFS, guid: 'AAAAAAAA-0000-4000-8000-000000000002' },
        { number: 4, start: 8192, end: 10239, label: 'LOGS', typeGuid: LFS, guid: 'AAAAAAAA-0000-4000-8000-000000000004' },
      ],
    };
    const p = await plan(
      { disks: [{ device: '/dev/sdb', partitions: [{ number: 1, label: 'A', size_mib: 1 }, { label: 'NEW', size_mib: 8 }, { label: 'LOGS' }] }] },
      { disks: { '/dev/sdb': existing } },
    );
    expect(lines(p)).toEqual([`sgdisk --new=3:0:+16384 --change-name=3:NEW --typecode=3:${LFS} /dev/sdb`, 'blockdev --rereadpt /dev/sdb', 'partx -u /dev/sdb']);
    expect(p.notes).toEqual(['/dev/sdb: partition 1 (A) already exists as configured', '/dev/sdb: partition 4 (LOGS) already exists as configured']);
  });

  it('without wipe_table: refuses to change a partition that differs, or a disk with another kind of table', async () => {
    const existing: DiskInfo = { table: 'gpt', sectorSize: 512, partitions: [{ number: 1, start: 2048, end: 4095, label: 'A', typeGuid: LFS, guid: 'AAAAAAAA-0000-4000-8000-000000000001' }] };
    const e = await refusal({ disks: [{ device: '/dev/sdb', partitions: [{ number: 1, label: 'B' }] }] }, { disks: { '/dev/sdb': existing } });
    expect(e.message).toMatch(/partition 1 exists but differs from the config \(label "A", type .*, start 1 MiB, size 1 MiB\)/);
    expect(e.hint).toMatch(/wipe_table/);
    const size = await refusal({ disks: [{ device: '/dev/sdb', partitions: [{ number: 1, label: 'A', size_mib: 2 }] }] }, { disks: { '/dev/sdb': existing } });
    expect(size.message).toMatch(/differs/);
    const mbr = await refusal({ disks: [{ device: '/dev/sdc', partitions: [{ number: 1 }] }] }, { disks: { '/dev/sdc': { table: 'other', holds: 'a dos partition table', sectorSize: 512, partitions: [] } } });
    expect(mbr.message).toBe('/dev/sdc holds a dos partition table, not a GPT; refusing to repartition it');
    // With wipe_table the same disk is simply replaced.
    const wiped = await plan({ disks: [{ device: '/dev/sdc', wipe_table: true, partitions: [{ number: 1 }] }] }, { disks: { '/dev/sdc': { table: 'other', sectorSize: 512, partitions: [] } } });
    expect(lines(wiped)[0]).toBe('sgdisk --zap-all /dev/sdc');
  });

  it('rejects bad partition configs', async () => {
    const bad = async (partitions: object[], re: RegExp) => {
      const e = await refusal({ disks: [{ device: '/dev/sdb', partitions: partitions as never }] });
      expect(e.message).toMatch(re);
      expect(e.exitCode).toBe(2);
    };
    await bad([{ number: 129 }], /1-128/);
    await bad([{ number: 1 }, { number: 1 }], /listed twice/);
    await bad([{ number: 1, label: 'x'.repeat(37) }], /1-36 characters/);
    await bad([{ number: 1, size_mib: -1 }], /whole number of MiB/);
    await bad([{ number: 1, size_mib: 1.5 }], /whole number of MiB/);
    await bad([{ number: 1, type_guid: 'EF00' }], /not a GUID/);
    const rel = await refusal({ disks: [{ device: 'sdb' }] });
    expect(rel.message).toMatch(/not an absolute device path/);
  });
});

describe('RAID plans', () => {
  const levels: [string, number, number, string][] = [
    ['linear', 2, 0, '--level=linear --raid-devices=2'],
    ['raid0', 2, 0, '--level=raid0 --raid-devices=2'],
    ['raid1', 2, 0, '--level=raid1 --raid-devices=2'],
    ['raid1', 3, 1, '--level=raid1 --raid-devices=2 --spare-devices=1'],
    ['raid4', 3, 0, '--level=raid4 --raid-devices=3'],
    ['raid5', 4, 1, '--level=raid5 --raid-devices=3 --spare-devices=1'],
    ['raid6', 4, 0, '--level=raid6 --raid-devices=4'],
    ['raid10', 4, 0, '--level=raid10 --raid-devices=4'],
  ];
  it.each(levels)('%s with %i devices, %i spares', async (level, n, spares, flags) => {
    const devices = ['/dev/sdb', '/dev/sdc', '/dev/sdd', '/dev/sde'].slice(0, n);
    const p = await plan({ raid: [{ name: 'md-data', level: level as never, devices, ...(spares ? { spares } : {}) }] });
    expect(lines(p)).toEqual([`mdadm --create /dev/md/md-data --run ${flags} --metadata=1.2 --homehost=any ${devices.join(' ')}`]);
  });

  it('skips an array that already exists, and formats a new one without asking blkid', async () => {
    const storage: Storage = {
      raid: [{ name: 'data', level: 'raid1', devices: ['/dev/sdb1', '/dev/sdc1'] }],
      filesystems: [{ device: '/dev/md/data', format: 'ext4', label: 'DATA' }],
    };
    const probe = fakeProbe({ fs: { '/dev/md/data': { type: 'xfs' } } });
    const p = await planStorage(storage, probe);
    expect(lines(p)).toEqual([
      'mdadm --create /dev/md/data --run --level=raid1 --raid-devices=2 --metadata=1.2 --homehost=any /dev/sdb1 /dev/sdc1',
      'mkfs.ext4 -F -L DATA /dev/md/data',
    ]);
    expect(p.commands[1]!.waitFor).toEqual(['/dev/md/data']);
    expect(probe.asked).not.toContain('blkid /dev/md/data');
    const again = await plan(storage, { md: ['data'], fs: { '/dev/md/data': { type: 'ext4', label: 'DATA', uuid: 'x' } } });
    expect(again.commands).toEqual([]);
    expect(again.notes).toEqual(['/dev/md/data: the array already exists', '/dev/md/data: already holds ext4 labelled "DATA"; keeping it']);
  });

  it('builds on partitions the same plan creates (and waits for their nodes)', async () => {
    const p = await plan({
      disks: ['/dev/sdb', '/dev/sdc'].map((device) => ({ device, wipe_table: true, partitions: [{ number: 1, label: 'RAID', type_guid: 'A19D880F-05FC-4D3B-A006-743F0F84911E' }] })),
      raid: [{ name: 'r', level: 'raid1', devices: ['/dev/sdb1', '/dev/sdc1'] }],
    }, { fs: { '/dev/sdb1': { type: 'ext4' } } });
    const md = p.commands.find((c) => c.cmd === 'mdadm')!;
    expect(md.waitFor).toEqual(['/dev/sdb1', '/dev/sdc1']);
  });

  it('refuses members holding data, too few devices and spares without redundancy', async () => {
    const e = await refusal({ raid: [{ name: 'r', level: 'raid1', devices: ['/dev/sdb', '/dev/sdc'] }] }, { fs: { '/dev/sdc': { type: 'xfs', label: 'old' } } });
    expect(e.message).toBe('/dev/sdc holds xfs labelled "old"; refusing to make it a member of RAID array r');
    // An old member of an array is fine (mdadm --create overwrites its superblock).
    const ok = await plan({ raid: [{ name: 'r', level: 'raid1', devices: ['/dev/sdb', '/dev/sdc'] }] }, { fs: { '/dev/sdc': { type: 'linux_raid_member' } } });
    expect(ok.commands).toHaveLength(1);
    expect((await refusal({ raid: [{ name: 'r', level: 'raid5', devices: ['/dev/sdb', '/dev/sdc'] }] })).message).toMatch(/raid5 needs at least 3 active devices/);
    expect((await refusal({ raid: [{ name: 'r', level: 'raid6', devices: ['/dev/a', '/dev/b', '/dev/c', '/dev/d'], spares: 1 }] })).message).toMatch(/raid6 needs at least 4/);
    expect((await refusal({ raid: [{ name: 'r', level: 'raid0', devices: ['/dev/a', '/dev/b', '/dev/c'], spares: 1 }] })).message).toMatch(/cannot have spares/);
    expect((await refusal({ raid: [{ name: 'r', level: 'raid9' as never, devices: ['/dev/a', '/dev/b'] }] })).message).toMatch(/unknown level/);
    expect((await refusal({ raid: [{ name: 'a/b', level: 'raid1', devices: ['/dev/a', '/dev/b'] }] })).message).toMatch(/not a valid array name/);
  });
});

describe('LVM plans', () => {
  const vg0: Storage = {
    volume_groups: [
      { name: 'vg0', devices: ['/dev/sdb1', '/dev/sdc1'], logical_volumes: [{ name: 'data', size_mib: 0 }, { name: 'swap', size_mib: 512 }, { name: 'logs', size_mib: 1024 }] },
    ],
    filesystems: [
      { device: '/dev/vg0/data', format: 'xfs', label: 'data', mount: { path: '/var/lib/data' } },
      { device: '/dev/mapper/vg0-swap', format: 'swap' },
    ],
  };

  it('pvcreate each device, vgcreate, sized volumes first and the rest of the space last', async () => {
    const p = await plan(vg0, { fs: { '/dev/vg0/data': { type: 'ext4' } } });
    expect(lines(p)).toEqual([
      'pvcreate -ff -y /dev/sdb1',
      'pvcreate -ff -y /dev/sdc1',
      'vgcreate vg0 /dev/sdb1 /dev/sdc1',
      'lvcreate -y -n swap -L 512m vg0',
      'lvcreate -y -n logs -L 1024m vg0',
      'lvcreate -y -n data -l 100%FREE vg0',
      'mkfs.xfs -f -L data /dev/vg0/data',
      'mkswap /dev/mapper/vg0-swap',
    ]);
    expect(p.units.map((u) => u.name)).toEqual(['var-lib-data.mount', 'dev-mapper-vg0\\x2dswap.swap']);
  });

  it('creates only what is missing in an existing group, and nothing on a re-run', async () => {
    const p = await plan(vg0, { vg: ['vg0'], lv: ['vg0/swap'], fs: { '/dev/mapper/vg0-swap': { type: 'swap' } } });
    expect(lines(p)).toEqual(['lvcreate -y -n logs -L 1024m vg0', 'lvcreate -y -n data -l 100%FREE vg0', 'mkfs.xfs -f -L data /dev/vg0/data']);
    const again = await plan(vg0, {
      vg: ['vg0'],
      lv: ['vg0/swap', 'vg0/logs', 'vg0/data'],
      fs: { '/dev/mapper/vg0-swap': { type: 'swap' }, '/dev/vg0/data': { type: 'xfs', label: 'data' } },
    });
    expect(again.commands).toEqual([]);
  });

  it('LV names with dashes map to /dev/mapper with doubled dashes', async () => {
    const probe = fakeProbe({ fs: { '/dev/mapper/my--vg-my--lv': { type: 'xfs' } } });
    const p = await planStorage({ volume_groups: [{ name: 'my-vg', devices: ['/dev/sdb'], logical_volumes: [{ name: 'my-lv' }] }], filesystems: [{ device: '/dev/mapper/my--vg-my--lv', format: 'ext4' }] }, probe);
    expect(lines(p).at(-1)).toBe('mkfs.ext4 -F /dev/mapper/my--vg-my--lv');
  });

  it('refuses two volumes taking the rest, bad names and physical volumes holding data', async () => {
    expect((await refusal({ volume_groups: [{ name: 'vg', devices: ['/dev/a'], logical_volumes: [{ name: 'a' }, { name: 'b', size_mib: 0 }] }] })).message).toMatch(/only one logical volume can take the rest/);
    expect((await refusal({ volume_groups: [{ name: '-vg', devices: ['/dev/a'] }] })).message).toMatch(/not a valid volume group name/);
    expect((await refusal({ volume_groups: [{ name: 'vg', devices: [] }] })).message).toMatch(/no devices/);
    const e = await refusal({ volume_groups: [{ name: 'vg', devices: ['/dev/sdb'] }] }, { fs: { '/dev/sdb': { type: 'ext4', label: 'home' } } });
    expect(e.message).toBe('/dev/sdb holds ext4 labelled "home"; refusing to make it a physical volume of vg');
    const pv = await plan({ volume_groups: [{ name: 'vg', devices: ['/dev/sdb'] }] }, { fs: { '/dev/sdb': { type: 'LVM2_member' } } });
    expect(lines(pv)).toEqual(['pvcreate -ff -y /dev/sdb', 'vgcreate vg /dev/sdb']);
  });
});

describe('filesystem plans', () => {
  const U = '2f0a8d0e-6c1b-4c55-9a57-3c1f4c2d5e01';
  const cases: [string, Storage['filesystems'], string[]][] = [
    ['ext4', [{ device: '/dev/sdb1', format: 'ext4', label: 'DATA', uuid: U, options: ['-E', 'lazy_itable_init=0'] }], [`mkfs.ext4 -F -L DATA -U ${U} -E lazy_itable_init=0 /dev/sdb1`]],
    ['ext4 bare', [{ device: '/dev/sdb1', format: 'ext4' }], ['mkfs.ext4 -F /dev/sdb1']],
    ['btrfs', [{ device: '/dev/sdb1', format: 'btrfs', label: 'pool', uuid: U, options: ['-m', 'dup'] }], [`mkfs.btrfs -f -L pool -U ${U} -m dup /dev/sdb1`]],
    ['xfs', [{ device: '/dev/sdb1', format: 'xfs', label: 'x12345678901', uuid: U }], [`mkfs.xfs -f -L x12345678901 -m uuid=${U} /dev/sdb1`]],
    ['vfat', [{ device: '/dev/sdb1', format: 'vfat', label: 'EFI', uuid: 'abcd-1234', options: ['-F', '32'] }], ['mkfs.vfat -n EFI -i abcd1234 -F 32 /dev/sdb1']],
    ['swap', [{ device: '/dev/sdb2', format: 'swap', label: 'swap0', uuid: U }], [`mkswap -L swap0 -U ${U} /dev/sdb2`]],
    ['label with a space', [{ device: '/dev/sdb1', format: 'ext4', label: 'my data' }], [`mkfs.ext4 -F -L 'my data' /dev/sdb1`]],
  ];
  it.each(cases)('%s', async (_name, filesystems, want) => {
    expect(lines(await plan({ filesystems }))).toEqual(want);
  });

  it('force: wipefs then mkfs, even over the same filesystem', async () => {
    const fs = { '/dev/sdb1': { type: 'xfs', label: 'old' }, '/dev/sdb2': { type: 'ext4', label: 'DATA' } };
    const p = await plan({ filesystems: [{ device: '/dev/sdb1', format: 'ext4', label: 'DATA', force: true }, { device: '/dev/sdb2', format: 'ext4', label: 'DATA', force: true }] }, { fs });
    expect(lines(p)).toEqual(['wipefs -a /dev/sdb1', 'mkfs.ext4 -F -L DATA /dev/sdb1', 'wipefs -a /dev/sdb2', 'mkfs.ext4 -F -L DATA /dev/sdb2']);
  });

  it('re-run: a device holding the same format and label is kept', async () => {
    const all: Storage['filesystems'] = [
      { device: '/dev/a', format: 'ext4', label: 'A' },
      { device: '/dev/b', format: 'btrfs', label: 'B' },
      { device: '/dev/c', format: 'xfs', label: 'C' },
      { device: '/dev/d', format: 'vfat', label: 'D', uuid: 'ABCD-1234' },
      { device: '/dev/e', format: 'swap' },
      { device: '/dev/f', format: 'ext4', uuid: U.toUpperCase() },
    ];
    const p = await plan({ filesystems: all }, {
      fs: {
        '/dev/a': { type: 'ext4', label: 'A', uuid: U },
        '/dev/b': { type: 'btrfs', label: 'B' },
        '/dev/c': { type: 'xfs', label: 'C' },
        '/dev/d': { type: 'vfat', label: 'D', uuid: 'ABCD-1234' },
        '/dev/e': { type: 'swap', label: 'whatever' },
        '/dev/f': { type: 'ext4', uuid: U },
      },
    });
    expect(p.commands).toEqual([]);
    expect(p.notes).toHaveLength(6);
  });

  it('refuses to reformat another filesystem (or another label or UUID) without force', async () => {
    const e = await refusal({ filesystems: [{ device: '/dev/sdb1', format: 'ext4', label: 'DATA' }] }, { fs: { '/dev/sdb1': { type: 'xfs', label: 'DATA' } } });
    expect(e.message).toBe('/dev/sdb1 already holds xfs labelled "DATA", not ext4 labelled "DATA"; refusing to reformat it');
    expect(e.hint).toMatch(/force: true/);
    const label = await refusal({ filesystems: [{ device: '/dev/sdb1', format: 'ext4', label: 'DATA' }] }, { fs: { '/dev/sdb1': { type: 'ext4', label: 'OTHER' } } });
    expect(label.message).toMatch(/already holds ext4 labelled "OTHER", not ext4 labelled "DATA"/);
    const uuid = await refusal({ filesystems: [{ device: '/dev/sdb1', format: 'ext4', uuid: U }] }, { fs: { '/dev/sdb1': { type: 'ext4', uuid: '00000000-0000-4000-8000-000000000000' } } });
    expect(uuid.message).toMatch(/with UUID/);
    const pt = await refusal({ filesystems: [{ device: '/dev/sdb', format: 'ext4' }] }, { fs: { '/dev/sdb': { type: 'a gpt partition table' } } });
    expect(pt.message).toMatch(/already holds a gpt partition table/);
  });

  it('checks labels and UUIDs per format', async () => {
    const bad = async (fs: object, re: RegExp) => expect((await refusal({ filesystems: [fs as never] })).message).toMatch(re);
    await bad({ device: '/dev/a', format: 'xfs', label: 'x'.repeat(13) }, /xfs label .* must be 1-12 bytes/);
    await bad({ device: '/dev/a', format: 'vfat', label: 'LONGERTHAN11' }, /1-11 bytes/);
    await bad({ device: '/dev/a', format: 'ext4', label: 'ü'.repeat(9) }, /1-16 bytes/);
    await bad({ device: '/dev/a', format: 'swap', label: '' }, /1-16 bytes/);
    await bad({ device: '/dev/a', format: 'ext4', uuid: 'ABCD-1234' }, /not a UUID/);
    await bad({ device: '/dev/a', format: 'vfat', uuid: U }, /FAT volume id/);
    await bad({ device: '/dev/a', format: 'zfs' }, /unknown filesystem format/);
    await bad({ device: '/dev/a', format: 'swap', mount: { path: '/swap' } }, /swap is not mounted/);
    expect(lines(await plan({ filesystems: [{ device: '/dev/a', format: 'ext4', label: 'x'.repeat(16) }] }))).toHaveLength(1);
    expect(lines(await plan({ filesystems: [{ device: '/dev/a', format: 'btrfs', label: 'x'.repeat(255) }] }))).toHaveLength(1);
  });
});

describe('mount and swap units', () => {
  it('writes a .mount per mounted filesystem and a .swap per swap', async () => {
    const p = await plan({
      filesystems: [
        { device: '/dev/disk/by-partlabel/DATA', format: 'ext4', label: 'DATA', mount: { path: '/var/lib/data', options: ['noatime', 'discard'] } },
        { device: '/dev/sdb2', format: 'btrfs', mount: { path: '/srv/my-data/' } },
        { device: '/dev/vg0/swap', format: 'swap' },
        { device: '/dev/sdb3', format: 'xfs' },
      ],
    });
    expect(p.units.map((u) => u.name)).toEqual(['var-lib-data.mount', 'srv-my\\x2ddata.mount', 'dev-vg0-swap.swap']);
    expect(p.units[0]!.content).toBe(
      '# Written by oem provisioning (storage.filesystems).\n' +
        '[Unit]\nDescription=Mount /dev/disk/by-partlabel/DATA at /var/lib/data\n\n' +
        '[Mount]\nWhat=/dev/disk/by-partlabel/DATA\nWhere=/var/lib/data\nType=ext4\nOptions=noatime,discard\n\n' +
        '[Install]\nWantedBy=local-fs.target\n',
    );
    expect(p.units[1]!.content).toContain('Where=/srv/my-data\nType=btrfs\nOptions=defaults\n');
    expect(p.units[2]!.content).toBe('# Written by oem provisioning (storage.filesystems).\n[Unit]\nDescription=Swap on /dev/vg0/swap\n\n[Swap]\nWhat=/dev/vg0/swap\n\n[Install]\nWantedBy=swap.target\n');
    for (const u of p.units) expect(checkUnit(u.name, u.content), u.name).toEqual([]);
  });

  it('refuses a mount over / and two filesystems at one path', async () => {
    expect((await refusal({ filesystems: [{ device: '/dev/a', format: 'ext4', mount: { path: '/' } }] })).message).toMatch(/cannot mount over \//);
    const two = await refusal({ filesystems: [{ device: '/dev/a', format: 'ext4', mount: { path: '/x' } }, { device: '/dev/b', format: 'ext4', mount: { path: '/x/' } }] });
    expect(two.message).toMatch(/two filesystems are mounted at/);
  });
});

describe('applyStorage with a fake machine', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'oem-disks-apply-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const storage: Storage = {
    disks: [{ device: '/dev/sdb', wipe_table: true, partitions: [{ number: 1, label: 'DATA' }] }],
    filesystems: [
      { device: '/dev/sdc', format: 'ext4', label: 'DATA', mount: { path: '/var/lib/data' } },
      { device: '/dev/sdd', format: 'swap' },
    ],
  };
  const ok = (): RunResult => ({ stdout: '', stderr: '', exitCode: 0 });

  it('dryRun prints the commands one a line, exactly, and runs nothing', async () => {
    const ran: string[] = [];
    const log: string[] = [];
    const plan = await applyStorage(storage, {
      run: async (c, a) => (ran.push([c, ...a].join(' ')), ok()),
      probe: fakeProbe(),
      dryRun: true,
      log: (l) => log.push(l),
      root,
    });
    expect(ran).toEqual([]);
    expect(log).toEqual([
      'sgdisk --zap-all /dev/sdb',
      'sgdisk --clear /dev/sdb',
      `sgdisk --new=1:0:0 --change-name=1:DATA --typecode=1:${LFS} /dev/sdb`,
      'blockdev --rereadpt /dev/sdb',
      'partx -u /dev/sdb',
      'mkfs.ext4 -F -L DATA /dev/sdc',
      'mkswap /dev/sdd',
    ]);
    expect(log).toEqual(plan.commands.map(commandLine));
    await expect(access(join(root, 'etc'))).rejects.toThrow();
  });

  it('runs in order, ignores allowFail failures, stops at the first real failure with the command and its last stderr line', async () => {
    const ran: string[] = [];
    const run: Run = async (c, a) => {
      ran.push([c, ...a].join(' '));
      if (c === 'blockdev') return { stdout: '', stderr: 'BLKRRPART: Device or resource busy', exitCode: 1 };
      if (c === 'mkfs.ext4') return { stdout: 'mke2fs 1.47.0', stderr: 'mke2fs 1.47.0\nmkfs.ext4: Device size reported to be zero.\n', exitCode: 1 };
      return ok();
    };
    const err = await applyStorage(storage, { run, probe: fakeProbe(), log: () => {}, root }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OemError);
    expect((err as OemError).message).toBe('mkfs.ext4 -F -L DATA /dev/sdc failed (exit 1): mkfs.ext4: Device size reported to be zero.');
    expect(ran.at(-1)).toBe('mkfs.ext4 -F -L DATA /dev/sdc');
    expect(ran).not.toContain('mkswap /dev/sdd');
    expect(ran).toContain('partx -u /dev/sdb');
    await expect(access(join(root, 'etc/systemd/system/var-lib-data.mount'))).rejects.toThrow();
  });

  it('a command that cannot start is an error naming it', async () => {
    const run: Run = async () => {
      throw new Error('spawn sgdisk ENOENT');
    };
    await expect(applyStorage(storage, { run, probe: fakeProbe(), log: () => {}, root })).rejects.toThrow('sgdisk --zap-all /dev/sdb could not run: spawn sgdisk ENOENT');
  });

  it('writes and enables the units; a second apply rewrites nothing', async () => {
    const log: string[] = [];
    const run: Run = async () => ok();
    // The partition /dev/sdb1 is not used by a filesystem here, so nothing waits for device nodes.
    await applyStorage(storage, { run, probe: fakeProbe(), log: (l) => log.push(l), root });
    const dir = join(root, 'etc/systemd/system');
    expect(await readFile(join(dir, 'var-lib-data.mount'), 'utf8')).toContain('What=/dev/sdc\nWhere=/var/lib/data\nType=ext4\n');
    expect(await readFile(join(dir, 'dev-sdd.swap'), 'utf8')).toContain('What=/dev/sdd\n');
    expect(await readlink(join(dir, 'local-fs.target.wants/var-lib-data.mount'))).toBe('/etc/systemd/system/var-lib-data.mount');
    expect(await readlink(join(dir, 'swap.target.wants/dev-sdd.swap'))).toBe('/etc/systemd/system/dev-sdd.swap');
    expect(log.filter((l) => /^(wrote|enabled)/.test(l))).toHaveLength(4);
    const mtime = (await stat(join(dir, 'var-lib-data.mount'))).mtimeMs;

    const log2: string[] = [];
    const done = fakeProbe({
      disks: { '/dev/sdb': { table: 'gpt', sectorSize: 512, partitions: [{ number: 1, start: 2048, end: 99999, label: 'DATA', typeGuid: LFS, guid: 'AAAAAAAA-0000-4000-8000-000000000001' }] } },
      fs: { '/dev/sdc': { type: 'ext4', label: 'DATA' }, '/dev/sdd': { type: 'swap' } },
    });
    const again = await applyStorage(storage, { run: async () => { throw new Error('must not run'); }, probe: done, log: (l) => log2.push(l), root });
    expect(again.commands).toEqual([]);
    expect(log2.every((l) => l.startsWith('# '))).toBe(true);
    expect((await stat(join(dir, 'var-lib-data.mount'))).mtimeMs).toBe(mtime);
  });

  it('fails clearly when a device the plan creates does not appear', async () => {
    const st: Storage = { disks: [{ device: '/dev/oem-test-nonexistent', partitions: [{ number: 1 }] }], filesystems: [{ device: '/dev/oem-test-nonexistent1', format: 'ext4' }] };
    await expect(applyStorage(st, { run: async () => ok(), probe: fakeProbe(), log: () => {}, root, deviceTimeoutMs: 300 })).rejects.toThrow(
      'mkfs.ext4 -F /dev/oem-test-nonexistent1: /dev/oem-test-nonexistent1 did not appear (waited 300 ms)',
    );
  });
});

describe('systemProbe', () => {
  const SGDISK_P = `Disk /dev/loop0: 131072 sectors, 64.0 MiB
Sector size (logical/physical): 512/512 bytes
Disk identifier (GUID): F38405FB-D92F-4ED2-BC10-60FEC540557E
Partition table holds up to 128 entries
Main partition table begins at sector 2 and ends at sector 33
First usable sector is 34, last usable sector is 131038
Partitions will be aligned on 2048-sector boundaries
Total free space is 2014 sectors (1007.0 KiB)

Number  Start (sector)    End (sector)  Size       Code  Name
   1            2048           34815   16.0 MiB    EF00  my part
   2           34816          131038   47.0 MiB    8300  DATA
`;
  const info = (n: number, code: string, guid: string, first: number, last: number, name: string) =>
    `Partition GUID code: ${code} (whatever)\nPartition unique GUID: ${guid}\nFirst sector: ${first} (at 1.0 MiB)\nLast sector: ${last} (at 17.0 MiB)\nPartition size: ${last - first + 1} sectors\nAttribute flags: 0000000000000000\nPartition name: '${name}'\n`;
  const answers: Record<string, RunResult> = {
    'blkid -p -o export /dev/empty': { stdout: '', stderr: '', exitCode: 2 },
    'blkid -p -o export /dev/fs': { stdout: 'DEVNAME=/dev/fs\nLABEL=my\\ data\nUUID=2f0a8d0e-6c1b-4c55-9a57-3c1f4c2d5e01\nBLOCK_SIZE=4096\nTYPE=ext4\nUSAGE=filesystem\n', stderr: '', exitCode: 0 },
    'blkid -p -o export /dev/part': { stdout: 'DEVNAME=/dev/part\nPART_ENTRY_SCHEME=gpt\nPART_ENTRY_NAME=DATA\n', stderr: '', exitCode: 0 },
    'blkid -p -o export /dev/two': { stdout: '', stderr: 'ambivalent result', exitCode: 8 },
    'blkid -p -o export /dev/broken': { stdout: '', stderr: 'blkid: error: /dev/broken: Input/output error', exitCode: 4 },
    'blkid -p -o export /dev/loop0': { stdout: 'DEVNAME=/dev/loop0\nPTUUID=f38405fb\nPTTYPE=gpt\n', stderr: '', exitCode: 0 },
    'blkid -p -o export /dev/mbr': { stdout: 'DEVNAME=/dev/mbr\nPTTYPE=dos\n', stderr: '', exitCode: 0 },
    'sgdisk --print /dev/loop0': { stdout: SGDISK_P, stderr: '', exitCode: 0 },
    'sgdisk --print /dev/mbr': { stdout: 'Disk /dev/mbr: 131072 sectors\nSector size (logical): 4096 bytes\n', stderr: '', exitCode: 0 },
    'sgdisk --print /dev/empty': { stdout: 'Creating new GPT entries in memory.\nSector size (logical): 512 bytes\n', stderr: '', exitCode: 0 },
    'sgdisk --print /dev/none': { stdout: '', stderr: 'Problem opening /dev/none for reading! Error is 2.', exitCode: 2 },
    'sgdisk --info=1 /dev/loop0': { stdout: info(1, EFI, '0D890CA4-3678-4416-879A-1226601B54DC', 2048, 34815, 'my part'), stderr: '', exitCode: 0 },
    'sgdisk --info=2 /dev/loop0': { stdout: info(2, LFS, '6a3c29f4-0000-4000-8000-000000000001', 34816, 131038, 'DATA'), stderr: '', exitCode: 0 },
    'mdadm --detail /dev/md/there': { stdout: '', stderr: '', exitCode: 0 },
    'mdadm --detail /dev/md/gone': { stdout: '', stderr: 'mdadm: cannot open /dev/md/gone: No such file or directory', exitCode: 1 },
    'vgs --noheadings -o vg_name vg0': { stdout: '  vg0\n', stderr: '', exitCode: 0 },
    'vgs --noheadings -o vg_name vg1': { stdout: '', stderr: 'Volume group "vg1" not found', exitCode: 5 },
    'lvs --noheadings -o lv_name vg0/data': { stdout: '  data\n', stderr: '', exitCode: 0 },
  };
  const run: Run = async (c, a) => {
    const key = [c, ...a].join(' ');
    const r = answers[key];
    if (!r) throw new Error(`spawn ${c} ENOENT (${key})`);
    return r;
  };
  const probe = systemProbe(run);

  it('blkid: null for nothing, the filesystem, a note for several signatures, an error otherwise', async () => {
    expect(await probe.blkid('/dev/empty')).toBeNull();
    expect(await probe.blkid('/dev/part')).toBeNull();
    expect(await probe.blkid('/dev/fs')).toEqual({ type: 'ext4', label: 'my data', uuid: '2f0a8d0e-6c1b-4c55-9a57-3c1f4c2d5e01' });
    expect(await probe.blkid('/dev/two')).toEqual({ type: 'several signatures (see wipefs /dev/two)' });
    expect(await probe.blkid('/dev/loop0')).toEqual({ type: 'a gpt partition table' });
    await expect(probe.blkid('/dev/broken')).rejects.toThrow('blkid -p /dev/broken failed (exit 4): blkid: error: /dev/broken: Input/output error');
  });

  it('md, vg, lv existence from exit codes', async () => {
    expect(await probe.mdExists('there')).toBe(true);
    expect(await probe.mdExists('gone')).toBe(false);
    expect(await probe.vgExists('vg0')).toBe(true);
    expect(await probe.vgExists('vg1')).toBe(false);
    expect(await probe.lvExists('vg0', 'data')).toBe(true);
    expect(await probe.lvExists('vg0', 'nope')).toBe(false);
  });

  it('disk: the GPT partitions from sgdisk, the kind of table from blkid', async () => {
    expect(await probe.disk!('/dev/loop0')).toEqual({
      table: 'gpt',
      sectorSize: 512,
      partitions: [
        { number: 1, start: 2048, end: 34815, label: 'my part', typeGuid: EFI, guid: '0D890CA4-3678-4416-879A-1226601B54DC' },
        { number: 2, start: 34816, end: 131038, label: 'DATA', typeGuid: LFS, guid: '6A3C29F4-0000-4000-8000-000000000001' },
      ],
    });
    expect(await probe.disk!('/dev/mbr')).toEqual({ table: 'other', holds: 'a dos partition table', sectorSize: 4096, partitions: [] });
    expect(await probe.disk!('/dev/empty')).toEqual({ table: 'none', sectorSize: 512, partitions: [] });
    expect(await probe.disk!('/dev/none')).toBeNull();
  });
});

// ---------------------------------------------------------------------------------------------------
// Real devices: loop devices over sparse files (root only).

const hasUdev = await access('/run/udev/control').then(() => true, () => false);
const sh: Run = async (cmd, args) => {
  const r = await execa(cmd, args, { reject: false, env: hasUdev ? {} : { DM_DISABLE_UDEV: '1' } });
  return { stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), exitCode: r.exitCode ?? -1 };
};
async function must(cmd: string, args: string[]): Promise<string> {
  const r = await sh(cmd, args);
  if (r.exitCode !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.exitCode}): ${r.stderr.trim()}`);
  return r.stdout.trim();
}

const isRoot = process.getuid?.() === 0;
const haveTools = await Promise.all(['losetup', 'sgdisk', 'blkid', 'wipefs', 'blockdev', 'partx'].map((t) => which(t))).then((a) => a.every(Boolean));
const loopsUsable = isRoot && haveTools && (await access('/dev/loop-control').then(() => true, () => false));
const why = !isRoot ? 'not running as root' : !haveTools ? 'losetup/sgdisk/blkid/wipefs/blockdev/partx missing' : 'no /dev/loop-control';
const mkfsOf = { ext4: await which('mkfs.ext4'), xfs: await which('mkfs.xfs'), btrfs: await which('mkfs.btrfs'), vfat: await which('mkfs.vfat'), swap: await which('mkswap') };
const mdstat = await access('/proc/mdstat').then(() => true, () => false);
const hasMd = mdstat && !!(await which('mdadm'));
const noMd = !mdstat ? 'the kernel lacks md (no /proc/mdstat)' : 'mdadm is not installed (Debian package mdadm)';
const dmControl = await access('/dev/mapper/control').then(() => true, () => false);
const dmTools = !!(await which('dmsetup')) && !!(await which('lvcreate'));
const dmKernel = dmControl && dmTools && (await sh('dmsetup', ['version']).catch(() => ({ exitCode: 1 }))).exitCode === 0;
const hasDm = dmKernel;
const noDm = !dmControl
  ? 'the kernel lacks device-mapper (no /dev/mapper/control)'
  : !dmTools
    ? 'lvm2/dmsetup are not installed (Debian package lvm2)'
    : 'the kernel lacks device-mapper (dmsetup version fails)';

/** Loop devices and their backing files, always detached and removed. */
class Loops {
  devs: string[] = [];
  files: string[] = [];
  constructor(readonly dir: string) {}

  async file(name: string, mib: number): Promise<string> {
    const f = join(this.dir, name);
    this.files.push(f);
    await writeFile(f, '');
    await truncate(f, mib * 1024 * 1024);
    return f;
  }

  async attach(file: string, extra: string[] = []): Promise<string> {
    const dev = await must('losetup', ['--find', '--show', ...extra, file]);
    this.devs.push(dev);
    return dev;
  }

  async cleanup(): Promise<void> {
    for (const dev of this.devs.reverse()) await sh('losetup', ['-d', dev]);
    this.devs = [];
    for (const f of this.files) await rm(f, { force: true });
    const left = await sh('losetup', ['-a']);
    const ours = left.stdout.split('\n').filter((l) => this.files.some((f) => l.includes(f)));
    expect(ours, 'loop devices left behind').toEqual([]);
    this.files = [];
  }
}

async function blkidOf(dev: string): Promise<Record<string, string>> {
  const r = await sh('blkid', ['-p', '-o', 'export', dev]);
  const out: Record<string, string> = {};
  for (const l of r.stdout.split('\n')) {
    const i = l.indexOf('=');
    if (i > 0) out[l.slice(0, i)] = l.slice(i + 1);
  }
  return out;
}

async function appears(path: string, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    if (await lstat(path).then(() => true, () => false)) return true;
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.runIf(loopsUsable)('real runs on loop devices [root]', () => {
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'oem-disks-real-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('GPT partitions and every filesystem the tools allow; a second apply changes nothing; no reformat without force', async () => {
    const loops = new Loops(work);
    const root = join(work, 'root');
    const log: string[] = [];
    const opts = { run: sh, root, log: (l: string) => log.push(l) };
    try {
      const a = await loops.attach(await loops.file('a.img', 64), ['-P']);
      // xfsprogs 5.19+ refuses filesystems under 300 MiB: the second disk is bigger (sparse, so nearly free).
      const b = await loops.attach(await loops.file('b.img', 768), ['-P']);
      const disks: Storage['disks'] = [
        {
          device: a,
          wipe_table: true,
          partitions: [
            { number: 1, label: 'EFI', size_mib: 16, type_guid: EFI },
            { number: 2, label: 'SWAP', size_mib: 16, type_guid: SWAP_GUID },
            { number: 3, label: 'DATA', guid: '6A3C29F4-0000-4000-8000-0000000000D3' },
          ],
        },
        { device: b, wipe_table: true, partitions: [{ number: 1, label: 'XDATA', size_mib: 320 }, { number: 2, label: 'BDATA' }] },
      ];
      const UUID = '2f0a8d0e-6c1b-4c55-9a57-3c1f4c2d5e01';
      const fsFor = (dev: (disk: string, n: number) => string): NonNullable<Storage['filesystems']> => {
        const all: NonNullable<Storage['filesystems']> = [
          { device: dev(a, 1), format: 'vfat', label: 'EFI', uuid: 'ABCD-1234', mount: { path: '/boot/efi', options: ['umask=0077'] } },
          { device: dev(a, 2), format: 'swap', label: 'swap0' },
          { device: dev(a, 3), format: 'ext4', label: 'data', uuid: UUID, mount: { path: '/var/lib/data', options: ['noatime'] } },
          { device: dev(b, 1), format: 'xfs', label: 'xdata', mount: { path: '/srv/x-fs' } },
          { device: dev(b, 2), format: 'btrfs', label: 'bdata', mount: { path: '/var/lib/b' } },
        ];
        return all;
      };

      // Does this kernel scan partitions of loop devices (losetup -P)? Partition the disks, then look.
      await applyStorage({ disks }, opts);
      // OEM_TEST_NO_PARTSCAN=1 takes the fallback below even where partition nodes work (to test it).
      const partscan = !process.env.OEM_TEST_NO_PARTSCAN && (await appears(`${a}p3`, 3000)) && (await appears(`${b}p2`, 3000));
      let dev: (disk: string, n: number) => string;
      if (partscan) {
        console.log('real run: the kernel scans loop partitions (losetup -P): filesystems go on /dev/loopNpM');
        dev = (disk, n) => `${disk}p${n}`;
      } else {
        console.log(
          process.env.OEM_TEST_NO_PARTSCAN
            ? 'real run: OEM_TEST_NO_PARTSCAN is set: attaching the partitions as loop devices with --offset/--sizelimit'
            : 'real run: no partition nodes appeared for losetup -P loop devices on this kernel: attaching the partitions as loop devices with --offset/--sizelimit instead',
        );
        const parts = new Map<string, string>();
        for (const [disk, n] of [[a, 1], [a, 2], [a, 3], [b, 1], [b, 2]] as const) {
          const i = await must('sgdisk', [`--info=${n}`, disk]);
          const first = Number(/First sector: (\d+)/.exec(i)![1]);
          const last = Number(/Last sector: (\d+)/.exec(i)![1]);
          const file = disk === a ? loops.files[0]! : loops.files[1]!;
          parts.set(`${disk}:${n}`, await loops.attach(file, ['--offset', String(first * 512), '--sizelimit', String((last - first + 1) * 512)]));
        }
        dev = (disk, n) => parts.get(`${disk}:${n}`)!;
      }
      const filesystems = fsFor(dev);
      const storage: Storage = { disks, filesystems };

      // The whole config in one go from blank disks, when the partition nodes work.
      if (partscan) {
        for (const d of [a, b]) {
          await must('sgdisk', ['--zap-all', d]);
          await sh('blockdev', ['--rereadpt', d]);
        }
      }
      const first = await applyStorage(storage, opts);
      if (partscan) expect(first.commands.filter((c) => c.cmd === 'sgdisk').length).toBe(2 * 2 + 5);
      expect(first.commands.filter((c) => /^mk/.test(c.cmd)).map((c) => c.cmd)).toEqual(filesystems.map((f) => (f.format === 'swap' ? 'mkswap' : `mkfs.${f.format}`)));

      // What the disks and devices hold now, by independent tools.
      const pa = await must('sgdisk', ['--info=1', a]);
      expect(pa).toContain(`Partition GUID code: ${EFI}`);
      expect(pa).toContain("Partition name: 'EFI'");
      expect(pa).toContain('Partition size: 32768 sectors');
      expect(await must('sgdisk', ['--info=3', a])).toContain('Partition unique GUID: 6A3C29F4-0000-4000-8000-0000000000D3');
      expect(await must('sgdisk', ['--info=1', b])).toContain('Partition size: 655360 sectors');
      const before: Record<string, Record<string, string>> = {};
      for (const f of filesystems) {
        const k = await blkidOf(f.device);
        before[f.device] = k;
        expect(k.TYPE, f.device).toBe(f.format);
        expect(k.LABEL, f.device).toBe(f.label);
        expect(k.UUID, f.device).toBeTruthy();
      }
      expect(before[dev(a, 1)]!.UUID).toBe('ABCD-1234');
      expect(before[dev(a, 3)]!.UUID).toBe(UUID);

      const sys = join(root, 'etc/systemd/system');
      const unitNames = first.units.map((u) => u.name).sort();
      const expected = [
        mkfsOf.vfat && 'boot-efi.mount',
        mkfsOf.swap && `${systemdEscapePath(dev(a, 2))}.swap`,
        mkfsOf.ext4 && 'var-lib-data.mount',
        mkfsOf.xfs && 'srv-x\\x2dfs.mount',
        mkfsOf.btrfs && 'var-lib-b.mount',
      ].filter((x): x is string => typeof x === 'string').sort();
      expect(unitNames).toEqual(expected);
      for (const u of first.units) {
        expect(await readFile(join(sys, u.name), 'utf8')).toBe(u.content);
        const wants = u.name.endsWith('.swap') ? 'swap.target.wants' : 'local-fs.target.wants';
        expect(await readlink(join(sys, wants, u.name))).toBe(`/etc/systemd/system/${u.name}`);
        expect(checkUnit(u.name, u.content)).toEqual([]);
      }
      if (mkfsOf.ext4) expect(await readFile(join(sys, 'var-lib-data.mount'), 'utf8')).toContain(`What=${dev(a, 3)}\nWhere=/var/lib/data\nType=ext4\nOptions=noatime\n`);

      // A second apply plans and runs nothing, and every filesystem keeps its UUID.
      log.length = 0;
      const second = await applyStorage(storage, opts);
      expect(second.commands.map(commandLine)).toEqual([]);
      expect(log.filter((l) => !l.startsWith('# '))).toEqual([]);
      for (const f of filesystems) expect((await blkidOf(f.device)).UUID, f.device).toBe(before[f.device]!.UUID);

      // Another format without force is refused and the data stays.
      if (mkfsOf.ext4) {
        const other: Storage = { filesystems: [{ device: dev(a, 3), format: 'btrfs', label: 'data' }] };
        await expect(applyStorage(other, opts)).rejects.toThrow(`${dev(a, 3)} already holds ext4 labelled "data", not btrfs labelled "data"; refusing to reformat it`);
        expect((await blkidOf(dev(a, 3))).UUID).toBe(UUID);
      }
      // force reformats (here: the same format, a new UUID).
      if (mkfsOf.btrfs) {
        const forced = await applyStorage({ filesystems: [{ device: dev(b, 2), format: 'btrfs', label: 'bdata', force: true }] }, opts);
        expect(forced.commands.map((c) => c.cmd)).toEqual(['wipefs', 'mkfs.btrfs']);
        const k = await blkidOf(dev(b, 2));
        expect(k.TYPE).toBe('btrfs');
        expect(k.UUID).not.toBe(before[dev(b, 2)]!.UUID);
      }
      // A dry run of a changed config prints what it would do and touches nothing.
      log.length = 0;
      await applyStorage({ disks: [{ ...disks[0]!, partitions: [{ number: 1, label: 'ONE' }] }] }, { ...opts, dryRun: true });
      expect(log).toEqual([
        `sgdisk --zap-all ${a}`,
        `sgdisk --clear ${a}`,
        `sgdisk --new=1:0:0 --change-name=1:ONE --typecode=1:${LFS} ${a}`,
        `blockdev --rereadpt ${a}`,
        `partx -u ${a}`,
      ]);
      expect(await must('sgdisk', ['--info=1', a])).toContain("Partition name: 'EFI'");
    } finally {
      await loops.cleanup();
    }
  });

  it.runIf(hasMd)('RAID1 for real (md) [root, needs the md driver]', async () => {
    const loops = new Loops(work);
    const name = `oemt${process.pid}`;
    try {
      const d1 = await loops.attach(await loops.file('r1.img', 64));
      const d2 = await loops.attach(await loops.file('r2.img', 64));
      const storage: Storage = { raid: [{ name, level: 'raid1', devices: [d1, d2] }], filesystems: [{ device: `/dev/md/${name}`, format: 'ext4', label: 'mdtest' }] };
      const opts = { run: sh, root: join(work, 'root-md'), log: () => {} };
      const first = await applyStorage(storage, opts);
      expect(first.commands.map((c) => c.cmd)).toEqual(['mdadm', 'mkfs.ext4']);
      expect(await must('mdadm', ['--detail', `/dev/md/${name}`])).toMatch(/Raid Level : raid1/);
      const k = await blkidOf(`/dev/md/${name}`);
      expect([k.TYPE, k.LABEL]).toEqual(['ext4', 'mdtest']);
      const second = await applyStorage(storage, opts);
      expect(second.commands).toEqual([]);
    } finally {
      await sh('mdadm', ['--stop', `/dev/md/${name}`]);
      for (const d of loops.devs) await sh('mdadm', ['--zero-superblock', d]);
      await loops.cleanup();
    }
  });

  it.runIf(hasDm)('LVM for real (device-mapper) [root, needs device-mapper]', async () => {
    const loops = new Loops(work);
    const vg = `oemtvg${process.pid}`;
    let pv = '';
    try {
      pv = await loops.attach(await loops.file('pv.img', 64));
      const storage: Storage = {
        volume_groups: [{ name: vg, devices: [pv], logical_volumes: [{ name: 'rest' }, { name: 'a', size_mib: 8 }] }],
        filesystems: [
          { device: `/dev/${vg}/a`, format: 'ext4', label: 'lvA' },
          { device: `/dev/${vg}/rest`, format: 'swap', label: 'lvswap' },
        ],
      };
      const opts = { run: sh, root: join(work, 'root-lvm'), log: () => {} };
      const first = await applyStorage(storage, opts);
      expect(first.commands.map(commandLine)).toEqual([
        `pvcreate -ff -y ${pv}`,
        `vgcreate ${vg} ${pv}`,
        `lvcreate -y -n a -L 8m ${vg}`,
        `lvcreate -y -n rest -l 100%FREE ${vg}`,
        `mkfs.ext4 -F -L lvA /dev/${vg}/a`,
        `mkswap -L lvswap /dev/${vg}/rest`,
      ]);
      expect((await blkidOf(`/dev/${vg}/a`)).LABEL).toBe('lvA');
      expect((await blkidOf(`/dev/${vg}/rest`)).TYPE).toBe('swap');
      const second = await applyStorage(storage, opts);
      expect(second.commands).toEqual([]);
    } finally {
      await sh('vgremove', ['-f', vg]);
      if (pv) await sh('pvremove', ['-ff', '-y', pv]);
      await loops.cleanup();
    }
  });
});

describe('the tools of every storage feature', () => {
  it('are installed (packages.txt): a missing one fails here instead of shrinking the real runs', async () => {
    expect(mkfsOf).toEqual({ ext4: expect.any(String), xfs: expect.any(String), btrfs: expect.any(String), vfat: expect.any(String), swap: expect.any(String) });
    for (const tool of ['sgdisk', 'mdadm', 'pvcreate', 'vgcreate', 'lvcreate', 'wipefs', 'blkid']) expect(await which(tool), tool).toBeTruthy();
    // What this kernel lets run for real; the command plans of everything are checked exactly above.
    if (!loopsUsable) console.log(`real loop-device runs skipped: ${why}`);
    if (!hasMd) console.log(`real RAID run skipped: ${noMd}`);
    if (!hasDm) console.log(`real LVM run skipped: ${noDm}`);
  });
});
