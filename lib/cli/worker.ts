/**
 * `lba-status worker`, `lba-status enqueue`, `lba-status jobs`: a fleet of delta-job workers on
 * BullMQ (Redis). The library (lba-status/jobs) does the work; these parse flags and print JSON.
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { isAbortError } from '../abort.js';
import type { DeltaJobSpec } from '../jobs/delta-job.js';
import type { OciAttachMode } from '../oci/provisioner.js';
import type { ExportFormat } from '../read/export.js';
import { type CliCommand, type CliIo, UsageError } from './command.js';
import { COMMON_OPTIONS, COMMON_PARSE, type CommonValues, configFrom } from './oci.js';
import { ExitCode, parseCount, reportError } from './util.js';

const REDIS_OPTIONS = `  --redis URL             redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss://… for TLS
                          (OCI Cache with Redis); default $LBA_STATUS_REDIS_URL, which keeps
                          a password out of the process list
  --queue NAME            BullMQ queue name (letters, digits, . _ -); default $LBA_STATUS_QUEUE
  --prefix P              BullMQ key prefix (default bull)`;

const WORKER_HELP = `Usage: lba-status worker --redis URL --queue NAME --slots N [--attach iscsiadm|userspace] [OCI options]

Run delta jobs from a BullMQ queue on Redis until SIGTERM/SIGINT, up to N at once on this
instance. Each job (lba-status enqueue) builds an OCI delta volume from two backups, attaches
it here, exports the changed data into the job's directory (resuming what an earlier attempt
synced) and removes the volume. BullMQ hands each job to one worker, renews its lock while it
runs and gives the jobs of a worker that died back to the queue once their lock expires.

At start the worker removes what this instance left behind (volumes tagged with this instance,
e.g. after a kill -9). On SIGTERM it takes no new job, aborts the running ones, releases their
volumes and puts them back in the queue without using up an attempt, then exits 0. A job whose
lock could not be renewed (Redis lost it) is aborted here: another worker owns it. Errors that
no retry can fix (bad OCIDs, backups of different volumes, an export directory holding another
delta) fail the job at once; others are retried by BullMQ with exponential backoff.

Needs the optional packages bullmq and ioredis (npm install bullmq ioredis) and, for OCI,
oci-core and oci-common.

Options:
${REDIS_OPTIONS}
  --slots N               jobs at once (default 1), each holding one attachment: at most the
                          instance's attachment limit (32 on most shapes) minus its own volumes
  --attach M              iscsiadm (default; root) | userspace (no root, no iscsid)
${COMMON_OPTIONS}
  --timeout-ms N          deadline of each lifecycle wait (default 1200000)
  --lock-duration-ms N    a running job's lock, renewed every half (default 30000): a dead
                          worker's jobs return to the queue after about this long
  --stalled-interval-ms N how often to look for jobs whose worker died (default 30000)
  --max-stalled N         times a job may return after its worker died before it fails
                          (default 3)
  --no-sweep              do not sweep this instance's leftovers at start
  -h, --help              this help

Output: one JSON line per event on stdout —
  {"event":"ready","worker":"lba-status@host/123","queue":"nightly","slots":4,"instanceId":"…"}
  {"event":"sweep","volumes":[],"attachments":[],"errors":[]}
  {"event":"active","id":"vol1-2026-11-30","attempt":1}
  {"event":"progress","id":"…","progress":{"jobId":"…","phase":"export","bytesDone":N,"bytesTotal":N}}
  {"event":"completed","id":"…","result":{…}}   {"event":"failed","id":"…","error":"…","attempts":1,"final":false}
  {"event":"requeued","id":"…","reason":"worker stopping"}   {"event":"stopped"}

Exit status: 0 stopped by SIGTERM/SIGINT after releasing everything, 2 usage, 3 Redis
unreachable or bullmq/ioredis missing (the OCI SDK too), 8 the OCI side could not start
(e.g. credentials refused, no instance metadata).

Examples:
  export LBA_STATUS_REDIS_URL=rediss://:PASSWORD@redis.example.internal:6379
  sudo -E lba-status worker --queue nightly --slots 8 --instance-principal
  lba-status worker --redis redis://10.0.0.5 --queue nightly --slots 4 --attach userspace \\
    --config-file ~/.oci/config
`;

const ENQUEUE_HELP = `Usage: lba-status enqueue --redis URL --queue NAME --job-id ID --first-backup ID --second-backup ID --export DIR [options]

Add one delta job to the queue. The BullMQ job id is ID: adding a job whose id is already in the
queue (waiting, running, completed or failed) changes nothing, so enqueueing twice does not run
it twice. Prints {"id":ID,"added":true|false,"state":"waiting"|…}.

Options:
${REDIS_OPTIONS}
  --job-id ID             1-128 letters, digits, . _ -, not only digits (it tags the delta
                          volume and names the job in BullMQ)
  --first-backup ID       older backup (ocid1.volumebackup… or ocid1.bootvolumebackup…)
  --second-backup ID      newer, incremental backup of the same volume
  --change-block-size N   delta granularity: 4096 (default) … 1M
  --export DIR            export directory (made absolute here): every worker must see the
                          same path (shared file system), and a retry resumes it
  --formats F             raw,rbd-diff (default both)
  --attempts N            attempts before the job is failed (default 5)
  --backoff-ms N          first retry delay, doubling (default 10000)
  -h, --help              this help

Examples:
  lba-status enqueue --redis redis://10.0.0.5 --queue nightly --job-id vol1-2026-11-30 \\
    --first-backup ocid1.volumebackup.oc1.eu-paris-1.aaa \\
    --second-backup ocid1.volumebackup.oc1.eu-paris-1.bbb --export /mnt/backups/vol1/2026-11-30
`;

const JOBS_HELP = `Usage: lba-status jobs --redis URL --queue NAME [--format json|text]

List the queue's jobs, oldest first, one per line:
  {"id":"…","state":"completed","attempts":1,"progress":{…},"result":{…}}
  {"id":"…","state":"failed","attempts":5,"progress":{…},"error":"…"}
state is BullMQ's: waiting, active, delayed (waiting for a retry), completed, failed (or
prioritized, waiting-children). attempts counts finished attempts; a job a stopping worker put
back did not use one.

Options:
${REDIS_OPTIONS}
  --format F              json (default: one JSON object per line) | text
  -h, --help              this help

Examples:
  lba-status jobs --redis redis://10.0.0.5 --queue nightly
  lba-status jobs --redis redis://10.0.0.5 --queue nightly --format text
`;

const REDIS_PARSE = {
  redis: { type: 'string' },
  queue: { type: 'string' },
  prefix: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function connection(
  values: { redis?: string; queue?: string; prefix?: string },
  io: CliIo,
): { redis: string; queue: string; prefix?: string } {
  const redis = values.redis ?? io.env.LBA_STATUS_REDIS_URL;
  const queue = values.queue ?? io.env.LBA_STATUS_QUEUE;
  if (!redis) throw new UsageError('--redis URL is required (or $LBA_STATUS_REDIS_URL)');
  if (!queue) throw new UsageError('--queue NAME is required (or $LBA_STATUS_QUEUE)');
  return { redis, queue, ...(values.prefix ? { prefix: values.prefix } : {}) };
}

/** Library errors → exit codes of these commands (ERR_JOB_SPEC: usage; Redis, install: system). */
function fail(err: unknown, io: CliIo): number {
  const code = (err as { code?: unknown })?.code;
  if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))
    return reportError(new UsageError((err as Error).message), io);
  if (code === 'ERR_JOB_SPEC') return reportError(new UsageError((err as Error).message), io);
  const exit = reportError(err, io);
  if (code === 'ERR_QUEUE_UNREACHABLE' || code === 'ERR_BULLMQ_MISSING') return ExitCode.system;
  return exit;
}

const line = (io: CliIo, v: unknown) => io.stdout.write(`${JSON.stringify(v)}\n`);

async function runWorker(args: string[], io: CliIo): Promise<number> {
  try {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        ...COMMON_PARSE,
        ...REDIS_PARSE,
        slots: { type: 'string' },
        attach: { type: 'string' },
        'timeout-ms': { type: 'string' },
        'lock-duration-ms': { type: 'string' },
        'stalled-interval-ms': { type: 'string' },
        'max-stalled': { type: 'string' },
        'no-sweep': { type: 'boolean' },
      },
    });
    if (values.help) {
      io.stdout.write(WORKER_HELP);
      return ExitCode.ok;
    }
    if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    const conn = connection(values, io);
    const slots = parseCount(values.slots, 'slots') ?? 1;
    if (slots < 1 || slots > 1024) throw new UsageError('--slots must be 1..1024');
    const attach = values.attach ?? 'iscsiadm';
    if (attach !== 'iscsiadm' && attach !== 'userspace')
      throw new UsageError(`--attach must be iscsiadm or userspace, got '${attach}'`);
    if (attach === 'userspace' && values.iscsiadm !== undefined)
      throw new UsageError('--iscsiadm applies only to --attach iscsiadm');
    const timeoutMs = parseCount(values['timeout-ms'], 'timeout-ms');
    const ms = (name: 'lock-duration-ms' | 'stalled-interval-ms') => {
      const v = parseCount(values[name], name);
      if (v !== undefined && (v < 1000 || v > 3_600_000))
        throw new UsageError(`--${name} must be 1000..3600000`);
      return v;
    };
    const lockDurationMs = ms('lock-duration-ms');
    const stalledIntervalMs = ms('stalled-interval-ms');
    const maxStalled = parseCount(values['max-stalled'], 'max-stalled');
    if (maxStalled !== undefined && (maxStalled < 1 || maxStalled > 1000))
      throw new UsageError('--max-stalled must be 1..1000');
    const oci = configFrom(values as CommonValues, io, {
      attach: attach as OciAttachMode,
      ...(timeoutMs === undefined ? {} : { poll: { timeoutMs } }),
    });
    if (io.signal.aborted) return ExitCode.aborted;
    const { createDeltaWorker } = await import('../jobs/worker.js');
    const worker = await createDeltaWorker({
      ...conn,
      slots,
      attach: attach as OciAttachMode,
      oci,
      ...(values['no-sweep'] ? { sweepAtStart: false } : {}),
      ...(lockDurationMs === undefined ? {} : { lockDurationMs }),
      ...(stalledIntervalMs === undefined ? {} : { stalledIntervalMs }),
      ...(maxStalled === undefined ? {} : { maxStalledCount: maxStalled }),
      signal: io.signal,
      onEvent: (e) => line(io, e),
    });
    await worker.closed;
    return ExitCode.ok;
  } catch (err) {
    if (io.signal.aborted && isAbortError(err)) {
      reportError(err, io);
      return ExitCode.aborted;
    }
    return fail(err, io);
  }
}

async function runEnqueue(args: string[], io: CliIo): Promise<number> {
  try {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        ...REDIS_PARSE,
        'job-id': { type: 'string' },
        'first-backup': { type: 'string' },
        'second-backup': { type: 'string' },
        'change-block-size': { type: 'string' },
        export: { type: 'string' },
        formats: { type: 'string' },
        attempts: { type: 'string' },
        'backoff-ms': { type: 'string' },
      },
    });
    if (values.help) {
      io.stdout.write(ENQUEUE_HELP);
      return ExitCode.ok;
    }
    if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    const conn = connection(values, io);
    for (const f of ['job-id', 'first-backup', 'second-backup', 'export'] as const)
      if (!values[f]) throw new UsageError(`--${f} is required`);
    const changeBlockSize = parseCount(values['change-block-size'], 'change-block-size', {
      sizes: true,
    });
    let formats: ExportFormat[] | undefined;
    if (values.formats !== undefined) {
      formats = values.formats.split(',').map((f) => f.trim()) as ExportFormat[];
      if (formats.length === 0 || formats.some((f) => f !== 'raw' && f !== 'rbd-diff'))
        throw new UsageError(`--formats must list raw and/or rbd-diff, got '${values.formats}'`);
    }
    const attempts = parseCount(values.attempts, 'attempts');
    const backoffMs = parseCount(values['backoff-ms'], 'backoff-ms');
    const spec: DeltaJobSpec = {
      jobId: values['job-id'] as string,
      firstBackupId: values['first-backup'] as string,
      secondBackupId: values['second-backup'] as string,
      ...(changeBlockSize === undefined ? {} : { changeBlockSize }),
      export: { dir: resolve(values.export as string), ...(formats ? { formats } : {}) },
    };
    const { enqueueDeltaJob } = await import('../jobs/queue.js');
    const r = await enqueueDeltaJob(spec, {
      ...conn,
      ...(attempts === undefined ? {} : { attempts }),
      ...(backoffMs === undefined ? {} : { backoffMs }),
    });
    line(io, r);
    return ExitCode.ok;
  } catch (err) {
    return fail(err, io);
  }
}

function textTable(jobs: Array<Record<string, unknown>>): string {
  const rows = jobs.map((j) => {
    const p = j.progress as { phase?: string; bytesDone?: number; bytesTotal?: number } | number;
    const progress =
      typeof p === 'object' && p
        ? `${p.phase ?? ''}${p.bytesTotal ? ` ${Math.floor(((p.bytesDone ?? 0) * 100) / p.bytesTotal)}%` : ''}`
        : String(p ?? '');
    const note = j.error !== undefined ? String(j.error) : '';
    return [String(j.id), String(j.state), String(j.attempts), progress, note];
  });
  const head = ['ID', 'STATE', 'ATTEMPTS', 'PROGRESS', 'ERROR'];
  const widths = head.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => (r[i] as string).length)),
  );
  return [head, ...rows]
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] as number)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
    .concat('\n');
}

async function runJobs(args: string[], io: CliIo): Promise<number> {
  try {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: { ...REDIS_PARSE, format: { type: 'string' } },
    });
    if (values.help) {
      io.stdout.write(JOBS_HELP);
      return ExitCode.ok;
    }
    if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    const format = values.format ?? 'json';
    if (format !== 'json' && format !== 'ndjson' && format !== 'text')
      throw new UsageError(`--format must be json or text, got '${format}'`);
    const conn = connection(values, io);
    const { listDeltaJobs } = await import('../jobs/queue.js');
    const jobs = await listDeltaJobs(conn);
    if (format === 'text')
      io.stdout.write(textTable(jobs as unknown as Array<Record<string, unknown>>));
    else for (const j of jobs) line(io, j);
    return ExitCode.ok;
  } catch (err) {
    return fail(err, io);
  }
}

export const workerCommand: CliCommand = {
  path: ['worker'],
  summary: 'run delta jobs from a BullMQ queue (Redis), N at once, until SIGTERM',
  help: WORKER_HELP,
  run: runWorker,
};

export const enqueueCommand: CliCommand = {
  path: ['enqueue'],
  summary: 'add a delta job to a BullMQ queue (job id = --job-id: never twice)',
  help: ENQUEUE_HELP,
  run: runEnqueue,
};

export const jobsCommand: CliCommand = {
  path: ['jobs'],
  summary: "list a queue's jobs with their BullMQ state, attempts, progress, result or error",
  help: JOBS_HELP,
  run: runJobs,
};
