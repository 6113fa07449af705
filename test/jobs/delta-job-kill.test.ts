// runDeltaJob killed for real: a child process (dist/jobs.js) runs the job against the fake OCI
// API of this process (startOciSimulation, reads slowed by a latency fault) and is SIGKILLed
// mid-export — its delta volume and attachment stay in the fake tenancy, as after a crash. A
// second run with the same job id (in this process) sweeps them, provisions a new delta volume,
// resumes the export and ends with the data files of an uninterrupted run and the oracle's
// bytes; the tenancy holds nothing afterwards.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type DeltaJobSpec, runDeltaJob } from '../../lib/jobs/index.js';
import { OciDeltaVolumeProvisioner } from '../../lib/oci/provisioner.js';
import { type OciSimulation, startOciSimulation } from '../../lib/sim/fake-oci/oci-simulation.js';
import { type ByteRange, expectedChangedRuns, expectedRead } from '../support/oracle.js';
import { describeIf } from '../support/require.js';

const JOBS = resolve('dist/jobs.js');
const SIZE = 32 << 20;
const CHANGE = 65536;
const SEED = 21;
const RANGES: ByteRange[] = [
  { offset: 0, length: 4096 },
  { offset: 3 << 20, length: 6 << 20 },
  { offset: 20 << 20, length: 2 << 20 },
];
const FAST = { intervalMs: 5, maxIntervalMs: 20, timeoutMs: 10_000 };
const CREATED = '2026-11-30T00:00:00.000Z';

/** The child: runs the job and prints each progress report as a JSON line. */
const CHILD = `
import { runDeltaJob } from ${JSON.stringify(JOBS)};
const [spec, config] = JSON.parse(process.argv[1]);
await runDeltaJob(spec, {
  oci: config,
  attach: 'userspace',
  createdAt: new Date(${JSON.stringify(CREATED)}),
  progressIntervalMs: 0,
  read: { chunkSize: 131072, concurrency: 1 },
  onProgress: (p) => process.stdout.write(JSON.stringify(p) + '\\n'),
});
`;

const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

describeIf(
  'runDeltaJob SIGKILLed mid-export, then run again',
  existsSync(JOBS) ? undefined : `${JOBS} is missing: run npm run build:ts`,
  () => {
    let root = '';
    let sim: OciSimulation;
    let provisioner: OciDeltaVolumeProvisioner;
    beforeAll(async () => {
      root = mkdtempSync(join(tmpdir(), 'lba-status-job-kill-'));
      sim = await startOciSimulation({
        dir: join(root, 'tenancy'),
        sizeBytes: SIZE,
        changed: RANGES,
        dataSeed: SEED,
        delays: { provisionMs: 20, attachMs: 20, detachMs: 20, terminateMs: 20 },
        faults: [{ kind: 'latency', ms: 40, probability: 1, on: 'read' }],
      });
      provisioner = new OciDeltaVolumeProvisioner({
        configFile: sim.info.configFile,
        endpoint: sim.info.endpoint,
        instanceId: sim.info.instanceId,
        attach: 'userspace',
        poll: FAST,
      });
    });
    afterAll(async () => {
      await provisioner?.close();
      await sim?.close();
      rmSync(root, { recursive: true, force: true });
    });

    const spec = (jobId: string, dir: string): DeltaJobSpec => ({
      jobId,
      firstBackupId: sim.info.firstBackupId,
      secondBackupId: sim.info.secondBackupId,
      changeBlockSize: CHANGE,
      export: { dir: join(root, dir) },
    });
    const inProcess = (s: DeltaJobSpec) =>
      runDeltaJob(s, {
        provisioner,
        createdAt: new Date(CREATED),
        read: { chunkSize: 131072, concurrency: 1 },
      });

    it("the second run sweeps the killed run's volume and resumes the export", {
      timeout: 90_000,
    }, async () => {
      const reference = await inProcess(spec('reference', 'reference'));
      expect(sim.api.leftovers()).toEqual([]);

      const s = spec('job-killed', 'killed');
      const config = {
        configFile: sim.info.configFile,
        endpoint: sim.info.endpoint,
        instanceId: sim.info.instanceId,
        poll: FAST,
      };
      const child = spawn(
        process.execPath,
        ['--input-type=module', '-e', CHILD, JSON.stringify([s, config])],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stderr = '';
      child.stderr!.on('data', (c: Buffer) => {
        stderr += c;
      });
      let text = '';
      let killedAt = 0;
      child.stdout!.on('data', (c: Buffer) => {
        text += c;
        for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n')) {
          const p = JSON.parse(text.slice(0, nl));
          text = text.slice(nl + 1);
          // Past the first journal batch (about a second of reads) and well before the end.
          if (!killedAt && p.phase === 'export' && p.bytesDone >= 5 << 20) {
            killedAt = p.bytesDone;
            child.kill('SIGKILL');
          }
        }
      });
      const [, signal] = await new Promise<[number | null, string | null]>((done) =>
        child.once('exit', (code, sig) => done([code, sig])),
      );
      expect(signal, stderr).toBe('SIGKILL');
      const left = sim.api.leftovers();
      expect(left.filter((l) => l.startsWith('volume'))).toHaveLength(1);
      expect(left.filter((l) => l.startsWith('attachment'))).toHaveLength(1);

      const result = await inProcess(s);
      expect(result.swept.volumes).toHaveLength(1);
      expect(result.swept.attachments).toHaveLength(1);
      expect(result.resumed).toBe(true);
      expect(result.bytesRead).toBeLessThan(result.bytes);
      expect(result.bytes).toBe(reference.bytes);
      for (const f of ['delta.img', 'delta.rbd-diff'])
        expect(sha(join(result.dir, f)), f).toBe(sha(join(reference.dir, f)));
      const a = JSON.parse(readFileSync(join(result.dir, 'manifest.json'), 'utf8'));
      const b = JSON.parse(readFileSync(join(reference.dir, 'manifest.json'), 'utf8'));
      expect({ ...a, device: undefined }).toEqual({ ...b, device: undefined });
      const g = { sizeBytes: SIZE, blockSize: 512, changeBlockSize: CHANGE };
      const image = readFileSync(join(result.dir, 'delta.img'));
      for (const [start, end] of expectedChangedRuns(RANGES, g))
        expect(
          image
            .subarray(start * 512, end * 512)
            .equals(expectedRead(RANGES, g, SEED, start, end - start)),
        ).toBe(true);
      expect(sim.api.leftovers()).toEqual([]);
    });
  },
);
