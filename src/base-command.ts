import { Command, Errors } from '@oclif/core';
import { stripVTControlCharacters } from 'node:util';
import { installSignalHandlers, releaseAll } from './cleanup.js';
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
