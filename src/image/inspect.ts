/**
 * `oem inspect`: what an image is. Partition table, filesystems, generation, and the OEM partition's
 * contents. Compressed images are streamed into a private sparse file first.
 */
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { tempDir } from '../cleanup.js';
import { OemError, describe } from '../shared/errors.js';
import { FileSource, SliceSource } from './byte-source.js';
import type { Compression } from '../compression.js';
import { decompressToSparse, detectCompression } from './decompress.js';
import { detectFilesystem, type FsInfo } from './fs-detect.js';
import { openFsReader, type FsEntry } from './fs-read.js';
import { readGpt } from './gpt.js';
import { partitionReports, type PartitionReport } from './layout.js';
import { detectGeneration, parseKeyValues, type GenerationInfo } from './generation.js';
import { surveyExtensions, type ExtensionReport, type ExtensionSurvey } from '../sysext/survey.js';


export interface OemReport {
  readable: boolean;
  error?: string;
  filesystem?: string;
  oemId?: string;
  grub?: Record<string, string>;
  oemRelease?: Record<string, string>;
  files: FsEntry[];
}

export interface InspectReport {
  image: string;
  compression: Compression;
  decompressor?: string;
  size: number;
  sectorSize: number;
  diskGuid: string;
  firstUsableLba: number;
  lastUsableLba: number;
  warnings: string[];
  partitions: PartitionReport[];
  generation: GenerationInfo;
  oem: OemReport | null;
  /** System extensions on OEM and ROOT (Flatcar 3760 and later, or any image with some). */
  extensions?: ExtensionReport[];
  /** The ids of OEM's `sysext/active-oem-<id>` markers. */
  activeOem?: string[];
}

/** Parses the `set key="value"` lines of a GRUB snippet. */
export function parseGrubSets(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*set\s+([A-Za-z_][A-Za-z0-9_]*)=(?:"([^"]*)"|'([^']*)'|(\S*))\s*$/.exec(line);
    if (m) out[m[1]!] = m[2] ?? m[3] ?? m[4] ?? '';
  }
  return out;
}

async function readVersionTxt(image: string): Promise<Record<string, string> | undefined> {
  const stem = basename(image).replace(/(\.bin)?(\.bz2|\.gz|\.xz|\.zst)?$/, '');
  for (const p of [join(dirname(image), `${stem}.version.txt`), join(dirname(image), 'version.txt')]) {
    try {
      return parseKeyValues(await readFile(p, 'utf8'));
    } catch {
      /* none */
    }
  }
  return undefined;
}


/** The OEM partition's files, grub.cfg and oem-release, and its extensions (Flatcar 3760 and later, or any image with some). */
async function inspectOem(imagePath: string, partitions: PartitionReport[], gen: GenerationInfo): Promise<{ oem: OemReport | null; sysext?: ExtensionSurvey }> {
  const p = partitions.find((x) => x.role === 'oem');
  if (!p) return { oem: null };
  const fs = p.filesystem.type;
  if (fs === 'none' || fs === 'vfat') {
    return { oem: { readable: false, error: fs === 'none' ? 'no filesystem' : 'unexpected vfat filesystem', files: [] } };
  }
  const reader = openFsReader({ imagePath, offset: p.firstLba * 512, size: p.size, fs, name: `partition ${p.number} (${p.label})` });
  try {
    const files = await reader.list();
    const report: OemReport = { readable: true, filesystem: fs, files };
    const grub = await reader.readFile('/grub.cfg');
    if (grub) {
      report.grub = parseGrubSets(grub.toString('utf8'));
      if (report.grub.oem_id !== undefined) report.oemId = report.grub.oem_id;
    }
    const rel = await reader.readFile('/oem-release');
    if (rel) report.oemRelease = parseKeyValues(rel.toString('utf8'));
    const withExtensions = gen.name === 'flatcar-sysext' || files.some((f) => f.path.endsWith('.raw') || f.path.startsWith('/sysext/'));
    if (!withExtensions) return { oem: report };
    return { oem: report, sysext: await surveyExtensions(imagePath, partitions, gen, { reader, files }) };
  } catch (err) {
    return { oem: { readable: false, error: describe(err), files: [] } };
  } finally {
    await reader.close();
  }
}

/** Inspects a raw image file (already decompressed). */
export async function inspectRaw(path: string, display = path): Promise<Omit<InspectReport, 'compression'>> {
  const src = await FileSource.open(path);
  try {
    const gpt = await readGpt(src);
    const fss = new Map<number, FsInfo>();
    for (const p of gpt.partitions) fss.set(p.number, await detectFilesystem(new SliceSource(src, p.offset, p.size)));
    const partitions = partitionReports(gpt, fss);
    const versionTxt = await readVersionTxt(display);
    const generation = await detectGeneration(path, partitions, versionTxt);
    const { oem, sysext } = await inspectOem(path, partitions, generation);
    return {
      image: display,
      size: src.size,
      sectorSize: gpt.sectorSize,
      diskGuid: gpt.diskGuid,
      firstUsableLba: gpt.firstUsableLba,
      lastUsableLba: gpt.lastUsableLba,
      warnings: [...gpt.warnings, ...(sysext?.warnings ?? [])],
      partitions,
      generation,
      oem,
      ...(sysext ? { extensions: sysext.extensions, activeOem: sysext.activeOem } : {}),
    };
  } finally {
    await src.close();
  }
}

export async function inspectImage(path: string, opts: { onProgress?: (bytes: number) => void } = {}): Promise<InspectReport> {
  let st;
  try {
    st = await stat(path);
  } catch {
    throw new OemError(`no such image: ${path}`, { code: 'usage' });
  }
  if (!st.isFile()) throw new OemError(`not a regular file: ${path}`, { code: 'usage' });
  const compression = await detectCompression(path);
  if (compression === 'none') return { compression, ...(await inspectRaw(path)) };
  const tmp = await tempDir('inspect');
  try {
    const raw = join(tmp.path, 'image.bin');
    const d = await decompressToSparse(path, raw, opts.onProgress ? { onProgress: opts.onProgress } : {});
    return { compression, decompressor: d.tool, ...(await inspectRaw(raw, path)) };
  } finally {
    await tmp.release();
  }
}
