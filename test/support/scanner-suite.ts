/**
 * The scanner cases, run on every transport against the one emulator (the simulator's device
 * server with its oci, scsi_debug and tgt profiles): in process (memory transport), behind the
 * simulator's iSCSI target (userspace initiator; test/unit/scanner.test.ts), and through the
 * guest kernel's initiator and SG_IO (test/guest/sim-iscsi/suites.test.ts). Cases that need the
 * memory transport's test hook skip elsewhere. Expected results come from each case's own runs
 * (test/support/volume.ts).
 */
import { readdirSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  changedExtents,
  type LbaStatusDevice,
  MalformedReplyError,
  ScsiError,
  TransportError,
} from '../../lib/index.js';
import type { DeviceProfile } from '../../lib/sim/device-server.js';
import { isGls32, type OpenedVolume, type TestTarget } from './targets.js';
import { expectedChanged, mappedEvery, ociExample, type Run, type TestVolume } from './volume.js';

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

/** Changed ranges reported by a scan, merged, as [start, end). */
async function scannedChanged(device: LbaStatusDevice, options = {}) {
  const ranges: Array<[number, number]> = [];
  for await (const e of changedExtents(device, options)) ranges.push([e.lba, e.lba + e.blocks]);
  return ranges;
}

/** SCAN LENGTH of each GET LBA STATUS(32) sent. */
const scanLengths = (v: OpenedVolume) =>
  v.commands.filter(isGls32).map((c) => Buffer.from(c).readUInt32BE(20));

/** A byte-level GET LBA STATUS descriptor. */
function desc(lba: number, blocks: number, status: number): number[] {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, BigInt(lba));
  view.setUint32(8, blocks);
  bytes[12] = status;
  return Array.from(bytes);
}

/** The scanner cases, on `target`. */
export function scannerSuite(target: TestTarget): void {
  const open = (volume: TestVolume, options = {}) => target.open(volume, options);
  /**
   * A case that applies only where `applies` holds (e.g. it needs the memory transport's test
   * hook): elsewhere it is not registered at all — a case that cannot apply is not a skip.
   */
  const itWhere = (applies: boolean | undefined, name: string, fn: () => Promise<void>) => {
    if (applies) it(name, fn);
  };
  const withInject = (name: string, fn: () => Promise<void>) => itWhere(target.canInject, name, fn);

  describe(`scan against an OCI-like device (32-byte form) [${target.name}]`, () => {
    it('reports the documented example: gap, mapped and deallocated extents, condition 3', async () => {
      const v = await open(ociExample());
      const batches = await collect(v.device.batches({ reportType: 'nonzero' }));
      expect(batches).toHaveLength(1);
      const [batch] = batches;
      expect(batch!.cdb).toBe(32);
      expect(batch!.rtp).toBe(true);
      expect(batch!.completionCondition).toBe(3);
      expect(Array.from(batch!.lba)).toEqual([0x60, 0x70, 0xa0]);
      expect(Array.from(batch!.blocks)).toEqual([0x10, 0x8, 0xfff60]);
      expect(Array.from(batch!.status)).toEqual([3, 1, 1]);
      expect(batch!.nextLba).toBe(0x100000);
      // One GET LBA STATUS(32) with OCI's parameters: scan length = the capacity (< 1 GiB).
      const gls = v.commands.filter(isGls32);
      expect(gls).toHaveLength(1);
      expect(Buffer.from(gls[0]!).toString('hex')).toBe(
        '7f00000000000018001201000000000000000000001000000000000000008000',
      );
      await v.device.close();
    });

    it('splits the volume into 1 GiB windows of logical blocks and continues by condition 2', async () => {
      const capacity = 5 * 2 ** 21 + 100; // 5 GiB + 100 blocks of 512 bytes
      const v = await open(
        ociExample({ capacity, runs: [{ lba: 2 ** 21 - 4, blocks: 8, state: 'mapped' }] }),
      );
      const batches = await collect(v.device.batches());
      expect(scanLengths(v)).toEqual([2 ** 21, 2 ** 21, 2 ** 21, 2 ** 21, 2 ** 21, 100]);
      expect(batches.map((b) => b.completionCondition)).toEqual([2, 2, 2, 2, 2, 3]);
      expect(await scannedChanged(v.device)).toEqual([[2 ** 21 - 4, 2 ** 21 + 4]]);
      await v.device.close();
    });

    it('derives the window from a 4096-byte block size', async () => {
      const v = await open(ociExample({ blockSize: 4096, capacity: 2 ** 19 }));
      await collect(v.device.batches());
      expect(scanLengths(v)).toEqual([2 ** 18, 2 ** 18]);
      await v.device.close();
    });

    it('continues after the last whole descriptor when the allocation length cuts the reply', async () => {
      const runs = mappedEvery(10, 100, 10);
      // 40 bytes: two descriptors and half of a third; condition 1 each time.
      const v = await open(ociExample({ capacity: 2000, runs }));
      const batches = await collect(v.device.batches({ allocationLength: 40 }));
      expect(batches[0]!.completionCondition).toBe(1);
      expect(batches[0]!.count).toBe(2);
      expect(batches[0]!.nextLba).toBe(batches[0]!.lba[1]! + batches[0]!.blocks[1]!);
      expect(await scannedChanged(v.device, { allocationLength: 40 })).toEqual(
        runs.map((r) => [r.lba, r.lba + 10]),
      );
      expect(v.commands.filter(isGls32).length).toBeGreaterThan(5);
      await v.device.close();
    });

    for (const [reportType, status] of [
      ['nonzero', 3],
      ['all', 0],
    ] as const) {
      it(`clips an extent that starts before the requested LBA or runs past the window (report type ${reportType})`, async () => {
        const v = await open(
          ociExample({
            capacity: 1000,
            runs: [{ lba: 90, blocks: 40, state: 'mapped' }],
            quirks: { unclippedStart: true, overrunWindow: true },
          }),
        );
        const extents = await collect(
          v.device.extents({ startLba: 100, windowBlocks: 20, reportType }),
        );
        expect(extents.filter((e) => e.status === status)).toEqual([
          { lba: 100, blocks: 20, status, additional: 0 },
          { lba: 120, blocks: 10, status, additional: 0 },
        ]);
        // Every LBA from the start is reported exactly once.
        let next = 100;
        for (const e of extents.filter(() => reportType === 'all')) {
          expect(e.lba).toBe(next);
          next = e.lba + e.blocks;
        }
        await v.device.close();
      });
    }

    it('exposes RTP=0 and treats "mapped or unknown" as changed when the report type was ignored', async () => {
      const v = await open(ociExample({ quirks: { ignoreReportType: true } }));
      const batches = await collect(v.device.batches({ reportType: 'nonzero' }));
      expect(batches.every((b) => !b.rtp)).toBe(true);
      expect(batches.flatMap((b) => Array.from(b.status))).toEqual([1, 0, 1]);
      expect(await scannedChanged(v.device)).toEqual([[0x60, 0x70]]);
      await v.device.close();
    });

    it('omits uninitialised LBAs under report type 1 and reports them deallocated under 0', async () => {
      const v = await open(ociExample({ capacity: 0x200 }));
      const nonzero = await collect(v.device.extents({ reportType: 'nonzero' }));
      expect(nonzero.map((e) => [e.lba, e.blocks, e.status])).toEqual([
        [0x60, 0x10, 3],
        [0x70, 0x8, 1],
        [0xa0, 0x160, 1],
      ]);
      const all = await collect(v.device.extents({ reportType: 'all' }));
      expect(all.map((e) => [e.lba, e.blocks, e.status])).toEqual([
        [0, 0x60, 1],
        [0x60, 0x10, 0],
        [0x70, 0x190, 1],
      ]);
      await v.device.close();
    });

    it('scans windows concurrently and yields them in order', async () => {
      const runs = mappedEvery(64, 128, 3, 5);
      const v = await open(ociExample({ capacity: 8 * 1024, runs }));
      v.faults.add({ kind: 'latency', ms: 5, on: 'any', probability: 1 });
      const batches = await collect(v.device.batches({ windowBlocks: 512, concurrency: 4 }));
      expect(v.maxInFlight()).toBe(4);
      const starts = batches.map((b) => b.startLba);
      expect(starts).toEqual([...starts].sort((a, b) => a - b));
      expect(await scannedChanged(v.device, { windowBlocks: 512, concurrency: 4 })).toEqual(
        runs.map((r) => [r.lba, r.lba + 3]),
      );
      await v.device.close();
    });
  });

  describe(`fallback and other targets [${target.name}]`, () => {
    it("falls back from 32 to 16 on scsi_debug's 24h/00h (byte 8), once per device", async () => {
      const v = await open(
        ociExample({
          profile: 'scsi_debug',
          capacity: 4096,
          runs: [{ lba: 64, blocks: 16, state: 'mapped' }],
        }),
      );
      expect(await scannedChanged(v.device, { cdb: 'auto' })).toEqual([[64, 80]]);
      expect(v.device.glsForm).toBe(16);
      expect(v.commands.filter(isGls32).length).toBe(1);
      const batches = await collect(v.device.batches({ cdb: 'auto' }));
      expect(v.commands.filter(isGls32).length).toBe(1);
      // One descriptor per reply, RTP=0, condition 0: [0,64) 1, [64,80) 0, [80,4096) 1.
      expect(batches.map((b) => [b.count, b.rtp, b.completionCondition])).toEqual([
        [1, false, 0],
        [1, false, 0],
        [1, false, 0],
      ]);
      await v.device.close();
    });

    it("shows scsi_debug's empty reply to an allocation length < 24 as nothing transferred", async () => {
      // The scanner's smallest allocation length is 24 (ERR_OUT_OF_RANGE below it), so send
      // single commands: GOOD with no data is a short reply, not "no changes".
      const v = await open(ociExample({ profile: 'scsi_debug', capacity: 4096, runs: [] }));
      const full = await v.device.getLbaStatus({ cdb: 16, lba: 0, allocationLength: 24 });
      expect([full.transferred, full.count, full.parameterDataLength]).toEqual([24, 1, 20]);
      const empty = await v.device.getLbaStatus({ cdb: 16, lba: 0, allocationLength: 20 });
      expect([empty.transferred, empty.count]).toEqual([0, 0]);
      await v.device.close();
    });

    it("falls back on tgt's 20h/00h and follows its truncated replies", async () => {
      const runs = mappedEvery(12, 1000, 8, 8);
      const v = await open(ociExample({ profile: 'tgt', capacity: 12_000, runs }));
      // 24 bytes: PARAMETER DATA LENGTH counts every descriptor, one arrives.
      expect(await scannedChanged(v.device, { cdb: 'auto', allocationLength: 24 })).toEqual(
        runs.map((r) => [r.lba, r.lba + 8]),
      );
      // 30 bytes: one and a partial descriptor (sg3_utils' "incomplete trailing" case).
      expect(await scannedChanged(v.device, { cdb: 'auto', allocationLength: 30 })).toEqual(
        runs.map((r) => [r.lba, r.lba + 8]),
      );
      await v.device.close();
    });

    it('does not fall back when cdb: 32 is forced', async () => {
      const v = await open(ociExample({ profile: 'tgt', capacity: 100, runs: [] }));
      const error = await collect(v.device.batches({ cdb: 32 })).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ScsiError);
      expect(error).toMatchObject({ code: 'ERR_SCSI_ILLEGAL_REQUEST', asc: 0x20, ascq: 0 });
      await v.device.close();
    });

    it('reports ILLEGAL REQUEST when an OCI volume is asked for the 16-byte form', async () => {
      const v = await open(ociExample());
      const error = await collect(v.device.batches({ cdb: 16 })).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'ERR_SCSI_ILLEGAL_REQUEST', asc: 0x20, ascq: 0 });
      await v.device.close();
    });
  });

  describe(`retries and errors [${target.name}]`, () => {
    it('retries UNIT ATTENTION, BUSY, TASK SET FULL and NOT READY (becoming ready)', async () => {
      const v = await open(ociExample(), { retry: { delayMs: 1 } });
      for (const kind of ['unit-attention', 'busy', 'task-set-full', 'not-ready'] as const) {
        v.faults.add({ kind, on: 'any' });
      }
      expect(await scannedChanged(v.device)).toEqual([[0x60, 0x70]]);
      expect(v.faults.active).toEqual([]);
      await v.device.close();
    });

    itWhere(!target.absorbsBusy, 'gives up after the retry budget with the ScsiError', async () => {
      const v = await open(ociExample(), { retry: { attempts: 2, delayMs: 1 } });
      await v.device.capacity();
      v.faults.add({ kind: 'busy', count: 2 });
      await expect(collect(v.device.batches())).rejects.toMatchObject({
        name: 'ScsiError',
        code: 'ERR_SCSI_BUSY',
      });
      await v.device.close();
    });

    itWhere(!target.recoversDrops, 'never treats a dropped connection as success', async () => {
      const v = await open(ociExample());
      await v.device.capacity();
      v.faults.add({ kind: 'drop-connection' });
      const error = await collect(v.device.batches()).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TransportError);
      expect(error).toMatchObject({ code: 'ERR_SCSI_TRANSPORT' });
      await v.device.close();
    });

    withInject('never treats a transport error as success', async () => {
      const v = await open(ociExample());
      await v.device.capacity();
      v.inject!({ hostStatus: 0x05 });
      const error = await collect(v.device.batches()).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TransportError);
      expect(error).toMatchObject({ hostStatusName: 'DID_ABORT', code: 'ERR_SCSI_TRANSPORT' });
      await v.device.close();
    });

    for (const kind of ['gls-bad-length', 'gls-overlap'] as const) {
      it(`stops with MalformedReplyError on the simulator's ${kind} fault`, async () => {
        const v = await open(ociExample());
        v.faults.add({ kind });
        const error = await collect(v.device.batches()).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(MalformedReplyError);
        await v.device.close();
      });
    }

    const malformed: Array<[string, number[]]> = [
      ['a reply shorter than a header', [0, 0, 0]],
      ['a length that is not 4 + 16k', [0, 0, 0, 12, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0]],
      [
        'overlapping descriptors',
        [0, 0, 0, 36, 0, 0, 0, 7, ...desc(0x60, 0x10, 3), ...desc(0x68, 0x10, 1)],
      ],
      ['an extent past the capacity', [0, 0, 0, 20, 0, 0, 0, 7, ...desc(0xffff0, 0x20, 3)]],
      ['a zero-length descriptor', [0, 0, 0, 20, 0, 0, 0, 7, ...desc(0x60, 0, 3)]],
      [
        'condition 3 before the end of the medium',
        [0, 0, 0, 20, 0, 0, 0, 7, ...desc(0x0, 0x10, 3)],
      ],
      ['a reserved completion condition', [0, 0, 0, 4, 0, 0, 0, 0x0b]],
    ];
    for (const [name, bytes] of malformed) {
      withInject(`stops with MalformedReplyError on ${name}`, async () => {
        const v = await open(ociExample());
        await v.device.capacity();
        v.inject!({ reply: Uint8Array.from(bytes) });
        const options = name.startsWith('condition 3') ? { windowBlocks: 0x1000 } : {};
        const error = await collect(v.device.batches(options)).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(MalformedReplyError);
        expect((error as Error).message).toMatch(/malformed reply/);
        await v.device.close();
      });
    }

    it('rejects options it does not know and values out of range', async () => {
      const { device } = await open(ociExample());
      await expect(collect(device.batches({ reportype: 1 } as never))).rejects.toMatchObject({
        code: 'ERR_INVALID_ARG_VALUE',
      });
      await expect(collect(device.batches({ windowBlocks: 2 ** 21 + 1 }))).rejects.toMatchObject({
        code: 'ERR_OUT_OF_RANGE',
      });
      await expect(collect(device.batches({ allocationLength: 16 }))).rejects.toMatchObject({
        code: 'ERR_OUT_OF_RANGE',
      });
      await expect(collect(device.changedExtents({ changeBlockSize: 3000 }))).rejects.toMatchObject(
        { code: 'ERR_OUT_OF_RANGE' },
      );
      await device.close();
    });
  });

  describe(`cancellation, progress, resume [${target.name}]`, () => {
    it('stops at an abort with AbortError and sends no new command', async () => {
      const v = await open(ociExample({ capacity: 5000, runs: mappedEvery(50, 100, 10) }));
      const controller = new AbortController();
      let seen = 0;
      const scan = (async () => {
        for await (const _ of v.device.batches({
          allocationLength: 40,
          signal: controller.signal,
        })) {
          if (++seen === 2) controller.abort(new Error('user stop'));
        }
      })();
      await expect(scan).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
      expect(v.commands.filter(isGls32).length).toBe(2);
      await v.device.close();
    });

    it('reports progress up to 1 and resumes from a batch cursor', async () => {
      const volume = ociExample({ capacity: 2000, runs: mappedEvery(20, 100, 10) });
      const v = await open(volume);
      const fractions: number[] = [];
      const batches = await collect(
        v.device.batches({ allocationLength: 40, onProgress: (p) => fractions.push(p.fraction) }),
      );
      expect(fractions.at(-1)).toBe(1);
      expect(fractions).toEqual([...fractions].sort((a, b) => a - b));
      const cursor = batches[3]!.nextLba;
      const resumed = await scannedChanged(v.device, { startLba: cursor, allocationLength: 40 });
      expect(resumed).toEqual(expectedChanged(volume, cursor));
      await v.device.close();
    });
  });

  describe(`changed extents [${target.name}]`, () => {
    it('aligns outward to the change block size and merges neighbours', async () => {
      const runs: Run[] = [
        { lba: 3, blocks: 2, state: 'mapped' },
        { lba: 9, blocks: 1, state: 'mapped' },
        { lba: 40, blocks: 8, state: 'mapped' },
      ];
      const { device } = await open(ociExample({ capacity: 100, runs }));
      const extents = await collect(device.changedExtents({ changeBlockSize: 4096 }));
      expect(extents).toEqual([
        { lba: 0, blocks: 16, offset: 0, length: 8192 },
        { lba: 40, blocks: 8, offset: 40 * 512, length: 4096 },
      ]);
      await device.close();
    });

    it('property: the union of reported changes equals the model for any window, allocation length, profile and concurrency', async () => {
      const runsArb = fc
        .array(
          fc.tuple(
            fc.integer({ min: 0, max: 40 }),
            fc.integer({ min: 1, max: 30 }),
            fc.constantFrom<Run['state']>('mapped', 'deallocated', 'uninitialised'),
          ),
          { maxLength: 25 },
        )
        .map((parts) => {
          let cursor = 0;
          return parts.map(([gap, blocks, state]): Run => {
            const run = { lba: cursor + gap, blocks, state };
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
          fc.constantFrom<DeviceProfile>('oci', 'scsi_debug', 'tgt'),
          fc.boolean(),
          fc.boolean(),
          fc.integer({ min: 1, max: 3 }),
          async (runs, extra, windowBlocks, allocationLength, profile, unclipped, rtp0, conc) => {
            const last = runs.at(-1);
            const capacity = (last ? last.lba + last.blocks : 0) + extra + 1;
            const volume = ociExample({ capacity, runs, profile });
            if (profile === 'oci') {
              volume.quirks = {
                unclippedStart: unclipped,
                overrunWindow: unclipped,
                ignoreReportType: rtp0,
              };
            }
            const { device } = await open(volume);
            try {
              const got = await scannedChanged(device, {
                windowBlocks,
                allocationLength,
                concurrency: conc,
              });
              expect(got).toEqual(expectedChanged(volume));
            } finally {
              await device.close();
            }
          },
        ),
        { numRuns: target.propertyRuns ?? 300 },
      );
    });
  });

  describe(`device lifetime [${target.name}]`, () => {
    it('closes idempotently, refuses commands afterwards and leaks no descriptor', async () => {
      const before = readdirSync('/proc/self/fd').length;
      const v = await open(ociExample());
      await v.device.close();
      await v.device.close();
      expect(v.transportClosed()).toBe(true);
      await expect(v.device.capacity()).rejects.toMatchObject({
        code: 'ERR_LBA_STATUS_DEVICE_CLOSED',
      });
      expect(readdirSync('/proc/self/fd').length).toBe(before);
    });

    withInject('closes the transport when the INQUIRY probe at open fails', async () => {
      let closed: () => boolean = () => false;
      const error = await target
        .open(ociExample(), {}, (v) => {
          closed = v.transportClosed;
          v.inject!({ errno: 25 });
        })
        .catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'ENOTTY', errno: -25 });
      expect((error as { path: string }).path).toMatch(/^memory:/);
      expect(closed()).toBe(true);
    });
  });
}
