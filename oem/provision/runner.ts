/**
 * How the provisioning engine runs programs (groupadd, useradd, usermod, groupmod): a Runner never
 * throws for a failing program, it reports the exit code; `runChecked` turns a failure into an
 * OemError naming the command and its stderr.
 */
import { execa } from 'execa';
import { OemError } from '../../src/shared/errors.js';

export interface RunOptions {
  /** Text for the program's stdin (default: none). */
  input?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Milliseconds before the program is killed (default: no limit). */
  timeoutMs?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export type Runner = (cmd: string, args: string[], opts?: RunOptions) => Promise<RunResult>;

/** Runs the program with execa: no shell, stdin closed unless `input`, output collected. */
export const execaRunner: Runner = async (cmd, args, opts = {}) => {
  const r = await execa(cmd, args, {
    reject: false,
    stripFinalNewline: true,
    ...(opts.input !== undefined ? { input: opts.input } : { stdin: 'ignore' as const }),
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.timeoutMs !== undefined ? { timeout: opts.timeoutMs } : {}),
  });
  const stdout = typeof r.stdout === 'string' ? r.stdout : '';
  let stderr = typeof r.stderr === 'string' ? r.stderr : '';
  let exitCode = r.exitCode;
  if (exitCode === undefined) {
    // Not started (ENOENT), killed by a signal, or timed out.
    exitCode = (r as { code?: string }).code === 'ENOENT' ? 127 : 128;
    if (stderr === '') stderr = r.shortMessage ?? r.message ?? `${cmd} failed`;
  }
  return { stdout, stderr, exitCode };
};

export interface RecordedCall {
  cmd: string;
  args: string[];
  opts?: RunOptions;
}

export type RecordingRunner = Runner & { calls: RecordedCall[] };

/**
 * A runner that runs nothing: it records each call and answers with `answer(cmd, args)` (default:
 * success, empty output). For dry runs and tests.
 */
export function recordingRunner(answer?: (cmd: string, args: string[]) => Partial<RunResult> | undefined): RecordingRunner {
  const calls: RecordedCall[] = [];
  const run = (async (cmd: string, args: string[], opts?: RunOptions) => {
    calls.push({ cmd, args: [...args], ...(opts ? { opts } : {}) });
    const a = answer?.(cmd, args) ?? {};
    return { stdout: a.stdout ?? '', stderr: a.stderr ?? '', exitCode: a.exitCode ?? 0 };
  }) as RecordingRunner;
  run.calls = calls;
  return run;
}

/**
 * Runs and throws an OemError when the program fails. `show` is the command line for messages (so
 * secrets such as password hashes can be left out of it).
 */
export async function runChecked(run: Runner, cmd: string, args: string[], show?: string): Promise<RunResult> {
  const r = await run(cmd, args);
  if (r.exitCode !== 0) {
    const line = show ?? [cmd, ...args].join(' ');
    const why = r.stderr.trim().split('\n').filter((l) => l.trim() !== '').pop() ?? '';
    const code = r.exitCode === 127 ? 'missingTool' : 'failure';
    throw new OemError(`${line} failed (exit code ${r.exitCode})${why ? `: ${why}` : ''}`, { code });
  }
  return r;
}
