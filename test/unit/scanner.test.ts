import { readdirSync } from 'node:fs';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import {
  changedExtents,
  MalformedReplyError,
  openDevice,
  ScsiError,
  setBindingForTesting,
  TransportError,
} from '../../lib/index.js';
import {
  createFakeBinding,
  FakeDevice,
  fakeNodePath,
  type ModelRun,
  type ModelVolume,
  modelChanged,
  openFake,
} from '../support/fake-binding.js';

const nodePath = fakeNodePath();

afterEach(() => setBindingForTesting(undefined));

function volume(overrides: Partial<ModelVolume> = {}): ModelVolume {
  return {
    blockSize: 512,
    capacity: 0x100000,
    behaviour: 'oci',
    runs: [
      { lba: 0, blocks: 0x60, state: 'uninitialised' },
      { lba: 0x60, blocks: 0x10, state: 'mapped' },
      { lba: 0x70, blocks: 0x8, state: 'deallocated' },
      { lba: 0x78, blocks: 0x28, state: 'uninitialised' },
    ],
    ...overrides,
  };
}

const open = openFake;

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

/** Changed ranges reported by a scan, merged, as [start, end). */
async function scannedChanged(device: Awaited<ReturnType<typeof openDevice>>, options = {}) {
  const ranges: Array<[number, number]> = [];
  for await (const e of changedExtents(device, options)) ranges.push([e.lba, e.lba + e.blocks]);
  return ranges;
}

describe('scan against an OCI-like device (32-byte form)', () => {
  it('reports the documented example: gap, mapped and deallocated extents, condition 3', async () => {
    const { device, fake } = await open(volume());
    const batches = await collect(device.batches({ reportType: 'nonzero' }));
    expect(batches).toHaveLength(1);
    const [batch] = batches;
    expect(batch!.cdb).toBe(32);
    expect(batch!.rtp).toBe(true);
    expect(batch!.completionCondition).toBe(3);
    expect(Array.from(batch!.lba)).toEqual([0x60, 0x70, 0xa0]);
    expect(Array.from(batch!.blocks)).toEqual([0x10, 0x8, 0xfff60]);
    expect(Array.from(batch!.status)).toEqual([3, 1, 1]);
    expect(batch!.nextLba).toBe(0x100000);
    // INQUIRY at open, READ CAPACITY(16), then one GET LBA STATUS(32) with OCI's parameters.
    const gls = fake.calls.filter((c) => c.cdb[0] === 0x7f);
    expect(gls).toHaveLength(1);
    expect(Buffer.from(gls[0]!.cdb).toString('hex')).toBe(
      '7f000000000000180012010000000000000000000010000000000000000080' + '00', // scan length = the capacity here (less than 1 GiB),
    );
    await device.close();
  });

  it('splits the volume into 1 GiB windows of logical blocks and continues by condition 2', async () => {
    const capacity = 5 * 2 ** 21 + 100; // 5 GiB + 100 blocks of 512 bytes
    const { device, fake } = await open(
      volume({ capacity, runs: [{ lba: 2 ** 21 - 4, blocks: 8, state: 'mapped' }] }),
    );
    const batches = await collect(device.batches());
    const windows = fake.calls
      .filter((c) => c.cdb[0] === 0x7f)
      .map((c) => Buffer.from(c.cdb).readUInt32BE(20));
    expect(windows).toEqual([2 ** 21, 2 ** 21, 2 ** 21, 2 ** 21, 2 ** 21, 100]);
    expect(batches.map((b) => b.completionCondition)).toEqual([2, 2, 2, 2, 2, 3]);
    expect(await scannedChanged(device)).toEqual([[2 ** 21 - 4, 2 ** 21 + 4]]);
    await device.close();
  });

  it('derives the window from a 4096-byte block size', async () => {
    const { device, fake } = await open(volume({ blockSize: 4096, capacity: 2 ** 19 }));
    await collect(device.batches());
    const scanLengths = fake.calls
      .filter((c) => c.cdb[0] === 0x7f)
      .map((c) => Buffer.from(c.cdb).readUInt32BE(20));
    expect(scanLengths).toEqual([2 ** 18, 2 ** 18]);
    await device.close();
  });

  it('continues after the last whole descriptor when the allocation length cuts the reply', async () => {
    const runs: ModelRun[] = Array.from({ length: 10 }, (_, i) => ({
      lba: 100 * i,
      blocks: 10,
      state: 'mapped',
    }));
    // 40 bytes: two descriptors and half of a third; condition 1 each time.
    const { device, fake } = await open(volume({ capacity: 2000, runs }));
    const batches = await collect(device.batches({ allocationLength: 40 }));
    expect(batches[0]!.completionCondition).toBe(1);
    expect(batches[0]!.count).toBe(2);
    expect(batches[0]!.nextLba).toBe(batches[0]!.lba[1]! + batches[0]!.blocks[1]!);
    expect(await scannedChanged(device, { allocationLength: 40 })).toEqual(
      runs.map((r) => [r.lba, r.lba + 10]),
    );
    expect(fake.calls.length).toBeGreaterThan(5);
    await device.close();
  });

  it('clips an extent that starts before the requested LBA or runs past the window', async () => {
    const runs: ModelRun[] = [{ lba: 90, blocks: 40, state: 'mapped' }];
    const { device } = await open(
      volume({ capacity: 1000, runs, unclippedStart: true, overrunWindow: true }),
    );
    const extents = await collect(
      device.extents({ startLba: 100, windowBlocks: 20, reportType: 'all' }),
    );
    expect(extents.filter((e) => e.status === 3)).toEqual([
      { lba: 100, blocks: 20, status: 3, additional: 0 },
      { lba: 120, blocks: 10, status: 3, additional: 0 },
    ]);
    await device.close();
  });

  it('exposes RTP=0 and treats "mapped or unknown" as changed when the report type was ignored', async () => {
    const { device } = await open(volume({ ignoreReportType: true }));
    const batches = await collect(device.batches({ reportType: 'nonzero' }));
    expect(batches.every((b) => !b.rtp)).toBe(true);
    expect(await scannedChanged(device)).toEqual([[0x60, 0x70]]);
    await device.close();
  });

  it('scans windows concurrently and yields them in order', async () => {
    const capacity = 8 * 1024;
    const runs: ModelRun[] = Array.from({ length: 64 }, (_, i) => ({
      lba: i * 128 + 5,
      blocks: 3,
      state: 'mapped',
    }));
    const { device, fake } = await open(volume({ capacity, runs }));
    fake.latencyMs = 5;
    const batches = await collect(device.batches({ windowBlocks: 512, concurrency: 4 }));
    expect(fake.maxInFlight).toBe(4);
    const starts = batches.map((b) => b.startLba);
    expect(starts).toEqual([...starts].sort((a, b) => a - b));
    expect(await scannedChanged(device, { windowBlocks: 512, concurrency: 4 })).toEqual(
      runs.map((r) => [r.lba, r.lba + 3]),
    );
    await device.close();
  });
});

describe('fallback and other targets', () => {
  it("falls back from 32 to 16 on scsi_debug's 24h/00h (byte 8), once per device", async () => {
    const model = volume({
      behaviour: 'scsi_debug',
      capacity: 4096,
      runs: [{ lba: 64, blocks: 16, state: 'mapped' }],
    });
    const { device, fake } = await open(model);
    expect(await scannedChanged(device, { cdb: 'auto' })).toEqual([[64, 80]]);
    expect(device.glsForm).toBe(16);
    const first32 = fake.calls.filter((c) => c.cdb[0] === 0x7f).length;
    expect(first32).toBe(1);
    await collect(device.batches({ cdb: 'auto' }));
    expect(fake.calls.filter((c) => c.cdb[0] === 0x7f).length).toBe(1);
    await device.close();
  });

  it("falls back on tgt's 20h/00h and follows its truncated replies", async () => {
    const runs: ModelRun[] = Array.from({ length: 12 }, (_, i) => ({
      lba: 1000 * i + 8,
      blocks: 8,
      state: 'mapped',
    }));
    const { device } = await open(volume({ behaviour: 'tgt', capacity: 12_000, runs }));
    // 24 bytes: PARAMETER DATA LENGTH counts every descriptor, one arrives.
    expect(await scannedChanged(device, { cdb: 'auto', allocationLength: 24 })).toEqual(
      runs.map((r) => [r.lba, r.lba + 8]),
    );
    // 30 bytes: one and a partial descriptor (sg3_utils' "incomplete trailing" case).
    expect(await scannedChanged(device, { cdb: 'auto', allocationLength: 30 })).toEqual(
      runs.map((r) => [r.lba, r.lba + 8]),
    );
    await device.close();
  });

  it('does not fall back when cdb: 32 is forced', async () => {
    const { device } = await open(volume({ behaviour: 'tgt', capacity: 100, runs: [] }));
    const error = await collect(device.batches({ cdb: 32 })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ScsiError);
    expect(error).toMatchObject({ code: 'ERR_SCSI_ILLEGAL_REQUEST', asc: 0x20, ascq: 0 });
    await device.close();
  });
});

describe('retries and errors', () => {
  it('retries UNIT ATTENTION, BUSY, TASK SET FULL and NOT READY (becoming ready)', async () => {
    const { device, fake } = await open(volume(), { retry: { delayMs: 1 } });
    fake.faults.push(
      { kind: 'unit-attention' },
      { kind: 'busy' },
      { kind: 'task-set-full' },
      { kind: 'not-ready' },
    );
    expect(await scannedChanged(device)).toEqual([[0x60, 0x70]]);
    await device.close();
  });

  it('gives up after the retry budget with the ScsiError', async () => {
    const { device, fake } = await open(volume(), { retry: { attempts: 2, delayMs: 1 } });
    await device.capacity();
    fake.faults.push({ kind: 'busy' }, { kind: 'busy' });
    await expect(collect(device.batches())).rejects.toMatchObject({
      name: 'ScsiError',
      code: 'ERR_SCSI_BUSY',
    });
    await device.close();
  });

  it('never treats a transport error as success', async () => {
    const { device, fake } = await open(volume());
    await device.capacity();
    fake.faults.push({ kind: 'transport', hostStatus: 0x05 });
    const error = await collect(device.batches()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TransportError);
    expect(error).toMatchObject({ hostStatusName: 'DID_ABORT', code: 'ERR_SCSI_TRANSPORT' });
    await device.close();
  });

  const malformed: Array<[string, number[]]> = [
    ['a reply shorter than a header', [0, 0, 0]],
    ['a length that is not 4 + 16k', [0, 0, 0, 12, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0]],
    [
      'overlapping descriptors',
      [0, 0, 0, 36, 0, 0, 0, 7, ...desc(0x60, 0x10, 3), ...desc(0x68, 0x10, 1)],
    ],
    ['an extent past the capacity', [0, 0, 0, 20, 0, 0, 0, 7, ...desc(0xffff0, 0x20, 3)]],
    ['a zero-length descriptor', [0, 0, 0, 20, 0, 0, 0, 7, ...desc(0x60, 0, 3)]],
    ['condition 3 before the end of the medium', [0, 0, 0, 20, 0, 0, 0, 7, ...desc(0x0, 0x10, 3)]],
    ['a reserved completion condition', [0, 0, 0, 4, 0, 0, 0, 0x0b]],
  ];
  for (const [name, bytes] of malformed) {
    it(`stops with MalformedReplyError on ${name}`, async () => {
      const { device, fake } = await open(volume());
      await device.capacity();
      fake.faults.push({ kind: 'raw', data: Uint8Array.from(bytes) });
      const options = name.startsWith('condition 3') ? { windowBlocks: 0x1000 } : {};
      const error = await collect(device.batches(options)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(MalformedReplyError);
      expect((error as Error).message).toMatch(/malformed reply/);
      await device.close();
    });
  }

  it('rejects options it does not know and values out of range', async () => {
    const { device } = await open(volume());
    await expect(collect(device.batches({ reportype: 1 } as never))).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
    });
    await expect(collect(device.batches({ windowBlocks: 2 ** 21 + 1 }))).rejects.toMatchObject({
      code: 'ERR_OUT_OF_RANGE',
    });
    await expect(collect(device.batches({ allocationLength: 16 }))).rejects.toMatchObject({
      code: 'ERR_OUT_OF_RANGE',
    });
    await expect(collect(device.changedExtents({ changeBlockSize: 3000 }))).rejects.toMatchObject({
      code: 'ERR_OUT_OF_RANGE',
    });
    await device.close();
  });
});

describe('cancellation, progress, resume', () => {
  it('stops at an abort with AbortError and sends no new command', async () => {
    const runs: ModelRun[] = Array.from({ length: 50 }, (_, i) => ({
      lba: 100 * i,
      blocks: 10,
      state: 'mapped',
    }));
    const { device, fake } = await open(volume({ capacity: 5000, runs }));
    const controller = new AbortController();
    let seen = 0;
    const scan = (async () => {
      for await (const _ of device.batches({ allocationLength: 40, signal: controller.signal })) {
        if (++seen === 2) controller.abort(new Error('user stop'));
      }
    })();
    await expect(scan).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    const commands = fake.calls.filter((c) => c.cdb[0] === 0x7f).length;
    expect(commands).toBe(2);
    await device.close();
  });

  it('reports progress up to 1 and resumes from a batch cursor', async () => {
    const runs: ModelRun[] = Array.from({ length: 20 }, (_, i) => ({
      lba: 100 * i,
      blocks: 10,
      state: 'mapped',
    }));
    const { device } = await open(volume({ capacity: 2000, runs }));
    const fractions: number[] = [];
    const batches = await collect(
      device.batches({ allocationLength: 40, onProgress: (p) => fractions.push(p.fraction) }),
    );
    expect(fractions.at(-1)).toBe(1);
    expect(fractions).toEqual([...fractions].sort((a, b) => a - b));
    const cursor = batches[3]!.nextLba;
    const resumed = await scannedChanged(device, { startLba: cursor, allocationLength: 40 });
    expect(resumed).toEqual(
      modelChanged(volume({ capacity: 2000, runs }), cursor).map(([s, e]) => [s, e]),
    );
    await device.close();
  });
});

describe('changed extents', () => {
  it('aligns outward to the change block size and merges neighbours', async () => {
    const runs: ModelRun[] = [
      { lba: 3, blocks: 2, state: 'mapped' },
      { lba: 9, blocks: 1, state: 'mapped' },
      { lba: 40, blocks: 8, state: 'mapped' },
    ];
    const { device } = await open(volume({ capacity: 100, runs }));
    const extents = await collect(device.changedExtents({ changeBlockSize: 4096 }));
    expect(extents).toEqual([
      { lba: 0, blocks: 16, offset: 0, length: 8192 },
      { lba: 40, blocks: 8, offset: 40 * 512, length: 4096 },
    ]);
    await device.close();
  });

  it('property: the union of reported changes equals the model for any window and allocation length', async () => {
    const runsArb = fc
      .array(
        fc.tuple(
          fc.integer({ min: 0, max: 40 }),
          fc.integer({ min: 1, max: 30 }),
          fc.constantFrom('mapped', 'deallocated', 'uninitialised'),
        ),
        { maxLength: 25 },
      )
      .map((parts) => {
        let cursor = 0;
        return parts.map(([gap, blocks, state]) => {
          const run = { lba: cursor + gap, blocks, state } as ModelRun;
          cursor = run.lba + run.blocks;
          return run;
        });
      });
    await fc.assert(
      fc.asyncProperty(
        runsArb,
        fc.integer({ min: 0, max: 200 }),
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 24, max: 120 }),
        fc.constantFrom<'oci' | 'scsi_debug' | 'tgt'>('oci', 'scsi_debug', 'tgt'),
        fc.boolean(),
        fc.integer({ min: 1, max: 3 }),
        async (runs, extra, windowBlocks, allocationLength, behaviour, unclipped, concurrency) => {
          const last = runs.at(-1);
          const capacity = (last ? last.lba + last.blocks : 0) + extra + 1;
          const model = volume({
            capacity,
            runs,
            behaviour,
            unclippedStart: unclipped,
            overrunWindow: unclipped,
          });
          const fake = new FakeDevice(model);
          setBindingForTesting(createFakeBinding(fake));
          const device = await openDevice(nodePath);
          try {
            const got = await scannedChanged(device, {
              windowBlocks,
              allocationLength,
              concurrency,
            });
            expect(got).toEqual(modelChanged(model));
          } finally {
            await device.close();
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});

describe('device lifetime', () => {
  it('closes idempotently, refuses commands afterwards and leaks no descriptor', async () => {
    const before = readdirSync('/proc/self/fd').length;
    const { device } = await open(volume());
    await device.close();
    await device.close();
    await expect(device.capacity()).rejects.toMatchObject({ code: 'ERR_LBA_STATUS_DEVICE_CLOSED' });
    expect(readdirSync('/proc/self/fd').length).toBe(before);
  });

  it('closes the node when the INQUIRY probe at open fails', async () => {
    const fake = new FakeDevice(volume());
    fake.faults.push({ kind: 'errno', errno: 25 });
    setBindingForTesting(createFakeBinding(fake));
    const before = readdirSync('/proc/self/fd').length;
    await expect(openDevice(nodePath)).rejects.toMatchObject({
      code: 'ENOTTY',
      errno: -25,
      syscall: 'ioctl',
      path: nodePath,
    });
    expect(readdirSync('/proc/self/fd').length).toBe(before);
  });
});

function desc(lba: number, blocks: number, status: number): number[] {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, BigInt(lba));
  view.setUint32(8, blocks);
  bytes[12] = status;
  return Array.from(bytes);
}
