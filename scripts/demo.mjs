#!/usr/bin/env node
// The main job on a built-in default, with no cloud account and no real device: boots a Linux
// guest (User-Mode Linux, scripts/guest/uml-run.sh) in which the project's simulator serves an
// OCI delta volume over iSCSI (`lba-status sim serve`, a known set of changed blocks), the guest
// kernel's initiator logs in to it as on OCI (iscsiadm -m node -o new, --login), and
// `lba-status scan` finds the changed extents with GET LBA STATUS(32) and prints them with a
// summary. Needs root and the packages of scripts/setup-system.sh.
//
// Usage: npm run demo            (builds first)
//        node scripts/demo.mjs [--format ndjson|json|text]
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const format = process.argv.includes('--format')
  ? process.argv[process.argv.indexOf('--format') + 1]
  : 'text';
const out = join(root, '.guest-out', 'demo');
mkdirSync(out, { recursive: true });

// The delta between the two "backups": byte ranges of a 1 GiB volume, 64 KiB change blocks.
const MiB = 2 ** 20;
const changeBlockSize = 65536;
const changes = [
  { offset: 1 * MiB, length: 65536 },
  { offset: 100 * MiB, length: MiB },
  { offset: 512 * MiB + 65536, length: 3 * 65536 },
  { offset: 1024 * MiB - 65536, length: 65536 },
];
const changedFile = join(out, 'changed.json');
writeFileSync(changedFile, `${JSON.stringify(changes)}\n`);

const guestCommand = [
  '. scripts/guest/scenarios/sim.sh',
  'scenario_up >/dev/null 2>&1 || { echo "demo: the simulated volume did not attach" >&2; exit 1; }',
  'echo "== lba-status info $LBA_STATUS_TEST_BLOCK"',
  'node dist/cli.js info "$LBA_STATUS_TEST_BLOCK"',
  `echo; echo "== lba-status scan $LBA_STATUS_TEST_BLOCK --changed-only --change-block-size ${changeBlockSize} --format ${format}"`,
  `node dist/cli.js scan "$LBA_STATUS_TEST_BLOCK" --changed-only --change-block-size ${changeBlockSize} --format ${format}`,
  'rc=$?; scenario_down; exit $rc',
].join('\n');

if (process.platform !== 'linux') {
  console.error('demo: needs Linux (the guest is User-Mode Linux)');
  process.exit(1);
}
console.error(
  `demo: booting a User-Mode Linux guest; the simulator serves a 1 GiB OCI delta volume whose changed ranges are ${changes.map((c) => `${c.length / 1024} KiB at ${c.offset / MiB} MiB`).join(', ')}`,
);
const result = spawnSync('sh', [join(root, 'scripts/guest/uml-run.sh'), out, guestCommand], {
  cwd: root,
  stdio: 'inherit',
  env: {
    ...process.env,
    SCSI_DEBUG: '',
    EXTRA_MODS: 'iscsi_tcp',
    TIMEOUT: '300',
    LBA_STATUS_TEST_SCENARIO: 'sim-iscsi',
    LBA_STATUS_SIM_SIZE: '1G',
    LBA_STATUS_SIM_CHANGE_BLOCK_SIZE: String(changeBlockSize),
    LBA_STATUS_SIM_CHANGED: changedFile,
  },
});
if (result.status !== 0)
  console.error(
    `demo: the guest exited with status ${result.status} (see scripts/guest/README.md)`,
  );
process.exit(result.status ?? 1);
