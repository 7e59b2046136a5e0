/**
 * GCE's archive, a GNU tar whose one member is the disk as a sparse file, written here from a view of
 * the disk (disk-view.ts) instead of by GNU tar from a whole copy of it.
 *
 * The member is what `tar --format=gnu --sparse` writes for a file whose data is the disk's clusters
 * that hold a byte that is not zero (64 KiB, as the qcow2 and the VMDK store them): an old GNU sparse
 * header (type 'S': up to 4 map entries in the header, 21 in each extension block after it, the real
 * size), then the data of the map's entries one after the other, padded to 512 bytes; then the two
 * zero blocks that end an archive and zeros to GNU tar's record of 10240 bytes. The map ends with an
 * entry of no bytes at the disk's end, as GNU tar ends every map. Numbers that octal cannot hold (8 GiB
 * and more) are in GNU's base-256. For the same data map and owner, mode and mtime, the bytes are GNU
 * tar's own (test/sparse-tar.test.ts compares them), and GNU tar reads it back in the tests.
 */
import { OemError } from '../shared/errors.js';
import { nonZeroClusters, type DiskView } from '../image/disk-view.js';
import { QCOW2_CLUSTER } from './qcow2.js';

const BLOCK = 512;
const RECORD = 20 * BLOCK;
/** The granularity of the data map: the qcow2's clusters, whose map of the base is made once per process for all of them. */
const TAR_CLUSTER = QCOW2_CLUSTER;
const READ = 1024 * 1024;

/** A map entry: offset in the file, and the bytes of data there. */
type SparseEntry = [offset: number, bytes: number];

/** `value` in a numeric field of `len` bytes: octal digits and a NUL, or GNU base-256 when too large. */
function putNumber(block: Buffer, at: number, len: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new OemError(`cannot write ${value} in a tar header`);
  if (value < 8 ** (len - 1)) {
    block.write(value.toString(8).padStart(len - 1, '0'), at, len - 1, 'latin1');
    block[at + len - 1] = 0;
    return;
  }
  block.fill(0, at, at + len);
  block[at] = 0x80;
  let v = BigInt(value);
  for (let i = at + len - 1; i > at && v > 0n; i--, v >>= 8n) block[i] = Number(v & 0xffn);
}

/**
 * The member's header and extension blocks, for `name` (at most 100 bytes) of `realSize` bytes with
 * data at `map`, owned by root (0), mode 0644, modified at `mtime` (seconds).
 */
function sparseHeader(name: string, realSize: number, map: SparseEntry[], mtime: number): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  if (!nameBytes.length || nameBytes.length > 100) throw new OemError(`cannot write a sparse tar member named ${JSON.stringify(name)}`);
  const extensions = Math.max(0, Math.ceil((map.length - 4) / 21));
  const out = Buffer.alloc(BLOCK * (1 + extensions));
  const h = out.subarray(0, BLOCK);
  nameBytes.copy(h, 0);
  putNumber(h, 100, 8, 0o644);
  putNumber(h, 108, 8, 0);
  putNumber(h, 116, 8, 0);
  putNumber(h, 124, 12, map.reduce((s, [, n]) => s + n, 0));
  putNumber(h, 136, 12, mtime);
  h[156] = 'S'.charCodeAt(0);
  h.write('ustar  \0', 257, 'latin1');
  h.write('root', 265, 'latin1');
  h.write('root', 297, 'latin1');
  const entry = (block: Buffer, at: number, [offset, bytes]: SparseEntry) => {
    putNumber(block, at, 12, offset);
    putNumber(block, at + 12, 12, bytes);
  };
  map.slice(0, 4).forEach((e, i) => entry(h, 386 + i * 24, e));
  h[482] = extensions ? 1 : 0;
  putNumber(h, 483, 12, realSize);
  for (let x = 0; x < extensions; x++) {
    const block = out.subarray(BLOCK * (1 + x), BLOCK * (2 + x));
    map.slice(4 + x * 21, 4 + (x + 1) * 21).forEach((e, i) => entry(block, i * 24, e));
    block[504] = x < extensions - 1 ? 1 : 0;
  }
  // The checksum: the header's bytes with the field as spaces; six octal digits, NUL, space.
  h.fill(0x20, 148, 156);
  const sum = h.reduce((s, b) => s + b, 0);
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return out;
}

/** The data map of `view`: its runs of clusters that are not all zeros, then (as GNU tar ends every map) an entry of no bytes at its end. */
async function sparseMap(view: DiskView, opts: { shareBase?: boolean } = {}): Promise<SparseEntry[]> {
  const clusters = await nonZeroClusters(view, TAR_CLUSTER, opts);
  const map: SparseEntry[] = [];
  for (let c = 0; c < clusters.length; c++) {
    if (!clusters[c]) continue;
    const first = c;
    while (c + 1 < clusters.length && clusters[c + 1]) c++;
    const a = first * TAR_CLUSTER;
    map.push([a, Math.min(view.size, (c + 1) * TAR_CLUSTER) - a]);
  }
  map.push([view.size, 0]);
  return map;
}

/**
 * The archive of `view` as one sparse member `name`, in pieces of at most 1 MiB. `reuse`: the
 * disk's data comes in one buffer filled again for each piece (each must be used before the next is
 * asked for); else each piece is a new buffer, for a consumer that keeps them. `onData`: bytes of the
 * disk's data archived so far, of the total.
 */
export async function* sparseTar(
  view: DiskView,
  name: string,
  mtime: number,
  opts: { shareBase?: boolean; reuse?: boolean; onData?: (done: number, total: number) => void } = {},
): AsyncGenerator<Buffer> {
  const map = await sparseMap(view, opts);
  const buf = opts.reuse ? Buffer.allocUnsafe(READ) : null;
  const header = sparseHeader(name, view.size, map, mtime);
  yield header;
  const total = map.reduce((s, [, n]) => s + n, 0);
  let done = 0;
  for (const [offset, bytes] of map) {
    for (let at = offset; at < offset + bytes; ) {
      const n = Math.min(READ, offset + bytes - at);
      yield await view.readInto(buf ? buf.subarray(0, n) : Buffer.allocUnsafe(n), at);
      at += n;
      done += n;
      opts.onData?.(done, total);
    }
  }
  // Padding of the data to a block, the end of the archive, and zeros to the end of the record.
  const pad = (BLOCK - (total % BLOCK)) % BLOCK;
  const ended = header.length + total + pad + 2 * BLOCK;
  yield Buffer.alloc(pad + 2 * BLOCK + ((RECORD - (ended % RECORD)) % RECORD));
}
