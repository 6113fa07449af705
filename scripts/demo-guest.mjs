#!/usr/bin/env node
// The demo through a real kernel: boots a Linux guest (User-Mode Linux, scripts/guest/uml-run.sh)
// in which the project's simulator serves the demo's OCI delta volume (scripts/demo-volume.mjs)
// over iSCSI, the guest kernel's initiator logs in to it as on OCI (iscsiadm -m node -o new,
// --login), and `lba-status scan` finds the changed extents with GET LBA STATUS(32) through SG_IO
// and prints them with a summary. Needs Linux, root and the packages of scripts/setup-system.sh.
// The guest's harmless boot messages are filtered out (the full console is in
// .guest-out/demo/console.log).
//
// Usage: npm run demo:guest    (or: npm run demo -- --guest; both build first)
//        node scripts/demo-guest.mjs [--format ndjson|json|text]
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEMO_VOLUME, describeChanges } from './demo-volume.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const format = argv.includes('--format') ? argv[argv.indexOf('--format') + 1] : 'text';
const out = join(root, '.guest-out', 'demo');
mkdirSync(out, { recursive: true });

const { changes, changeBlockSize, size } = DEMO_VOLUME;
const changedFile = join(out, 'changed.json');
writeFileSync(changedFile, `${JSON.stringify(changes)}\n`);

// Harmless UML boot and power-off messages (as in scripts/guest/run-guest-tests.mjs).
const NOISE =
  /^(SELinux: |mmapper_init - find_iomem failed|Failed to initialize ubd device|reboot: System halted)/;

const guestCommand = [
  '. scripts/guest/scenarios/sim.sh',
  'scenario_up >"$GUEST_OUT/scenario.log" 2>&1 || { echo "demo: the simulated volume did not attach:" >&2; tail -n 5 "$GUEST_OUT/scenario.log" >&2; exit 1; }',
  'echo "== lba-status info $LBA_STATUS_TEST_BLOCK"',
  'node dist/cli.js info "$LBA_STATUS_TEST_BLOCK"',
  `echo; echo "== lba-status scan $LBA_STATUS_TEST_BLOCK --changed-only --change-block-size ${changeBlockSize} --format ${format}"`,
  `node dist/cli.js scan "$LBA_STATUS_TEST_BLOCK" --changed-only --change-block-size ${changeBlockSize} --format ${format}`,
  'rc=$?; scenario_down; exit $rc',
].join('\n');

if (process.platform !== 'linux') {
  console.error('demo: needs Linux (the guest is User-Mode Linux); `npm run demo` runs anywhere');
  process.exit(1);
}
if (process.getuid?.() !== 0) {
  console.error('demo: the guest harness needs root; `npm run demo` needs no privileges');
  process.exit(1);
}
const started = Date.now();
console.error(
  `demo: booting a User-Mode Linux guest; the simulator serves a ${size}iB OCI delta volume whose changed ranges are ${describeChanges(changes)}`,
);
const child = spawn('sh', [join(root, 'scripts/guest/uml-run.sh'), out, guestCommand], {
  cwd: root,
  stdio: ['ignore', 'pipe', 'pipe'],
  env: {
    ...process.env,
    SCSI_DEBUG: '',
    EXTRA_MODS: 'iscsi_tcp',
    TIMEOUT: '300',
    LBA_STATUS_TEST_SCENARIO: 'sim-iscsi',
    LBA_STATUS_SIM_SIZE: size,
    LBA_STATUS_SIM_CHANGE_BLOCK_SIZE: String(changeBlockSize),
    LBA_STATUS_SIM_CHANGED: changedFile,
  },
});
const consoleLog = [];
// Line by line, so a noise line split across chunks is still recognised.
const pending = new Map();
const write = (stream, line) => {
  if (!NOISE.test(line)) stream.write(`${line}\n`);
};
const forward = (stream) => (chunk) => {
  consoleLog.push(chunk.toString());
  const lines = ((pending.get(stream) ?? '') + chunk.toString()).split('\n');
  pending.set(stream, lines.pop());
  for (const l of lines) write(stream, l);
};
const flush = (stream) => {
  if (pending.get(stream)) write(stream, pending.get(stream));
};
child.stdout.on('data', forward(process.stdout));
child.stderr.on('data', forward(process.stderr));
for (const s of ['SIGINT', 'SIGTERM']) process.once(s, () => child.kill('SIGTERM'));
child.on('close', (code, signal) => {
  flush(process.stdout);
  flush(process.stderr);
  writeFileSync(join(out, 'console.log'), consoleLog.join(''));
  const status = code ?? (signal ? 128 : 1);
  console.error(`demo: done in ${((Date.now() - started) / 1000).toFixed(1)} s (after the build)`);
  if (status !== 0)
    console.error(
      `demo: the guest exited with status ${status} (console: .guest-out/demo/console.log; see scripts/guest/README.md)`,
    );
  process.exit(status);
});
