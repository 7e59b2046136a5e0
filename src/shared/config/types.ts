/**
 * The provisioning config (version 1): what the agent applies on first boot. Human-readable YAML
 * (JSON is accepted as YAML's subset). This file is the contract between the validator
 * (src/shared/config/validate.ts), the provisioning engine (oem/provision/) and the builder (`oem validate`,
 * `oem build --config`).
 *
 * Example (test/config.test.ts checks that `oem validate` accepts it):
 *
 *   version: 1
 *   groups:
 *     - name: ops
 *       gid: 1500
 *   users:
 *     - name: ops
 *       uid: 1500
 *       primary_group: ops
 *       groups: [docker, sudo]
 *       ssh_authorized_keys:
 *         - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIENQF7ZfEWz/nirY09uAuYtaLzkukGx70zg/7N+Yf5/f ops@example
 *       password_hash: "$6$..."
 *   storage:
 *     disks:
 *       - device: /dev/sdb
 *         wipe_table: true
 *         partitions:
 *           - { number: 1, label: DATA, size_mib: 0 }
 *     filesystems:
 *       - device: /dev/disk/by-partlabel/DATA
 *         format: ext4
 *         label: DATA
 *         mount: { path: /var/lib/data }
 *   files:
 *     - path: /etc/motd
 *       content: "hello\n"
 *       mode: "0644"
 *   systemd:
 *     units:
 *       - name: hello.service
 *         enable: true
 *         content: |
 *           [Service]
 *           ExecStart=/usr/bin/echo hello
 *           [Install]
 *           WantedBy=multi-user.target
 *   networkd:
 *     units:
 *       - name: 10-eth0.network
 *         content: |
 *           [Match]
 *           Name=eth0
 *           [Network]
 *           DHCP=yes
 */

export interface AgentConfig {
  version: 1;
  users?: User[];
  groups?: Group[];
  storage?: Storage;
  files?: FileEntry[];
  directories?: DirectoryEntry[];
  links?: LinkEntry[];
  systemd?: { units?: SystemdUnit[] };
  networkd?: { units?: NetworkdUnit[] };
}

export interface User {
  name: string;
  uid?: number;
  password_hash?: string;
  ssh_authorized_keys?: string[];
  home_dir?: string;
  groups?: string[];
  primary_group?: string;
  system?: boolean;
  no_user_group?: boolean;
  no_create_home?: boolean;
  no_log_init?: boolean;
  gecos?: string;
  shell?: string;
}

export interface Group {
  name: string;
  gid?: number;
  system?: boolean;
  password_hash?: string;
}

export interface Storage {
  disks?: Disk[];
  raid?: Raid[];
  volume_groups?: VolumeGroup[];
  filesystems?: Filesystem[];
}

export interface Disk {
  /** Absolute device path, e.g. /dev/sdb or /dev/disk/by-id/... */
  device: string;
  /** Create a new, empty GPT first (destroys the old table). */
  wipe_table?: boolean;
  partitions?: Partition[];
}

export interface Partition {
  /** Partition number (1-128); 0 or absent: the next free one. */
  number?: number;
  label?: string;
  /** Start in MiB from the disk start; 0 or absent: the first free aligned space. */
  start_mib?: number;
  /** Size in MiB; 0 or absent: the rest of the free space. */
  size_mib?: number;
  type_guid?: string;
  guid?: string;
}

export interface Raid {
  /** Array name: /dev/md/<name>. */
  name: string;
  level: 'linear' | 'raid0' | 'raid1' | 'raid4' | 'raid5' | 'raid6' | 'raid10';
  devices: string[];
  spares?: number;
}

export interface VolumeGroup {
  name: string;
  devices: string[];
  logical_volumes?: LogicalVolume[];
}

export interface LogicalVolume {
  name: string;
  /** Size in MiB; 0 or absent: all the free space left in the group. */
  size_mib?: number;
}

export type FilesystemFormat = 'ext4' | 'btrfs' | 'xfs' | 'vfat' | 'swap';

export interface Filesystem {
  device: string;
  format: FilesystemFormat;
  label?: string;
  uuid?: string;
  /** Reformat even when the device already holds a filesystem (default: keep an existing one of this format, refuse another). */
  force?: boolean;
  /** Extra mkfs options. */
  options?: string[];
  /** Where to mount it (a systemd .mount unit is written and enabled); not for swap, which gets a .swap unit. */
  mount?: { path: string; options?: string[] };
}

/** An owner: a user or group name, or a numeric id. */
export type Owner = string | number;

export interface FileEntry {
  path: string;
  /** Exactly one of content, content_base64, source. */
  content?: string;
  content_base64?: string;
  /** http(s) URL; requires sha512. */
  source?: string;
  sha512?: string;
  /** Octal string, e.g. "0644" (default "0644"). */
  mode?: string;
  owner?: Owner;
  group?: Owner;
  /** Replace an existing file (default true). */
  overwrite?: boolean;
}

export interface DirectoryEntry {
  path: string;
  /** Octal string (default "0755"). */
  mode?: string;
  owner?: Owner;
  group?: Owner;
}

export interface LinkEntry {
  path: string;
  target: string;
  hard?: boolean;
  owner?: Owner;
  group?: Owner;
}

export interface SystemdUnit {
  name: string;
  enable?: boolean;
  mask?: boolean;
  content?: string;
  dropins?: { name: string; content: string }[];
}

export interface NetworkdUnit {
  name: string;
  content: string;
}

/** One finding of the validator, with where it is in the document. */
export interface Problem {
  severity: 'error' | 'warning';
  /** JSONPath-like: $.systemd.units[2].name */
  path: string;
  /** 1-based; 0 when unknown. */
  line: number;
  col: number;
  message: string;
}

/** `error at $.systemd.units[2].name (line 14, col 9): unit name must end in ...` */
export function formatProblem(p: Problem): string {
  return `${p.severity} at ${p.path}${p.line ? ` (line ${p.line}, col ${p.col})` : ''}: ${p.message}`;
}

/** Groups a Container Linux base image has (/usr/share/baselayout/group); users may refer to them. */
export const BASE_GROUPS = [
  'root', 'bin', 'daemon', 'sys', 'adm', 'tty', 'disk', 'lp', 'mem', 'kmem', 'wheel', 'floppy', 'mail', 'news', 'uucp', 'man',
  'audio', 'cdrom', 'dialout', 'video', 'sudo', 'users', 'portage', 'utmp', 'tape', 'kvm', 'input', 'render', 'sgx', 'docker',
  'rkt', 'rkt-admin', 'sshd', 'systemd-journal', 'systemd-network', 'systemd-resolve', 'systemd-timesync', 'systemd-coredump',
  'core', 'fleet', 'etcd', 'polkitd', 'tss', 'nogroup', 'nobody', 'lock', 'ntp', 'messagebus', 'dnsmasq', 'tcpdump', 'uuidd',
  'locksmith', 'dhcp', 'admin',
];
