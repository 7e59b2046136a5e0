/**
 * Hashing, kept off the main thread where the bytes are many: this process's one thread also cuts,
 * copies and writes every artifact of the providers built at once, and was busy about three quarters of
 * a warm build of every format, a third of that hashing.
 *
 * - A file's digests (the DIGESTS' MD5, SHA1 and SHA512 of an artifact, the OVA manifest's SHA256):
 *   `openssl dgst`, one process per digest at once, for files of OFF_THREAD bytes and more; in this
 *   process (one read into one buffer) for smaller files or without openssl.
 * - The piece caches' SHA-256 keys: on this thread. WebCrypto would hash on libuv's thread pool, but
 *   first copies the bytes here, which took about as long as hashing them (SHA-NI: about 1 GB/s):
 *   measured 22-150 against 100 ms of this thread for 100 MB in 2 MiB pieces.
 * - The running digests of an output written here (newHashes): node:crypto, on this thread, where the
 *   state is copied (the shared prefixes, bzip2-reuse.ts).
 */
import { createHash, type Hash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { execa } from 'execa';
import { OemError } from '../shared/errors.js';
import { lastLine, toolEnv, which } from '../tools.js';

const CHUNK = 1024 * 1024;
/** Files at least this large are hashed by openssl (below it, starting the processes costs more). */
export const OFF_THREAD = 16 * 1024 * 1024;

/** The running digests of an artifact for its DIGESTS file. */
export type Hashes = { md5: Hash; sha1: Hash; sha512: Hash };

export function newHashes(): Hashes {
  return { md5: createHash('md5'), sha1: createHash('sha1'), sha512: createHash('sha512') };
}

/** The SHA-256 of `bytes` in hex: the key of the piece caches. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

async function opensslDigest(openssl: string, algorithm: string, path: string): Promise<string> {
  const r = await execa(openssl, ['dgst', `-${algorithm}`, '-r', path], { env: toolEnv(), extendEnv: false, reject: false, encoding: 'utf8' });
  const hex = /^([0-9a-f]+) /.exec(r.stdout)?.[1];
  if (r.exitCode !== 0 || hex?.length !== createHash(algorithm).digest().length * 2) {
    throw new OemError(`openssl failed to hash ${path} (${algorithm}): ${lastLine(r.stderr, `exit code ${r.exitCode}`)}`);
  }
  return hex;
}

/**
 * The hex digests of `path` for each algorithm (node:crypto's names, which are openssl's: md5, sha1,
 * sha256, sha512), and its size. `inProcess`: never by openssl.
 */
export async function hashFile<A extends string>(path: string, algorithms: readonly A[], opts: { inProcess?: boolean } = {}): Promise<{ hex: Record<A, string>; size: number }> {
  const { size } = await stat(path);
  const openssl = !opts.inProcess && size >= OFF_THREAD ? await which('openssl') : null;
  if (openssl) {
    const file = resolve(path);
    const hex = await Promise.all(algorithms.map((a) => opensslDigest(openssl, a, file)));
    if ((await stat(path)).size !== size) throw new OemError(`${path} changed while it was hashed`);
    return { hex: Object.fromEntries(algorithms.map((a, i) => [a, hex[i]!])) as Record<A, string>, size };
  }
  const h = algorithms.map((a) => createHash(a));
  const fh = await open(path, 'r');
  let read = 0;
  try {
    const buf = Buffer.allocUnsafe(CHUNK);
    for (let n; (n = (await fh.read(buf, 0, CHUNK, null)).bytesRead) > 0; read += n) {
      for (const x of h) x.update(buf.subarray(0, n));
    }
  } finally {
    await fh.close();
  }
  return { hex: Object.fromEntries(algorithms.map((a, i) => [a, h[i]!.digest('hex')])) as Record<A, string>, size: read };
}
