/**
 * Writes a squashfs 4.0 file system from a directory tree: gzip (zlib) compression, 128 KiB blocks,
 * every file owned by root and stamped with one time, no fragments (a file's tail is its own short
 * block), no xattrs, no NFS export table. What an extension needs, and what Linux and unsquashfs read.
 *
 * Why not mksquashfs: a provider's extension holds the 100 MB agent, and mksquashfs compresses it
 * again for every provider (6 s on 2 cores each). Here the compressed blocks of a large file are kept
 * in a store by the file's SHA-256, so a build of many providers, and every later build with the same
 * agent, compresses it once. A file's blocks do not depend on where they are placed, so the image is
 * the same bytes whether they came from the store or not.
 *
 * Layout (as mksquashfs writes it): superblock, data blocks, inode table, directory table, the id
 * table's one metadata block and its index.
 */
import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, readFile, readlink, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { deflate, deflateSync } from 'node:zlib';
import { acquire, writeFileAtomic } from '../cleanup.js';
import { isZero } from '../image/sparse.js';
import { OemError } from '../shared/errors.js';

const deflateAsync = promisify(deflate);

const MAGIC = 0x73717368;
const BLOCK_SIZE = 128 * 1024;
const BLOCK_LOG = 17;
const METADATA_SIZE = 8192;
const GZIP = 1;
const FLAG_NO_FRAGMENTS = 0x10;
const FLAG_NO_XATTRS = 0x200;
const INVALID = 0xffffffffffffffffn;
const NO_FRAGMENT = 0xffffffff;
const UNCOMPRESSED_BLOCK = 1 << 24;
const UNCOMPRESSED_METADATA = 0x8000;
const TYPE = { dir: 1, file: 2, symlink: 3 } as const;
/** Files this large have their compressed blocks kept in the store. */
const STORE_MIN = 4 * 1024 * 1024;
/** Blocks compressed at once (zlib's thread pool gives each core work). */
const WINDOW = 16;
const STORE_MAGIC = Buffer.from('OEMSQB2\n');

export interface SquashfsOptions {
  /** Seconds since the epoch: the time of every inode and of the file system. */
  mtime: number;
  /** A directory keeping compressed blocks of large files (made if missing); none: nothing kept. */
  store?: string;
  /** For messages. */
  name: string;
  /** Files not in `dir` whose blocks are in the store (see storedSource): their path in the image, mode, SHA-256 and size. */
  stored?: StoredFile[];
}

export interface StoredFile {
  path: string;
  mode: number;
  sha256: string;
  size: number;
}

/** A file whose blocks were to come from the store is no longer there (removed or damaged meanwhile). */
export class StoreMiss extends Error {}

type Node =
  | { kind: 'dir'; name: string; mode: number; children: Node[]; ino: number }
  // path: the host file, or for a file from the store (sha256 set) its path in the image, for messages.
  | { kind: 'file'; name: string; mode: number; path: string; size: number; ino: number; start: number; sizes: number[]; sha256?: string }
  | { kind: 'symlink'; name: string; target: Buffer; ino: number };

/** The order of a directory's entries: bytewise, as mksquashfs sorts them and Linux's lookup expects. */
const byName = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

async function scan(path: string, name: string, what: string): Promise<Node> {
  const st = await lstat(path);
  if (st.isDirectory()) {
    const names = (await readdir(path)).sort(byName);
    const children: Node[] = [];
    for (const n of names) children.push(await scan(join(path, n), n, what));
    return { kind: 'dir', name, mode: st.mode & 0o7777, children, ino: 0 };
  }
  if (st.isFile()) return { kind: 'file', name, mode: st.mode & 0o7777, path, size: st.size, ino: 0, start: 0, sizes: [] };
  if (st.isSymbolicLink()) return { kind: 'symlink', name, target: Buffer.from(await readlink(path)), ino: 0 };
  throw new OemError(`cannot put ${path} into ${what}: only directories, regular files and symbolic links are supported`);
}

/** Puts a file from the store into the tree, with any directories it needs (0755). */
function place(root: Extract<Node, { kind: 'dir' }>, f: StoredFile): void {
  const parts = f.path.split('/').filter((p) => p !== '');
  let d = root;
  for (const part of parts.slice(0, -1)) {
    let next = d.children.find((c) => c.name === part);
    if (!next) {
      next = { kind: 'dir', name: part, mode: 0o755, children: [], ino: 0 };
      add(d, next);
    }
    if (next.kind !== 'dir') throw new OemError(`${f.path}: ${part} is not a directory in the tree`);
    d = next;
  }
  const name = parts[parts.length - 1]!;
  if (d.children.some((c) => c.name === name)) throw new OemError(`${f.path} is already in the tree`);
  add(d, { kind: 'file', name, mode: f.mode, path: f.path, size: f.size, ino: 0, start: 0, sizes: [], sha256: f.sha256 });
}

function add(d: Extract<Node, { kind: 'dir' }>, n: Node): void {
  d.children.push(n);
  d.children.sort((a, b) => byName(a.name, b.name));
}

/** Numbers the inodes as they are written: a directory's entries first, the directory after them. */
function number(n: Node, next: { n: number }): void {
  if (n.kind === 'dir') for (const c of n.children) number(c, next);
  n.ino = ++next.n;
}

async function compressBlock(b: Buffer): Promise<{ size: number; data: Buffer | null }> {
  if (isZero(b)) return { size: 0, data: null }; // sparse: Linux and unsquashfs read zeros
  const z = await deflateAsync(b, { level: 9 });
  return z.length < b.length ? { size: z.length, data: z } : { size: b.length | UNCOMPRESSED_BLOCK, data: b };
}

/** Reads a file in blocks, compressing WINDOW blocks at a time, and hands each on in order. */
async function compressFile(path: string, size: number, each: (size: number, data: Buffer | null) => Promise<void>): Promise<void> {
  const fh = await open(path, 'r');
  try {
    for (let at = 0; at < size; at += WINDOW * BLOCK_SIZE) {
      const blocks: Buffer[] = [];
      for (let o = at; o < Math.min(size, at + WINDOW * BLOCK_SIZE); o += BLOCK_SIZE) blocks.push(await readFull(fh, o, Math.min(BLOCK_SIZE, size - o), path));
      const out = await Promise.all(blocks.map(compressBlock));
      for (let i = 0; i < out.length; i++) await each(out[i]!.size, out[i]!.data);
    }
  } finally {
    await fh.close();
  }
}

async function readFull(fh: FileHandle, at: number, length: number, path: string): Promise<Buffer> {
  const b = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(b, got, length - got, at + got);
    if (bytesRead === 0) throw new OemError(`${path} became shorter while it was being read`, { hint: 'leave the file alone while oem runs' });
    got += bytesRead;
  }
  return b;
}

/** Writes bytes at the end of the image. */
class Sink {
  pos = 96;
  constructor(readonly fh: FileHandle) {}
  async write(b: Buffer): Promise<void> {
    let done = 0;
    while (done < b.length) done += (await this.fh.write(b, done, b.length - done, this.pos + done)).bytesWritten;
    this.pos += b.length;
  }
}

/**
 * A file's SHA-256, remembered for the process by its device, inode, size and modification time: the
 * agent is linked into every provider's tree, and hashing its 100 MB takes a quarter of a second.
 */
async function fileHash(path: string): Promise<string> {
  const st = await stat(path, { bigint: true });
  const id = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
  const known = hashes.get(id);
  if (known !== undefined) return known;
  const sha = await hashFile(path);
  hashes.set(id, sha);
  return sha;
}
const hashes = new Map<string, string>();

async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  const fh = await open(path, 'r');
  try {
    for await (const chunk of fh.createReadStream({ highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

const storedLength = (sizes: number[]) => sizes.reduce((a, s) => a + (s & (UNCOMPRESSED_BLOCK - 1)), 0);

/**
 * A store entry: magic, the block count, each block's size word, the SHA-256 of the data, the data.
 * Returns the sizes, or null when the entry is missing or damaged (it is then made again).
 */
async function fromStore(entry: string, blocks: number, sink: Sink): Promise<number[] | null> {
  const fh = await open(entry, 'r').catch(() => null);
  if (!fh) return null;
  try {
    const st = await fh.stat();
    const headLength = STORE_MAGIC.length + 4 + blocks * 4 + 32;
    if (st.size < headLength) return null;
    const head = await readFull(fh, 0, headLength, entry);
    if (!head.subarray(0, STORE_MAGIC.length).equals(STORE_MAGIC) || head.readUInt32LE(STORE_MAGIC.length) !== blocks) return null;
    const sizes = Array.from({ length: blocks }, (_, i) => head.readUInt32LE(STORE_MAGIC.length + 4 + 4 * i));
    const length = storedLength(sizes);
    if (st.size !== headLength + length) return null;
    // Copied in pieces and checked at the end (the sizes and the data); a damaged entry's bytes are written over.
    const start = sink.pos;
    const h = createHash('sha256').update(head.subarray(STORE_MAGIC.length, headLength - 32));
    for (let at = 0; at < length; at += 1 << 20) {
      const b = await readFull(fh, headLength + at, Math.min(1 << 20, length - at), entry);
      h.update(b);
      await sink.write(b);
    }
    if (h.digest().equals(head.subarray(headLength - 32))) return sizes;
    sink.pos = start;
    return null;
  } finally {
    await fh.close();
  }
}

/** Copies a file's blocks, just written to the image at `start`, into the store. */
async function toStore(dir: string, entry: string, sizes: number[], image: FileHandle, start: number): Promise<void> {
  const head = Buffer.alloc(STORE_MAGIC.length + 4 + sizes.length * 4 + 32);
  STORE_MAGIC.copy(head);
  head.writeUInt32LE(sizes.length, STORE_MAGIC.length);
  sizes.forEach((s, i) => head.writeUInt32LE(s, STORE_MAGIC.length + 4 + 4 * i));
  const length = storedLength(sizes);
  const tmp = `${entry}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const release = acquire(`temporary file ${tmp}`, () => rm(tmp, { force: true }).catch(() => {})); // Ctrl-C leaves no 40 MB behind
  try {
    await mkdir(dir, { recursive: true });
    const fh = await open(tmp, 'wx');
    try {
      const h = createHash('sha256').update(head.subarray(STORE_MAGIC.length, head.length - 32));
      for (let at = 0; at < length; at += 1 << 20) {
        const b = await readFull(image, start + at, Math.min(1 << 20, length - at), entry);
        h.update(b);
        await fh.write(b, 0, b.length, head.length + at);
      }
      h.digest().copy(head, head.length - 32);
      await fh.write(head, 0, head.length, 0);
    } finally {
      await fh.close();
    }
    await rename(tmp, entry);
  } catch {
    // The store only saves time: a full or read-only cache costs the next build a compression.
  } finally {
    await release();
  }
}

/** Writes a file's blocks at the end of the image and records where they are; true: they came from the store. */
async function writeBlocks(n: Extract<Node, { kind: 'file' }>, sink: Sink, store: string | undefined): Promise<boolean> {
  n.start = n.size === 0 ? 0 : sink.pos;
  const blocks = Math.ceil(n.size / BLOCK_SIZE);
  if (n.sha256 !== undefined && store === undefined) throw new StoreMiss(`${n.path} is to come from the store, and there is none`);
  const compress = () =>
    compressFile(n.path, n.size, async (size, data) => {
      n.sizes.push(size);
      if (data) await sink.write(data);
    });
  if (store === undefined || n.size < STORE_MIN) {
    await compress();
    return false;
  }
  const entry = join(store, `${n.sha256 ?? (await fileHash(n.path))}.gz128k`);
  // Providers built at the same time take turns: the first compresses and keeps, the others copy.
  for (let turn = making.get(entry); turn; turn = making.get(entry)) await turn;
  let done!: () => void;
  making.set(entry, new Promise<void>((r) => (done = r)));
  try {
    const sizes = await fromStore(entry, blocks, sink);
    if (sizes) {
      n.sizes = sizes;
      return true;
    }
    if (n.sha256 !== undefined) throw new StoreMiss(`the cached blocks of ${n.path} are gone`);
    await compress();
    await toStore(store, entry, n.sizes, sink.fh, n.start);
    return false;
  } finally {
    making.delete(entry);
    done();
  }
}

/** Store entries being made in this process. */
const making = new Map<string, Promise<void>>();

/**
 * What a store knows of a file it was made from (`source`, e.g. the agent's .xz): the SHA-256 and size
 * of the file whose blocks it keeps, so the file need not be made again (unpacking the agent takes
 * 1.7 s). Undefined when it does not know, or no longer has the blocks.
 */
export async function storedSource(store: string, source: string): Promise<{ sha256: string; size: number } | undefined> {
  const text = await readFile(join(store, `${await fileHash(source)}.source`), 'utf8').catch(() => null);
  const m = text === null ? null : /^([0-9a-f]{64}) (\d+)\n$/.exec(text);
  if (!m) return undefined;
  const entry = await stat(join(store, `${m[1]}.gz128k`)).catch(() => null);
  return entry?.isFile() ? { sha256: m[1]!, size: Number(m[2]) } : undefined;
}

/** Records that `file` was made from `source` (see storedSource), once its blocks are in the store. */
export async function rememberSource(store: string, source: string, file: string): Promise<void> {
  const [from, sha, st] = await Promise.all([fileHash(source), fileHash(file), stat(file)]);
  if (!(await stat(join(store, `${sha}.gz128k`)).catch(() => null))) return;
  // Only saves time, as the store does: a note that cannot be written is no note.
  await writeFileAtomic(join(store, `${from}.source`), `${sha} ${st.size}\n`).catch(() => {});
}

/** A table of 8 KiB metadata blocks, each compressed when that makes it smaller. */
class Metadata {
  private blocks: Buffer[] = [];
  private cur = Buffer.alloc(METADATA_SIZE);
  private used = 0;
  /** Bytes of finished blocks, i.e. where the current block starts in the table. */
  private start = 0;

  ref(): { block: number; offset: number } {
    return { block: this.start, offset: this.used };
  }
  write(b: Buffer): void {
    let at = 0;
    while (at < b.length) {
      const n = Math.min(b.length - at, METADATA_SIZE - this.used);
      b.copy(this.cur, this.used, at, at + n);
      this.used += n;
      at += n;
      if (this.used === METADATA_SIZE) this.flush();
    }
  }
  private flush(): void {
    const raw = this.cur.subarray(0, this.used);
    const z = deflateSync(raw, { level: 9 });
    const head = Buffer.alloc(2);
    const body = z.length < raw.length ? z : Buffer.from(raw);
    head.writeUInt16LE(body === z ? z.length : raw.length | UNCOMPRESSED_METADATA);
    this.blocks.push(head, body);
    this.start += 2 + body.length;
    this.cur = Buffer.alloc(METADATA_SIZE);
    this.used = 0;
  }
  finish(): Buffer {
    if (this.used > 0) this.flush();
    return Buffer.concat(this.blocks);
  }
}

function inodeHeader(type: number, mode: number, mtime: number, ino: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(type, 0);
  b.writeUInt16LE(mode, 2);
  // uid and gid: index 0 of the id table, which holds only root.
  b.writeUInt32LE(mtime, 8);
  b.writeUInt32LE(ino, 12);
  return b;
}

interface Written {
  ref: { block: number; offset: number };
  ino: number;
  type: number;
  name: string;
}

function writeInodes(n: Node, parentIno: number, inodes: Metadata, dirs: Metadata, mtime: number, what: string): Written {
  if (n.kind === 'file') {
    if (n.start > 0xffffffff || n.size > 0xffffffff) throw new OemError(`${n.path} is too large for ${what}`);
    const ref = inodes.ref();
    const b = Buffer.alloc(16 + 4 * n.sizes.length);
    b.writeUInt32LE(n.start, 0);
    b.writeUInt32LE(NO_FRAGMENT, 4);
    b.writeUInt32LE(0, 8);
    b.writeUInt32LE(n.size, 12);
    n.sizes.forEach((s, i) => b.writeUInt32LE(s, 16 + 4 * i));
    inodes.write(Buffer.concat([inodeHeader(TYPE.file, n.mode, mtime, n.ino), b]));
    return { ref, ino: n.ino, type: TYPE.file, name: n.name };
  }
  if (n.kind === 'symlink') {
    const ref = inodes.ref();
    const b = Buffer.alloc(8);
    b.writeUInt32LE(1, 0);
    b.writeUInt32LE(n.target.length, 4);
    inodes.write(Buffer.concat([inodeHeader(TYPE.symlink, 0o777, mtime, n.ino), b, n.target]));
    return { ref, ino: n.ino, type: TYPE.symlink, name: n.name };
  }
  const entries = n.children.map((c) => writeInodes(c, n.ino, inodes, dirs, mtime, what));
  // The listing: runs of entries whose inodes share a metadata block, at most 256 to a header.
  const listing: Buffer[] = [];
  for (let i = 0; i < entries.length; ) {
    const base = entries[i]!;
    let j = i;
    while (j < entries.length && j - i < 256 && entries[j]!.ref.block === base.ref.block && Math.abs(entries[j]!.ino - base.ino) <= 32767) j++;
    const h = Buffer.alloc(12);
    h.writeUInt32LE(j - i - 1, 0);
    h.writeUInt32LE(base.ref.block, 4);
    h.writeUInt32LE(base.ino, 8);
    listing.push(h);
    for (const e of entries.slice(i, j)) {
      const name = Buffer.from(e.name);
      if (name.length > 256) throw new OemError(`a name in ${what} is longer than 256 bytes: ${e.name}`);
      const b = Buffer.alloc(8);
      b.writeUInt16LE(e.ref.offset, 0);
      b.writeInt16LE(e.ino - base.ino, 2);
      b.writeUInt16LE(e.type, 4);
      b.writeUInt16LE(name.length - 1, 6);
      listing.push(b, name);
    }
    i = j;
  }
  const body = Buffer.concat(listing);
  if (body.length + 3 > 0xffff) throw new OemError(`a directory in ${what} has too many entries`);
  const at = dirs.ref();
  dirs.write(body);
  const ref = inodes.ref();
  const b = Buffer.alloc(16);
  b.writeUInt32LE(at.block, 0);
  b.writeUInt32LE(2 + n.children.filter((c) => c.kind === 'dir').length, 4);
  b.writeUInt16LE(body.length + 3, 8);
  b.writeUInt16LE(at.offset, 10);
  b.writeUInt32LE(parentIno, 12);
  inodes.write(Buffer.concat([inodeHeader(TYPE.dir, n.mode, mtime, n.ino), b]));
  return { ref, ino: n.ino, type: TYPE.dir, name: n.name };
}

/** Writes the squashfs image `out` (which must not exist) from the tree in `dir`; says which files' blocks came from the store. */
export async function writeSquashfs(dir: string, out: string, o: SquashfsOptions): Promise<{ stored: string[] }> {
  const what = `the squashfs extension ${o.name}`;
  const root = await scan(dir, '', what);
  if (root.kind !== 'dir') throw new OemError(`${dir} is not a directory`);
  for (const f of o.stored ?? []) place(root, f);
  const count = { n: 0 };
  number(root, count);

  const fh = await open(out, 'wx+');
  try {
    const sink = new Sink(fh);
    const files: Extract<Node, { kind: 'file' }>[] = [];
    const collect = (n: Node): void => {
      if (n.kind === 'dir') n.children.forEach(collect);
      else if (n.kind === 'file') files.push(n);
    };
    collect(root);
    const stored: string[] = [];
    for (const f of files) if (await writeBlocks(f, sink, o.store)) stored.push(f.sha256 !== undefined ? f.path.replace(/^\/+/, '') : relative(dir, f.path));

    const inodes = new Metadata();
    const dirs = new Metadata();
    const rootRef = writeInodes(root, count.n + 1, inodes, dirs, o.mtime, what).ref;
    const inodeTable = sink.pos;
    await sink.write(inodes.finish());
    const dirTable = sink.pos;
    await sink.write(dirs.finish());
    const idBlock = sink.pos;
    const ids = new Metadata();
    ids.write(Buffer.alloc(4)); // one id: root
    await sink.write(ids.finish());
    const idIndex = sink.pos;
    const index = Buffer.alloc(8);
    index.writeBigUInt64LE(BigInt(idBlock));
    await sink.write(index);
    const used = sink.pos;
    const padded = Math.ceil(used / 4096) * 4096;
    if (padded > used) await sink.write(Buffer.alloc(padded - used));
    await fh.truncate(padded); // past a damaged store entry's bytes, if one was written over

    const sb = Buffer.alloc(96);
    sb.writeUInt32LE(MAGIC, 0);
    sb.writeUInt32LE(count.n, 4);
    sb.writeUInt32LE(o.mtime, 8);
    sb.writeUInt32LE(BLOCK_SIZE, 12);
    sb.writeUInt32LE(0, 16); // fragments
    sb.writeUInt16LE(GZIP, 20);
    sb.writeUInt16LE(BLOCK_LOG, 22);
    sb.writeUInt16LE(FLAG_NO_FRAGMENTS | FLAG_NO_XATTRS, 24);
    sb.writeUInt16LE(1, 26); // ids
    sb.writeUInt16LE(4, 28);
    sb.writeUInt16LE(0, 30);
    sb.writeBigUInt64LE((BigInt(rootRef.block) << 16n) | BigInt(rootRef.offset), 32);
    sb.writeBigUInt64LE(BigInt(used), 40);
    sb.writeBigUInt64LE(BigInt(idIndex), 48);
    sb.writeBigUInt64LE(INVALID, 56); // xattr table
    sb.writeBigUInt64LE(BigInt(inodeTable), 64);
    sb.writeBigUInt64LE(BigInt(dirTable), 72);
    sb.writeBigUInt64LE(BigInt(idBlock), 80); // fragment table: none, placed where it would start
    sb.writeBigUInt64LE(INVALID, 88); // export table
    await fh.write(sb, 0, 96, 0);
    await fh.close();
    return { stored };
  } catch (e) {
    await fh.close().catch(() => {});
    await rm(out, { force: true });
    throw e;
  }
}
