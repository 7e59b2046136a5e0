/**
 * The provider registry: every directory `templates/<id>/` with a `provider.yml` is a provider, and
 * `templates/_common/` holds what they share. A user's `--templates DIR` of the same layout overlays
 * the built-in tree (a provider there may be new, or override built-in files and data).
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { OemError, describe } from '../shared/errors.js';
import { agentPlatform } from '../shared/platforms.js';
import { packageRoot } from '../paths.js';
import { FORMATS, type Format } from '../artifacts/formats.js';

export const AGENT_UNITS = ['provision', 'metadata', 'ssh-keys', 'userdata', 'hostname', 'network', 'check-in'] as const;
export type AgentUnit = (typeof AGENT_UNITS)[number];

export interface Provider {
  id: string;
  name: string;
  oemId: string;
  aliases: string[];
  homeUrl: string;
  bugReportUrl: string;
  grub: { linux_append?: string; linux_console?: string };
  agentUnits: AgentUnit[];
  /** Artifact formats built by default. */
  formats: Format[];
  /**
   * Flatcar 3760 and later: the platform id whose OEM extension (`oem-<id>.raw`) Flatcar publishes
   * for this provider (e.g. `ami` for ec2); undefined: the provider's content goes into its own
   * extension.
   */
  flatcarPlatform?: string;
  /** The `oem_id` grub.cfg gets on an image with the provider's own extension: a platform Ignition knows (default: oem_id). */
  ignitionPlatform: string;
  /** The image generations the provider is for (default all): platforms that came with Flatcar's extensions have only flatcar-sysext. */
  generations: ProviderGeneration[];
  /** The CPU architectures (systemd's names: x86-64, arm64, ppc64-le) the platform runs; undefined: any. */
  architectures?: string[];
  /**
   * The size in bytes of the platform's disk (Flatcar grows the image for some platforms, e.g.
   * Exoscale's 10 GiB): the virtual disk formats get it; the raw image keeps the release's size.
   * Undefined: the release's size.
   */
  diskSize?: number;
  /** Flatcar's disk layout for the platform (`disk_layout`: vm, azure, vagrant): the ROOT partition's size in sectors for the virtual disk formats. */
  rootSectors?: number;
  /** Template directories, lowest priority first: built-in _common, built-in provider, user's _common, user's provider. */
  dirs: string[];
}

export function builtinTemplates(): string {
  return join(packageRoot(), 'templates');
}

const ID_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;

async function isDir(p: string): Promise<boolean> {
  return (await stat(p).catch(() => null))?.isDirectory() ?? false;
}

function str(v: unknown, key: string, file: string, optional = false): string {
  if (v === undefined || v === null) {
    if (optional) return '';
    throw new OemError(`${file}: ${key} is missing`, { code: 'usage' });
  }
  if (typeof v !== 'string' && typeof v !== 'number') throw new OemError(`${file}: ${key} must be a string`, { code: 'usage' });
  const s = String(v);
  if (/["\n\r\\$`]/.test(s) && key.startsWith('grub.')) throw new OemError(`${file}: ${key} must not contain quotes, newlines, backslashes, $ or backticks`, { code: 'usage' });
  return s;
}

const KNOWN_KEYS = new Set(['id', 'name', 'oem_id', 'aliases', 'home_url', 'bug_report_url', 'grub', 'agent_units', 'formats', 'flatcar_platform', 'ignition_platform', 'generations', 'architectures', 'disk_size', 'disk_layout']);

const ARCHITECTURES = ['x86-64', 'arm64', 'ppc64-le'];
const SIZE_UNITS: Record<string, number> = { '': 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 };

/** A disk size: a number of bytes, or `<n>KiB|MiB|GiB|TiB`; a whole number of MiB (VHD and Azure need it). */
export function parseDiskSize(v: unknown, where: string): number {
  const m = /^(\d{1,15})\s*(KiB|MiB|GiB|TiB|)$/.exec(String(v ?? '').trim());
  const bytes = m ? Number(m[1]) * SIZE_UNITS[m[2]!]! : NaN;
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % (1024 * 1024) !== 0) {
    throw new OemError(`${where}: the disk size ${JSON.stringify(v)} is not a whole number of MiB (e.g. 10GiB, 8704MiB)`, { code: 'usage' });
  }
  return bytes;
}

export const PROVIDER_GENERATIONS = ['coreos', 'flatcar', 'flatcar-sysext'] as const;
export type ProviderGeneration = (typeof PROVIDER_GENERATIONS)[number];

function parseProvider(text: string, file: string, dirs: string[], layouts: Record<string, number>): Provider {
  let d: Record<string, unknown>;
  try {
    d = parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new OemError(`${file} is not valid YAML: ${describe(err)}`, { code: 'usage' });
  }
  if (!d || typeof d !== 'object') throw new OemError(`${file} is not a mapping`, { code: 'usage' });
  for (const k of Object.keys(d)) if (!KNOWN_KEYS.has(k)) throw new OemError(`${file}: unknown key ${k}`, { code: 'usage' });
  const id = str(d.id, 'id', file);
  if (!ID_RE.test(id)) throw new OemError(`${file}: id ${JSON.stringify(id)} must be lowercase letters, digits and dashes`, { code: 'usage' });
  const oemId = str(d.oem_id, 'oem_id', file);
  if (!ID_RE.test(oemId)) throw new OemError(`${file}: oem_id ${JSON.stringify(oemId)} must be lowercase letters, digits and dashes`, { code: 'usage' });
  const flatcarPlatform = d.flatcar_platform === undefined ? undefined : str(d.flatcar_platform, 'flatcar_platform', file);
  if (flatcarPlatform !== undefined && !ID_RE.test(flatcarPlatform)) throw new OemError(`${file}: flatcar_platform ${JSON.stringify(flatcarPlatform)} must be lowercase letters, digits and dashes`, { code: 'usage' });
  const ignitionPlatform = d.ignition_platform === undefined ? oemId : str(d.ignition_platform, 'ignition_platform', file);
  if (!ID_RE.test(ignitionPlatform)) throw new OemError(`${file}: ignition_platform ${JSON.stringify(ignitionPlatform)} must be lowercase letters, digits and dashes`, { code: 'usage' });
  const grubIn = (d.grub ?? {}) as Record<string, unknown>;
  const grub: Provider['grub'] = {};
  for (const k of Object.keys(grubIn)) {
    if (k !== 'linux_append' && k !== 'linux_console') throw new OemError(`${file}: grub.${k} is not a GRUB setting oem writes (linux_append, linux_console)`, { code: 'usage' });
    grub[k] = str(grubIn[k], `grub.${k}`, file);
  }
  const units = ((d.agent_units ?? []) as unknown[]).map((u) => {
    if (!AGENT_UNITS.includes(u as AgentUnit)) throw new OemError(`${file}: unknown agent unit ${JSON.stringify(u)} (known: ${AGENT_UNITS.join(', ')})`, { code: 'usage' });
    return u as AgentUnit;
  });
  const agent = agentPlatform(oemId);
  if (agent !== undefined) {
    const idle = units.filter((u) => u !== 'provision' && !agent.does.includes(u === 'metadata' ? 'attributes' : u));
    if (idle.length) {
      throw new OemError(`${file}: the agent does not do ${idle.join(', ')} on ${oemId} (it does: ${agent.does.join(', ') || 'nothing'})`, {
        code: 'usage',
        hint: 'leave those out of agent_units',
      });
    }
  }
  return {
    id,
    name: str(d.name, 'name', file),
    oemId,
    aliases: ((d.aliases ?? []) as unknown[]).map((a) => str(a, 'aliases', file)),
    homeUrl: str(d.home_url, 'home_url', file, true),
    bugReportUrl: str(d.bug_report_url, 'bug_report_url', file, true),
    grub,
    agentUnits: ['provision', ...units.filter((u) => u !== 'provision')],
    formats: ((d.formats ?? ['raw']) as unknown[]).map((f) => {
      if (!(FORMATS as readonly string[]).includes(f as string)) throw new OemError(`${file}: unknown format ${JSON.stringify(f)} (known: ${FORMATS.join(', ')})`, { code: 'usage' });
      return f as Format;
    }),
    ...(flatcarPlatform !== undefined ? { flatcarPlatform } : {}),
    ignitionPlatform,
    generations: ((d.generations ?? PROVIDER_GENERATIONS) as unknown[]).map((g) => {
      if (!(PROVIDER_GENERATIONS as readonly unknown[]).includes(g)) throw new OemError(`${file}: unknown generation ${JSON.stringify(g)} (known: ${PROVIDER_GENERATIONS.join(', ')})`, { code: 'usage' });
      return g as ProviderGeneration;
    }),
    ...(d.architectures !== undefined ? { architectures: architectures(d.architectures, file) } : {}),
    ...(d.disk_size !== undefined ? { diskSize: parseDiskSize(d.disk_size, `${file}: disk_size`) } : {}),
    ...(d.disk_layout !== undefined ? { rootSectors: layout(d.disk_layout, layouts, file) } : {}),
    dirs,
  };
}

function layout(v: unknown, layouts: Record<string, number>, file: string): number {
  if (typeof v !== 'string' || !Object.hasOwn(layouts, v)) {
    throw new OemError(`${file}: unknown disk_layout ${JSON.stringify(v)} (known: ${Object.keys(layouts).join(', ')}, from templates/_common/disk-layouts.yml)`, { code: 'usage' });
  }
  return layouts[v]!;
}

/** Flatcar's disk layouts that grow ROOT: templates/_common/disk-layouts.yml, name -> sectors. */
async function diskLayouts(): Promise<Record<string, number>> {
  const file = join(builtinTemplates(), '_common', 'disk-layouts.yml');
  const d = parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(d ?? {})) {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0 || v % 2048 !== 0) throw new OemError(`${file}: ${k} must be a whole number of MiB in sectors`);
    out[k] = v;
  }
  return out;
}

function architectures(v: unknown, file: string): string[] {
  if (!Array.isArray(v) || v.length === 0) throw new OemError(`${file}: architectures must be a list of ${ARCHITECTURES.join(', ')}`, { code: 'usage' });
  return v.map((a) => {
    if (!ARCHITECTURES.includes(a as string)) throw new OemError(`${file}: unknown architecture ${JSON.stringify(a)} (known: ${ARCHITECTURES.join(', ')})`, { code: 'usage' });
    return a as string;
  });
}

/** Why provider `p` cannot be built from an image of this generation and architecture; undefined when it can. */
export function unfitReason(p: Pick<Provider, 'generations' | 'architectures'>, generation: ProviderGeneration, arch: string | undefined): string | undefined {
  if (!p.generations.includes(generation)) return `it is for ${p.generations.join(' and ')} images, this is a ${generation} image`;
  if (p.architectures !== undefined && (arch === undefined || !p.architectures.includes(arch))) {
    return `it is for ${p.architectures.join(' and ')} images, this is ${arch === undefined ? 'an image of unknown architecture' : `an ${arch} image`}`;
  }
  return undefined;
}

/** All providers: the built-in ones, overlaid by a user's template tree. */
export async function loadProviders(userTemplates?: string): Promise<Provider[]> {
  const roots = [builtinTemplates(), ...(userTemplates ? [userTemplates] : [])];
  if (userTemplates && !(await isDir(userTemplates))) throw new OemError(`--templates ${userTemplates} is not a directory`, { code: 'usage' });
  // provider.yml: the user's replaces the built-in one; files: all layers, later ones win by path.
  const byId = new Map<string, { text: string; file: string }>();
  for (const root of roots) {
    for (const name of (await readdir(root)).sort()) {
      if (name.startsWith('_') || name.startsWith('.')) continue;
      const file = join(root, name, 'provider.yml');
      const text = await readFile(file, 'utf8').catch(() => null);
      if (text !== null) byId.set(name, { text, file });
    }
  }
  const layers = async (name: string): Promise<string[]> => {
    const dirs: string[] = [];
    for (const root of roots) for (const d of [join(root, '_common'), join(root, name)]) if (await isDir(d)) dirs.push(d);
    return dirs;
  };
  const out: Provider[] = [];
  const layouts = await diskLayouts();
  for (const [name, { text, file }] of byId) {
    const p = parseProvider(text, file, await layers(name), layouts);
    if (p.id !== name) throw new OemError(`${file}: id ${p.id} does not match its directory ${name}`, { code: 'usage' });
    out.push(p);
  }
  const seen = new Map<string, string>();
  for (const p of out) {
    for (const n of [p.id, ...p.aliases]) {
      if (seen.has(n)) throw new OemError(`provider name ${n} is used by both ${seen.get(n)} and ${p.id}`, { code: 'usage' });
      seen.set(n, p.id);
    }
  }
  return out.sort((a, b) => a.id.localeCompare(b.id));
}

export function findProvider(providers: Provider[], name: string): Provider {
  const p = providers.find((x) => x.id === name || x.aliases.includes(name));
  if (!p) {
    throw new OemError(`unknown provider ${JSON.stringify(name)}`, { code: 'usage', hint: `providers: ${providers.map((x) => x.id).join(', ')} (see oem providers)` });
  }
  return p;
}
