/**
 * A built image as .bz2 without recompressing what the build did not change.
 *
 * Only the partitions a build writes (OEM, ROOT) can differ from the base. For every block of the
 * release's .bz2 whose decoded range is unchanged (compared with the cached base image, over the data
 * extents of both files), the release's own compressed bits are copied (src/image/bzip2-blocks.ts
 * makes runs of them standalone streams); only the ranges of changed blocks go through `lbzip2 -9`
 * (or `bzip2 -9`). The output is a concatenation of standard bzip2 streams, which stock bzip2, lbzip2
 * and pbzip2 decode to exactly the built image.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { OemError } from '../errors.js';
import { run, which } from '../tools.js';
import { refineChunk, type BaseIndex } from '../image/base-cache.js';
import { runStream } from '../image/bzip2-blocks.js';
import { bzip2Tool } from './compress.js';

export interface Region {
  offset: number;
  size: number;
}

export interface ReuseResult {
  tool: string;
  blocks: number;
  reusedBlocks: number;
  /** Bytes of the image that were compressed anew. */
  recompressed: number;
  size: number;
  md5: string;
  sha1: string;
  sha512: string;
}

type Extent = [number, number];

/** The data extents of a file within [start, end) (lseek SEEK_DATA/SEEK_HOLE through xfs_io), or null. */
export async function dataExtents(path: string, start: number, end: number): Promise<Extent[] | null> {
  if (!(await which('xfs_io'))) return null;
  const r = await run('xfs_io', ['-r', '-c', `seek -a -r ${start}`, path], `map the data of ${path}`, { allowFail: true });
  if (r.exitCode !== 0) return null;
  const out: Extent[] = [];
  let dataAt = -1;
  for (const line of r.stdout.split('\n')) {
    const m = /^(DATA|HOLE)\s+(\d+|EOF)/.exec(line.trim());
    if (!m) continue;
    const at = m[2] === 'EOF' ? Infinity : Number(m[2]);
    if (m[1] === 'DATA') dataAt = at;
    else if (dataAt >= 0) {
      out.push([dataAt, at]);
      dataAt = -1;
    }
  }
  if (dataAt >= 0) out.push([dataAt, Infinity]);
  return out.map(([a, b]): Extent => [Math.max(a, start), Math.min(b, end)]).filter(([a, b]) => a < b);
}

function unionExtents(a: Extent[], b: Extent[]): Extent[] {
  const all = [...a, ...b].sort((x, y) => x[0] - y[0]);
  const out: Extent[] = [];
  for (const e of all) {
    const last = out[out.length - 1];
    if (last && e[0] <= last[1]) last[1] = Math.max(last[1], e[1]);
    else out.push([e[0], e[1]]);
  }
  return out;
}

const CMP = 1024 * 1024;

/** Which parts of [start, end) differ between two files: compared only where either has data. */
class Differ {
  private readonly bufA = Buffer.alloc(CMP);
  private readonly bufB = Buffer.alloc(CMP);
  private constructor(
    private readonly a: FileHandle,
    private readonly b: FileHandle,
    private readonly extents: Extent[] | null,
  ) {}

  static async open(basePath: string, newPath: string, regions: Region[]): Promise<Differ> {
    let extents: Extent[] | null = [];
    for (const r of regions) {
      const ea = await dataExtents(basePath, r.offset, r.offset + r.size);
      const eb = await dataExtents(newPath, r.offset, r.offset + r.size);
      if (!ea || !eb) {
        extents = null;
        break;
      }
      extents.push(...unionExtents(ea, eb));
    }
    return new Differ(await open(basePath, 'r'), await open(newPath, 'r'), extents);
  }

  async differs(start: number, end: number): Promise<boolean> {
    const ranges: Extent[] = this.extents
      ? this.extents.map(([a, b]): Extent => [Math.max(a, start), Math.min(b, end)]).filter(([a, b]) => a < b)
      : [[start, end]];
    for (const [from, to] of ranges) {
      for (let at = from; at < to; at += CMP) {
        const n = Math.min(CMP, to - at);
        const [ra, rb] = await Promise.all([this.a.read(this.bufA, 0, n, at), this.b.read(this.bufB, 0, n, at)]);
        if (ra.bytesRead !== n || rb.bytesRead !== n) return true;
        if (!this.bufA.subarray(0, n).equals(this.bufB.subarray(0, n))) return true;
      }
    }
    return false;
  }

  async close(): Promise<void> {
    await Promise.all([this.a.close(), this.b.close()]);
  }
}

type Unit = { kind: 'reuse'; first: number; last: number } | { kind: 'new'; start: number; end: number };

/** Which blocks to copy and which ranges to compress anew. */
async function planUnits(index: BaseIndex, d: Differ, regions: Region[]): Promise<Unit[]> {
  const overlaps = (u: number, len: number) => regions.some((r) => u < r.offset + r.size && r.offset < u + len);
  const dirtyIn = (u: number, len: number) => {
    const parts = regions.map((r): Extent => [Math.max(u, r.offset), Math.min(u + len, r.offset + r.size)]).filter(([a, b]) => a < b);
    return (async () => {
      for (const [a, b] of parts) if (await d.differs(a, b)) return true;
      return false;
    })();
  };
  const dirty = new Array<boolean>(index.blocks.length).fill(false);
  for (const c of index.chunks) {
    if (!overlaps(c.u, c.len) || !(await dirtyIn(c.u, c.len))) continue;
    await refineChunk(index, c);
    for (let i = c.first; i <= c.last; i++) {
      const b = index.blocks[i]!;
      dirty[i] = overlaps(b.u!, b.len!) && (await dirtyIn(b.u!, b.len!));
    }
  }
  const units: Unit[] = [];
  for (let i = 0; i < index.blocks.length; i++) {
    const b = index.blocks[i]!;
    const last = units[units.length - 1];
    if (dirty[i]) {
      // Dirty blocks were refined: they have their own range.
      if (last?.kind === 'new' && last.end === b.u!) last.end = b.u! + b.len!;
      else units.push({ kind: 'new', start: b.u!, end: b.u! + b.len! });
    } else if (last?.kind === 'reuse' && last.last === i - 1 && index.blocks[i - 1]!.end === b.bit) {
      last.last = i;
    } else {
      units.push({ kind: 'reuse', first: i, last: i });
    }
  }
  return units;
}

/**
 * Writes `raw` (the base with `regions` rewritten) to a new file `out` as bzip2, reusing the base's
 * compressed blocks. Hashes the output as it goes. `out` is removed on failure.
 */
export async function compressReusing(index: BaseIndex, baseRaw: string, raw: string, out: string, regions: Region[], signal?: AbortSignal): Promise<ReuseResult> {
  const tool = await bzip2Tool();
  const d = await Differ.open(baseRaw, raw, regions);
  let units: Unit[];
  try {
    units = await planUnits(index, d, regions);
  } finally {
    await d.close();
  }
  const h = { md5: createHash('md5'), sha1: createHash('sha1'), sha512: createHash('sha512') };
  const fh = await open(out, 'wx');
  const src = await open(index.bz2, 'r');
  let size = 0;
  let ok = false;
  const sink = async (buf: Buffer) => {
    for (const x of Object.values(h)) x.update(buf);
    let done = 0;
    while (done < buf.length) done += (await fh.write(buf, done, buf.length - done)).bytesWritten;
    size += buf.length;
  };
  let recompressed = 0;
  let reusedBlocks = 0;
  try {
    for (const unit of units) {
      if (signal?.aborted) throw new OemError('interrupted while compressing', { code: 'interrupted' });
      if (unit.kind === 'reuse') {
        const blocks = index.blocks.slice(unit.first, unit.last + 1);
        reusedBlocks += blocks.length;
        for await (const piece of runStream(src, blocks[0]!.bit, blocks[blocks.length - 1]!.end, blocks.map((b) => b.crc))) await sink(piece);
      } else {
        recompressed += unit.end - unit.start;
        await compressRange(tool, raw, unit.start, unit.end, sink, signal);
      }
    }
    ok = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new OemError(`no space left on the device while writing ${out}`, { code: 'noSpace', hint: 'free some space or write the output elsewhere' });
    throw err;
  } finally {
    await src.close();
    await fh.close();
    if (!ok) await rm(out, { force: true });
  }
  return { tool, blocks: index.blocks.length, reusedBlocks, recompressed, size, md5: h.md5.digest('hex'), sha1: h.sha1.digest('hex'), sha512: h.sha512.digest('hex') };
}

/** The environment without variables that add options to bzip2 and lbzip2. */
function toolEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LC_ALL: 'C' };
  for (const k of ['BZIP', 'BZIP2', 'LBZIP2']) delete env[k];
  return env;
}

async function compressRange(tool: string, raw: string, start: number, end: number, sink: (b: Buffer) => Promise<void>, signal?: AbortSignal): Promise<void> {
  const child = spawn(tool, ['-9', '-c'], { stdio: ['pipe', 'pipe', 'pipe'], env: toolEnv(), ...(signal ? { signal } : {}) });
  const err: Buffer[] = [];
  child.stderr.on('data', (c: Buffer) => err.push(c));
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  exited.catch(() => {});
  const feed = pipeline(createReadStream(raw, { start, end: end - 1, highWaterMark: 1024 * 1024 }), child.stdin);
  feed.catch(() => {});
  for await (const c of child.stdout) await sink(c as Buffer);
  await feed;
  const code = await exited;
  if (code !== 0) throw new OemError(`${tool} failed to compress bytes ${start}-${end} of ${raw}: ${Buffer.concat(err).toString().trim().split('\n').pop() || `exit code ${code}`}`);
}
