#!/usr/bin/env node
// Runs the real-kernel tests: one User-Mode Linux guest per scenario (scripts/guest/uml-run.sh),
// each preparing a SCSI device (scripts/guest/scenarios/<family>.sh) and running vitest
// (vitest.guest.config.ts) on that scenario's test files.
//
// Which test files run where (no configuration needed when adding tests):
//   test/guest/*.test.ts                  every scenario
//   test/guest/<family>/**/*.test.ts      every scenario of that family (scsi-debug, tgt-iscsi)
//   test/guest/<scenario>/**/*.test.ts    that scenario only (e.g. test/guest/scsi-debug-4k/)
// A test reads its device from test/guest/support (scenario()).
//
// Usage: node scripts/guest/run-guest-tests.mjs [SCENARIO...] [-- VITEST_ARGS...]
// Environment:
//   LBA_STATUS_REQUIRE_GUEST=1   a guest that cannot run is a failure, not a skip (CI sets it)
//   LBA_STATUS_GUEST_SCENARIOS   comma-separated scenario names (same as the arguments)
//   LBA_STATUS_GUEST_OUT         output directory (default .guest-out in the repository)
//   LBA_STATUS_GUEST_TIMEOUT     seconds per guest before it counts as hung (default 900)
//   LBA_STATUS_GUEST_MEM         guest memory (default 1536M)
// The last line printed is exactly `N passed, N failed` (then `, N skipped` when some were).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const umlRun = join(root, 'scripts/guest/uml-run.sh');
const SD = 'dev_size_mb=16 lbpu=1 lbpws=1';

/** The scenarios, in run order. `family` names the fragment in scenarios/ and the test folder. */
const SCENARIOS = [
  { name: 'scsi-debug', family: 'scsi-debug', scsiDebug: SD },
  { name: 'scsi-debug-4k', family: 'scsi-debug', scsiDebug: `${SD} sector_size=4096` },
  { name: 'scsi-debug-gran8', family: 'scsi-debug', scsiDebug: `${SD} unmap_granularity=8` },
  { name: 'tgt-iscsi', family: 'tgt-iscsi', scsiDebug: '', extraMods: 'iscsi_tcp' },
  // The project's simulator (read-only volume): test/guest/*.test.ts write, so only test/guest/sim/.
  { name: 'sim-iscsi', family: 'sim', scsiDebug: '', extraMods: 'iscsi_tcp', shared: false },
  { name: 'sim-iscsi-4k', family: 'sim', scsiDebug: '', extraMods: 'iscsi_tcp', shared: false },
];

const env = process.env;
const require = env.LBA_STATUS_REQUIRE_GUEST === '1';
const out = resolve(env.LBA_STATUS_GUEST_OUT ?? join(root, '.guest-out'));
const timeoutSec = Number(env.LBA_STATUS_GUEST_TIMEOUT ?? 900);
const mem = env.LBA_STATUS_GUEST_MEM ?? '1536M';

// Harmless UML boot messages, kept in console.log but not repeated on stdout.
const NOISE =
  /^(SELinux: |mmapper_init - find_iomem failed|Failed to initialize ubd device|reboot: System halted)/;

const log = (msg) => console.log(`guest: ${msg}`);
const secs = (ms) => `${(ms / 1000).toFixed(1)}s`;

function parseArgs(argv) {
  const dash = argv.indexOf('--');
  const names = (dash < 0 ? argv : argv.slice(0, dash)).filter((a) => a !== '');
  const vitestArgs = dash < 0 ? [] : argv.slice(dash + 1);
  if (names.length === 0 && env.LBA_STATUS_GUEST_SCENARIOS) {
    names.push(...env.LBA_STATUS_GUEST_SCENARIOS.split(',').filter(Boolean));
  }
  for (const n of names) {
    if (!SCENARIOS.some((s) => s.name === n)) {
      console.error(`unknown scenario ${n}; known: ${SCENARIOS.map((s) => s.name).join(', ')}`);
      process.exit(2);
    }
  }
  const selected = names.length ? SCENARIOS.filter((s) => names.includes(s.name)) : SCENARIOS;
  return { selected, vitestArgs };
}

function testFiles(dir, recursive) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive, withFileTypes: false })
    .map(String)
    .filter((f) => f.endsWith('.test.ts') && !f.split('/').includes('support'))
    .map((f) => relative(root, join(dir, f)))
    .sort();
}

function filesFor(s) {
  const base = join(root, 'test/guest');
  const own = [s.family, s.name].filter((d, i, a) => a.indexOf(d) === i);
  const shared = s.shared === false ? [] : testFiles(base, false);
  return [...shared, ...own.flatMap((d) => testFiles(join(base, d), true))];
}

function which(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
}

/** Why the guest cannot run on this machine, or null. */
function staticReason() {
  if (process.platform !== 'linux') return `not Linux (${process.platform})`;
  if (process.getuid?.() !== 0)
    return 'not root (the guest harness runs as root; see scripts/guest/README.md)';
  if (!existsSync(env.UML ?? '/usr/bin/linux.uml'))
    return 'linux.uml not found: run `sudo bash scripts/setup-system.sh` (Debian user-mode-linux)';
  for (const [cmd, pkg] of [
    ['modprobe', 'kmod'],
    ['sg_get_lba_status', 'sg3-utils'],
    ['tgtd', 'tgt'],
    ['iscsiadm', 'open-iscsi'],
  ]) {
    if (!which(cmd)) return `${cmd} not found: run \`sudo bash scripts/setup-system.sh\` (${pkg})`;
  }
  if (/\s/.test(out) || /\s/.test(root)) return `paths with spaces are not supported (${out})`;
  return null;
}

/** Boots a guest, streams its console with a prefix, resolves with its exit status and time. */
function guest(dir, command, extraEnv, prefix) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const started = Date.now();
  return new Promise((done) => {
    const child = spawn(umlRun, [dir, command], {
      cwd: root,
      env: { ...env, MEM: mem, TIMEOUT: String(timeoutSec), GUEST_CWD: root, ...extraEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines = [];
    const onData = (chunk) => {
      const text = chunk.toString();
      lines.push(text);
      for (const l of text.split('\n')) {
        if (l.trim() && !NOISE.test(l)) process.stdout.write(`${prefix} ${l}\n`);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const stop = () => child.kill('SIGTERM');
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    child.on('close', (code, signal) => {
      process.removeListener('SIGINT', stop);
      process.removeListener('SIGTERM', stop);
      writeFileSync(join(dir, 'console.log'), lines.join(''));
      done({ code: code ?? (signal ? 128 : 1), ms: Date.now() - started });
    });
  });
}

function readResults(file) {
  try {
    const r = JSON.parse(readFileSync(file, 'utf8'));
    const failures = [];
    for (const f of r.testResults ?? []) {
      for (const a of f.assertionResults ?? []) {
        if (a.status === 'failed') failures.push(`${relative(root, f.name)} > ${a.fullName}`);
      }
      if (f.status === 'failed' && !(f.assertionResults ?? []).some((a) => a.status === 'failed')) {
        failures.push(
          `${relative(root, f.name)}: ${(f.message ?? 'failed to run').split('\n')[0]}`,
        );
      }
    }
    return {
      passed: r.numPassedTests ?? 0,
      failed: r.numFailedTests ?? 0,
      skipped: (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0),
      failures,
    };
  } catch {
    return null;
  }
}

async function main() {
  const { selected, vitestArgs } = parseArgs(process.argv.slice(2));
  const plan = selected.map((s) => ({ ...s, files: filesFor(s) }));
  const totals = { passed: 0, failed: 0, skipped: 0 };
  const finish = (rows) => {
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'summary.json'), `${JSON.stringify({ ...totals, rows }, null, 2)}\n`);
    const skipped = totals.skipped ? `, ${totals.skipped} skipped` : '';
    console.log(`${totals.passed} passed, ${totals.failed} failed${skipped}`);
    process.exit(totals.failed ? 1 : 0);
  };
  const cannotRun = (reason) => {
    const files = plan.reduce((n, s) => n + s.files.length, 0);
    log(`guest tests cannot run: ${reason}`);
    totals.skipped = files;
    if (require) {
      log('LBA_STATUS_REQUIRE_GUEST=1: that is a failure');
      totals.failed = 1;
    } else {
      log(`${files} guest test files (per scenario) reported as skipped`);
    }
    finish([{ reason }]);
  };

  const reason = staticReason();
  if (reason) return cannotRun(reason);

  // A first boot proves UML works here (ptrace allowed, /dev/shm large enough) and times a boot.
  const probe = await guest(join(out, 'probe'), 'exit 0', { SCSI_DEBUG: '' }, '[probe]');
  if (probe.code !== 0) {
    return cannotRun(
      `the UML guest did not boot (exit ${probe.code}; ptrace blocked, or see ${relative(root, join(out, 'probe/console.log'))})`,
    );
  }
  log(`guest boot and power-off: ${secs(probe.ms)}`);

  const rows = [];
  const t0 = Date.now();
  for (const s of plan) {
    const dir = join(out, s.name);
    const row = {
      scenario: s.name,
      passed: 0,
      failed: 0,
      skipped: 0,
      ms: 0,
      exit: 0,
      problems: [],
    };
    rows.push(row);
    if (s.files.length === 0) {
      row.problems.push('no test files');
      row.failed = 1;
      totals.failed += 1;
      continue;
    }
    log(`${s.name}: ${s.files.length} test file(s): ${s.files.join(' ')}`);
    const q = (a) => `'${a.replaceAll("'", "'\\''")}'`;
    const vitest = [
      'node node_modules/vitest/vitest.mjs run --config vitest.guest.config.ts',
      '--reporter=default --reporter=json --outputFile.json="$GUEST_OUT/results.json"',
      ...vitestArgs.map(q),
      ...s.files.map(q),
    ].join(' ');
    const command = [
      `. scripts/guest/scenarios/${s.family}.sh`,
      `scenario_up || { echo "scenario ${s.name}: setup failed" >&2; exit 126; }`,
      'trap scenario_down EXIT',
      vitest,
    ].join('\n');
    const r = await guest(
      dir,
      command,
      { SCSI_DEBUG: s.scsiDebug, EXTRA_MODS: s.extraMods ?? '', LBA_STATUS_TEST_SCENARIO: s.name },
      `[${s.name}]`,
    );
    row.ms = r.ms;
    row.exit = r.code;
    const res = readResults(join(dir, 'results.json'));
    if (res) Object.assign(row, { passed: res.passed, failed: res.failed, skipped: res.skipped });
    if (res) row.problems.push(...res.failures);
    if (r.code === 125) row.problems.push('guest crashed or hung (exit 125)');
    else if (r.code === 126) row.problems.push('scenario setup failed (exit 126)');
    else if (!res) row.problems.push(`no results.json (guest exit ${r.code})`);
    else if (res.passed + res.failed === 0) row.problems.push('zero tests ran');
    else if (r.code !== 0 && res.failed === 0) row.problems.push(`vitest exited ${r.code}`);
    // A broken scenario counts as one failure on top of the failed tests it reported.
    const broken = row.problems.length > (res ? res.failures.length : 0) ? 1 : 0;
    totals.passed += row.passed;
    totals.failed += row.failed + broken;
    totals.skipped += row.skipped;
    log(
      `${s.name}: ${row.passed} passed, ${row.failed} failed, ${row.skipped} skipped in ${secs(r.ms)}`,
    );
  }

  console.log('');
  log(`summary (guest boot ${secs(probe.ms)}, scenarios ${secs(Date.now() - t0)}):`);
  for (const row of rows) {
    const state = row.problems.length ? 'FAIL' : 'ok';
    console.log(
      `  ${state.padEnd(4)} ${row.scenario.padEnd(18)} ${String(row.passed).padStart(4)} passed ` +
        `${String(row.failed).padStart(3)} failed ${String(row.skipped).padStart(3)} skipped  ${secs(row.ms)}`,
    );
    for (const p of row.problems) console.log(`         ${p}`);
  }
  log(`logs and results in ${relative(root, out) || out}/<scenario>/`);
  finish(rows);
}

await main();
