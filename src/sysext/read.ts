/**
 * What a system extension image is and what its extension-release says, read without root and
 * without mounting: squashfs through `unsquashfs -cat`, EROFS through `dump.erofs` (the file's
 * extents, read directly; extension-release files are never compressed in practice, and a
 * compressed one is reported as unreadable), and a disk image (a GPT holding the file system in a
 * root or usr partition, with dm-verity and a signature partition in Flatcar's signed extensions)
 * by reading its partition table and then the file system in its data partition.
 *
 * Everything read here comes from an image that is not trusted: names are checked before they reach
 * a command line, and what is read is bounded.
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../cleanup.js';
import { FileSource } from '../image/byte-source.js';
import { readGpt } from '../image/gpt.js';
import { sparseCopyRange } from '../image/sparse.js';
import { describe } from '../shared/errors.js';
import { run } from '../tools.js';
import { parseRelease, type Keys } from './release.js';

export type ExtensionFormat = 'squashfs' | 'erofs' | 'disk-image' | 'unknown';

export interface ExtensionImage {
  format: ExtensionFormat;
  /** Disk images: the file system of the data partition, its partition type's architecture, and whether a verity signature partition is there. */
  disk?: { filesystem: ExtensionFormat; architecture?: string; partition: 'root' | 'usr'; verity: boolean; signed: boolean };
  /** The keys of usr/lib/extension-release.d/extension-release.<name>, when there is one. */
  release?: Keys;
  /** Why the extension-release could not be read (a damaged or unexpected image). */
  error?: string;
}

/** Names systemd-sysext takes from file names: no slashes, no leading dot, nothing a command line could misread. */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,254}$/;
const MAX_RELEASE_BYTES = 64 * 1024;

/** Discoverable Partitions Specification: data partitions of extension disk images, by type. */
const DDI_DATA: Record<string, { partition: 'root' | 'usr'; architecture: string }> = {
  '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709': { partition: 'root', architecture: 'x86-64' },
  'B921B045-1DF0-41C3-AF44-4C6F280D3FAE': { partition: 'root', architecture: 'arm64' },
  '8484680C-9521-48C6-9C11-B0720656F69E': { partition: 'usr', architecture: 'x86-64' },
  'B0E01050-EE5F-4390-949A-9101B17104E9': { partition: 'usr', architecture: 'arm64' },
};
const DDI_VERITY = new Set(['2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5', 'DF3300CE-D69F-4C92-978C-9BFB0F38D820', '77FF5F63-E7B6-4633-ACF4-1565B864C0E6', '6E11A4E7-FBCA-4DED-B9E9-E1A512BB664E']);

async function head(file: string, length: number, at = 0): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const b = Buffer.alloc(length);
    const { bytesRead } = await fh.read(b, 0, length, at);
    return b.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** The kind of file system or image at the start of `file`. */
export async function extensionFormat(file: string, at = 0): Promise<ExtensionFormat> {
  const h = await head(file, 1032, at);
  if (h.length >= 4 && h.toString('latin1', 0, 4) === 'hsqs') return 'squashfs';
  if (h.length >= 1028 && h.readUInt32LE(1024) === 0xe0f5e1e2) return 'erofs';
  if (h.length >= 520 && h.toString('latin1', 512, 520) === 'EFI PART') return 'disk-image';
  return 'unknown';
}

function releasePath(name: string): string {
  return `usr/lib/extension-release.d/extension-release.${name}`;
}

async function squashfsRelease(file: string, name: string): Promise<Keys | undefined> {
  const r = await run('unsquashfs', ['-cat', file, releasePath(name)], 'read a squashfs extension', { allowFail: true, maxBuffer: MAX_RELEASE_BYTES } as never);
  if (r.exitCode !== 0) {
    if (/no matches|not found/i.test(r.stderr)) return undefined;
    throw new Error(`unsquashfs: ${r.stderr.trim().split('\n').pop() ?? `exit code ${r.exitCode}`}`);
  }
  // execa stops reading at maxBuffer: output that long is a file too large to be an extension-release.
  if (Buffer.byteLength(r.stdout) >= MAX_RELEASE_BYTES) throw new Error(`${releasePath(name)} is larger than ${MAX_RELEASE_BYTES} bytes`);
  return parseRelease(r.stdout);
}

async function erofsRelease(file: string, name: string): Promise<Keys | undefined> {
  const r = await run('dump.erofs', ['-e', `--path=/${releasePath(name)}`, file], 'read an EROFS extension', { allowFail: true, maxBuffer: MAX_RELEASE_BYTES } as never);
  // A missing path: exit code 0, nothing on stdout, "read inode failed" on stderr (erofs-utils 1.5).
  if (r.exitCode === 0 && !/^File\s*:/m.test(r.stdout) && /read inode failed/.test(r.stderr)) return undefined;
  if (r.exitCode !== 0 || !/^File\s*:/m.test(r.stdout)) {
    throw new Error(`dump.erofs: ${r.stderr.trim().split('\n').pop() || `exit code ${r.exitCode}`}`);
  }
  if (!/regular file/.test(r.stdout)) throw new Error(`${releasePath(name)} is not a regular file`);
  const size = Number(/^Size:\s*(\d+)/m.exec(r.stdout)?.[1] ?? NaN);
  const layout = Number(/Layout:\s*(\d+)/.exec(r.stdout)?.[1] ?? NaN);
  if (!Number.isSafeInteger(size) || size > MAX_RELEASE_BYTES) throw new Error(`${releasePath(name)} is larger than ${MAX_RELEASE_BYTES} bytes`);
  // 0: flat, 2: flat with an inline tail; the others are compressed.
  if (layout !== 0 && layout !== 2) throw new Error(`${releasePath(name)} is stored compressed (EROFS layout ${layout}); not read`);
  const out = Buffer.alloc(size);
  const fh = await open(file, 'r');
  try {
    const st = await fh.stat();
    for (const m of r.stdout.matchAll(/^\s*\d+:\s*(\d+)\.\.\s*(\d+)\s*\|\s*(\d+)\s*:\s*(\d+)\.\.\s*(\d+)\s*\|\s*(\d+)/gm)) {
      const [logical, , length, physical] = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])];
      if (logical + length > size || physical + length > st.size) throw new Error(`${releasePath(name)} has an extent outside the image`);
      await fh.read(out, logical, length, physical);
    }
  } finally {
    await fh.close();
  }
  return parseRelease(out.toString('utf8'));
}

async function fsRelease(format: ExtensionFormat, file: string, name: string): Promise<Keys | undefined> {
  if (format === 'squashfs') return squashfsRelease(file, name);
  if (format === 'erofs') return erofsRelease(file, name);
  throw new Error('not a squashfs or EROFS file system');
}

/** Reads a disk image extension: its data partition (copied out sparse, as the tools read files) and the partitions beside it. */
async function diskImage(file: string, name: string): Promise<ExtensionImage> {
  const src = await FileSource.open(file);
  let data: { offset: number; size: number; partition: 'root' | 'usr'; architecture: string } | undefined;
  let verity = false;
  let signed = false;
  try {
    const gpt = await readGpt(src);
    for (const p of gpt.partitions) {
      const t = p.typeGuid.toUpperCase();
      const d = DDI_DATA[t];
      if (d && !data) data = { offset: p.offset, size: p.size, ...d };
      else if (DDI_VERITY.has(t)) verity = true;
      else {
        // A verity signature partition holds JSON: {"rootHash": ..., "signature": ...}, padded with NULs.
        const text = (await src.read(p.offset, Math.min(p.size, 64 * 1024))).toString('utf8').replace(/\0+$/, '');
        try {
          const j = JSON.parse(text) as Record<string, unknown>;
          if (typeof j.rootHash === 'string' && typeof j.signature === 'string') signed = true;
        } catch {
          /* not a signature partition */
        }
      }
    }
  } finally {
    await src.close();
  }
  if (!data) return { format: 'disk-image', error: 'the disk image has no root or usr data partition' };
  const tmp = await tempDir('sysext');
  try {
    const part = join(tmp.path, 'data.img');
    await sparseCopyRange(file, data.offset, data.size, part);
    const filesystem = await extensionFormat(part);
    const out: ExtensionImage = { format: 'disk-image', disk: { filesystem, architecture: data.architecture, partition: data.partition, verity, signed } };
    try {
      const release = await fsRelease(filesystem, part, name);
      if (release) out.release = release;
    } catch (err) {
      out.error = describe(err);
    }
    return out;
  } finally {
    await tmp.release();
  }
}

/**
 * What the extension image `file` is and what its extension-release says, read as systemd-sysext
 * would merge it under `name` (the file name without `.raw` in /etc/extensions).
 */
export async function readExtension(file: string, name: string): Promise<ExtensionImage> {
  if (!NAME.test(name)) return { format: 'unknown', error: `${JSON.stringify(name)} is not a name systemd-sysext uses` };
  let format: ExtensionFormat;
  try {
    format = await extensionFormat(file);
  } catch (err) {
    return { format: 'unknown', error: describe(err) };
  }
  if (format === 'unknown') return { format, error: 'not a squashfs, EROFS or disk image' };
  try {
    if (format === 'disk-image') return await diskImage(file, name);
    const release = await fsRelease(format, file, name);
    return release ? { format, release } : { format };
  } catch (err) {
    return { format, error: describe(err) };
  }
}
