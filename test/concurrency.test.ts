/** mapInOrder and Slots (src/concurrency.ts): running work concurrently, in order, within a bound. */
import { describe, expect, it } from 'vitest';
import { mapInOrder, Slots } from '../src/concurrency.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('mapInOrder', () => {
  it('returns the results in the items\' order, with at most `limit` running at once', async () => {
    let active = 0;
    let most = 0;
    const delays = [30, 5, 20, 1, 15, 8, 2, 25, 3, 10];
    const r = await mapInOrder(delays, 3, async (ms, i) => {
      active++;
      most = Math.max(most, active);
      await sleep(ms);
      active--;
      return i * 10;
    });
    expect(r).toEqual(delays.map((_, i) => i * 10));
    expect(most).toBe(3);
  });

  it('keeps starting items while the first one runs (no head-of-line blocking without a consumer)', async () => {
    // Item 0 ends only after item 5 has: with items waiting behind item 0, this would never end.
    let lastDone!: () => void;
    const last = new Promise<void>((r) => (lastDone = r));
    const r = await mapInOrder([0, 1, 2, 3, 4, 5], 2, async (i) => {
      if (i === 0) await last;
      if (i === 5) lastDone();
      return i;
    });
    expect(r).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('hands results to the consumer in order, never more than `limit` places ahead of it', async () => {
    const consumed: number[] = [];
    let maxAhead = 0;
    let startedCount = 0;
    const r = await mapInOrder(
      Array.from({ length: 12 }, (_, i) => i),
      2,
      async (i) => {
        startedCount++;
        maxAhead = Math.max(maxAhead, startedCount - 1 - consumed.length);
        await sleep(i % 3 === 0 ? 15 : 2);
        return i;
      },
      async (x, i) => {
        expect(x).toBe(i);
        await sleep(5);
        consumed.push(i);
      },
    );
    expect(r).toEqual([]);
    expect(consumed).toEqual(Array.from({ length: 12 }, (_, i) => i));
    expect(maxAhead).toBeLessThanOrEqual(2);
  });

  it('starts nothing after a failure, waits for what runs, then throws', async () => {
    const started: number[] = [];
    const finished: number[] = [];
    const err = await mapInOrder([0, 1, 2, 3, 4, 5, 6], 2, async (i) => {
      started.push(i);
      await sleep(i === 1 ? 1 : 30);
      finished.push(i);
      if (i === 1) throw new Error('item 1 failed');
      return i;
    }).then(
      () => null,
      (e: unknown) => e,
    );
    expect((err as Error).message).toBe('item 1 failed');
    // Item 1 failed while item 0 ran: nothing started after it, and item 0 was waited for.
    expect(started).toEqual([0, 1]);
    expect(finished.sort()).toEqual([0, 1]);
  });

  it('a consumer\'s error stops the run the same way', async () => {
    const started: number[] = [];
    await expect(
      mapInOrder(
        [0, 1, 2, 3, 4, 5],
        1,
        async (i) => {
          started.push(i);
          return i;
        },
        (x) => {
          if (x === 2) throw new Error('cannot write 2');
        },
      ),
    ).rejects.toThrow('cannot write 2');
    expect(started.length).toBeLessThanOrEqual(4);
  });
});

describe('Slots', () => {
  it('runs at most n at once across every caller, in the order they asked, and frees a slot on failure', async () => {
    const slots = new Slots(2);
    let active = 0;
    let most = 0;
    const order: number[] = [];
    const job = (i: number, ms: number, fail = false) =>
      slots.use(async () => {
        order.push(i);
        active++;
        most = Math.max(most, active);
        await sleep(ms);
        active--;
        if (fail) throw new Error(`job ${i} failed`);
        return i;
      });
    // Two "artifacts" at once, each running three pieces through the same slots.
    const a = mapInOrder([0, 1, 2], 3, (i) => job(i, 10));
    const b = Promise.allSettled([job(10, 5, true), job(11, 1), job(12, 1)]);
    expect(await a).toEqual([0, 1, 2]);
    const settled = await b;
    expect(settled[0]).toMatchObject({ status: 'rejected' });
    expect(settled.slice(1).map((s) => (s as PromiseFulfilledResult<number>).value)).toEqual([11, 12]);
    expect(most).toBe(2);
    expect(order).toEqual([0, 1, 2, 10, 11, 12]);
  });
});
