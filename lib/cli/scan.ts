/** `lba-status scan` and `lba-status info`: compose openDevice, the scanner and formatting. */
import { parseArgs } from 'node:util';
import { type LbaStatusDevice, openDevice } from '../api/device.js';
import { type ChangedExtent, coalesceChanged, isChangedStatus } from '../scan/changed.js';
import {
  DEFAULT_SCAN_CONCURRENCY,
  type LbaStatusBatch,
  ReportType,
  type ReportTypeName,
  type ScanOptions,
  scanBatches,
} from '../scan/scanner.js';
import { type CliCommand, type CliIo, UsageError } from './command.js';
import { DEVICE_OPTIONS, DEVICE_OPTIONS_HELP, deviceArgs, takeDevice } from './device-args.js';
import {
  ExitCode,
  formatBytes,
  formatDuration,
  guarded,
  ProgressLine,
  parseCount,
} from './util.js';

const SCAN_HELP = `Usage: lba-status scan DEVICE [options]

Scan a SCSI device with GET LBA STATUS and print its extents: on an OCI delta volume,
"mapped" (status 3) extents are the blocks that changed between the two backups.

DEVICE is /dev/sdX, /dev/sgN or a symlink (/dev/oracleoci/oraclevdb, /dev/disk/by-path/...),
or iscsi://[USER@]HOST[:PORT]/TARGET-IQN/LUN. A disk is scanned through its sg node when it has
one (no CAP_SYS_RAWIO needed); an iscsi:// device over lba-status's own initiator (no root).

Options:
  --report-type T        all|nonzero|mapped|deallocated|anchored or 0..255 (default nonzero)
  --cdb F                auto|16|32: auto sends the 32-byte CDB and falls back to the
                         16-byte one if the device refuses it (default auto)
  --start-lba N          first LBA (default 0); resume a scan with the last nextLba
  --end-lba N            stop before this LBA (default: the capacity)
  --window-blocks N      SCAN LENGTH per command, 32-byte form (default and max: 1 GiB worth)
  --allocation-length N  reply buffer per command in bytes (default 32768; use 8 + 16k)
  --concurrency N        windows in flight, 32-byte form (default 4)
  --engine E             device nodes: threads (default: SG_IO on the device's own threads)
                         | sg-async (sg's write()/read() on the event loop: least CPU per command)
  --changed-only         print only changed extents (every status but deallocated)
  --change-block-size N  with --changed-only: widen to multiples of N bytes and merge
                         (the delta volume's changeBlockSizeInBytes, e.g. 4096 or 1M)
  --format F             ndjson (default when piped) | json | text (default on a terminal) |
                         sg3 (one command, byte-for-byte like 'sg_get_lba_status -b', sg3_utils 1.46)
  --timeout-ms N         per-command timeout (default 60000)
  --no-progress          no progress line on stderr (shown only when stderr is a terminal)
  -h, --help             this help

${DEVICE_OPTIONS_HELP}

Output (ndjson): one extent per line, as the device reported it:
  {"lba":96,"blocks":16,"status":3,"additional":0}
With --change-block-size: {"lba":0,"blocks":2048,"offset":0,"length":1048576}

Exit status: 0 ok, 2 usage, 3 system error (missing device, permission, not SCSI, connection
refused), 4 SCSI error (command refused), 5 transport error (iSCSI login refused included),
6 malformed reply, 130 interrupted.

Examples:
  lba-status scan /dev/sdb
  LBA_STATUS_CHAP_SECRET="$(pass show iscsi/vol)" lba-status scan iscsi://vol@169.254.2.2/iqn.2015-12.com.oracleiaas:x/1
  lba-status scan iscsi://10.0.0.5:3260/iqn.2024-01.lba-status:sim/1 --chap-user backup \
      --chap-secret-file ~/.config/lba-status/chap --changed-only --change-block-size 1M
  lba-status scan /dev/sg2 --changed-only --change-block-size 1M --format text
  lba-status scan /dev/sdb --cdb 32 --start-lba 0 --window-blocks 2097152 --allocation-length 32768 --format sg3
  lba-status scan /dev/sdb --format json > extents.json
`;

const INFO_HELP = `Usage: lba-status info DEVICE [--json] [iSCSI options]

Identify a SCSI device and what it supports: vendor, product, serial, block size, capacity,
thin provisioning (LBPME, VPD B2h) and GET LBA STATUS(16)/(32) support as the device reports it
(REPORT SUPPORTED OPERATION CODES; "unknown" when it does not answer). DEVICE is a device node
(/dev/sdX, /dev/sgN, a symlink) or iscsi://[USER@]HOST[:PORT]/TARGET-IQN/LUN.

${DEVICE_OPTIONS_HELP}

Examples:
  lba-status info /dev/sdb
  lba-status info /dev/sg1 --json | jq .capacityBytes
  LBA_STATUS_CHAP_SECRET="$(pass show iscsi/backup)" lba-status info iscsi://backup@10.0.0.5/iqn.2024-01.lba-status:sim/1
`;

function parseReportType(value: string | undefined): ReportTypeName | number | undefined {
  if (value === undefined) return undefined;
  if (value in ReportType) return value as ReportTypeName;
  const number = parseCount(value, 'report-type');
  if (number === undefined || number > 255)
    throw new UsageError(
      `--report-type must be one of ${Object.keys(ReportType).join('|')} or 0..255`,
    );
  return number;
}

function parseCdb(value: string | undefined): 'auto' | 16 | 32 | undefined {
  if (value === undefined || value === 'auto') return value;
  if (value === '16' || value === '32') return Number(value) as 16 | 32;
  throw new UsageError(`--cdb must be auto, 16 or 32, got '${value}'`);
}

/** Formats one sg3_utils 1.46 `-b` descriptor line. */
function sg3Line(lba: number, blocks: number, status: number, additional: number): string {
  return `0x${lba.toString(16).padStart(16, '0')}  0x${blocks.toString(16)}  ${status}  ${additional}\n`;
}

async function runSg3(device: LbaStatusDevice, options: ScanOptions, io: CliIo): Promise<void> {
  const form = options.cdb === 16 ? 16 : 32;
  const allocationLength = options.allocationLength ?? 32768;
  const reply = await device.getLbaStatus({
    cdb: form,
    lba: options.startLba ?? 0,
    allocationLength,
    scanLength: form === 32 ? (options.windowBlocks ?? 0) : 0,
    reportType:
      typeof options.reportType === 'string'
        ? ReportType[options.reportType]
        : (options.reportType ?? ReportType.nonzero),
    signal: options.signal,
    timeoutMs: options.timeoutMs,
  });
  // sg3_utils 1.46: rlen = min(4 + PARAMETER DATA LENGTH, maxlen); below 24 nothing but this line.
  const rlen = Math.min(reply.parameterDataLength + 4, allocationLength);
  if (rlen < 24 || reply.count === 0) {
    io.stdout.write('No complete LBA status descriptors available\n');
    return;
  }
  let out = `Completion condition=${reply.completionCondition}\nRTP=${reply.rtp}\n`;
  for (let i = 0; i < reply.count; i++)
    out += sg3Line(reply.lba[i]!, reply.blocks[i]!, reply.status[i]!, reply.additional[i]!);
  io.stdout.write(out);
}

interface Totals {
  extents: number;
  changedExtents: number;
  changedBlocks: number;
  commands: number;
  rtp: boolean | undefined;
  cdb: 16 | 32 | undefined;
  nextLba: number;
}

/** Writes the extents of counted batches as ndjson/json/text lines. */
async function writeExtents(
  batches: AsyncIterable<LbaStatusBatch>,
  format: string,
  changedOnly: boolean,
  io: CliIo,
  jsonItems: string[],
): Promise<void> {
  for await (const batch of batches) {
    let chunk = '';
    for (let i = 0; i < batch.count; i++) {
      const lba = batch.lba[i]!;
      const blocks = batch.blocks[i]!;
      const status = batch.status[i]!;
      if (changedOnly && !isChangedStatus(status)) continue;
      const additional = batch.additional[i]!;
      if (format === 'text') {
        chunk += `${String(lba).padStart(14)}  ${String(blocks).padStart(10)}  ${statusName(status).padEnd(15)}${additional ? `  additional=${additional}` : ''}\n`;
      } else {
        const line = `{"lba":${lba},"blocks":${blocks},"status":${status},"additional":${additional}}`;
        if (format === 'json') jsonItems.push(line);
        else chunk += `${line}\n`;
      }
    }
    if (chunk && !io.stdout.write(chunk))
      await new Promise((resolve) => io.stdout.once('drain', resolve));
  }
}

function statusName(status: number): string {
  return (
    ['mapped|unknown', 'deallocated', 'anchored', 'mapped', 'unknown'][status] ?? `status ${status}`
  );
}

async function runScan(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      'report-type': { type: 'string' },
      cdb: { type: 'string' },
      'start-lba': { type: 'string' },
      'end-lba': { type: 'string' },
      'window-blocks': { type: 'string' },
      'allocation-length': { type: 'string' },
      concurrency: { type: 'string' },
      engine: { type: 'string' },
      'changed-only': { type: 'boolean' },
      'change-block-size': { type: 'string' },
      format: { type: 'string' },
      'timeout-ms': { type: 'string' },
      progress: { type: 'boolean' },
      'no-progress': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      ...DEVICE_OPTIONS,
    },
  });
  if (values.help) {
    io.stdout.write(SCAN_HELP);
    return ExitCode.ok;
  }
  const target = await deviceArgs(takeDevice(positionals), values, io);
  const format = values.format ?? (io.stdout.isTTY ? 'text' : 'ndjson');
  if (!['ndjson', 'json', 'text', 'sg3'].includes(format))
    throw new UsageError(`--format must be ndjson, json, text or sg3, got '${format}'`);
  const changeBlockSize = parseCount(values['change-block-size'], 'change-block-size', {
    sizes: true,
  });
  if (changeBlockSize !== undefined && !values['changed-only'])
    throw new UsageError('--change-block-size needs --changed-only');
  const progress = new ProgressLine(
    io,
    io.stderr.isTTY === true && !values['no-progress'] && format !== 'sg3',
  );
  const started = performance.now();
  const options: ScanOptions = {
    reportType: parseReportType(values['report-type']),
    cdb: parseCdb(values.cdb),
    startLba: parseCount(values['start-lba'], 'start-lba'),
    endLba: parseCount(values['end-lba'], 'end-lba'),
    windowBlocks: parseCount(values['window-blocks'], 'window-blocks'),
    allocationLength: parseCount(values['allocation-length'], 'allocation-length', { sizes: true }),
    concurrency: parseCount(values.concurrency, 'concurrency'),
    timeoutMs: parseCount(values['timeout-ms'], 'timeout-ms'),
    signal: io.signal,
    onProgress: (p) =>
      progress.update(
        `scan ${(p.fraction * 100).toFixed(1)}%  LBA ${p.scannedLba}/${p.endLba}  ${p.descriptors} extents  ${p.commands} commands${p.etaMs === undefined ? '' : `  ETA ${formatDuration(p.etaMs)}`}`,
      ),
  };
  for (const key of Object.keys(options) as Array<keyof ScanOptions>)
    if (options[key] === undefined) delete options[key];
  const device = await openDevice(target.address, {
    queueDepth: options.concurrency ?? DEFAULT_SCAN_CONCURRENCY,
    ...target.options,
  });
  try {
    if (format === 'sg3') {
      await runSg3(device, options, io);
      return ExitCode.ok;
    }
    const { blockSize, blocks: capacity } = await device.capacity({ signal: io.signal });
    const totals: Totals = {
      extents: 0,
      changedExtents: 0,
      changedBlocks: 0,
      commands: 0,
      rtp: undefined,
      cdb: undefined,
      nextLba: options.startLba ?? 0,
    };
    const jsonItems: string[] = [];
    if (values['changed-only'] && changeBlockSize !== undefined) {
      if (changeBlockSize < blockSize || (changeBlockSize & (changeBlockSize - 1)) !== 0) {
        throw new UsageError(
          `--change-block-size must be a power of two of at least the block size (${blockSize})`,
        );
      }
      const counted = countBatches(scanBatches(device, options), totals);
      let aligned = 0;
      for await (const extent of coalesceChanged(
        counted,
        blockSize,
        changeBlockSize / blockSize,
        capacity,
      )) {
        writeAligned(extent, format, io, jsonItems);
        aligned++;
      }
      totals.changedExtents = aligned; // what was printed: aligned, merged extents
    } else {
      await writeExtents(
        countBatches(scanBatches(device, options), totals),
        format,
        values['changed-only'] === true,
        io,
        jsonItems,
      );
    }
    progress.done();
    const elapsedMs = performance.now() - started;
    const summary = {
      device: device.path,
      blockSize,
      capacityBlocks: capacity,
      cdb: totals.cdb ?? null,
      rtp: totals.rtp ?? null,
      extents: totals.extents,
      changedExtents: totals.changedExtents,
      changedBlocks: totals.changedBlocks,
      changedBytes: totals.changedBlocks * blockSize,
      nextLba: totals.nextLba,
      commands: totals.commands,
      elapsedMs: Math.round(elapsedMs),
    };
    if (format === 'json') {
      io.stdout.write(
        `{"summary":${JSON.stringify(summary)},"extents":[${jsonItems.join(',')}]}\n`,
      );
    } else if (format === 'text') {
      io.stdout.write(
        `${totals.changedExtents} changed extent(s), ${formatBytes(summary.changedBytes)} of ${formatBytes(capacity * blockSize)} changed (${totals.changedBlocks} blocks of ${blockSize} bytes); ${totals.extents} extent(s) reported by GET LBA STATUS(${totals.cdb ?? '-'}), RTP=${totals.rtp === false ? 0 : 1}, ${totals.commands} command(s) in ${formatDuration(elapsedMs)}\n`,
      );
    } else if (io.stderr.isTTY) {
      io.stderr.write(
        `${totals.changedExtents} changed extent(s), ${formatBytes(summary.changedBytes)} changed, in ${formatDuration(elapsedMs)}\n`,
      );
    }
    return ExitCode.ok;
  } finally {
    progress.done();
    await device.close();
  }
}

/** Passes batches through while adding them to the totals. */
async function* countBatches(
  batches: AsyncIterable<LbaStatusBatch>,
  totals: Totals,
): AsyncGenerator<LbaStatusBatch> {
  for await (const batch of batches) {
    totals.commands++;
    totals.rtp = (totals.rtp ?? true) && batch.rtp;
    totals.cdb = batch.cdb;
    totals.nextLba = batch.nextLba;
    totals.extents += batch.count;
    for (let i = 0; i < batch.count; i++) {
      if (!isChangedStatus(batch.status[i]!)) continue;
      totals.changedExtents++;
      totals.changedBlocks += batch.blocks[i]!;
    }
    yield batch;
  }
}

function writeAligned(extent: ChangedExtent, format: string, io: CliIo, jsonItems: string[]): void {
  const line = `{"lba":${extent.lba},"blocks":${extent.blocks},"offset":${extent.offset},"length":${extent.length}}`;
  if (format === 'json') jsonItems.push(line);
  else if (format === 'text')
    io.stdout.write(
      `${String(extent.offset).padStart(16)}  ${formatBytes(extent.length).padStart(10)}  (LBA ${extent.lba}, ${extent.blocks} blocks)\n`,
    );
  else io.stdout.write(`${line}\n`);
}

async function runInfo(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      ...DEVICE_OPTIONS,
    },
  });
  if (values.help) {
    io.stdout.write(INFO_HELP);
    return ExitCode.ok;
  }
  const target = await deviceArgs(takeDevice(positionals), values, io);
  const device = await openDevice(target.address, { queueDepth: 1, ...target.options });
  try {
    const info = await device.info({ signal: io.signal });
    if (values.json) {
      io.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
      return ExitCode.ok;
    }
    const rows: Array<[string, unknown]> = [
      [
        'device',
        `${info.path}${info.blockPath && info.blockPath !== info.path ? ` (block ${info.blockPath})` : ''}${info.sgPath && info.sgPath !== info.path ? ` (sg ${info.sgPath})` : ''}`,
      ],
      ['vendor', info.vendor],
      ['product', info.product],
      ['revision', info.revision],
      ['serial', info.serialNumber ?? '-'],
      ['block size', `${info.blockSize} bytes`],
      ['capacity', `${info.capacityBlocks} blocks (${formatBytes(info.capacityBytes)})`],
      [
        'thin provisioning',
        `LBPME=${info.lbpme ? 1 : 0} LBPRZ=${info.lbprz ? 1 : 0}${info.provisioning ? ` type=${['full/unknown', 'resource', 'thin'][info.provisioning.provisioningType] ?? info.provisioning.provisioningType}` : ''}`,
      ],
      [
        'max transfer',
        info.blockLimits?.maxTransferBlocks ? `${info.blockLimits.maxTransferBlocks} blocks` : '-',
      ],
      ['GET LBA STATUS(16)', info.getLbaStatus16],
      ['GET LBA STATUS(32)', info.getLbaStatus32],
    ];
    io.stdout.write(`${rows.map(([k, v]) => `${`${k}:`.padEnd(20)} ${v}`).join('\n')}\n`);
    return ExitCode.ok;
  } finally {
    await device.close();
  }
}

export const scanCommand: CliCommand = {
  path: ['scan'],
  summary: "list a device's extents with GET LBA STATUS (changed blocks on a delta volume)",
  help: SCAN_HELP,
  run: guarded(runScan),
};
export const infoCommand: CliCommand = {
  path: ['info'],
  summary: 'identify a device: geometry, thin provisioning, GET LBA STATUS support',
  help: INFO_HELP,
  run: guarded(runInfo),
};
