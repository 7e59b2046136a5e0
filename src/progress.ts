/**
 * Progress for long steps: a listr2 task list on a terminal, plain `oem: ...` lines on stderr
 * otherwise (CI logs), nothing on stdout (which --json keeps for the result).
 *
 * A run is a sequence of steps ("downloading ...", "decoding the base", "azure: compressing ...").
 * On a terminal the running step is the task's title, with bytes and rate (downloads) or a percentage
 * (decoding, compressing) as it goes, and milestone lines stay below it. Otherwise each step and
 * each milestone is one line, and a step that takes long gets a progress line every few seconds.
 */
import { Listr } from 'listr2';
import { formatBytes } from './format.js';

export type ProgressUnit = 'bytes' | 'percent';

export interface Reporter {
  /** A milestone line ("verified ...", "azure: flatcar_production_azure_image.vhd.bz2 (...)"). */
  log(line: string): void;
  /** Starts a step: what is being done now. */
  step(title: string): void;
  /** How far the running step is: bytes of total (shown with a rate), or done of total as a percentage. */
  progress(done: number, total: number | undefined, unit?: ProgressUnit): void;
}

/** Progress callbacks for library code: each optional, so that callers can pass what they have. */
export type ProgressSink = Partial<Pick<Reporter, 'step' | 'progress'>>;

export function interactive(json: boolean): boolean {
  return !json && Boolean(process.stdout.isTTY) && !process.env.CI;
}

/** Plain lines: every interval this long at most for the progress of one step. */
const PLAIN_PROGRESS_EVERY_MS = 5000;

/** "1.2 GiB of 4.4 GiB (27%), 70 MiB/s" or "42%". */
export function describeProgress(done: number, total: number | undefined, unit: ProgressUnit, seconds: number): string {
  if (unit === 'percent') return `${total ? Math.floor((done / total) * 100) : 0}%`;
  const rate = done / Math.max(0.001, seconds);
  return `${formatBytes(done)}${total ? ` of ${formatBytes(total)} (${Math.floor((done / total) * 100)}%)` : ''}, ${formatBytes(rate)}/s`;
}

/** The reporter for plain output (no terminal, or CI): lines on stderr. */
export function plainReporter(write: (line: string) => void = (l) => void process.stderr.write(`oem: ${l}\n`)): Reporter {
  let title = '';
  let started = Date.now();
  let last = 0;
  return {
    log: write,
    step: (t) => {
      title = t;
      started = Date.now();
      last = started;
      write(t);
    },
    progress: (done, total, unit = 'bytes') => {
      const now = Date.now();
      if (!title || now - last < PLAIN_PROGRESS_EVERY_MS || (total !== undefined && done >= total)) return;
      last = now;
      write(`${title}: ${describeProgress(done, total, unit, (now - started) / 1000)}`);
    },
  };
}

/** Runs `fn` as one task with a live title on a terminal, or with plain stderr lines otherwise. */
export async function runWithProgress<T>(title: string, json: boolean, fn: (r: Reporter) => Promise<T>): Promise<T> {
  if (!interactive(json)) return fn(plainReporter());
  let result: T | undefined;
  const list = new Listr(
    [
      {
        title,
        task: async (_ctx, task) => {
          let step = title;
          let started = Date.now();
          let last = 0;
          const r: Reporter = {
            log: (l) => {
              task.output = l;
            },
            step: (t) => {
              step = t;
              started = Date.now();
              task.title = `${title}: ${t}`;
            },
            progress: (done, total, unit = 'bytes') => {
              const now = Date.now();
              if (now - last < 200 && done !== total) return;
              last = now;
              task.title = `${title}: ${step === title ? '' : `${step}: `}${describeProgress(done, total, unit, (now - started) / 1000)}`;
            },
          };
          result = await fn(r);
          task.title = title;
        },
        rendererOptions: { outputBar: Infinity, persistentOutput: true },
      },
    ],
    { renderer: 'default', exitOnError: true, registerSignalListeners: false },
  );
  await list.run();
  return result as T;
}
