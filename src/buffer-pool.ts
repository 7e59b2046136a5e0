/**
 * Large buffers used again instead of allocated anew. An artifact's bytes pass through this process
 * in pieces of a few MiB (read from the disk, hashed, compressed or taken from a piece cache, then
 * written). Allocated anew, each piece's memory is outside V8's heap but counted by it: pieces that
 * wait for their turn outlive a young-generation collection, and every few hundred MiB of them
 * started a full mark-compact of the heap. A warm build of every format of every provider ran 752 of
 * them; their marking threads took about 12% of the CPU of a cold one.
 *
 * A buffer is taken for one use and given back by its one owner once nothing refers to it (written,
 * hashed, compressed: the promise that used it resolved). A buffer that is not given back (an error,
 * a buffer handed on to a stream) is collected as any other. The pool keeps a few buffers; it makes
 * new ones when they are all out.
 */
import { open } from 'node:fs/promises';

export class BufferPool {
  private readonly free: ArrayBuffer[] = [];
  private readonly mine = new WeakSet<ArrayBuffer>();

  constructor(
    /** The size of every pooled buffer: the largest `take` served from the pool. */
    readonly size: number,
    /** At most this many free buffers are kept. */
    private readonly keep: number,
  ) {}

  /** A buffer of `n` bytes, of undefined content: from the pool when n <= size, else new (and never pooled). */
  take(n: number): Buffer {
    if (n > this.size) return Buffer.allocUnsafeSlow(n);
    let ab = this.free.pop();
    if (!ab) {
      ab = Buffer.allocUnsafeSlow(this.size).buffer as ArrayBuffer;
      this.mine.add(ab);
    }
    return Buffer.from(ab, 0, n);
  }

  /**
   * Gives back a buffer from `take` (or a view of one) that nothing refers to any more. Others
   * (buffers this pool did not make, a buffer already given back) are ignored.
   */
  give(b: Buffer | undefined): void {
    const ab = b?.buffer as ArrayBuffer | undefined;
    if (!ab || !this.mine.has(ab) || this.free.length >= this.keep || this.free.includes(ab)) return;
    this.free.push(ab);
  }

  /** The whole content of the file at `path` in a buffer from `take`, or null if it cannot be read. */
  async readFile(path: string): Promise<Buffer | null> {
    const fh = await open(path, 'r').catch(() => null);
    if (!fh) return null;
    try {
      const { size } = await fh.stat();
      const b = this.take(size);
      let got = 0;
      while (got < size) {
        const { bytesRead } = await fh.read(b, got, size - got, got);
        if (!bytesRead) return null;
        got += bytesRead;
      }
      return b;
    } catch {
      return null;
    } finally {
      await fh.close();
    }
  }
}

/**
 * The pool of the pieces of artifacts: disk ranges of at most 4 MiB, and their compressed forms (a
 * piece that does not compress comes out a little larger). Kept: 4 free buffers (at most 16.3 MiB).
 * Measured on the full-size release, every default format of every provider (bin/run.js's malloc
 * settings): warm, full collections 814-849 -> 210-226 and 112-114 -> 84-87 CPU-s at the same peak
 * RSS (165-174 against 177-193 MiB); cold, 1380 -> 699 full collections and 283 -> 261 CPU-s, peak
 * 188 against 193 MiB. Keeping 16 took fewer collections still but the cold peak to 217 MiB.
 */
export const pieceBuffers = new BufferPool(4 * 1024 * 1024 + 64 * 1024, 4);
