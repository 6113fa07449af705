#!/usr/bin/env node
/** The `lba-status` executable: dispatches to a subcommand; SIGINT/SIGTERM abort it cleanly. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { CliCommand, CliIo } from './command.js';
import { ociDeltaCommand, ociSweepCommand, SDK_RETRY_NOTICE } from './oci.js';
import { applyCommand, exportCommand, readCommand, verifyCommand } from './read.js';
import { infoCommand, scanCommand } from './scan.js';
import { simServeCommand } from './sim-serve.js';
import { ExitCode } from './util.js';
import { enqueueCommand, jobsCommand, workerCommand } from './worker.js';

export const commands: CliCommand[] = [
  infoCommand,
  scanCommand,
  readCommand,
  exportCommand,
  verifyCommand,
  applyCommand,
  ociDeltaCommand,
  ociSweepCommand,
  simServeCommand,
  workerCommand,
  enqueueCommand,
  jobsCommand,
];

/** The package's version: dist/cli.cjs is one level below package.json, lib/cli/main.ts two. */
function version(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const url = new URL(rel, import.meta.url);
      const pkg = JSON.parse(readFileSync(fileURLToPath(url), 'utf8')) as {
        name?: string;
        version: string;
      };
      if (pkg.name === 'lba-status') return pkg.version;
    } catch {}
  }
  return 'unknown';
}

function topHelp(): string {
  const width = Math.max(...commands.map((c) => c.path.join(' ').length));
  return `Usage: lba-status COMMAND [options]

Find and read the blocks that changed between two block-volume backups: SCSI GET LBA STATUS
(16/32) over Linux SG_IO, for OCI delta volumes and any thin-provisioned SCSI disk.

Commands:
${commands.map((c) => `  ${c.path.join(' ').padEnd(width)}  ${c.summary}`).join('\n')}

Run 'lba-status COMMAND --help' for a command's options and examples;
'lba-status --version' (-v) prints the version.

DEVICE is a device node (/dev/sdX, /dev/sgN, a symlink) or iscsi://[USER@]HOST[:PORT]/IQN/LUN,
reached by lba-status's own iSCSI initiator (no root, no iscsid); the CHAP secret comes from
$LBA_STATUS_CHAP_SECRET or --chap-secret-file FILE, never from the command line.

Examples:
  lba-status info /dev/sdb
  lba-status scan /dev/sdb --changed-only --change-block-size 1M
  sudo lba-status scan /dev/oracleoci/oraclevdb --format text
  lba-status scan iscsi://backup@10.0.0.5/iqn.2024-01.lba-status:sim/1 --chap-secret-file ~/.chap

Exit status: 0 ok, 2 usage (an export DIR holding another delta's export, a malformed OCID and
backups that cannot make a delta included), 3 system (device missing, permission, connection
refused), 4 SCSI, 5 transport (iSCSI login refused included), 6 malformed reply, 7 verify
mismatch, 8 OCI API error (refused, failed or timed out; cleanup failed), 130 interrupted;
1 only for an internal error (a bug: please report it).

Environment: NODE_DEBUG=lba-status logs retries and device mapping; LBA_STATUS_CHAP_SECRET and
LBA_STATUS_TARGET_CHAP_SECRET hold CHAP secrets for iscsi:// devices.
`;
}

/** The subcommands of a group such as `sim` or `oci`, or none when `group` is not one. */
function groupCommands(group: string | undefined): CliCommand[] {
  return commands.filter((c) => c.path.length > 1 && c.path[0] === group);
}

/** `lba-status sim` / `lba-status oci`: the group's subcommands. */
function groupHelp(group: string): string {
  const members = groupCommands(group);
  const width = Math.max(...members.map((c) => c.path.join(' ').length));
  return `Usage: lba-status ${group} COMMAND [options]

Commands:
${members.map((c) => `  ${c.path.join(' ').padEnd(width)}  ${c.summary}`).join('\n')}

Run 'lba-status ${group} COMMAND --help' for a command's options and examples.
`;
}

const isHelp = (word: string | undefined): boolean =>
  word === '--help' || word === '-h' || word === 'help';

/** Runs the CLI with `argv` (without node and script); resolves with the exit code. */
export async function main(argv: string[], io: CliIo): Promise<number> {
  if (argv.length === 0 || isHelp(argv[0])) {
    const wanted = argv.slice(1);
    const command = commands.find((c) => c.path.join(' ') === wanted.join(' '));
    const group = wanted.length === 1 && groupCommands(wanted[0]).length ? wanted[0] : undefined;
    io.stdout.write(command && wanted.length ? command.help : group ? groupHelp(group) : topHelp());
    return argv.length === 0 ? ExitCode.usage : ExitCode.ok;
  }
  if (argv[0] === '--version' || argv[0] === '-v' || argv[0] === '-V') {
    io.stdout.write(`${version()}\n`);
    return ExitCode.ok;
  }
  const command = [...commands]
    .sort((a, b) => b.path.length - a.path.length)
    .find((c) => c.path.every((word, i) => argv[i] === word));
  if (!command) {
    const group = argv[0] as string;
    if (groupCommands(group).length) {
      // `lba-status sim`: the list of its commands (exit 2, like `lba-status` alone);
      // `lba-status sim --help`: the same, exit 0; `lba-status sim nope`: unknown, exit 2.
      if (argv.length === 1 || isHelp(argv[1])) {
        io.stdout.write(groupHelp(group));
        return argv.length === 1 ? ExitCode.usage : ExitCode.ok;
      }
      io.stderr.write(`lba-status: unknown command '${group} ${argv[1]}'\n\n${groupHelp(group)}`);
      return ExitCode.usage;
    }
    io.stderr.write(`lba-status: unknown command '${argv[0]}'\nTry 'lba-status --help'.\n`);
    return ExitCode.usage;
  }
  return command.run(argv.slice(command.path.length), io);
}

const isEntryPoint =
  process.argv[1] !== undefined &&
  /(?:^|[/\\])(?:cli\.(?:c?js)|main\.ts|lba-status)$/.test(process.argv[1]);
if (isEntryPoint) {
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    // First signal: stop and clean up; a second one: give up at once.
    if (++interrupts > 1) process.exit(ExitCode.aborted);
    controller.abort(new Error(`received ${signal}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A request still retrying after the command has failed (a parallel call of the same step)
  // would print the SDK's notice after the error line: the command owns the process, and the
  // error it reported is the one that counts. NODE_DEBUG=lba-status shows them.
  if (!/\blba-status\b/.test(process.env.NODE_DEBUG ?? '')) {
    const warn = console.warn;
    console.warn = (...args: unknown[]) => {
      if (!SDK_RETRY_NOTICE.test(args.map(String).join(' '))) warn.apply(console, args);
    };
  }
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(ExitCode.ok);
  });
  main(process.argv.slice(2), {
    stdout: process.stdout,
    stderr: process.stderr,
    signal: controller.signal,
    env: process.env,
  }).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(
        `lba-status: internal error: ${(error as Error)?.stack ?? String(error)}\n`,
      );
      process.exitCode = ExitCode.failure;
    },
  );
}
