// Issue 13's kernel proof: a fleet worker with `--attach iscsiadm` in a real kernel. In the
// sim-iscsi guest (iscsid running), a private Redis, `lba-status sim serve --oci-api` (the fake
// tenancy; its attachments are simulator targets) and `lba-status worker --attach iscsiadm`
// run as processes; one job is enqueued; the worker creates the delta volume, logs the guest's
// open-iscsi initiator in, exports through the sg node, logs out, detaches and deletes. The
// export must be exactly the test's own changed bytes widened to the change block size
// (test/support/oracle.ts), and nothing may be left: no iSCSI session or node record, no
// volume, no attachment.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { startRedis, type TestRedis } from '../../fleet/redis.js';
import { expectedChangedRuns, randomRanges } from '../../support/oracle.js';
import { scenario } from '../support/index.js';

scenario(); // fails fast outside a guest scenario
const root = fileURLToPath(new URL('../../..', import.meta.url)).replace(/\/$/, '');
const CLI = join(root, 'dist/cli.js');
const SIZE = 64 << 20;
const CBS = 65536;

interface Proc {
  child: ChildProcess;
  events: Array<Record<string, unknown>>;
  out: () => string;
}

const procs: ChildProcess[] = [];
function start(args: string[]): Proc {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(child);
  const events: Array<Record<string, unknown>> = [];
  let text = '';
  let all = '';
  child.stdout!.on('data', (c: Buffer) => {
    text += c;
    all += c;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n')) {
      try {
        events.push(JSON.parse(text.slice(0, nl)) as Record<string, unknown>);
      } catch {}
      text = text.slice(nl + 1);
    }
  });
  child.stderr!.on('data', (c: Buffer) => {
    all += c;
  });
  return { child, events, out: () => all };
}

/** Runs the CLI to completion (asynchronously: the servers it talks to are other processes). */
function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => {
      stdout += d;
    });
    c.stderr.on('data', (d) => {
      stderr += d;
    });
    c.once('close', (code) => done({ code, stdout, stderr }));
  });
}

async function until(what: string, check: () => boolean, ms: number, p?: Proc): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline || p?.child.exitCode != null)
      throw new Error(`timed out waiting for ${what}: ${p?.out() ?? ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The kernel's iSCSI sessions and node records (the scenario's own stay; the job's must go). */
function iscsiSessions(): string {
  const session = spawnSync('iscsiadm', ['-m', 'session'], { encoding: 'utf8' }).stdout;
  const node = spawnSync('iscsiadm', ['-m', 'node'], { encoding: 'utf8' }).stdout;
  return `${session}\n${node}`;
}

const work = mkdtempSync(join(tmpdir(), 'worker-iscsiadm-'));
let redis: TestRedis | undefined;
afterAll(async () => {
  for (const c of procs) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await gone;
  }
  await redis?.stop();
  rmSync(work, { recursive: true, force: true });
});

it('a worker with --attach iscsiadm exports one job exactly through the kernel and leaves nothing', {
  timeout: 240_000,
}, async () => {
  const sessionsBefore = iscsiSessions();
  const changed = randomRanges(1313, 30, SIZE, 3 * 4096);
  const changedFile = join(work, 'changed.json');
  writeFileSync(changedFile, JSON.stringify(changed));
  redis = await startRedis();
  const sim = start([
    'sim',
    'serve',
    '--size',
    String(SIZE),
    '--changed',
    changedFile,
    '--port',
    '0',
    '--oci-api',
    '--oci-dir',
    join(work, 'oci'),
  ]);
  await until('sim serve ready', () => sim.events.length > 0, 60_000, sim);
  const oci = sim.events[0]!.oci as Record<string, string>;
  const common = [
    '--config-file',
    oci.configFile!,
    '--endpoint',
    oci.endpoint!,
    '--instance-id',
    oci.instanceId!,
  ];
  const queue = ['--redis', redis.url, '--queue', 'guest'];
  const worker = start(['worker', ...queue, '--slots', '1', '--attach', 'iscsiadm', ...common]);
  await until('worker ready', () => worker.events.some((e) => e.event === 'ready'), 60_000, worker);

  const exportDir = join(work, 'export');
  const enqueued = await run([
    'enqueue',
    ...queue,
    '--job-id',
    'guest-1',
    '--first-backup',
    oci.firstBackupId!,
    '--second-backup',
    oci.secondBackupId!,
    '--change-block-size',
    String(CBS),
    '--export',
    exportDir,
  ]);
  expect(enqueued.code, enqueued.stderr).toBe(0);
  await until(
    'the job to complete',
    () => worker.events.some((e) => e.id === 'guest-1' && e.event === 'completed'),
    180_000,
    worker,
  );
  expect(worker.events.filter((e) => e.event === 'failed')).toEqual([]);

  // The kernel path was taken: the export's device is a guest disk, not an iscsi:// URL.
  const manifest = JSON.parse(readFileSync(join(exportDir, 'manifest.json'), 'utf8'));
  expect(manifest.complete).toBe(true);
  expect(manifest.device.path).toMatch(/^\/dev\/(sd[a-z]+|sg\d+)$/);
  const got: Array<[number, number]> = [];
  for (const e of manifest.extents as Array<{ offset: number; length: number }>) {
    const last = got[got.length - 1];
    if (last && last[1] === e.offset) last[1] = e.offset + e.length;
    else got.push([e.offset, e.offset + e.length]);
  }
  const expected = expectedChangedRuns(changed, {
    sizeBytes: SIZE,
    blockSize: 512,
    changeBlockSize: CBS,
  }).map(([s, e]) => [s * 512, e * 512]);
  expect(expected.length).toBeGreaterThan(0);
  expect(got).toEqual(expected);

  // Nothing left: no session, no node record; no volume, no attachment in the tenancy.
  expect(worker.out()).toMatch(/"phase":"export"/);
  expect(iscsiSessions()).toEqual(sessionsBefore);
  const sweep = await run([
    'oci',
    'sweep',
    '--older-than',
    '0',
    '--dry-run',
    '--format',
    'json',
    ...common,
  ]);
  expect(sweep.code, sweep.stderr).toBe(0);
  expect(JSON.parse(sweep.stdout)).toMatchObject({ volumes: [], attachments: [] });
});
