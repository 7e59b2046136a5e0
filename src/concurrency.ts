/**
 * Concurrency helpers: run a function over items, at most `limit` at once, with the results taken in
 * the items' order; and the slots that bound the pieces compressed at once in the process.
 */
import { availableParallelism } from 'node:os';

/**
 * Runs `fn` over `items`, at most `limit` at once, and resolves to the results in the items' order.
 *
 * With `consume`, each result is handed to it in order, as soon as it and every one before it are
 * done, and is not kept (the array returned is empty): then no item starts more than `limit` places
 * ahead of the one being consumed, so that results waiting for their turn stay few.
 *
 * After a failure no further item starts; those running are waited for, then the error is thrown
 * (the first in the items' order that the consumer reaches, else the first to happen).
 */
const CONSUMED: Promise<unknown> = Promise.resolve(undefined);

export async function mapInOrder<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
  consume?: (result: R, index: number) => Promise<void> | void,
): Promise<R[]> {
  const n = Math.max(1, Math.floor(limit));
  const started: Promise<R>[] = [];
  let active = 0;
  let consumed = 0;
  let failure: { error: unknown } | undefined;
  const pump = (): void => {
    while (!failure && started.length < items.length && active < n && (!consume || started.length <= consumed + n)) {
      const i = started.length;
      const p = fn(items[i]!, i);
      started.push(p);
      active++;
      p.then(
        () => undefined,
        (error: unknown) => {
          failure ??= { error };
        },
      ).finally(() => {
        active--;
        pump();
      });
    }
  };
  const results: R[] = [];
  try {
    pump();
    for (let i = 0; i < items.length; i++) {
      const p = started[i];
      if (p === undefined) throw failure ? failure.error : new Error(`internal: item ${i} was never started`);
      const r = await p;
      if (consume) {
        // Not kept: a consumed result may be large (a compressed piece of an image).
        started[i] = CONSUMED as Promise<R>;
        await consume(r, i);
        consumed = i + 1;
        pump();
      } else {
        results.push(r);
      }
    }
    return results;
  } catch (err) {
    failure ??= { error: err };
    throw err;
  } finally {
    await Promise.allSettled(started);
  }
}

/** A counting semaphore: `use` runs its function when one of `n` slots is free. */
export class Slots {
  private free: number;
  private readonly waiting: (() => void)[] = [];
  constructor(n: number) {
    this.free = Math.max(1, Math.floor(n));
  }

  async use<R>(fn: () => Promise<R>): Promise<R> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    }
  }
}

/**
 * The pieces being read and compressed at once in this process, by whichever artifact or provider:
 * one per core and one more. Builds of several providers at once share them, so that their
 * compressions do not hold twice the pieces in memory for the same CPU. (One per core was measured
 * too: every default format of every provider took 229 s instead of 217, for a peak 14 MB lower.)
 */
export const pieceSlots = new Slots(availableParallelism() + 1);
