/**
 * What a build writes for one provider on a Flatcar image of the extension era (3760 and later).
 *
 * - **Official**: the release publishes an OEM extension for the provider's platform
 *   (`flatcar_platform` in provider.yml, listed by the image under /usr/share/flatcar/oems/). OEM
 *   gets what Flatcar's own pipeline writes: `sysext/oem-<id>-<VERSION>.raw`, the empty marker
 *   `sysext/active-oem-<id>`, `oem-release` from the extension's extension-release (ID unquoted),
 *   and Flatcar's grub.cfg for the platform. Nothing of oem's own.
 * - **Custom**: any other provider. Its units, the agent and the provisioning config become the
 *   provider's own extension `<name>.raw` on OEM (outside sysext/, never named oem*.raw: Flatcar's
 *   update removes those), with `ID=flatcar`, `SYSEXT_LEVEL=1.0` and the board's architecture so
 *   it merges after OS updates too, linked from ROOT as /etc/extensions/<name>.raw and recreated by
 *   a `links` entry in base/base.ign after a root reset. No active-oem marker: with one, every OS
 *   update would fetch Flatcar's extension for the id, find none and fail.
 *
 * The user's own extensions (`--sysext`) are placed and linked like the custom one.
 */
import { chmod, link, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { OemError } from '../shared/errors.js';
import { type FileContent, type HostFile, hostFile, writeNewFile } from '../shared/safe-fs.js';
import type { Provider } from '../providers/registry.js';
import { grubCfg, ignitionVersion, type Rendered } from '../providers/render.js';
import type { PlanEntry } from '../write/plan.js';
import { makeExtension, type SysextFormat } from './make.js';
import { rememberSource, StoreMiss, storedSource } from './squashfs.js';
import { readExtension } from './read.js';
import { mergeVerdict, type Keys } from './release.js';

/** The image a build writes into, as far as extensions care. */
export interface SysextImage {
  distro: 'flatcar' | 'coreos';
  version: string;
  /** The image's os-release. */
  os: Keys;
  /** systemd's name for the board's architecture. */
  arch: string | undefined;
  /** Platforms Flatcar publishes OEM extensions for, as the image lists them (empty: not known). */
  oems: string[];
}

export type SysextMode = { kind: 'official'; platform: string } | { kind: 'custom'; name: string };

/** Where the OEM partition is mounted on the extension era's systems. */
const OEM_MOUNT = '/oem';

export function sysextMode(p: Provider, img: SysextImage): SysextMode {
  const platform = p.flatcarPlatform;
  if (platform !== undefined && (img.oems.length === 0 || img.oems.includes(platform))) return { kind: 'official', platform };
  return { kind: 'custom', name: customName(p.id) };
}

/**
 * Why an extension-era image cannot have the provider: a platform that came with Flatcar's extensions
 * is Flatcar's extension or nothing, and this image does not list it.
 */
export function missingExtension(p: Provider, img: SysextImage): string | undefined {
  if (sysextMode(p, img).kind === 'official' || p.flatcarPlatform === undefined || p.generations.includes('flatcar')) return undefined;
  return `the release publishes no OEM extension for ${p.flatcarPlatform} (the image lists ${img.oems.join(', ') || 'none'} in /usr/share/flatcar/oems)`;
}

/** The provider's own extension's name: its id, unless that starts with "oem" (Flatcar's update deletes oem*.raw). */
export function customName(id: string): string {
  return id.startsWith('oem') ? `provider-${id}` : id;
}

export interface SysextContent {
  oem: PlanEntry[];
  root: PlanEntry[];
  /** Text files on OEM, for validation. */
  files: { path: string; kind: 'grub' | 'ignition' | 'other'; content: string }[];
  /** The extensions linked from /etc/extensions (and base/base.ign): the provider's own, the user's. */
  linked: string[];
  /** What the build did, for its log and manifest. */
  summary: string;
}

const file = (path: string, content: FileContent | string, mode = 0o644): PlanEntry => ({ kind: 'file', path, content: typeof content === 'string' ? Buffer.from(content) : content, mode, uid: 0, gid: 0 });
const dir = (path: string, mode = 0o755): PlanEntry => ({ kind: 'dir', path, mode, uid: 0, gid: 0 });
const q = (s: string) => `"${s.replace(/["\\]/g, '')}"`;

/** Flatcar's grub.cfg for the provider's platform (templates/<id>/flatcar/grub.cfg, the last layer that has one), or one made from provider.yml. */
async function officialGrub(p: Provider): Promise<string> {
  for (const d of [...p.dirs].reverse()) {
    if (posix.basename(d) === '_common') continue;
    const text = await readFile(join(d, 'flatcar', 'grub.cfg'), 'utf8').catch(() => null);
    if (text !== null) return text;
  }
  return grubCfg(p);
}

/**
 * oem_id values Flatcar's initrd and Ignition know: the platforms of Flatcar's own grub.cfg files
 * and Ignition's platform names. A custom extension's grub.cfg must use one of them.
 */
export const KNOWN_OEM_IDS: readonly string[] = [
  'akamai', 'aliyun', 'aws', 'azure', 'azurestack', 'cloudsigma', 'cloudstack', 'digitalocean', 'ec2', 'exoscale', 'gce', 'gcp', 'hetzner', 'hyperv', 'ibmcloud',
  'kubevirt', 'metal', 'nutanix', 'openstack', 'oraclecloud', 'packet', 'powervs', 'proxmoxve', 'qemu', 'scaleway', 'upcloud', 'vagrant', 'virtualbox', 'vmware', 'vultr',
];

function customGrub(p: Provider): string {
  if (!KNOWN_OEM_IDS.includes(p.ignitionPlatform)) {
    throw new OemError(`provider ${p.id}: oem_id ${p.ignitionPlatform} is not a platform Flatcar's Ignition knows, so the image would not boot its config`, {
      code: 'usage',
      hint: `set ignition_platform in its provider.yml to one of: ${KNOWN_OEM_IDS.join(', ')} (openstack for a config drive, metal for none)`,
    });
  }
  return grubCfg({ ...p, oemId: p.ignitionPlatform });
}

/** Checks an extension the build is about to place: readable, with an extension-release, merging on this image. */
export async function checkExtension(path: string, name: string, img: SysextImage, what: string): Promise<Keys> {
  const x = await readExtension(path, name);
  if (x.error && !x.release) throw new OemError(`${what} cannot be used: ${x.error}`, { code: 'badImage' });
  const v = mergeVerdict(name, x.release, img.os, img.arch);
  if (!v.merges) throw new OemError(`${what} would not be merged by systemd-sysext on this image: ${v.reason}`, { code: 'badImage', hint: 'use an extension made for this release and board' });
  return x.release!;
}

/** The official content for `platform`, with the release's verified `oem-<platform>.raw` at `raw`. */
export async function officialContent(p: Provider, img: SysextImage, platform: string, raw: string): Promise<SysextContent> {
  const release = await checkExtension(raw, `oem-${platform}`, img, `oem-${platform}.raw`);
  // The initrd uses ID in paths (sysext/active-oem-<ID>, oem-<ID>-<VERSION>.raw): it is the platform, and the extension must agree.
  if (release.SYSEXT_ID !== undefined && release.SYSEXT_ID !== `oem-${platform}`) {
    throw new OemError(`oem-${platform}.raw is the extension ${JSON.stringify(release.SYSEXT_ID)}, not oem-${platform}`, { code: 'badImage' });
  }
  const id = platform;
  const oemRelease = [
    `ID=${id}`,
    `VERSION_ID=${release.SYSEXT_VERSION_ID ?? img.version}`,
    `NAME=${q(release.SYSEXT_NAME ?? p.name)}`,
    `HOME_URL=${q(release.SYSEXT_HOME_URL ?? p.homeUrl)}`,
    `BUG_REPORT_URL=${q(release.SYSEXT_BUG_REPORT_URL ?? p.bugReportUrl)}`,
    '',
  ].join('\n');
  const grub = await officialGrub(p);
  return {
    oem: [
      dir('/sysext'),
      file(`/sysext/oem-${platform}-${img.version}.raw`, await hostFile(raw)),
      file(`/sysext/active-oem-${platform}`, ''),
      file('/oem-release', oemRelease),
      file('/grub.cfg', grub),
    ],
    root: [],
    files: [
      { path: '/grub.cfg', kind: 'grub', content: grub },
      { path: '/oem-release', kind: 'other', content: oemRelease },
    ],
    linked: [],
    summary: `Flatcar's OEM extension oem-${platform} (sysext/oem-${platform}-${img.version}.raw, marked active)`,
  };
}

/** The systemd drop-ins that start `units` the way their [Install] sections ask (extensions are not "enabled"). */
function installDropIns(units: { name: string; content: string }[], tag: string): PlanEntry[] {
  const wants = new Map<string, { Wants: string[]; Requires: string[] }>();
  for (const u of units) {
    const install = /^\[Install\]\s*\n([\s\S]*?)(?=^\[|(?![\s\S]))/m.exec(u.content)?.[1] ?? '';
    for (const m of install.matchAll(/^(WantedBy|RequiredBy)=(.+)$/gm)) {
      for (const target of m[2]!.trim().split(/\s+/)) {
        const w = wants.get(target) ?? { Wants: [], Requires: [] };
        (m[1] === 'WantedBy' ? w.Wants : w.Requires).push(u.name);
        wants.set(target, w);
      }
    }
  }
  return [...wants.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([target, w]) => {
    const lines = ['# Written by oem: what enabling the units would do (an extension is merged, not enabled).', '[Unit]'];
    if (w.Wants.length) lines.push(`Wants=${w.Wants.sort().join(' ')}`);
    if (w.Requires.length) lines.push(`Requires=${w.Requires.sort().join(' ')}`);
    return file(`/usr/lib/systemd/system/${target}.d/10-${tag}.conf`, lines.join('\n') + '\n');
  });
}

/** base/base.ign linking each extension from /etc/extensions (recreated after a root reset). */
function linksIgnition(img: SysextImage, names: string[]): string {
  const ign = {
    ignition: { version: ignitionVersion(img.distro, img.version) },
    storage: { links: names.map((n) => ({ path: `/etc/extensions/${n}.raw`, target: `${OEM_MOUNT}/${n}.raw`, hard: false, overwrite: true })) },
  };
  return JSON.stringify(ign, null, 2) + '\n';
}

/** ROOT entries linking each extension from /etc/extensions. */
function rootLinks(names: string[]): PlanEntry[] {
  return [dir('/etc/extensions'), ...names.map((n): PlanEntry => ({ kind: 'symlink', path: `/etc/extensions/${n}.raw`, target: `${OEM_MOUNT}/${n}.raw`, uid: 0, gid: 0 }))];
}

/**
 * Every directory of an extension's tree 0755, whatever the umask made them: systemd-sysext's overlay
 * takes a directory's mode from the topmost layer, so a 0700 usr/ would close the system's /usr.
 */
async function openDirectories(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const e of await readdir(dir, { withFileTypes: true })) if (e.isDirectory()) await openDirectories(join(dir, e.name));
}

export interface CustomOptions {
  name: string;
  format: SysextFormat;
  mtime: number;
  /** The agent, or null for none: its .xz, and its executable (unpacked when first asked for). */
  agent: { xz: HostFile; executable: () => Promise<HostFile> } | null;
  /** A private directory to build the extension's tree and image in. */
  work: string;
  /** Where compressed blocks of the agent are kept for other providers and later builds. */
  store?: string;
}

/**
 * The provider's own extension, made from the content renderProvider gives for a Flatcar-style
 * image: its units (with the agent and config paths inside the extension), the agent, the config.
 */
export async function customContent(p: Provider, img: SysextImage, rendered: Rendered, o: CustomOptions): Promise<SysextContent> {
  if (!img.arch) throw new OemError(`cannot make the ${o.name} extension: the image's architecture is not known`, { code: 'badImage' });
  const grub = customGrub(p);
  const libDir = `/usr/lib/${o.name}`;
  const relocate = (text: string) => text.replaceAll('/usr/share/oem/bin/oem-agent', `${libDir}/oem-agent`).replaceAll('/usr/share/oem/config.yml', `${libDir}/config.yml`);
  const units = rendered.files.filter((f) => f.kind === 'unit').map((f) => ({ name: posix.basename(f.path), content: relocate(f.content) }));
  const config = rendered.entries.find((e) => e.path === '/config.yml');
  const agentPath = `${libDir}/oem-agent`;
  // A squashfs whose store has the agent's blocks from an earlier build takes them without unpacking it.
  const known = o.agent && o.format === 'squashfs' && o.store !== undefined ? await storedSource(o.store, o.agent.xz.hostPath) : undefined;
  const make = async (fromStore: boolean) => {
    const extension = join(o.work, `${o.name}.raw`);
    const treeDir = join(o.work, `${o.name}.tree`);
    await rm(extension, { force: true });
    await rm(treeDir, { recursive: true, force: true });
    const agent = o.agent && !fromStore ? await o.agent.executable() : null;
    await writeTree(treeDir, agent);
    const stored = fromStore && known ? [{ path: agentPath, mode: 0o755, ...known }] : [];
    const made = await makeExtension(treeDir, extension, { format: o.format, mtime: o.mtime, name: o.name, ...(o.store !== undefined ? { store: o.store } : {}), stored });
    if (agent && o.store !== undefined && o.format === 'squashfs') await rememberSource(o.store, o.agent!.xz.hostPath, agent.hostPath);
    return { extension, stored: made.stored };
  };
  const writeTree = async (treeDir: string, agent: HostFile | null) => {
    const tree: PlanEntry[] = [
      file(`/usr/lib/extension-release.d/extension-release.${o.name}`, `ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=${img.arch}\nEXTENSION_RELOAD_MANAGER=1\n`),
      ...units.map((u) => file(`/usr/lib/systemd/system/${u.name}`, u.content)),
      ...installDropIns(units, o.name),
      ...(agent ? [file(agentPath, agent, 0o755)] : []),
      ...(config && config.kind === 'file' ? [file(`${libDir}/config.yml`, config.content)] : []),
    ];
    for (const e of tree) {
      if (e.kind !== 'file') continue;
      const at = join(treeDir, e.path);
      await mkdir(posix.dirname(at), { recursive: true });
      // The agent (100 MB, the same for every provider) is linked, not copied, when its mode is the entry's.
      if (!Buffer.isBuffer(e.content) && ((await stat(e.content.hostPath)).mode & 0o7777) === e.mode && (await link(e.content.hostPath, at).then(() => true, () => false))) continue;
      await writeNewFile(at, e.content, e.mode);
    }
    await mkdir(treeDir, { recursive: true });
    await openDirectories(treeDir);
  };
  const { extension, stored } = await make(known !== undefined).catch((err: unknown) => {
    if (err instanceof StoreMiss) return make(false); // the blocks went meanwhile: unpack and compress
    throw err;
  });
  await checkExtension(extension, o.name, img, `the extension ${o.name}.raw`);

  const oemRelease = [`ID=${p.id}`, `VERSION_ID=${img.version}`, `NAME=${q(p.name)}`, `HOME_URL=${q(p.homeUrl)}`, `BUG_REPORT_URL=${q(p.bugReportUrl)}`, ''].join('\n');
  const base = linksIgnition(img, [o.name]);
  // Template files that are neither units nor what the extension replaces stay plain files on OEM.
  const replaced = new Set(['/bin/oem-agent', '/bin/oem-agent.xz', '/config.yml', '/base/base.ign', '/grub.cfg', '/oem-release', '/run', '/cloud-config.yml']);
  const others = rendered.entries.filter((e) => e.kind === 'file' && !replaced.has(e.path) && !/^\/system\//.test(e.path));
  return {
    oem: [file(`/${o.name}.raw`, await hostFile(extension)), file('/oem-release', oemRelease), file('/grub.cfg', grub), file('/base/base.ign', base), ...others],
    root: rootLinks([o.name]),
    files: [
      { path: '/grub.cfg', kind: 'grub', content: grub },
      { path: '/base/base.ign', kind: 'ignition', content: base },
    ],
    linked: [o.name],
    summary: `the provider's own extension ${o.name}.raw (${o.format}; ${units.length} units${o.agent ? `, the agent${stored.some((f) => f.endsWith('/oem-agent')) ? ' (its compressed blocks from the cache)' : ''}` : ''}${config ? ', the config' : ''}), linked from /etc/extensions, no active-oem marker`,
  };
}

/** Adds the user's extensions (`--sysext`): checked, placed on OEM, linked from ROOT and from base/base.ign. */
export async function addUserExtensions(content: SysextContent, img: SysextImage, paths: string[]): Promise<SysextContent> {
  if (!paths.length) return content;
  const names: string[] = [];
  const oem = [...content.oem];
  for (const path of paths) {
    const name = posix.basename(path).replace(/\.raw$/, '');
    if (!posix.basename(path).endsWith('.raw')) throw new OemError(`--sysext ${path}: an extension image's name ends in .raw`, { code: 'usage' });
    if (name.startsWith('oem')) throw new OemError(`--sysext ${path}: names starting with "oem" are Flatcar's (its updates delete oem*.raw); rename the file`, { code: 'usage' });
    if (names.includes(name) || oem.some((e) => e.path === `/${name}.raw`)) throw new OemError(`--sysext ${path}: an extension named ${name} is already there`, { code: 'usage' });
    await checkExtension(path, name, img, `--sysext ${path}`);
    names.push(name);
    oem.push(file(`/${name}.raw`, await hostFile(path)));
  }
  // One base/base.ign links every extension that is not Flatcar's own.
  const linked = [...content.linked, ...names];
  const base = linksIgnition(img, linked);
  return {
    oem: [...oem.filter((e) => e.path !== '/base/base.ign'), file('/base/base.ign', base)],
    root: rootLinks(linked),
    files: [...content.files.filter((f) => f.path !== '/base/base.ign'), { path: '/base/base.ign', kind: 'ignition', content: base }],
    linked,
    summary: `${content.summary}; the user's extension${names.length === 1 ? '' : 's'} ${names.join(', ')}`,
  };
}
