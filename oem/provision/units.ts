/**
 * systemd and networkd units. Units go to /etc/systemd/system/NAME, drop-ins to
 * /etc/systemd/system/NAME.d/, networkd units to /etc/systemd/network/NAME (all 0644 root:root).
 *
 * `enable` does what `systemctl enable` does offline: the [Install] section of the unit file (the
 * content given, or the unit file found in /etc/systemd/system, /usr/lib/systemd/system or
 * /lib/systemd/system) gives WantedBy= (a `<target>.wants/` link), RequiredBy= (`.requires/`),
 * Alias= (a link named after the alias) and Also= (units enabled with it). Template units are
 * enabled with their instance, or DefaultInstance=. Drop-ins are not read for [Install].
 * `mask` links NAME to /dev/null.
 */
import { posix } from 'node:path';
import { OemError } from '../../src/shared/errors.js';
import type { NetworkdUnit, SystemdUnit } from '../../src/shared/config/types.js';
import { ROOT_ID, type ProvisionContext } from './context.js';
import { ensureFile, ensureSymlink } from './files.js';

export const SYSTEM_DIR = '/etc/systemd/system';
export const NETWORK_DIR = '/etc/systemd/network';
export const UNIT_SEARCH_PATH = ['/etc/systemd/system', '/usr/lib/systemd/system', '/lib/systemd/system'];

const ROOT_FILE = { mode: 0o644, uid: ROOT_ID, gid: ROOT_ID };

/** A file name usable in a unit directory: no slashes, not `.`/`..`, printable. */
function checkFileName(name: string, what: string): void {
  // eslint-disable-next-line no-control-regex
  if (typeof name !== 'string' || name === '' || name === '.' || name === '..' || name.includes('/') || /[\x00-\x1f\x7f]/.test(name) || name.length > 255) {
    throw new OemError(`invalid ${what} name ${JSON.stringify(name)}`, { code: 'usage' });
  }
}

export interface InstallSection {
  wantedBy: string[];
  requiredBy: string[];
  alias: string[];
  also: string[];
  defaultInstance?: string;
}

/**
 * The [Install] section of a unit file: continuation lines are joined, comments skipped, lists
 * split on whitespace, and an empty assignment resets a list (as systemd does).
 */
export function parseInstall(text: string): InstallSection {
  const out: InstallSection = { wantedBy: [], requiredBy: [], alias: [], also: [] };
  const logical: string[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (pending === '' && /^\s*[#;]/.test(line)) continue;
    if (line.endsWith('\\')) {
      pending += line.slice(0, -1) + ' ';
      continue;
    }
    logical.push(pending + line);
    pending = '';
  }
  if (pending !== '') logical.push(pending);
  let section = '';
  for (const l of logical) {
    const line = l.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const sec = /^\[(.+)\]$/.exec(line);
    if (sec) {
      section = sec[1]!;
      continue;
    }
    if (section !== 'Install') continue;
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    const words = value.split(/\s+/).filter(Boolean);
    const list = key === 'WantedBy' ? out.wantedBy : key === 'RequiredBy' ? out.requiredBy : key === 'Alias' ? out.alias : key === 'Also' ? out.also : undefined;
    if (list) {
      if (words.length === 0) list.length = 0;
      else list.push(...words);
    } else if (key === 'DefaultInstance') {
      if (value === '') delete out.defaultInstance;
      else out.defaultInstance = value;
    }
  }
  return out;
}

/** foo@bar.service -> { prefix: 'foo', instance: 'bar', suffix: 'service' } */
function splitUnitName(name: string): { prefix: string; instance?: string; suffix: string } {
  const dot = name.lastIndexOf('.');
  const base = dot > 0 ? name.slice(0, dot) : name;
  const suffix = dot > 0 ? name.slice(dot + 1) : '';
  const at = base.indexOf('@');
  if (at < 0) return { prefix: base, suffix };
  return { prefix: base.slice(0, at), instance: base.slice(at + 1), suffix };
}

interface FoundUnit {
  /** The unit file's path in the tree (what the links point to). */
  path: string;
  text: string;
}

/** Finds a unit file by name in the search path; for an instance, falls back to its template. */
async function findUnit(ctx: ProvisionContext, name: string): Promise<FoundUnit | null> {
  const { prefix, instance, suffix } = splitUnitName(name);
  const names = instance !== undefined && instance !== '' ? [name, `${prefix}@.${suffix}`] : [name];
  for (const n of names) {
    for (const dir of UNIT_SEARCH_PATH) {
      const b = await ctx.fs.readFileFollow(`${dir}/${n}`);
      if (b !== null) return { path: `${dir}/${n}`, text: b.toString('utf8') };
    }
  }
  return null;
}

async function enableUnit(ctx: ProvisionContext, name: string, given: FoundUnit | null, seen: Set<string>): Promise<void> {
  if (seen.has(name)) return;
  seen.add(name);
  checkFileName(name, 'unit');
  const unit = given ?? (await findUnit(ctx, name));
  if (unit === null) {
    const where = UNIT_SEARCH_PATH.join(', ');
    if (ctx.dryRun) {
      ctx.note(`cannot enable ${name} yet: no unit file in ${where} (a dry run writes nothing)`);
      return;
    }
    throw new OemError(`cannot enable ${name}: no unit file for it in ${where} under ${ctx.root}`, {
      hint: 'Give the unit content in the config, or enable a unit the image has.',
    });
  }
  const install = parseInstall(unit.text);
  const { prefix, instance, suffix } = splitUnitName(name);
  let linkName = name;
  if (instance === '') {
    if (install.defaultInstance === undefined) {
      if (install.wantedBy.length || install.requiredBy.length) {
        throw new OemError(`cannot enable the template unit ${name} without an instance: give a name such as ${prefix}@INSTANCE.${suffix}, or DefaultInstance= in [Install]`, { code: 'usage' });
      }
    } else {
      linkName = `${prefix}@${install.defaultInstance}.${suffix}`;
    }
  }
  const links: { path: string; target: string }[] = [];
  for (const t of install.wantedBy) links.push({ path: `${SYSTEM_DIR}/${t}.wants/${linkName}`, target: unit.path });
  for (const t of install.requiredBy) links.push({ path: `${SYSTEM_DIR}/${t}.requires/${linkName}`, target: unit.path });
  for (const a of install.alias) {
    // An alias is itself a unit name (the link) pointing to the unit file.
    if (a !== posix.basename(unit.path)) links.push({ path: `${SYSTEM_DIR}/${a}`, target: unit.path });
  }
  for (const l of links) {
    checkFileName(posix.basename(l.path), 'unit link');
    checkFileName(posix.basename(posix.dirname(l.path)), 'unit link directory');
  }
  if (!links.length && !install.also.length) {
    ctx.note(`${name} has no WantedBy=, RequiredBy=, Alias= or Also= in [Install]: nothing to enable`);
  }
  for (const l of links) await ensureSymlink(ctx, l.path, l.target, { uid: ROOT_ID, gid: ROOT_ID });
  for (const also of install.also) await enableUnit(ctx, also, null, seen);
}

export async function applySystemdUnits(ctx: ProvisionContext, units: SystemdUnit[]): Promise<void> {
  for (const u of units) {
    checkFileName(u.name, 'unit');
    const path = `${SYSTEM_DIR}/${u.name}`;
    if (u.mask) {
      if (u.content !== undefined) ctx.note(`${u.name} is masked: its content is not written`);
      await ensureSymlink(ctx, path, '/dev/null', { uid: ROOT_ID, gid: ROOT_ID, replaceFile: true });
    } else if (u.content !== undefined) {
      await ensureFile(ctx, path, { data: Buffer.from(u.content, 'utf8') }, ROOT_FILE);
    }
    for (const d of u.dropins ?? []) {
      checkFileName(d.name, 'drop-in');
      const file = d.name.endsWith('.conf') ? d.name : `${d.name}.conf`;
      await ensureFile(ctx, `${SYSTEM_DIR}/${u.name}.d/${file}`, { data: Buffer.from(d.content, 'utf8') }, ROOT_FILE);
    }
    if (u.enable) {
      if (u.mask) ctx.note(`${u.name} is masked: not enabled`);
      else await enableUnit(ctx, u.name, u.content !== undefined ? { path, text: u.content } : null, new Set());
    }
  }
}

export async function applyNetworkdUnits(ctx: ProvisionContext, units: NetworkdUnit[]): Promise<void> {
  for (const u of units) {
    checkFileName(u.name, 'networkd unit');
    if (typeof u.content !== 'string') throw new OemError(`networkd unit ${u.name}: content is required`, { code: 'usage' });
    await ensureFile(ctx, `${NETWORK_DIR}/${u.name}`, { data: Buffer.from(u.content, 'utf8') }, ROOT_FILE);
  }
}
