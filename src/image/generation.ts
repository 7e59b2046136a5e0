/**
 * Which generation an image is: CoreOS-style (ext4 OEM, cloud-config, OEM at /usr/share/oem) or
 * Flatcar-style (btrfs OEM, Ignition; OEM at /oem from Flatcar 3637 on). Evidence, strongest first:
 * os-release on USR-A, version.txt beside the image, the ESP's first_boot directory, the OEM filesystem.
 */
import { openFsReader } from './fs-read.js';
import type { PartitionReport } from './layout.js';

export type GenerationName = 'coreos' | 'flatcar' | 'unknown';

export interface GenerationInfo {
  name: GenerationName;
  version?: string;
  /** Where the OEM partition is mounted on the running system. */
  oemMountPoint: string;
  /** Each piece of evidence found, e.g. "os-release ID=flatcar". */
  evidence: string[];
  osRelease?: Record<string, string>;
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
  return name === 'flatcar' && version !== undefined && compareVersions(version, '3637.0.0') >= 0 ? '/oem' : '/usr/share/oem';
}

async function readOsRelease(imagePath: string, usr: PartitionReport): Promise<Record<string, string> | undefined> {
  const fs = usr.filesystem.type;
  if (fs !== 'ext2' && fs !== 'ext3' && fs !== 'ext4') return undefined; // btrfs USR would need a full restore
  const reader = openFsReader({ imagePath, offset: usr.firstLba * 512, size: usr.size, fs, name: `partition ${usr.number} (${usr.label})` });
  try {
    for (const p of ['/lib/os-release', '/share/flatcar/os-release', '/share/coreos/os-release']) {
      const b = await reader.readFile(p).catch(() => null);
      if (b) return parseKeyValues(b.toString('utf8'));
    }
    return undefined;
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
  if (usr) {
    osRelease = await readOsRelease(imagePath, usr).catch(() => undefined);
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
  const name: GenerationName = votes[0] ?? 'unknown';
  const info: GenerationInfo = { name, oemMountPoint: oemMountPoint(name, version), evidence };
  if (version !== undefined) info.version = version;
  if (osRelease) info.osRelease = osRelease;
  return info;
}
