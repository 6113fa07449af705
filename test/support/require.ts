/**
 * Tests that need a tool (redis-server, libiscsi, a built dist/, Linux…): by hand a missing tool
 * skips them with the reason; under CI (or LBA_STATUS_REQUIRE_*=1) it is a failure that says
 * what is missing, so that CI can never pass by skipping.
 */
import { describe, it } from 'vitest';

const env = process.env;
/** Under CI or LBA_STATUS_REQUIRE_* a skip is a failure. */
export const REQUIRED =
  (env.CI !== undefined && env.CI !== '' && env.CI !== 'false' && env.CI !== '0') ||
  env.LBA_STATUS_REQUIRE_GUEST === '1' ||
  env.LBA_STATUS_REQUIRE_HOST === '1';

/**
 * `describe` when nothing is missing (`missing` undefined); else skipped with the reason, or —
 * under CI / LBA_STATUS_REQUIRE_* — one failing test that says why.
 */
export function describeIf(name: string, missing: string | undefined, fn: () => void): void {
  if (!missing) {
    describe(name, fn);
    return;
  }
  if (REQUIRED) {
    describe(name, () => {
      it('has what it needs to run', () => {
        throw new Error(`cannot run: ${missing} (under CI a skipped test is a failure)`);
      });
    });
    return;
  }
  console.warn(`test skipped: ${name}: ${missing}`);
  describe.skip(`${name} [skipped: ${missing}]`, fn);
}
