// Shared pieces of the scanner's guest tests (scsi_debug and tgt): a pattern of written ranges
// and how to compare the library with sg_get_lba_status command by command.
import { afterAll, beforeAll, expect } from 'vitest';
import type { LbaStatusDevice } from '../../lib/index.js';
import {
  type BlockRange,
  type Scenario,
  sgGetLbaStatus,
  testUnitReady,
  unmap,
  writePattern,
} from './support/index.js';

/** The written pattern, one definition for host and guest tests (test/shared/patterns.ts). */
export { patternRanges } from '../shared/patterns.js';

/**
 * scsi_debug: registers hooks that write `ranges` onto a fully unmapped disk before the file's
 * tests and unmap the whole disk after them.
 */
export function useWrittenPattern(s: Scenario, ranges: readonly BlockRange[]): void {
  beforeAll(async () => {
    await testUnitReady(s.sg);
    await unmap(s.sg, 0, s.capacityBlocks);
    await writePattern(s.block, s.blockSize, ranges);
  });
  afterAll(async () => {
    await unmap(s.sg, 0, s.capacityBlocks);
  });
}

/** Merges touching ranges into [start, end) pairs. */
export function merged(ranges: readonly BlockRange[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const r of [...ranges].sort((a, b) => a.lba - b.lba)) {
    const last = out[out.length - 1];
    if (last && last[1] >= r.lba) last[1] = Math.max(last[1], r.lba + r.blocks);
    else out.push([r.lba, r.lba + r.blocks]);
  }
  return out;
}

/** Changed ranges as the library reports them, as [start, end) pairs. */
export async function scannedChanged(
  device: LbaStatusDevice,
  options: Parameters<LbaStatusDevice['changedExtents']>[0] = {},
): Promise<Array<[number, number]>> {
  const out: Array<[number, number]> = [];
  for await (const e of device.changedExtents(options)) out.push([e.lba, e.lba + e.blocks]);
  return out;
}

/**
 * Walks the device command by command with both the library and sg_get_lba_status (16-byte form)
 * from LBA 0, and asserts that every reply agrees. Returns the number of commands compared.
 */
export async function agreeWithOracle(
  device: LbaStatusDevice,
  sg: string,
  allocationLength: number,
): Promise<number> {
  const { blocks: capacity } = await device.capacity();
  let lba = 0;
  let commands = 0;
  while (lba < capacity) {
    const ours = await device.getLbaStatus({ cdb: 16, lba, allocationLength });
    const oracle = await sgGetLbaStatus(sg, { cdb: 16, lba, maxlen: allocationLength });
    const mine = Array.from({ length: ours.count }, (_, i) => ({
      lba: BigInt(ours.lba[i]!),
      blocks: ours.blocks[i]!,
      status: ours.status[i]!,
      additional: ours.additional[i]!,
    }));
    expect(mine, `descriptors at LBA ${lba}`).toEqual(oracle.descriptors);
    if (oracle.completionCondition !== undefined) {
      expect(ours.completionCondition).toBe(oracle.completionCondition);
      expect(ours.rtp).toBe(oracle.rtp);
    }
    commands++;
    const last = mine[mine.length - 1];
    if (!last) break;
    lba = Number(last.lba) + last.blocks;
  }
  return commands;
}
