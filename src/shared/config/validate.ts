/**
 * The validator of the provisioning config (see types.ts): parses YAML (or JSON) keeping source
 * positions and reports every problem at once, each with its JSONPath-like path, the 1-based line
 * and column of the offending node (the key for unknown keys, the value for wrong values, the
 * enclosing mapping for missing keys) and a message. The config is returned only when there are no
 * errors; warnings (unknown keys, YAML warnings) do not block it, and unknown keys are dropped from it.
 */
import { isAlias, isMap, isNode, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import { OemError } from '../errors.js';
import { isCleanPath, linkTargetProblem, readBounded, ReadRefused } from '../safe-fs.js';
import { parseAuthorizedKeys } from '../ssh-keys.js';
import { checkUnit, checkUnitSyntax, UNIT_SUFFIXES, unitType, type UnitProblem } from '../units.js';
import {
  BASE_GROUPS,
  type AgentConfig,
  type DirectoryEntry,
  type Disk,
  type FileEntry,
  type Filesystem,
  type FilesystemFormat,
  type Group,
  type LinkEntry,
  type LogicalVolume,
  type NetworkdUnit,
  type Owner,
  type Partition,
  type Problem,
  type Raid,
  type Storage,
  type SystemdUnit,
  type User,
  type VolumeGroup,
} from './types.js';

export interface ValidateOptions {
  /** Groups the base image has, which users may refer to (default BASE_GROUPS). */
  baseGroups?: string[];
  /** More groups the base image has, besides baseGroups (e.g. added by an earlier layer). */
  extraGroups?: string[];
  /** What the document is called in document-level messages (default "the config"). */
  source?: string;
}

export interface ValidationResult {
  /** Present only when there are no errors. */
  config?: AgentConfig;
  problems: Problem[];
}

export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Positions, paths and problems

/** A value in the document: where it is (path, node) and what to point at when it is absent. */
interface Field {
  path: string;
  /** The value node (null/undefined when the key has no value or is missing). */
  node: unknown;
  /** The key node of the pair the value belongs to. */
  key?: unknown;
  /** The enclosing collection, pointed at for missing keys. */
  parent?: unknown;
}

interface Pos {
  line: number;
  col: number;
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

function child(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return IDENT.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
}

/** What an alias that cannot be followed resolves to; already reported, so readers skip it silently. */
const BROKEN = Symbol('broken alias');

/** The longest a chain of aliases may expand to, in resolutions, before we stop following them. */
const ALIAS_BUDGET = 10_000;

class Ctx {
  readonly problems: Problem[] = [];
  private aliases = 0;
  private aliasReported = false;

  constructor(
    readonly doc: Document,
    readonly lc: LineCounter,
    readonly text: string,
  ) {}

  posOf(offset: number): Pos {
    const { line, col } = this.lc.linePos(offset);
    return { line, col };
  }

  private nodePos(node: unknown): Pos | undefined {
    if (!isNode(node) || !node.range) return undefined;
    return this.posOf(node.range[0]);
  }

  /** The value's position; for an empty value (`key:`) or a missing one, the key's or the parent's. */
  pos(f: Field): Pos {
    const empty = isScalar(f.node) && f.node.value === null && (f.node.source ?? '') === '';
    return (!empty && this.nodePos(f.node)) || this.nodePos(f.key) || this.nodePos(f.parent) || { line: 0, col: 0 };
  }

  /** The key's position (for unknown keys). */
  keyPos(f: Field): Pos {
    return this.nodePos(f.key) || this.pos(f);
  }

  add(severity: Problem['severity'], path: string, at: Pos, message: string): void {
    this.problems.push({ severity, path, line: at.line, col: at.col, message });
  }

  error(f: Field, message: string, at?: Pos): void {
    this.add('error', f.path, at ?? this.pos(f), message);
  }

  warn(f: Field, message: string, at?: Pos): void {
    this.add('warning', f.path, at ?? this.pos(f), message);
  }

  /** Follows an alias to its anchored node (bounded, against alias bombs); BROKEN (reported) when it cannot. */
  resolve(f: Field): unknown {
    const node = f.node;
    if (!isAlias(node)) return node;
    if (++this.aliases > ALIAS_BUDGET) {
      if (!this.aliasReported) this.error(f, `too many aliases (more than ${ALIAS_BUDGET} expansions)`);
      this.aliasReported = true;
      return BROKEN;
    }
    const target = node.resolve(this.doc);
    if (target === undefined) {
      this.error(f, `alias *${node.source} refers to no anchor`);
      return BROKEN;
    }
    return target;
  }
}

function describeValue(node: unknown): string {
  if (node === null || node === undefined) return 'nothing';
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  if (isScalar(node)) {
    const v = node.value;
    if (v === null) return 'null';
    if (typeof v === 'string') return 'a string';
    if (typeof v === 'number') return `the number ${node.source ?? String(v)}`;
    if (typeof v === 'boolean') return 'a boolean';
    return typeof v;
  }
  return 'something else';
}

// ---------------------------------------------------------------------------------------------
// Generic readers: each reports wrong types and returns undefined for them.

type Fields = Map<string, Field>;

function mapping(ctx: Ctx, f: Field, known: readonly string[]): Fields | undefined {
  const node = ctx.resolve(f);
  if (node === BROKEN) return undefined;
  if (!isMap(node)) {
    ctx.error(f, `expected a mapping, got ${describeValue(node)}`);
    return undefined;
  }
  const out: Fields = new Map();
  for (const pair of node.items) {
    const keyNode = pair.key;
    const key = isScalar(keyNode) ? keyNode.value : undefined;
    if (typeof key !== 'string' && typeof key !== 'number' && typeof key !== 'boolean') {
      ctx.error({ path: f.path, node: keyNode, parent: node }, 'keys must be plain strings');
      continue;
    }
    const name = String(key);
    const field: Field = { path: child(f.path, name), node: pair.value, key: keyNode, parent: node };
    if (!known.includes(name)) {
      ctx.warn(field, `unknown key ${JSON.stringify(name)}`, ctx.keyPos(field));
      continue;
    }
    // Duplicate keys are YAML errors already; the first one counts.
    if (!out.has(name)) out.set(name, field);
  }
  return out;
}

function present(fields: Fields, key: string): boolean {
  return fields.has(key);
}

function required(ctx: Ctx, fields: Fields, key: string, parent: Field): Field | undefined {
  const f = fields.get(key);
  if (f === undefined) {
    ctx.error({ path: child(parent.path, key), node: undefined, parent: parent.node }, `missing required key "${key}"`);
  }
  return f;
}

/** The node and scalar value of a field; undefined for a broken alias (already reported). */
function scalarValue(ctx: Ctx, f: Field): { node: unknown; value: unknown } | undefined {
  const node = ctx.resolve(f);
  if (node === BROKEN) return undefined;
  return { node, value: isScalar(node) ? node.value : undefined };
}

function str(ctx: Ctx, f: Field | undefined): string | undefined {
  if (f === undefined) return undefined;
  const sv = scalarValue(ctx, f);
  if (sv === undefined) return undefined;
  const { node, value } = sv;
  if (typeof value === 'string') return value;
  ctx.error(f, `expected a string, got ${describeValue(node)}`);
  return undefined;
}

function bool(ctx: Ctx, f: Field | undefined): boolean | undefined {
  if (f === undefined) return undefined;
  const sv = scalarValue(ctx, f);
  if (sv === undefined) return undefined;
  const { node, value } = sv;
  if (typeof value === 'boolean') return value;
  ctx.error(f, `expected a boolean (true or false), got ${describeValue(node)}`);
  return undefined;
}

/** Whether a number scalar was written as an integer (not 1.0 or 1e3). */
function writtenAsInteger(node: unknown): boolean {
  if (!isScalar(node) || typeof node.value !== 'number' || !Number.isSafeInteger(node.value)) return false;
  const src = node.source ?? String(node.value);
  return !(src.includes('.') || /^[-+]?[0-9]+[eE]/.test(src));
}

function int(ctx: Ctx, f: Field | undefined, min: number, max: number, what: string): number | undefined {
  if (f === undefined) return undefined;
  const sv = scalarValue(ctx, f);
  if (sv === undefined) return undefined;
  const { node, value } = sv;
  if (!writtenAsInteger(node) || typeof value !== 'number') {
    ctx.error(f, `expected an integer, got ${describeValue(node)}`);
    return undefined;
  }
  if (value < min || value > max) {
    ctx.error(f, max === Number.MAX_SAFE_INTEGER ? `${what} must not be negative` : `${what} must be between ${min} and ${max}`);
    return undefined;
  }
  return value;
}

function list(ctx: Ctx, f: Field | undefined): Field[] | undefined {
  if (f === undefined) return undefined;
  const node = ctx.resolve(f);
  if (node === BROKEN) return undefined;
  if (!isSeq(node)) {
    ctx.error(f, `expected a list, got ${describeValue(node)}`);
    return undefined;
  }
  return node.items.map((item, i) => ({ path: child(f.path, i), node: item, parent: node }));
}

function strList(ctx: Ctx, f: Field | undefined): { field: Field; value: string }[] | undefined {
  const items = list(ctx, f);
  if (items === undefined) return undefined;
  const out: { field: Field; value: string }[] = [];
  for (const item of items) {
    const value = str(ctx, item);
    if (value !== undefined) out.push({ field: item, value });
  }
  return out;
}

function put<T, K extends keyof T>(obj: Partial<T>, key: K, value: T[K] | undefined): void {
  if (value !== undefined) obj[key] = value;
}

/** Remembers the first occurrence of values and reports later ones. */
class Dupes {
  private readonly seen = new Map<string, { path: string; at: Pos }>();
  constructor(
    private readonly ctx: Ctx,
    private readonly what: string,
  ) {}

  check(value: string, f: Field): void {
    const first = this.seen.get(value);
    if (first === undefined) {
      this.seen.set(value, { path: f.path, at: this.ctx.pos(f) });
      return;
    }
    const where = first.at.line ? ` (line ${first.at.line}, col ${first.at.col})` : '';
    this.ctx.error(f, `duplicate ${this.what} ${JSON.stringify(value)}; first at ${first.path}${where}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Value rules

// eslint-disable-next-line no-control-regex
const BAD_CHARS = /[\x00\n\r]/;

/** Absolute and in the normalized form the agent writes (the shared path rules of safe-fs.ts). */
export function isCleanAbsolutePath(p: string, allowRoot = false): boolean {
  return (allowRoot || p !== '/') && isCleanPath(p);
}

function absPath(ctx: Ctx, f: Field | undefined, allowRoot = false): string | undefined {
  const p = str(ctx, f);
  if (p === undefined || f === undefined) return undefined;
  if (!isCleanAbsolutePath(p, allowRoot)) {
    ctx.error(f, `path must be absolute and clean: ${JSON.stringify(p)}`);
    return undefined;
  }
  return p;
}

function devPath(ctx: Ctx, f: Field | undefined): string | undefined {
  const p = str(ctx, f);
  if (p === undefined || f === undefined) return undefined;
  if (!isCleanAbsolutePath(p) || !p.startsWith('/dev/')) {
    ctx.error(f, `device must be an absolute, clean path under /dev: ${JSON.stringify(p)}`);
    return undefined;
  }
  return p;
}

const MODE_MESSAGE = 'mode must be an octal string like "0644"';

function mode(ctx: Ctx, f: Field | undefined): string | undefined {
  if (f === undefined) return undefined;
  const sv = scalarValue(ctx, f);
  if (sv === undefined) return undefined;
  const { node, value } = sv;
  if (typeof value === 'number') {
    ctx.error(f, `${MODE_MESSAGE}; write it quoted (a number is read differently by YAML 1.1 and 1.2)`);
    return undefined;
  }
  if (typeof value !== 'string') {
    ctx.error(f, `${MODE_MESSAGE}, got ${describeValue(node)}`);
    return undefined;
  }
  if (!/^[0-7]+$/.test(value)) {
    ctx.error(f, `${MODE_MESSAGE}, got ${JSON.stringify(value)}`);
    return undefined;
  }
  if (parseInt(value, 8) > 0o7777) {
    ctx.error(f, `mode ${JSON.stringify(value)} is out of range (0000-07777)`);
    return undefined;
  }
  if (value.length < 3 || value.length > 4) {
    ctx.error(f, `${MODE_MESSAGE} (3 or 4 octal digits), got ${JSON.stringify(value)}`);
    return undefined;
  }
  return value;
}

const NAME = /^[a-z_][a-z0-9_-]*\$?$/;
const MAX_ID = 4294967294;

function owner(ctx: Ctx, f: Field | undefined, what: 'owner' | 'group'): Owner | undefined {
  if (f === undefined) return undefined;
  const sv = scalarValue(ctx, f);
  if (sv === undefined) return undefined;
  const { node, value } = sv;
  if (typeof value === 'number') {
    if (!writtenAsInteger(node) || value < 0 || value > MAX_ID) {
      ctx.error(f, `${what} must be a name or an id between 0 and ${MAX_ID}`);
      return undefined;
    }
    return value;
  }
  if (typeof value !== 'string') {
    ctx.error(f, `${what} must be a name or a numeric id, got ${describeValue(node)}`);
    return undefined;
  }
  if (/^[0-9]+$/.test(value)) {
    // A quoted id: the same as the number.
    if (Number(value) > MAX_ID) {
      ctx.error(f, `${what} must be a name or an id between 0 and ${MAX_ID}`);
      return undefined;
    }
    return value;
  }
  if (!NAME.test(value) || value.length > 32) {
    ctx.error(f, `${what} ${JSON.stringify(value)} is not a valid name (lowercase letters, digits, _ and -, starting with a letter or _, at most 32 characters)`);
    return undefined;
  }
  return value;
}

function accountName(ctx: Ctx, f: Field | undefined, what: 'user' | 'group'): string | undefined {
  const name = str(ctx, f);
  if (name === undefined || f === undefined) return undefined;
  if (!NAME.test(name) || name.length > 32) {
    ctx.error(f, `invalid ${what} name ${JSON.stringify(name)}: use lowercase letters, digits, _ and -, starting with a letter or _ (at most 32 characters)`);
    return undefined;
  }
  return name;
}

const CRYPT = /^!?\$[A-Za-z0-9]+\$[^\s:]+$/;

function passwordHash(ctx: Ctx, f: Field | undefined): string | undefined {
  const h = str(ctx, f);
  if (h === undefined || f === undefined) return undefined;
  if (h === '*' || /^!+$/.test(h) || CRYPT.test(h)) return h;
  ctx.error(f, 'password_hash must be a crypt(3) hash like "$6$salt$hash" (or "*" / "!" to lock the password); never a plain password');
  return undefined;
}

const GUID = /^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$/;

function guid(ctx: Ctx, f: Field | undefined, what: string): string | undefined {
  const g = str(ctx, f);
  if (g === undefined || f === undefined) return undefined;
  if (!GUID.test(g)) {
    ctx.error(f, `${what} must be a GUID like 0FC63DAF-8483-4772-8E79-3D69D8477DE4, got ${JSON.stringify(g)}`);
    return undefined;
  }
  return g;
}

/** Reports the problems a unit checker found in `content`, at their document lines where possible. */
function reportUnitProblems(ctx: Ctx, f: Field, problems: UnitProblem[]): void {
  // The content was read already, so an alias here resolves.
  const node = isAlias(f.node) ? f.node.resolve(ctx.doc) : f.node;
  for (const p of problems) {
    let at: Pos | undefined;
    // A literal block scalar (`|`) starts on the line after its header, line for line.
    if (p.line > 0 && isScalar(node) && node.type === 'BLOCK_LITERAL' && node.range) {
      const line = ctx.posOf(node.range[0]).line + p.line;
      const start = ctx.lc.lineStarts[line - 1];
      if (start !== undefined) {
        const indent = /^[ \t]*/.exec(ctx.text.slice(start, start + 1000))?.[0].length ?? 0;
        at = { line, col: indent + 1 };
      }
    }
    const message = p.line > 0 ? `${p.message} (unit line ${p.line})` : p.message;
    ctx.error(f, message, at);
  }
}

// ---------------------------------------------------------------------------------------------
// Sections

const TOP_KEYS = ['version', 'users', 'groups', 'storage', 'files', 'directories', 'links', 'systemd', 'networkd'] as const;
const USER_KEYS = [
  'name', 'uid', 'password_hash', 'ssh_authorized_keys', 'home_dir', 'groups', 'primary_group', 'system', 'no_user_group',
  'no_create_home', 'no_log_init', 'gecos', 'shell',
] as const;
const GROUP_KEYS = ['name', 'gid', 'system', 'password_hash'] as const;

interface GroupRef {
  field: Field;
  name: string;
}

interface State {
  ctx: Ctx;
  /** Group names users refer to, checked once all users and groups are known. */
  groupRefs: GroupRef[];
  /** Groups the config creates (explicitly or as user groups). */
  createdGroups: Set<string>;
}

function sshKey(ctx: Ctx, f: Field, line: string): string | undefined {
  const label = 'SSH key';
  try {
    const keys = parseAuthorizedKeys(line, label);
    if (keys.length !== 1) {
      ctx.error(f, `one SSH key per entry (this one holds ${keys.length})`);
      return undefined;
    }
    return line.trim();
  } catch (err) {
    if (!(err instanceof OemError)) throw err;
    ctx.error(f, err.message.replace(/^SSH key line 1: /, 'invalid SSH key: '));
    return undefined;
  }
}

function validateUser(st: State, f: Field, names: Dupes): User | undefined {
  const { ctx } = st;
  const m = mapping(ctx, f, USER_KEYS);
  if (!m) return undefined;
  const u: Partial<User> = {};
  const nameField = required(ctx, m, 'name', f);
  const name = accountName(ctx, nameField, 'user');
  if (name !== undefined && nameField) names.check(name, nameField);
  put(u, 'name', name);
  put(u, 'uid', int(ctx, m.get('uid'), 0, MAX_ID, 'uid'));
  put(u, 'password_hash', passwordHash(ctx, m.get('password_hash')));
  const keys = strList(ctx, m.get('ssh_authorized_keys'));
  if (keys) {
    const good = keys.map((k) => sshKey(ctx, k.field, k.value)).filter((k): k is string => k !== undefined);
    if (good.length === keys.length) u.ssh_authorized_keys = good;
  }
  put(u, 'home_dir', absPath(ctx, m.get('home_dir'), true));
  const groups = strList(ctx, m.get('groups'));
  if (groups) {
    u.groups = groups.map((g) => g.value);
    for (const g of groups) st.groupRefs.push({ field: g.field, name: g.value });
  }
  const primaryField = m.get('primary_group');
  const primary = str(ctx, primaryField);
  if (primary !== undefined && primaryField) {
    u.primary_group = primary;
    st.groupRefs.push({ field: primaryField, name: primary });
  }
  for (const key of ['system', 'no_user_group', 'no_create_home', 'no_log_init'] as const) put(u, key, bool(ctx, m.get(key)));
  const gecosField = m.get('gecos');
  const gecos = str(ctx, gecosField);
  if (gecos !== undefined && gecosField) {
    if (/[:\n\r\0]/.test(gecos)) ctx.error(gecosField, 'gecos must not contain ":" or line breaks');
    else u.gecos = gecos;
  }
  put(u, 'shell', absPath(ctx, m.get('shell')));
  // useradd creates a group named like the user unless told not to (no_user_group).
  if (name !== undefined && u.no_user_group !== true) st.createdGroups.add(name);
  return u as User;
}

function validateGroup(st: State, f: Field, names: Dupes): Group | undefined {
  const { ctx } = st;
  const m = mapping(ctx, f, GROUP_KEYS);
  if (!m) return undefined;
  const g: Partial<Group> = {};
  const nameField = required(ctx, m, 'name', f);
  const name = accountName(ctx, nameField, 'group');
  if (name !== undefined && nameField) {
    names.check(name, nameField);
    st.createdGroups.add(name);
  }
  put(g, 'name', name);
  put(g, 'gid', int(ctx, m.get('gid'), 0, MAX_ID, 'gid'));
  put(g, 'system', bool(ctx, m.get('system')));
  put(g, 'password_hash', passwordHash(ctx, m.get('password_hash')));
  return g as Group;
}

// Files, directories, links -------------------------------------------------------------------

const FILE_KEYS = ['path', 'content', 'content_base64', 'source', 'sha512', 'mode', 'owner', 'group', 'overwrite'] as const;
const DIR_KEYS = ['path', 'mode', 'owner', 'group'] as const;
const LINK_KEYS = ['path', 'target', 'hard', 'owner', 'group'] as const;

function entryPath(ctx: Ctx, m: Fields, f: Field, paths: Dupes): string | undefined {
  const pf = required(ctx, m, 'path', f);
  const p = absPath(ctx, pf);
  if (p !== undefined && pf) paths.check(p, pf);
  return p;
}

function validBase64(text: string): string | undefined {
  const compact = text.replace(/\s+/g, '');
  if (compact.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(compact)) return undefined;
  return Buffer.from(compact, 'base64').toString('base64') === compact ? compact : undefined;
}

function validateFile(ctx: Ctx, f: Field, paths: Dupes): FileEntry | undefined {
  const m = mapping(ctx, f, FILE_KEYS);
  if (!m) return undefined;
  const e: Partial<FileEntry> = {};
  put(e, 'path', entryPath(ctx, m, f, paths));
  const sources = (['content', 'content_base64', 'source'] as const).filter((k) => present(m, k));
  if (sources.length !== 1) {
    // Point at the second source key when there are several, at the entry when there is none.
    const at = sources.length > 1 ? m.get(sources[1]!) : undefined;
    ctx.error(
      at ?? f,
      sources.length === 0
        ? 'a file needs exactly one of content, content_base64 or source'
        : `a file needs exactly one of content, content_base64 or source, not ${sources.join(' and ')}`,
      at ? ctx.keyPos(at) : undefined,
    );
  }
  put(e, 'content', str(ctx, m.get('content')));
  const b64Field = m.get('content_base64');
  const b64 = str(ctx, b64Field);
  if (b64 !== undefined && b64Field) {
    const clean = validBase64(b64);
    if (clean === undefined) ctx.error(b64Field, 'content_base64 is not valid base64');
    else e.content_base64 = clean;
  }
  const srcField = m.get('source');
  const source = str(ctx, srcField);
  if (source !== undefined && srcField) {
    let url: URL | undefined;
    try {
      url = new URL(source);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || !url.hostname) {
      ctx.error(srcField, `source must be an http(s) URL, got ${JSON.stringify(source)}`);
    } else {
      e.source = source;
    }
  }
  const shaField = m.get('sha512');
  const sha = str(ctx, shaField);
  if (sha !== undefined && shaField) {
    if (!/^[0-9A-Fa-f]{128}$/.test(sha)) ctx.error(shaField, 'sha512 must be 128 hexadecimal characters');
    else e.sha512 = sha.toLowerCase();
    if (!present(m, 'source')) ctx.error(shaField, 'sha512 is only for files with a source', ctx.keyPos(shaField));
  }
  if (present(m, 'source') && !present(m, 'sha512')) {
    ctx.error({ path: child(f.path, 'sha512'), node: undefined, key: m.get('source')?.key }, 'a file with a source needs sha512 (128 hex characters)');
  }
  put(e, 'mode', mode(ctx, m.get('mode')));
  put(e, 'owner', owner(ctx, m.get('owner'), 'owner'));
  put(e, 'group', owner(ctx, m.get('group'), 'group'));
  put(e, 'overwrite', bool(ctx, m.get('overwrite')));
  return e as FileEntry;
}

function validateDirectory(ctx: Ctx, f: Field, paths: Dupes): DirectoryEntry | undefined {
  const m = mapping(ctx, f, DIR_KEYS);
  if (!m) return undefined;
  const e: Partial<DirectoryEntry> = {};
  put(e, 'path', entryPath(ctx, m, f, paths));
  put(e, 'mode', mode(ctx, m.get('mode')));
  put(e, 'owner', owner(ctx, m.get('owner'), 'owner'));
  put(e, 'group', owner(ctx, m.get('group'), 'group'));
  return e as DirectoryEntry;
}

function validateLink(ctx: Ctx, f: Field, paths: Dupes): LinkEntry | undefined {
  const m = mapping(ctx, f, LINK_KEYS);
  if (!m) return undefined;
  const e: Partial<LinkEntry> = {};
  put(e, 'path', entryPath(ctx, m, f, paths));
  const hard = bool(ctx, m.get('hard'));
  put(e, 'hard', hard);
  const tf = required(ctx, m, 'target', f);
  if (hard === true) {
    put(e, 'target', absPath(ctx, tf));
  } else {
    const target = str(ctx, tf);
    if (target !== undefined && tf) {
      if (linkTargetProblem(target) !== null) ctx.error(tf, `link target ${JSON.stringify(target.slice(0, 60))}: ${linkTargetProblem(target)}`);
      else e.target = target;
    }
  }
  put(e, 'owner', owner(ctx, m.get('owner'), 'owner'));
  put(e, 'group', owner(ctx, m.get('group'), 'group'));
  return e as LinkEntry;
}

// systemd and networkd ------------------------------------------------------------------------

const UNIT_KEYS = ['name', 'enable', 'mask', 'content', 'dropins'] as const;
const DROPIN_KEYS = ['name', 'content'] as const;
const NETWORKD_KEYS = ['name', 'content'] as const;
const UNIT_NAME_MESSAGE = `unit name must end in ${UNIT_SUFFIXES.map((s) => `.${s}`).join(', ')}`;

function validateUnit(ctx: Ctx, f: Field, names: Dupes): SystemdUnit | undefined {
  const m = mapping(ctx, f, UNIT_KEYS);
  if (!m) return undefined;
  const u: Partial<SystemdUnit> = {};
  const nameField = required(ctx, m, 'name', f);
  let name = str(ctx, nameField);
  if (name !== undefined && nameField) {
    if (unitType(name) === null) {
      const suffix = /\.([a-z]+)$/.exec(name)?.[1];
      ctx.error(
        nameField,
        suffix !== undefined && (UNIT_SUFFIXES as readonly string[]).includes(suffix)
          ? `unit name ${JSON.stringify(name)} has characters systemd does not allow (use letters, digits, ":", "_", ".", "\\", "@" and "-")`
          : UNIT_NAME_MESSAGE,
      );
      name = undefined;
    } else {
      names.check(name, nameField);
    }
  }
  put(u, 'name', name);
  const enable = bool(ctx, m.get('enable'));
  const mask = bool(ctx, m.get('mask'));
  put(u, 'enable', enable);
  put(u, 'mask', mask);
  const contentField = m.get('content');
  const content = str(ctx, contentField);
  if (content !== undefined && contentField) {
    reportUnitProblems(ctx, contentField, name !== undefined ? checkUnit(name, content) : checkUnitSyntax(content));
    u.content = content;
  }
  const maskField = m.get('mask');
  if (mask === true && maskField) {
    const clash = [content !== undefined || present(m, 'content') ? 'content' : '', enable === true ? 'enable: true' : ''].filter(Boolean);
    if (clash.length > 0) ctx.error(maskField, `a masked unit cannot have ${clash.join(' or ')}`);
  }
  const dropins = list(ctx, m.get('dropins'));
  if (dropins) {
    const dropinNames = new Dupes(ctx, 'drop-in name');
    const out: { name: string; content: string }[] = [];
    for (const df of dropins) {
      const dm = mapping(ctx, df, DROPIN_KEYS);
      if (!dm) continue;
      const dnField = required(ctx, dm, 'name', df);
      const dn = str(ctx, dnField);
      let okName = false;
      if (dn !== undefined && dnField) {
        if (!/^[A-Za-z0-9:_.@\\-]+\.conf$/.test(dn)) ctx.error(dnField, `drop-in name must be a file name ending in .conf, got ${JSON.stringify(dn)}`);
        else {
          okName = true;
          dropinNames.check(dn, dnField);
        }
      }
      const dcField = required(ctx, dm, 'content', df);
      const dc = str(ctx, dcField);
      if (dc !== undefined && dcField) reportUnitProblems(ctx, dcField, checkUnitSyntax(dc));
      if (okName && dn !== undefined && dc !== undefined) out.push({ name: dn, content: dc });
    }
    u.dropins = out;
  }
  return u as SystemdUnit;
}

function validateNetworkd(ctx: Ctx, f: Field, names: Dupes): NetworkdUnit | undefined {
  const m = mapping(ctx, f, NETWORKD_KEYS);
  if (!m) return undefined;
  const u: Partial<NetworkdUnit> = {};
  const nameField = required(ctx, m, 'name', f);
  const name = str(ctx, nameField);
  if (name !== undefined && nameField) {
    if (!/^[A-Za-z0-9:_.@-]+\.(network|netdev|link)$/.test(name)) {
      ctx.error(nameField, `networkd unit name must be a file name ending in .network, .netdev or .link, got ${JSON.stringify(name)}`);
    } else {
      names.check(name, nameField);
      u.name = name;
    }
  }
  const cf = required(ctx, m, 'content', f);
  const content = str(ctx, cf);
  if (content !== undefined && cf) {
    reportUnitProblems(ctx, cf, checkUnitSyntax(content));
    u.content = content;
  }
  return u as NetworkdUnit;
}

// storage -------------------------------------------------------------------------------------

const STORAGE_KEYS = ['disks', 'raid', 'volume_groups', 'filesystems'] as const;
const DISK_KEYS = ['device', 'wipe_table', 'partitions'] as const;
const PARTITION_KEYS = ['number', 'label', 'start_mib', 'size_mib', 'type_guid', 'guid'] as const;
const RAID_KEYS = ['name', 'level', 'devices', 'spares'] as const;
const VG_KEYS = ['name', 'devices', 'logical_volumes'] as const;
const LV_KEYS = ['name', 'size_mib'] as const;
const FS_KEYS = ['device', 'format', 'label', 'uuid', 'force', 'options', 'mount'] as const;
const MOUNT_KEYS = ['path', 'options'] as const;
const RAID_LEVELS: Record<Raid['level'], number> = { linear: 1, raid0: 1, raid1: 2, raid4: 1, raid5: 3, raid6: 4, raid10: 4 };
const FS_LABEL_MAX: Record<FilesystemFormat, number> = { ext4: 16, btrfs: 255, xfs: 12, vfat: 11, swap: 15 };
const LVM_NAME = /^[A-Za-z0-9+_.-]+$/;

function oneOf<T extends string>(ctx: Ctx, f: Field | undefined, values: readonly T[], what: string): T | undefined {
  const v = str(ctx, f);
  if (v === undefined || f === undefined) return undefined;
  if (!(values as readonly string[]).includes(v)) {
    ctx.error(f, `${what} must be one of ${values.join(', ')}, got ${JSON.stringify(v)}`);
    return undefined;
  }
  return v as T;
}

function devList(ctx: Ctx, f: Field | undefined): string[] | undefined {
  const items = list(ctx, f);
  if (!items) return undefined;
  const out = items.map((i) => devPath(ctx, i));
  return out.every((d) => d !== undefined) ? (out as string[]) : undefined;
}

function validatePartition(ctx: Ctx, f: Field, numbers: Dupes): Partition | undefined {
  const m = mapping(ctx, f, PARTITION_KEYS);
  if (!m) return undefined;
  const p: Partial<Partition> = {};
  const nf = m.get('number');
  const number = int(ctx, nf, 0, 128, 'partition number');
  if (number !== undefined && number > 0 && nf) numbers.check(String(number), nf);
  put(p, 'number', number);
  const lf = m.get('label');
  const label = str(ctx, lf);
  if (label !== undefined && lf) {
    if (label.length > 36) ctx.error(lf, `partition label ${JSON.stringify(label)} is too long for GPT (max 36 characters)`);
    else if (BAD_CHARS.test(label)) ctx.error(lf, 'partition label must not contain NUL or line breaks');
    else p.label = label;
  }
  put(p, 'start_mib', int(ctx, m.get('start_mib'), 0, Number.MAX_SAFE_INTEGER, 'start_mib'));
  put(p, 'size_mib', int(ctx, m.get('size_mib'), 0, Number.MAX_SAFE_INTEGER, 'size_mib'));
  put(p, 'type_guid', guid(ctx, m.get('type_guid'), 'type_guid'));
  put(p, 'guid', guid(ctx, m.get('guid'), 'guid'));
  return p as Partition;
}

function validateDisk(ctx: Ctx, f: Field, devices: Dupes): Disk | undefined {
  const m = mapping(ctx, f, DISK_KEYS);
  if (!m) return undefined;
  const d: Partial<Disk> = {};
  const df = required(ctx, m, 'device', f);
  const device = devPath(ctx, df);
  if (device !== undefined && df) devices.check(device, df);
  put(d, 'device', device);
  put(d, 'wipe_table', bool(ctx, m.get('wipe_table')));
  const parts = list(ctx, m.get('partitions'));
  if (parts) {
    const numbers = new Dupes(ctx, 'partition number');
    d.partitions = parts.map((pf) => validatePartition(ctx, pf, numbers)).filter((p): p is Partition => p !== undefined);
  }
  return d as Disk;
}

function validateRaid(ctx: Ctx, f: Field, names: Dupes): Raid | undefined {
  const m = mapping(ctx, f, RAID_KEYS);
  if (!m) return undefined;
  const r: Partial<Raid> = {};
  const nf = required(ctx, m, 'name', f);
  const name = str(ctx, nf);
  if (name !== undefined && nf) {
    if (!/^[A-Za-z0-9_.-]+$/.test(name) || name === '.' || name === '..') ctx.error(nf, `invalid array name ${JSON.stringify(name)} (letters, digits, _, . and -)`);
    else {
      names.check(name, nf);
      r.name = name;
    }
  }
  const level = oneOf(ctx, required(ctx, m, 'level', f), Object.keys(RAID_LEVELS) as Raid['level'][], 'level');
  put(r, 'level', level);
  const devField = required(ctx, m, 'devices', f);
  const devices = devList(ctx, devField);
  put(r, 'devices', devices);
  const sf = m.get('spares');
  const spares = int(ctx, sf, 0, Number.MAX_SAFE_INTEGER, 'spares');
  put(r, 'spares', spares);
  if (devices && devField) {
    const min = level ? RAID_LEVELS[level] : 1;
    const active = devices.length - (spares ?? 0);
    if (spares !== undefined && spares >= devices.length && sf && devices.length > 0) {
      ctx.error(sf, `spares (${spares}) must be fewer than the devices (${devices.length})`);
    } else if (active < min) {
      const spareNote = spares ? ` (${devices.length} devices, ${spares} of them spares)` : ` (got ${devices.length})`;
      ctx.error(devField, `${level ?? 'an array'} needs at least ${min} active device${min === 1 ? '' : 's'}${spareNote}`);
    }
  }
  return r as Raid;
}

function lvmName(ctx: Ctx, f: Field | undefined, what: string): string | undefined {
  const name = str(ctx, f);
  if (name === undefined || f === undefined) return undefined;
  if (!LVM_NAME.test(name) || name.startsWith('-') || name === '.' || name === '..') {
    ctx.error(f, `invalid ${what} name ${JSON.stringify(name)} (letters, digits, +, _, . and -, not starting with -)`);
    return undefined;
  }
  return name;
}

function validateVolumeGroup(ctx: Ctx, f: Field, names: Dupes): VolumeGroup | undefined {
  const m = mapping(ctx, f, VG_KEYS);
  if (!m) return undefined;
  const vg: Partial<VolumeGroup> = {};
  const nf = required(ctx, m, 'name', f);
  const name = lvmName(ctx, nf, 'volume group');
  if (name !== undefined && nf) names.check(name, nf);
  put(vg, 'name', name);
  const devField = required(ctx, m, 'devices', f);
  const devices = devList(ctx, devField);
  if (devices && devField && devices.length === 0) ctx.error(devField, 'a volume group needs at least 1 device');
  put(vg, 'devices', devices);
  const lvs = list(ctx, m.get('logical_volumes'));
  if (lvs) {
    const lvNames = new Dupes(ctx, 'logical volume name');
    const out: LogicalVolume[] = [];
    for (const lf of lvs) {
      const lm = mapping(ctx, lf, LV_KEYS);
      if (!lm) continue;
      const lv: Partial<LogicalVolume> = {};
      const lnf = required(ctx, lm, 'name', lf);
      const ln = lvmName(ctx, lnf, 'logical volume');
      if (ln !== undefined && lnf) lvNames.check(ln, lnf);
      put(lv, 'name', ln);
      put(lv, 'size_mib', int(ctx, lm.get('size_mib'), 0, Number.MAX_SAFE_INTEGER, 'size_mib'));
      out.push(lv as LogicalVolume);
    }
    vg.logical_volumes = out;
  }
  return vg as VolumeGroup;
}

function validateFilesystem(ctx: Ctx, f: Field, devices: Dupes, mounts: Dupes): Filesystem | undefined {
  const m = mapping(ctx, f, FS_KEYS);
  if (!m) return undefined;
  const fs: Partial<Filesystem> = {};
  const df = required(ctx, m, 'device', f);
  const device = devPath(ctx, df);
  if (device !== undefined && df) devices.check(device, df);
  put(fs, 'device', device);
  const format = oneOf(ctx, required(ctx, m, 'format', f), Object.keys(FS_LABEL_MAX) as FilesystemFormat[], 'format');
  put(fs, 'format', format);
  const lf = m.get('label');
  const label = str(ctx, lf);
  if (label !== undefined && lf) {
    const max = format ? FS_LABEL_MAX[format] : undefined;
    if (max !== undefined && Buffer.byteLength(label, 'utf8') > max) {
      ctx.error(lf, `filesystem label ${JSON.stringify(label)} is too long for ${format} (max ${max} bytes)`);
    } else if (BAD_CHARS.test(label)) {
      ctx.error(lf, 'filesystem label must not contain NUL or line breaks');
    } else {
      fs.label = label;
    }
  }
  const uf = m.get('uuid');
  const uuid = str(ctx, uf);
  if (uuid !== undefined && uf) {
    const ok = format === 'vfat' ? /^[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}$/.test(uuid) : GUID.test(uuid);
    if (!ok) {
      ctx.error(uf, format === 'vfat' ? 'a vfat uuid is a volume id like "ABCD-1234"' : 'uuid must be a UUID like 2f0c7bd8-6e4d-4bd0-a6a8-2e1b4f0f3c11');
    } else {
      fs.uuid = uuid;
    }
  }
  put(fs, 'force', bool(ctx, m.get('force')));
  const opts = strList(ctx, m.get('options'));
  if (opts) fs.options = opts.map((o) => o.value);
  const mf = m.get('mount');
  if (mf) {
    if (format === 'swap') ctx.error(mf, 'swap cannot have a mount (it gets a .swap unit)', ctx.keyPos(mf));
    const mm = mapping(ctx, mf, MOUNT_KEYS);
    if (mm) {
      const mount: Partial<NonNullable<Filesystem['mount']>> = {};
      const pf = required(ctx, mm, 'path', mf);
      const p = absPath(ctx, pf);
      if (p !== undefined && pf) mounts.check(p, pf);
      put(mount, 'path', p);
      const mo = strList(ctx, mm.get('options'));
      if (mo) mount.options = mo.map((o) => o.value);
      fs.mount = mount as NonNullable<Filesystem['mount']>;
    }
  }
  return fs as Filesystem;
}

function validateStorage(ctx: Ctx, f: Field): Storage | undefined {
  const m = mapping(ctx, f, STORAGE_KEYS);
  if (!m) return undefined;
  const s: Storage = {};
  const disks = list(ctx, m.get('disks'));
  if (disks) {
    const devices = new Dupes(ctx, 'disk device');
    s.disks = disks.map((d) => validateDisk(ctx, d, devices)).filter((d): d is Disk => d !== undefined);
  }
  const raid = list(ctx, m.get('raid'));
  if (raid) {
    const names = new Dupes(ctx, 'array name');
    s.raid = raid.map((r) => validateRaid(ctx, r, names)).filter((r): r is Raid => r !== undefined);
  }
  const vgs = list(ctx, m.get('volume_groups'));
  if (vgs) {
    const names = new Dupes(ctx, 'volume group name');
    s.volume_groups = vgs.map((v) => validateVolumeGroup(ctx, v, names)).filter((v): v is VolumeGroup => v !== undefined);
  }
  const fss = list(ctx, m.get('filesystems'));
  if (fss) {
    const devices = new Dupes(ctx, 'filesystem device');
    const mounts = new Dupes(ctx, 'mount path');
    s.filesystems = fss.map((x) => validateFilesystem(ctx, x, devices, mounts)).filter((x): x is Filesystem => x !== undefined);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Entry points

function validateRoot(ctx: Ctx, opts: ValidateOptions): AgentConfig | undefined {
  const root: Field = { path: '$', node: ctx.doc.contents };
  const source = opts.source ?? 'the config';
  if (ctx.doc.contents === null || (isScalar(ctx.doc.contents) && ctx.doc.contents.value === null)) {
    ctx.add('error', '$', { line: 0, col: 0 }, `${source} is empty; expected a mapping starting with "version: 1"`);
    return undefined;
  }
  const node = ctx.resolve(root);
  if (!isMap(node)) {
    ctx.error(root, `${source} must be a mapping (key: value pairs) starting with "version: 1", got ${describeValue(node)}`);
    return undefined;
  }
  const m = mapping(ctx, root, TOP_KEYS);
  if (!m) return undefined;
  const config: Partial<AgentConfig> = {};
  const vf = m.get('version');
  if (!vf) {
    ctx.error({ path: '$.version', node: undefined, parent: node }, 'missing version; version must be 1');
  } else {
    const sv = scalarValue(ctx, vf); // undefined: a broken alias, reported
    if (sv !== undefined) {
      const vn = sv.node;
      if (sv.value === 1 && writtenAsInteger(vn)) config.version = 1;
      else ctx.error(vf, `version must be 1 (got ${isScalar(vn) ? JSON.stringify(vn.source ?? vn.value) : describeValue(vn)})`);
    }
  }

  const st: State = { ctx, groupRefs: [], createdGroups: new Set() };

  const groups = list(ctx, m.get('groups'));
  if (groups) {
    const names = new Dupes(ctx, 'group name');
    config.groups = groups.map((g) => validateGroup(st, g, names)).filter((g): g is Group => g !== undefined);
  }
  const users = list(ctx, m.get('users'));
  if (users) {
    const names = new Dupes(ctx, 'user name');
    config.users = users.map((u) => validateUser(st, u, names)).filter((u): u is User => u !== undefined);
  }
  const base = new Set([...(opts.baseGroups ?? BASE_GROUPS), ...(opts.extraGroups ?? [])]);
  for (const ref of st.groupRefs) {
    if (!st.createdGroups.has(ref.name) && !base.has(ref.name)) {
      ctx.error(ref.field, `group ${JSON.stringify(ref.name)} is neither created by this config nor in the base image`);
    }
  }

  const sf = m.get('storage');
  if (sf) put(config, 'storage', validateStorage(ctx, sf));

  const paths = new Dupes(ctx, 'path');
  const files = list(ctx, m.get('files'));
  if (files) config.files = files.map((x) => validateFile(ctx, x, paths)).filter((x): x is FileEntry => x !== undefined);
  const dirs = list(ctx, m.get('directories'));
  if (dirs) config.directories = dirs.map((x) => validateDirectory(ctx, x, paths)).filter((x): x is DirectoryEntry => x !== undefined);
  const links = list(ctx, m.get('links'));
  if (links) config.links = links.map((x) => validateLink(ctx, x, paths)).filter((x): x is LinkEntry => x !== undefined);

  const sdf = m.get('systemd');
  if (sdf) {
    const sm = mapping(ctx, sdf, ['units']);
    if (sm) {
      config.systemd = {};
      const units = list(ctx, sm.get('units'));
      if (units) {
        const names = new Dupes(ctx, 'systemd unit name');
        config.systemd.units = units.map((u) => validateUnit(ctx, u, names)).filter((u): u is SystemdUnit => u !== undefined);
      }
    }
  }
  const ndf = m.get('networkd');
  if (ndf) {
    const nm = mapping(ctx, ndf, ['units']);
    if (nm) {
      config.networkd = {};
      const units = list(ctx, nm.get('units'));
      if (units) {
        const names = new Dupes(ctx, 'networkd unit name');
        config.networkd.units = units.map((u) => validateNetworkd(ctx, u, names)).filter((u): u is NetworkdUnit => u !== undefined);
      }
    }
  }
  return config as AgentConfig;
}

/**
 * Validates a provisioning config (YAML or JSON text). Returns every problem found, ordered by
 * position, and the config (with unknown keys dropped) when none of them is an error.
 */
export function validateConfig(text: string, opts: ValidateOptions = {}): ValidationResult {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false });
  const ctx = new Ctx(doc, lc, text);
  for (const e of doc.errors) ctx.add('error', '$', ctx.posOf(e.pos[0]), `YAML syntax error: ${e.message}`);
  for (const w of doc.warnings) ctx.add('warning', '$', ctx.posOf(w.pos[0]), `YAML: ${w.message}`);
  const config = validateRoot(ctx, opts);
  const problems = ctx.problems
    .map((p, i) => ({ p, i }))
    .sort((a, b) => a.p.line - b.p.line || a.p.col - b.p.col || a.i - b.i)
    .map(({ p }) => p);
  const failed = problems.some((p) => p.severity === 'error');
  return failed || config === undefined ? { problems } : { config, problems };
}

/**
 * Reads a config file (a regular file of at most 4 MiB) and validates it. A file that cannot be
 * read is reported as one error at `$` (line 0), in the same shape.
 */
export async function readAndValidateConfig(path: string, opts: ValidateOptions = {}): Promise<ValidationResult> {
  const fail = (message: string): ValidationResult => ({ problems: [{ severity: 'error', path: '$', line: 0, col: 0, message }] });
  let buf: Buffer | null;
  try {
    buf = await readBounded(path, MAX_CONFIG_BYTES);
  } catch (err) {
    if (!(err instanceof ReadRefused)) throw err;
    return fail(err.reason === 'tooBig' ? `${err.message}; refusing to read it as a config` : err.message.replace(/^cannot read /, 'cannot read config file '));
  }
  if (buf === null) return fail(`no such config file: ${path}`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    return fail(`${path} is not UTF-8 text`);
  }
  return validateConfig(text, { ...opts, source: opts.source ?? path });
}
