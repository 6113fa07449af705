// The fleet proof: 3 `lba-status worker` processes × 2 slots (userspace attach; as nobody when the
// test runs as root), 12 delta jobs over `sim serve --oci-api --instances 3 --max-attachments 2
// --volume-throughput 2` (so an export lasts seconds), a private redis-server (AOF on). One
// worker is SIGKILLed mid-export and started again (it sweeps its instance's leftovers), and
// Redis is killed and restarted once mid-run. Then: all 12 jobs `completed` exactly once (one
// `completed` event each across every worker's output), every export applied onto a zero image
// gives the bytes the simulator serves — computed from the test's own byte ranges by the shared
// oracle (test/support/oracle.ts), not by lib/ — and the fake tenancy holds no volume and no
// attachment that is not TERMINATED / DETACHED.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { enqueueDeltaJob, listDeltaJobs } from '../../lib/jobs/queue.js';
import { OciDeltaVolumeProvisioner } from '../../lib/oci/provisioner.js';
import { clientRootDir, clientUser, IS_ROOT, ROOT } from '../host/support.js';
import { expectedRead, randomRanges } from '../support/oracle.js';
import { describeIf } from '../support/require.js';
import { redisMissing, startRedis, type TestRedis } from './redis.js';

const CLI = join(ROOT, 'dist/cli.js');
const requireAll = process.env.CI === 'true' || process.env.LBA_STATUS_REQUIRE_GUEST === '1';
const missing =
  redisMissing() ?? (existsSync(CLI) ? undefined : 'dist/cli.js is not built (npm run build:ts)');
if (missing && requireAll) throw new Error(`the fleet proof cannot run: ${missing}`);

const SIZE = 32 << 20;
const BLOCK = 512;
const CBS = 64 << 10;
const SEED = 5;
const JOBS = 12;
const WORKERS = 3;
const SLOTS = 2;

/** The unprivileged user's command prefix when root and nobody can read the checkout. */
function privilegeDrop(): { prefix: string[]; who: string; uid?: number; gid?: number } {
  if (!IS_ROOT) return { prefix: [], who: `uid ${process.getuid?.()} (not root)` };
  const { user } = clientUser();
  if (user && clientRootDir() === ROOT)
    return { prefix: user.prefix, who: user.label, uid: user.uid, gid: user.gid };
  return { prefix: [], who: 'root (nobody cannot read the checkout and its peer dependencies)' };
}

interface Proc {
  child: ChildProcess;
  lines: string[];
  events: Array<Record<string, unknown>>;
  stderr: () => string;
  exited: Promise<number | null>;
}

const procs = new Set<ChildProcess>();
function start(args: string[], prefix: string[]): Proc {
  const argv = [...prefix, process.execPath, CLI, ...args];
  const child = spawn(argv[0] as string, argv.slice(1), {
    cwd: tmpdir(),
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: tmpdir(),
      TMPDIR: tmpdir(),
      LANG: 'C.UTF-8',
    },
  });
  procs.add(child);
  const p: Proc = {
    child,
    lines: [],
    events: [],
    stderr: () => err,
    exited: new Promise((r) => child.once('exit', (code) => r(code))),
  };
  let out = '';
  let err = '';
  child.stdout?.on('data', (c: Buffer) => {
    out += c.toString();
    let nl = out.indexOf('\n');
    while (nl >= 0) {
      const line = out.slice(0, nl);
      out = out.slice(nl + 1);
      p.lines.push(line);
      try {
        p.events.push(JSON.parse(line) as Record<string, unknown>);
      } catch {}
      nl = out.indexOf('\n');
    }
  });
  child.stderr?.on('data', (c: Buffer) => {
    err += c.toString();
  });
  return p;
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms: number) {
  const deadline = Date.now() + ms;
  for (;;) {
    let ok = false;
    try {
      ok = await check();
    } catch {}
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`timed out (${ms} ms) waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits for a worker's ready event; one that exits or times out fails with its output. */
async function ready(w: Proc, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!w.events.some((e) => e.event === 'ready')) {
    if (w.child.exitCode !== null || Date.now() > deadline)
      throw new Error(
        `worker not ready (exit ${w.child.exitCode}): stderr ${w.stderr()} stdout ${w.lines.join(' ')}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

const dirs: string[] = [];
let redis: TestRedis | undefined;
afterAll(async () => {
  for (const c of procs) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await redis?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describeIf('fleet: 3 workers × 2 slots, 12 jobs, a worker killed, Redis restarted', missing, () => {
  it('completes every job exactly once with exact exports and leaves nothing in the tenancy', async () => {
    const t0 = Date.now();
    const drop = privilegeDrop();
    console.log(`fleet: workers and sim serve run as ${drop.who}`);
    redis = await startRedis();
    const base = join(tmpdir(), `lba-fleet-${process.pid}-${Date.now()}`);
    mkdirSync(join(base, 'exports'), { recursive: true, mode: 0o755 });
    dirs.push(base);
    if (drop.uid !== undefined && drop.gid !== undefined) {
      chownSync(base, drop.uid, drop.gid);
      chownSync(join(base, 'exports'), drop.uid, drop.gid);
    }
    const ranges = randomRanges(11, 24, SIZE, 256 << 10);
    writeFileSync(join(base, 'changed.json'), JSON.stringify(ranges), { mode: 0o644 });

    // The fake tenancy.
    const sim = start(
      [
        'sim',
        'serve',
        '--size',
        String(SIZE),
        '--changed',
        join(base, 'changed.json'),
        '--seed',
        String(SEED),
        '--port',
        '0',
        '--oci-api',
        '--oci-dir',
        base,
        '--instances',
        String(WORKERS),
        '--max-attachments',
        String(SLOTS),
        '--volume-throughput',
        '2',
      ],
      drop.prefix,
    );
    await until('sim serve ready', () => sim.lines.length > 0, 20_000);
    const oci = (sim.events[0] as { oci: Record<string, string | string[]> }).oci;
    const instanceIds = oci.instanceIds as string[];
    expect(instanceIds).toHaveLength(WORKERS);

    const queue = 'fleet';
    const workerArgs = (k: number) => [
      'worker',
      '--redis',
      redis!.url,
      '--queue',
      queue,
      '--slots',
      String(SLOTS),
      '--attach',
      'userspace',
      '--endpoint',
      oci.endpoint as string,
      '--config-file',
      oci.configFile as string,
      '--instance-id',
      instanceIds[k] as string,
      '--lock-duration-ms',
      '8000',
      '--stalled-interval-ms',
      '2000',
    ];
    const workers: Proc[] = [];
    const everyWorker: Proc[] = [];
    for (let k = 0; k < WORKERS; k++) {
      const w = start(workerArgs(k), drop.prefix);
      workers.push(w);
      everyWorker.push(w);
    }
    for (const w of workers) await ready(w);

    // 12 jobs; one enqueued a second time (through the CLI): not added again.
    const ids = Array.from({ length: JOBS }, (_, i) => `night-${String(i + 1).padStart(2, '0')}`);
    const spec = (id: string) => ({
      jobId: id,
      firstBackupId: oci.firstBackupId as string,
      secondBackupId: oci.secondBackupId as string,
      changeBlockSize: CBS,
      export: { dir: join(base, 'exports', id) },
    });
    for (const id of ids)
      expect(
        (
          await enqueueDeltaJob(spec(id), {
            redis: redis.url,
            queue,
            attempts: 5,
            backoffMs: 500,
          })
        ).added,
      ).toBe(true);
    const again = start(
      [
        'enqueue',
        '--redis',
        redis.url,
        '--queue',
        queue,
        '--job-id',
        ids[0] as string,
        '--first-backup',
        oci.firstBackupId as string,
        '--second-backup',
        oci.secondBackupId as string,
        '--change-block-size',
        '64K',
        '--export',
        join(base, 'exports', ids[0] as string),
      ],
      [],
    );
    expect(await again.exited).toBe(0);
    expect(again.events[0]).toMatchObject({ id: ids[0], added: false });

    // Worker 0 is SIGKILLed mid-export — once it reported changed bytes synced into an export —
    // then started again on its instance.
    const w0 = workers[0] as Proc;
    const midExport = () =>
      w0.events.find((e) => {
        const p = e.progress as { phase?: string; bytesDone?: number; bytesTotal?: number };
        return (
          e.event === 'progress' &&
          p.phase === 'export' &&
          (p.bytesDone ?? 0) > 0 &&
          (p.bytesDone ?? 0) < (p.bytesTotal ?? 0)
        );
      });
    // …and once its export journal records synced chunks (the progress counts bytes read; the
    // journal is written after an fsync, every second): only then is there a part to resume.
    const synced = (id: string): boolean => {
      try {
        const text = readFileSync(join(base, 'exports', id, 'journal.ndjson'), 'utf8');
        return text.includes('"type":"synced"');
      } catch {
        return false;
      }
    };
    const cutCandidate = (): string | undefined => {
      const done = new Set(
        w0.events.filter((e) => e.event === 'completed').map((e) => e.id as string),
      );
      const exporting = w0.events
        .filter(
          (e) => e.event === 'progress' && (e.progress as { phase?: string }).phase === 'export',
        )
        .map((e) => e.id as string);
      return exporting.find((id) => !done.has(id) && synced(id));
    };
    await until('worker 0 half way through an export', () => midExport() !== undefined, 60_000);
    await until(
      'a synced part of an export on worker 0',
      () => cutCandidate() !== undefined,
      60_000,
    );
    const cutJob = cutCandidate() as string;
    const activeOn0 = new Set(
      w0.events.filter((e) => e.event === 'active').map((e) => e.id as string),
    );
    for (const e of w0.events) if (e.event === 'completed') activeOn0.delete(e.id as string);
    w0.child.kill('SIGKILL');
    expect(await w0.exited).toBe(null);
    const killedAt = Date.now();
    const w0b = start(workerArgs(0), drop.prefix);
    everyWorker.push(w0b);
    workers[0] = w0b;
    await ready(w0b);
    const sweep = w0b.events.find((e) => e.event === 'sweep') as {
      volumes: string[];
      attachments: string[];
      errors: string[];
    };
    expect(sweep.errors).toEqual([]);
    expect(sweep.volumes.length).toBeGreaterThanOrEqual(1);
    // The job that was exporting had its volume attached; another may have been provisioning.
    expect(sweep.attachments.length).toBeGreaterThanOrEqual(1);
    expect(sweep.attachments.length).toBeLessThanOrEqual(sweep.volumes.length);

    // Redis is killed and restarted once while jobs still run.
    const completedCount = () =>
      new Set(
        everyWorker.flatMap((w) =>
          w.events.filter((e) => e.event === 'completed').map((e) => e.id),
        ),
      ).size;
    await until('more completions', () => completedCount() >= 4, 90_000);
    expect(completedCount()).toBeLessThan(JOBS);
    await redis.restart();
    const restartedAt = Date.now();

    await until(
      'all 12 completed',
      async () => {
        const jobs = await listDeltaJobs({ redis: redis!.url, queue });
        return jobs.length === JOBS && jobs.every((j) => j.state === 'completed');
      },
      150_000,
    );
    const drained = Date.now();

    // Stop the workers (SIGTERM): exit 0 after "stopped".
    for (const w of workers) w.child.kill('SIGTERM');
    for (const w of workers) {
      expect(await w.exited).toBe(0);
      expect(w.events.at(-1)).toEqual({ event: 'stopped' });
    }

    // Exactly once: one completed event per job across every worker process, and BullMQ agrees.
    const completions = everyWorker.flatMap((w) =>
      w.events.filter((e) => e.event === 'completed').map((e) => e.id as string),
    );
    expect(completions.sort()).toEqual([...ids].sort());
    const jobs = await listDeltaJobs({ redis: redis.url, queue });
    expect(jobs.map((j) => j.state)).toEqual(Array(JOBS).fill('completed'));
    const results = Object.fromEntries(
      jobs.map((j) => [j.id, j.result as { resumed: boolean; bytes: number; elapsedMs: number }]),
    );
    for (const id of activeOn0) expect(ids).toContain(id);
    // The job cut mid-export continued the synced part of its export on a new volume.
    expect(results[cutJob]?.resumed, `${cutJob} resumed`).toBe(true);

    // Every export, applied onto a zero image, gives the served bytes (the test's own oracle).
    const expected = expectedRead(
      ranges,
      { sizeBytes: SIZE, blockSize: BLOCK, changeBlockSize: CBS },
      SEED,
      0,
      SIZE / BLOCK,
    );
    for (const id of ids) {
      const img = join(base, `${id}.img`);
      writeFileSync(img, '');
      spawnSync('truncate', ['-s', String(SIZE), img]);
      const r = spawnSync(
        process.execPath,
        [CLI, 'apply', '--delta', join(base, 'exports', id), '--target', img],
        { encoding: 'utf8' },
      );
      expect(r.status, `${id}: ${r.stderr}`).toBe(0);
      expect(readFileSync(img).equals(expected), `${id}: image differs`).toBe(true);
      rmSync(img);
    }

    // Nothing left in the fake tenancy.
    await using p = new OciDeltaVolumeProvisioner({
      configFile: oci.configFile as string,
      endpoint: oci.endpoint as string,
      instanceId: instanceIds[0] as string,
      attach: 'userspace',
    });
    const me = await p.instance();
    const { blockstorage, compute } = await p.clients();
    const volumes = (await blockstorage.listVolumes({ compartmentId: me.compartmentId })).items;
    const attachments = (await compute.listVolumeAttachments({ compartmentId: me.compartmentId }))
      .items;
    expect(volumes.length).toBeGreaterThanOrEqual(JOBS);
    expect(volumes.filter((v) => v.lifecycleState !== 'TERMINATED').map((v) => v.id)).toEqual([]);
    expect(attachments.filter((a) => a.lifecycleState !== 'DETACHED').map((a) => a.id)).toEqual([]);

    const resumed = ids.filter((id) => results[id]?.resumed);
    const perJob = ids.map((id) => results[id]?.elapsedMs ?? 0).sort((a, b) => a - b);
    console.log(
      `fleet: ${JOBS} jobs drained in ${((drained - t0) / 1000).toFixed(1)} s ` +
        `(worker 0 killed at +${((killedAt - t0) / 1000).toFixed(1)} s with ${[...activeOn0].join(', ')}, ${cutJob} mid-export; ` +
        `Redis restarted at +${((restartedAt - t0) / 1000).toFixed(1)} s); swept at restart: ` +
        `${sweep.volumes.length} volume(s); resumed exports: ${resumed.join(', ') || 'none'}; ` +
        `per-job run ${perJob[0]}–${perJob.at(-1)} ms (median ${perJob[JOBS >> 1]} ms), ` +
        `${results[ids[0] as string]?.bytes} changed bytes each`,
    );
    sim.child.kill('SIGTERM');
    expect(await sim.exited).toBe(0);
  }, 300_000);
});
