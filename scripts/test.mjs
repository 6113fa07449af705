#!/usr/bin/env node
// `npm test` after the build: the host tests (vitest.config.ts: unit, native, simulator and the
// host integration tests of test/host/, which run the built CLI as an unprivileged user against
// `sim serve`, the host's tgtd and qemu-img), then the real-kernel tests in the UML guests
// (scripts/guest/run-guest-tests.mjs), then one closing line with the sum of both:
// `N passed, N failed` (`, N skipped` when any). Exits non-zero if either part failed. Under CI
// (CI=true) or LBA_STATUS_REQUIRE_GUEST=1 neither part may skip: a host test that cannot run
// (not root, tgt/qemu-img/setpriv missing) and a guest that cannot boot are failures.
//
// The host tests run with TMPDIR set to a fresh directory of their own; whatever is left in it
// afterwards (a test or `sim serve` that did not remove its temporary files) fails the run,
// each leftover named with its size. LBA_STATUS_KEEP_TMP=1 keeps the directory for a look.
import { spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const scratch = mkdtempSync(join(tmpdir(), 'lba-status-test-'));
const hostReport = join(scratch, 'host.json');
const guestOut = process.env.LBA_STATUS_GUEST_OUT ?? join(root, '.guest-out');
// The host tests' TMPDIR: sticky and world-writable like /tmp, since they run the CLI as nobody.
const hostTmp = mkdtempSync(join(tmpdir(), 'lba-status-host-tmp-'));
chmodSync(hostTmp, 0o1777);

/** Bytes under `path` (no symlinks followed). */
function du(path) {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st) return 0;
  if (!st.isDirectory()) return st.size;
  let total = 0;
  for (const name of readdirSync(path)) total += du(join(path, name));
  return total;
}

const host = spawnSync(
  process.execPath,
  [
    join(root, 'node_modules/vitest/vitest.mjs'),
    'run',
    '--reporter=default',
    '--reporter=json',
    `--outputFile=${hostReport}`,
  ],
  { cwd: root, stdio: 'inherit', env: { ...process.env, TMPDIR: hostTmp } },
);
const leftovers = readdirSync(hostTmp).sort();
if (leftovers.length > 0) {
  console.error(
    `\nhost tests left ${leftovers.length} temporary file(s) in TMPDIR (${hostTmp}); each test and sim serve must remove what it makes:`,
  );
  for (const name of leftovers) console.error(`  ${name}  ${du(join(hostTmp, name))} bytes`);
}
if (process.env.LBA_STATUS_KEEP_TMP === '1') console.error(`(kept ${hostTmp})`);
else rmSync(hostTmp, { recursive: true, force: true });
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
rmSync(scratch, { recursive: true, force: true });
const clean = leftovers.length === 0;
const ok = host.status === 0 && guest.status === 0 && failed === 0 && clean;
console.log(
  `\ntests: host ${hostCounts.passed} passed, ${hostCounts.failed} failed${clean ? '' : `, ${leftovers.length} temporary file(s) left in TMPDIR`}; real-kernel guests ${guestCounts.passed} passed, ${guestCounts.failed} failed`,
);
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(ok ? 0 : 1);
