// The fake OCI API wired to simulator targets, and issue 11's proof that its deltas are
// faithful: the two fake backups differ by one set of changed bytes, and a delta volume at any
// changeBlockSizeInBytes serves that set widened to it. Every delta is created, attached and
// scanned through the API and the simulator (the OCI provisioner, attach: 'userspace', the
// library's own iSCSI initiator, GET LBA STATUS report type 1); every expected value comes from
// the test's own byte ranges (or the byte set `sim serve --dump-changed` wrote) through the
// naive change-block bitmap of test/support/oracle.ts — never from lib/sim.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDevice } from '../../lib/api/device.js';
import { simServeCommand } from '../../lib/cli/sim-serve.js';
import { OciDeltaVolumeProvisioner } from '../../lib/oci/provisioner.js';
import {
  type OciSimulation,
  type OciSimulationInfo,
  startOciSimulation,
} from '../../lib/sim/fake-oci/oci-simulation.js';
import { makeIo } from '../cli/helpers.js';
import {
  type ByteRange,
  expectedDelta,
  type Geometry,
  type LbaExtent,
  mergeExtents,
  randomRanges,
} from '../support/oracle.js';
import { FakeIscsiadm } from './fake-iscsiadm.js';
import { FAST } from './harness.js';

const canConnect = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });

/**
 * Creates the delta of `info`'s two backups at `changeBlockSize` through the fake API, attaches
 * it in userspace, scans it with report type 1 and releases it: the extents as scanned, merged.
 */
async function scannedDelta(
  info: OciSimulationInfo,
  changeBlockSize: number,
): Promise<LbaExtent[]> {
  const p = new OciDeltaVolumeProvisioner({
    configFile: info.configFile,
    endpoint: info.endpoint,
    instanceId: info.instanceId,
    attach: 'userspace',
    sysfsRoot: '/nonexistent-sysfs',
    poll: FAST,
  });
  try {
    const vol = await p.provision({
      firstBackupId: info.firstBackupId,
      secondBackupId: info.secondBackupId,
      changeBlockSize,
    });
    try {
      const device = await openDevice(vol.device, { ...vol.deviceOptions });
      try {
        const got: LbaExtent[] = [];
        for await (const e of device.extents({ reportType: 'nonzero' }))
          got.push({ lba: e.lba, blocks: e.blocks, status: e.status });
        return mergeExtents(got);
      } finally {
        await device.close();
      }
    } finally {
      await vol.release();
    }
  } finally {
    await p.close();
  }
}

/** A delta's extents as byte ranges (3 → mapped, 1 → deallocated). */
function asRanges(extents: readonly LbaExtent[], blockSize: number): ByteRange[] {
  return extents.map((e) => ({
    offset: e.lba * blockSize,
    length: e.blocks * blockSize,
    ...(e.status === 1 ? { status: 'deallocated' as const } : {}),
  }));
}

/** The oracle's delta at `changeBlockSize` of the byte set `ranges`. */
function oracle(ranges: readonly ByteRange[], sizeBytes: number, blockSize: number, c: number) {
  const g: Geometry = { sizeBytes, blockSize, changeBlockSize: c };
  return expectedDelta(ranges, g);
}

describe('fake OCI API wired to simulator targets', () => {
  let dir: string;
  let sim: OciSimulation | undefined;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lba-ocisim-'));
  });
  afterEach(async () => {
    await sim?.close();
    sim = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('attachments point at a running simulator serving the delta; detach stops it', async () => {
    const changed = [
      { offset: 1 << 20, length: 65536 },
      { offset: (8 << 20) + 100, length: 4096 },
    ];
    sim = await startOciSimulation({ dir, sizeBytes: 64 << 20, changed });
    expect(sim.info).toMatchObject({ profile: 'DEFAULT', endpoint: sim.api.endpoint });
    expect(sim.info.configFile).toMatch(/config$/);
    const iscsi = await FakeIscsiadm.create(join(dir, 'iscsi'));
    const p = new OciDeltaVolumeProvisioner({
      configFile: sim.info.configFile,
      endpoint: sim.info.endpoint,
      instanceId: sim.info.instanceId,
      iscsiadm: { binary: iscsi.binary, env: iscsi.env, lockPath: join(dir, 'lock') },
      sysfsRoot: iscsi.sysfsRoot,
      poll: FAST,
      deviceIntervalMs: 10,
    });
    try {
      const vol = await p.provision({
        firstBackupId: sim.info.firstBackupId,
        secondBackupId: sim.info.secondBackupId,
        changeBlockSize: 65536,
      });
      expect(sim.simulators.size).toBe(1);
      const target = [...sim.simulators.values()][0]!;
      expect(vol.target).toEqual({ iqn: target.iqn, address: '127.0.0.1', port: target.port });
      expect(target.changeBlockSize).toBe(65536);
      expect(target.sizeBytes).toBe(64 << 20);
      // Written out by hand: 1 MiB..1 MiB+64 KiB is one change block; 8 MiB+100..+4196 lies in
      // the change block at 8 MiB.
      expect(target.changedExtents).toEqual([
        { lba: 2048, blocks: 128, status: 3 },
        { lba: 16384, blocks: 128, status: 3 },
      ]);
      expect(sim.changedBytes).toEqual(changed);
      expect(await canConnect(target.port)).toBe(true);
      await vol.release();
      expect(sim.simulators.size).toBe(0);
      expect(await canConnect(target.port)).toBe(false);
      expect(sim.api.leftovers()).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('rejects a size that is not a multiple of 1 MiB, and ranges outside the volume at start', async () => {
    await expect(startOciSimulation({ dir, sizeBytes: 1000 })).rejects.toThrow(RangeError);
    await expect(
      startOciSimulation({
        dir,
        sizeBytes: 1 << 20,
        changed: [{ offset: 1 << 20, length: 1 }],
      }),
    ).rejects.toThrow(/beyond the volume size/);
  });
});

describe('faithful deltas: one set of changed bytes, widened to each change block size', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lba-ocidelta-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const kind of ['block', 'boot'] as const) {
    it(`${kind} backups, the test's own random byte ranges: delta at 4096 widened to 65536 = delta at 65536 = the oracle`, {
      timeout: 60_000,
    }, async () => {
      for (const [i, blockSize] of ([512, 4096, 512] as const).entries()) {
        const sizeBytes = 32 << 20;
        // Ranges at any byte, overlapping and close together, some changed to zeros.
        const ranges = randomRanges((kind === 'boot' ? 500 : 0) + i, 40, sizeBytes, 200_000, 0.25);
        await using sim = await startOciSimulation({
          dir: join(dir, `${kind}-${i}`),
          sizeBytes,
          blockSize,
          changed: ranges,
          boot: kind === 'boot',
        });
        const d4k = await scannedDelta(sim.info, 4096);
        const d64k = await scannedDelta(sim.info, 65536);
        const label = `${kind} map ${i} (${blockSize}-byte blocks)`;
        expect(d4k, label).toEqual(oracle(ranges, sizeBytes, blockSize, 4096));
        expect(d64k, label).toEqual(oracle(ranges, sizeBytes, blockSize, 65536));
        expect(oracle(asRanges(d4k, blockSize), sizeBytes, blockSize, 65536), label).toEqual(d64k);
        expect(d64k.length, label).toBeLessThan(d4k.length); // widening merged something
        expect(sim.api.leftovers()).toEqual([]);
      }
    });
  }

  it('boot backups with a seeded random draw: the same byte set at every change block size', {
    timeout: 60_000,
  }, async () => {
    const sizeBytes = 64 << 20;
    await using sim = await startOciSimulation({
      dir,
      sizeBytes,
      changed: { random: 30, seed: 4 },
      boot: true,
    });
    const bytes = sim.changedBytes; // the draw, the input of the oracle
    expect(bytes).toHaveLength(30);
    const d4k = await scannedDelta(sim.info, 4096);
    const d64k = await scannedDelta(sim.info, 65536);
    const d1m = await scannedDelta(sim.info, 1 << 20);
    expect(d4k).toEqual(oracle(bytes, sizeBytes, 512, 4096));
    expect(d64k).toEqual(oracle(bytes, sizeBytes, 512, 65536));
    expect(d1m).toEqual(oracle(bytes, sizeBytes, 512, 1 << 20));
    expect(oracle(asRanges(d4k, 512), sizeBytes, 512, 65536)).toEqual(d64k);
    expect(oracle(asRanges(d64k, 512), sizeBytes, 512, 1 << 20)).toEqual(d1m);
  });

  for (const [blockSize, seed] of [
    [512, 7],
    [4096, 8],
  ] as const) {
    it(`sim serve --random-changes --oci-api (${blockSize}-byte blocks): delta at 4096 widened to 65536 = delta at 65536 = --dump-changed-at 65536`, {
      timeout: 60_000,
    }, async () => {
      const sizeBytes = 64 << 20;
      const file = (name: string) => join(dir, name);
      const io = makeIo();
      const done = simServeCommand.run(
        [
          '--size',
          '64M',
          '--block-size',
          String(blockSize),
          '--change-block-size',
          '1M',
          '--random-changes',
          '40',
          '--max-extent',
          String(65536 / blockSize),
          '--seed',
          String(seed),
          '--port',
          '0',
          '--oci-api',
          '--oci-dir',
          file('oci'),
          '--dump-changed',
          file('bytes.json'),
          '--dump-changed-at',
          '65536',
          file('at-64k.json'),
          '--dump-changed-at',
          '4096',
          file('at-4k.json'),
        ],
        io,
      );
      try {
        await expect
          .poll(() => io.out().includes('\n') || io.err(), { timeout: 10_000 })
          .toBe(true);
        const ready = JSON.parse(io.out().split('\n')[0]!) as { oci: OciSimulationInfo };
        const read = async (name: string) =>
          JSON.parse(await readFile(file(name), 'utf8')) as ByteRange[];
        const bytes = await read('bytes.json');
        expect(bytes).toHaveLength(40);
        const d4k = await scannedDelta(ready.oci, 4096);
        const d64k = await scannedDelta(ready.oci, 65536);
        expect(d4k).toEqual(oracle(bytes, sizeBytes, blockSize, 4096));
        expect(oracle(asRanges(d4k, blockSize), sizeBytes, blockSize, 65536)).toEqual(d64k);
        expect(d64k).toEqual(oracle(bytes, sizeBytes, blockSize, 65536));
        // --dump-changed-at C is the delta at C, in bytes.
        expect(oracle(await read('at-64k.json'), sizeBytes, blockSize, blockSize)).toEqual(
          mergeExtents(d64k),
        );
        expect(oracle(await read('at-4k.json'), sizeBytes, blockSize, blockSize)).toEqual(d4k);
        // Far enough apart: 40 ranges are 40 extents at any change block size up to 1 MiB.
        expect(d4k).toHaveLength(40);
        expect(d64k).toHaveLength(40);
      } finally {
        io.abort();
        expect(await done).toBe(0);
      }
    });
  }

  it('sim serve: the random draw does not depend on --change-block-size', async () => {
    const dumps: string[] = [];
    for (const cbs of ['4096', '65536', '1M']) {
      const io = makeIo();
      const out = join(dir, `bytes-${cbs}.json`);
      const done = simServeCommand.run(
        [
          ...['--size', '256M', '--change-block-size', cbs, '--random-changes', '300'],
          ...['--seed', '20240601', '--port', '0', '--dump-changed', out],
        ],
        io,
      );
      await expect.poll(() => io.out().includes('\n') || io.err(), { timeout: 10_000 }).toBe(true);
      io.abort();
      expect(await done).toBe(0);
      dumps.push(await readFile(out, 'utf8'));
    }
    expect(new Set(dumps).size).toBe(1);
    expect(JSON.parse(dumps[0]!)).toHaveLength(300);
  });
});
