/**
 * The queue side of a fleet: BullMQ on Redis, loaded on first use. `bullmq` and `ioredis` are
 * optional peer dependencies (like the OCI SDK): importing `lba-status/jobs` never loads them,
 * and the first call that needs them fails with {@link JobQueueError} `ERR_BULLMQ_MISSING` and
 * the install command when they are absent.
 *
 * enqueueDeltaJob() adds a job whose BullMQ job id is the delta job's id, so adding it twice
 * does not run it twice; listDeltaJobs() reads every job's BullMQ state back.
 */
import type * as Bullmq from 'bullmq';
import type * as IORedis from 'ioredis';
import { type JobQueueErrorCode, LbaStatusError } from '../errors.js';
import type { DeltaJobSpec } from './delta-job.js';

/** Stable codes of {@link JobQueueError} (the registry is lib/errors.ts). */
export type { JobQueueErrorCode };

export class JobQueueError extends LbaStatusError {
  override name = 'JobQueueError';
  readonly code: JobQueueErrorCode;
  constructor(code: JobQueueErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** Where the queue lives. */
export interface QueueConnectionOptions {
  /**
   * Redis URL: `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`, or `rediss://…` for TLS (OCI Cache
   * with Redis has TLS on). The password is never printed.
   */
  redis: string;
  /** Queue name (BullMQ's); every worker and enqueuer of one fleet uses the same. */
  queue: string;
  /** BullMQ key prefix (default `bull`). */
  prefix?: string;
}

export interface BullmqModules {
  bullmq: typeof Bullmq;
  Redis: typeof IORedis.Redis;
}

let loaded: Promise<BullmqModules> | undefined;

/** Imports bullmq and ioredis on first use; ERR_BULLMQ_MISSING when they are not installed. */
export function loadBullmq(): Promise<BullmqModules> {
  loaded ??= (async () => {
    try {
      const [b, r] = await Promise.all([import('bullmq'), import('ioredis')]);
      const bullmq = (
        (b as { Worker?: unknown }).Worker ? b : (b as { default?: unknown }).default
      ) as typeof Bullmq;
      const mod = r as unknown as { Redis?: unknown; default?: unknown };
      const Redis = (mod.Redis ??
        (mod.default as { Redis?: unknown } | undefined)?.Redis ??
        mod.default) as typeof IORedis.Redis;
      if (typeof bullmq?.Worker !== 'function' || typeof Redis !== 'function')
        throw new Error('bullmq or ioredis did not export what lba-status expects');
      return { bullmq, Redis };
    } catch (cause) {
      loaded = undefined;
      throw new JobQueueError(
        'ERR_BULLMQ_MISSING',
        'BullMQ is not installed. lba-status keeps it optional; install it next to lba-status: ' +
          'npm install bullmq ioredis',
        { cause },
      );
    }
  })();
  return loaded;
}

/** `redis://:secret@host` → `redis://***@host` (for messages and logs). */
export function redactRedisUrl(url: string): string {
  return url.replace(/^(rediss?:\/\/)[^@/]*@/i, '$1***@');
}

function checkConnection(o: QueueConnectionOptions): void {
  if (typeof o.redis !== 'string' || !/^rediss?:\/\/[^/\s]/i.test(o.redis))
    throw new JobQueueError(
      'ERR_JOB_SPEC',
      `the Redis URL must be redis://HOST[:PORT][/DB] or rediss://… (TLS); got ${JSON.stringify(redactRedisUrl(String(o.redis)))}`,
    );
  if (typeof o.queue !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(o.queue))
    throw new JobQueueError(
      'ERR_JOB_SPEC',
      `the queue name must be 1-100 letters, digits, '.', '_' or '-'; got ${JSON.stringify(o.queue)}`,
    );
}

/**
 * A Redis connection for BullMQ. `worker: true`: requests wait for Redis to come back
 * (maxRetriesPerRequest null, as BullMQ requires for workers) and reconnects never stop;
 * otherwise (enqueue, listing) it fails fast when Redis cannot be reached.
 */
export async function connectRedis(
  o: QueueConnectionOptions,
  role: { worker: boolean },
): Promise<IORedis.Redis> {
  checkConnection(o);
  const { Redis } = await loadBullmq();
  const client = new Redis(o.redis, {
    lazyConnect: true,
    connectTimeout: 10_000,
    ...(role.worker
      ? {
          maxRetriesPerRequest: null,
          // Redis restarted or failed over: retry every 0.2 s up to 2 s apart, forever.
          retryStrategy: (times: number) => Math.min(200 * times, 2000),
        }
      : {
          maxRetriesPerRequest: 1,
          retryStrategy: (times: number) => (times > 3 ? null : 200 * times),
        }),
  });
  // Errors surface through the calls; without a listener ioredis would print each reconnect.
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (cause) {
    client.disconnect();
    throw new JobQueueError(
      'ERR_QUEUE_UNREACHABLE',
      `cannot reach Redis at ${redactRedisUrl(o.redis)}: ${(cause as Error).message}`,
      { cause },
    );
  }
  return client;
}

const JOB_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const OCID = /^ocid1\.(?:volumebackup|bootvolumebackup)\.[a-z0-9-]+\.[a-z0-9-]*\.[a-z0-9]+$/;

/** Checks a delta job spec (the queue's job data); returns a clean copy. */
export function checkDeltaJobSpec(spec: DeltaJobSpec): DeltaJobSpec {
  const bad = (m: string) => new JobQueueError('ERR_JOB_SPEC', m);
  if (spec === null || typeof spec !== 'object') throw bad('the job spec must be an object');
  const { jobId, firstBackupId, secondBackupId, changeBlockSize } = spec;
  if (typeof jobId !== 'string' || !JOB_ID.test(jobId) || /^\d+$/.test(jobId))
    throw bad(
      `job id ${JSON.stringify(jobId)}: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, not only digits (BullMQ refuses integer custom ids)`,
    );
  for (const [name, v] of [
    ['firstBackupId', firstBackupId],
    ['secondBackupId', secondBackupId],
  ] as const)
    if (typeof v !== 'string' || !OCID.test(v))
      throw bad(`${name} must be a volume or boot volume backup OCID; got ${JSON.stringify(v)}`);
  if (
    changeBlockSize !== undefined &&
    (!Number.isInteger(changeBlockSize) ||
      changeBlockSize < 4096 ||
      changeBlockSize > 1 << 20 ||
      (changeBlockSize & (changeBlockSize - 1)) !== 0)
  )
    throw bad(`changeBlockSize must be a power of two in 4096..1048576; got ${changeBlockSize}`);
  const dir = spec.export?.dir;
  if (typeof dir !== 'string' || !dir.startsWith('/'))
    throw bad(
      `export.dir must be an absolute path (a directory every worker sees); got ${JSON.stringify(dir)}`,
    );
  const formats = spec.export.formats;
  if (
    formats !== undefined &&
    (!Array.isArray(formats) || formats.some((f) => f !== 'raw' && f !== 'rbd-diff'))
  )
    throw bad(`export.formats must list 'raw' and/or 'rbd-diff'; got ${JSON.stringify(formats)}`);
  return {
    jobId,
    firstBackupId,
    secondBackupId,
    ...(changeBlockSize === undefined ? {} : { changeBlockSize }),
    export: { dir, ...(formats === undefined ? {} : { formats: [...formats] }) },
  };
}

export interface EnqueueOptions extends QueueConnectionOptions {
  /** Attempts before the job is `failed` (default 5). */
  attempts?: number;
  /** First retry delay in ms, doubling each attempt (default 10 000). */
  backoffMs?: number;
}

export interface EnqueueResult {
  /** The BullMQ job id: the delta job's id. */
  id: string;
  /** False when a job with this id was already in the queue (in any state): nothing added. */
  added: boolean;
  /** The job's BullMQ state after the call. */
  state: string;
}

/** BullMQ job name of delta jobs. */
export const DELTA_JOB_NAME = 'delta';

/**
 * Adds a delta job to the queue with BullMQ job id = `spec.jobId`. A job with that id already in
 * the queue (waiting, active, delayed, completed or failed) is left as it is: enqueueing twice
 * does not run it twice.
 */
export async function enqueueDeltaJob(
  spec: DeltaJobSpec,
  options: EnqueueOptions,
): Promise<EnqueueResult> {
  const data = checkDeltaJobSpec(spec);
  const attempts = options.attempts ?? 5;
  const backoffMs = options.backoffMs ?? 10_000;
  if (!Number.isInteger(attempts) || attempts < 1 || attempts > 1000)
    throw new JobQueueError('ERR_JOB_SPEC', `attempts must be 1..1000; got ${attempts}`);
  if (!Number.isInteger(backoffMs) || backoffMs < 0)
    throw new JobQueueError('ERR_JOB_SPEC', `backoffMs must be ≥ 0; got ${backoffMs}`);
  const { bullmq } = await loadBullmq();
  const connection = await connectRedis(options, { worker: false });
  const queue = new bullmq.Queue(options.queue, {
    connection,
    ...(options.prefix ? { prefix: options.prefix } : {}),
  });
  try {
    // BullMQ leaves a job whose id is taken as it is (whatever its state); asking first only
    // tells the caller which case this was.
    const existed = (await queue.getJob(data.jobId)) !== undefined;
    await queue.add(DELTA_JOB_NAME, data, {
      jobId: data.jobId,
      attempts,
      backoff: { type: 'exponential', delay: backoffMs },
    });
    const state = await queue.getJobState(data.jobId);
    return { id: data.jobId, added: !existed, state };
  } finally {
    await queue.close();
    connection.disconnect();
  }
}

/** One job as `lba-status jobs` prints it. */
export interface DeltaJobStatus {
  id: string;
  /** BullMQ's state: waiting, active, delayed, completed, failed (or prioritized, waiting-children). */
  state: string;
  /** Attempts BullMQ counts as made (finished or failed). */
  attempts: number;
  /** The job's last progress (a {@link DeltaJobProgress} object from the worker), or 0. */
  progress: unknown;
  /** The worker's result (completed jobs). */
  result?: unknown;
  /** Why the last attempt failed (failed jobs, and jobs waiting for a retry). */
  error?: string;
}

const STATES = [
  'active',
  'waiting',
  'prioritized',
  'delayed',
  'waiting-children',
  'failed',
  'completed',
] as const;

/** Every job of the queue with its BullMQ state, oldest first. */
export async function listDeltaJobs(options: QueueConnectionOptions): Promise<DeltaJobStatus[]> {
  const { bullmq } = await loadBullmq();
  const connection = await connectRedis(options, { worker: false });
  const queue = new bullmq.Queue(options.queue, {
    connection,
    ...(options.prefix ? { prefix: options.prefix } : {}),
  });
  try {
    const out: Array<DeltaJobStatus & { ts: number }> = [];
    for (const state of STATES) {
      for (let start = 0; ; start += 1000) {
        const jobs = await queue.getJobs([state], start, start + 999, true);
        for (const j of jobs) {
          if (!j?.id) continue;
          const s: DeltaJobStatus & { ts: number } = {
            id: j.id,
            state,
            attempts: j.attemptsMade ?? 0,
            progress: j.progress ?? 0,
            ts: j.timestamp ?? 0,
          };
          if (state === 'completed') s.result = j.returnvalue;
          else if (j.failedReason) s.error = j.failedReason;
          out.push(s);
        }
        if (jobs.length < 1000) break;
      }
    }
    out.sort((a, b) => a.ts - b.ts || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return out.map(({ ts: _ts, ...s }) => s);
  } finally {
    await queue.close();
    connection.disconnect();
  }
}
