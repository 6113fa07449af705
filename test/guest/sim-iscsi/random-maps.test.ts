// Issue 3's main proof: `lba-status scan --cdb auto` through the guest kernel's iSCSI initiator
// returns exactly the simulator's changed set for 100+ random maps (512- and 4096-byte blocks,
// volumes up to 16 TiB, windows and allocation lengths chosen to hit completion conditions 1, 2
// and 3), and every fault kind is either survived with the exact result or a typed error.
// The oracle is independent of lib/sim: each map is the test's own list of changed byte ranges
// (any byte offset, close together or overlapping, some changed to zeros) — or, for every fourth
// map, the byte ranges the simulator drew (`sim.changedBytes`, before widening) — widened by the
// naive change-block bitmap of test/support/oracle.ts.
// The simulators run in this test process: SG_IO runs on the addon's own threads, so the event
// loop keeps serving the target while the kernel waits for it.
import { describe, expect, it } from 'vitest';
import { MalformedReplyError, openDevice, ScsiError, TransportError } from '../../../lib/index.js';
import { type FaultSpec, startSimulator } from '../../../lib/sim.js';
import {
  type ByteRange,
  expectedChangedRuns,
  randomRanges,
  testPrng,
} from '../../support/oracle.js';
import { attach, mappedRanges } from '../sim/attach.js';

interface Case {
  blockSize: 512 | 4096;
  sizeBytes: number;
  changeBlockSize: number;
  random: number;
  seed: number;
  /** Longest range in bytes. */
  maxLength: number;
  /** The simulator draws the ranges (`changed: { random, seed }`) instead of the test. */
  simulatorDraws: boolean;
  windowBlocks: number;
  allocationLength: number;
  concurrency: number;
}

function cases(count: number): Case[] {
  const next = testPrng(42);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;
  const out: Case[] = [];
  for (let i = 0; i < count; i++) {
    const blockSize = pick([512, 4096] as const);
    const huge = i === 0 || i === 1; // two 16 TiB volumes; the rest up to 8 GiB
    const sizeBytes = huge ? 16 * 2 ** 40 : pick([16, 64, 256, 1024, 3000, 8192]) * 2 ** 20;
    const changeBlockSize = pick([4096, 65536, 1 << 20].filter((c) => c >= blockSize));
    const blocks = sizeBytes / blockSize;
    const maxWindow = 2 ** 30 / blockSize;
    // Windows: 1 GiB (condition 3 at the end), a fraction of the volume (condition 2), or small;
    // allocation lengths: large, or a few descriptors (condition 1).
    const windowBlocks = huge
      ? maxWindow
      : Math.min(
          maxWindow,
          pick([maxWindow, Math.ceil(blocks / 7), 1 + Math.floor(next() * 5000)]),
        );
    out.push({
      blockSize,
      sizeBytes,
      changeBlockSize,
      random: Math.min(
        huge ? 2000 : 1 + Math.floor(next() * 400),
        Math.floor(sizeBytes / changeBlockSize / 2),
      ),
      seed: 1000 + i,
      maxLength: Math.ceil(next() * 16 * changeBlockSize),
      simulatorDraws: i % 4 === 3,
      windowBlocks,
      allocationLength: pick([24, 40, 8 + 16 * 7, 32768]),
      concurrency: huge ? 8 : pick([1, 2, 4]),
    });
  }
  return out;
}

/**
 * The test's own changed byte ranges for a case: uniform ones, plus for each a neighbour within
 * two change blocks after it (widening must merge or keep them apart exactly), a quarter changed
 * to zeros.
 */
function ownRanges(c: Case): ByteRange[] {
  const base = randomRanges(c.seed, Math.ceil(c.random / 2), c.sizeBytes, c.maxLength, 0.25);
  const next = testPrng(c.seed + 77);
  const near = base.map((r) => {
    const offset = Math.min(
      c.sizeBytes - 1,
      r.offset + r.length + Math.floor(next() * 2 * c.changeBlockSize),
    );
    const length = Math.min(c.sizeBytes - offset, 1 + Math.floor(next() * c.changeBlockSize));
    return { offset, length };
  });
  return [...base, ...near];
}

async function scanChanged(sg: string, options: object) {
  await using device = await openDevice(sg, { queueDepth: 8 });
  const ranges: Array<[number, number, number]> = [];
  const conditions = new Set<number>();
  let form: number | undefined;
  for await (const b of device.batches({ cdb: 'auto', ...options })) {
    conditions.add(b.completionCondition);
    form = b.cdb;
    for (let i = 0; i < b.count; i++) ranges.push([b.lba[i]!, b.blocks[i]!, b.status[i]!]);
  }
  return {
    changed: mappedRanges(ranges.map(([lba, blocks, status]) => ({ lba, blocks, status }))),
    conditions,
    form,
  };
}

describe('scan of 100+ random simulated delta volumes through the kernel initiator', () => {
  it('returns exactly the served changed set for every map', { timeout: 1_500_000 }, async () => {
    const seen = new Set<number>();
    const all = cases(Number(process.env.LBA_STATUS_TEST_MAPS ?? 104));
    for (const [index, c] of all.entries()) {
      const own = c.simulatorDraws ? undefined : ownRanges(c);
      await using sim = await startSimulator({
        sizeBytes: c.sizeBytes,
        blockSize: c.blockSize,
        changeBlockSize: c.changeBlockSize,
        changed: own ?? { random: c.random, seed: c.seed },
        iqn: `iqn.2024-01.lba-status:map-${index}`,
      });
      const bytes = own ?? sim.changedBytes;
      if (c.simulatorDraws) expect(bytes, `map ${index}`).toHaveLength(c.random);
      const expected = expectedChangedRuns(bytes, c);
      const lun = await attach(sim);
      try {
        const { windowBlocks, allocationLength, concurrency } = c;
        const { changed, conditions, form } = await scanChanged(lun.sg, {
          windowBlocks,
          allocationLength,
          concurrency,
        });
        expect(form, `map ${index}`).toBe(32);
        expect(changed, `map ${index}: ${JSON.stringify(c)}`).toEqual(expected);
        expect(expected.length, `map ${index}`).toBeGreaterThan(0);
        for (const condition of conditions) seen.add(condition);
      } finally {
        await lun.detach();
      }
    }
    expect([...seen].sort()).toEqual([1, 2, 3]);
  });
});

describe('faults through the kernel: retried and exact, or a typed error', () => {
  const ranges = randomRanges(9, 200, 512 * 2 ** 20, 40_000, 0.1);
  const base = {
    sizeBytes: 512 * 2 ** 20,
    blockSize: 512 as const,
    changeBlockSize: 4096,
    changed: ranges,
  };
  const expected = expectedChangedRuns(ranges, base);
  const options = { windowBlocks: 2 ** 18, allocationLength: 8 + 16 * 20 };

  const transient: FaultSpec['kind'][] = [
    'busy',
    'unit-attention',
    'not-ready',
    'task-set-full',
    'latency',
  ];
  for (const kind of transient) {
    it(`${kind}: the scan is retried and exact`, async () => {
      await using sim = await startSimulator({
        ...base,
        iqn: `iqn.2024-01.lba-status:fault-${kind}`,
      });
      const lun = await attach(sim);
      try {
        sim.faults.add({ kind, count: 3, ms: 50 });
        const { changed } = await scanChanged(lun.sg, options);
        expect(changed).toEqual(expected);
      } finally {
        await lun.detach();
      }
    });
  }

  for (const kind of ['gls-bad-length', 'gls-overlap'] as const) {
    it(`${kind}: MalformedReplyError, never a shorter result`, async () => {
      await using sim = await startSimulator({
        ...base,
        iqn: `iqn.2024-01.lba-status:fault-${kind}`,
      });
      const lun = await attach(sim);
      try {
        sim.faults.add({ kind, count: 1 });
        await expect(scanChanged(lun.sg, options)).rejects.toBeInstanceOf(MalformedReplyError);
      } finally {
        await lun.detach();
      }
    });
  }

  it('drop-connection: the kernel recovers the session and the scan is exact, or it fails typed', {
    timeout: 180_000,
  }, async () => {
    await using sim = await startSimulator({ ...base, iqn: 'iqn.2024-01.lba-status:fault-drop' });
    const lun = await attach(sim);
    try {
      sim.faults.add({ kind: 'drop-connection', count: 1 });
      const outcome = await scanChanged(lun.sg, { ...options, timeoutMs: 60_000 }).catch(
        (e: unknown) => e,
      );
      if (outcome instanceof Error) {
        expect(
          [TransportError, ScsiError].some((type) => outcome instanceof type) || 'errno' in outcome,
        ).toBe(true);
      } else {
        expect((outcome as { changed: unknown }).changed).toEqual(expected);
      }
    } finally {
      await lun.detach();
    }
  });
});
