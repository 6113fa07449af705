#!/usr/bin/env node
// The main job on a built-in default, with no cloud account and no real device: boots a Linux
// guest (User-Mode Linux, scripts/guest/uml-run.sh), gives it a thin-provisioned SCSI disk
// (scsi_debug) with a known pattern of written blocks, and runs `lba-status scan` on it, which
// prints the changed extents and a summary. Needs root and scripts/setup-system.sh's packages.
//
// Usage: npm run demo            (builds first)
//        node scripts/demo.mjs [--format ndjson|json|text]
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const format = process.argv.includes('--format') ? process.argv[process.argv.indexOf('--format') + 1] : 'text';
const out = join(root, '.guest-out', 'demo');
mkdirSync(out, { recursive: true });

// The "backup delta": blocks written at these LBAs (512-byte blocks) are what changed.
const changes = [
  [2048, 16],
  [4096, 8],
  [10000, 100],
  [65000, 536],
];
const writes = changes
  .map(([lba, blocks]) => `dd if=/dev/urandom of="$LBA_STATUS_TEST_BLOCK" bs=512 seek=${lba} count=${blocks} oflag=direct conv=notrunc status=none`)
  .join(' && ');
const guestCommand = [
  '. scripts/guest/scenarios/scsi-debug.sh && scenario_up >/dev/null',
  'sg_turs "$LBA_STATUS_TEST_SG" >/dev/null 2>&1; true',
  writes,
  'echo "== lba-status info $LBA_STATUS_TEST_BLOCK"',
  'node dist/cli.js info "$LBA_STATUS_TEST_BLOCK"',
  `echo; echo "== lba-status scan $LBA_STATUS_TEST_BLOCK --changed-only --format ${format}"`,
  `node dist/cli.js scan "$LBA_STATUS_TEST_BLOCK" --changed-only --format ${format}`,
].join(' && ');

if (process.platform !== 'linux') {
  console.error('demo: needs Linux (the guest is User-Mode Linux)');
  process.exit(1);
}
console.error(`demo: booting a User-Mode Linux guest with a 64 MiB thin SCSI disk; blocks written: ${changes.map(([l, b]) => `${b}@${l}`).join(', ')}`);
const result = spawnSync('sh', [join(root, 'scripts/guest/uml-run.sh'), out, guestCommand], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, SCSI_DEBUG: 'dev_size_mb=64 lbpu=1 lbpws=1', TIMEOUT: '300' },
});
if (result.status !== 0) console.error(`demo: the guest exited with status ${result.status} (see scripts/guest/README.md)`);
process.exit(result.status ?? 1);
