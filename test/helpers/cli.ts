import { execa } from 'execa';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = fileURLToPath(new URL('../../bin/run.js', import.meta.url));

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs the built `oem` CLI as a user would, as a separate process. */
export async function oem(args: string[], opts: { env?: Record<string, string>; cwd?: string; input?: string } = {}): Promise<CliResult> {
  const r = await execa(process.execPath, [BIN, ...args], {
    reject: false,
    // Decompressed bases are cached (src/image/base-cache.ts): in a temporary directory, not the home.
    env: { OEM_CACHE_DIR: join(tmpdir(), 'oem-test-cache'), ...opts.env, NO_COLOR: '1' },
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    ...(opts.input !== undefined ? { input: opts.input } : { stdin: 'ignore' }),
  });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Runs `oem ... --json` and parses stdout. */
export async function oemJson<T = unknown>(args: string[], opts: Parameters<typeof oem>[1] = {}): Promise<{ result: CliResult; json: T }> {
  const result = await oem([...args, '--json'], opts);
  let json: T;
  try {
    json = JSON.parse(result.stdout) as T;
  } catch {
    throw new Error(`oem ${args.join(' ')} --json printed no JSON (exit ${result.exitCode}):\n${result.stdout}\n${result.stderr}`);
  }
  return { result, json };
}

/** An expected failure: one line (plus an optional hint line), no stack trace. */
export function expectCleanError(r: CliResult): string {
  if (r.exitCode === 0) throw new Error(`expected failure, got exit 0:\n${r.stdout}`);
  if (/\n\s+at /.test(r.stderr)) throw new Error(`stack trace printed:\n${r.stderr}`);
  // Progress lines ("oem: ...") may come before; exactly one error line, optionally followed by a hint.
  const lines = r.stderr.trim().split('\n');
  const errors = lines.filter((l) => l.startsWith('oem: error: '));
  const other = lines.filter((l) => !l.startsWith('oem: ') && !l.startsWith('hint: '));
  if (errors.length !== 1 || other.length) throw new Error(`expected one error line, got:\n${r.stderr}`);
  return errors[0]!.slice('oem: error: '.length);
}
