import { defineConfig } from 'vitest/config';

/**
 * What oci-common's retrier writes with console.warn on every failed attempt (retrier.js; its
 * `LOG.logger` setting governs only its debug lines, not these). Tests inject 429/500 and
 * 404s on purpose; the error itself still reaches the code under test (and fails the test when
 * it should), so only the SDK's notice is dropped.
 */
const SDK_RETRY_NOTICE =
  /^(Request failed with Exception : |Request cannot be retried\. Not Retrying\.|All retry attempts have exhausted\.)/;

// Host tests. Tests that need a SCSI device live in test/guest/ and run inside the UML guest
// (scripts/guest/run-guest-tests.mjs, vitest.guest.config.ts).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/guest/**', '**/node_modules/**'],
    pool: 'forks',
    testTimeout: 30_000,
    onConsoleLog: (log, type) =>
      type === 'stderr' && SDK_RETRY_NOTICE.test(log) ? false : undefined,
  },
});
