/**
 * A file's hashes, in one read of it into one buffer used again and again (no allocation per chunk).
 *
 * Tried and not kept: hashing off the main thread (a file's digests in a worker thread, the piece
 * caches' SHA-256 keys by WebCrypto on libuv's thread pool). Cold builds of every format of every
 * provider showed neither a speed-up nor a memory cost within this machine's noise, so the simpler
 * code stayed (README, Performance).
 */
import { createHash, type Hash } from 'node:crypto';
import { open } from 'node:fs/promises';

const CHUNK = 1024 * 1024;

/** The running digests of an artifact for its DIGESTS file. */
export type Hashes = { md5: Hash; sha1: Hash; sha512: Hash };

export function newHashes(): Hashes {
  return { md5: createHash('md5'), sha1: createHash('sha1'), sha512: createHash('sha512') };
}

/** The SHA-256 of `bytes` in hex: the key of the piece caches. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The hex digests of `path` for each algorithm (node:crypto names: md5, sha1, sha256, sha512), and its size. */
export async function hashFile<A extends string>(path: string, algorithms: readonly A[]): Promise<{ hex: Record<A, string>; size: number }> {
  const h = algorithms.map((a) => createHash(a));
  const fh = await open(path, 'r');
  let size = 0;
  try {
    const buf = Buffer.allocUnsafe(CHUNK);
    for (let n; (n = (await fh.read(buf, 0, CHUNK, null)).bytesRead) > 0; size += n) {
      for (const x of h) x.update(buf.subarray(0, n));
    }
  } finally {
    await fh.close();
  }
  return { hex: Object.fromEntries(algorithms.map((a, i) => [a, h[i]!.digest('hex')])) as Record<A, string>, size };
}
