// The scanner through the real kernel against the simulated OCI delta volume: the 32-byte form
// end to end (kernel iscsi_tcp initiator, extended-CDB AHS), completion conditions 1/2/3, and the
// changed data. The oracle: the changed byte ranges the simulator drew (`sim serve
// --dump-changed`, before widening) widened by test/support/oracle.ts's naive change-block
// bitmap, and the documented block-data rule written again there — nothing from lib/sim.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { openDevice } from '../../../lib/index.js';
import {
  type ByteRange,
  documentedBlockData,
  expectedChangedRuns,
  mappedRuns,
} from '../../support/oracle.js';
import { scenario, testUnitReady } from '../support/index.js';

const s = scenario();
const changeBlockSize = Number(process.env.LBA_STATUS_TEST_SIM_CHANGE_BLOCK_SIZE);
const changedBytes = JSON.parse(
  readFileSync(process.env.LBA_STATUS_TEST_SIM_MAP!, 'utf8'),
) as ByteRange[];
const dataSeed = Number(process.env.LBA_STATUS_SIM_SEED ?? 20240601); // scenarios/sim.sh's seed

const expected = expectedChangedRuns(changedBytes, {
  sizeBytes: s.capacityBlocks * s.blockSize,
  blockSize: s.blockSize,
  changeBlockSize,
});

async function changedRanges(options = {}) {
  await using device = await openDevice(s.sg);
  const ranges: Array<[number, number]> = [];
  const conditions = new Set<number>();
  let form: number | undefined;
  for await (const batch of device.batches({ cdb: 'auto', ...options })) {
    conditions.add(batch.completionCondition);
    form = batch.cdb;
    for (let i = 0; i < batch.count; i++) {
      if (batch.status[i] !== 3) continue;
      const start = batch.lba[i]!;
      const end = start + batch.blocks[i]!;
      const last = ranges[ranges.length - 1];
      if (last && last[1] === start) last[1] = end;
      else ranges.push([start, end]);
    }
  }
  return { ranges, conditions, form };
}

describe(`scanner against the simulated OCI delta volume (${s.name})`, () => {
  it('uses the 32-byte form through the kernel and returns exactly the changed set (1 GiB windows)', async () => {
    await testUnitReady(s.sg);
    const { ranges, conditions, form } = await changedRanges();
    expect(form).toBe(32);
    expect(ranges).toEqual(expected);
    expect(conditions).toContain(3);
    expect(expected.length).toBeGreaterThan(50);
  });

  it('follows completion conditions 1, 2 and 3 (small windows, small allocation lengths)', async () => {
    const small = await changedRanges({
      windowBlocks: Math.ceil(s.capacityBlocks / 16),
      allocationLength: 8 + 16 * 3,
    });
    expect(small.ranges).toEqual(expected);
    expect([...small.conditions].sort()).toEqual([1, 2, 3]);
    const concurrent = await changedRanges({
      windowBlocks: Math.ceil(s.capacityBlocks / 10),
      concurrency: 4,
      allocationLength: 40,
    });
    expect(concurrent.ranges).toEqual(expected);
  });

  it('CLI: lba-status scan --cdb auto prints the changed set', async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [join(process.cwd(), 'dist/cli.js'), 'scan', s.block, '--cdb', 'auto', '--changed-only'],
      { maxBuffer: 64 << 20 },
    );
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { lba: number; blocks: number; status: number });
    expect(mappedRuns(lines)).toEqual(expected);
  });

  it("reads the changed data: every chunk holds the simulator's block data", async () => {
    await using device = await openDevice(s.block);
    let bytes = 0;
    for await (const chunk of device.readChanged({ changeBlockSize, concurrency: 4 })) {
      for (let offset = 0; offset < chunk.length; offset += s.blockSize * 97) {
        const lba = (chunk.offset + offset) / s.blockSize;
        const want = documentedBlockData(lba, s.blockSize, dataSeed);
        expect(
          Buffer.from(chunk.data.subarray(offset, offset + s.blockSize)).equals(Buffer.from(want)),
          `LBA ${lba}`,
        ).toBe(true);
      }
      bytes += chunk.length;
    }
    expect(bytes).toBe(expected.reduce((n, [a, b]) => n + (b - a) * s.blockSize, 0));
  });
});

describe(`examples/ run as documented (${s.name})`, () => {
  it('scan-device.mjs prints the changed set; export-device.mjs exports and verifies it', async () => {
    const run = promisify(execFile);
    const scan = await run(
      process.execPath,
      [join(process.cwd(), 'examples/scan-device.mjs'), s.block, String(changeBlockSize)],
      { maxBuffer: 64 << 20 },
    );
    const extents = scan.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { lba: number; blocks: number });
    expect(mappedRuns(extents.map((e) => ({ ...e, status: 3 })))).toEqual(expected);
    const dir = join(process.env.GUEST_OUT ?? '/tmp', `example-export-${s.name}`);
    const exported = await run(process.execPath, [
      join(process.cwd(), 'examples/export-device.mjs'),
      s.sg,
      dir,
      String(changeBlockSize),
    ]);
    const summary = JSON.parse(exported.stdout);
    expect(summary).toMatchObject({ complete: true });
    expect(summary.bytes).toBe(expected.reduce((n, [a, b]) => n + (b - a) * s.blockSize, 0));
    expect(summary.verified).toBe(summary.bytes);
  });
});
