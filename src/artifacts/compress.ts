/**
 * Compression of artifacts with the stock tools, streamed to a file: bzip2 through lbzip2 when
 * installed (parallel), else bzip2. Output is written to the given path only (callers use temporary
 * names and rename when complete).
 */
import { execa } from 'execa';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { OemError } from '../errors.js';
import { requireTool, which } from '../tools.js';

export async function bzip2Tool(): Promise<string> {
  if (await which('lbzip2')) return 'lbzip2';
  await requireTool('bzip2', 'compress images (lbzip2 is faster)');
  return 'bzip2';
}

/** Compresses `input` to `output` with bzip2 -9; returns the tool used. */
export async function compressBzip2(input: string, output: string, signal?: AbortSignal): Promise<string> {
  const tool = await bzip2Tool();
  const child = execa(tool, ['-9', '-c', input], { stdout: 'pipe', stderr: 'pipe', buffer: { stdout: false, stderr: true }, reject: false, ...(signal ? { cancelSignal: signal } : {}) });
  try {
    await pipeline(child.stdout!, createWriteStream(output, { flags: 'wx' }));
    const r = await child;
    if (r.exitCode !== 0) throw new OemError(`${tool} failed: ${String(r.stderr).trim().split('\n').pop() ?? ''}`);
    return tool;
  } catch (err) {
    child.kill();
    await rm(output, { force: true });
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new OemError(`no space left on the device while writing ${output}`, { code: 'noSpace' });
    throw err;
  }
}
