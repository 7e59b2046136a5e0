/** Hashes of a file's bytes, read once in large chunks. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

/** The hex digests of `path` for each algorithm (node:crypto names: md5, sha1, sha256, sha512), and its size. */
export async function hashFile<A extends string>(path: string, algorithms: readonly A[]): Promise<{ hex: Record<A, string>; size: number }> {
  const h = algorithms.map((a) => [a, createHash(a)] as const);
  let size = 0;
  for await (const c of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) {
    for (const [, x] of h) x.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { hex: Object.fromEntries(h.map(([a, x]) => [a, x.digest('hex')])) as Record<A, string>, size };
}
