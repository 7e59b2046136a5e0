import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    pool: 'forks',
    // Test files wait on child processes (compressors, qemu-img, mkfs) much of the time: on 2 cores,
    // 3 files at once finish sooner than vitest's default of cores - 1.
    maxWorkers: 3,
    globalSetup: ['test/helpers/global-setup.ts'],
    reporters: ['default', './test/helpers/summary-reporter.ts'],
  },
});
