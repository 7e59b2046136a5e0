/**
 * Which generation an image is: CoreOS-style (ext4 OEM, cloud-config, OEM at /usr/share/oem),
 * Flatcar-style with provider content as plain files on OEM (btrfs OEM, Ignition; OEM at /oem from
 * Flatcar 3637 on), or Flatcar with provider content as a system extension on OEM (3760 and later:
 * squashfs extensions up to 4593, signed EROFS disk images from 4628). Evidence, strongest first:
 * os-release on USR-A, version.txt beside the image, the ESP's first_boot directory, the OEM
 * filesystem; for the extension era also SYSEXT_LEVEL, /usr/share/flatcar/oems/ and a 1 GiB OEM.
 */
import { openFsReader } from './fs-read.js';
import type { PartitionReport } from './layout.js';

export type GenerationName = 'coreos' | 'flatcar' | 'flatcar-sysext' | 'unknown';

/** The first Flatcar release whose provider content is a system extension, and the first whose extensions are signed EROFS disk images. */
export const SYSEXT_SINCE = '3760.0.0';
export const EROFS_SINCE = '4628.0.0';

export interface GenerationInfo {
  name: GenerationName;
  version?: string;
  /** Where the OEM partition is mounted on the running system. */
  oemMountPoint: string;
  /** Each piece of evidence found, e.g. "os-release ID=flatcar". */
  evidence: string[];
  osRelease?: Record<string, string>;
  /** flatcar-sysext: what its official extensions are, and the platforms USR-A lists under /usr/share/flatcar/oems/. */
  sysext?: { format: 'squashfs' | 'erofs'; oems: string[] };
}

/** Parses KEY=VALUE lines (os-release, version.txt, oem-release), unquoting values. */
export function parseKeyValues(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) continue;
    let v = m[2]!;
    if (v.length >= 2 && ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'")))) v = v.slice(1, -1);
    out[m[1]!] = v;
  }
  return out;
}

export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map((x) => parseInt(x, 10) || 0);
  const pb = b.split('.').map((x) => parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d;
  }
  return 0;
}

/** The OEM mount point for a generation and version (Flatcar >= 3637 mounts it at /oem). */
export function oemMountPoint(name: GenerationName, version?: string): string {
  if (name === 'flatcar-sysext') return '/oem';
  return name === 'flatcar' && version !== undefined && compareVersions(version, '3637.0.0') >= 0 ? '/oem' : '/usr/share/oem';
}

async function readUsr(imagePath: string, usr: PartitionReport): Promise<{ osRelease?: Record<string, string>; oems?: string[] }> {
  const fs = usr.filesystem.type;
  if (fs !== 'ext2' && fs !== 'ext3' && fs !== 'ext4') return {}; // btrfs USR would need a full restore
  const reader = openFsReader({ imagePath, offset: usr.firstLba * 512, size: usr.size, fs, name: `partition ${usr.number} (${usr.label})` });
  try {
    const out: { osRelease?: Record<string, string>; oems?: string[] } = {};
    for (const p of ['/lib/os-release', '/share/flatcar/os-release', '/share/coreos/os-release']) {
      const b = await reader.readFile(p).catch(() => null);
      if (b) {
        out.osRelease = parseKeyValues(b.toString('utf8'));
        break;
      }
    }
    const oems = await reader.listDir('/share/flatcar/oems').catch(() => null);
    if (oems) out.oems = oems;
    return out;
  } finally {
    await reader.close();
  }
}

async function espDistroDir(imagePath: string, esp: PartitionReport): Promise<string | undefined> {
  if (esp.filesystem.type !== 'vfat') return undefined;
  const reader = openFsReader({ imagePath, offset: esp.firstLba * 512, size: esp.size, fs: 'vfat', name: 'the ESP' });
  const files = await reader.list().catch(() => []);
  for (const d of ['flatcar', 'coreos']) if (files.some((f) => f.path.toLowerCase() === `/${d}/first_boot`)) return d;
  return undefined;
}

export async function detectGeneration(
  imagePath: string,
  partitions: PartitionReport[],
  versionTxt?: Record<string, string>,
): Promise<GenerationInfo> {
  const evidence: string[] = [];
  const votes: GenerationName[] = [];
  let version: string | undefined;
  let osRelease: Record<string, string> | undefined;

  const usr = partitions.find((p) => p.role === 'usr-a');
  let oems: string[] | undefined;
  if (usr) {
    const read = await readUsr(imagePath, usr).catch(() => ({}) as { osRelease?: Record<string, string>; oems?: string[] });
    osRelease = read.osRelease;
    oems = read.oems;
    if (osRelease?.ID === 'flatcar' || osRelease?.ID === 'coreos') {
      votes.push(osRelease.ID);
      evidence.push(`USR-A os-release ID=${osRelease.ID}`);
      version ??= osRelease.VERSION_ID;
    }
  }
  if (versionTxt) {
    if (versionTxt.FLATCAR_VERSION) {
      votes.push('flatcar');
      evidence.push('version.txt has FLATCAR_* keys');
      version ??= versionTxt.FLATCAR_VERSION;
    } else if (versionTxt.COREOS_VERSION) {
      votes.push('coreos');
      evidence.push('version.txt has COREOS_* keys');
      version ??= versionTxt.COREOS_VERSION;
    }
  }
  const esp = partitions.find((p) => p.role === 'esp');
  if (esp) {
    const d = await espDistroDir(imagePath, esp).catch(() => undefined);
    if (d) {
      votes.push(d as GenerationName);
      evidence.push(`ESP has ${d}/first_boot`);
    }
  }
  const oem = partitions.find((p) => p.role === 'oem');
  if (oem?.filesystem.type === 'btrfs') {
    votes.push('flatcar');
    evidence.push('OEM filesystem is btrfs');
  } else if (oem && oem.filesystem.type.startsWith('ext')) {
    votes.push('coreos');
    evidence.push(`OEM filesystem is ${oem.filesystem.type}`);
  }
  let name: GenerationName = votes[0] ?? 'unknown';
  if (name === 'flatcar') {
    // The extension era: any one of these says it.
    const era: string[] = [];
    if (version !== undefined && compareVersions(version, SYSEXT_SINCE) >= 0) era.push(`version ${version} is ${SYSEXT_SINCE.split('.')[0]} or later`);
    if (osRelease?.SYSEXT_LEVEL) era.push(`USR-A os-release SYSEXT_LEVEL=${osRelease.SYSEXT_LEVEL}`);
    if (oems !== undefined) era.push(`USR-A lists ${oems.length} OEM platform${oems.length === 1 ? '' : 's'} under /usr/share/flatcar/oems`);
    if (oem && oem.size >= 1024 * 1024 * 1024) era.push('the OEM partition is 1 GiB');
    if (era.length) {
      name = 'flatcar-sysext';
      evidence.push(...era);
    }
  }
  const info: GenerationInfo = { name, oemMountPoint: oemMountPoint(name, version), evidence };
  if (version !== undefined) info.version = version;
  if (osRelease) info.osRelease = osRelease;
  if (name === 'flatcar-sysext') {
    info.sysext = { format: version !== undefined && compareVersions(version, EROFS_SINCE) >= 0 ? 'erofs' : 'squashfs', oems: oems ?? [] };
  }
  return info;
}
