/** The Container Linux disk layout: partition roles, type GUIDs and labels. */
import type { FsInfo } from './fs-detect.js';
import type { Gpt, GptPartition } from './gpt.js';

export const TYPE = {
  esp: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  biosBoot: '21686148-6449-6E6F-744E-656564454649',
  usr: '5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6',
  linuxData: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
  oemConfig: 'C95DC21A-DF0E-4340-8D7B-26CBFA9A03E0',
  root: '3884DD41-8582-4404-B9A8-E9B84F2DF50E',
} as const;

export type Role = 'esp' | 'bios-boot' | 'usr-a' | 'usr-b' | 'oem' | 'oem-config' | 'root' | 'unknown';

export interface LayoutEntry {
  number: number;
  label: string;
  type: string;
  role: Role;
}

/** The partitions a Container Linux image has, by number (5 and 8 are left empty). */
export const LAYOUT: readonly LayoutEntry[] = [
  { number: 1, label: 'EFI-SYSTEM', type: TYPE.esp, role: 'esp' },
  { number: 2, label: 'BIOS-BOOT', type: TYPE.biosBoot, role: 'bios-boot' },
  { number: 3, label: 'USR-A', type: TYPE.usr, role: 'usr-a' },
  { number: 4, label: 'USR-B', type: TYPE.usr, role: 'usr-b' },
  { number: 6, label: 'OEM', type: TYPE.linuxData, role: 'oem' },
  { number: 7, label: 'OEM-CONFIG', type: TYPE.oemConfig, role: 'oem-config' },
  { number: 9, label: 'ROOT', type: TYPE.root, role: 'root' },
];

/** The role of a partition: by its label and type GUID together, else by number and type. */
export function roleOf(number: number, label: string, typeGuid: string): Role {
  const t = typeGuid.toUpperCase();
  const byLabel = LAYOUT.find((e) => e.label === label && e.type === t);
  if (byLabel) return byLabel.role;
  const byNumber = LAYOUT.find((e) => e.number === number && e.type === t);
  return byNumber ? byNumber.role : 'unknown';
}

/** ChromeOS-style A/B attribute bits (bits 48-51 priority, 52-55 tries, 56 successful). */
export interface UsrAttributes {
  priority: number;
  tries: number;
  successful: boolean;
}

export function decodeUsrAttributes(attrs: bigint): UsrAttributes {
  return {
    priority: Number((attrs >> 48n) & 0xfn),
    tries: Number((attrs >> 52n) & 0xfn),
    successful: ((attrs >> 56n) & 1n) === 1n,
  };
}

/** A partition as inspect reports it (and generation detection reads it). */
export interface PartitionReport {
  number: number;
  label: string;
  role: Role;
  typeGuid: string;
  uniqueGuid: string;
  firstLba: number;
  lastLba: number;
  size: number;
  attributes: string;
  usr?: UsrAttributes;
  filesystem: FsInfo;
}

export function partitionReports(gpt: Gpt, fss: Map<number, FsInfo>): PartitionReport[] {
  return gpt.partitions.map((p: GptPartition) => {
    const role = roleOf(p.number, p.label, p.typeGuid);
    const r: PartitionReport = {
      number: p.number,
      label: p.label,
      role,
      typeGuid: p.typeGuid,
      uniqueGuid: p.uniqueGuid,
      firstLba: p.firstLba,
      lastLba: p.lastLba,
      size: p.size,
      attributes: '0x' + p.attributes.toString(16).padStart(16, '0'),
      filesystem: fss.get(p.number) ?? { type: 'none' },
    };
    if (role === 'usr-a' || role === 'usr-b') r.usr = decodeUsrAttributes(p.attributes);
    return r;
  });
}
