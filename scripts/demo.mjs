#!/usr/bin/env node
// The main job on a built-in default, with no cloud account, no device, no root and no guest:
// starts the project's simulator (`lba-status sim serve`, an OCI delta volume of 1 GiB with a
// known set of changed 64 KiB blocks) as a child process on 127.0.0.1, then runs
// `lba-status info` and `lba-status scan --changed-only` on it through the userspace iSCSI
// initiator (iscsi://127.0.0.1:PORT/IQN/1: GET LBA STATUS(32) in iSCSI PDUs over TCP, no
// iscsid, no kernel module), prints the changed extents and a summary, and stops the server.
// Runs as any user.
//
// Usage: npm run demo                    (builds first)
//        node scripts/demo.mjs [--format ndjson|json|text] [--guest]
//   --guest  the same volume scanned through a real kernel's iSCSI initiator and SG_IO in a
//            User-Mode Linux guest (scripts/demo-guest.mjs; needs root and setup-system.sh)
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEMO_VOLUME, describeChanges } from './demo-volume.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
if (argv.includes('--guest')) {
  await import('./demo-guest.mjs');
} else {
  await hostDemo();
}

async function hostDemo() {
  const format = argv.includes('--format') ? argv[argv.indexOf('--format') + 1] : 'text';
  const cli = join(root, 'dist/cli.js');
  if (!existsSync(cli)) {
    console.error('demo: dist/cli.js is missing: run `npm run demo` (it builds first)');
    process.exit(1);
  }
  const started = Date.now();
  const { changes, changeBlockSize, size } = DEMO_VOLUME;
  console.error(
    `demo: the simulator serves a ${size}iB OCI delta volume on 127.0.0.1 whose changed ranges are ` +
      `${describeChanges(changes)}; ` +
      'lba-status reaches it through its own userspace iSCSI initiator (no root, no iscsid)',
  );

  // The target: `sim serve` on any free port, the changed map on its stdin.
  const server = spawn(
    process.execPath,
    [
      cli,
      'sim',
      'serve',
      '--size',
      size,
      '--change-block-size',
      String(changeBlockSize),
      '--changed',
      '-',
      '--port',
      '0',
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  server.stdin.end(`${JSON.stringify(changes)}\n`);
  let serverErr = '';
  server.stderr.on('data', (c) => {
    serverErr += c;
  });
  const stopServer = () => {
    if (server.exitCode === null && server.signalCode === null) server.kill('SIGTERM');
  };
  for (const s of ['SIGINT', 'SIGTERM']) {
    process.once(s, () => {
      stopServer();
      process.exit(130);
    });
  }
  process.once('exit', stopServer);

  let ready;
  try {
    ready = await new Promise((done, fail) => {
      let buf = '';
      const timer = setTimeout(() => fail(new Error('no ready line within 30 s')), 30_000);
      server.stdout.on('data', (c) => {
        buf += c;
        const nl = buf.indexOf('\n');
        if (nl >= 0) {
          clearTimeout(timer);
          done(JSON.parse(buf.slice(0, nl)));
        }
      });
      server.once('exit', (code) => {
        clearTimeout(timer);
        fail(new Error(`it exited with status ${code}`));
      });
    });
  } catch (e) {
    console.error(`demo: the simulator did not start: ${e.message}\n${serverErr.trim()}`);
    process.exit(1);
  }
  const { portal, iqn, lun } = ready.iscsi;
  const url = `iscsi://${portal}/${iqn}/${lun}`;

  /** Runs the CLI with its output on ours; resolves with its exit status. */
  const run = (args) =>
    new Promise((done) => {
      const child = spawn(process.execPath, [cli, ...args], {
        stdio: ['ignore', 'inherit', 'inherit'],
      });
      child.on('close', (code, signal) => done(code ?? (signal ? 128 : 1)));
    });

  console.log(`== lba-status info ${url}`);
  let status = await run(['info', url]);
  if (status === 0) {
    const scanArgs = [
      '--changed-only',
      '--change-block-size',
      String(changeBlockSize),
      '--format',
      format,
    ];
    console.log(`\n== lba-status scan ${url} ${scanArgs.join(' ')}`);
    status = await run(['scan', url, ...scanArgs]);
  }
  stopServer();
  await new Promise((done) => (server.exitCode !== null ? done() : server.once('exit', done)));
  console.error(`demo: done in ${((Date.now() - started) / 1000).toFixed(1)} s (after the build)`);
  if (status !== 0) console.error(`demo: lba-status exited with status ${status}`);
  process.exit(status);
}
