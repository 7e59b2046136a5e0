/**
 * What the aliyun, oraclecloud, ibmcloud, ibmcloud-classic and powervs modules share: the check for
 * a platform's plain values (ids, zones, shapes: data for KEY=value lines, never code), and reading
 * a config drive the unit mounted at env.configDrive without ever leaving it.
 *
 * The drive directory is found under env.root (links on the way resolve inside the root) and every
 * file on it is read with the drive as the boundary (src/shared/safe-fs.ts: links resolve as in a
 * chroot at the drive, so none leads out of it), at most a given size; a file that cannot be used
 * is logged and taken as absent.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { posix } from 'node:path';
import { OemError } from '../../src/shared/errors.js';
import { lstatEntry, resolveIn } from '../../src/shared/safe-fs.js';
import { MAX_USERDATA_BYTES } from './local-io.js';
import { parseJsonObject, readFileIn } from './openstack-common.js';
import type { ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanSshKeys, shown } from './values.js';

type Log = (line: string) => void;
export type Json = Record<string, unknown>;

export const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Largest metadata document read from a drive (meta_data.json, network_data.json, vendor-data). */
export const MAX_DOC_BYTES = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Values

/**
 * A plain value: what ids, names, zones and shapes are made of (letters, digits and . _ : @ % + , =
 * ~ / -), 1..255 characters. No whitespace, quotes, `$`, backquotes, parentheses, semicolons or
 * control characters: such a value is written bare in an environment file and means nothing to a
 * shell.
 */
const PLAIN = /^[A-Za-z0-9._:@%+,=~/-]{1,255}$/;

/** The value (trimmed of spaces and tabs) when it is plain; undefined (logged when present) otherwise. */
export function plainValue(raw: unknown, what: string, log: Log): string | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw === 'number' && Number.isSafeInteger(raw)) return String(raw);
  if (typeof raw !== 'string') {
    log(`ignoring ${what}: not a string (${shown(raw)})`);
    return undefined;
  }
  const v = raw.replace(/^[ \t]+|[ \t]+$/g, '');
  if (v === '') return undefined;
  if (!PLAIN.test(v)) {
    log(`ignoring ${what} ${shown(raw)}: not a plain value (letters, digits and ._:@%+,=~/- only, at most 255)`);
    return undefined;
  }
  return v;
}

/** Sets attrs[key] to the plain value of `raw`, when it is one. */
export function setPlain(attrs: Record<string, string>, key: string, raw: unknown, what: string, log: Log): string | undefined {
  const v = plainValue(raw, what, log);
  if (v !== undefined) attrs[key] = v;
  return v;
}

/** RFC 1918, RFC 6598 (shared address space) and link-local IPv4 addresses. */
export function isPrivateIPv4(addr: string): boolean {
  if (!isIPv4(addr)) return false;
  const [a = 0, b = 0] = addr.split('.').map(Number);
  return a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127) || (a === 169 && b === 254);
}

/** Unique local (fc00::/7) and link-local (fe80::/10) IPv6 addresses. */
export function isPrivateIPv6(addr: string): boolean {
  return isIPv6(addr) && /^(f[cd][0-9a-f]{2}|fe[89ab][0-9a-f]):/i.test(addr);
}

/** The eight 16-bit groups of an IPv6 address (no embedded IPv4 form); undefined when it is not one. */
function ipv6Groups(addr: string): number[] | undefined {
  if (!isIPv6(addr) || addr.includes('.') || addr.includes('%')) return undefined;
  const part = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const [head = '', tail] = addr.split('::');
  const h = part(head);
  const t = tail === undefined ? [] : part(tail);
  const groups = tail === undefined ? h : [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  return groups.length === 8 ? groups : undefined;
}

/**
 * The prefix length of a netmask written as an address of the family (255.255.255.0 -> 24,
 * ffff:ffff:ffff:ffff:: -> 64) or as a decimal prefix length; undefined when it is not a
 * contiguous mask of the family.
 */
export function maskPrefix(mask: unknown, family: 4 | 6): number | undefined {
  const max = family === 4 ? 32 : 128;
  if (typeof mask === 'number' || (typeof mask === 'string' && /^\d{1,3}$/.test(mask))) {
    const n = Number(mask);
    return Number.isInteger(n) && n >= 0 && n <= max ? n : undefined;
  }
  if (typeof mask !== 'string') return undefined;
  let bits: string;
  if (family === 4) {
    if (!isIPv4(mask)) return undefined;
    bits = mask
      .split('.')
      .map((o) => Number(o).toString(2).padStart(8, '0'))
      .join('');
  } else {
    const groups = ipv6Groups(mask);
    if (groups === undefined) return undefined;
    bits = groups.map((g) => g.toString(2).padStart(16, '0')).join('');
  }
  if (!/^1*0*$/.test(bits)) return undefined;
  const zero = bits.indexOf('0');
  return zero === -1 ? max : zero;
}

// ---------------------------------------------------------------------------------------------
// Config drives

/** A config drive: its host directory, and env.configDrive for messages. */
export interface Drive {
  host: string;
  shownAs: string;
}

/**
 * The config drive directory at env.configDrive (under env.root), or null with a log line when it
 * is not there: a missing drive means no metadata, not an error.
 */
export async function openDrive(env: ProviderEnv, platform: string): Promise<Drive | null> {
  let host: string | null;
  try {
    host = await resolveIn(env.root, env.configDrive);
  } catch (err) {
    if (!(err instanceof OemError)) throw err;
    env.log(`${platform}: config drive ${env.configDrive}: ${err.message}; no metadata`);
    return null;
  }
  if (host === null || (await lstatEntry(host))?.kind !== 'dir') {
    env.log(`${platform}: no config drive at ${env.configDrive}${env.root === '/' ? '' : ` (under ${env.root})`}; no metadata from it`);
    return null;
  }
  return { host, shownAs: env.configDrive };
}

/** A file on the drive, at most `limit` bytes; null when missing, and (logged) when unusable. */
export async function readDriveFile(env: ProviderEnv, drive: Drive, rel: string, limit: number): Promise<Buffer | null> {
  return readFileIn(drive.host, rel, limit, env.log, posix.join(drive.shownAs, rel));
}

/** A JSON object from the drive; null when missing, and (logged) when unusable or not an object. */
export async function readDriveJson(env: ProviderEnv, drive: Drive, rel: string): Promise<Json | null> {
  return parseJsonObject(await readDriveFile(env, drive, rel, MAX_DOC_BYTES), posix.join(drive.shownAs, rel), env.log);
}

/** Userdata from a file on the drive (null: no drive, no file, an empty or unusable one). */
export async function driveUserdata(env: ProviderEnv, platform: string, rel: string): Promise<Userdata> {
  const drive = await openDrive(env, platform);
  if (drive === null) return null;
  const data = await readDriveFile(env, drive, rel, MAX_USERDATA_BYTES);
  return data === null || data.length === 0 ? null : data;
}

// ---------------------------------------------------------------------------------------------
// config-2 drives (ibmcloud-classic, powervs): openstack/latest/meta_data.json

/** Where Afterburn reads config-2 drives on IBM's platforms (only `latest`). */
export const CONFIG2_LATEST = 'openstack/latest';

export interface Config2Info {
  attributes: Record<string, string>;
  hostname?: string;
  sshKeys: string[];
}

/**
 * What IBM's openstack/latest/meta_data.json gives: `uuid` as <prefix>_INSTANCE_ID, `name` (the
 * short host name; `hostname` is the FQDN, which Afterburn does not use) as <prefix>_LOCAL_HOSTNAME,
 * the hostname and COREOS_HOSTNAME, and the keys of `public_keys` ({name: key}; names are labels
 * only, never used).
 */
export function config2Info(meta: Json | null, platform: string, prefix: string, log: Log): Config2Info {
  const info: Config2Info = { attributes: {}, sshKeys: [] };
  if (meta === null) return info;
  const a = info.attributes;
  setPlain(a, `${prefix}_INSTANCE_ID`, meta.uuid, `${platform}: the uuid`, log);
  const name = setPlain(a, `${prefix}_LOCAL_HOSTNAME`, meta.name, `${platform}: the name`, log);
  if (name !== undefined) {
    const hostname = cleanHostname(name, log, `${platform}: the name`);
    if (hostname !== undefined) info.hostname = a.COREOS_HOSTNAME = hostname;
  }
  const keys = meta.public_keys;
  if (isObject(keys)) {
    const found: string[] = [];
    for (const [label, value] of Object.entries(keys)) found.push(...cleanSshKeys([value], log, `${platform} meta_data.json (public key ${shown(label)})`));
    info.sshKeys = cleanSshKeys(found, log, `${platform} meta_data.json`);
  } else if (keys !== undefined && keys !== null) {
    log(`${platform}: ignoring public_keys in meta_data.json: not an object`);
  }
  return info;
}

/** The config drive and its openstack/latest/meta_data.json (null: no drive; meta null: no file, logged). */
export async function config2Drive(env: ProviderEnv, platform: string): Promise<{ drive: Drive; meta: Json | null } | null> {
  const drive = await openDrive(env, platform);
  if (drive === null) return null;
  const rel = `${CONFIG2_LATEST}/meta_data.json`;
  const meta = await readDriveJson(env, drive, rel);
  if (meta === null) env.log(`${platform}: no usable ${rel} on the config drive ${drive.shownAs}`);
  return { drive, meta };
}
