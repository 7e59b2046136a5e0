/**
 * compressFile: every output decompresses with the stock tools to exactly the input, outputs are
 * deterministic, and failures (missing tool, full disk, abort, existing output) are clean.
 */
import { execa, execaSync } from 'execa';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compressBzip2, compressFile } from '../src/artifacts/compress.js';
import { COMPRESSION_SUFFIX, COMPRESSIONS, type Compression } from '../src/compression.js';
import { OemError } from '../src/shared/errors.js';

const MiB = 1024 * 1024;
// Four of xz -6's 24 MiB blocks, and more than lbzip2 and zstd cut in one piece.
const BIG_SIZE = 96 * MiB;
const repo = resolve(import.meta.dirname, '..');

let work: string;
/** A few MiB of random bytes, text and zeros. */
let small: string;
/** A sparse file of 96 MiB: mostly holes, with random blocks and some text. */
let big: string;

function text(n: number): Buffer {
  const words = ['flatcar', 'container', 'linux', 'oem', 'image', 'partition', 'usr', 'root', 'ext4', 'btrfs', 'grub', 'ignition'];
  const parts: string[] = [];
  let size = 0;
  for (let i = 0; size < n; i++) {
    const line = `${words[i % words.length]} ${words[(i * 7) % words.length]} ${(i * 2654435761) % 1000003}\n`;
    parts.push(line);
    size += line.length;
  }
  return Buffer.from(parts.join('').slice(0, n));
}

/** Runs `cmd < file | cmp - original` with pipefail: the decompressor must succeed and match byte for byte. */
async function expectDecompresses(cmd: string, file: string, original: string): Promise<void> {
  const r = await execa('bash', ['-o', 'pipefail', '-c', `${cmd} < "$1" | cmp - "$2"`, 'bash', file, original], { reject: false });
  expect(r.exitCode, `${cmd} ${file}: ${r.stderr}${r.stdout}`).toBe(0);
}

async function sameBytes(a: string, b: string): Promise<boolean> {
  return (await execa('cmp', ['-s', a, b], { reject: false })).exitCode === 0;
}

/** Stock decompressors of each format (bzip2's three implementations). */
const DECOMPRESSORS: Record<Exclude<Compression, 'none'>, string[]> = {
  bz2: ['bzip2 -dc', 'lbzip2 -dc', 'pbzip2 -dc'],
  gz: ['gzip -dc'],
  xz: ['xz -dc -T1'],
  zst: ['zstd -dc'],
};

/** Runs compressFile in a child process (own PATH, own mount namespace), one job after the other. */
async function compressInChild(
  jobs: { input: string; output: string; kind: Compression }[],
  opts: { path?: string; tmpfs?: string } = {},
): Promise<{ tool?: string; code?: string; message?: string; hint?: string; outputLeft: boolean }[]> {
  const script = join(work, `child-${randomBytes(4).toString('hex')}.mts`);
  await writeFile(
    script,
    `import { compressFile } from ${JSON.stringify(join(repo, 'src/artifacts/compress.ts'))};
import { existsSync } from 'node:fs';
const out = [];
for (const j of ${JSON.stringify(jobs)}) {
  try {
    const r = await compressFile(j.input, j.output, j.kind);
    out.push({ tool: r.tool, outputLeft: existsSync(j.output) });
  } catch (e) {
    out.push({ code: e.code, message: e.message, hint: e.hint, outputLeft: existsSync(j.output) });
  }
}
console.log(JSON.stringify(out));
`,
  );
  const env = { ...process.env, ...(opts.path !== undefined ? { PATH: opts.path } : {}) };
  const node = [process.execPath, '--import', 'tsx', script];
  const r = opts.tmpfs
    ? await execa('unshare', ['-rm', 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs "$1" && shift && exec "$@"', 'sh', opts.tmpfs, ...node], { cwd: repo, env, extendEnv: false, reject: false })
    : await execa(node[0]!, node.slice(1), { cwd: repo, env, extendEnv: false, reject: false });
  expect(r.exitCode, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Awaited<ReturnType<typeof compressInChild>>;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-compress-test-'));
  small = join(work, 'small.bin');
  await writeFile(small, Buffer.concat([randomBytes(MiB / 4), text(MiB / 2), Buffer.alloc(1 * MiB), randomBytes(1234)]));
  big = join(work, 'big.bin');
  const fh = await open(big, 'wx');
  try {
    await fh.truncate(BIG_SIZE);
    // Random blocks, unaligned ones too, a text run and a block at the very end.
    // (Random data is what costs xz time, about 0.4 s a MiB: 64 KiB pieces keep it to a second.)
    for (const mib of [0, 1, 17, 40, 48, 49, 72, 90]) await fh.write(randomBytes(MiB / 16), 0, MiB / 16, mib * MiB);
    await fh.write(randomBytes(100_000), 0, 100_000, 60 * MiB + 12345);
    await fh.write(text(MiB / 2), 0, MiB / 2, 24 * MiB + 7);
    await fh.write(randomBytes(4096), 0, 4096, BIG_SIZE - 4096);
  } finally {
    await fh.close();
  }
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('compressFile', () => {
  it('knows the suffix of each compression', () => {
    expect(COMPRESSIONS).toEqual(['bz2', 'gz', 'xz', 'zst', 'none']);
    expect(COMPRESSION_SUFFIX).toEqual({ bz2: '.bz2', gz: '.gz', xz: '.xz', zst: '.zst', none: '' });
  });

  for (const kind of ['bz2', 'gz', 'xz', 'zst'] as const) {
    it(`${kind}: decompresses with ${DECOMPRESSORS[kind].map((d) => d.split(' ')[0]).join(', ')} to exactly the input, deterministically`, { timeout: 300_000 }, async () => {
      const expectedTool = { bz2: ['lbzip2', 'bzip2'], gz: ['gzip'], xz: ['xz'], zst: ['zstd'] }[kind];
      for (const input of [small, big]) {
        const out1 = `${input}.1${COMPRESSION_SUFFIX[kind]}`;
        const out2 = `${input}.2${COMPRESSION_SUFFIX[kind]}`;
        const r = await compressFile(input, out1, kind);
        expect(expectedTool).toContain(r.tool);
        expect((await stat(out1)).size).toBeLessThan((await stat(input)).size);
        for (const d of DECOMPRESSORS[kind]) await expectDecompresses(d, out1, input);
        // Determinism: a second run gives the same bytes.
        expect((await compressFile(input, out2, kind)).tool).toBe(r.tool);
        expect(await sameBytes(out1, out2), `${kind} output differs between two runs`).toBe(true);
        await rm(out1);
        await rm(out2);
      }
    });
  }

  it('xz: multi-threaded output has several blocks, and single-threaded xz reads it', { timeout: 300_000 }, async () => {
    const out = `${big}.mt.xz`;
    await compressFile(big, out, 'xz');
    const list = await execa('xz', ['--robot', '--list', out]);
    const totals = list.stdout.split('\n').find((l) => l.startsWith('totals\t'))!.split('\t');
    // totals <streams> <blocks> <compressed> <uncompressed> ...
    expect(Number(totals[2])).toBeGreaterThan(1);
    expect(Number(totals[4])).toBe(BIG_SIZE);
    await expectDecompresses('xz -dc -T1', out, big);
    await execa('xz', ['-t', '-T1', out]);
    // And the same bytes as xz -T2 (-T0's output does not depend on the number of threads).
    const t2 = await execa('xz', ['-6', '-T2', '-c', big], { encoding: 'buffer', stripFinalNewline: false });
    expect(Buffer.compare(Buffer.from(t2.stdout), await readFile(out))).toBe(0);
    // Nor on the number of processors: with one, xz >= 5.4 still writes the multi-threaded format
    // (5.2 fell back to the single-threaded one, which differs).
    const one = `${small}.one-cpu.xz`;
    await compressFile(small, `${small}.all-cpus.xz`, 'xz');
    const taskset = await execa('taskset', ['-c', '0', 'xz', '-6', '-T0', '-c', small], { encoding: 'buffer', stripFinalNewline: false, reject: false });
    if (taskset.exitCode === 0) {
      await writeFile(one, taskset.stdout);
      expect(await sameBytes(one, `${small}.all-cpus.xz`)).toBe(true);
      await rm(one);
    }
    await rm(`${small}.all-cpus.xz`);
    await rm(out);
  });

  it('zst: records the size in the frame header', async () => {
    const out = `${small}.hdr.zst`;
    await compressFile(small, out, 'zst');
    const list = await execa('zstd', ['-lv', out]);
    expect(list.stdout).toMatch(new RegExp(`Decompressed Size:.*\\(${(await stat(small)).size} B\\)`));
    await rm(out);
  });

  it('none: a sparse copy, byte for byte', { timeout: 120_000 }, async () => {
    const out = `${big}.copy`;
    expect(COMPRESSION_SUFFIX.none).toBe('');
    expect((await compressFile(big, out, 'none')).tool).toBe('cp');
    expect(await sameBytes(big, out)).toBe(true);
    const st = await stat(out);
    expect(st.size).toBe(BIG_SIZE);
    // Only the data blocks take space (about 17 MiB of 96).
    expect(st.blocks * 512).toBeLessThan(32 * MiB);
    await rm(out);
  });

  it('compressBzip2 still returns the tool it used', async () => {
    const out = `${small}.compat.bz2`;
    expect(['lbzip2', 'bzip2']).toContain(await compressBzip2(small, out));
    await expectDecompresses('bzip2 -dc', out, small);
    await rm(out);
  });

  it('refuses an existing output and leaves it alone', async () => {
    const out = join(work, 'exists.xz');
    await writeFile(out, 'precious');
    const err = await compressFile(small, out, 'xz').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OemError);
    expect((err as OemError).message).toMatch(/EEXIST/);
    expect(await readFile(out, 'utf8')).toBe('precious');
  });

  it('reports a missing input without creating the output', async () => {
    const out = join(work, 'missing.zst');
    const err = await compressFile(join(work, 'nope.bin'), out, 'zst').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OemError);
    expect((err as OemError).message).toMatch(/cannot read .*nope\.bin: ENOENT/);
    expect(existsSync(out)).toBe(false);
  });

  it('stops when aborted and removes the partial output', { timeout: 120_000 }, async () => {
    const out = `${big}.aborted.xz`;
    const ctrl = new AbortController();
    const t = setTimeout(() => ctrl.abort(), 50);
    const started = Date.now();
    const err = await compressFile(big, out, 'xz', ctrl.signal).catch((e: unknown) => e);
    clearTimeout(t);
    expect(err).toBeInstanceOf(OemError);
    expect((err as OemError).code).toBe('interrupted');
    expect(Date.now() - started).toBeLessThan(5000);
    expect(existsSync(out)).toBe(false);
    // An already aborted signal does not even start.
    await expect(compressFile(small, out, 'gz', AbortSignal.abort())).rejects.toMatchObject({ code: 'interrupted' });
    expect(existsSync(out)).toBe(false);
  });

  it('is not changed by the variables that add options to the tools (BZIP2, GZIP, XZ_OPT, ZSTD_CLEVEL, ...)', async () => {
    const plain: Record<string, string> = {};
    for (const kind of ['bz2', 'gz', 'xz', 'zst'] as const) {
      const out = `${small}.env-a${COMPRESSION_SUFFIX[kind]}`;
      await compressFile(small, out, kind);
      plain[kind] = (await readFile(out)).toString('base64');
      await rm(out);
    }
    const vars = { BZIP: '-1', BZIP2: '-1', LBZIP2: '-1', GZIP: '-1', XZ_OPT: '-0', XZ_DEFAULTS: '-0', ZSTD_CLEVEL: '1', LANG: 'de_DE.UTF-8', LC_ALL: 'de_DE.UTF-8' };
    const saved = { ...process.env };
    Object.assign(process.env, vars);
    try {
      for (const kind of ['bz2', 'gz', 'xz', 'zst'] as const) {
        const out = `${small}.env-b${COMPRESSION_SUFFIX[kind]}`;
        await compressFile(small, out, kind);
        expect((await readFile(out)).toString('base64'), kind).toBe(plain[kind]);
        await rm(out);
      }
      // The same scrub for the filters that block reuse runs (src/tools.ts filter).
      const { filter } = await import('../src/tools.js');
      const env: Buffer[] = [];
      await filter('sh', ['-c', 'echo "$BZIP2|$XZ_OPT|$LC_ALL|$LANG"'], Buffer.alloc(0), (c) => env.push(c), { failure: (why) => new OemError(why) });
      expect(Buffer.concat(env).toString()).toBe('||C|\n');
    } finally {
      for (const k of Object.keys(vars)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });

  it('names the Debian package of a missing tool; gzip falls back to zlib, deterministically', { timeout: 120_000 }, async () => {
    const empty = join(work, 'empty-path');
    await mkdir(empty, { recursive: true });
    const out = (name: string) => join(work, `nopath-${name}`);
    const res = await compressInChild(
      [
        { input: small, output: out('x.xz'), kind: 'xz' },
        { input: small, output: out('x.zst'), kind: 'zst' },
        { input: small, output: out('x.bz2'), kind: 'bz2' },
        { input: small, output: out('1.gz'), kind: 'gz' },
        { input: small, output: out('2.gz'), kind: 'gz' },
      ],
      { path: empty },
    );
    expect(res[0]).toMatchObject({ code: 'missingTool', outputLeft: false });
    expect(res[0]!.hint).toMatch(/xz-utils/);
    expect(res[1]).toMatchObject({ code: 'missingTool', outputLeft: false });
    expect(res[1]!.hint).toMatch(/\bzstd\b/);
    expect(res[2]).toMatchObject({ code: 'missingTool', outputLeft: false });
    expect(res[2]!.hint).toMatch(/\bbzip2\b/);
    expect(res[3]).toEqual({ tool: 'node:zlib', outputLeft: true });
    expect(res[4]).toEqual({ tool: 'node:zlib', outputLeft: true });
    await expectDecompresses('gzip -dc', out('1.gz'), small);
    expect(await sameBytes(out('1.gz'), out('2.gz'))).toBe(true);
    // No name and no time in the header, as with gzip -n.
    const head = (await readFile(out('1.gz'))).subarray(0, 10);
    expect(head[3]! & 0x08).toBe(0);
    expect(head.readUInt32LE(4)).toBe(0);
  });

  const canUnshare = (() => {
    try {
      const dir = join(tmpdir(), `oem-unshare-probe-${process.pid}`);
      return (
        execaSync('sh', ['-c', 'mkdir -p "$1" && unshare -rm sh -c "mount -t tmpfs -o size=1m tmpfs \\"$1\\"" sh "$1"; r=$?; rmdir "$1"; exit $r', 'sh', dir], { reject: false })
          .exitCode === 0
      );
    } catch {
      return false;
    }
  })();

  it.skipIf(!canUnshare)('a full disk is a noSpace error, and the partial output is removed', { timeout: 120_000 }, async () => {
    // A 1 MiB tmpfs in a private mount namespace; 3 MiB of random bytes cannot fit, compressed or not.
    const full = join(work, 'full');
    await mkdir(full, { recursive: true });
    const input = join(work, 'incompressible.bin');
    await writeFile(input, randomBytes(3 * MiB));
    const kinds: Compression[] = ['bz2', 'gz', 'xz', 'zst', 'none'];
    const res = await compressInChild(kinds.map((kind) => ({ input, output: join(full, `out${COMPRESSION_SUFFIX[kind]}.${kind}`), kind })), { tmpfs: full });
    for (const [i, r] of res.entries()) {
      expect(r, kinds[i]).toMatchObject({ code: 'noSpace', outputLeft: false });
      expect(r.message).toMatch(/no space left on the device while writing/);
    }
    // Node's zlib path (no gzip on PATH): ENOSPC from a write in Node.
    const bin = join(work, 'bin-without-gzip');
    await mkdir(bin, { recursive: true });
    for (const t of ['sh', 'mount', 'unshare']) {
      const p = (await execa('sh', ['-c', `command -v ${t}`])).stdout.trim();
      await symlink(p, join(bin, t)).catch(() => undefined);
    }
    const z = await compressInChild([{ input, output: join(full, 'z.gz'), kind: 'gz' }], { tmpfs: full, path: `${bin}:/nonexistent` });
    expect(z[0]).toMatchObject({ code: 'noSpace', outputLeft: false });
  });
});
