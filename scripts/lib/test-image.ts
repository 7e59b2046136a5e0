/**
 * Builds disk images with the Container Linux layout, without root: GPT by sgdisk, real filesystems
 * by mkfs (vfat ESP, ext2 USR-A, ext4 or btrfs OEM, ext4 ROOT), copied in sparse.
 *
 * Three generations: `coreos` (ext4 OEM, COREOS_* version.txt, coreos/first_boot), `flatcar`
 * (btrfs OEM, FLATCAR_* version.txt, flatcar/first_boot) and `flatcar-sysext` (Flatcar 3760 and
 * later: a btrfs OEM of 1 GiB from 4593 (128 MiB before), SYSEXT_LEVEL=1.0 in os-release, the platforms with OEM extensions listed
 * under /usr/share/flatcar/oems/). Two sizes: `small` for tests and `full` (the real
 * 4,756,340,736-byte layout) for benchmarks.
 */
import { execa } from 'execa';
import { chmod, copyFile, lchown, lstat, mkdir, mkdtemp, readdir, rename, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { sparseCopyInto } from '../../src/image/sparse.js';
import { TYPE } from '../../src/image/layout.js';
import { makeExtension } from '../../src/sysext/make.js';
import { versionTxt } from './mirror.js';

export type Generation = 'coreos' | 'flatcar' | 'flatcar-sysext';

/** The platforms a test release of the extension era publishes OEM extensions for. */
export const TEST_OEMS = ['azure', 'digitalocean', 'gce', 'openstack', 'qemu', 'stackit'];
export type ImageSize = 'small' | 'full';

/** One entry of a tree put into a partition's filesystem. */
export interface TreeEntry {
  path: string;
  type?: 'file' | 'dir' | 'symlink';
  content?: string | Buffer;
  target?: string;
  mode?: number;
  uid?: number;
  gid?: number;
}

export interface TestImageOptions {
  /** Output path of the raw image. */
  path: string;
  generation: Generation;
  size?: ImageSize;
  /** Release version, X.Y.Z. Default 2512.3.0 (coreos) or 3510.2.8 (flatcar). */
  version?: string;
  board?: 'amd64-usr' | 'arm64-usr';
  /** Filesystem of the OEM partition (default: ext4 for coreos, btrfs for flatcar). */
  oemFs?: 'ext4' | 'btrfs';
  oem?: TreeEntry[];
  root?: TreeEntry[];
  /** Bytes of real data (files from the host's /usr) to put into USR-A. Default: 0 (small), 600 MB (full). */
  usrDataBytes?: number;
  usrDataDirs?: string[];
  /** flatcar-sysext: the platform ids listed under /usr/share/flatcar/oems/ (default TEST_OEMS). */
  oems?: string[];
  /** Also write `<path>.version.txt`? Default true. */
  versionTxt?: boolean;
}

export interface PartSpec {
  number: number;
  label: string;
  type: string;
  sectors: number;
}

export interface BuiltImage {
  path: string;
  versionTxtPath?: string;
  generation: Generation;
  version: string;
  size: number;
  diskGuid: string;
  partitions: (PartSpec & { first: number; last: number })[];
}

const MiB = 1024 * 1024;
const S = 512;
export const DISK_GUID = '00000000-0000-0000-0000-000000000001';
export const FULL_SIZE = 4_756_340_736;

/** Partition sizes in sectors, in disk order. */
/** Whether OEM is 1 GiB: Flatcar 4593 and later (4459 and before had 128 MiB, extensions or not). */
function bigOem(gen: Generation, version: string): boolean {
  const [major] = version.split('.').map(Number);
  return gen === 'flatcar-sysext' && (major ?? 0) >= 4593;
}

function layoutFor(size: ImageSize, big: boolean): { parts: PartSpec[]; totalSectors: number } {
  const mib = (n: number) => (n * MiB) / S;
  const full = size === 'full';
  const parts: PartSpec[] = [
    { number: 1, label: 'EFI-SYSTEM', type: TYPE.esp, sectors: full ? mib(128) : mib(32) },
    { number: 2, label: 'BIOS-BOOT', type: TYPE.biosBoot, sectors: mib(2) },
    { number: 3, label: 'USR-A', type: TYPE.usr, sectors: full ? mib(1024) : mib(16) },
    { number: 4, label: 'USR-B', type: TYPE.usr, sectors: full ? mib(1024) : mib(16) },
    { number: 6, label: 'OEM', type: TYPE.linuxData, sectors: big ? mib(1024) : mib(128) },
    { number: 7, label: 'OEM-CONFIG', type: TYPE.oemConfig, sectors: full ? mib(64) : mib(4) },
    // The extension era's 1 GiB OEM comes out of ROOT in the full layout, which keeps its size.
    { number: 9, label: 'ROOT', type: TYPE.root, sectors: full ? mib(big ? 2162 - 896 : 2162) : mib(64) },
  ];
  const used = 4096 + parts.reduce((a, p) => a + p.sectors, 0);
  const totalSectors = full ? FULL_SIZE / S : used + 4096;
  return { parts, totalSectors };
}

export function osRelease(gen: Generation, version: string, board: string): string {
  if (gen === 'coreos') {
    return [
      'NAME="Container Linux by CoreOS"',
      'ID=coreos',
      `VERSION=${version}`,
      `VERSION_ID=${version}`,
      `BUILD_ID=${version}-test`,
      `PRETTY_NAME="Container Linux by CoreOS ${version} (Test)"`,
      'ANSI_COLOR="38;5;75"',
      'HOME_URL="https://coreos.com/"',
      'BUG_REPORT_URL="https://issues.coreos.com"',
      `COREOS_BOARD="${board}"`,
      '',
    ].join('\n');
  }
  return [
    'NAME="Flatcar Container Linux by Kinvolk"',
    'ID=flatcar',
    'ID_LIKE=coreos',
    `VERSION=${version}`,
    `VERSION_ID=${version}`,
    `BUILD_ID=${version}-test`,
    `PRETTY_NAME="Flatcar Container Linux by Kinvolk ${version} (Test)"`,
    'ANSI_COLOR="38;5;75"',
    'HOME_URL="https://flatcar.org/"',
    'BUG_REPORT_URL="https://issues.flatcar.org"',
    `FLATCAR_BOARD="${board}"`,
    ...(gen === 'flatcar-sysext' ? ['SYSEXT_LEVEL=1.0'] : []),
    '',
  ].join('\n');
}

async function sizedFile(file: string, bytes: number): Promise<void> {
  await writeFile(file, '');
  await truncate(file, bytes);
}

async function sh(cmd: string, args: string[]): Promise<void> {
  await execa(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
}

const isRoot = () => process.getuid?.() === 0;

/** Materializes a tree spec in a directory; returns the entries whose owner could not be set. */
async function materialize(dir: string, entries: TreeEntry[]): Promise<TreeEntry[]> {
  const unowned: TreeEntry[] = [];
  for (const e of entries) {
    const p = join(dir, e.path);
    await mkdir(dirname(p), { recursive: true });
    const type = e.type ?? (e.target !== undefined ? 'symlink' : 'file');
    if (type === 'dir') await mkdir(p, { recursive: true });
    else if (type === 'symlink') await symlink(e.target!, p);
    else await writeFile(p, e.content ?? '');
    if (type !== 'symlink' && e.mode !== undefined) await chmod(p, e.mode);
    if (e.uid !== undefined || e.gid !== undefined) {
      if (isRoot()) {
        await lchown(p, e.uid ?? 0, e.gid ?? 0);
      } else unowned.push(e);
    }
  }
  return unowned;
}

/** Copies regular files from the host into `dest` until `budget` bytes. */
async function copyHostData(dest: string, dirs: string[], budget: number): Promise<number> {
  let total = 0;
  const walk = async (src: string, rel: string): Promise<void> => {
    let names: string[];
    try {
      names = (await readdir(src)).sort();
    } catch {
      return;
    }
    for (const n of names) {
      if (total >= budget) return;
      const s = join(src, n);
      let st;
      try {
        st = await lstat(s);
      } catch {
        continue;
      }
      if (st.isDirectory()) await walk(s, join(rel, n));
      else if (st.isFile() && st.size > 0 && st.size < 64 * MiB) {
        const d = join(dest, rel, n);
        await mkdir(dirname(d), { recursive: true });
        try {
          await copyFile(s, d);
          total += st.size;
        } catch {
          /* unreadable: skip */
        }
      }
    }
  };
  for (const d of dirs) await walk(d, d.replace(/^\/+/, '').replace(/\//g, '_'));
  return total;
}

async function mkfsExt(kind: 'ext2' | 'ext4', file: string, bytes: number, label: string, dir: string, unowned: TreeEntry[]) {
  await sizedFile(file, bytes);
  await sh(`mkfs.${kind}`, ['-q', '-F', '-L', label, '-E', 'root_owner=0:0', '-d', dir, file]);
  if (unowned.length) {
    // Not root: set owners afterwards through debugfs.
    const cmds = unowned.flatMap((e) => [
      ...(e.uid !== undefined ? [`sif "/${e.path}" uid ${e.uid}`] : []),
      ...(e.gid !== undefined ? [`sif "/${e.path}" gid ${e.gid}`] : []),
    ]);
    await execa('debugfs', ['-w', '-f', '-', file], { input: cmds.join('\n') + '\n' });
  }
}

async function mkfsBtrfs(file: string, bytes: number, label: string, dir: string) {
  await sizedFile(file, bytes);
  await sh('mkfs.btrfs', ['-q', '-f', '-L', label, '--rootdir', dir, file]);
}

async function mkfsVfat(file: string, bytes: number, label: string, distroDir: string) {
  await sizedFile(file, bytes);
  const fat32 = bytes >= 64 * MiB;
  await sh('mkfs.vfat', [...(fat32 ? ['-F', '32'] : []), '-n', label, '-i', '0e6f1234', file]);
  const work = await mkdtemp(join(tmpdir(), 'oem-esp-'));
  try {
    await writeFile(join(work, 'first_boot'), '');
    await sh('mmd', ['-i', file, `::${distroDir}`]);
    await sh('mcopy', ['-i', file, join(work, 'first_boot'), `::${distroDir}/first_boot`]);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Builds a Container Linux-layout test image. */
export async function buildTestImage(opts: TestImageOptions): Promise<BuiltImage> {
  const size = opts.size ?? 'small';
  const gen = opts.generation;
  const distro = gen === 'coreos' ? 'coreos' : 'flatcar';
  const version = opts.version ?? (gen === 'coreos' ? '2512.3.0' : gen === 'flatcar' ? '3510.2.8' : '4593.1.0');
  const board = opts.board ?? 'amd64-usr';
  const oemFs = opts.oemFs ?? (gen === 'coreos' ? 'ext4' : 'btrfs');
  const { parts, totalSectors } = layoutFor(size, bigOem(gen, version));
  const work = await mkdtemp(join(tmpdir(), 'oem-testimg-'));
  const tmpImage = `${opts.path}.tmp-${process.pid}`;
  try {
    // GPT.
    await rm(tmpImage, { force: true });
    await sizedFile(tmpImage, totalSectors * S);
    const args = ['-o', '-U', DISK_GUID];
    let next = 4096;
    const placed: BuiltImage['partitions'] = [];
    for (const p of parts) {
      const first = next;
      const last = first + p.sectors - 1;
      args.push('-n', `${p.number}:${first}:${last}`, '-t', `${p.number}:${p.type}`, '-c', `${p.number}:${p.label}`);
      args.push('-u', `${p.number}:${uniqueGuid(p.number)}`);
      placed.push({ ...p, first, last });
      next = last + 1;
    }
    // USR-A: priority 1, tries 0, successful.
    args.push('-A', '3:set:48', '-A', '3:set:56');
    await sh('sgdisk', [...args, tmpImage]);
    const at = (n: number) => placed.find((p) => p.number === n)!;

    // ESP.
    const esp = join(work, 'esp.img');
    await mkfsVfat(esp, at(1).sectors * S, 'EFI-SYSTEM', distro);
    await sparseCopyInto(esp, tmpImage, at(1).first * S);
    await rm(esp);

    // USR-A: ext2 with os-release and release files (the partition is mounted at /usr).
    const usrDir = join(work, 'usr');
    await materialize(usrDir, [
      { path: 'lib/os-release', content: osRelease(gen, version, board) },
      { path: `share/${distro}/release`, content: `${distro.toUpperCase()}_RELEASE_VERSION=${version}\n${distro.toUpperCase()}_RELEASE_BOARD=${board}\n` },
      ...(gen === 'flatcar-sysext' ? (opts.oems ?? TEST_OEMS).map((id) => ({ path: `share/flatcar/oems/${id}`, content: '' })) : []),
    ]);
    const dataBytes = opts.usrDataBytes ?? (size === 'full' ? 600 * MiB : 0);
    if (dataBytes > 0) await copyHostData(join(usrDir, 'data'), opts.usrDataDirs ?? ['/usr/lib', '/usr/share', '/usr/bin'], dataBytes);
    const usr = join(work, 'usr.img');
    await mkfsExt('ext2', usr, at(3).sectors * S, 'USR-A', usrDir, []);
    await sparseCopyInto(usr, tmpImage, at(3).first * S);
    await rm(usr);
    await rm(usrDir, { recursive: true, force: true });

    // OEM.
    const oemDir = join(work, 'oem');
    await mkdir(oemDir);
    const oemUnowned = await materialize(oemDir, opts.oem ?? []);
    const oem = join(work, 'oem.img');
    if (oemFs === 'btrfs') await mkfsBtrfs(oem, at(6).sectors * S, 'OEM', oemDir);
    else await mkfsExt('ext4', oem, at(6).sectors * S, 'OEM', oemDir, oemUnowned);
    await sparseCopyInto(oem, tmpImage, at(6).first * S);
    await rm(oem);

    // ROOT.
    const rootDir = join(work, 'root');
    await mkdir(rootDir);
    const rootUnowned = await materialize(rootDir, opts.root ?? []);
    const root = join(work, 'root.img');
    await mkfsExt('ext4', root, at(9).sectors * S, 'ROOT', rootDir, rootUnowned);
    await sparseCopyInto(root, tmpImage, at(9).first * S);
    await rm(root);

    await rename(tmpImage, opts.path);
    let versionTxtPath: string | undefined;
    if (opts.versionTxt !== false) {
      versionTxtPath = `${opts.path.replace(/\.bin$/, '')}.version.txt`;
      await writeFile(versionTxtPath, versionTxt(distro, version));
    }
    return {
      path: opts.path,
      ...(versionTxtPath ? { versionTxtPath } : {}),
      generation: gen,
      version,
      size: totalSectors * S,
      diskGuid: DISK_GUID,
      partitions: placed,
    };
  } finally {
    await rm(tmpImage, { force: true });
    await rm(work, { recursive: true, force: true });
  }
}

/** Stable per-partition unique GUIDs, so fixtures are reproducible. */
export function uniqueGuid(n: number): string {
  return `7130C94A-213A-4E5A-8E26-6CCE96${n.toString(16).toUpperCase().padStart(6, '0')}`;
}


/**
 * A copy of a built test image whose ROOT is made anew (mkfs.ext4 -d, as buildTestImage makes it)
 * with `root`: a variant for one test in a fraction of a whole image's build. The ROOT range is
 * zeroed first (a hole), so nothing of the old filesystem is left under the new one.
 */
export async function withRoot(base: string, path: string, root: TreeEntry[]): Promise<string> {
  const info = (await execa('sgdisk', ['-i', '9', base])).stdout;
  const first = Number(/First sector: (\d+)/.exec(info)?.[1]);
  const last = Number(/Last sector: (\d+)/.exec(info)?.[1]);
  if (!Number.isInteger(first) || !Number.isInteger(last)) throw new Error(`${base} has no partition 9`);
  const work = await mkdtemp(join(tmpdir(), 'oem-testimg-'));
  const tmpImage = `${path}.tmp-${process.pid}`;
  try {
    await sh('cp', ['--sparse=always', base, tmpImage]);
    await sh('fallocate', ['--punch-hole', '--offset', String(first * S), '--length', String((last - first + 1) * S), tmpImage]);
    const rootDir = join(work, 'root');
    await mkdir(rootDir);
    const unowned = await materialize(rootDir, root);
    const img = join(work, 'root.img');
    await mkfsExt('ext4', img, (last - first + 1) * S, 'ROOT', rootDir, unowned);
    await sparseCopyInto(img, tmpImage, first * S);
    await rename(tmpImage, path);
    return path;
  } finally {
    await rm(tmpImage, { force: true });
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Flatcar's OEM system extensions for a test image of the extension era, as a release directory
 * holds them: `oem-<id>.raw` in `dir` for each platform id (squashfs, made by makeExtension, each with
 * its extension-release for the image's version and a marker unit). Returns their paths.
 */
export async function writeOemExtensions(dir: string, version: string, oems: string[] = TEST_OEMS): Promise<string[]> {
  const made: string[] = [];
  for (const id of oems) {
    const name = `oem-${id}`;
    const tree = await mkdtemp(join(dir, `.${name}-`));
    try {
      await mkdir(join(tree, 'usr/lib/extension-release.d'), { recursive: true });
      await writeFile(join(tree, 'usr/lib/extension-release.d', `extension-release.${name}`), `ID=flatcar\nVERSION_ID=${version}\nARCHITECTURE=x86-64\n`);
      await mkdir(join(tree, 'usr/lib/systemd/system'), { recursive: true });
      await writeFile(join(tree, 'usr/lib/systemd/system', `${name}-marker.service`), `[Unit]\nDescription=${id}: a test OEM extension\n`);
      const out = join(dir, `${name}.raw`);
      await makeExtension(tree, out, { format: 'squashfs', mtime: 1_700_000_000, name });
      made.push(out);
    } finally {
      await rm(tree, { recursive: true, force: true });
    }
  }
  return made;
}
