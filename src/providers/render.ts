/**
 * Renders what a build writes into the OEM partition for one provider: the template files (with the
 * few variables they may use), grub.cfg, oem-release, the agent and its units, the provisioning
 * config, and how it is all started for the image's generation (cloud-config.yml and `run` for
 * CoreOS-style images, base/base.ign for Flatcar-style ones; never config.ign).
 */
import { readFile, readdir, lstat } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { stringify } from 'yaml';
import { OemError } from '../shared/errors.js';
import { compareVersions } from '../image/generation.js';
import type { SshKey } from '../shared/ssh-keys.js';
import { keySetContent } from '../shared/ssh-keys.js';
import type { FileContent, PlanEntry } from '../write/plan.js';
import type { Provider } from './registry.js';

export type Generation = 'coreos' | 'flatcar';

export interface RenderContext {
  provider: Provider;
  distro: 'flatcar' | 'coreos';
  version: string;
  channel: string;
  generation: Generation;
  /** The agent executable for the image's board, xz-compressed, or null to build without it. */
  agent: FileContent | null;
  sshKeys: SshKey[];
  /** The provisioning config the agent reads (already validated). */
  config: Buffer | null;
}

export type GeneratedKind = 'unit' | 'cloud-config' | 'ignition' | 'grub' | 'other';

export interface Rendered {
  entries: PlanEntry[];
  /** Text files by path in the OEM partition, with what kind they are, for validation. */
  files: { path: string; kind: GeneratedKind; content: string }[];
}

const VARS = ['version', 'channel', 'provider', 'oem_id', 'name'] as const;

/** Replaces {{var}} with the few allowed variables; anything else in braces is an error. */
export function renderTemplate(text: string, vars: Record<(typeof VARS)[number], string>, file: string): string {
  return text.replace(/\{\{\s*([^}]*?)\s*\}\}/g, (_m, name: string) => {
    if (!(VARS as readonly string[]).includes(name)) {
      throw new OemError(`${file}: unknown template variable {{${name}}} (allowed: ${VARS.join(', ')})`, { code: 'usage' });
    }
    return vars[name as (typeof VARS)[number]];
  });
}

/** Files of one template layer: `_common/` holds them at its root, a provider in its `files/`. */
async function layerFiles(dir: string): Promise<Map<string, string>> {
  const base = posix.basename(dir) === '_common' ? dir : join(dir, 'files');
  const out = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    let names: string[];
    try {
      names = (await readdir(join(base, rel))).sort();
    } catch {
      return;
    }
    for (const n of names) {
      const r = posix.join(rel, n);
      if (rel === '' && (n === 'README.md' || n === 'provider.yml' || n === 'disk-layouts.yml')) continue;
      const st = await lstat(join(base, r));
      if (st.isSymbolicLink()) throw new OemError(`template ${join(base, r)} is a symlink; templates must be plain files`, { code: 'usage' });
      if (st.isDirectory()) await walk(r);
      else if (st.isFile()) out.set('/' + r, join(base, r));
    }
  };
  await walk('');
  return out;
}

function kindOf(path: string): GeneratedKind {
  if (/^\/system\/[^/]+\.(service|target|socket|timer|path|mount)$/.test(path)) return 'unit';
  if (path === '/grub.cfg') return 'grub';
  if (path === '/cloud-config.yml') return 'cloud-config';
  if (path.endsWith('.ign')) return 'ignition';
  return 'other';
}

function modeOf(path: string): number {
  return path === '/run' || path.startsWith('/bin/') ? 0o755 : 0o644;
}

const q = (s: string) => `"${s}"`;

export function grubCfg(p: Provider): string {
  const lines = [`# ${p.name} (written by oem)`, `set oem_id=${q(p.oemId)}`];
  if (p.grub.linux_console) lines.push(`set linux_console=${q(p.grub.linux_console)}`);
  if (p.grub.linux_append) lines.push(`set linux_append=${q(p.grub.linux_append)}`);
  return lines.join('\n') + '\n';
}

export function oemRelease(p: Provider, version: string): string {
  return [`ID=${p.oemId}`, `VERSION_ID=${version}`, `NAME=${q(p.name)}`, `HOME_URL=${q(p.homeUrl)}`, `BUG_REPORT_URL=${q(p.bugReportUrl)}`, ''].join('\n');
}

/** Ignition spec for a Flatcar version: 3.x from Flatcar 3185 on, 2.x before. */
export function ignitionVersion(distro: string, version: string): string {
  return distro === 'flatcar' && compareVersions(version, '3185.0.0') >= 0 ? '3.3.0' : '2.3.0';
}

export async function renderProvider(ctx: RenderContext): Promise<Rendered> {
  const p = ctx.provider;
  const vars = { version: ctx.version, channel: ctx.channel, provider: p.id, oem_id: p.oemId, name: p.name };
  // Layers: later ones win by path.
  const sources = new Map<string, string>();
  for (const d of p.dirs) for (const [path, file] of await layerFiles(d)) sources.set(path, file);

  const files = new Map<string, { content: FileContent; mode: number }>();
  for (const [path, file] of sources) {
    const unit = /^\/system\/oem-agent-([a-z-]+)\.service$/.exec(path);
    if (unit && (!ctx.agent || !p.agentUnits.includes(unit[1] as never))) continue;
    if (path === '/run' && ctx.generation !== 'coreos') continue;
    if (path === '/bin/oem-agent' && !ctx.agent) continue;
    const raw = await readFile(file);
    const content = raw.includes(0) ? raw : Buffer.from(renderTemplate(raw.toString('utf8'), vars, file));
    files.set(path, { content, mode: modeOf(path) });
  }
  files.set('/grub.cfg', { content: Buffer.from(grubCfg(p)), mode: 0o644 });
  files.set('/oem-release', { content: Buffer.from(oemRelease(p, ctx.version)), mode: 0o644 });
  if (ctx.config) files.set('/config.yml', { content: ctx.config, mode: 0o644 });
  // The agent is stored xz-compressed; bin/oem-agent (a template) unpacks it to /run and runs it.
  if (ctx.agent) files.set('/bin/oem-agent.xz', { content: ctx.agent, mode: 0o644 });
  if (ctx.sshKeys.length) files.set('/authorized_keys', { content: Buffer.from(keySetContent(ctx.sshKeys)), mode: 0o644 });

  // How the units are started.
  const texts = () => [...files.entries()].flatMap(([path, f]) => (Buffer.isBuffer(f.content) && !f.content.includes(0) ? [{ path, text: f.content.toString('utf8') }] : []));
  const units = texts()
    .filter(({ path }) => kindOf(path) === 'unit')
    .map(({ path, text }) => ({ name: posix.basename(path), contents: text }))
    .sort((a, b) => (a.name === 'oem.target' ? 1 : b.name === 'oem.target' ? -1 : a.name.localeCompare(b.name)));
  if (ctx.generation === 'coreos') {
    const cc = {
      coreos: {
        units: units.map((u) => ({ name: u.name, runtime: true, enable: u.name !== 'coreos-metadata.target', ...(u.name === 'oem.target' ? { command: 'start' } : {}), content: u.contents })),
        oem: { id: p.oemId, name: p.name, 'version-id': ctx.version, 'home-url': p.homeUrl, 'bug-report-url': p.bugReportUrl },
      },
    };
    files.set('/cloud-config.yml', { content: Buffer.from('#cloud-config\n' + stringify(cc, { lineWidth: 0 })), mode: 0o644 });
  } else {
    const ign = {
      ignition: { version: ignitionVersion(ctx.distro, ctx.version) },
      systemd: { units: units.map((u) => ({ name: u.name, ...(u.name === 'coreos-metadata.target' ? {} : { enabled: true }), contents: u.contents })) },
    };
    files.set('/base/base.ign', { content: Buffer.from(JSON.stringify(ign, null, 2) + '\n'), mode: 0o644 });
    files.delete('/config.ign');
  }

  const entries: PlanEntry[] = [...files.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([path, f]) => ({ kind: 'file', path, content: f.content, mode: f.mode, uid: 0, gid: 0 }));
  return {
    entries,
    files: texts().map(({ path, text }) => ({ path, kind: kindOf(path), content: text })),
  };
}
