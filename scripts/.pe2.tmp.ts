import { createHash, randomBytes } from 'node:crypto';
const PIECE = 2 << 20, MIN_PIECE = PIECE / 2, MAX_PIECE = PIECE * 2, WINDOW = 32;
const CUT_SHIFT = 32 - Math.log2(PIECE - MIN_PIECE);
const GEAR = (() => { const t = new Int32Array(256); for (let i = 0; i < 256; i++) t[i] = createHash('sha256').update(`oem piece gear ${i}`).digest().readInt32LE(0); t[0] = 0x9e3779b9 | 0; return t; })();
function a(data: Uint8Array, limit: number): number {
  let h = 0;
  for (let i = MIN_PIECE - WINDOW; i < limit; i++) { h = ((h << 1) + GEAR[data[i]!]!) | 0; if (i >= MIN_PIECE - 1 && h >>> CUT_SHIFT === 0) return i + 1; }
  return -1;
}
function b(data: Uint8Array, limit: number): number {
  const g = GEAR;
  let h = 0;
  let i = MIN_PIECE - WINDOW;
  for (; i < MIN_PIECE - 1; i++) h = ((h << 1) + g[data[i]!]!) | 0;
  for (; i < limit; i++) { h = ((h << 1) + g[data[i]!]!) | 0; if ((h & 0xfffff000) === 0) return i + 1; }
  return -1;
}
function c(data: Uint8Array, limit: number): number {
  const g = GEAR;
  let h = 0;
  let i = MIN_PIECE - WINDOW;
  for (; i < MIN_PIECE - 1; i++) h = ((h << 1) + g[data[i]!]!) | 0;
  // unrolled by 4
  const end4 = limit - 3;
  for (; i < end4; i += 4) {
    h = ((h << 1) + g[data[i]!]!) | 0; if ((h & 0xfffff000) === 0) return i + 1;
    h = ((h << 1) + g[data[i + 1]!]!) | 0; if ((h & 0xfffff000) === 0) return i + 2;
    h = ((h << 1) + g[data[i + 2]!]!) | 0; if ((h & 0xfffff000) === 0) return i + 3;
    h = ((h << 1) + g[data[i + 3]!]!) | 0; if ((h & 0xfffff000) === 0) return i + 4;
  }
  for (; i < limit; i++) { h = ((h << 1) + g[data[i]!]!) | 0; if ((h & 0xfffff000) === 0) return i + 1; }
  return -1;
}
const data = randomBytes(64 << 20);
for (const [name, f] of [['a', a], ['b', b], ['c', c], ['a', a], ['b', b], ['c', c]] as const) {
  const t = performance.now(); let at = 0, n = 0; let chk = 0;
  while (at < data.length - MAX_PIECE) { const d = data.subarray(at, at + MAX_PIECE); let e = f(d, MAX_PIECE); if (e < 0) e = MAX_PIECE; chk += e; at += e; n++; }
  const ms = performance.now() - t;
  console.log(name, n, chk, `${ms.toFixed(0)} ms, ${(at / 1048576 / (ms / 1000)).toFixed(0)} MB/s`);
}
import { pieceEnd } from '../src/artifacts/pieced.js';
for (let r = 0; r < 3; r++) {
  const t = performance.now(); let at = 0, n = 0; let chk = 0;
  while (at < data.length - MAX_PIECE) { const d = data.subarray(at, at + MAX_PIECE); const e = pieceEnd(d, false); chk += e; at += e; n++; }
  const ms = performance.now() - t;
  console.log('pieceEnd', n, chk, `${ms.toFixed(0)} ms, ${(at / 1048576 / (ms / 1000)).toFixed(0)} MB/s`);
}
