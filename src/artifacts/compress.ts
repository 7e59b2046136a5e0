/**
 * Compression of artifacts with the stock tools, streamed to a file. The tool reads the input file
 * and writes the output file itself (both are handed over as file descriptors), so no data passes
 * through Node:
 *
 *   bz2   lbzip2 -9 (parallel) when installed, else bzip2 -9
 *   gz    gzip -9 -n (no name, no timestamp), else Node's zlib at level 9
 *   xz    xz -6 -T0 (multi-threaded: the input is cut in 24 MiB blocks, compressed in parallel)
 *   zst   zstd -10 -T0
 *   none  a sparse copy (cp --sparse=always)
 *
 * The output of each is deterministic: the same input gives the same bytes, whatever the number of
 * processors (xz >= 5.4 always uses its multi-threaded encoder with -T0, whose block layout does
 * not depend on the thread count; zstd's output is the same for any -T >= 1; lbzip2's for any -n).
 * It can differ between tools (lbzip2 vs bzip2, gzip vs zlib) and tool versions. Environment
 * variables that change a tool's defaults (XZ_OPT, GZIP, BZIP2, ...) are not passed on.
 *
 * The output is created exclusively and removed on any failure; callers use temporary names and
 * rename when complete.
 */
import { execa, type Options } from 'execa';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { constants as zlibConstants, createGzip } from 'node:zlib';
import { OemError, describe } from '../shared/errors.js';
import { requireTool, toolEnv, which } from '../tools.js';
import { COMPRESSIONS, type Compression } from '../compression.js';

export async function bzip2Tool(): Promise<string> {
  if (await which('lbzip2')) return 'lbzip2';
  await requireTool('bzip2', 'compress images (lbzip2 is faster)');
  return 'bzip2';
}

/** Compresses `input` to `output` with bzip2 -9; returns the tool used. */
export async function compressBzip2(input: string, output: string, signal?: AbortSignal): Promise<string> {
  return (await compressFile(input, output, 'bz2', signal)).tool;
}

/** How one compression is done: an external filter (stdin → stdout), Node's zlib, or cp. */
type Plan = { kind: 'filter'; tool: string; args: string[] } | { kind: 'zlib'; tool: 'node:zlib' } | { kind: 'copy'; tool: 'cp' };

async function planFor(kind: Compression): Promise<Plan> {
  switch (kind) {
    case 'bz2':
      return { kind: 'filter', tool: await bzip2Tool(), args: ['-9', '-c'] };
    case 'gz':
      // Node's zlib is the fallback: deterministic too, but not the same bytes as gzip's.
      if (await which('gzip')) return { kind: 'filter', tool: 'gzip', args: ['-9', '-n', '-c'] };
      return { kind: 'zlib', tool: 'node:zlib' };
    case 'xz':
      await requireTool('xz', 'compress to .xz');
      return { kind: 'filter', tool: 'xz', args: ['-6', '-T0', '-c'] };
    case 'zst':
      await requireTool('zstd', 'compress to .zst');
      // -19 takes hours on a 4.7 GB image; -10 is within a few percent of it at a fraction of the time.
      return { kind: 'filter', tool: 'zstd', args: ['-10', '-T0', '-q', '-c'] };
    case 'none':
      await requireTool('cp', 'copy the image');
      return { kind: 'copy', tool: 'cp' };
    default:
      throw new OemError(`unknown compression ${JSON.stringify(kind)}`, { code: 'usage', hint: `use one of ${COMPRESSIONS.join(', ')}` });
  }
}

/**
 * How far a filter has read its input: the tool reads the file description we opened (its stdin),
 * so the file offset in /proc/self/fdinfo is its position. Polled twice a second; nothing on
 * systems without /proc.
 */
function watchReads(src: FileHandle, onProgress: (done: number, total: number) => void): { stop(): void } {
  let total = 0;
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void (async () => {
      try {
        total ||= (await src.stat()).size;
        const m = /^pos:\s*(\d+)/m.exec(await readFile(`/proc/self/fdinfo/${src.fd}`, 'utf8'));
        if (m && total) onProgress(Math.min(Number(m[1]), total), total);
      } catch {
        // No /proc, or the file closed: no progress to report.
      } finally {
        busy = false;
      }
    })();
  }, 500);
  return { stop: () => clearInterval(timer) };
}

/** zstd records the size in its frame header when told it (as it does when given a file name). */
async function extraArgs(tool: string, src: FileHandle): Promise<string[]> {
  if (tool !== 'zstd') return [];
  const st = await src.stat();
  return st.isFile() ? [`--stream-size=${st.size}`] : [];
}

const NO_SPACE = /No space left on device|ENOSPC/i;

/** Opens a compressor's input; a failure names it. */
export async function openInput(input: string): Promise<FileHandle> {
  try {
    return await open(input, 'r');
  } catch (err) {
    throw new OemError(`cannot read ${input}: ${describe(err)}`, { cause: err });
  }
}

/** Creates a compressor's output exclusively (an existing file is never replaced); a failure names it. */
export async function createOutput(output: string): Promise<FileHandle> {
  try {
    return await open(output, 'wx');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOSPC') throw noSpace(output);
    throw new OemError(`cannot create ${output}: ${describe(err)}`, { cause: err, ...(e.code === 'EEXIST' ? { hint: 'remove it first' } : {}) });
  }
}

export function noSpace(output: string): OemError {
  return new OemError(`no space left on the device while writing ${output}`, { code: 'noSpace', hint: 'free some space or write the output elsewhere' });
}

function lastLine(stderr: unknown, exitCode: number | undefined): string {
  return (
    String(stderr ?? '')
      .trim()
      .split('\n')
      .filter(Boolean)
      .pop() ?? `exit code ${exitCode ?? '?'}`
  );
}

/**
 * Compresses `input` into a new file `output` (created exclusively; removed on failure) and returns
 * the tool used ('lbzip2', 'bzip2', 'gzip', 'node:zlib', 'xz', 'zstd' or 'cp'). A missing tool is an
 * OemError 'missingTool' naming the Debian package, a full disk an OemError 'noSpace', an abort
 * through `signal` an OemError 'interrupted'.
 */
export async function compressFile(
  input: string,
  output: string,
  kind: Compression,
  signal?: AbortSignal,
  onProgress?: (done: number, total: number) => void,
): Promise<{ tool: string }> {
  const plan = await planFor(kind);
  if (signal?.aborted) throw new OemError('interrupted while compressing', { code: 'interrupted' });
  const src = await openInput(input);
  let dst: FileHandle | undefined;
  let created = false;
  let ok = false;
  try {
    dst = await createOutput(output);
    // Created exclusively: from here on a failure removes it.
    created = true;
    if (plan.kind === 'zlib') {
      // The streams close the handles when done (with autoClose false, pipeline() would wait
      // forever for their 'close'); closing them again below does nothing.
      await pipeline(
        createReadStream('', { fd: src, highWaterMark: 1024 * 1024 }),
        createGzip({ level: 9, memLevel: 9, strategy: zlibConstants.Z_DEFAULT_STRATEGY }),
        createWriteStream('', { fd: dst, highWaterMark: 1024 * 1024 }),
        ...(signal ? [{ signal }] : []),
      );
    } else {
      const common: Options = { stderr: 'pipe', reject: false, env: toolEnv(), extendEnv: false, ...(signal ? { cancelSignal: signal } : {}) };
      // File descriptors as stdin/stdout: execa passes them to spawn() as they are (its types only
      // list 3 to 9): the tool reads the input and writes the output itself.
      const watch = plan.kind === 'filter' && onProgress ? watchReads(src, onProgress) : undefined;
      const r = await (plan.kind === 'copy'
          ? // cp writes the file we created (O_TRUNC, no O_EXCL); it seeks over runs of zeros.
            execa(plan.tool, ['--sparse=always', '--', resolve(input), resolve(output)], { ...common, stdin: 'ignore', stdout: 'ignore' })
          : execa(plan.tool, [...plan.args, ...(await extraArgs(plan.tool, src))], { ...common, stdin: src.fd, stdout: dst.fd } as Options)
      ).finally(() => watch?.stop());
      if (r.isCanceled || signal?.aborted) throw new OemError('interrupted while compressing', { code: 'interrupted' });
      if (r.exitCode !== 0) {
        const stderr = String(r.stderr ?? '');
        if (NO_SPACE.test(stderr)) throw noSpace(output);
        throw new OemError(`${plan.tool} failed to compress ${input}: ${lastLine(stderr, r.exitCode)}`);
      }
    }
    // Closed here, not in finally, so that a late write error (NFS reports some on close) fails.
    const fh = dst;
    dst = undefined;
    await fh.close();
    ok = true;
    return { tool: plan.tool };
  } catch (err) {
    if (err instanceof OemError) throw err;
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOSPC') throw noSpace(output);
    if (e.name === 'AbortError' || signal?.aborted) throw new OemError('interrupted while compressing', { code: 'interrupted' });
    throw new OemError(`${plan.tool} failed to compress ${input}: ${describe(err)}`, { cause: err });
  } finally {
    await src.close().catch(() => undefined);
    if (dst) await dst.close().catch(() => undefined);
    if (created && !ok) await rm(output, { force: true });
  }
}
