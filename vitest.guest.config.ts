import { defineConfig } from 'vitest/config';

// Tests that need a real SCSI device. They run only inside the UML guest started by
// scripts/guest/run-guest-tests.mjs, which passes the files of one scenario on the command line
// (test/guest/*.test.ts run in every scenario, test/guest/<family>/ in that family's scenarios).
// One worker: every test file of a scenario shares the one device of that guest.
export default defineConfig({
  test: {
    include: ['test/guest/**/*.test.ts'],
    exclude: ['**/node_modules/**', 'test/guest/support/**'],
    pool: 'forks',
    poolOptions: { forks: { singleFork: true } },
    maxWorkers: 1,
    minWorkers: 1,
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    teardownTimeout: 30_000,
    watch: false,
  },
});
