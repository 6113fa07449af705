#!/usr/bin/env node
// Fleet scaling figure: how much faster 3 workers drain a queue than 1, when each delta volume's
// read bandwidth is capped like a volume performance level (sim serve --volume-throughput). Both
// runs in one process tree, one after the other, on the same fake tenancy (3 instances, 2
// attachments each), the same private redis-server and the same jobs: 1 worker × 2 slots, then
// 3 workers × 2 slots. Prints one JSON object; the figure is `ratio` (target ≥ 2.5).
//
// Usage: npm run build:ts && node scripts/bench/fleet.mjs [--jobs 6] [--mib-per-job 4] [--throughput 1]
// Needs Debian's redis-server and the dev dependencies (bullmq, ioredis, oci-core, oci-common).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const cli = join(root, 'dist/cli.js');
const require = createRequire(import.meta.url);
const { enqueueDeltaJob, listDeltaJobs } = require(join(root, 'dist/jobs.cjs'));

const { values } = parseArgs({
  options: {
    jobs: { type: 'string', default: '6' },
    'mib-per-job': { type: 'string', default: '4' },
    throughput: { type: 'string', default: '1' },
  },
});
const JOBS = Number(values.jobs);
const MIB = Number(values['mib-per-job']);
const SIZE = 64 << 20;
const CBS = 64 << 10;

const children = new Set();
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
});

function run(args, label) {
  const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const lines = [];
  let buf = '';
  let err = '';
  child.stdout.on('data', (c) => {
    buf += c;
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      lines.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      nl = buf.indexOf('\n');
    }
  });
  child.stderr.on('data', (c) => {
    err += c;
  });
  const exited = new Promise((r) => child.once('exit', (code) => r(code)));
  return { child, lines, exited, label, err: () => err };
}

async function until(what, check, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (await check()) return;
    } catch {}
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function freePort() {
  return new Promise((done) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => done(port));
    });
  });
}

if (spawnSync('redis-server', ['--version']).error) {
  console.error('fleet bench: redis-server is not installed (scripts/setup-system.sh)');
  process.exit(3);
}
const dir = mkdtempSync(join(tmpdir(), 'lba-fleet-bench-'));
const port = await freePort();
const redisProc = spawn(
  'redis-server',
  [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--appendonly',
    'yes',
    '--save',
    '',
  ],
  { stdio: 'ignore' },
);
children.add(redisProc);
const redis = `redis://127.0.0.1:${port}`;
try {
  // MIB MiB of changes per job, in 256 KiB ranges 1 MiB apart (aligned to the change block).
  const ranges = Array.from({ length: MIB * 4 }, (_, i) => ({
    offset: i * (1 << 20),
    length: 256 << 10,
  }));
  writeFileSync(join(dir, 'changed.json'), JSON.stringify(ranges));
  const sim = run(
    [
      'sim',
      'serve',
      '--size',
      String(SIZE),
      '--changed',
      join(dir, 'changed.json'),
      '--port',
      '0',
      '--oci-api',
      '--oci-dir',
      dir,
      '--instances',
      '3',
      '--max-attachments',
      '2',
      '--volume-throughput',
      values.throughput,
    ],
    'sim',
  );
  await until('sim serve', () => sim.lines.length > 0, 20_000);
  const oci = JSON.parse(sim.lines[0]).oci;
  await until(
    'redis',
    async () => (await listDeltaJobs({ redis, queue: 'probe' })).length === 0,
    10_000,
  );

  async function drain(queue, workerCount) {
    const workers = [];
    for (let k = 0; k < workerCount; k++) {
      workers.push(
        run(
          [
            'worker',
            '--redis',
            redis,
            '--queue',
            queue,
            '--slots',
            '2',
            '--attach',
            'userspace',
            '--endpoint',
            oci.endpoint,
            '--config-file',
            oci.configFile,
            '--instance-id',
            oci.instanceIds[k],
          ],
          `worker ${k}`,
        ),
      );
    }
    for (const w of workers)
      await until(`${w.label} ready`, () => w.lines.some((l) => l.includes('"ready"')), 30_000);
    const t0 = performance.now();
    for (let i = 0; i < JOBS; i++) {
      const id = `${queue}-${i}`;
      await enqueueDeltaJob(
        {
          jobId: id,
          firstBackupId: oci.firstBackupId,
          secondBackupId: oci.secondBackupId,
          changeBlockSize: CBS,
          export: { dir: join(dir, 'exports', id) },
        },
        { redis, queue },
      );
    }
    await until(
      `${queue} drained`,
      async () => {
        const jobs = await listDeltaJobs({ redis, queue });
        return jobs.length === JOBS && jobs.every((j) => j.state === 'completed');
      },
      600_000,
    );
    const ms = performance.now() - t0;
    const perJob = (await listDeltaJobs({ redis, queue })).map((j) => j.result.elapsedMs);
    for (const w of workers) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => w.exited));
    return {
      workers: workerCount,
      slots: 2,
      ms: Math.round(ms),
      perJobMs: perJob.sort((a, b) => a - b),
    };
  }

  const one = await drain('one', 1);
  const three = await drain('three', 3);
  const ratio = one.ms / three.ms;
  console.log(
    JSON.stringify(
      {
        figure: 'fleet scaling: 3 workers vs 1 (2 slots each), volume read bandwidth capped',
        jobs: JOBS,
        changedMiBPerJob: MIB,
        volumeThroughputMiBs: Number(values.throughput),
        one,
        three,
        ratio: Number(ratio.toFixed(2)),
        target: '>= 2.5',
        met: ratio >= 2.5,
      },
      null,
      2,
    ),
  );
  sim.child.kill('SIGTERM');
  await sim.exited;
} finally {
  redisProc.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}
