/**
 * Hashes, off the main thread. Hashing is a large share of a build's work (an artifact of 300 MiB
 * is read for MD5, SHA-1 and SHA-512; the piece caches key every piece by its SHA-256). Done on the
 * main thread it ran one at a time, with nothing else able to run meanwhile. Here a file's digests
 * are taken by worker threads (one per algorithm, each reading the file itself, as many at once as
 * there are cores) and a buffer's SHA-256 by WebCrypto, which digests on libuv's thread pool.
 */
import { createHash, webcrypto } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { Slots } from '../concurrency.js';

/** Hash workers running at once, in the whole process: one per core (each is an isolate of about 9 MB). */
const hashSlots = new Slots(availableParallelism());

/** Files up to this size are hashed on the main thread (about 0.1 s for the three digests). */
const SMALL = 16 * 1024 * 1024;

/** A worker's whole program (CommonJS, evaluated: nothing to find on disk, under tsx or from dist). */
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { openSync, readSync, closeSync } = require('node:fs');
try {
  const h = createHash(workerData.algorithm);
  // One buffer, read into again and again: the worker allocates nothing per chunk.
  const buf = Buffer.allocUnsafe(1024 * 1024);
  const fd = openSync(workerData.path, 'r');
  let size = 0;
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; size += n) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  parentPort.postMessage({ hex: h.digest('hex'), size });
} catch (e) {
  parentPort.postMessage({ error: String((e && e.message) || e), code: e && e.code, syscall: e && e.syscall, path: e && e.path });
}
`;

interface Reply {
  hex?: string;
  size?: number;
  error?: string;
  code?: string;
  syscall?: string;
  path?: string;
}

function hashInWorker(path: string, algorithm: string): Promise<{ hex: string; size: number }> {
  return hashSlots.use(() => new Promise((resolve, reject) => {
    const w = new Worker(WORKER, { eval: true, workerData: { path, algorithm }, resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2 } });
    let settled = false;
    w.once('message', (m: Reply) => {
      settled = true;
      if (m.error !== undefined) {
        // The error as the main thread's own fs call would have made it (callers check .code).
        reject(Object.assign(new Error(m.error), { code: m.code, syscall: m.syscall, path: m.path }));
      } else resolve({ hex: m.hex!, size: m.size! });
      void w.terminate();
    });
    w.once('error', (err) => {
      if (!settled) reject(err);
      settled = true;
    });
    w.once('exit', (code) => {
      if (!settled) reject(new Error(`the hash worker for ${path} exited with ${code}`));
      settled = true;
    });
  }));
}

/** The hex digests of `path` for each algorithm (node:crypto names: md5, sha1, sha256, sha512), and its size. */
export async function hashFile<A extends string>(path: string, algorithms: readonly A[]): Promise<{ hex: Record<A, string>; size: number }> {
  // A small file is hashed here: starting a worker costs more than that.
  const st = await stat(path);
  if (st.isFile() && st.size <= SMALL) {
    const data = await readFile(path);
    return { hex: Object.fromEntries(algorithms.map((a) => [a, createHash(a).update(data).digest('hex')])) as Record<A, string>, size: data.length };
  }
  const done = await Promise.all(algorithms.map((a) => hashInWorker(path, a)));
  const size = done[0]?.size ?? 0;
  if (done.some((d) => d.size !== size)) throw new Error(`${path} changed while it was hashed`);
  return { hex: Object.fromEntries(algorithms.map((a, i) => [a, done[i]!.hex])) as Record<A, string>, size };
}

/** The SHA-256 of `bytes` in hex, taken on the thread pool. */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  return Buffer.from(await webcrypto.subtle.digest('SHA-256', bytes)).toString('hex');
}
