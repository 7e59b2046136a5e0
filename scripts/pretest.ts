/**
 * `npm test`'s preparation: compile, build the agent, type-check and lint, at once (none needs
 * another's output: the agent is bundled from the sources by esbuild). On two cores this takes about
 * the agent's build alone instead of the sum. Each line is prefixed with its step; the first failing
 * step is named at the end and the exit code is non-zero when any failed.
 */
import { execa } from 'execa';

const STEPS = ['build', 'build:agent', 'typecheck', 'lint'];

const failed: string[] = [];
await Promise.all(
  STEPS.map(async (step) => {
    const started = Date.now();
    const sub = execa('npm', ['run', '-s', step], { all: true, reject: false, stdin: 'ignore' });
    let rest = '';
    sub.all?.on('data', (chunk: Buffer) => {
      const lines = (rest + chunk.toString('utf8')).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) process.stdout.write(`[${step}] ${line}\n`);
    });
    const r = await sub;
    if (rest) process.stdout.write(`[${step}] ${rest}\n`);
    process.stdout.write(`[${step}] ${r.exitCode === 0 ? 'done' : `FAILED (exit ${r.exitCode})`} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    if (r.exitCode !== 0) failed.push(step);
  }),
);
if (failed.length) {
  process.stderr.write(`pretest: ${failed.join(', ')} failed\n`);
  process.exit(1);
}
