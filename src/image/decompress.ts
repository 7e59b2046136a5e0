/**
 * Streams a compressed image into a sparse file: all-zero blocks are skipped, not written. bzip2 goes
 * through `lbzip2` (parallel) when installed, else `bzip2`, else the built-in TypeScript decoder
 * (src/image/bzip2.ts); xz and zstd through their tools; gzip through Node's zlib.
 */
import { execa } from 'execa';
import { createReadStream } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { createGunzip } from 'node:zlib';
import { Readable } from 'node:stream';
import { bunzip2Stream } from './bzip2.js';
import { OemError } from '../shared/errors.js';
import type { Compression } from '../compression.js';
import { requireTool, toolEnv, which } from '../tools.js';
import { SparseWriter } from './sparse.js';


export async function detectCompression(path: string): Promise<Compression> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(6);
    const { bytesRead } = await fh.read(b, 0, 6, 0);
    const h = b.subarray(0, bytesRead);
    if (h.length >= 3 && h.toString('latin1', 0, 3) === 'BZh') return 'bz2';
    if (h.length >= 2 && h[0] === 0x1f && h[1] === 0x8b) return 'gz';
    if (h.length >= 6 && h.equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
    if (h.length >= 4 && h.readUInt32LE(0) === 0xfd2fb528) return 'zst';
    return 'none';
  } finally {
    await fh.close();
  }
}

/** The decompressor that will be used for a format, e.g. "lbzip2" or "bzip2". */
export async function decompressorFor(c: Exclude<Compression, 'none'>): Promise<string> {
  switch (c) {
    case 'bz2': {
      // OEM_BZIP2 forces one: lbzip2, bzip2 or js (the built-in decoder, slower).
      const forced = process.env.OEM_BZIP2;
      if (forced === 'js') return 'js';
      if (forced === 'lbzip2' || forced === 'bzip2') {
        await requireTool(forced, 'decompress a .bz2 image (OEM_BZIP2 asks for it)');
        return forced;
      }
      if (await which('lbzip2')) return 'lbzip2';
      if (await which('bzip2')) return 'bzip2';
      return 'js';
    }
    case 'gz':
      return 'zlib';
    case 'xz':
      await requireTool('xz', 'decompress a .xz image');
      return 'xz';
    case 'zst':
      await requireTool('zstd', 'decompress a .zst image');
      return 'zstd';
  }
}

export interface DecompressResult {
  compression: Compression;
  tool: string;
  /** Bytes of decompressed output. */
  size: number;
  /** Bytes actually written (the rest are holes). */
  written: number;
}

/**
 * Decompresses `input` into a new sparse file `output` (created exclusively; removed on failure).
 */
export async function decompressToSparse(
  input: string,
  output: string,
  opts: { signal?: AbortSignal; onProgress?: (bytesOut: number) => void } = {},
): Promise<DecompressResult> {
  const compression = await detectCompression(input);
  if (compression === 'none') throw new OemError(`${input} is not compressed`);
  const tool = await decompressorFor(compression);
  const fh = await open(output, 'wx');
  let ok = false;
  try {
    const w = new SparseWriter(fh, 0);
    let stream: Readable;
    let child: ReturnType<typeof execa> | undefined;
    if (tool === 'zlib') {
      stream = createReadStream(input).pipe(createGunzip());
    } else if (tool === 'js') {
      stream = Readable.from(bunzip2Stream(createReadStream(input, { highWaterMark: 1024 * 1024 })));
    } else {
      const args = tool === 'xz' ? ['-dc', '-T0', input] : ['-dc', input];
      child = execa(tool, args, { env: toolEnv(), extendEnv: false, stdout: 'pipe', stderr: 'pipe', buffer: { stdout: false, stderr: true }, reject: false, ...(opts.signal ? { cancelSignal: opts.signal } : {}) });
      stream = child.stdout!;
    }
    for await (const chunk of stream) {
      await w.write(chunk as Buffer);
      opts.onProgress?.(w.position);
    }
    await w.end();
    if (child) {
      const r = await child;
      if (r.isCanceled) throw new OemError('interrupted while decompressing', { code: 'interrupted' });
      if (r.exitCode !== 0) {
        const last = String(r.stderr ?? '').trim().split('\n').pop() || `exit code ${r.exitCode}`;
        throw new OemError(`${input} is corrupt or truncated: ${tool} says: ${last}`, { code: 'badImage', hint: 'download the image again' });
      }
    }
    const size = w.position;
    await fh.truncate(size);
    ok = true;
    return { compression, tool, size, written: w.written };
  } catch (err) {
    if (err instanceof OemError) throw err;
    if (tool === 'zlib' || tool === 'js') {
      throw new OemError(`${input} is corrupt or truncated: ${(err as Error).message}`, { code: 'badImage', hint: 'download the image again' });
    }
    throw err;
  } finally {
    await fh.close();
    if (!ok) await rm(output, { force: true });
  }
}
