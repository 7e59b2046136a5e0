/**
 * IBM Cloud VPC (ibmcloud, "Generation 2"): the cloud-init config drive (ISO 9660, label cidata)
 * that the agent's unit mounts at env.configDrive, laid out like cloud-init's NoCloud:
 *
 *   meta-data     `key: value` lines: instance-id, local-hostname (others ignored)
 *   vendor-data   a MIME multipart document; its text/cloud-config parts may hold
 *                 `ssh_authorized_keys:` (a YAML list): the SSH keys
 *   user-data     the userdata
 *
 * Attributes, as Afterburn names them: COREOS_IBMCLOUD_INSTANCE_ID, COREOS_IBMCLOUD_LOCAL_HOSTNAME;
 * and COREOS_HOSTNAME. The hostname is local-hostname. A missing drive or file means no metadata
 * from it (logged), not an error; files are read within the drive and size-limited, and every value
 * is checked (see afterburn-common.ts).
 */
import { parseDocument } from 'yaml';
import { describe } from '../../src/shared/errors.js';
import { type Drive, driveUserdata, MAX_DOC_BYTES, openDrive, plainValue, readDriveFile } from './afterburn-common.js';
import { MAX_SMALL_BYTES } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanSshKeys, shown } from './values.js';

type Log = (line: string) => void;

/** The top-level `key: value` lines of meta-data (the value trimmed; one pair of quotes removed). */
export function parseMetaData(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z0-9_.-]+)[ \t]*:(.*)$/.exec(line.replace(/\r$/, ''));
    if (!m) continue;
    let value = m[2]!.trim();
    const q = /^(["'])(.*)\1$/.exec(value);
    if (q) value = q[2]!;
    if (value !== '') out.set(m[1]!, value);
  }
  return out;
}

interface MimePart {
  headers: Map<string, string>;
  body: string;
}

/** Headers (lowercased names, folded lines joined) and body of a MIME entity. */
function splitEntity(text: string): MimePart {
  const lines = text.split('\n').map((l) => l.replace(/\r$/, ''));
  const headers = new Map<string, string>();
  let i = 0;
  let last: string | undefined;
  for (; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === '') {
      i++;
      break;
    }
    if (/^[ \t]/.test(line) && last !== undefined) {
      headers.set(last, `${headers.get(last)} ${line.trim()}`);
      continue;
    }
    const m = /^([A-Za-z0-9-]+):(.*)$/.exec(line);
    // Not a header: there are none, the whole text is the body.
    if (!m) return { headers: new Map(), body: text };
    last = m[1]!.toLowerCase();
    headers.set(last, m[2]!.trim());
  }
  return { headers, body: lines.slice(i).join('\n') };
}

/** The media type (lowercased) and the boundary parameter of a Content-Type value. */
function contentType(value: string | undefined): { type: string; boundary?: string } {
  if (value === undefined) return { type: 'text/plain' };
  const [type = '', ...params] = value.split(';');
  const out: { type: string; boundary?: string } = { type: type.trim().toLowerCase() };
  for (const p of params) {
    const m = /^\s*boundary\s*=\s*(?:"([^"]{1,70})"|([^\s;"]{1,70}))\s*$/i.exec(p);
    if (m) out.boundary = m[1] ?? m[2];
  }
  return out;
}

/**
 * The bodies of the text/cloud-config parts of vendor-data: a MIME document (multipart parts,
 * nested up to 3 levels, 7bit/8bit or base64), or a bare #cloud-config.
 */
export function cloudConfigParts(text: string, log: Log, depth = 0): string[] {
  if ((text.split('\n', 1)[0] ?? '').trimEnd() === '#cloud-config') return [text];
  const { headers, body } = splitEntity(text);
  const ct = contentType(headers.get('content-type'));
  if (ct.type.startsWith('multipart/')) {
    if (ct.boundary === undefined) {
      log(`ibmcloud: vendor-data: a ${ct.type} part without a boundary; skipped`);
      return [];
    }
    if (depth >= 3) {
      log('ibmcloud: vendor-data: multipart parts nested too deep; skipped');
      return [];
    }
    const delimiter = `--${ct.boundary}`;
    const parts: string[][] = [];
    let current: string[] | undefined;
    for (const raw of body.split('\n')) {
      const line = raw.replace(/\r$/, '');
      if (line.trimEnd() === delimiter || line.trimEnd() === `${delimiter}--`) {
        if (current !== undefined) parts.push(current);
        current = line.trimEnd() === delimiter ? [] : undefined;
        if (current === undefined) break;
        continue;
      }
      current?.push(line);
    }
    return parts.flatMap((p) => cloudConfigParts(p.join('\n'), log, depth + 1));
  }
  if (ct.type !== 'text/cloud-config') return [];
  const encoding = (headers.get('content-transfer-encoding') ?? '7bit').toLowerCase();
  if (encoding === 'base64') {
    const compact = body.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact) || compact.length % 4 !== 0) {
      log('ibmcloud: vendor-data: a text/cloud-config part is not valid base64; skipped');
      return [];
    }
    return [Buffer.from(compact, 'base64').toString('utf8')];
  }
  if (!['7bit', '8bit', 'binary'].includes(encoding)) {
    log(`ibmcloud: vendor-data: a text/cloud-config part in the encoding ${shown(encoding)}; skipped`);
    return [];
  }
  return [body];
}

/** The SSH keys of the cloud-config parts of vendor-data (`ssh_authorized_keys`), checked. */
export function vendorDataKeys(text: string, log: Log): string[] {
  const keys: unknown[] = [];
  for (const part of cloudConfigParts(text, log)) {
    let value: unknown;
    try {
      const doc = parseDocument(part, { prettyErrors: false });
      if (doc.errors.length > 0) throw doc.errors[0]!;
      value = doc.toJS({ maxAliasCount: 100 }) as unknown;
    } catch (err) {
      log(`ibmcloud: vendor-data: a text/cloud-config part is not valid YAML (${describe(err)}); skipped`);
      continue;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) continue;
    const list = (value as Record<string, unknown>).ssh_authorized_keys;
    if (list === undefined || list === null) continue;
    if (Array.isArray(list)) keys.push(...(list as unknown[]));
    else if (typeof list === 'string') keys.push(list);
    else log('ibmcloud: vendor-data: ignoring ssh_authorized_keys: not a list');
  }
  return cleanSshKeys(keys, log, 'the IBM Cloud vendor-data');
}

async function readText(env: ProviderEnv, drive: Drive, name: string, limit: number): Promise<string | null> {
  const b = await readDriveFile(env, drive, name, limit);
  return b === null ? null : b.toString('utf8');
}

async function metadata(env: ProviderEnv): Promise<Metadata> {
  const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
  const drive = await openDrive(env, 'ibmcloud');
  if (drive === null) return md;
  const a = md.attributes;
  const text = await readText(env, drive, 'meta-data', MAX_SMALL_BYTES);
  if (text === null) env.log(`ibmcloud: no meta-data on the config drive ${drive.shownAs}`);
  const meta = parseMetaData(text ?? '');
  const id = plainValue(meta.get('instance-id'), 'ibmcloud: instance-id', env.log);
  if (id !== undefined) a.COREOS_IBMCLOUD_INSTANCE_ID = id;
  const local = plainValue(meta.get('local-hostname'), 'ibmcloud: local-hostname', env.log);
  if (local !== undefined) {
    a.COREOS_IBMCLOUD_LOCAL_HOSTNAME = local;
    const hostname = cleanHostname(local, env.log, 'ibmcloud: local-hostname');
    if (hostname !== undefined) md.hostname = a.COREOS_HOSTNAME = hostname;
  }
  const vendor = await readText(env, drive, 'vendor-data', MAX_DOC_BYTES);
  if (vendor !== null) md.sshKeys = vendorDataKeys(vendor, env.log);
  return md;
}

async function userdata(env: ProviderEnv): Promise<Userdata> {
  return driveUserdata(env, 'ibmcloud', 'user-data');
}

export const provider: MetadataProvider = { id: 'ibmcloud', metadata, userdata };
