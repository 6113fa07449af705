// runDeltaJob against the fake OCI API in process (startOciSimulation: fake tenancy + simulator
// targets), attach 'userspace' so that no root is needed. The expectation is the test's own byte
// ranges through the shared oracle: the changed runs at the change block size and the
// documented block data. After every run — success, abort, crash — the fake tenancy must hold
// no volume and no attachment (api.leftovers()).
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type DeltaJobProgress,
  type DeltaJobProvisioner,
  type DeltaJobSpec,
  runDeltaJob,
} from '../../lib/jobs/index.js';
import { OciDeltaVolumeProvisioner } from '../../lib/oci/provisioner.js';
import type { ProvisionedVolume } from '../../lib/provision/types.js';
import { sha256File } from '../../lib/read/export.js';
import { type OciSimulation, startOciSimulation } from '../../lib/sim/fake-oci/oci-simulation.js';
import { type ByteRange, expectedChangedRuns, expectedRead } from '../support/oracle.js';

const SIZE = 48 << 20;
const CHANGE = 65536;
const SEED = 5;
const RANGES: ByteRange[] = [
  { offset: 4096, length: 100 },
  { offset: 2 << 20, length: 4 << 20 },
  { offset: (17 << 20) + 12_345, length: 200_000 },
  { offset: 30 << 20, length: 6 << 20 },
  { offset: SIZE - 4096, length: 4096 },
];
const CREATED = new Date('2026-11-30T00:00:00.000Z');
const FAST = { intervalMs: 5, maxIntervalMs: 20, timeoutMs: 10_000 };

let root = '';
let sim: OciSimulation;
let provisioner: OciDeltaVolumeProvisioner;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'lba-status-job-'));
  sim = await startOciSimulation({
    dir: join(root, 'tenancy'),
    sizeBytes: SIZE,
    changed: RANGES,
    dataSeed: SEED,
    delays: { provisionMs: 20, attachMs: 20, detachMs: 20, terminateMs: 20 },
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
const run = (s: DeltaJobSpec, more: Parameters<typeof runDeltaJob>[1] = {}) =>
  runDeltaJob(s, {
    provisioner,
    attach: 'userspace',
    createdAt: CREATED,
    progressIntervalMs: 0,
    read: { chunkSize: 256 << 10, concurrency: 2 },
    ...more,
  });

/**
 * SHA-256 of the three files; the manifest's without `device` (the delta volume's portal, IQN
 * and serial: every delta volume has its own, a resumed export keeps its first attempt's).
 */
const hashes = async (dir: string) => ({
  manifest: createHash('sha256')
    .update(
      JSON.stringify({
        ...JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')),
        device: undefined,
      }),
    )
    .digest('hex'),
  image: await sha256File(join(dir, 'delta.img')),
  rbd: await sha256File(join(dir, 'delta.rbd-diff')),
});

/** Checks an export against the oracle: the changed runs and every changed byte. */
function expectOracle(dir: string): void {
  const g = { sizeBytes: SIZE, blockSize: 512, changeBlockSize: CHANGE };
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  expect(manifest.complete).toBe(true);
  expect(manifest.source).toEqual({
    firstBackupId: sim.info.firstBackupId,
    secondBackupId: sim.info.secondBackupId,
  });
  const merged: Array<[number, number]> = [];
  for (const e of manifest.extents as Array<{ offset: number; length: number }>) {
    const last = merged[merged.length - 1];
    if (last && last[1] === e.offset / 512) last[1] = (e.offset + e.length) / 512;
    else merged.push([e.offset / 512, (e.offset + e.length) / 512]);
  }
  const runs = expectedChangedRuns(RANGES, g);
  expect(merged).toEqual(runs);
  const image = readFileSync(join(dir, 'delta.img'));
  expect(image.length).toBe(SIZE);
  for (const [start, end] of runs) {
    const want = expectedRead(RANGES, g, SEED, start, end - start);
    expect(image.subarray(start * 512, end * 512).equals(want)).toBe(true);
  }
}

describe('runDeltaJob (fake OCI API, userspace attach)', () => {
  let reference: Awaited<ReturnType<typeof hashes>>;

  it('exports exactly the changed data and leaves nothing in the tenancy', async () => {
    const events: DeltaJobProgress[] = [];
    const result = await run(spec('job-complete', 'complete'), {
      onProgress: (p) => events.push(p),
    });
    expectOracle(result.dir);
    reference = await hashes(result.dir);
    expect(result).toMatchObject({
      jobId: 'job-complete',
      resumed: false,
      swept: { volumes: [], attachments: [] },
    });
    expect(result.manifestSha256).toBe(await sha256File(join(result.dir, 'manifest.json')));
    expect(result.bytes).toBe(result.bytesRead);
    const phases = [...new Set(events.map((e) => e.phase))];
    expect(phases).toEqual(['sweep', 'provision', 'export', 'release', 'done']);
    expect(events.at(-1)).toMatchObject({ bytesDone: result.bytes, bytesTotal: result.bytes });
    expect(sim.api.leftovers()).toEqual([]);
    // The job id is in the volume's tags and in the create retry token.
    const volume = sim.api.volume(result.volumeId!) as { freeformTags: Record<string, string> };
    expect(volume.freeformTags['lba-status-job']).toBe('job-complete');
    const creates = sim.api.requests.filter(
      (r) => r.method === 'POST' && r.path === '/20160918/volumes',
    );
    expect(creates.at(-1)?.retryToken).toMatch(/^lba-status-job-complete-[0-9a-f]{8}-create$/);
  });

  it('a second run with the same job id after a crash mid-export sweeps the leftover volume and resumes', async () => {
    const s = spec('job-crash', 'crash');
    // A crash: the export stops mid-way and nothing is released (the process died).
    const leaky: DeltaJobProvisioner = {
      attach: 'userspace',
      provision: async (o) => {
        const v = await provisioner.provision(o);
        const crashed = {
          device: v.device,
          devicePath: v.devicePath,
          description: v.description,
          changeBlockSize: (v as { changeBlockSize?: number }).changeBlockSize,
          release: async () => {},
          [Symbol.asyncDispose]: async () => {},
        };
        return Object.defineProperty(crashed, 'deviceOptions', {
          value: v.deviceOptions,
        }) as typeof crashed & ProvisionedVolume;
      },
      sweepJob: (id, o) => provisioner.sweepJob(id, o),
    };
    const controller = new AbortController();
    await expect(
      run(s, {
        provisioner: leaky,
        signal: controller.signal,
        onProgress: (p) => {
          if (p.phase === 'export' && p.bytesDone > 8 << 20) controller.abort();
        },
      }),
    ).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    const left = sim.api.leftovers();
    expect(left.some((l) => l.startsWith('volume'))).toBe(true);
    expect(left.some((l) => l.startsWith('attachment'))).toBe(true);

    const result = await run(s);
    expect(result.resumed).toBe(true);
    expect(result.bytesRead).toBeLessThan(result.bytes);
    expect(result.swept.volumes).toHaveLength(1);
    expect(result.swept.attachments).toHaveLength(1);
    expectOracle(result.dir);
    // Resumed on a new delta volume of the same two backups: byte-identical all the same.
    expect(await hashes(result.dir)).toEqual(reference);
    expect(sim.api.leftovers()).toEqual([]);
  });

  it('abort releases everything; the export stays resumable by the next run', async () => {
    const s = spec('job-abort', 'abort');
    const controller = new AbortController();
    await expect(
      run(s, {
        signal: controller.signal,
        onProgress: (p) => {
          if (p.phase === 'export' && p.bytesDone > 4 << 20) controller.abort();
        },
      }),
    ).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    expect(sim.api.leftovers()).toEqual([]);
    // Aborted while provisioning: nothing left either.
    const early = new AbortController();
    await expect(
      run(s, {
        signal: early.signal,
        onProgress: (p) => {
          if (p.phase === 'provision' && p.detail?.startsWith('wait-available start'))
            early.abort();
        },
      }),
    ).rejects.toMatchObject({ name: 'AbortError' });
    expect(sim.api.leftovers()).toEqual([]);
    const result = await run(s);
    expect(result.resumed).toBe(true);
    expect(await hashes(result.dir)).toEqual(reference);
    expect(sim.api.leftovers()).toEqual([]);
    // Three attempts of one job, each after the previous one's volume was deleted: a fresh
    // create token each time (a reused one would be InvalidatedRetryToken, 409).
    const tokens = sim.api.requests
      .filter((r) => r.method === 'POST' && r.path === '/20160918/volumes')
      .map((r) => r.retryToken ?? '')
      .filter((t) => t.startsWith('lba-status-job-abort-'));
    expect(tokens).toHaveLength(3);
    expect(new Set(tokens).size).toBe(3);
    expect(
      sim.api.requests.some(
        (r) => r.method === 'POST' && r.path === '/20160918/volumes' && r.status === 409,
      ),
    ).toBe(false);
  });

  it('refuses a directory holding another delta before creating anything', async () => {
    const before = sim.api.volumes().length;
    const error = await run({
      ...spec('job-other', 'complete'),
      changeBlockSize: 2 * CHANGE,
    }).catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: 'ERR_LBA_STATUS_EXPORT_MISMATCH',
      field: 'changeBlockSize',
    });
    expect(sim.api.volumes().length).toBe(before);
  });
});
