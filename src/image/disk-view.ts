/**
 * A built disk as the artifact writers read it, without a whole copy: the decoded base, with the
 * regions a build wrote (OEM, ROOT) taken from its working image, which holds only those (and the
 * partition tables, which are the base's). Where neither file has data (a hole in the base outside
 * the regions, a hole in the working image inside them) the disk reads as zeros and is known to be
 * zeros without reading.
 *
 * `nonZeroClusters` tells which clusters of the disk hold any byte that is not zero (what a qcow2
 * stores); the base's part of that map is made once per process and base, and each build adds its
 * regions.
 */
import { open, stat, type FileHandle } from 'node:fs/promises';
import { OemError } from '../shared/errors.js';
import { dataExtents, isZero } from './sparse.js';

export interface Region {
  offset: number;
  size: number;
}

type Extent = [number, number];

/** Sorted, disjoint extents (null: unknown, all data); `overlaps(a, b)`: whether any of them overlaps [a, b). */
class Extents {
  constructor(private readonly list: Extent[] | null) {}
  overlaps(a: number, b: number): boolean {
    const l = this.list;
    if (l === null) return a < b;
    let lo = 0;
    let hi = l.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (l[mid]![1] <= a) lo = mid + 1;
      else hi = mid;
    }
    return lo < l.length && l[lo]![0] < b && a < b;
  }
}

export class DiskView {
  private constructor(
    readonly size: number,
    readonly basePath: string,
    private readonly base: FileHandle,
    private readonly baseData: Extents,
    readonly regions: Region[],
    private readonly overlay: FileHandle | null,
    private readonly overlayData: Extents,
  ) {}

  /** The base `base`, with `regions` read from `overlay` (a file of the same size or larger). */
  static async open(base: string, overlay?: { path: string; regions: Region[] }, size?: number): Promise<DiskView> {
    const total = size ?? (await stat(base)).size;
    const regions = [...(overlay?.regions ?? [])].filter((r) => r.size > 0).sort((a, b) => a.offset - b.offset);
    const bfh = await open(base, 'r');
    let ofh: FileHandle | null = null;
    try {
      if (overlay && regions.length) ofh = await open(overlay.path, 'r');
      const baseData = new Extents(await dataExtents(base, 0, total));
      const inRegions: Extent[] = [];
      if (ofh && overlay) {
        for (const r of regions) {
          const e = await dataExtents(overlay.path, r.offset, r.offset + r.size);
          if (e === null) inRegions.push([r.offset, r.offset + r.size]);
          else inRegions.push(...e);
        }
      }
      return new DiskView(total, base, bfh, baseData, regions, ofh, new Extents(inRegions.sort((a, b) => a[0] - b[0])));
    } catch (err) {
      await bfh.close();
      await ofh?.close();
      throw err;
    }
  }

  /** The parts of [a, b): each from the base or from the overlay. */
  private parts(a: number, b: number): { from: 'base' | 'overlay'; a: number; b: number }[] {
    const out: { from: 'base' | 'overlay'; a: number; b: number }[] = [];
    let at = a;
    for (const r of this.regions) {
      const [ra, rb] = [r.offset, r.offset + r.size];
      if (rb <= at || ra >= b) continue;
      if (ra > at) out.push({ from: 'base', a: at, b: ra });
      out.push({ from: 'overlay', a: Math.max(at, ra), b: Math.min(b, rb) });
      at = Math.min(b, rb);
    }
    if (at < b) out.push({ from: 'base', a: at, b });
    return out;
  }

  /** Whether [a, b) is known to be zeros (no data in either file there). */
  hole(a: number, b: number): boolean {
    return this.parts(a, b).every((p) => !(p.from === 'base' ? this.baseData : this.overlayData).overlaps(p.a, p.b));
  }

  /** Reads [at, at + buf.length) into `buf` (zeros past the disk's end). */
  async readInto(buf: Buffer, at: number): Promise<Buffer> {
    const end = at + buf.length;
    for (const p of this.parts(at, end)) {
      const fh = p.from === 'base' ? this.base : this.overlay!;
      const data = p.from === 'base' ? this.baseData : this.overlayData;
      const to = buf.subarray(p.a - at, p.b - at);
      if (!data.overlaps(p.a, p.b)) {
        to.fill(0);
        continue;
      }
      let got = 0;
      while (got < to.length) {
        const { bytesRead } = await fh.read(to, got, to.length - got, p.a + got);
        if (!bytesRead) break;
        got += bytesRead;
      }
      if (got < to.length) {
        if (p.a + got < this.size) throw new OemError(`${p.from === 'base' ? this.basePath : 'the working image'} ended before ${p.b} bytes`);
        to.fill(0, got);
      }
    }
    return buf;
  }

  async close(): Promise<void> {
    await Promise.all([this.base.close(), this.overlay?.close()]);
  }
}

const BATCH = 32;

/** Which clusters of [first, last) hold a byte that is not zero: set in `map` (1), cleared otherwise. */
async function scan(view: DiskView, cluster: number, first: number, last: number, map: Uint8Array): Promise<void> {
  const buf = Buffer.allocUnsafe(BATCH * cluster);
  for (let c = first; c < last; ) {
    const n = Math.min(BATCH, last - c);
    const [a, b] = [c * cluster, Math.min(view.size, (c + n) * cluster)];
    if (view.hole(a, b)) {
      map.fill(0, c, c + n);
      c += n;
      continue;
    }
    const got = await view.readInto(buf.subarray(0, b - a), a);
    for (let i = 0; i < n; i++) map[c + i] = isZero(got.subarray(i * cluster, Math.min(got.length, (i + 1) * cluster))) ? 0 : 1;
    c += n;
  }
}

const baseMaps = new Map<string, Promise<Uint8Array>>();

/**
 * One byte per cluster of `cluster` bytes of the disk: 1 where it holds a byte that is not zero. The
 * base's map is made once per process (and base file, size and mtime; not with `shareBase: false`);
 * the regions are read for each view. Past the base's end (a grown disk) only the regions hold data.
 */
export async function nonZeroClusters(view: DiskView, cluster: number, opts: { shareBase?: boolean } = {}): Promise<Uint8Array> {
  const n = Math.ceil(view.size / cluster);
  const map = new Uint8Array(n);
  if (opts.shareBase === false) {
    await scan(view, cluster, 0, n, map);
    return map;
  }
  const st = await stat(view.basePath);
  const key = `${view.basePath}\0${st.size}\0${st.mtimeMs}\0${cluster}`;
  let made = baseMaps.get(key);
  if (!made) {
    made = (async () => {
      const base = await DiskView.open(view.basePath);
      try {
        const m = new Uint8Array(Math.ceil(base.size / cluster));
        await scan(base, cluster, 0, m.length, m);
        return m;
      } finally {
        await base.close();
      }
    })();
    baseMaps.set(key, made);
    made.catch(() => baseMaps.delete(key));
  }
  const base = await made;
  map.set(base.subarray(0, Math.min(n, base.length)));
  for (const r of view.regions) await scan(view, cluster, Math.floor(r.offset / cluster), Math.min(n, Math.ceil((r.offset + r.size) / cluster)), map);
  return map;
}
