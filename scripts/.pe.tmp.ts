import { pieceEnd, MAX_PIECE } from '../src/artifacts/pieced.js';
import { randomBytes } from 'node:crypto';
const data = randomBytes(64 << 20);
for (let r = 0; r < 3; r++) {
  const t = performance.now();
  let at = 0, n = 0, scanned = 0;
  while (at < data.length - MAX_PIECE) { const e = pieceEnd(data.subarray(at, at + MAX_PIECE), false); at += e; n++; }
  const ms = performance.now() - t;
  console.log(`pieces ${n} ${ms.toFixed(0)} ms, ${(at / 1048576 / (ms / 1000)).toFixed(0)} MB/s of input`);
}
