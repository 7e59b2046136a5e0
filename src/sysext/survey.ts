/**
 * The system extensions an image holds, as `oem inspect` reports them: every `.raw` on OEM
 * (Flatcar's `sysext/oem-<id>-<VERSION>.raw` and any other), every entry of ROOT's
 * `/etc/extensions` and `/var/lib/extensions` (files, or links into OEM), the `active-oem-<id>`
 * markers, and for each extension whether systemd-sysext would merge it on this image.
 *
 * The name an extension is merged under is the one systemd-sysext sees in /etc/extensions: Flatcar's
 * initrd links `sysext/oem-<id>-<VERSION>.raw` as `oem-<id>.raw`, other files keep their own name.
 */
import { posix } from 'node:path';
import { tempDir } from '../cleanup.js';
import { openFsReader, type FsEntry, type FsReader } from '../image/fs-read.js';
import type { GenerationInfo } from '../image/generation.js';
import type { PartitionReport } from '../image/layout.js';
import { describe } from '../shared/errors.js';
import { readExtension, type ExtensionImage } from './read.js';
import { boardArchitecture, mergeVerdict } from './release.js';

export interface ExtensionReport extends ExtensionImage {
  partition: 'oem' | 'root';
  /** The path in that partition. */
  path: string;
  /** The name systemd-sysext merges it under. */
  name: string;
  size: number;
  /** ROOT links: where the link points (a path on the running system). */
  target?: string;
  merges: boolean;
  reason: string;
}

export interface ExtensionSurvey {
  extensions: ExtensionReport[];
  /** The ids of the `sysext/active-oem-<id>` markers on OEM. */
  activeOem: string[];
  warnings: string[];
}

const OFFICIAL = /^oem-(.+)-(\d+\.\d+\.\d+)$/;
const ROOT_DIRS = ['/etc/extensions', '/var/lib/extensions'];

function reader(imagePath: string, p: PartitionReport): FsReader | null {
  const fs = p.filesystem.type;
  if (fs === 'none') return null;
  return openFsReader({ imagePath, offset: p.firstLba * 512, size: p.size, fs, name: `partition ${p.number} (${p.label})` });
}

/** The name systemd-sysext would merge an OEM file under. */
function mergeName(path: string): string {
  const base = posix.basename(path).replace(/\.raw$/, '');
  const m = OFFICIAL.exec(base);
  return posix.dirname(path) === '/sysext' && m ? `oem-${m[1]}` : base;
}

/**
 * `oemReader`: the OEM partition's reader when the caller has one open (it stays open), with its
 * listing; otherwise one is opened here.
 */
export async function surveyExtensions(
  imagePath: string,
  partitions: PartitionReport[],
  gen: GenerationInfo,
  oemReader?: { reader: FsReader; files: FsEntry[] },
): Promise<ExtensionSurvey> {
  const os = gen.osRelease ?? {};
  const arch = boardArchitecture(os.FLATCAR_BOARD ?? os.COREOS_BOARD);
  const survey: ExtensionSurvey = { extensions: [], activeOem: [], warnings: [] };
  const tmp = await tempDir('inspect-sysext');
  let n = 0;
  const oemPart = partitions.find((p) => p.role === 'oem');
  const rootPart = partitions.find((p) => p.role === 'root');
  const oem = oemReader?.reader ?? (oemPart ? reader(imagePath, oemPart) : null);
  const root = rootPart ? reader(imagePath, rootPart) : null;
  // Each file is copied out once, and read once per name it is merged under (a ROOT link usually repeats its OEM file's).
  const copies = new Map<string, Promise<string | ExtensionImage>>();
  const reads = new Map<string, Promise<ExtensionImage>>();
  const copyOut = (r: FsReader, path: string): Promise<string | ExtensionImage> => {
    const key = `${r === oem ? 'oem' : 'root'}:${path}`;
    let p = copies.get(key);
    if (!p) {
      const out = posix.join(tmp.path, `x${n++}.raw`);
      p = r.copyOut(path, out).then(
        (ok): string | ExtensionImage => (ok ? out : { format: 'unknown', error: `${path} is not a regular file` }),
        (err: unknown): ExtensionImage => ({ format: 'unknown', error: describe(err) }),
      );
      copies.set(key, p);
    }
    return p;
  };
  const examine = (r: FsReader, path: string, name: string): Promise<ExtensionImage> => {
    const key = `${r === oem ? 'oem' : 'root'}:${path}\0${name}`;
    let p = reads.get(key);
    if (!p) {
      p = copyOut(r, path).then((c) => (typeof c === 'string' ? readExtension(c, name) : c));
      reads.set(key, p);
    }
    return p;
  };
  const verdict = (name: string, x: ExtensionImage) => (x.error && !x.release ? { merges: false, reason: `${name}: ${x.error}` } : mergeVerdict(name, x.release, os, arch));
  try {
    const oemFiles = oemReader?.files ?? (oem ? await oem.list().catch(() => []) : []);
    for (const f of oemFiles) {
      const m = /^\/sysext\/active-oem-(.+)$/.exec(f.path);
      if (m && f.type === 'file') survey.activeOem.push(m[1]!);
    }
    for (const f of oemFiles.filter((e) => e.type === 'file' && e.path.endsWith('.raw'))) {
      const name = mergeName(f.path);
      const x = await examine(oem!, f.path, name);
      survey.extensions.push({ partition: 'oem', path: f.path, name, size: f.size, ...x, ...verdict(name, x) });
    }
    for (const dir of root ? ROOT_DIRS : []) {
      for (const entryName of (await root!.listDir(dir).catch(() => null)) ?? []) {
        if (!entryName.endsWith('.raw')) continue;
        const path = posix.join(dir, entryName);
        const name = entryName.replace(/\.raw$/, '');
        const e = await root!.entry(path).catch(() => null);
        if (!e) continue;
        if (e.type === 'file') {
          const x = await examine(root!, path, name);
          survey.extensions.push({ partition: 'root', path, name, size: e.size, ...x, ...verdict(name, x) });
          continue;
        }
        const target = e.target ?? '';
        const base: Omit<ExtensionReport, 'format' | 'merges' | 'reason'> = { partition: 'root', path, name, size: 0, target };
        const onOem = [gen.oemMountPoint, '/oem', '/usr/share/oem'].map((m) => `${m}/`).find((m) => target.startsWith(m));
        const oemPath = onOem ? `/${target.slice(onOem.length)}` : undefined;
        const file = oemPath ? oemFiles.find((f) => f.path === posix.normalize(oemPath) && f.type === 'file') : undefined;
        if (e.type !== 'symlink' || !file) {
          survey.extensions.push({ ...base, format: 'unknown', merges: false, reason: `${name}: ${e.type === 'symlink' ? `the link leads to ${target}, which is not a file on OEM` : 'not a file or a link'}` });
          continue;
        }
        const x = await examine(oem!, file.path, name);
        survey.extensions.push({ ...base, size: file.size, ...x, ...verdict(name, x) });
      }
    }
  } finally {
    if (!oemReader) await oem?.close();
    await root?.close();
    await tmp.release();
  }
  const published = gen.sysext?.oems ?? [];
  for (const id of survey.activeOem) {
    if (published.length && !published.includes(id)) {
      survey.warnings.push(
        `sysext/active-oem-${id} marks an OEM extension Flatcar does not publish (this release lists ${published.join(', ')} in /usr/share/flatcar/oems): every OS update will try to fetch oem-${id} and fail`,
      );
    } else if (!survey.extensions.some((x) => x.partition === 'oem' && x.name === `oem-${id}`)) {
      survey.warnings.push(`sysext/active-oem-${id} has no sysext/oem-${id}-${gen.version ?? '<VERSION>'}.raw beside it: the first boot will try to download it`);
    }
  }
  return survey;
}
