/**
 * A streaming bzip2 decoder in TypeScript. What it is for:
 *
 * - **Measuring small blocks for block reuse** (src/image/base-cache.ts, refineChunk): the decoded
 *   length of each block of a chunk, the first time a build changes that chunk. Most of a release's
 *   blocks are small (runs of zeros: a 16 KiB block decodes to up to 45 MB), and starting a process
 *   per block costs more than decoding it. Measured on this 2-core machine, 57 such blocks of a
 *   64 MiB test image (43.7 MB decoded): 151 ms in-process, 777 ms with one `lbzip2 -n1 -dc` per
 *   block, 721 ms with `bzip2 -dc`. Large blocks still go to the tools. Only the length is needed,
 *   so bunzip2Length walks each block without writing (or checksumming) its bytes.
 * - **A fallback** when neither `lbzip2` nor `bzip2` is installed (or `OEM_BZIP2=js`): about
 *   47 MiB/s on the same image (`bzip2 -dc` 1.5 s, `lbzip2 -dc` 0.6 s for its 64 MiB); on
 *   incompressible data it is far slower than the tools.
 *
 * Format, in short: a stream is `BZh1`..`BZh9` (block size in 100 kB), then blocks, each starting with
 * the 48-bit magic 0x314159265359 and a CRC, then the 48-bit end-of-stream magic 0x177245385090, the
 * combined CRC and padding to a byte boundary. Streams may be concatenated (pbzip2, lbzip2 output).
 * A block holds the Burrows-Wheeler transform of up to 100k*level bytes of RLE1 output (runs of 4-255
 * equal bytes become 4 bytes and a count); it is coded as move-to-front indexes with runs of index 0
 * written in bijective base 2 (RUNA, RUNB), Huffman-coded with up to 6 tables switched every 50
 * symbols. CRCs are CRC-32 with polynomial 0x04c11db7, most significant bit first, over the decoded
 * bytes; the stream CRC is `rotl1(crc) ^ blockCrc` over the stream's blocks.
 *
 * Memory: one block's BWT vector (4 bytes per BWT byte, 3.6 MB for level 9), the compressed input of
 * about one block, and one output chunk (at most 1 MiB) at a time.
 */

/** Largest output chunk yielded by bunzip2Stream. */
export const BZIP2_OUTPUT_CHUNK = 1 << 20;

const BLOCK_MAGIC_HI = 0x314159;
const BLOCK_MAGIC_LO = 0x265359;
const EOS_MAGIC_HI = 0x177245;
const EOS_MAGIC_LO = 0x385090;
const MAX_GROUPS = 6;
const MAX_ALPHA = 258;
const MAX_CODE_LEN = 20;
const MAX_SELECTORS = 18002;
const GROUP_SIZE = 50;
/** Codes up to this long are decoded with one table lookup; longer ones by canonical-code search. */
const FAST_BITS = 10;
const FAST_SIZE = 1 << FAST_BITS;
/** Initial look-ahead of compressed input before a block is parsed; doubled when a block is larger. */
const INITIAL_AHEAD = 64 * 1024;

/** Thrown (as this single value) by the parsers when the buffered input ends; the parse is retried. */
const NEED_MORE: unique symbol = Symbol('bzip2 needs more input');

function corrupt(what: string): Error {
  return new Error(`bzip2 data is corrupt: ${what}`);
}

// CRC-32, MSB first, polynomial 0x04c11db7; 8 tables for slicing-by-8.
const CRC = (() => {
  const t = new Int32Array(8 * 256);
  for (let b = 0; b < 256; b++) {
    let c = b << 24;
    for (let k = 0; k < 8; k++) c = c & 0x80000000 ? (c << 1) ^ 0x04c11db7 : c << 1;
    t[b] = c;
  }
  for (let k = 1; k < 8; k++) {
    for (let b = 0; b < 256; b++) {
      const p = t[(k - 1) * 256 + b]!;
      t[k * 256 + b] = (p << 8) ^ t[p >>> 24]!;
    }
  }
  return t;
})();

/** Updates a running (not yet inverted) bzip2 CRC with buf[start, end). */
function crcUpdate(crc: number, buf: Uint8Array, start: number, end: number): number {
  const T = CRC;
  let c = crc | 0;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    const a = c ^ ((buf[i]! << 24) | (buf[i + 1]! << 16) | (buf[i + 2]! << 8) | buf[i + 3]!);
    const b = (buf[i + 4]! << 24) | (buf[i + 5]! << 16) | (buf[i + 6]! << 8) | buf[i + 7]!;
    c =
      T[1792 + (a >>> 24)]! ^
      T[1536 + ((a >>> 16) & 0xff)]! ^
      T[1280 + ((a >>> 8) & 0xff)]! ^
      T[1024 + (a & 0xff)]! ^
      T[768 + (b >>> 24)]! ^
      T[512 + ((b >>> 16) & 0xff)]! ^
      T[256 + ((b >>> 8) & 0xff)]! ^
      T[b & 0xff]!;
  }
  for (; i < end; i++) c = (c << 8) ^ T[((c >>> 24) ^ buf[i]!) & 0xff]!;
  return c;
}

/** Compressed input: buffered bytes plus a bit accumulator, refilled from an async iterator. */
class BitInput {
  data: Uint8Array = new Uint8Array(0);
  /** Next byte of `data` to load into the accumulator. */
  pos = 0;
  /** Bit accumulator: the low `bc` bits are the next bits of input, most significant first. */
  bb = 0;
  bc = 0;
  private pending: Uint8Array[] = [];
  private pendingLen = 0;
  private eof = false;
  ahead = INITIAL_AHEAD;

  constructor(private readonly it: AsyncIterator<Uint8Array>) {}

  /** Bytes buffered and not yet loaded into the accumulator (not counting pending chunks). */
  get avail(): number {
    return this.data.length - this.pos;
  }

  /** Reads chunks until `min` bytes are buffered beyond the accumulator, or the input ends. */
  async fill(min: number): Promise<void> {
    while (!this.eof && this.avail + this.pendingLen < min) {
      const r = await this.it.next();
      if (r.done) {
        this.eof = true;
      } else if (r.value.length > 0) {
        this.pending.push(r.value);
        this.pendingLen += r.value.length;
      }
    }
    if (this.pendingLen > 0) {
      this.data = Buffer.concat([this.data.subarray(this.pos), ...this.pending]);
      this.pos = 0;
      this.pending = [];
      this.pendingLen = 0;
    }
  }

  /** True when every byte of input has been consumed (the accumulator included). */
  async atEnd(): Promise<boolean> {
    if (this.bc > 0 || this.avail > 0) return false;
    await this.fill(1);
    return this.avail === 0;
  }

  /** Reads n <= 24 bits. */
  bits(n: number): number {
    while (this.bc < n) {
      if (this.pos >= this.data.length) throw NEED_MORE;
      this.bb = (this.bb << 8) | this.data[this.pos++]!;
      this.bc += 8;
    }
    this.bc -= n;
    return (this.bb >>> this.bc) & ((1 << n) - 1);
  }

  bit(): number {
    return this.bits(1);
  }

  /** Drops the padding up to the next byte boundary and returns whole buffered bytes to `data`. */
  alignToByte(): void {
    this.bc -= this.bc & 7;
    this.pos -= this.bc >>> 3;
    this.bc = 0;
    this.bb = 0;
  }

  /**
   * Runs a parser; when it runs out of buffered input, rewinds, reads more and runs it again. Throws
   * `bzip2 data is truncated` when the input ends first.
   */
  async parse<T>(fn: () => T): Promise<T> {
    for (;;) {
      const { pos, bb, bc } = this;
      try {
        return fn();
      } catch (err) {
        if (err !== NEED_MORE) throw err;
        this.pos = pos;
        this.bb = bb;
        this.bc = bc;
        const had = this.avail;
        this.ahead = Math.max(this.ahead, had * 2);
        await this.fill(Math.max(this.ahead, had + 1));
        if (this.avail <= had) throw new Error('bzip2 data is truncated');
      }
    }
  }

  async close(): Promise<void> {
    if (!this.eof) {
      this.eof = true;
      await this.it.return?.();
    }
  }
}

type BlockHeader = { kind: 'block'; crc: number } | { kind: 'end'; crc: number };

/** Decodes blocks: Huffman/MTF/RLE2 into `tt`, then inverse BWT and RLE1 into output buffers. */
class BlockDecoder {
  tt = new Uint32Array(0);
  private readonly unzftab = new Int32Array(256);
  private readonly cftab = new Int32Array(257);
  private readonly mtf = new Uint8Array(256);
  private readonly seqToUnseq = new Uint8Array(256);
  private readonly selectorMtf = new Uint8Array(MAX_GROUPS);
  private readonly selectors = new Uint8Array(MAX_SELECTORS);
  private readonly lens = new Uint8Array(MAX_ALPHA);
  // Per group g: fast[g*FAST_SIZE + code] = sym << 5 | len (0: longer code); first/count/base indexed
  // g*(MAX_CODE_LEN+1) + len; perm[g*MAX_ALPHA + i]: symbols ordered by (length, symbol).
  private readonly fast = new Uint32Array(MAX_GROUPS * FAST_SIZE);
  private readonly first = new Int32Array(MAX_GROUPS * (MAX_CODE_LEN + 1));
  private readonly count = new Int32Array(MAX_GROUPS * (MAX_CODE_LEN + 1));
  private readonly base = new Int32Array(MAX_GROUPS * (MAX_CODE_LEN + 1));
  private readonly perm = new Uint16Array(MAX_GROUPS * MAX_ALPHA);

  // Output state of the current block.
  private tPos = 0;
  private left = 0;
  private last = -1;
  private run = 0;
  private rep = 0;

  get done(): boolean {
    return this.left === 0 && this.rep === 0;
  }

  /** Reads a block or end-of-stream header: magic and CRC. */
  readHeader(inp: BitInput): BlockHeader {
    const hi = inp.bits(24);
    const lo = inp.bits(24);
    const crc = ((inp.bits(16) << 16) | inp.bits(16)) >>> 0;
    if (hi === BLOCK_MAGIC_HI && lo === BLOCK_MAGIC_LO) return { kind: 'block', crc };
    if (hi === EOS_MAGIC_HI && lo === EOS_MAGIC_LO) return { kind: 'end', crc };
    throw corrupt('bad block magic');
  }

  /** Reads the rest of a block (after magic and CRC) and prepares its output. */
  readBlock(inp: BitInput, level: number): void {
    const nblockMax = level * 100000;
    if (this.tt.length < nblockMax) this.tt = new Uint32Array(nblockMax);
    if (inp.bit()) throw new Error('bzip2 randomised blocks (written by bzip2 before 0.9.5) are not supported');
    const origPtr = inp.bits(24);

    // Symbol map.
    const seqToUnseq = this.seqToUnseq;
    const used16 = inp.bits(16);
    let nInUse = 0;
    for (let i = 0; i < 16; i++) {
      if (used16 & (0x8000 >>> i)) {
        const used = inp.bits(16);
        for (let j = 0; j < 16; j++) if (used & (0x8000 >>> j)) seqToUnseq[nInUse++] = i * 16 + j;
      }
    }
    if (nInUse === 0) throw corrupt('no symbols in use');
    const alphaSize = nInUse + 2;
    const eob = nInUse + 1;

    // Selectors.
    const nGroups = inp.bits(3);
    if (nGroups < 2 || nGroups > MAX_GROUPS) throw corrupt(`bad number of Huffman tables (${nGroups})`);
    let nSelectors = inp.bits(15);
    if (nSelectors < 1) throw corrupt('no selectors');
    const sm = this.selectorMtf;
    for (let i = 0; i < nGroups; i++) sm[i] = i;
    const selectors = this.selectors;
    for (let i = 0; i < nSelectors; i++) {
      let j = 0;
      while (inp.bit()) {
        if (++j >= nGroups) throw corrupt('bad selector');
      }
      const v = sm[j]!;
      for (; j > 0; j--) sm[j] = sm[j - 1]!;
      sm[0] = v;
      // bzip2 1.0.8 reads, and ignores, selectors beyond the most a block can use.
      if (i < MAX_SELECTORS) selectors[i] = v;
    }
    if (nSelectors > MAX_SELECTORS) nSelectors = MAX_SELECTORS;

    // Code lengths, delta coded, and decoding tables.
    const lens = this.lens;
    for (let g = 0; g < nGroups; g++) {
      let curr = inp.bits(5);
      for (let s = 0; s < alphaSize; s++) {
        for (;;) {
          if (curr < 1 || curr > MAX_CODE_LEN) throw corrupt('bad Huffman code length');
          if (!inp.bit()) break;
          curr += inp.bit() ? -1 : 1;
        }
        lens[s] = curr;
      }
      this.buildTable(g, alphaSize);
    }

    // Huffman, RLE2 and MTF decoding into tt (low byte of each entry).
    const tt = this.tt;
    const unzftab = this.unzftab;
    unzftab.fill(0);
    const mtf = this.mtf;
    for (let i = 0; i < nInUse; i++) mtf[i] = seqToUnseq[i]!;
    const { fast, first, count, base, perm } = this;
    const data = inp.data;
    const dlen = data.length;
    let pos = inp.pos;
    let bb = inp.bb;
    let bc = inp.bc;
    let nblock = 0;
    let groupNo = -1;
    let groupPos = 0;
    let fastBase = 0;
    let lenBase = 0;
    let permBase = 0;
    let runAcc = 0;
    let runN = 1;
    for (;;) {
      if (groupPos === 0) {
        if (++groupNo >= nSelectors) throw corrupt('ran out of selectors');
        groupPos = GROUP_SIZE;
        const g = selectors[groupNo]!;
        fastBase = g * FAST_SIZE;
        lenBase = g * (MAX_CODE_LEN + 1);
        permBase = g * MAX_ALPHA;
      }
      groupPos--;
      while (bc < MAX_CODE_LEN) {
        if (pos >= dlen) throw NEED_MORE;
        bb = (bb << 8) | data[pos++]!;
        bc += 8;
      }
      let sym: number;
      const e = fast[fastBase + ((bb >>> (bc - FAST_BITS)) & (FAST_SIZE - 1))]!;
      if (e !== 0) {
        bc -= e & 31;
        sym = e >>> 5;
      } else {
        let len = FAST_BITS + 1;
        for (;; len++) {
          if (len > MAX_CODE_LEN) throw corrupt('bad Huffman code');
          const d = ((bb >>> (bc - len)) & ((1 << len) - 1)) - first[lenBase + len]!;
          if (d >= 0 && d < count[lenBase + len]!) {
            sym = perm[permBase + base[lenBase + len]! + d]!;
            break;
          }
        }
        bc -= len;
      }

      if (sym <= 1) {
        // RUNA (adds runN) or RUNB (adds 2*runN): a run of the front MTF symbol.
        runAcc += runN << sym;
        runN <<= 1;
        if (runN > 1 << 21) throw corrupt('run too long');
        continue;
      }
      if (runAcc > 0) {
        if (nblock + runAcc > nblockMax) throw corrupt('block too long');
        const uc = mtf[0]!;
        unzftab[uc]! += runAcc;
        tt.fill(uc, nblock, nblock + runAcc);
        nblock += runAcc;
        runAcc = 0;
        runN = 1;
      }
      if (sym === eob) break;
      if (sym > eob) throw corrupt('bad symbol');
      if (nblock >= nblockMax) throw corrupt('block too long');
      const nn = sym - 1;
      const uc = mtf[nn]!;
      if (nn < 16) {
        for (let k = nn; k > 0; k--) mtf[k] = mtf[k - 1]!;
      } else {
        mtf.copyWithin(1, 0, nn);
      }
      mtf[0] = uc;
      unzftab[uc]!++;
      tt[nblock++] = uc;
    }
    inp.pos = pos;
    inp.bb = bb;
    inp.bc = bc;
    if (origPtr >= nblock) throw corrupt('bad BWT origin pointer');

    // Inverse BWT: tt[i] >> 8 becomes the index of the byte following tt[i] & 0xff.
    const cftab = this.cftab;
    cftab[0] = 0;
    for (let i = 0; i < 256; i++) cftab[i + 1] = cftab[i]! + unzftab[i]!;
    for (let i = 0; i < nblock; i++) {
      const uc = tt[i]! & 0xff;
      tt[cftab[uc]!++]! |= i << 8;
    }
    this.tPos = tt[origPtr]! >>> 8;
    this.left = nblock;
    this.last = -1;
    this.run = 0;
    this.rep = 0;
  }

  private buildTable(g: number, alphaSize: number): void {
    const lens = this.lens;
    const lb = g * (MAX_CODE_LEN + 1);
    const pb = g * MAX_ALPHA;
    const fb = g * FAST_SIZE;
    const { first, count, base, perm, fast } = this;
    for (let l = 0; l <= MAX_CODE_LEN; l++) count[lb + l] = 0;
    for (let s = 0; s < alphaSize; s++) count[lb + lens[s]!]!++;
    let idx = 0;
    for (let l = 1; l <= MAX_CODE_LEN; l++) {
      base[lb + l] = idx;
      if (count[lb + l] === 0) continue;
      for (let s = 0; s < alphaSize; s++) if (lens[s] === l) perm[pb + idx++] = s;
    }
    let code = 0;
    for (let l = 1; l <= MAX_CODE_LEN; l++) {
      first[lb + l] = code;
      code += count[lb + l]!;
      if (code > 1 << l) throw corrupt('oversubscribed Huffman code');
      code <<= 1;
    }
    fast.fill(0, fb, fb + FAST_SIZE);
    for (let l = 1; l <= FAST_BITS; l++) {
      const n = count[lb + l]!;
      const span = 1 << (FAST_BITS - l);
      for (let k = 0; k < n; k++) {
        const sym = perm[pb + base[lb + l]! + k]!;
        const start = fb + (first[lb + l]! + k) * span;
        fast.fill((sym << 5) | l, start, start + span);
      }
    }
  }

  /** Writes the block's decoded bytes into out from `o` until out is full or the block is done. */
  emit(out: Uint8Array, o: number): number {
    const tt = this.tt;
    const end = out.length;
    let { tPos, left, last, run, rep } = this;
    while (o < end) {
      if (rep > 0) {
        const n = Math.min(rep, end - o);
        if (n > 8) {
          out.fill(last, o, o + n);
          o += n;
        } else {
          for (let k = 0; k < n; k++) out[o++] = last;
        }
        rep -= n;
        continue;
      }
      if (left === 0) break;
      const t = tt[tPos]!;
      tPos = t >>> 8;
      left--;
      const b = t & 0xff;
      if (run === 4) {
        // After four equal bytes comes a count of further copies.
        rep = b;
        run = 0;
        continue;
      }
      if (b === last) {
        run++;
      } else {
        last = b;
        run = 1;
      }
      out[o++] = b;
    }
    this.tPos = tPos;
    this.left = left;
    this.last = last;
    this.run = run;
    this.rep = rep;
    return o;
  }

  /** The number of bytes the rest of the block decodes to, walked as emit() does but not written. */
  measure(): number {
    const tt = this.tt;
    let { tPos, left, last, run } = this;
    let n = this.rep;
    while (left > 0) {
      const t = tt[tPos]!;
      tPos = t >>> 8;
      left--;
      const b = t & 0xff;
      if (run === 4) {
        n += b;
        run = 0;
      } else {
        if (b === last) run++;
        else {
          last = b;
          run = 1;
        }
        n++;
      }
    }
    this.tPos = tPos;
    this.left = 0;
    this.last = last;
    this.run = run;
    this.rep = 0;
    return n;
  }
}

const HEADER = [0x42, 0x5a, 0x68]; // "BZh"

/**
 * Decodes bzip2 data (one stream or several concatenated) from `input`, yielding chunks of at most
 * BZIP2_OUTPUT_CHUNK bytes. Each block's CRC and each stream's CRC is checked; a block's bytes may be
 * yielded before its CRC is checked, the error comes when its last bytes have been decoded. Trailing
 * zero bytes after the last stream are ignored, anything else there is an error.
 */
export function bunzip2Stream(input: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  return decode(input, false) as AsyncGenerator<Buffer>;
}

/**
 * The number of bytes bzip2 data decodes to, without its bytes: each block's Burrows-Wheeler vector
 * is walked but nothing is written, and no CRC can be checked (there are no bytes to check it on).
 * For measuring blocks whose data is known to be good (a verified release that lbzip2 or bzip2
 * decoded whole, base-cache.ts: the lengths of a chunk's blocks must add up to what the tool
 * decoded). Several times faster than decoding: on runs of zeros, no output is filled and hashed.
 */
export async function bunzip2Length(input: AsyncIterable<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const len of decode(input, true)) n += len as number;
  return n;
}

/** Decoded bytes (chunks of at most BZIP2_OUTPUT_CHUNK), or with `lengthOnly` each block's length. */
async function* decode(input: AsyncIterable<Uint8Array>, lengthOnly: boolean): AsyncGenerator<Buffer | number> {
  const inp = new BitInput(input[Symbol.asyncIterator]());
  const dec = new BlockDecoder();
  // Length only: nothing is written, so there is no output buffer.
  let out = Buffer.allocUnsafe(lengthOnly ? 0 : BZIP2_OUTPUT_CHUNK);
  let outPos = 0;
  let blockNo = 0;
  let streamNo = 0;
  try {
    for (;;) {
      // Stream header, or the end of input.
      await inp.fill(4);
      if (streamNo > 0 && (await inp.atEnd())) break;
      const head = inp.data.subarray(inp.pos, inp.pos + 4);
      const prefixOk = HEADER.every((b, i) => i >= head.length || head[i] === b);
      if (head.length < 4 || !prefixOk || head[3]! < 0x31 || head[3]! > 0x39) {
        if (streamNo > 0 && !prefixOk) {
          await skipZeroPadding(inp);
          break;
        }
        if (head.length < 4 && prefixOk) throw new Error('bzip2 data is truncated');
        throw new Error('not bzip2 data (bad magic)');
      }
      const level = head[3]! - 0x30;
      inp.pos += 4;
      streamNo++;

      let combined = 0;
      for (;;) {
        await inp.fill(inp.ahead);
        const header = await inp.parse(() => dec.readHeader(inp));
        if (header.kind === 'end') {
          if (!lengthOnly && header.crc !== combined) throw new Error(`bzip2 stream CRC mismatch in stream ${streamNo}`);
          inp.alignToByte();
          break;
        }
        blockNo++;
        await inp.parse(() => dec.readBlock(inp, level));
        if (lengthOnly) {
          yield dec.measure();
          continue;
        }
        let crc = -1;
        for (;;) {
          const start = outPos;
          outPos = dec.emit(out, outPos);
          crc = crcUpdate(crc, out, start, outPos);
          if (outPos === out.length) {
            yield out;
            out = Buffer.allocUnsafe(BZIP2_OUTPUT_CHUNK);
            outPos = 0;
          } else if (dec.done) {
            break;
          }
        }
        crc = ~crc >>> 0;
        if (crc !== header.crc) throw new Error(`bzip2 block CRC mismatch at block ${blockNo}`);
        combined = (((combined << 1) | (combined >>> 31)) ^ crc) >>> 0;
      }
    }
    if (outPos > 0) yield out.subarray(0, outPos);
  } finally {
    await inp.close();
  }
}

async function skipZeroPadding(inp: BitInput): Promise<void> {
  for (;;) {
    const rest = inp.data.subarray(inp.pos);
    if (rest.some((b) => b !== 0)) throw new Error('bzip2 data is followed by trailing garbage');
    inp.pos = inp.data.length;
    if (await inp.atEnd()) return;
  }
}
