/**
 * The one error type of the tool: a one-line message, an optional hint for the user, and the exit
 * code the process ends with. Expected failures are OemErrors and never print a stack trace.
 */
export const ExitCode = {
  failure: 1,
  usage: 2,
  badImage: 3,
  verification: 4,
  network: 5,
  missingTool: 6,
  noSpace: 7,
  interrupted: 130,
} as const;
export type ExitCodeName = keyof typeof ExitCode;

export class OemError extends Error {
  readonly exitCode: number;
  readonly hint?: string;
  readonly code: ExitCodeName;

  constructor(message: string, opts: { code?: ExitCodeName; hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'OemError';
    this.code = opts.code ?? 'failure';
    this.exitCode = ExitCode[this.code];
    if (opts.hint !== undefined) this.hint = opts.hint;
  }
}

export function badImage(message: string, hint?: string): OemError {
  return new OemError(message, { code: 'badImage', ...(hint === undefined ? {} : { hint }) });
}

/** A short description of any thrown value, for wrapping unexpected errors in one line. */
export function describe(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0] ?? String(err);
  return String(err);
}
