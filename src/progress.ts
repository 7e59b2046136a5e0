/**
 * Progress for long steps: a listr2 task list on a terminal, plain lines on stderr otherwise (CI logs),
 * nothing on stdout (which --json keeps for the result).
 */
import { Listr } from 'listr2';
import { formatBytes } from './format.js';

export interface Reporter {
  /** A milestone line ("verified ...", "downloaded ..."). */
  log(line: string): void;
  /** Bytes done of total, for the running step. */
  progress(done: number, total: number | undefined): void;
}

export function interactive(json: boolean): boolean {
  return !json && Boolean(process.stdout.isTTY) && !process.env.CI;
}

/** Runs `fn` as one task with a live title on a terminal, or with plain stderr lines otherwise. */
export async function runWithProgress<T>(title: string, json: boolean, fn: (r: Reporter) => Promise<T>): Promise<T> {
  if (!interactive(json)) {
    const r: Reporter = { log: (l) => process.stderr.write(`oem: ${l}\n`), progress: () => {} };
    return fn(r);
  }
  let result: T | undefined;
  const started = Date.now();
  const list = new Listr(
    [
      {
        title,
        task: async (_ctx, task) => {
          let last = 0;
          const r: Reporter = {
            log: (l) => {
              task.output = l;
            },
            progress: (done, total) => {
              const now = Date.now();
              if (now - last < 200 && done !== total) return;
              last = now;
              const rate = done / Math.max(0.001, (now - started) / 1000);
              task.title = `${title}: ${formatBytes(done)}${total ? ` of ${formatBytes(total)} (${Math.floor((done / total) * 100)}%)` : ''}, ${formatBytes(rate)}/s`;
            },
          };
          result = await fn(r);
          task.title = title;
        },
        rendererOptions: { outputBar: 3, persistentOutput: true },
      },
    ],
    { renderer: 'default', exitOnError: true, registerSignalListeners: false },
  );
  await list.run();
  return result as T;
}
