/**
 * The dynamic VHDX written by the project (src/artifacts/vhdx.ts): for the same disk, the bytes
 * `qemu-img convert -O vhdx -o subformat=dynamic` writes once what qemu-img makes random or leaves as
 * history is set as the project sets it (both headers' sequence numbers and GUIDs, the disk ID, the
 * replayed log), but for the creator string. qemu-img is the reader: `qemu-img check` and `qemu-img
 * compare`. Shapes: every block size qemu-img picks (8, 16 and 32 MiB), a BAT with a sector bitmap
 * entry among its payload entries, a size that is not whole sectors, no data, and a view with a region
 * from a working image.
 */
import { createHash } from 'node:crypto';
import { execa } from 'execa';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSegments } from '../src/artifacts/qcow2.js';
import { VHDX_MAX_SIZE, VHDX_METADATA_REGION, VHDX_PAGE83, vhdxBlockSize, vhdxSegments, type VhdxIds } from '../src/artifacts/vhdx.js';
import { crc32c } from '../src/image/crc32c.js';
import { DiskView } from '../src/image/disk-view.js';
import { readAt } from './helpers/gpt-patch.js';
import { noisyFile } from './helpers/small-disks.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const CLUSTER = 64 * KiB;
let dir: string;
let n = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'oem-vhdx-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const id = (purpose: string): Buffer => createHash('sha256').update(purpose).digest().subarray(0, 16);
const IDS: VhdxIds = { fileWrite: id('file write'), dataWrite: id('data write'), disk: id('disk') };

/** A sparse disk of `size` bytes with `bytes` of noise at each offset; and its clusters with data, from that list. */
async function disk(size: number, data: [offset: number, bytes: number][]): Promise<{ path: string; stored: Uint8Array }> {
  const path = join(dir, `disk-${++n}.raw`);
  await noisyFile(path, size, data);
  const stored = new Uint8Array(Math.ceil(size / CLUSTER));
  for (const [at, len] of data) for (let c = Math.floor(at / CLUSTER); c * CLUSTER < at + len; c++) stored[c] = 1;
  return { path, stored };
}

async function ours(view: DiskView, stored: Uint8Array): Promise<string> {
  const out = join(dir, `ours-${++n}.vhdx`);
  await writeSegments(view, vhdxSegments(view.size, stored, CLUSTER, IDS), out);
  return out;
}

/**
 * qemu-img's VHDX of `raw`, with what it makes random or leaves behind set as vhdx.ts sets it: header 2
 * current (sequence 2, header 1 sequence 1; qemu-img leaves header 2 current), the GUIDs and disk ID
 * from IDS, the log (history of its replayed entries) zeroed, and the creator cleared.
 */
async function theirs(raw: string): Promise<string> {
  const out = join(dir, `qemu-${++n}.vhdx`);
  await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic', raw, out]);
  const fh = await open(out, 'r+');
  try {
    const read = async (at: number, length: number) => {
      const b = Buffer.alloc(length);
      await fh.read(b, 0, length, at);
      return b;
    };
    const headers = [await read(64 * KiB, 4 * KiB), await read(128 * KiB, 4 * KiB)];
    expect(headers[1]!.readBigUInt64LE(8)).toBeGreaterThan(headers[0]!.readBigUInt64LE(8));
    expect(headers[1]!.subarray(48, 64).every((b) => b === 0)).toBe(true); // no active log
    const logOffset = Number(headers[1]!.readBigUInt64LE(72));
    const logLength = headers[1]!.readUInt32LE(68);
    for (const [i, h] of headers.entries()) {
      h.writeBigUInt64LE(BigInt(i + 1), 8);
      IDS.fileWrite.copy(h, 16);
      IDS.dataWrite.copy(h, 32);
      h.writeUInt32LE(0, 4);
      h.writeUInt32LE(crc32c(h), 4);
      await fh.write(h, 0, h.length, (i + 1) * 64 * KiB);
    }
    await fh.write(Buffer.alloc(logLength), 0, logLength, logOffset);
    await fh.write(Buffer.alloc(512), 0, 512, 8);
    const regions = await read(192 * KiB, 64 * KiB);
    for (let i = 0; i < regions.readUInt32LE(8); i++) {
      const e = 16 + i * 32;
      if (!regions.subarray(e, e + 16).equals(VHDX_METADATA_REGION)) continue;
      const at = Number(regions.readBigUInt64LE(e + 16));
      const table = await read(at, 64 * KiB);
      for (let j = 0; j < table.readUInt16LE(10); j++) {
        const m = 32 + j * 32;
        if (table.subarray(m, m + 16).equals(VHDX_PAGE83)) await fh.write(IDS.disk, 0, 16, at + table.readUInt32LE(m + 16));
      }
    }
  } finally {
    await fh.close();
  }
  return out;
}

/** Whether two files hold the same bytes, read a piece at a time (holes read as zeros); the creator (8-520) left out. */
async function same(a: string, b: string): Promise<boolean> {
  const [sa, sb] = [(await stat(a)).size, (await stat(b)).size];
  if (sa !== sb) return false;
  const [fa, fb] = [await open(a, 'r'), await open(b, 'r')];
  try {
    const [ba, bb] = [Buffer.alloc(4 * MiB), Buffer.alloc(4 * MiB)];
    for (let at = 0; at < sa; at += ba.length) {
      const len = Math.min(ba.length, sa - at);
      await fa.read(ba, 0, len, at);
      await fb.read(bb, 0, len, at);
      if (at === 0) {
        ba.fill(0, 8, 520);
        bb.fill(0, 8, 520);
      }
      if (!ba.subarray(0, len).equals(bb.subarray(0, len))) return false;
    }
    return true;
  } finally {
    await fa.close();
    await fb.close();
  }
}

/** qemu-img check; and, for disks of at most 1 GiB, qemu-img compare (it reads a large disk's zero blocks: a minute for 100 GiB). */
async function checked(raw: string, out: string): Promise<void> {
  const check = await execa('qemu-img', ['check', '-f', 'vhdx', out], { reject: false });
  expect(check.exitCode, check.stdout + check.stderr).toBe(0);
  if ((await stat(raw)).size > GiB) return;
  const cmp = await execa('qemu-img', ['compare', '-f', 'raw', '-F', 'vhdx', raw, out], { reject: false });
  expect(cmp.exitCode, cmp.stdout + cmp.stderr).toBe(0);
}

describe('the VHDX as qemu-img writes it', () => {
  const shapes: [string, number, [number, number][]][] = [
    ['8 MiB blocks: a few with data, some with a few bytes', 100 * MiB, [[5 * MiB + 3, 100], [70 * MiB, 3_000_000], [99 * MiB, 4096]]],
    ['a size that is not whole sectors, data in its short last block', 20 * MiB + 1000, [[20 * MiB + 900, 100], [0, 512]]],
    ['no data at all', 3 * MiB, []],
    // 16 MiB blocks; a sector bitmap entry after every 256 payload entries of the BAT.
    ['16 MiB blocks, data on both sides of a sector bitmap entry', 4756340736, [[100, 1], [255 * 16 * MiB + 7, 70_000], [256 * 16 * MiB, 10], [4700000000, 1]]],
    ['32 MiB blocks (over 100 GiB)', 101 * GiB + 512, [[MiB, 100], [101 * GiB, 512]]],
  ];
  for (const [name, size, data] of shapes) {
    it(`${name}: the same bytes as qemu-img's; qemu-img checks it`, async () => {
      const { path: raw, stored } = await disk(size, data);
      const view = await DiskView.open(raw);
      let out: string;
      try {
        out = await ours(view, stored);
      } finally {
        await view.close();
      }
      // The same bytes as qemu-img's own file: for the large disks, that is what shows qemu reads it as the disk.
      expect(await same(out, await theirs(raw))).toBe(true);
      await checked(raw, out);
      expect((await readAt(out, 0, 14)).toString('utf16le', 8)).toBe('oem');
    });
  }

  it('from a view: the region read from the working image, the rest from the base', async () => {
    const base = await disk(40 * MiB, [[1 * MiB, 4096], [17 * MiB, 100], [33 * MiB, MiB]]);
    // The build wrote 16-32 MiB: zeros over the base's data at 17 MiB, data at 26 MiB.
    const work = await disk(40 * MiB, [[26 * MiB + 10, 300]]);
    const view = await DiskView.open(base.path, { path: work.path, regions: [{ offset: 16 * MiB, size: 16 * MiB }] });
    const built = join(dir, 'built.raw');
    await execa('cp', ['--sparse=always', base.path, built]);
    await execa('dd', [`if=${work.path}`, `of=${built}`, 'bs=1M', 'skip=16', 'seek=16', 'count=16', 'conv=notrunc', 'status=none']);
    const stored = new Uint8Array(base.stored);
    stored.fill(0, (16 * MiB) / CLUSTER, (32 * MiB) / CLUSTER);
    stored[(26 * MiB) / CLUSTER] = 1;
    let out: string;
    try {
      out = await ours(view, stored);
    } finally {
      await view.close();
    }
    await checked(built, out);
    expect(await same(out, await theirs(built))).toBe(true);
  });

  it("qemu-img's block sizes and the format's limit", () => {
    expect([GiB, GiB + 512, 100 * GiB, 100 * GiB + 512, 32 * 1024 * GiB, 32 * 1024 * GiB + 512].map((s) => vhdxBlockSize(s) / MiB)).toEqual([8, 16, 16, 32, 32, 64]);
    expect(() => vhdxSegments(VHDX_MAX_SIZE + 512, new Uint8Array(0), CLUSTER, IDS)).toThrow(/at most 64 TiB/);
  });
});
