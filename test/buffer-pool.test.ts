/**
 * BufferPool: a buffer given back is taken again (the same memory), only the pool's own buffers are
 * kept, never one twice, at most `keep` of them; readFile reads a whole file into one.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferPool } from '../src/buffer-pool.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-pool-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('BufferPool', () => {
  it('takes a buffer given back again, and makes new ones while all are out', () => {
    const pool = new BufferPool(1024, 2);
    const a = pool.take(100);
    const b = pool.take(1024);
    expect(a.length).toBe(100);
    expect(b.length).toBe(1024);
    expect(a.buffer).not.toBe(b.buffer);
    pool.give(a);
    const c = pool.take(512);
    expect(c.buffer).toBe(a.buffer);
    expect(c.length).toBe(512);
    // A view of a pooled buffer gives back the buffer.
    pool.give(b.subarray(10, 20));
    expect(pool.take(1).buffer).toBe(b.buffer);
  });

  it('keeps neither buffers it did not make, nor one twice, nor more than `keep`', () => {
    const pool = new BufferPool(1024, 2);
    const foreign = Buffer.allocUnsafeSlow(1024);
    pool.give(foreign);
    expect(pool.take(1024).buffer).not.toBe(foreign.buffer);
    // Larger than the pool's size: new, and never pooled.
    const big = pool.take(2048);
    expect(big.length).toBe(2048);
    pool.give(big);
    expect(pool.take(1024).buffer).not.toBe(big.buffer);

    const a = pool.take(1024);
    pool.give(a);
    pool.give(a);
    const x = pool.take(1024);
    const y = pool.take(1024);
    expect(x.buffer).toBe(a.buffer);
    expect(y.buffer).not.toBe(a.buffer);

    const three = [pool.take(8), pool.take(8), pool.take(8)];
    for (const t of three) pool.give(t);
    const again = [pool.take(8), pool.take(8), pool.take(8)].map((t) => t.buffer);
    expect(again.filter((ab) => three.some((t) => t.buffer === ab))).toHaveLength(2);
  });

  it('readFile: the whole file, in a buffer of the pool when it fits; null when there is none', async () => {
    const pool = new BufferPool(4096, 2);
    const small = join(work, 'small');
    await writeFile(small, 'some bytes');
    const s = await pool.readFile(small);
    expect(s?.toString()).toBe('some bytes');
    pool.give(s!);
    expect(pool.take(1).buffer).toBe(s!.buffer);
    const large = join(work, 'large');
    const bytes = Buffer.alloc(10_000, 7);
    await writeFile(large, bytes);
    expect((await pool.readFile(large))?.equals(bytes)).toBe(true);
    const empty = join(work, 'empty');
    await writeFile(empty, '');
    expect((await pool.readFile(empty))?.length).toBe(0);
    expect(await pool.readFile(join(work, 'missing'))).toBeNull();
  });
});
