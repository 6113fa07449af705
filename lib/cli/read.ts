/** `lba-status read | export | verify | apply`: the changed data, exported and checked. */
import { open } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { openDevice } from '../api/device.js';
import {
  applyExport,
  createRawWriter,
  createRbdDiffWriter,
  type DeltaWriter,
  type ExportFormat,
  ExportMismatchError,
  exportChanged,
  VerifyMismatchError,
  verifyDevice,
  verifyExport,
} from '../read/export.js';
import { type ReadProgress, readChanged } from '../read/reader.js';
import { type CliCommand, type CliIo, UsageError } from './command.js';
import {
  DEVICE_OPTIONS,
  DEVICE_OPTIONS_HELP,
  type DeviceArgs,
  deviceArgs,
  takeDevice,
} from './device-args.js';
import { ExitCode, formatBytes, formatDuration, guarded, parseCount } from './util.js';

const READ_HELP = `Usage: lba-status read DEVICE --out FILE [options]

Read the changed blocks of DEVICE (the mapped extents of GET LBA STATUS) into one file. DEVICE is
a device node (/dev/sdX, /dev/sgN, a symlink) or iscsi://[USER@]HOST[:PORT]/TARGET-IQN/LUN.
  raw       a sparse image of the volume's size: changed chunks at their offsets, holes elsewhere
  rbd-diff  Ceph's "rbd diff v1" stream (apply with 'rbd import-diff FILE pool/image');
            --out - writes it to stdout

Options:
  --out FILE               output file (required)
  --format raw|rbd-diff    default raw
  --change-block-size N    the delta volume's changeBlockSizeInBytes (e.g. 4096, 1M)
  --concurrency N          reads in flight (default 4)
  --chunk-size N           largest read (default 1M, capped by the device's maximum transfer)
  --checksum sha256        print {"offset","length","sha256"} per chunk as ndjson on stdout
  --method auto|direct|sg  O_DIRECT from the block node, or SCSI READ(16) (default auto;
                           iscsi:// devices always use READ(16))
  --engine threads|sg-async  device nodes: how SCSI commands reach the kernel (default
                           threads; see scan)
  --no-progress            no progress bar (shown only when stderr is a terminal)

${DEVICE_OPTIONS_HELP}

Examples:
  lba-status read /dev/sdb --out delta.img --change-block-size 1M
  lba-status read /dev/sdb --out - --format rbd-diff | rbd import-diff - rbd/vm-disk
  lba-status read iscsi://backup@10.0.0.5/iqn.2024-01.lba-status:sim/1 \
      --chap-secret-file ~/.config/lba-status/chap --out delta.img --change-block-size 1M
`;

const EXPORT_HELP = `Usage: lba-status export DEVICE --dir DIR [options]

DEVICE is a device node (/dev/sdX, /dev/sgN, a symlink) or iscsi://[USER@]HOST[:PORT]/IQN/LUN.

Export the changed data with a manifest: DIR/manifest.json (device identity, block size,
capacity, change block size, every extent with its SHA-256; "complete": false until the export
finished), DIR/delta.img (sparse raw image) and DIR/delta.rbd-diff (rbd diff v1).

Options:
  --dir DIR                output directory (created if needed; required)
  --format raw|rbd-diff|both   data files to write (default both)
  --change-block-size N, --concurrency N, --chunk-size N, --method M, --engine E,
  --no-progress            as for read
  --first-backup ID, --second-backup ID   recorded in the manifest
  --restart                start over even when DIR holds an interrupted export of this device

Resuming: DIR keeps a journal (journal.ndjson) of the chunks already synced to disk. Run the
same command again after a crash, a kill or an error and it continues where the journal ends:
the result is byte-identical to an uninterrupted export. It first checks that DIR is an export
of the same delta — device path, vendor, product and serial number (or, with --first-backup and
--second-backup, both backup OCIDs: any delta volume of the two backups will do), block size,
capacity, change block size and formats — and refuses with exit 2 naming the difference
(ERR_LBA_STATUS_EXPORT_MISMATCH) when it is not. A complete export is left as it is. The
manifest's createdAt is the first attempt's start (SOURCE_DATE_EPOCH, in seconds, overrides it).

Exit status: 0 complete, 2 usage, or DIR holds another delta's export, 3 system error (DIR
unwritable or full included), 4 SCSI error, 5 transport error, 6 malformed reply,
130 interrupted; DIR stays resumable after every failure.

${DEVICE_OPTIONS_HELP}

Examples:
  lba-status export /dev/sdb --dir /backup/2026-11-25 --change-block-size 1M
  LBA_STATUS_CHAP_SECRET="$(pass show iscsi/backup)" lba-status export \
      iscsi://backup@10.0.0.5/iqn.2024-01.lba-status:sim/1 --dir /backup/2026-11-25
`;

const VERIFY_HELP = `Usage: lba-status verify --delta DIR (--base IMG --expect IMG | --device DEV)

Check an export:
  --base IMG --expect IMG   base image + the export's changes must equal the expected image
                            byte for byte (streamed; nothing is written)
  --device DEV              the device's data must match the manifest's SHA-256 per extent
                            (a device node or iscsi://[USER@]HOST[:PORT]/TARGET-IQN/LUN)
The export's own data is always checked against its manifest. Exit 0 when it matches; exit 7
with the first differing byte offset otherwise.

${DEVICE_OPTIONS_HELP}

Examples:
  lba-status verify --delta /backup/2026-11-25 --base monday.img --expect tuesday.img
  lba-status verify --delta /backup/2026-11-25 --device /dev/sdb
  lba-status verify --delta /backup/2026-11-25 --device iscsi://10.0.0.5/iqn.2024-01.lba-status:sim/1
`;

const APPLY_HELP = `Usage: lba-status apply --delta DIR --target IMG

Write an export's changed chunks into IMG, a copy of the base image (restoring the second
backup's content). The export must be complete and its SHA-256s must match.

Example:
  cp monday.img restored.img && lba-status apply --delta /backup/2026-11-25 --target restored.img
`;

const readOptions = {
  'change-block-size': { type: 'string' },
  concurrency: { type: 'string' },
  'chunk-size': { type: 'string' },
  method: { type: 'string' },
  engine: { type: 'string' },
  'no-progress': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  ...DEVICE_OPTIONS,
} as const;

function progressBar(
  io: CliIo,
  disabled: boolean | undefined,
): ((p: ReadProgress) => void) & { stop(): void } {
  if (disabled || !io.stderr.isTTY) return Object.assign(() => {}, { stop() {} });
  const bar = new cliProgress.SingleBar(
    {
      stream: io.stderr,
      format: 'read {bar} {percentage}% | {done} of {size} | {rate}/s | ETA {eta_formatted}',
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  const update = (p: ReadProgress): void => {
    if (!started) {
      bar.start(p.totalBytes, 0, { done: '0 B', size: formatBytes(p.totalBytes), rate: '-' });
      started = true;
    }
    bar.update(p.bytesRead, {
      done: formatBytes(p.bytesRead),
      rate: formatBytes(p.bytesPerSecond),
    });
  };
  return Object.assign(update, { stop: () => started && bar.stop() });
}

/** openDevice options of read and export: a command slot per read in flight, device/CHAP flags. */
function deviceOptions(target: DeviceArgs, concurrency: number | undefined) {
  return { queueDepth: Math.max(1, concurrency ?? 4), ...target.options };
}

function commonReadOptions(values: Record<string, string | boolean | undefined>) {
  const method = values.method as string | undefined;
  if (method !== undefined && !['auto', 'direct', 'sg'].includes(method))
    throw new UsageError(`--method must be auto, direct or sg, got '${method}'`);
  const options = {
    changeBlockSize: parseCount(
      values['change-block-size'] as string | undefined,
      'change-block-size',
      { sizes: true },
    ),
    concurrency: parseCount(values.concurrency as string | undefined, 'concurrency'),
    chunkSize: parseCount(values['chunk-size'] as string | undefined, 'chunk-size', {
      sizes: true,
    }),
    method: method as 'auto' | 'direct' | 'sg' | undefined,
  };
  for (const key of Object.keys(options) as Array<keyof typeof options>)
    if (options[key] === undefined) delete options[key];
  return options;
}

async function runRead(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...readOptions,
      out: { type: 'string' },
      format: { type: 'string' },
      checksum: { type: 'string' },
    },
  });
  if (values.help) {
    io.stdout.write(READ_HELP);
    return ExitCode.ok;
  }
  const target = await deviceArgs(takeDevice(positionals), values, io);
  if (!values.out) throw new UsageError('--out FILE is required');
  const format = (values.format ?? 'raw') as ExportFormat;
  if (format !== 'raw' && format !== 'rbd-diff')
    throw new UsageError(`--format must be raw or rbd-diff, got '${values.format}'`);
  if (values.checksum !== undefined && values.checksum !== 'sha256')
    throw new UsageError(`--checksum must be sha256, got '${values.checksum}'`);
  if (values.out === '-' && format === 'raw')
    throw new UsageError('--out - needs --format rbd-diff (a raw image is not a stream)');
  if (values.out === '-' && values.checksum)
    throw new UsageError('--checksum prints to stdout; it cannot be combined with --out -');
  const options = commonReadOptions(values);
  const device = await openDevice(target.address, deviceOptions(target, options.concurrency));
  const bar = progressBar(io, values['no-progress']);
  let writer: DeltaWriter | undefined;
  const started = performance.now();
  let bytes = 0;
  try {
    const { blockSize, blocks } = await device.capacity({ signal: io.signal });
    const stdout = values.out === '-' ? await open('/dev/stdout', 'w') : undefined;
    writer =
      format === 'raw'
        ? await createRawWriter(values.out, blocks * blockSize)
        : await createRbdDiffWriter(stdout ?? values.out, blocks * blockSize);
    for await (const chunk of readChanged(device, {
      ...options,
      checksum: values.checksum === 'sha256' ? 'sha256' : 'none',
      reuseBuffers: true, // each chunk is written before the next is asked for
      signal: io.signal,
      onProgress: bar,
    })) {
      await writer.write(chunk);
      bytes += chunk.length;
      if (chunk.sha256)
        io.stdout.write(
          `{"offset":${chunk.offset},"length":${chunk.length},"sha256":"${chunk.sha256}"}\n`,
        );
    }
    await writer.finish();
    writer = undefined;
    await stdout?.close();
    bar.stop();
    io.stderr.write(
      `read ${formatBytes(bytes)} of changed data in ${formatDuration(performance.now() - started)} into ${values.out}\n`,
    );
    return ExitCode.ok;
  } finally {
    bar.stop();
    await writer?.abort();
    await device.close();
  }
}

async function runExport(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...readOptions,
      dir: { type: 'string' },
      format: { type: 'string' },
      'first-backup': { type: 'string' },
      'second-backup': { type: 'string' },
      restart: { type: 'boolean' },
    },
  });
  if (values.help) {
    io.stdout.write(EXPORT_HELP);
    return ExitCode.ok;
  }
  const target = await deviceArgs(takeDevice(positionals), values, io);
  if (!values.dir) throw new UsageError('--dir DIR is required');
  const format = values.format ?? 'both';
  if (!['raw', 'rbd-diff', 'both'].includes(format))
    throw new UsageError(`--format must be raw, rbd-diff or both, got '${format}'`);
  const options = commonReadOptions(values);
  const device = await openDevice(target.address, deviceOptions(target, options.concurrency));
  const bar = progressBar(io, values['no-progress']);
  const started = performance.now();
  try {
    const source =
      values['first-backup'] || values['second-backup']
        ? { firstBackupId: values['first-backup'], secondBackupId: values['second-backup'] }
        : undefined;
    const createdAt = sourceDateEpoch(io);
    const manifest = await exportChanged(device, values.dir, {
      ...options,
      formats: format === 'both' ? ['raw', 'rbd-diff'] : [format as ExportFormat],
      source,
      signal: io.signal,
      onProgress: bar,
      ...(values.restart ? { restart: true } : {}),
      ...(createdAt ? { createdAt } : {}),
    });
    bar.stop();
    io.stdout.write(
      `${JSON.stringify({ dir: values.dir, complete: manifest.complete, extents: manifest.extents.length, changedBytes: manifest.changedBytes, elapsedMs: Math.round(performance.now() - started) })}\n`,
    );
    return ExitCode.ok;
  } catch (error) {
    if (error instanceof ExportMismatchError) {
      bar.stop();
      io.stderr.write(`lba-status: ${error.message}\n`);
      return ExitCode.usage;
    }
    throw error;
  } finally {
    bar.stop();
    await device.close();
  }
}

/** SOURCE_DATE_EPOCH (seconds), for reproducible manifests; undefined when unset. */
export function sourceDateEpoch(io: CliIo): Date | undefined {
  const raw = io.env.SOURCE_DATE_EPOCH;
  if (raw === undefined || raw === '') return undefined;
  if (!/^\d+$/.test(raw))
    throw new UsageError(`SOURCE_DATE_EPOCH must be whole seconds since 1970, got '${raw}'`);
  return new Date(Number(raw) * 1000);
}

async function runVerify(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      delta: { type: 'string' },
      base: { type: 'string' },
      expect: { type: 'string' },
      device: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      ...DEVICE_OPTIONS,
    },
  });
  if (values.help) {
    io.stdout.write(VERIFY_HELP);
    return ExitCode.ok;
  }
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  if (!values.delta) throw new UsageError('--delta DIR is required');
  const target =
    values.device === undefined
      ? undefined
      : await deviceArgs(values.device, values, io, '--device');
  if (target === undefined) {
    const given = Object.keys(DEVICE_OPTIONS).find(
      (name) => values[name as keyof typeof DEVICE_OPTIONS] !== undefined,
    );
    if (given) throw new UsageError(`--${given} applies only to --device iscsi://…`);
  }
  try {
    if (target) {
      await using device = await openDevice(target.address, target.options);
      const result = await verifyDevice(device, values.delta, { signal: io.signal });
      io.stdout.write(
        `${JSON.stringify({ ok: true, extents: result.extents, bytes: result.bytes })}\n`,
      );
      return ExitCode.ok;
    }
    if (!values.base || !values.expect)
      throw new UsageError('give --base IMG and --expect IMG, or --device DEV');
    const result = await verifyExport(values.base, values.delta, values.expect);
    io.stdout.write(
      `${JSON.stringify({ ok: true, sha256: result.sha256, bytes: result.bytes })}\n`,
    );
    return ExitCode.ok;
  } catch (error) {
    if (error instanceof VerifyMismatchError) {
      io.stdout.write(`${JSON.stringify({ ok: false, offset: error.offset })}\n`);
      io.stderr.write(`lba-status: ${error.message}\n`);
      return ExitCode.verifyMismatch;
    }
    throw error;
  }
}

async function runApply(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      delta: { type: 'string' },
      target: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    io.stdout.write(APPLY_HELP);
    return ExitCode.ok;
  }
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  if (!values.delta || !values.target)
    throw new UsageError('--delta DIR and --target IMG are required');
  const manifest = await applyExport(values.delta, values.target);
  io.stdout.write(
    `${JSON.stringify({ ok: true, extents: manifest.extents.length, bytes: manifest.changedBytes })}\n`,
  );
  return ExitCode.ok;
}

export const readCommand: CliCommand = {
  path: ['read'],
  summary: 'read the changed blocks into a sparse image or an rbd diff stream',
  help: READ_HELP,
  run: guarded(runRead),
};
export const exportCommand: CliCommand = {
  path: ['export'],
  summary: 'export the changed blocks with a manifest of SHA-256s',
  help: EXPORT_HELP,
  run: guarded(runExport),
};
export const verifyCommand: CliCommand = {
  path: ['verify'],
  summary: 'check an export against images or the device',
  help: VERIFY_HELP,
  run: guarded(runVerify),
};
export const applyCommand: CliCommand = {
  path: ['apply'],
  summary: 'write an export into a copy of the base image',
  help: APPLY_HELP,
  run: guarded(runApply),
};
