import { basename } from 'node:path';
import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

/**
 * The slowest test files, slowest first (see the end of a run's output): started first, so that on a
 * fresh checkout (no timing cache yet) the run does not end waiting on one of them started last.
 */
const SLOW_FIRST = ['inject-key', 'build', 'build-artifacts', 'build-sysext', 'pipeline', 'build-providers-flatcar', 'build-providers-coreos', 'fetch', 'inspect', 'compress', 'build-reproducible', 'publish', 'bzip2-reuse', 'formats', 'formats-bundles', 'inspect-sysext'];

class SlowFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification) => {
      const i = SLOW_FIRST.indexOf(basename(f.moduleId).replace(/\.test\.ts$/, ''));
      return i < 0 ? SLOW_FIRST.length : i;
    };
    const rest = await super.sort(files);
    return [...rest].sort((a, b) => rank(a) - rank(b));
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    pool: 'forks',
    // Test files wait on child processes (compressors, qemu-img, mkfs) much of the time: on 2 cores,
    // 3 files at once finish sooner than vitest's default of cores - 1.
    maxWorkers: 3,
    sequence: { sequencer: SlowFirst },
    globalSetup: ['test/helpers/global-setup.ts'],
    reporters: ['default', './test/helpers/summary-reporter.ts'],
  },
});
