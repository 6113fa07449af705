// Without the optional peers bullmq/ioredis, lba-status/jobs still imports; the first call that
// needs the queue fails with ERR_BULLMQ_MISSING and the install command, and the CLI exits 3.
import { afterEach, describe, expect, it, vi } from 'vitest';

afterEach(() => {
  vi.doUnmock('bullmq');
  vi.resetModules();
});

describe('bullmq missing', () => {
  it('is ERR_BULLMQ_MISSING naming npm install bullmq ioredis; the CLI exits 3', async () => {
    vi.resetModules();
    vi.doMock('bullmq', () => {
      throw Object.assign(new Error("Cannot find package 'bullmq'"), {
        code: 'ERR_MODULE_NOT_FOUND',
      });
    });
    const jobs = await import('../../lib/jobs.js');
    expect(typeof jobs.createDeltaWorker).toBe('function');
    const err = await jobs
      .enqueueDeltaJob(
        {
          jobId: 'j',
          firstBackupId: 'ocid1.volumebackup.oc1.iad.aaaa',
          secondBackupId: 'ocid1.volumebackup.oc1.iad.bbbb',
          export: { dir: '/tmp/x' },
        },
        { redis: 'redis://127.0.0.1:1', queue: 'q' },
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(jobs.JobQueueError);
    expect(err).toMatchObject({
      code: 'ERR_BULLMQ_MISSING',
      message: expect.stringContaining('npm install bullmq ioredis'),
    });
    const { main } = await import('../../lib/cli/main.js');
    const { makeIo } = await import('../cli/helpers.js');
    const io = makeIo();
    expect(await main(['jobs', '--redis', 'redis://127.0.0.1:1', '--queue', 'q'], io)).toBe(3);
    expect(io.err()).toMatch(/npm install bullmq ioredis/);
  });
});
