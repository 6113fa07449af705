#!/usr/bin/env node
// `npm test` after the build: the host tests (vitest.config.ts: unit, native, simulator and the
// host integration tests of test/host/, which run the built CLI as an unprivileged user against
// `sim serve`, the host's tgtd and qemu-img), then the real-kernel tests in the UML guests
// (scripts/guest/run-guest-tests.mjs), then one closing line with the sum of both:
// `N passed, N failed` (`, N skipped` when any). Exits non-zero if either part failed. Under CI
// (CI=true) or LBA_STATUS_REQUIRE_GUEST=1 neither part may skip: a host test that cannot run
// (not root, tgt/qemu-img/setpriv missing) and a guest that cannot boot are failures.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const scratch = mkdtempSync(join(tmpdir(), 'lba-status-test-'));
const hostReport = join(scratch, 'host.json');
const guestOut = process.env.LBA_STATUS_GUEST_OUT ?? join(root, '.guest-out');

const host = spawnSync(
  process.execPath,
  [
    join(root, 'node_modules/vitest/vitest.mjs'),
    'run',
    '--reporter=default',
    '--reporter=json',
    `--outputFile=${hostReport}`,
  ],
  { cwd: root, stdio: 'inherit' },
);
let hostCounts = { passed: 0, failed: 0, skipped: 0 };
try {
  const report = JSON.parse(readFileSync(hostReport, 'utf8'));
  hostCounts = {
    passed: report.numPassedTests,
    failed: report.numFailedTests,
    skipped: report.numPendingTests + report.numTodoTests,
  };
} catch {
  hostCounts.failed = 1; // no report: vitest itself failed
}

rmSync(join(guestOut, 'summary.json'), { force: true }); // never count an earlier run
const guest = spawnSync(process.execPath, [join(root, 'scripts/guest/run-guest-tests.mjs')], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, LBA_STATUS_GUEST_OUT: guestOut },
});
let guestCounts = { passed: 0, failed: 0, skipped: 0 };
try {
  guestCounts = JSON.parse(readFileSync(join(guestOut, 'summary.json'), 'utf8'));
} catch {
  if (guest.status !== 0) guestCounts.failed = 1;
}

const passed = hostCounts.passed + guestCounts.passed;
const failed = hostCounts.failed + guestCounts.failed;
const skipped = hostCounts.skipped + guestCounts.skipped;
const ok = host.status === 0 && guest.status === 0 && failed === 0;
console.log(
  `\ntests: host ${hostCounts.passed} passed, ${hostCounts.failed} failed; real-kernel guests ${guestCounts.passed} passed, ${guestCounts.failed} failed`,
);
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(ok ? 0 : 1);
