/**
 * Reusing a release's bzip2 blocks (src/image/bzip2-blocks.ts, src/image/base-cache.ts,
 * src/artifacts/bzip2-reuse.ts): for releases compressed by bzip2 (-9 and -1), lbzip2 and pbzip2
 * (concatenated streams), a changed image written through compressReusing decompresses with stock
 * bzip2, lbzip2 and pbzip2 to exactly that image; a qcow2 of it that qemu-img wrote
 * (src/artifacts/layout.ts), to exactly that file; a VHDX of it written here (src/artifacts/vhdx.ts), to
 * the file its segments make.
 */
import { execa } from 'execa';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdtemp, open, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { compressReusing } from '../src/artifacts/bzip2-reuse.js';
import { qcow2Layout } from '../src/artifacts/layout.js';
import { writeSegments } from '../src/artifacts/qcow2.js';
import { vhdxSegments } from '../src/artifacts/vhdx.js';
import { DiskView, nonZeroClusters } from '../src/image/disk-view.js';
import { prepareBase } from '../src/image/base-cache.js';
import { Bzip2IndexError, indexBlocks } from '../src/image/bzip2-blocks.js';
import { OemError } from '../src/shared/errors.js';
import { part } from './helpers/image-read.js';

const fixtures = inject('fixtures');
let work: string;
let n = 0;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-reuse-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function sha512(path: string): Promise<string> {
  const h = createHash('sha512');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

async function pokeAt(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

/**
 * A 64 MiB GPT disk with the partitions a build reads and writes (USR-A 3, OEM 6, ROOT 9): what block
 * reuse needs, without the cost of decoding a whole test image a dozen times.
 */
async function smallDisk(path: string): Promise<void> {
  await writeFile(path, '');
  await truncate(path, 64 * 1024 * 1024);
  await execa('sgdisk', ['-n', '3:2048:+16M', '-c', '3:USR-A', '-n', '6:0:+16M', '-c', '6:OEM', '-n', '9:0:0', '-c', '9:ROOT', path]);
  await pokeAt(path, 40 * 1024 * 1024, Buffer.from('some text on ROOT before the build\n'.repeat(1000)));
}

/** Release compressors, and the stock decoders each output is read back with: all three for the official releases' bzip2 -9, the release's own tool for the others (the output's stream structure is ours, whatever made the release). */
const COMPRESSORS: [string, string[], string[]][] = [
  ['lbzip2', ['-9'], ['lbzip2']],
  ['bzip2', ['-9'], ['bzip2', 'lbzip2', 'pbzip2']],
  ['bzip2', ['-1'], ['bzip2']],
  ['pbzip2', ['-9'], ['pbzip2']],
];

/** The sha512 of what `dec -dc file` writes (through a pipe: nothing is written to disk); fails when the decoder does. */
async function decodedSha512(dec: string, file: string): Promise<string> {
  const { stdout } = await execa('bash', ['-o', 'pipefail', '-c', `${dec} -dc "$1" | sha512sum`, 'bash', file]);
  return stdout.split(' ')[0]!;
}

describe('a built image as .bz2 from the release\'s own blocks', () => {
  for (const [tool, args, decoders] of COMPRESSORS) {
    it(`release made by ${tool} ${args.join(' ')}: decodes with ${decoders.join(', ')} to exactly the built image`, async () => {
      // The small fixture plus 3 MB of incompressible data in USR-A, so that there are data blocks too.
      const base = join(work, `base-${n++}.bin`);
      await smallDisk(base);
      await pokeAt(base, (await part(base, 3)).offset + 512 * 1024, randomBytes(3 * 1024 * 1024));
      const bz2 = join(work, `base-${n++}.bin.bz2`);
      await execa('sh', ['-c', `${tool} ${args.join(' ')} -c "${base}" > "${bz2}"`]);
      const cacheDir = join(work, `cache-${n++}`);
      const prepared = await prepareBase(bz2, await sha512(bz2), { cacheDir, workDir: work });
      expect(prepared.index).not.toBeNull();
      expect(prepared.cached).toBe(false);
      expect(await sha512(prepared.raw)).toBe(await sha512(base));
      const index = prepared.index!;
      expect(index.blocks.length).toBeGreaterThan(3);

      // The build changed OEM (data in several places) and ROOT (a few bytes in a zero area, the end).
      const oemPart = await part(base, 6);
      const rootPart = await part(base, 9);
      const built = join(work, `built-${n++}.bin`);
      await copyFile(base, built);
      await pokeAt(built, oemPart.offset + 4096, Buffer.alloc(200_000, 0x5a));
      await pokeAt(built, oemPart.offset + oemPart.size - 3, Buffer.from('end'));
      await pokeAt(built, rootPart.offset + Math.floor(rootPart.size / 2), Buffer.from('hello, root'));
      await pokeAt(built, rootPart.offset + rootPart.size - 1, Buffer.from([1]));

      const out = join(work, `out-${n++}.bin.bz2`);
      const r = await compressReusing(index, prepared.raw, built, out, [oemPart, rootPart]);
      expect(r.reusedBlocks).toBeGreaterThan(0);
      expect(r.reusedBlocks).toBeLessThan(r.blocks);
      expect(r.recompressed).toBeGreaterThan(0);
      // (On this small disk a block of zeros spans tens of MiB, so the bound is the disk; on a real
      // image it is the changed partitions, which the benchmark measures.)
      expect(r.recompressed).toBeLessThan((await stat(base)).size);
      expect(r.sha512).toBe(await sha512(out));

      const want = await sha512(built);
      for (const dec of decoders) expect(await decodedSha512(dec, out), `${dec} -dc`).toBe(want);
      // bzip2 -t checks every stream and block CRC.

      // The chunks the build needed are now mapped block by block, in the cache.
      const again = await prepareBase(bz2, await sha512(bz2), { cacheDir, workDir: work });
      expect(again.cached).toBe(true);
      expect(again.index!.blocks.some((b) => b.u !== undefined)).toBe(true);
      // An unchanged image is the release's blocks only.
      const same = join(work, `same-${n++}.bin.bz2`);
      const s = await compressReusing(again.index!, again.raw, base, same, [oemPart, rootPart]);
      expect(s.recompressed).toBe(0);
      expect(s.reusedBlocks).toBe(s.blocks);
      expect(await decodedSha512(decoders[0]!, same)).toBe(await sha512(base));
      await rm(built);
      await rm(base);
    });
  }
});

describe('indexing a .bz2', () => {
  it('refuses a stream whose CRC does not combine its blocks\' CRCs, and a truncated one', async () => {
    const bz2 = join(work, `idx-${n++}.bz2`);
    await execa('sh', ['-c', `head -c 3000000 /dev/urandom | bzip2 -9 > "${bz2}"`]);
    const data = await readFile(bz2);
    const index = async (buf: Buffer) => {
      const p = join(work, `idx-${n++}.bz2`);
      await writeFile(p, buf);
      const fh = await open(p, 'r');
      try {
        return await indexBlocks(fh, buf.length);
      } finally {
        await fh.close();
      }
    };
    expect((await index(data)).length).toBe(4);
    // The first block's CRC sits right after its magic, at byte 10.
    const bad = Buffer.from(data);
    bad[12] = bad[12]! ^ 0x01;
    await expect(index(bad)).rejects.toThrow(Bzip2IndexError);
    await expect(index(data.subarray(0, data.length - 8))).rejects.toThrow(/no end|truncated/);
  });

  it('a truncated release: a clear badImage error, nothing left in the cache', async () => {
    const bz2 = join(work, `trunc-${n++}.bin.bz2`);
    const whole = await readFile(fixtures.coreos.bz2);
    await writeFile(bz2, whole.subarray(0, Math.floor(whole.length / 2)));
    const cacheDir = join(work, `cache-${n++}`);
    const err = await prepareBase(bz2, 'ab'.repeat(64), { cacheDir, workDir: await mkdtemp(join(work, 'w-')) }).catch((e: unknown) => e);
    expect(err, String(err)).toBeInstanceOf(OemError);
    expect((err as OemError).code).toBe('badImage');
    const left = await execa('sh', ['-c', `ls -A "${cacheDir}/bases" 2>/dev/null || true`]);
    expect(left.stdout.trim()).toBe('');
  });
});

describe('the base cache entry', () => {
  it('a damaged entry (truncated image, or an index of another version) is decoded again and replaced, once', async () => {
    const bz2 = fixtures.coreos.bz2;
    const sum = await sha512(bz2);
    const cacheDir = join(work, `cache-${n++}`);
    const prep = async () => prepareBase(bz2, sum, { cacheDir, workDir: await mkdtemp(join(work, 'w-')) });
    const first = await prep();
    expect(first.cached).toBe(false);
    const want = await sha512(first.raw);
    const damage = [
      () => truncate(first.raw, 100_000),
      async () => writeFile(join(first.raw, '..', 'blocks.json'), (await readFile(join(first.raw, '..', 'blocks.json'), 'utf8')).replace(/^\{"version":\d+/, '{"version":0')),
    ];
    for (const hurt of damage) {
      await hurt();
      const again = await prep();
      expect(again.cached).toBe(false);
      expect(again.raw).toBe(first.raw);
      expect(await sha512(again.raw)).toBe(want);
      // Repaired: the next build takes it from the cache.
      expect((await prep()).cached).toBe(true);
    }
    const left = await execa('sh', ['-c', `ls -A "${cacheDir}/bases"`]);
    expect(left.stdout.trim().split('\n')).toHaveLength(1);
  });
});

describe('a qcow2 and a VHDX of the built image as .bz2 from the release\'s own blocks', () => {
  /** A release with data blocks around runs of zeros in USR-A, and a built image changed in OEM and ROOT (made once, never changed). */
  let made: ReturnType<typeof makeRelease> | undefined;
  const release = () => (made ??= makeRelease());
  async function makeRelease() {
    const base = join(work, `vbase-${n++}.bin`);
    await smallDisk(base);
    const usr = (await part(base, 3)).offset;
    for (const [at, len] of [[300_000, 2_500_000], [5 * 1024 * 1024 + 777, 1_000_000], [9 * 1024 * 1024, 3 * 1024 * 1024]] as const) await pokeAt(base, usr + at, randomBytes(len));
    const bz2 = `${base}.bz2`;
    await execa('sh', ['-c', `lbzip2 -9 -c "${base}" > "${bz2}"`]);
    const prepared = await prepareBase(bz2, await sha512(bz2), { cacheDir: join(work, `cache-${n++}`), workDir: work });
    const oemPart = await part(base, 6);
    const rootPart = await part(base, 9);
    const built = join(work, `vbuilt-${n++}.bin`);
    await copyFile(base, built);
    await pokeAt(built, oemPart.offset + 70_000, randomBytes(300_000));
    await pokeAt(built, rootPart.offset + 1234, Buffer.from('hello, root'));
    return { base, prepared, built, regions: [oemPart, rootPart] };
  }

  for (const format of ['qcow2', 'vhdx'] as const) {
    it(`${format}: decodes to exactly the file (${format === 'qcow2' ? 'from qemu-img' : 'from vhdx.ts'}); only the changed ranges and the tables are compressed`, async () => {
      const { prepared, built, regions } = await release();
      const file = join(work, `conv-${n++}.${format}`);
      const size = (await stat(built)).size;
      let layout;
      if (format === 'qcow2') {
        await execa('qemu-img', ['convert', '-f', 'raw', '-O', format, built, file]);
        layout = await qcow2Layout(file, size);
      } else {
        const view = await DiskView.open(built);
        try {
          const ids = { fileWrite: randomBytes(16), dataWrite: randomBytes(16), disk: randomBytes(16) };
          layout = vhdxSegments(size, await nonZeroClusters(view, 64 * 1024, { shareBase: false }), 64 * 1024, ids);
          await writeSegments(view, layout, file);
        } finally {
          await view.close();
        }
        expect((await execa('qemu-img', ['compare', '-f', 'raw', '-F', 'vhdx', built, file], { reject: false })).exitCode).toBe(0);
      }
      expect(layout.some((s) => 'image' in s)).toBe(true);
      const out = join(work, `conv-${n++}.${format}.bz2`);
      const r = await compressReusing(prepared.index!, prepared.raw, built, out, regions, { layout });
      expect(r.reusedBlocks).toBeGreaterThan(0);
      const tables = layout.reduce((a, s) => a + ('bytes' in s ? s.bytes.length : 0), 0);
      // What was compressed now: the tables, the changed ranges and the blocks cut by a run of zeros the file leaves out.
      // Less of the disk than the 6.5 MB of incompressible data in USR (and its runs of zeros, and the
      // changed OEM): the release's blocks carried much of it (measured: 1.9 MB for qcow2, 5.7 MB for
      // VHDX, whose payload blocks also cut runs of zeros; without reuse, more than 6.9 MB).
      expect(r.recompressed - tables).toBeLessThan(6_500_000);
      expect(r.sha512).toBe(await sha512(out));
      for (const dec of ['lbzip2', 'bzip2']) expect(await decodedSha512(dec, out), `${dec} -dc`).toBe(await sha512(file));
    });
  }

  it('a grown disk (the vm layouts): the moved partition table and the new end come from the built image', async () => {
    const { prepared, built: original, regions } = await release();
    const built = join(work, `grown-${n++}.bin`);
    await execa('cp', ['--sparse=always', original, built]);
    const baseSize = (await stat(built)).size;
    await truncate(built, baseSize + 32 * 1024 * 1024);
    await execa('sgdisk', ['-e', built]);
    const file = join(work, `grown-${n++}.qcow2`);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', built, file]);
    const layout = await qcow2Layout(file, (await stat(built)).size);
    const out = `${file}.bz2`;
    const grown = [...regions, { offset: 0, size: 1024 * 1024 }, { offset: baseSize - 1024 * 1024, size: 33 * 1024 * 1024 }];
    const r = await compressReusing(prepared.index!, prepared.raw, built, out, grown, { layout });
    expect(r.reusedBlocks).toBeGreaterThan(0);
    expect(await decodedSha512('lbzip2', out)).toBe(await sha512(file));
    await execa('sh', ['-c', `lbzip2 -dc "${out}" > "${file}.back" && qemu-img compare -f qcow2 -F raw "${file}.back" "${built}"`]);
  });

  it('refuses what qemu-img does not write on conversion: compressed clusters, a backing file, another disk size', async () => {
    const { built } = await release();
    const size = (await stat(built)).size;
    const compressed = join(work, `c-${n++}.qcow2`);
    await execa('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', built, compressed]);
    await expect(qcow2Layout(compressed, size)).rejects.toThrow(/compressed clusters/);
    const overlay = join(work, `o-${n++}.qcow2`);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', built, overlay]);
    await expect(qcow2Layout(overlay, size)).rejects.toThrow(/backing file/);
    await expect(qcow2Layout(compressed, size + 512)).rejects.toThrow(/bytes, the image/);
    await expect(qcow2Layout(built, size)).rejects.toThrow(/not a qcow2/);
  });
});
