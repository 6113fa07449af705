// `lba-status worker` through the real OCI path (dist/cli.js against sim serve --oci-api, a
// private redis-server): SIGTERM mid-export releases the delta volume, puts the job back in the
// queue without using an attempt and exits 0; another worker then finishes it by resuming the
// export. Plus the usage and exit-code contract of worker / enqueue / jobs.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { main } from '../../lib/cli/main.js';
import { enqueueDeltaJob, listDeltaJobs } from '../../lib/jobs/queue.js';
import { OciDeltaVolumeProvisioner } from '../../lib/oci/provisioner.js';
import { makeIo } from '../cli/helpers.js';
import { ROOT } from '../host/support.js';
import { describeIf } from '../support/require.js';
import { redisMissing, startRedis, type TestRedis } from './redis.js';

const CLI = join(ROOT, 'dist/cli.js');
const requireAll = process.env.CI === 'true' || process.env.LBA_STATUS_REQUIRE_GUEST === '1';
const missing =
  redisMissing() ?? (existsSync(CLI) ? undefined : 'dist/cli.js is not built (npm run build:ts)');
if (missing && requireAll) throw new Error(`worker CLI tests cannot run: ${missing}`);

const procs: ChildProcess[] = [];
const dirs: string[] = [];
let redis: TestRedis | undefined;
afterAll(async () => {
  for (const c of procs) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await redis?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function start(args: string[]) {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(child);
  const events: Array<Record<string, unknown>> = [];
  let buf = '';
  let err = '';
  child.stdout?.on('data', (c: Buffer) => {
    buf += c.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      try {
        events.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
      } catch {}
      buf = buf.slice(nl + 1);
    }
  });
  child.stderr?.on('data', (c: Buffer) => {
    err += c.toString();
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, events, exited, stderr: () => err };
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (
      await Promise.resolve()
        .then(check)
        .catch(() => false)
    )
      return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describeIf('lba-status worker (dist/cli.js)', missing, () => {
  it('SIGTERM mid-export: volume released, job back in waiting with no attempt used, exit 0; the next worker resumes it', async () => {
    redis = await startRedis();
    const dir = mkdtempSync(join(tmpdir(), 'lba-worker-cli-'));
    dirs.push(dir);
    writeFileSync(
      join(dir, 'changed.json'),
      JSON.stringify([{ offset: 1 << 20, length: 6 << 20 }]),
    );
    const sim = start([
      'sim',
      'serve',
      '--size',
      '32M',
      '--changed',
      join(dir, 'changed.json'),
      '--port',
      '0',
      '--oci-api',
      '--oci-dir',
      dir,
      '--volume-throughput',
      '2',
    ]);
    await until('sim serve', () => sim.events.length > 0);
    const oci = (sim.events[0] as { oci: Record<string, string> }).oci;
    const conn = { redis: redis.url, queue: 'cli' };
    await enqueueDeltaJob(
      {
        jobId: 'term-1',
        firstBackupId: oci.firstBackupId as string,
        secondBackupId: oci.secondBackupId as string,
        changeBlockSize: 65536,
        export: { dir: join(dir, 'export') },
      },
      { ...conn, attempts: 1 },
    );
    const args = [
      'worker',
      '--redis',
      redis.url,
      '--queue',
      'cli',
      '--attach',
      'userspace',
      '--endpoint',
      oci.endpoint as string,
      '--config-file',
      oci.configFile as string,
      '--instance-id',
      oci.instanceId as string,
    ];
    const w = start(args);
    await until('mid-export', () =>
      w.events.some(
        (e) =>
          e.event === 'progress' &&
          (e.progress as { phase: string; bytesDone: number }).phase === 'export' &&
          (e.progress as { bytesDone: number }).bytesDone > 0,
      ),
    );
    w.child.kill('SIGTERM');
    expect(await w.exited).toBe(0);
    const kinds = w.events.map((e) => e.event);
    expect(kinds).toContain('requeued');
    expect(kinds.at(-1)).toBe('stopped');
    expect(kinds).not.toContain('failed');
    const [job] = await listDeltaJobs(conn);
    expect(job).toMatchObject({ id: 'term-1', state: 'waiting', attempts: 0 });

    // Nothing of the stopped run is left in the tenancy.
    await using p = new OciDeltaVolumeProvisioner({
      configFile: oci.configFile as string,
      endpoint: oci.endpoint as string,
      instanceId: oci.instanceId as string,
      attach: 'userspace',
    });
    const me = await p.instance();
    const { blockstorage, compute } = await p.clients();
    const live = async () => [
      ...(await blockstorage.listVolumes({ compartmentId: me.compartmentId })).items
        .filter((v) => v.lifecycleState !== 'TERMINATED')
        .map((v) => v.id),
      ...(await compute.listVolumeAttachments({ compartmentId: me.compartmentId })).items
        .filter((a) => a.lifecycleState !== 'DETACHED')
        .map((a) => a.id),
    ];
    expect(await live()).toEqual([]);

    // attempts: 1 — yet the next worker may run it: the requeue did not use it up.
    const w2 = start(args);
    await until(
      'completed',
      async () => (await listDeltaJobs(conn))[0]?.state === 'completed',
      60_000,
    );
    const [done] = await listDeltaJobs(conn);
    expect(done?.result).toMatchObject({ resumed: true, bytes: 6 << 20 });
    w2.child.kill('SIGTERM');
    expect(await w2.exited).toBe(0);
    expect(await live()).toEqual([]);
    sim.child.kill('SIGTERM');
    await sim.exited;
  }, 120_000);

  it.each([
    [['worker'], 2, /--redis URL is required/],
    [
      ['worker', '--redis', 'redis://x', '--queue', 'q', '--slots', '0'],
      2,
      /--slots must be 1\.\.1024/,
    ],
    [['worker', '--redis', 'redis://x', '--queue', 'q', '--attach', 'nfs'], 2, /--attach must be/],
    [['enqueue', '--redis', 'redis://x', '--queue', 'q'], 2, /--job-id is required/],
    [
      [
        'enqueue',
        '--redis',
        'redis://127.0.0.1:1',
        '--queue',
        'q',
        '--job-id',
        '42',
        '--first-backup',
        'ocid1.volumebackup.oc1.iad.aaaa',
        '--second-backup',
        'ocid1.volumebackup.oc1.iad.bbbb',
        '--export',
        '/tmp/x',
      ],
      2,
      /integer/,
    ],
    [['jobs', '--redis', 'redis://127.0.0.1:1', '--queue', 'q'], 3, /cannot reach Redis/],
    [['jobs', '--redis', 'redis://x', '--queue', 'q', '--format', 'xml'], 2, /--format must be/],
  ])('%j exits %i', async (argv, code, message) => {
    const io = makeIo();
    expect(await main(argv, io)).toBe(code);
    expect(io.err()).toMatch(message);
  });

  it('every command has --help with an example', async () => {
    for (const c of ['worker', 'enqueue', 'jobs']) {
      const io = makeIo();
      expect(await main([c, '--help'], io)).toBe(0);
      expect(io.out()).toMatch(new RegExp(`^Usage: lba-status ${c} `));
      expect(io.out()).toMatch(/Examples:\n {2}/);
    }
  });
});
