/** The Container Linux disk layout: partition roles, type GUIDs and labels. */

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
