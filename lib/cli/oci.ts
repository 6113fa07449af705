/**
 * `lba-status oci delta` and `lba-status oci sweep`: compose the OCI provisioner with the scanner.
 * The scanner is loaded lazily (it needs the native addon) and is injectable for tests.
 */
import { parseArgs } from 'node:util';
import { abortError, isAbortError } from '../abort.js';
import type {
  OciAttachMode,
  OciDeltaProvisionerConfig,
  OciDeltaVolume,
} from '../oci/provisioner.js';
import { OciDeltaVolumeProvisioner } from '../oci/provisioner.js';
import { parseDuration, sweep } from '../oci/sweep.js';
import type { ProvisionedVolume, ProvisionProgress } from '../provision/types.js';
import { withProvisionedVolume } from '../provision/with-volume.js';
import { type CliCommand, type CliIo, UsageError } from './command.js';
import {
  ExitCode,
  exitCodeOf,
  formatBytes,
  formatDuration,
  guarded,
  parseCount,
  reportError,
} from './util.js';

/** One extent as `scan` prints it. */
export interface CliExtent {
  lba: number;
  blocks: number;
  status: number;
  additional: number;
}

export interface ScanResult {
  blockSize: number;
  capacityBlocks: number;
}

/**
 * Scans a provisioned volume and hands every changed extent to `emit`.
 * The default opens the device with the package's scanner (GET LBA STATUS, 32-byte CDB first).
 */
export type DeltaScanner = (
  volume: ProvisionedVolume,
  emit: (extent: CliExtent) => void | Promise<void>,
  signal: AbortSignal,
  onProgress: (text: string) => void,
) => Promise<ScanResult>;

const defaultScanner: DeltaScanner = async (volume, emit, signal, onProgress) => {
  const lib = await import('../index.js');
  const device = await lib.openDevice(volume.device, { ...volume.deviceOptions, queueDepth: 1 });
  try {
    const { blockSize, blocks } = await device.capacity({ signal });
    for await (const batch of lib.scanBatches(device, {
      reportType: 'nonzero',
      cdb: 'auto',
      signal,
      onProgress: (p) =>
        onProgress(`scan ${(p.fraction * 100).toFixed(1)}%  LBA ${p.scannedLba}/${p.endLba}`),
    })) {
      for (let i = 0; i < batch.count; i++) {
        const status = batch.status[i] as number;
        if (!lib.isChangedStatus(status)) continue;
        await emit({
          lba: batch.lba[i] as number,
          blocks: batch.blocks[i] as number,
          status,
          additional: batch.additional[i] as number,
        });
      }
    }
    return { blockSize, capacityBlocks: blocks };
  } finally {
    await device.close();
  }
};

export const COMMON_OPTIONS = `  --config-file F         OCI config file (default ~/.oci/config or $OCI_CONFIG_FILE)
  --profile P             profile in it (default DEFAULT)
  --instance-principal    authenticate as this instance (dynamic group policy) instead
  --region R              region id, e.g. eu-paris-1 (default: the profile's)
  --endpoint URL          Core API endpoint override (e.g. the fake API of 'sim serve --oci-api')
  --instance-id ID        this instance (default: from the instance metadata service)
  --compartment-id ID     compartment (default: the instance's)
  --availability-domain AD  (default: the instance's)
  --imds-url URL          instance metadata base URL (default http://169.254.169.254)
  --iscsiadm PATH         iscsiadm binary (default: iscsiadm from PATH; not with --attach userspace)`;

const DELTA_HELP = `Usage: lba-status oci delta --first-backup ID --second-backup ID [options]

Build an OCI delta volume from two backups of the same volume, attach it to this instance over
iSCSI, scan it with GET LBA STATUS(32) and print the changed extents; then log out, detach and
delete it — also on error, on Ctrl-C and on SIGTERM. Needs the optional SDK packages:
npm install oci-core oci-common. How the volume is reached (--attach):
  iscsiadm   (default) the kernel initiator: root, iscsid and iscsiadm; the disk is found in sysfs
  userspace  lba-status's own iSCSI initiator, straight to the attachment's portal
             (iscsi://IPV4:PORT/IQN/1, CHAP from the attachment when it has one): no root, no
             iscsid, no iscsiadm, no kernel modules

Before anything is created (and billed), the backups are checked: OCIDs well formed and
different, both AVAILABLE, same volume, first older, second INCREMENTAL, same size, no FULL
backup between two incrementals, change block size a power of two in 4096..1048576.

Options:
  --first-backup ID       older backup (ocid1.volumebackup… or ocid1.bootvolumebackup…)
  --second-backup ID      newer, incremental backup of the same volume
  --change-block-size N   delta granularity in bytes: 4096 (default) … 1M
  --attach M              iscsiadm (default) | userspace (see above)
${COMMON_OPTIONS}
  --timeout-ms N          deadline for each lifecycle wait (default 1200000)
  --export DIR            also export the changed data before cleanup: DIR/manifest.json (with
                          both backup OCIDs and a SHA-256 per chunk), delta.img, delta.rbd-diff
                          (see 'lba-status export --help'). Resumable: run the same command
                          again after a crash or kill and the export continues on the new delta
                          volume (the delta of two backups does not depend on the volume); DIR
                          holding another delta's export (other backups, change block size) is
                          refused with exit 2 before any volume is created
  --restart               with --export: start DIR over instead of resuming it
  --format F              ndjson (default when piped) | json | text (default on a terminal)
  --verbose               step lines (create, attach, scan, delete…) and SDK retries on stderr
                          also when it is not a terminal (they are shown on a terminal)
  --no-progress           no step lines on stderr, not even on a terminal
  -h, --help              this help

Output (ndjson): one changed extent per line, as 'scan --changed-only' prints it:
  {"lba":96,"blocks":16,"status":3,"additional":0}

Exit status: 0 ok, 2 usage (a malformed OCID, backups that cannot make a delta — same, swapped,
of different volumes, not incremental, resized — or --export DIR holding another delta's
export), 3 system error (e.g. the portal refused the connection, iscsiadm missing, no disk
appeared), 4 SCSI error, 5 transport error (iSCSI login refused included), 6 malformed reply,
8 OCI API error (a request refused or failed, a lifecycle wait timed out, a backup not
AVAILABLE; a cleanup failure names what was left — run 'lba-status oci sweep'),
130 interrupted (after cleanup).

Examples:
  sudo lba-status oci delta --first-backup ocid1.volumebackup.oc1.eu-paris-1.aaa \\
       --second-backup ocid1.volumebackup.oc1.eu-paris-1.bbb --change-block-size 1M > delta.ndjson
  lba-status oci delta --attach userspace --first-backup ocid1.volumebackup.oc1.eu-paris-1.aaa \\
       --second-backup ocid1.volumebackup.oc1.eu-paris-1.bbb --export /backup/2026-11-30
  lba-status oci delta --first-backup "$A" --second-backup "$B" --endpoint http://127.0.0.1:8443 \\
       --config-file /tmp/sim/oci/config --instance-id "$I" --format text
`;

const SWEEP_HELP = `Usage: lba-status oci sweep [--older-than 1h] [options]

Remove delta volumes that lba-status created (freeform tag lba-status=delta) and that are older
than --older-than: crashed or killed runs leave them behind, billed at full volume size. Their
attachments are detached first; iSCSI sessions and node records on this host are logged out and
deleted. Volumes without the tag are never touched.

Options:
  --older-than D          age threshold: 30m, 1h (default), 2d, 0 for all
  --dry-run               list what would be removed, remove nothing
${COMMON_OPTIONS}
  --format F              json (default when piped) | text
  --verbose               step lines on stderr also when it is not a terminal
  -h, --help              this help

Exit status: 0 nothing left to remove, 2 usage, 3 system error (e.g. iscsiadm missing),
8 OCI API error (some removals failed: listed on stderr), 130 interrupted.

Examples:
  sudo lba-status oci sweep
  lba-status oci sweep --older-than 0 --dry-run --format text
`;

export const COMMON_PARSE = {
  'config-file': { type: 'string' },
  profile: { type: 'string' },
  'instance-principal': { type: 'boolean' },
  region: { type: 'string' },
  endpoint: { type: 'string' },
  'instance-id': { type: 'string' },
  'compartment-id': { type: 'string' },
  'availability-domain': { type: 'string' },
  'imds-url': { type: 'string' },
  iscsiadm: { type: 'string' },
  format: { type: 'string' },
  verbose: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export type CommonValues = {
  [K in keyof typeof COMMON_PARSE]?: (typeof COMMON_PARSE)[K]['type'] extends 'boolean'
    ? boolean
    : string;
};

export function configFrom(
  values: CommonValues,
  io: CliIo,
  base: Partial<OciDeltaProvisionerConfig>,
): OciDeltaProvisionerConfig {
  const c: OciDeltaProvisionerConfig = { ...base };
  const configFile = values['config-file'] ?? io.env.OCI_CONFIG_FILE;
  if (configFile) c.configFile = configFile;
  if (values.profile) c.profile = values.profile;
  if (values['instance-principal']) c.instancePrincipal = true;
  if (values.region) c.region = values.region;
  if (values.endpoint) c.endpoint = values.endpoint;
  if (values['instance-id']) c.instanceId = values['instance-id'];
  if (values['compartment-id']) c.compartmentId = values['compartment-id'];
  if (values['availability-domain']) c.availabilityDomain = values['availability-domain'];
  if (values['imds-url']) c.imdsUrl = values['imds-url'];
  if (values.iscsiadm)
    c.iscsiadm = {
      ...(typeof base.iscsiadm === 'object' && !('run' in base.iscsiadm) ? base.iscsiadm : {}),
      binary: values.iscsiadm,
    };
  return c;
}

/** Commands whose step lines (and SDK retry notes) are shown: see {@link showSteps}. */
const stepsShown = new WeakMap<CliIo, boolean>();

/**
 * Step lines go to stderr on a terminal or with --verbose, never with --no-progress: a script
 * or a service's journal gets its output and one line per error, nothing else.
 */
function showSteps(io: CliIo, values: { verbose?: boolean; 'no-progress'?: boolean }): boolean {
  const shown =
    values['no-progress'] !== true && (values.verbose === true || io.stderr.isTTY === true);
  stepsShown.set(io, shown);
  return shown;
}

function progressWriter(io: CliIo, enabled: boolean) {
  return (e: ProvisionProgress) => {
    if (enabled && e.phase !== 'skip')
      io.stderr.write(`oci: ${e.step} ${e.phase}${e.detail ? ` ${e.detail}` : ''}\n`);
  };
}

/** Exports the changed data of a provisioned volume into `dir` (manifest + data files). */
export type DeltaExporter = (
  volume: ProvisionedVolume,
  dir: string,
  options: {
    changeBlockSize: number;
    firstBackupId: string;
    secondBackupId: string;
    signal: AbortSignal;
    /** Start the directory over instead of resuming it. */
    restart?: boolean;
    /** The manifest's createdAt (SOURCE_DATE_EPOCH); default the first attempt's start. */
    createdAt?: Date;
  },
) => Promise<{ extents: number; changedBytes: number; complete: boolean }>;

const defaultExporter: DeltaExporter = async (volume, dir, options) => {
  const lib = await import('../index.js');
  const device = await lib.openDevice(volume.device, { ...volume.deviceOptions, queueDepth: 4 });
  try {
    const manifest = await lib.exportChanged(device, dir, {
      changeBlockSize: options.changeBlockSize,
      source: { firstBackupId: options.firstBackupId, secondBackupId: options.secondBackupId },
      signal: options.signal,
      ...(options.restart ? { restart: true } : {}),
      ...(options.createdAt ? { createdAt: options.createdAt } : {}),
    });
    return {
      extents: manifest.extents.length,
      changedBytes: manifest.changedBytes,
      complete: manifest.complete,
    };
  } finally {
    await device.close();
  }
};

export interface OciCommandDeps {
  /** Provisioner settings merged under the command-line options (tests: fake iscsiadm, sysfs). */
  config?: Partial<OciDeltaProvisionerConfig>;
  /** Scanner; default: the package's GET LBA STATUS scanner. */
  scan?: DeltaScanner;
  /** Exporter for --export; default: the package's exportChanged. */
  exportData?: DeltaExporter;
}

export function createOciDeltaCommand(deps: OciCommandDeps = {}): CliCommand {
  const scan = deps.scan ?? defaultScanner;
  const exportData = deps.exportData ?? defaultExporter;
  const run = async (args: string[], io: CliIo): Promise<number> => {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        ...COMMON_PARSE,
        'first-backup': { type: 'string' },
        'second-backup': { type: 'string' },
        'change-block-size': { type: 'string' },
        'timeout-ms': { type: 'string' },
        export: { type: 'string' },
        restart: { type: 'boolean' },
        attach: { type: 'string' },
        'no-progress': { type: 'boolean' },
      },
    });
    if (values.help) {
      io.stdout.write(DELTA_HELP);
      return ExitCode.ok;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    const first = values['first-backup'];
    const second = values['second-backup'];
    if (!first || !second) throw new UsageError('--first-backup and --second-backup are required');
    const format = values.format ?? (io.stdout.isTTY ? 'text' : 'ndjson');
    if (!['ndjson', 'json', 'text'].includes(format))
      throw new UsageError(`--format must be ndjson, json or text, got '${format}'`);
    const changeBlockSize = parseCount(values['change-block-size'], 'change-block-size', {
      sizes: true,
    });
    const timeoutMs = parseCount(values['timeout-ms'], 'timeout-ms');
    const attach = (values.attach ?? 'iscsiadm') as OciAttachMode;
    if (attach !== 'iscsiadm' && attach !== 'userspace')
      throw new UsageError(`--attach must be iscsiadm or userspace, got '${values.attach}'`);
    if (attach === 'userspace' && values.iscsiadm !== undefined)
      throw new UsageError('--iscsiadm applies only to --attach iscsiadm');
    if (values.restart && !values.export) throw new UsageError('--restart applies to --export DIR');
    const createdAt = sourceDateEpoch(io);
    if (values.export && !values.restart) {
      // Before anything is created (and billed): DIR must hold nothing or this delta's export.
      const lib = await import('../index.js');
      await lib.checkExportDir(values.export, {
        source: { firstBackupId: first, secondBackupId: second },
        changeBlockSize: changeBlockSize ?? 4096,
      });
    }
    const base = { ...deps.config, attach };
    if (timeoutMs !== undefined) base.poll = { ...base.poll, timeoutMs };
    const provisioner = new OciDeltaVolumeProvisioner(configFrom(values, io, base));
    const steps = showSteps(io, values);
    const onProgress = progressWriter(io, steps);
    const started = performance.now();
    const items: string[] = [];
    let changedExtents = 0;
    let changedBlocks = 0;
    try {
      const summary = await withProvisionedVolume(
        provisioner,
        {
          firstBackupId: first,
          secondBackupId: second,
          ...(changeBlockSize === undefined ? {} : { changeBlockSize }),
          signal: io.signal,
          onProgress,
        },
        async (volume, signal) => {
          const v = volume as OciDeltaVolume;
          onProgress({ step: 'scan', phase: 'start', detail: v.device });
          let lastProgress = 0;
          const result = await scan(
            volume,
            async (e) => {
              changedExtents++;
              changedBlocks += e.blocks;
              const line = `{"lba":${e.lba},"blocks":${e.blocks},"status":${e.status},"additional":${e.additional}}`;
              if (format === 'json') items.push(line);
              else if (format === 'text') {
                await write(
                  io,
                  `${String(e.lba).padStart(14)}  ${String(e.blocks).padStart(10)}  status ${e.status}${e.additional ? ` additional=${e.additional}` : ''}\n`,
                );
              } else await write(io, `${line}\n`);
            },
            signal,
            (text) => {
              const now = Date.now();
              if (steps && now - lastProgress > 2000) {
                lastProgress = now;
                io.stderr.write(`oci: ${text}\n`);
              }
            },
          );
          onProgress({
            step: 'scan',
            phase: 'done',
            detail: `${changedExtents} changed extent(s)`,
          });
          if (values.export) {
            onProgress({ step: 'export', phase: 'start', detail: values.export });
            const exported = await exportData(volume, values.export, {
              changeBlockSize: v.changeBlockSize,
              firstBackupId: first,
              secondBackupId: second,
              signal,
              ...(values.restart ? { restart: true } : {}),
              ...(createdAt ? { createdAt } : {}),
            });
            onProgress({
              step: 'export',
              phase: 'done',
              detail: `${exported.extents} chunk(s), ${formatBytes(exported.changedBytes)}`,
            });
          }
          return {
            volumeId: v.volumeId,
            kind: v.kind,
            changeBlockSize: v.changeBlockSize,
            device: v.device,
            blockSize: result.blockSize,
            capacityBlocks: result.capacityBlocks,
            changedExtents,
            changedBlocks,
            changedBytes: changedBlocks * result.blockSize,
          };
        },
      );
      const elapsedMs = Math.round(performance.now() - started);
      if (format === 'json') {
        await write(
          io,
          `{"summary":${JSON.stringify({ firstBackupId: first, secondBackupId: second, ...summary, elapsedMs })},"extents":[${items.join(',')}]}\n`,
        );
      } else if (format === 'text') {
        await write(
          io,
          `${changedExtents} changed extent(s), ${formatBytes(summary.changedBytes)} of ${formatBytes(summary.capacityBlocks * summary.blockSize)} changed, in ${formatDuration(elapsedMs)}\n`,
        );
      }
      return ExitCode.ok;
    } finally {
      await provisioner.close();
    }
  };
  return {
    path: ['oci', 'delta'],
    summary: 'changed extents between two OCI backups (creates, scans and deletes a delta volume)',
    help: DELTA_HELP,
    run: guardedOci(run),
  };
}

export function createOciSweepCommand(deps: OciCommandDeps = {}): CliCommand {
  const run = async (args: string[], io: CliIo): Promise<number> => {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        ...COMMON_PARSE,
        'older-than': { type: 'string' },
        'dry-run': { type: 'boolean' },
      },
    });
    if (values.help) {
      io.stdout.write(SWEEP_HELP);
      return ExitCode.ok;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    const format = values.format ?? (io.stdout.isTTY ? 'text' : 'json');
    if (!['json', 'text'].includes(format))
      throw new UsageError(`--format must be json or text, got '${format}'`);
    let olderThanMs: number;
    try {
      olderThanMs = parseDuration(values['older-than'] ?? '1h');
    } catch (e) {
      throw new UsageError(`--older-than: ${(e as Error).message}`);
    }
    const provisioner = new OciDeltaVolumeProvisioner(configFrom(values, io, { ...deps.config }));
    try {
      const result = await sweep(provisioner, {
        olderThanMs,
        ...(values['dry-run'] ? { dryRun: true } : {}),
        ...(values['compartment-id'] ? { compartmentId: values['compartment-id'] } : {}),
        signal: io.signal,
        onProgress: progressWriter(io, showSteps(io, values)),
      });
      const verb = values['dry-run'] ? 'would remove' : 'removed';
      if (format === 'json') {
        await write(
          io,
          `${JSON.stringify({ dryRun: values['dry-run'] === true, volumes: result.volumes, attachments: result.attachments, sessions: result.sessions, errors: result.errors.map((e) => ({ code: e.code, message: e.message })) })}\n`,
        );
      } else {
        await write(
          io,
          `${verb} ${result.volumes.length} volume(s), ${result.attachments.length} attachment(s), ${result.sessions.length} iSCSI session(s)\n`,
        );
        for (const v of result.volumes) await write(io, `  volume ${v}\n`);
        for (const a of result.attachments) await write(io, `  attachment ${a}\n`);
      }
      for (const e of result.errors) io.stderr.write(`lba-status: ${e.message}\n`);
      // A removal that failed is the cloud's refusal (8) unless its code says otherwise.
      if (result.errors.length === 0) return ExitCode.ok;
      const code = exitCodeOf(result.errors[0]);
      return code === ExitCode.failure ? ExitCode.cloud : code;
    } finally {
      await provisioner.close();
    }
  };
  return {
    path: ['oci', 'sweep'],
    summary: 'remove delta volumes and attachments left by crashed runs',
    help: SWEEP_HELP,
    run: guardedOci(run),
  };
}

/** SOURCE_DATE_EPOCH (seconds) for a reproducible manifest, as in `export`. */
function sourceDateEpoch(io: CliIo): Date | undefined {
  const raw = io.env.SOURCE_DATE_EPOCH;
  if (raw === undefined || raw === '') return undefined;
  if (!/^\d+$/.test(raw))
    throw new UsageError(`SOURCE_DATE_EPOCH must be whole seconds since 1970, got '${raw}'`);
  return new Date(Number(raw) * 1000);
}

async function write(io: CliIo, text: string): Promise<void> {
  if (!io.stdout.write(text)) await new Promise((resolve) => io.stdout.once('drain', resolve));
}

/** The notices oci-common's retrier writes with console.warn (lib/retrier.js). */
export const SDK_RETRY_NOTICE =
  /^(Request failed with Exception : |Request cannot be retried\. Not Retrying\.|All retry attempts have exhausted\.)/;

/**
 * The SDK's retrier writes to console.warn on every failed attempt ("Request cannot be retried…"
 * even for the 404 a deletion poll expects). While a command runs (it owns the process), turn the
 * retry notices into one short `oci:` line and drop the rest; NODE_DEBUG=lba-status shows all.
 */
async function withSdkWarnings<T>(io: CliIo, fn: () => Promise<T>): Promise<T> {
  if (/\blba-status\b/.test(io.env.NODE_DEBUG ?? '')) return fn();
  const original = console.warn;
  console.warn = (...args: unknown[]) => {
    const text = args.map(String).join(' ');
    const retry =
      /^Request failed with Exception : (.*)\nRetrying request -> Total Attempts : (\d+), Retrying after ([\d.]+) seconds/s.exec(
        text,
      );
    if (retry) {
      if (stepsShown.get(io) !== true) return;
      io.stderr.write(
        `oci: retry ${retry[2]} in ${Number(retry[3]).toFixed(1)} s after: ${(retry[1] ?? '').split('\n')[0]}\n`,
      );
      return;
    }
    if (/^(Request cannot be retried|All retry attempts have exhausted)/.test(text)) return; // reported as the error
    original.apply(console, args);
  };
  try {
    return await fn();
  } finally {
    console.warn = original;
  }
}

/**
 * util's `guarded` plus what the OCI commands add: SDK warnings tamed, an interrupted run
 * reported as an abort (exit 130) whatever the work threw, and a work error with a cleanup error
 * (AggregateError) reported as both lines, exiting by the first.
 */
function guardedOci(run: (args: string[], io: CliIo) => Promise<number>) {
  return guarded(async (args, io) => {
    try {
      return await withSdkWarnings(io, () => run(args, io));
    } catch (caught) {
      // --export DIR holds another delta's export: a conflict of the command line, not of OCI.
      const first = caught instanceof AggregateError ? caught.errors[0] : caught;
      if ((first as { code?: unknown })?.code === 'ERR_LBA_STATUS_EXPORT_MISMATCH') {
        for (const e of caught instanceof AggregateError ? caught.errors : [caught])
          io.stderr.write(`lba-status: ${(e as Error)?.message ?? String(e)}\n`);
        return ExitCode.usage;
      }
      const error =
        io.signal.aborted && !isAbortError(caught) && !(caught instanceof AggregateError)
          ? abortError(io.signal)
          : caught;
      if (!(error instanceof AggregateError) || error.errors.length === 0) throw error;
      const code = reportError(error.errors[0], io);
      for (const e of error.errors.slice(1))
        io.stderr.write(`lba-status: ${(e as Error)?.message ?? String(e)}\n`);
      return code;
    }
  });
}

/** `lba-status oci delta` (contract). */
export const ociDeltaCommand: CliCommand = createOciDeltaCommand();
/** `lba-status oci sweep` (contract). */
export const ociSweepCommand: CliCommand = createOciSweepCommand();
