/**
 * Checks for everything a metadata service hands the agent before any of it reaches a file: a
 * platform's metadata is data, never a path, a unit line or a shell word. Providers use these
 * while they build Metadata, and the actions (actions.ts) check again before they write.
 *
 * Nothing here throws for a bad value from a platform: the value is dropped with a log line, so one
 * bad value never fails the whole run.
 */
import { isIP } from 'node:net';
import { describe } from '../../src/shared/errors.js';
import { parseAuthorizedKeys } from '../../src/shared/ssh-keys.js';

type Log = (line: string) => void;

/** A value for messages: quoted, escaped, cut at 80 characters. */
export function shown(value: unknown): string {
  const s = JSON.stringify(typeof value === 'string' ? value : String(value)) ?? '""';
  return s.length > 82 ? `${s.slice(0, 80)}…"` : s;
}

// ---------------------------------------------------------------------------------------------
// Hostnames

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** Why `name` is not a valid hostname, or undefined when it is (after lowercasing; one final dot allowed). */
export function hostnameProblem(name: string): string | undefined {
  if (typeof name !== 'string') return 'not a string';
  // Control characters (newline, NUL, ...), spaces and slashes first: the clearest message.
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(name)) return 'contains control characters (newline, NUL, ...)';
  if (/\s/.test(name)) return 'contains whitespace';
  if (name.includes('/')) return 'contains a slash';
  const n = name.toLowerCase().replace(/\.$/, '');
  if (n === '') return 'is empty';
  if (n.length > 253) return 'is longer than 253 characters';
  for (const label of n.split('.')) {
    if (label === '') return 'has an empty label';
    if (label.length > 63) return `has a label longer than 63 characters`;
    if (!LABEL.test(label)) return `has the label ${shown(label)}, which is not letters, digits and inner hyphens (RFC 1123)`;
  }
  return undefined;
}

/** The hostname lowercased (one final dot removed), or undefined with a log line when it is not valid. */
export function cleanHostname(name: string | null | undefined, log: Log, source = 'the hostname'): string | undefined {
  if (name === null || name === undefined) return undefined;
  const why = hostnameProblem(name);
  if (why !== undefined) {
    log(`ignoring ${source} ${shown(name)}: it ${why}`);
    return undefined;
  }
  return name.toLowerCase().replace(/\.$/, '');
}

/** The kernel's limit for the hostname (HOST_NAME_MAX). */
export const HOST_NAME_MAX = 64;

/** What goes into /etc/hostname: the name, or its first label when the name is longer than 64 characters. */
export function staticHostname(name: string): string {
  if (name.length <= HOST_NAME_MAX) return name;
  return name.split('.')[0] ?? name.slice(0, 63);
}

// ---------------------------------------------------------------------------------------------
// Environment files (/run/coreos/metadata)

const ENV_KEY = /^[A-Z0-9_]+$/;
/** Written as they are; anything else is single-quoted. */
const BARE_VALUE = /^[A-Za-z0-9._:/@%+,=~-]*$/;

/** Why the key is not valid in an environment file, or undefined. */
export function envKeyProblem(key: string): string | undefined {
  if (!ENV_KEY.test(key)) return 'is not upper-case letters, digits and underscores';
  if (/^[0-9]/.test(key)) return 'starts with a digit';
  return undefined;
}

/** Why the value cannot be written to an environment file, or undefined. */
export function envValueProblem(value: string): string | undefined {
  if (typeof value !== 'string') return 'is not a string';
  if (value.includes('\n') || value.includes('\r')) return 'contains a newline';
  if (value.includes('\0')) return 'contains a NUL byte';
  // eslint-disable-next-line no-control-regex
  if (/[\x01-\x1f\x7f]/.test(value)) return 'contains control characters';
  if (!BARE_VALUE.test(value) && value.includes("'")) return 'contains a single quote along with other special characters';
  return undefined;
}

/** Whether a key names an address of one family (a word IPV4 or IPV6 in it), and which. */
export function ipFamilyOfKey(key: string): 4 | 6 | undefined {
  const words = key.split('_');
  if (words.includes('IPV4')) return 4;
  if (words.includes('IPV6')) return 6;
  return undefined;
}

/**
 * The environment file for `attributes`: `KEY=VALUE` lines sorted by key. Values of only
 * [A-Za-z0-9._:/@%+,=~-] are written bare, others in single quotes (literal for systemd and for a
 * shell). Bad keys, bad values (newline, NUL, control characters), and keys with an IPV4/IPV6 word
 * whose value is not such an address are dropped, each with a log line.
 */
export function envFileContent(attributes: Record<string, string>, log: Log): { content: string; written: string[]; dropped: string[] } {
  const written: string[] = [];
  const dropped: string[] = [];
  const lines: string[] = [];
  for (const key of Object.keys(attributes).sort()) {
    const value = attributes[key];
    const why =
      envKeyProblem(key) !== undefined
        ? `the name ${envKeyProblem(key)}`
        : typeof value !== 'string'
          ? 'the value is not a string'
          : envValueProblem(value) !== undefined
            ? `the value ${envValueProblem(value)}`
            : ipFamilyOfKey(key) !== undefined && isIP(value) !== ipFamilyOfKey(key)
              ? `the value is not an IPv${ipFamilyOfKey(key)} address`
              : undefined;
    if (why !== undefined || typeof value !== 'string') {
      log(`rejected the attribute ${shown(key)}: ${why ?? 'invalid'} (${shown(value)})`);
      dropped.push(key);
      continue;
    }
    lines.push(`${key}=${BARE_VALUE.test(value) ? value : `'${value}'`}`);
    written.push(key);
  }
  return { content: lines.length ? lines.join('\n') + '\n' : '', written, dropped };
}

// ---------------------------------------------------------------------------------------------
// SSH keys

/**
 * The valid keys among `keys` (each may hold several lines), normalized, each once, in order.
 * A line that is not a public key is dropped with a log line naming `source`; blank lines and
 * `#` comments are skipped silently.
 */
export function cleanSshKeys(keys: readonly unknown[], log: Log, source = 'the metadata'): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  let n = 0;
  for (const entry of keys) {
    if (typeof entry !== 'string') {
      log(`ignoring an SSH key from ${source}: not a string (${shown(entry)})`);
      continue;
    }
    for (const line of entry.split('\n')) {
      const text = line.replace(/\r$/, '').trim();
      if (text === '' || text.startsWith('#')) continue;
      n++;
      try {
        for (const key of parseAuthorizedKeys(text, `SSH key ${n} from ${source}`)) {
          const id = `${key.type} ${key.blob}`;
          if (seen.has(id)) continue;
          seen.add(id);
          out.push(key.line);
        }
      } catch (err) {
        log(`ignoring an invalid SSH key: ${describe(err)} (${shown(text)})`);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Addresses

/** The address when it is an IP address (of `family`, when given); else undefined with a log line. */
export function cleanIp(value: unknown, log: Log, what: string, family?: 4 | 6): string | undefined {
  if (value === null || value === undefined || value === '') return undefined;
  if (typeof value !== 'string') {
    log(`ignoring ${what}: not a string (${shown(value)})`);
    return undefined;
  }
  const f = isIP(value);
  if (f === 0 || (family !== undefined && f !== family)) {
    log(`ignoring ${what} ${shown(value)}: not an IPv${family ?? '4 or IPv6'} address`);
    return undefined;
  }
  return value;
}

/** The prefix length of a dotted IPv4 netmask (255.255.255.0 -> 24); undefined when not a contiguous mask. */
export function netmaskToPrefix(mask: string): number | undefined {
  if (isIP(mask) !== 4) return undefined;
  const bits = mask
    .split('.')
    .map((o) => Number(o).toString(2).padStart(8, '0'))
    .join('');
  if (!/^1*0*$/.test(bits)) return undefined;
  return bits.indexOf('0') === -1 ? 32 : bits.indexOf('0');
}

/** A prefix length for the family (0..32 or 0..128), from a number or a decimal string; else undefined. */
export function cleanPrefix(value: unknown, family: 4 | 6): number | undefined {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\d{1,3}$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > (family === 4 ? 32 : 128)) return undefined;
  return n;
}

const MAC = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/;

/** A MAC address, lowercased, or undefined with a log line. */
export function cleanMac(value: unknown, log: Log, what: string): string | undefined {
  if (typeof value !== 'string' || !MAC.test(value.toLowerCase())) {
    if (value !== undefined && value !== null) log(`ignoring ${what} ${shown(value)}: not a MAC address`);
    return undefined;
  }
  return value.toLowerCase();
}

// ---------------------------------------------------------------------------------------------
// networkd unit names: always made here, never taken from metadata.

export type NetworkUnitKind = 'network' | 'netdev' | 'link';

/** A safe label: letters, digits, `_` and `-` only (anything else becomes `_`), at most 32 characters. */
export function unitLabel(label: string): string {
  const s = String(label)
    .replace(/[^A-Za-z0-9_-]/g, '_')
    .slice(0, 32);
  return s === '' ? 'if' : s;
}

/** `10-oem-<n>-<label>.<kind>`; `label` is reduced to a safe word (see unitLabel). */
export function networkUnitName(n: number, label: string, kind: NetworkUnitKind = 'network'): string {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`internal: bad unit index ${n}`);
  return `10-oem-${n}-${unitLabel(label)}.${kind}`;
}

/** Whether a networkd unit name is one the agent writes: a plain file name ending in .network, .netdev or .link. */
export function validNetworkUnitName(name: string): boolean {
  return typeof name === 'string' && /^[A-Za-z0-9][A-Za-z0-9_@.-]{0,200}\.(?:network|netdev|link)$/.test(name) && !name.includes('..');
}
