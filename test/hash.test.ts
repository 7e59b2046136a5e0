/**
 * hash.ts: a file's digests taken by worker threads (large files) or here (small ones) are the ones
 * node:crypto gives for its bytes, with the file's size; a missing file fails as fs does; a buffer's
 * SHA-256 from the thread pool is node:crypto's.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashFile, sha256Hex } from '../src/artifacts/hash.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-hash-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const ALGS = ['md5', 'sha1', 'sha512'] as const;
const expected = (data: Buffer) => Object.fromEntries(ALGS.map((a) => [a, createHash(a).update(data).digest('hex')]));

describe('hashFile', () => {
  it('a file over 16 MiB (hashed by worker threads): the digests of its bytes, holes included, and its size', async () => {
    // 24 MiB and 3 bytes: data at the start, a hole, data at the end (chunks do not divide it).
    const path = join(work, 'large');
    const size = 24 * 1024 * 1024 + 3;
    const head = Buffer.from(Array.from({ length: 1024 * 1024 }, (_, i) => (i * 7919) & 0xff));
    const tail = Buffer.from('the end of a large file');
    const fh = await open(path, 'wx');
    await fh.write(head, 0, head.length, 0);
    await fh.write(tail, 0, tail.length, size - tail.length);
    await fh.close();
    const whole = Buffer.alloc(size);
    head.copy(whole, 0);
    tail.copy(whole, size - tail.length);
    const r = await hashFile(path, ALGS);
    expect(r.size).toBe(size);
    expect(r.hex).toEqual(expected(whole));
  });

  it('a small file (hashed here) and an empty one', async () => {
    const small = join(work, 'small');
    await writeFile(small, 'some bytes\n');
    expect(await hashFile(small, ALGS)).toEqual({ hex: expected(Buffer.from('some bytes\n')), size: 11 });
    const empty = join(work, 'empty');
    await writeFile(empty, '');
    expect(await hashFile(empty, ['sha256'])).toEqual({ hex: { sha256: createHash('sha256').digest('hex') }, size: 0 });
  });

  it('a missing file fails with ENOENT, as fs does', async () => {
    await expect(hashFile(join(work, 'missing'), ALGS)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('an unknown algorithm fails (in the worker), and the error reaches the caller', async () => {
    const path = join(work, 'large-2');
    const fh = await open(path, 'wx');
    await fh.truncate(17 * 1024 * 1024);
    await fh.close();
    await expect(hashFile(path, ['no-such-hash'])).rejects.toThrow(/digest|unsupported|invalid/i);
  });
});

describe('sha256Hex', () => {
  it("is node:crypto's SHA-256 of the bytes, for a view into a larger buffer too", async () => {
    const big = Buffer.from(Array.from({ length: 3 * 1024 * 1024 }, (_, i) => (i * 31) & 0xff));
    const view = big.subarray(1000, 2 * 1024 * 1024 + 17);
    expect(await sha256Hex(view)).toBe(createHash('sha256').update(view).digest('hex'));
    expect(await sha256Hex(Buffer.alloc(0))).toBe(createHash('sha256').digest('hex'));
  });
});
