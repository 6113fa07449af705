// More slots than the instance's attachment limit: the attachment past the limit is refused
// (400 LimitExceeded), that attempt releases its volume and fails, and BullMQ retries it once a
// slot is free — both jobs complete, nothing is left. In process: the fake tenancy
// (startOciSimulation), createDeltaWorker with the real runDeltaJob, a private redis-server.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { enqueueDeltaJob, listDeltaJobs } from '../../lib/jobs/queue.js';
import { createDeltaWorker, type DeltaWorkerEvent } from '../../lib/jobs/worker.js';
import { startOciSimulation } from '../../lib/sim/fake-oci/oci-simulation.js';
import { describeIf } from '../support/require.js';
import { redisMissing, startRedis, type TestRedis } from './redis.js';

const missing = redisMissing();
const requireAll = process.env.CI === 'true' || process.env.LBA_STATUS_REQUIRE_GUEST === '1';
if (missing && requireAll) throw new Error(`fleet tests cannot run: ${missing}`);

const dirs: string[] = [];
let redis: TestRedis | undefined;
afterAll(async () => {
  await redis?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describeIf('a worker with more slots than attachments', missing, () => {
  it('retries the job refused with LimitExceeded until a slot is free; both complete', async () => {
    redis = await startRedis();
    const dir = mkdtempSync(join(tmpdir(), 'lba-attach-limit-'));
    dirs.push(dir);
    await using sim = await startOciSimulation({
      dir,
      sizeBytes: 16 << 20,
      changed: [{ offset: 4096, length: 1 << 20 }],
      maxAttachmentsPerInstance: 1,
      // Each job holds its attachment long enough for the other to hit the limit.
      volumeThroughputBytesPerSec: 2 << 20,
    });
    const conn = { redis: redis.url, queue: 'limit' };
    for (const id of ['lim-1', 'lim-2'])
      await enqueueDeltaJob(
        {
          jobId: id,
          firstBackupId: sim.info.firstBackupId,
          secondBackupId: sim.info.secondBackupId,
          export: { dir: join(dir, id) },
        },
        { ...conn, attempts: 8, backoffMs: 200 },
      );
    const events: DeltaWorkerEvent[] = [];
    await using _w = await createDeltaWorker({
      ...conn,
      slots: 2,
      attach: 'userspace',
      oci: {
        configFile: sim.info.configFile,
        endpoint: sim.info.endpoint,
        instanceId: sim.info.instanceId,
        poll: { intervalMs: 20, maxIntervalMs: 50 },
      },
      onEvent: (e) => events.push(e),
    });
    const deadline = Date.now() + 60_000;
    for (;;) {
      const jobs = await listDeltaJobs(conn);
      if (jobs.length === 2 && jobs.every((j) => j.state === 'completed')) break;
      if (Date.now() > deadline) throw new Error(`not completed: ${JSON.stringify(jobs)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const refused = events.filter(
      (e) => e.event === 'failed' && /LimitExceeded/.test(e.error) && !e.final,
    );
    expect(refused.length).toBeGreaterThanOrEqual(1);
    expect(events.filter((e) => e.event === 'completed')).toHaveLength(2);
    expect(sim.api.leftovers()).toEqual([]);
  }, 90_000);
});
