// createDeltaWorker / enqueueDeltaJob / listDeltaJobs on a real Redis (Debian redis-server on a
// free port, AOF on), with a stand-in job runner so that the queue behaviour is tested without
// OCI: one run per job id however often it is enqueued, close() moves running jobs back to the
// queue without using an attempt (after their runner released), errors no retry can fix fail at
// once, others are retried, progress and results reach `lba-status jobs`.
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { DeltaJobOptions, DeltaJobResult, DeltaJobSpec } from '../../lib/jobs/delta-job.js';
import {
  enqueueDeltaJob,
  JobQueueError,
  listDeltaJobs,
  redactRedisUrl,
} from '../../lib/jobs/queue.js';
import { createDeltaWorker, type DeltaWorkerEvent } from '../../lib/jobs/worker.js';
import { redisMissing, startRedis, type TestRedis } from '../fleet/redis.js';
import { describeIf } from '../support/require.js';

const missing = redisMissing();
const requireAll = process.env.CI === 'true' || process.env.LBA_STATUS_REQUIRE_GUEST === '1';
if (missing && requireAll) throw new Error(`fleet tests cannot run: ${missing}`);

const A = 'ocid1.volumebackup.oc1.iad.aaaa';
const B = 'ocid1.volumebackup.oc1.iad.bbbb';
const spec = (jobId: string): DeltaJobSpec => ({
  jobId,
  firstBackupId: A,
  secondBackupId: B,
  changeBlockSize: 65536,
  export: { dir: `/tmp/none/${jobId}` },
});
const result = (jobId: string): DeltaJobResult => ({
  jobId,
  dir: `/tmp/none/${jobId}`,
  extents: 3,
  bytes: 3 * 65536,
  bytesRead: 3 * 65536,
  resumed: false,
  manifestSha256: '0'.repeat(64),
  swept: { volumes: [], attachments: [] },
  elapsedMs: 1,
});

/** A stand-in runner: behaviour per job id; records every call and every release. */
function fakeRunner(behave: Record<string, 'ok' | 'hang' | 'final' | { failTimes: number }>) {
  const calls: string[] = [];
  const released: string[] = [];
  const failures = new Map<string, number>();
  const run = async (s: DeltaJobSpec, o: DeltaJobOptions): Promise<DeltaJobResult> => {
    calls.push(s.jobId);
    o.onProgress?.({ jobId: s.jobId, phase: 'export', bytesDone: 1, bytesTotal: 2 });
    const b = behave[s.jobId] ?? 'ok';
    try {
      if (b === 'hang') {
        await new Promise((_, reject) => {
          const abort = () => reject(Object.assign(new Error('aborted'), { name: 'AbortError' }));
          if (o.signal?.aborted) abort();
          o.signal?.addEventListener('abort', abort, { once: true });
        });
      }
      if (b === 'final')
        throw Object.assign(new Error('the first backup is newer'), {
          code: 'ERR_OCI_BACKUP_ORDER',
        });
      if (typeof b === 'object') {
        const n = failures.get(s.jobId) ?? 0;
        if (n < b.failTimes) {
          failures.set(s.jobId, n + 1);
          throw Object.assign(new Error('429 TooManyRequests'), { code: 'ERR_OCI_API' });
        }
      }
      return result(s.jobId);
    } finally {
      released.push(s.jobId);
    }
  };
  return { run, calls, released };
}

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describeIf('delta workers on BullMQ (Redis)', missing, () => {
  let redis: TestRedis;
  let n = 0;
  const q = () => ({ redis: redis.url, queue: `t${++n}-${process.pid}` });
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('runs a job once however often it is enqueued; jobs lists it completed with its result', async () => {
    const conn = q();
    expect(await enqueueDeltaJob(spec('job-a'), conn)).toEqual({
      id: 'job-a',
      added: true,
      state: 'waiting',
    });
    expect((await enqueueDeltaJob(spec('job-a'), conn)).added).toBe(false);
    const fake = fakeRunner({});
    const events: DeltaWorkerEvent[] = [];
    await using w = await createDeltaWorker({
      ...conn,
      slots: 2,
      run: fake.run,
      provisioner: {
        provision: async () => ({}) as never,
        sweepJob: async () => ({ volumes: [], attachments: [] }),
      },
      onEvent: (e) => events.push(e),
      progressIntervalMs: 0,
    });
    await until('completion', () => events.some((e) => e.event === 'completed'));
    // Enqueued again after completion: still not run again.
    expect((await enqueueDeltaJob(spec('job-a'), conn)).state).toBe('completed');
    await new Promise((r) => setTimeout(r, 300));
    expect(fake.calls).toEqual(['job-a']);
    const jobs = await listDeltaJobs(conn);
    expect(jobs).toEqual([
      {
        id: 'job-a',
        state: 'completed',
        attempts: 1,
        progress: { phase: 'export', bytesDone: 1, bytesTotal: 2 },
        result: result('job-a'),
      },
    ]);
    expect(events.map((e) => e.event)).toEqual(['ready', 'active', 'progress', 'completed']);
    expect(w.running).toEqual([]);
  });

  it('close() aborts running jobs, which release and go back to the queue without using an attempt', async () => {
    const conn = q();
    for (const id of ['h1', 'h2', 'h3']) await enqueueDeltaJob(spec(id), { ...conn, attempts: 1 });
    const fake = fakeRunner({ h1: 'hang', h2: 'hang', h3: 'hang' });
    const events: DeltaWorkerEvent[] = [];
    const w = await createDeltaWorker({
      ...conn,
      slots: 2,
      run: fake.run,
      provisioner: {
        provision: async () => ({}) as never,
        sweepJob: async () => ({ volumes: [], attachments: [] }),
      },
      onEvent: (e) => events.push(e),
    });
    await until('two running', () => w.running.length === 2);
    await w.close('SIGTERM');
    await w.closed;
    expect(fake.released.sort()).toEqual(fake.calls.sort());
    expect(events.filter((e) => e.event === 'requeued')).toHaveLength(2);
    expect(events.some((e) => e.event === 'failed')).toBe(false);
    const states = await listDeltaJobs(conn);
    expect(states.map((s) => [s.id, s.state, s.attempts])).toEqual([
      ['h1', 'waiting', 0],
      ['h2', 'waiting', 0],
      ['h3', 'waiting', 0],
    ]);
    // Another worker takes them all (attempts: 1 was not used up by the requeue).
    const ok = fakeRunner({});
    await using w2 = await createDeltaWorker({
      ...conn,
      slots: 3,
      run: ok.run,
      provisioner: {
        provision: async () => ({}) as never,
        sweepJob: async () => ({ volumes: [], attachments: [] }),
      },
    });
    await until('all completed', async () =>
      (await listDeltaJobs(conn)).every((s) => s.state === 'completed'),
    );
    expect(ok.calls.sort()).toEqual(['h1', 'h2', 'h3']);
    expect(w2.running).toEqual([]);
  });

  it('fails at once on an error no retry can fix; retries the others with backoff', async () => {
    const conn = q();
    await enqueueDeltaJob(spec('bad'), { ...conn, attempts: 5, backoffMs: 10 });
    await enqueueDeltaJob(spec('flaky'), { ...conn, attempts: 5, backoffMs: 10 });
    const fake = fakeRunner({ bad: 'final', flaky: { failTimes: 2 } });
    const events: DeltaWorkerEvent[] = [];
    await using _w = await createDeltaWorker({
      ...conn,
      slots: 2,
      run: fake.run,
      provisioner: {
        provision: async () => ({}) as never,
        sweepJob: async () => ({ volumes: [], attachments: [] }),
      },
      onEvent: (e) => events.push(e),
    });
    await until('both settled', async () => {
      const s = await listDeltaJobs(conn);
      return s.length === 2 && s.every((j) => j.state === 'completed' || j.state === 'failed');
    });
    const jobs = Object.fromEntries((await listDeltaJobs(conn)).map((j) => [j.id, j]));
    expect(jobs.bad).toMatchObject({ state: 'failed', attempts: 1 });
    expect(jobs.bad?.error).toMatch(/ERR_OCI_BACKUP_ORDER: the first backup is newer/);
    expect(jobs.flaky).toMatchObject({ state: 'completed', attempts: 3 });
    expect(fake.calls.filter((c) => c === 'flaky')).toHaveLength(3);
    expect(fake.calls.filter((c) => c === 'bad')).toHaveLength(1);
    const bad = events.find((e) => e.event === 'failed' && e.id === 'bad');
    expect(bad).toMatchObject({ final: true });
  });

  it('aborts a job whose lock Redis has not confirmed for 80 % of its duration; it runs again and completes once', async () => {
    const conn = q();
    await enqueueDeltaJob(spec('slow'), { ...conn, attempts: 3, backoffMs: 10 });
    let first = true;
    const fake = fakeRunner({});
    const aborted: string[] = [];
    const events: DeltaWorkerEvent[] = [];
    await using _w = await createDeltaWorker({
      ...conn,
      slots: 1,
      lockDurationMs: 1500,
      stalledIntervalMs: 500,
      provisioner: {
        provision: async () => ({}) as never,
        sweepJob: async () => ({ volumes: [], attachments: [] }),
      },
      onEvent: (e) => events.push(e),
      run: async (s, o) => {
        if (first) {
          first = false;
          // Redis goes silent (SIGSTOP) while the job runs: no renewal is confirmed.
          redis.pause();
          await new Promise((_, reject) =>
            o.signal?.addEventListener('abort', () => {
              aborted.push(s.jobId);
              reject(Object.assign(new Error('aborted'), { name: 'AbortError' }));
            }),
          );
        }
        return fake.run(s, o);
      },
    });
    try {
      await until('lock-lost', () => events.some((e) => e.event === 'lock-lost'), 10_000);
      expect(aborted).toEqual(['slow']);
    } finally {
      redis.resume();
    }
    await until(
      'completed',
      async () => (await listDeltaJobs(conn))[0]?.state === 'completed',
      20_000,
    );
    expect(events.filter((e) => e.event === 'completed')).toHaveLength(1);
    expect(fake.calls).toEqual(['slow']);
  });

  it('refuses bad specs and queue names before touching Redis', async () => {
    const conn = q();
    await expect(enqueueDeltaJob({ ...spec('x'), jobId: '12' }, conn)).rejects.toMatchObject({
      code: 'ERR_JOB_SPEC',
      message: expect.stringMatching(/integer/),
    });
    await expect(enqueueDeltaJob({ ...spec('a:b') }, conn)).rejects.toBeInstanceOf(JobQueueError);
    await expect(
      enqueueDeltaJob({ ...spec('x'), firstBackupId: 'nope' }, conn),
    ).rejects.toMatchObject({ code: 'ERR_JOB_SPEC' });
    await expect(
      enqueueDeltaJob({ ...spec('x'), export: { dir: 'relative' } }, conn),
    ).rejects.toMatchObject({ code: 'ERR_JOB_SPEC', message: expect.stringMatching(/absolute/) });
    await expect(enqueueDeltaJob(spec('x'), { ...conn, queue: 'a b' })).rejects.toMatchObject({
      code: 'ERR_JOB_SPEC',
    });
    await expect(
      enqueueDeltaJob(spec('x'), { redis: 'http://localhost', queue: 'q' }),
    ).rejects.toMatchObject({ code: 'ERR_JOB_SPEC' });
  });

  it('an unreachable Redis is ERR_QUEUE_UNREACHABLE, without the password', async () => {
    const err = (await enqueueDeltaJob(spec('x'), {
      redis: 'redis://:s3cret@127.0.0.1:1',
      queue: 'q',
    }).catch((e) => e)) as JobQueueError;
    expect(err.code).toBe('ERR_QUEUE_UNREACHABLE');
    expect(err.message).not.toContain('s3cret');
    expect(redactRedisUrl('rediss://user:pw@host:6380/0')).toBe('rediss://***@host:6380/0');
  });
});
