/**
 * Checks everything a build generates before it is written: systemd units (our strict checker, then
 * `systemd-analyze verify` when systemd is installed), cloud-config.yml (YAML, known keys only),
 * Ignition configs (JSON, a supported ignition.version), grub.cfg (only `set` lines), and that every
 * unit that runs the agent for a platform (`oem-agent ... --provider ID`) names one the agent serves:
 * otherwise the image builds and the unit fails on every boot.
 */
import { execa } from 'execa';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { parse } from 'yaml';
import { tempDir } from '../cleanup.js';
import { ignitionVersion } from './render.js';
import { OemError, describe } from '../shared/errors.js';
import { which } from '../tools.js';
import { checkUnit } from '../shared/units.js';
import { AGENT_PLATFORMS } from '../shared/platforms.js';
import type { Rendered } from './render.js';

export const SUPPORTED_IGNITION = ['2.0.0', '2.1.0', '2.2.0', '2.3.0', '3.0.0', '3.1.0', '3.2.0', '3.3.0', '3.4.0'];

const CC_KEYS: Record<string, Set<string>> = {
  '': new Set(['coreos', 'ssh_authorized_keys', 'hostname', 'users', 'write_files', 'manage_etc_hosts']),
  coreos: new Set(['units', 'oem', 'update', 'etcd', 'etcd2', 'fleet', 'flannel', 'locksmith']),
  unit: new Set(['name', 'runtime', 'enable', 'content', 'command', 'mask', 'drop-ins']),
  oem: new Set(['id', 'name', 'version-id', 'home-url', 'bug-report-url']),
};

export function checkCloudConfig(text: string): string[] {
  const problems: string[] = [];
  if (!text.startsWith('#cloud-config\n')) problems.push('does not start with #cloud-config');
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    return [...problems, `is not valid YAML: ${describe(err)}`];
  }
  if (!doc || typeof doc !== 'object') return [...problems, 'is not a mapping'];
  const unknown = (obj: object, allowed: Set<string>, where: string) => {
    for (const k of Object.keys(obj)) if (!allowed.has(k)) problems.push(`unknown key ${where}${k}`);
  };
  const d = doc as Record<string, unknown>;
  unknown(d, CC_KEYS['']!, '');
  const c = d.coreos as Record<string, unknown> | undefined;
  if (c) {
    unknown(c, CC_KEYS.coreos!, 'coreos.');
    if (c.oem) unknown(c.oem as object, CC_KEYS.oem!, 'coreos.oem.');
    for (const [i, u] of ((c.units ?? []) as Record<string, unknown>[]).entries()) {
      unknown(u, CC_KEYS.unit!, `coreos.units[${i}].`);
      if (typeof u.name !== 'string') problems.push(`coreos.units[${i}] has no name`);
      else if (typeof u.content === 'string') for (const p of checkUnit(u.name, u.content)) problems.push(`coreos.units[${i}] (${u.name}) line ${p.line}: ${p.message}`);
      if (u.command !== undefined && !['start', 'stop', 'restart', 'reload', 'try-restart', 'reload-or-restart', 'reload-or-try-restart'].includes(String(u.command))) {
        problems.push(`coreos.units[${i}].command ${String(u.command)} is not a systemctl command`);
      }
    }
  }
  return problems;
}

export function checkIgnition(text: string): string[] {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    return [`is not valid JSON: ${describe(err)}`];
  }
  const v = (doc.ignition as Record<string, unknown> | undefined)?.version;
  if (typeof v !== 'string' || !SUPPORTED_IGNITION.includes(v)) return [`ignition.version ${JSON.stringify(v)} is not one of ${SUPPORTED_IGNITION.join(', ')}`];
  const problems: string[] = [];
  const units = ((doc.systemd as Record<string, unknown> | undefined)?.units ?? []) as Record<string, unknown>[];
  for (const [i, u] of units.entries()) {
    if (typeof u.name !== 'string') problems.push(`systemd.units[${i}] has no name`);
    else if (typeof u.contents === 'string') for (const p of checkUnit(u.name, u.contents)) problems.push(`systemd.units[${i}] (${u.name}) line ${p.line}: ${p.message}`);
  }
  return problems;
}

/**
 * A user's Ignition config for config.ign (`--ignition`): JSON (Butane YAML is refused with a hint
 * to transpile it), with an ignition.version of the major version the image's Ignition reads
 * (3.x from Flatcar 3185 on, 2.x before), and units that check out.
 */
export function checkUserIgnition(text: string, file: string, image?: { distro: 'flatcar' | 'coreos'; version: string }): void {
  if (image?.distro === 'coreos') throw new OemError(`--ignition ${file}: CoreOS-style images take cloud-config on OEM, not config.ign`, { code: 'usage' });
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    if (/^\s*(variant|version)\s*:/m.test(text)) {
      throw new OemError(`--ignition ${file} is Butane YAML, not an Ignition config`, { code: 'usage', hint: `transpile it first: butane --strict < ${file} > config.ign` });
    }
    throw new OemError(`--ignition ${file} is not JSON: ${describe(err)}`, { code: 'usage' });
  }
  const v = ((doc as Record<string, unknown> | null)?.ignition as Record<string, unknown> | undefined)?.version;
  const want = image ? ignitionVersion(image.distro, image.version).split('.')[0]! : '';
  const readable = SUPPORTED_IGNITION.filter((x) => x.startsWith(want ? `${want}.` : ''));
  if (typeof v !== 'string' || !readable.includes(v)) {
    throw new OemError(`--ignition ${file}: ignition.version ${JSON.stringify(v)} is not one ${image ? `Flatcar ${image.version}'s Ignition reads` : 'Ignition reads'} (${readable.join(', ')})`, { code: 'usage' });
  }
  const problems = checkIgnition(text);
  if (problems.length) throw new OemError(`--ignition ${file}: ${problems.join('; ')}`, { code: 'usage' });
}

/**
 * grub.cfg on OEM is read by Flatcar's GRUB config before the kernel line: it may set variables,
 * and (as Flatcar's own per-platform files do) set up a serial console and choose by platform or
 * CPU. Exactly these lines are accepted, with `if` blocks balanced:
 * `set NAME="value"`, `serial` with its options, `terminal_input`/`terminal_output` with device
 * names, `if [ "$grub_cpu" = X ]; then` (or `$grub_platform`), `elif` alike, `else`, `fi`.
 */
const GRUB_LINES: [RegExp, 'open' | 'middle' | 'close' | 'plain'][] = [
  [/^set [A-Za-z_][A-Za-z0-9_]*="[^"$`\\]*"$/, 'plain'],
  [/^serial( (com\d|--(unit|speed|word|stop)=\d+|--parity=(no|odd|even)))+$/, 'plain'],
  [/^terminal_(input|output)( (serial(_com\d)?|console|gfxterm))+$/, 'plain'],
  [/^if \[ "\$grub_(cpu|platform)" = "?[a-z0-9_-]+"? \]; then$/, 'open'],
  [/^elif \[ "\$grub_(cpu|platform)" = "?[a-z0-9_-]+"? \]; then$/, 'middle'],
  [/^else$/, 'middle'],
  [/^fi$/, 'close'],
];

export function checkGrub(text: string): string[] {
  const problems: string[] = [];
  let depth = 0;
  text.split('\n').forEach((l, i) => {
    const t = l.trim();
    if (t === '' || t.startsWith('#')) return;
    const kind = GRUB_LINES.find(([re]) => re.test(t))?.[1];
    if (kind === undefined) problems.push(`line ${i + 1} is not a line oem accepts in grub.cfg (set, serial, terminal_input/output, if on $grub_cpu or $grub_platform): ${t.slice(0, 60)}`);
    else if (kind === 'open') depth++;
    else if ((kind === 'middle' || kind === 'close') && depth === 0) problems.push(`line ${i + 1}: ${t} without an if`);
    else if (kind === 'close') depth--;
  });
  if (depth > 0) problems.push(`an if block is not closed with fi`);
  return problems;
}

/**
 * systemd-analyze verify on copies of the units in a private directory, with /usr/share/oem
 * rewritten to a stand-in holding executables, so commands are checked too and nothing outside the
 * directory is touched.
 */
async function systemdAnalyze(units: { name: string; content: string }[]): Promise<string[]> {
  const bin = await which('systemd-analyze');
  if (!bin || !units.length) return [];
  const tmp = await tempDir('verify');
  try {
    const oem = join(tmp.path, 'oem');
    const unitDir = join(tmp.path, 'units');
    await mkdir(join(oem, 'bin'), { recursive: true });
    await mkdir(unitDir);
    for (const tool of ['oem-agent']) {
      await writeFile(join(oem, 'bin', tool), '#!/bin/sh\n');
      await chmod(join(oem, 'bin', tool), 0o755);
    }
    const files: string[] = [];
    for (const u of units) {
      const f = join(unitDir, u.name);
      await writeFile(f, u.content.replaceAll('/usr/share/oem/', `${oem}/`));
      files.push(f);
    }
    const r = await execa(bin, ['verify', '--man=no', ...files], { reject: false, env: { SYSTEMD_LOG_LEVEL: 'warning' } });
    const out = `${String(r.stderr)}\n${String(r.stdout)}`
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      // Units that only exist on the target system, and the host's own state, are not our problem.
      .filter((l) => !/Unit .* not found|not found\.|Failed to create .*: Unit|Failed to prepare|Cannot add dependency job|ignoring: .*target/i.test(l))
      // Commands of the target OS (anything outside the OEM partition) cannot be checked on this host.
      .filter((l) => !(/Command (\S+) is not executable/.test(l) && !l.includes(`${oem}/`)));
    return out.map((l) => l.replaceAll(`${unitDir}/`, '').replaceAll(`${oem}/`, '/usr/share/oem/'));
  } finally {
    await tmp.release();
  }
}

/** Validates all generated files of a rendered provider; throws one OemError listing the problems. */
/** The platform ids that units run the agent for (`oem-agent CMD ... --provider ID` in Exec lines). */
export function agentPlatforms(unit: string): string[] {
  const ids: string[] = [];
  for (const line of unit.split('\n')) {
    if (!/^\s*Exec[A-Za-z]*\s*=.*\boem-agent\b/.test(line)) continue;
    for (const m of line.matchAll(/--provider(?:=|\s+)(\S+)/g)) ids.push(m[1]!.replace(/^["']|["']$/g, ''));
  }
  return ids;
}

export async function validateRendered(providerId: string, r: Rendered): Promise<void> {
  const problems: string[] = [];
  const units: { name: string; content: string }[] = [];
  const unserved = new Set<string>();
  for (const f of r.files) if (f.kind === 'unit') for (const id of agentPlatforms(f.content)) if (!(AGENT_PLATFORMS as readonly string[]).includes(id)) unserved.add(id);
  if (unserved.size) {
    const ids = [...unserved].map((id) => JSON.stringify(id)).join(', ');
    throw new OemError(`provider ${providerId}: its units run the agent for ${ids}, a platform the agent does not serve`, {
      code: 'usage',
      hint: `set oem_id to one it serves (${AGENT_PLATFORMS.join(', ')}) or leave agent_units out of provider.yml`,
    });
  }
  for (const f of r.files) {
    const at = (msgs: string[]) => problems.push(...msgs.map((m) => `${f.path}: ${m}`));
    if (f.kind === 'unit') {
      const name = posix.basename(f.path);
      at(checkUnit(name, f.content).map((p) => `line ${p.line}: ${p.message}`));
      units.push({ name, content: f.content });
    } else if (f.kind === 'cloud-config') at(checkCloudConfig(f.content));
    else if (f.kind === 'ignition') at(checkIgnition(f.content));
    else if (f.kind === 'grub') at(checkGrub(f.content));
  }
  if (!problems.length) problems.push(...(await systemdAnalyze(units)));
  if (problems.length) {
    throw new OemError(`provider ${providerId}: generated content does not validate: ${problems.join('; ')}`, {
      code: 'usage',
      hint: 'fix the templates (see templates/ or your --templates directory)',
    });
  }
}
