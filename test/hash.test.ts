/**
 * hash.ts: a file's digests, by openssl for large files and read in chunks in this process, are the
 * ones node:crypto gives for its bytes, with the file's size; a missing file fails as fs does.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashFile, OFF_THREAD } from '../src/artifacts/hash.js';

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
  it('a file of many chunks: the digests of its bytes, holes included, and its size', async () => {
    // 24 MiB and 3 bytes: data at the start, a hole, data at the end (the 1 MiB chunks do not divide it).
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
    // At least OFF_THREAD bytes: by openssl (one process per digest); and again in this process.
    expect(size).toBeGreaterThanOrEqual(OFF_THREAD);
    for (const inProcess of [false, true]) {
      const r = await hashFile(path, [...ALGS, 'sha256'], { inProcess });
      expect(r.size).toBe(size);
      expect(r.hex).toEqual({ ...expected(whole), sha256: createHash('sha256').update(whole).digest('hex') });
    }
  });

  it('a small file and an empty one', async () => {
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
});
