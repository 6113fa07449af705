import { defineConfig } from 'vitest/config';

// Host tests. Tests that need a SCSI device live in test/guest/ and run inside the UML guest
// (scripts/guest/run-guest-tests.mjs, vitest.guest.config.ts).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/guest/**', '**/node_modules/**'],
    pool: 'forks',
    testTimeout: 30_000,
  },
});
