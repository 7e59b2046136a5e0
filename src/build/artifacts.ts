/**
 * The third stage, per provider: its artifacts, one per format, from the written working image.
 * The raw `.bz2` is made from the release's own bzip2 blocks for everything the build did not change
 * (src/artifacts/bzip2-reuse.ts); other formats are converted (src/artifacts/formats.ts) and
 * compressed where that applies (src/artifacts/compress.ts). Each is hashed and described as it is
 * made (publish.ts).
 */
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { compressReusing, type Region, type Segment, type SharedPrefixes } from '../artifacts/bzip2-reuse.js';
import { qcow2Layout } from '../artifacts/layout.js';
import { vhdxSegments } from '../artifacts/vhdx.js';
import { OemError } from '../shared/errors.js';
import { compressPieced, type PiecedKind } from '../artifacts/pieced.js';
import { QCOW2_CLUSTER, qcow2Fits, qcow2Segments } from '../artifacts/qcow2.js';
import { parallelsFits } from '../artifacts/parallels.js';
import { DiskView, nonZeroClusters } from '../image/disk-view.js';
import { growDisk, showSize, type DiskGrowth } from '../artifacts/disk-size.js';
import { COMPRESSION_SUFFIX, type Compression } from '../compression.js';
import { artifactName, COMPRESSIBLE, convert, fixedVhdTrailer, FROM_VIEW, vhdxIds, type Format } from '../artifacts/formats.js';
import type { SigningKey } from '../artifacts/sign.js';
import type { BaseIndex } from '../image/base-cache.js';
import type { Distro } from '../release/verify.js';
import type { WorkingImage } from './assemble.js';
import { hashes, type Hashes } from './digests.js';
import { describeArtifact, type ArtifactInfo } from './publish.js';

export interface ArtifactJob {
  providerId: string;
  distro: Distro;
  formats: Format[];
  /** How the virtual disk formats' disk grows (the raw image keeps the release's size); undefined: not at all. */
  grow?: DiskGrowth;
  compression: Compression;
  /** The decoded base and its block map, for the raw .bz2 from the release's blocks (null: compress whole). */
  base: { raw: string; index: BaseIndex | null };
  /** Output prefixes shared by the run's outputs; none: each output is written whole. */
  prefixes?: SharedPrefixes;
  /** Where compressed pieces are kept by their content (the base's cache entry, else the run's work directory). */
  pieceCache: string;
  signer: SigningKey | null;
  /** The time written into archives and descriptors (SOURCE_DATE_EPOCH or now). */
  mtime: Date;
  /** Where artifacts are written (the provider's temporary output) and where intermediates go. */
  outDir: string;
  work: string;
  log: (line: string) => void;
  step: (title: string) => void;
  progress: (done: number, total: number) => void;
}

/** Whether the raw .bz2 is made from the release's own blocks (a bzip2 base and bz2 output). */
export function reusesBlocks(job: Pick<ArtifactJob, 'base' | 'compression'>): boolean {
  return job.base.index !== null && job.compression === 'bz2';
}

/** The largest the disk can be once grown as `grow` says. */
function grownSize(size: number, grow: DiskGrowth | undefined): number {
  if (!grow) return size;
  return Math.max(size, grow.size ?? 0, size + (grow.rootSectors ?? 0) * 512 + MiB);
}

/**
 * Whether `format` is made from the base and the partitions a build wrote (and, grown, its partition
 * tables), without a whole copy of the disk: the raw and fixed VHD .bz2 from the release's blocks, the
 * qcow2 (qcow2.ts), the VHDX (vhdx.ts), the VMDK and what holds one (vmdk.ts), GCE's archive (sparse-tar.ts) and the
 * Parallels disk (parallels.ts).
 */
function fromParts(job: Pick<ArtifactJob, 'base' | 'compression' | 'grow'>, format: Format, size: number): boolean {
  if (format === 'raw') return reusesBlocks(job);
  if (format === 'vhd') return reusesBlocks(job) && job.grow === undefined;
  // qemu-img writes the larger qcow2s, from a file.
  if (format === 'qcow2' || format === 'vagrant-libvirt') return qcow2Fits(grownSize(size, job.grow));
  if (format === 'parallels') return parallelsFits(grownSize(size, job.grow));
  return FROM_VIEW.has(format);
}

/** Whether a build of these formats needs the whole disk in its working image. */
export function needsWholeDisk(job: Pick<ArtifactJob, 'base' | 'compression' | 'grow' | 'formats'>, size: number): boolean {
  return !job.formats.every((f) => fromParts(job, f, size));
}

const MiB = 1024 * 1024;
const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

/** Compressed in pieces kept in the piece cache: only what differs from earlier builds is compressed again. */
async function pieced(input: string, out: string, job: ArtifactJob): Promise<{ tool: string; h: Hashes }> {
  const r = await compressPieced(input, out, job.compression as PiecedKind, { cacheDir: job.pieceCache, onProgress: job.progress });
  return { tool: `${r.tool}: ${mib(r.compressed)} compressed now, ${r.cached} of ${r.pieces} pieces from the piece cache`, h: r };
}

/**
 * The layout (layout.ts) of a qcow2 that qemu-img wrote, for bzip2 from the release's blocks; null for
 * other formats; why not, when the file is not as qemu-img writes it (then it is compressed in pieces).
 */
async function fileLayout(format: Format, path: string, size: number): Promise<Segment[] | string | null> {
  if (format !== 'qcow2') return null;
  try {
    return await qcow2Layout(path, size);
  } catch (err) {
    if (err instanceof OemError) return err.message;
    throw err;
  }
}

export async function makeArtifacts(img: WorkingImage, job: ArtifactJob): Promise<ArtifactInfo[]> {
  const made = new Map<Format, ArtifactInfo>();
  const p = job.providerId;
  const baseSize = (await stat(job.base.raw)).size;
  // The raw image first: the other formats may get a grown disk (job.diskSize), which the raw image does not.
  const order = [...job.formats.filter((f) => f === 'raw'), ...job.formats.filter((f) => f !== 'raw')];
  let grown = false;
  // The disk the other formats hold: the base, with `regions` from the working image.
  let size = baseSize;
  let regions: Region[] = img.written;
  let view: DiskView | undefined;
  const disk = async () => (view ??= await DiskView.open(job.base.raw, { path: img.path, regions }, size));
  try {
    for (const format of order) {
      if (format !== 'raw' && job.grow !== undefined && !grown) {
        job.step(`${p}: growing the disk${job.grow.size !== undefined ? ` to ${showSize(job.grow.size)}` : ''}${job.grow.rootSectors !== undefined ? `, ROOT to ${showSize(job.grow.rootSectors * 512)}` : ''}`);
        // Growing changes the partition tables and the disk's end only (sgdisk), in the working image.
        await growDisk(img.path, job.grow);
        grown = true;
        size = (await stat(img.path)).size;
        const [head, tail] = [img.tables[0]![1], img.tables[img.tables.length - 1]![0]];
        regions = [...img.written, { offset: 0, size: head }, { offset: tail, size: size - tail }];
        await view?.close();
        view = undefined;
      }
      const plain = artifactName(job.distro, p, format);
      const compress = COMPRESSIBLE[format] && job.compression !== 'none';
      const name = compress ? plain + COMPRESSION_SUFFIX[job.compression] : plain;
      const out = join(job.outDir, name);
      job.step(`${p}: ${name}`);
      let tool = '';
      let h: Hashes | undefined;
      // A fixed VHD is the disk's bytes and a footer: its .bz2 is the raw image's and one more stream.
      const vhdReuse = format === 'vhd' && !grown;
      if ((format === 'raw' || vhdReuse) && reusesBlocks(job) && job.base.index) {
        // The release's own compressed blocks for everything this build did not change.
        const trailer = vhdReuse ? await fixedVhdTrailer(baseSize, { name: plain.replace(/\.[^.]+$/, ''), mtime: job.mtime, work: job.work }) : undefined;
        const r = await compressReusing(job.base.index, job.base.raw, img.path, out, img.written, {
          pieceCache: job.pieceCache,
          ...(job.prefixes ? { shared: job.prefixes } : {}),
          ...(trailer ? { trailer } : {}),
        });
        tool = `${r.tool} for ${mib(r.recompressed)} (of ${mib(r.changed)} changed; the rest from the piece cache), the release's bzip2 blocks for the rest (${r.reusedBlocks} of ${r.blocks})`;
        h = r;
      } else if ((format === 'qcow2' || format === 'vhdx') && compress && reusesBlocks(job) && job.base.index && fromParts(job, format, baseSize)) {
        // Written here (qcow2.ts, vhdx.ts) as segments, never as a file: its .bz2 from the release's blocks like the raw image's.
        const v = await disk();
        const stored = await nonZeroClusters(v, QCOW2_CLUSTER);
        // The qcow2 up to the first region is the same for every build (grown: the tables differ from the start).
        const layout =
          format === 'qcow2'
            ? qcow2Segments(size, stored, Math.min(size, ...regions.map((r) => r.offset)))
            : vhdxSegments(size, stored, QCOW2_CLUSTER, vhdxIds(plain.replace(/\.[^.]+$/, ''), job.mtime, size));
        const r = await compressReusing(job.base.index, job.base.raw, img.path, out, regions, { pieceCache: job.pieceCache, ...(job.prefixes ? { shared: job.prefixes } : {}), layout });
        tool = `${r.tool} for ${mib(r.recompressed)} (of ${mib(r.changed)} of the disk not in the release's blocks, and the ${format}'s tables; the rest from the piece cache), the release's bzip2 blocks for the rest (${r.reusedBlocks} of ${r.blocks})`;
        h = r;
      } else if (fromParts(job, format, baseSize) && FROM_VIEW.has(format)) {
        // The qcow2, the VHDX, the VMDK and what holds one, GCE's archive, the Parallels disk: from the base and what the build wrote.
        const converted = compress ? join(job.work, `${p}.${format}`) : out;
        try {
          await convert(await disk(), format, converted, { name: plain.replace(/\.[^.]+$/, ''), mtime: job.mtime, onProgress: job.progress, pieceCache: job.pieceCache });
          if (compress) ({ tool, h } = await pieced(converted, out, job));
        } finally {
          if (compress) await rm(converted, { force: true });
        }
      } else if (format === 'raw' && compress) {
        await img.whole();
        ({ tool, h } = await pieced(img.path, out, job));
      } else {
        await img.whole();
        const converted = compress ? join(job.work, `${p}.${format}`) : out;
        await convert(img.path, format, converted, { name: plain.replace(/\.[^.]+$/, ''), mtime: job.mtime, onProgress: job.progress, pieceCache: job.pieceCache });
        if (compress) {
          try {
            const layout = reusesBlocks(job) && job.base.index ? await fileLayout(format, converted, size) : null;
            if (typeof layout === 'string') job.log(`${p}: ${name}: compressed as it is: ${layout}`);
            if (Array.isArray(layout) && job.base.index) {
              // The disk's bytes in the file are the image's: the release's bzip2 blocks, as for raw
              // (grown: its partition tables and what follows the release's end differ too).
              const r = await compressReusing(job.base.index, job.base.raw, img.path, out, regions, { pieceCache: job.pieceCache, ...(job.prefixes ? { shared: job.prefixes } : {}), layout });
              tool = `${r.tool} for ${mib(r.recompressed)} (of ${mib(r.changed)} of the disk not in the release's blocks, and the ${format}'s tables; the rest from the piece cache), the release's bzip2 blocks for the rest (${r.reusedBlocks} of ${r.blocks})`;
              h = r;
            } else {
              ({ tool, h } = await pieced(converted, out, job));
            }
          } finally {
            await rm(converted, { force: true });
          }
        }
      }
      h ??= await hashes(out);
      await describeArtifact(job.outDir, name, h, job.signer);
      job.log(`${p}: ${name} (${h.size} bytes${tool ? `, compressed with ${tool}` : ''}${job.signer ? ', signed' : ''})`);
      made.set(format, { name, path: name, format, compression: compress ? job.compression : 'none', size: h.size, sha512: h.sha512 });
    }
  } finally {
    await view?.close();
  }
  return job.formats.map((f) => made.get(f)!);
}
