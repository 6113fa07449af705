/**
 * createDeltaWorker(): a BullMQ worker that runs delta jobs (runDeltaJob) from a Redis queue,
 * up to `slots` at once. BullMQ does the distributed part — it hands each job to one worker,
 * renews the job's lock while it runs, and moves a job whose worker died (lock expired) back to
 * the queue ("stalled") for another worker. This module adds what is specific to delta volumes:
 *
 * - at start, it sweeps what this instance left behind (volumes tagged with this instance: a
 *   worker killed mid-job leaves its delta volume attached);
 * - on close (SIGTERM in the CLI) it stops taking jobs, aborts the running ones — runDeltaJob
 *   releases their volumes — and moves them back to the queue without using up an attempt;
 * - when a job's lock could not be renewed — Redis said it is gone, or Redis has not confirmed a
 *   renewal for 80 % of the lock's duration (Redis unreachable) — the job is aborted here before
 *   the lock can expire, so that two workers do not write one export directory at once;
 * - errors that no retry can fix (bad OCIDs, backups of different volumes, an export directory
 *   holding another delta) fail the job at once; others are retried with backoff by BullMQ.
 */
import type * as Bullmq from 'bullmq';
import type * as IORedis from 'ioredis';
import { isAbortError } from '../abort.js';
import type { OciAttachMode, OciDeltaProvisionerConfig } from '../oci/provisioner.js';
import { OciDeltaVolumeProvisioner } from '../oci/provisioner.js';
import { sweep } from '../oci/sweep.js';
import {
  type DeltaJobOptions,
  type DeltaJobProgress,
  type DeltaJobProvisioner,
  type DeltaJobResult,
  type DeltaJobSpec,
  runDeltaJob,
} from './delta-job.js';
import {
  checkDeltaJobSpec,
  connectRedis,
  DELTA_JOB_NAME,
  JobQueueError,
  loadBullmq,
  type QueueConnectionOptions,
} from './queue.js';

/** What a worker reports (the CLI prints each as one JSON line). */
export type DeltaWorkerEvent =
  | { event: 'ready'; worker: string; queue: string; slots: number; instanceId?: string }
  | { event: 'sweep'; volumes: string[]; attachments: string[]; errors: string[] }
  | { event: 'active'; id: string; attempt: number }
  | { event: 'progress'; id: string; progress: DeltaJobProgress }
  | { event: 'completed'; id: string; result: DeltaJobResult }
  | { event: 'failed'; id: string; error: string; attempts: number; final: boolean }
  | { event: 'requeued'; id: string; reason: string }
  | { event: 'lock-lost'; id: string }
  | { event: 'stalled'; id: string }
  | { event: 'error'; error: string }
  | { event: 'stopping'; reason: string; running: string[] }
  | { event: 'stopped' };

/** Runs one job (default {@link runDeltaJob}); injectable for tests. */
export type DeltaJobRunner = (
  spec: DeltaJobSpec,
  options: DeltaJobOptions,
) => Promise<DeltaJobResult>;

export interface DeltaWorkerOptions extends QueueConnectionOptions {
  /**
   * Jobs run at once (default 1). Each holds one delta volume attachment: keep it at most the
   * instance's attachment limit minus the volumes it has of its own.
   */
  slots?: number;
  /** How volumes are reached (default `iscsiadm`; `userspace` needs no root). */
  attach?: OciAttachMode;
  /** Configuration of the OCI provisioner the worker makes (one, shared by its jobs). */
  oci?: OciDeltaProvisionerConfig;
  /** A provisioner instead (tests, another cloud's): then no sweep at start unless `sweepAtStart` is a function. */
  provisioner?: DeltaJobProvisioner;
  /**
   * Sweep this instance's leftovers before taking jobs (default true with the OCI provisioner:
   * every volume tagged with this instance, whatever its age), or a function that does it.
   */
  sweepAtStart?:
    | boolean
    | ((signal: AbortSignal) => Promise<{ volumes: string[]; attachments: string[] }>);
  /** Lock of a running job in ms; renewed every half (default 30 000). A dead worker's jobs go back after about this long. */
  lockDurationMs?: number;
  /** How often this worker looks for stalled jobs (default 30 000 ms). */
  stalledIntervalMs?: number;
  /** Times a job may go back to the queue after its worker died before it is failed (default 3). */
  maxStalledCount?: number;
  /** Passed to every runDeltaJob (device and read tuning). */
  job?: Pick<DeltaJobOptions, 'device' | 'read'>;
  /** The job runner (default runDeltaJob). */
  run?: DeltaJobRunner;
  /** Aborting it closes the worker gracefully (like close()). */
  signal?: AbortSignal;
  /** Every event (ready, sweep, active, progress, completed, failed, requeued, …). */
  onEvent?: (event: DeltaWorkerEvent) => void;
  /** Least time between two progress updates of one job (default 1000 ms). */
  progressIntervalMs?: number;
}

export interface DeltaWorker extends AsyncDisposable {
  /** BullMQ worker name: `lba-status@HOST/PID` unless given. */
  readonly name: string;
  /** Ids of the jobs running now. */
  readonly running: readonly string[];
  /** The instance this worker's OCI provisioner attaches to, when known. */
  readonly instanceId: string | undefined;
  /**
   * Stops: no new jobs; running ones are aborted (their volumes released) and moved back to
   * the queue; then the Redis connections close. Idempotent.
   */
  close(reason?: string): Promise<void>;
  /** Settles when the worker has stopped (after close(), or the signal). */
  readonly closed: Promise<void>;
}

/** Error codes no retry can fix: the job fails at once (BullMQ UnrecoverableError). */
const FINAL_CODES = new Set([
  'ERR_JOB_SPEC',
  'ERR_OCI_SDK_MISSING',
  'ERR_OCI_BAD_OCID',
  'ERR_OCI_SAME_BACKUP',
  'ERR_OCI_BACKUP_NOT_FOUND',
  'ERR_OCI_BACKUPS_DIFFERENT_VOLUMES',
  'ERR_OCI_BACKUP_ORDER',
  'ERR_OCI_SECOND_BACKUP_NOT_INCREMENTAL',
  'ERR_OCI_VOLUME_RESIZED',
  'ERR_OCI_FULL_BACKUP_BETWEEN',
  'ERR_OCI_BAD_CHANGE_BLOCK_SIZE',
  'ERR_LBA_STATUS_EXPORT_MISMATCH',
]);

function errorText(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return typeof e?.code === 'string' && !message.includes(e.code)
    ? `${e.code}: ${message}`
    : message;
}

function positiveInt(v: number | undefined, name: string, dflt: number, max: number): number {
  const n = v ?? dflt;
  if (!Number.isSafeInteger(n) || n < 1 || n > max)
    throw new JobQueueError('ERR_JOB_SPEC', `${name} must be an integer in 1..${max}; got ${v}`);
  return n;
}

/**
 * Starts a worker on the queue; resolves once it has swept this instance and BullMQ is ready.
 * Needs `bullmq` and `ioredis` (optional peer dependencies: ERR_BULLMQ_MISSING otherwise).
 */
export async function createDeltaWorker(options: DeltaWorkerOptions): Promise<DeltaWorker> {
  const slots = positiveInt(options.slots, 'slots', 1, 1024);
  const lockDuration = positiveInt(options.lockDurationMs, 'lockDurationMs', 30_000, 3_600_000);
  const stalledInterval = positiveInt(
    options.stalledIntervalMs,
    'stalledIntervalMs',
    30_000,
    3_600_000,
  );
  const maxStalledCount = positiveInt(options.maxStalledCount, 'maxStalledCount', 3, 1000);
  const progressEvery = options.progressIntervalMs ?? 1000;
  const emit = (e: DeltaWorkerEvent) => {
    try {
      options.onEvent?.(e);
    } catch {}
  };
  const run = options.run ?? runDeltaJob;
  const { bullmq } = await loadBullmq();
  // Ours when made here (disposed on close); the caller's otherwise.
  let ownProvisioner: OciDeltaVolumeProvisioner | undefined;
  let provisioner = options.provisioner;
  if (!provisioner) {
    ownProvisioner = new OciDeltaVolumeProvisioner({
      ...options.oci,
      ...(options.attach ? { attach: options.attach } : {}),
    });
    provisioner = ownProvisioner as unknown as DeltaJobProvisioner;
  }
  const stop = new AbortController();
  const onOuterAbort = () => void close('signal');
  let instanceId: string | undefined;
  let connection: IORedis.Redis | undefined;
  let worker: Bullmq.Worker | undefined;
  const running = new Map<
    string,
    { promise: Promise<unknown>; lockLost: boolean; renewedAt: number }
  >();
  let watchdog: NodeJS.Timeout | undefined;
  let stopping = false;
  let closing: Promise<void> | undefined;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => {
    resolveClosed = r;
  });

  const close = (reason = 'close'): Promise<void> => {
    closing ??= (async () => {
      stopping = true;
      options.signal?.removeEventListener('abort', onOuterAbort);
      emit({ event: 'stopping', reason, running: [...running.keys()] });
      stop.abort(new Error(`worker stopping (${reason})`));
      clearInterval(watchdog);
      if (worker) {
        // No new jobs; then abort the running ones (each releases its volume and goes back to
        // the queue from its processor) and wait for them.
        await worker.pause(true).catch(() => undefined);
        worker.cancelAllJobs(`worker stopping (${reason})`);
        await Promise.allSettled([...running.values()].map((r) => r.promise));
        await worker.close().catch(() => undefined);
      }
      connection?.disconnect();
      if (ownProvisioner) await ownProvisioner[Symbol.asyncDispose]?.().catch(() => undefined);
      emit({ event: 'stopped' });
      resolveClosed();
    })();
    return closing;
  };

  try {
    // 1. This instance's leftovers (a worker killed mid-job left its volume attached here).
    const sweepAtStart = options.sweepAtStart ?? ownProvisioner !== undefined;
    if (ownProvisioner) instanceId = (await ownProvisioner.instance(stop.signal)).id;
    if (typeof sweepAtStart === 'function') {
      const r = await sweepAtStart(stop.signal);
      emit({ event: 'sweep', volumes: r.volumes, attachments: r.attachments, errors: [] });
    } else if (sweepAtStart && ownProvisioner && instanceId) {
      const r = await sweep(ownProvisioner, {
        olderThanMs: 0,
        instanceId,
        signal: stop.signal,
      });
      emit({
        event: 'sweep',
        volumes: r.volumes,
        attachments: r.attachments,
        errors: r.errors.map(errorText),
      });
    }

    // 2. BullMQ.
    connection = await connectRedis(options, { worker: true });
    const name = `lba-status@${process.env.HOSTNAME ?? 'host'}/${process.pid}`;
    const processor = async (
      job: Bullmq.Job<DeltaJobSpec, DeltaJobResult>,
      token: string | undefined,
      signal: AbortSignal | undefined,
    ): Promise<DeltaJobResult> => {
      const id = job.id as string;
      let resolveDone!: () => void;
      const entry = {
        promise: new Promise<void>((r) => {
          resolveDone = r;
        }),
        lockLost: false,
        renewedAt: Date.now(),
      };
      running.set(id, entry);
      emit({ event: 'active', id, attempt: (job.attemptsMade ?? 0) + 1 });
      const jobSignal = signal ? AbortSignal.any([signal, stop.signal]) : stop.signal;
      let lastProgress = 0;
      let lastPhase = '';
      try {
        let spec: DeltaJobSpec;
        try {
          spec = checkDeltaJobSpec({ ...job.data, jobId: id });
        } catch (err) {
          throw new bullmq.UnrecoverableError(errorText(err));
        }
        if (job.name !== DELTA_JOB_NAME)
          throw new bullmq.UnrecoverableError(`not a delta job: ${JSON.stringify(job.name)}`);
        return await run(spec, {
          provisioner,
          ...(options.attach ? { attach: options.attach } : {}),
          signal: jobSignal,
          ...options.job,
          onProgress: (p) => {
            const now = Date.now();
            if (p.phase === lastPhase && now - lastProgress < progressEvery) return;
            lastPhase = p.phase;
            lastProgress = now;
            emit({ event: 'progress', id, progress: p });
            job
              .updateProgress({ phase: p.phase, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal })
              .catch(() => undefined);
          },
        });
      } catch (err) {
        if (err instanceof bullmq.UnrecoverableError) throw err;
        if (entry.lockLost) throw err;
        if (stopping && (isAbortError(err) || jobSignal.aborted)) {
          // Released by runDeltaJob; back to the queue without using up an attempt.
          await job.moveToWait(token);
          emit({ event: 'requeued', id, reason: 'worker stopping' });
          throw new bullmq.WaitingError();
        }
        const code = (err as { code?: unknown })?.code;
        if (typeof code === 'string' && FINAL_CODES.has(code))
          throw new bullmq.UnrecoverableError(errorText(err));
        throw err instanceof Error ? err : new Error(String(err));
      } finally {
        running.delete(id);
        resolveDone();
      }
    };
    worker = new bullmq.Worker<DeltaJobSpec, DeltaJobResult>(options.queue, processor, {
      connection,
      name,
      concurrency: slots,
      lockDuration,
      stalledInterval,
      maxStalledCount,
      autorun: false,
      ...(options.prefix ? { prefix: options.prefix } : {}),
    });
    worker.on('error', (err) => emit({ event: 'error', error: errorText(err) }));
    worker.on('completed', (job, result) => {
      if (job?.id) emit({ event: 'completed', id: job.id, result });
    });
    worker.on('failed', (job, err) => {
      if (!job?.id) return;
      const attempts = job.attemptsMade ?? 0;
      const final = err?.name === 'UnrecoverableError' || attempts >= (job.opts.attempts ?? 1);
      emit({ event: 'failed', id: job.id, error: errorText(err), attempts, final });
    });
    worker.on('stalled', (id) => emit({ event: 'stalled', id }));
    const lockLost = (id: string) => {
      const r = running.get(id);
      if (!r || r.lockLost) return;
      // Another worker may own the job now (or soon): stop writing its export here.
      r.lockLost = true;
      emit({ event: 'lock-lost', id });
      worker?.cancelJob(id, 'job lock lost');
    };
    worker.on('lockRenewalFailed', (ids) => {
      for (const id of ids) lockLost(id);
    });
    worker.on('locksRenewed', ({ jobIds }) => {
      const now = Date.now();
      for (const id of jobIds) {
        const r = running.get(id);
        if (r) r.renewedAt = now;
      }
    });
    // BullMQ renews every lock about every quarter of its duration; a lock not confirmed for
    // 80 % of it may expire before Redis is back, and then the stalled checker of another
    // worker would start the job there.
    watchdog = setInterval(
      () => {
        const now = Date.now();
        for (const [id, r] of running)
          if (!stopping && now - r.renewedAt > lockDuration * 0.8) lockLost(id);
      },
      Math.max(100, Math.floor(lockDuration / 10)),
    );
    watchdog.unref();
    await worker.waitUntilReady();
    if (options.signal?.aborted) {
      await close('signal');
    } else {
      options.signal?.addEventListener('abort', onOuterAbort, { once: true });
      void worker.run().catch((err) => emit({ event: 'error', error: errorText(err) }));
      emit({
        event: 'ready',
        worker: name,
        queue: options.queue,
        slots,
        ...(instanceId ? { instanceId } : {}),
      });
    }
    const w = worker;
    return {
      get name() {
        return w.name;
      },
      get running() {
        return [...running.keys()];
      },
      instanceId,
      close,
      closed,
      [Symbol.asyncDispose]: () => close(),
    };
  } catch (err) {
    await close('start failed').catch(() => undefined);
    throw err;
  }
}
