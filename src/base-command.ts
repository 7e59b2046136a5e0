import { Command, Errors } from '@oclif/core';
import { stripVTControlCharacters } from 'node:util';
import { endingSignal, installSignalHandlers, releaseAll } from './cleanup.js';
import { OemError } from './shared/errors.js';

/**
 * Base of every command: expected failures (OemError) end with one line on stderr, an optional hint,
 * and the error's exit code. With --json the error is also printed as JSON on stdout.
 */
export abstract class OemCommand extends Command {
  public override async init(): Promise<void> {
    installSignalHandlers();
    await super.init();
  }

  protected override async finally(err: Error | undefined): Promise<unknown> {
    const problems = await releaseAll();
    for (const p of problems) process.stderr.write(`oem: cleanup: ${p}\n`);
    return super.finally(err);
  }

  protected override async catch(err: Error & { exitCode?: number }): Promise<unknown> {
    // Ctrl-C reaches the tools this process runs as well (the terminal signals the process group),
    // and one of them may fail before the signal's own handler has run: the handler ends the process
    // (exit 130 after everything is released), not this error.
    if (await signalEnding(err)) return new Promise(() => {});
    if (err instanceof OemError) {
      if (this.jsonEnabled()) {
        process.stdout.write(
          JSON.stringify({ error: { message: err.message, code: err.code, exitCode: err.exitCode, hint: err.hint } }, null, 2) +
            '\n',
        );
      }
      process.stderr.write(`oem: error: ${err.message}\n`);
      if (err.hint) process.stderr.write(`hint: ${err.hint}\n`);
      this.exit(err.exitCode);
    }
    if (err instanceof Errors.ExitError) throw err;
    // oclif's own parse errors (unknown flag, missing argument) are usage errors: one line, exit 2.
    if (err instanceof Errors.CLIError && !(err instanceof Errors.ExitError)) {
      const msg = usageLine(err.message);
      process.stderr.write(`oem: error: ${msg}\nhint: see 'oem ${this.id ?? ''} --help'\n`);
      this.exit(err.oclif?.exit ?? 2);
    }
    // Anything else is unexpected: still one line (the stack with OEM_DEBUG=1), and a non-zero exit.
    if (process.env.OEM_DEBUG) process.stderr.write(`${err.stack ?? err}\n`);
    const code = (err as NodeJS.ErrnoException).code;
    process.stderr.write(`oem: error: ${err.message.split('\n')[0]}${code && !err.message.includes(code) ? ` (${code})` : ''}\n`);
    if (code === 'ENOSPC') this.exit(7);
    this.exit(1);
  }
}

/**
 * oclif's parse error as one line: "The following error occurred:" and "See more help with --help"
 * dropped, what they framed kept ("Missing required flag key"; "Missing 1 required arg: image (raw or
 * compressed disk image)").
 */
export function usageLine(message: string): string {
  const lines = stripVTControlCharacters(message)
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/^See more help with/i.test(l) && !/^The following errors? occurred:$/i.test(l));
  const [first = message, ...rest] = lines;
  if (!rest.length) return first;
  const more = rest.map((l) => l.replace(/^(\S+)\s{2,}(.+)$/, '$1 ($2)'));
  return first.endsWith(':') ? `${first} ${more.join('; ')}` : [first, ...more].join('; ');
}

/**
 * Whether a signal is ending the process: at once, or, for an error that a signal can cause (a tool
 * killed by one, an interruption), once the signal had time to arrive (its handler runs from the
 * event loop, after a child's exit may have been seen).
 */
async function signalEnding(err: Error): Promise<boolean> {
  if (endingSignal()) return true;
  const bySignal = (err instanceof OemError && err.code === 'interrupted') || /\bSIG(INT|TERM|HUP)\b/.test(err.message);
  if (!bySignal) return false;
  for (let i = 0; i < 20 && !endingSignal(); i++) await new Promise((r) => setTimeout(r, 25));
  return endingSignal() !== undefined;
}
