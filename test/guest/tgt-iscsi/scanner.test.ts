// The scanner on a real kernel over iSCSI: tgt answers GET LBA STATUS(16) with every run to the
// end of the LUN (PARAMETER DATA LENGTH counts them all, the reply is cut to the allocation
// length) and refuses the 32-byte form with 20h/00h.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDevice, ScsiError } from '../../../lib/index.js';
import { agreeWithOracle, merged, patternRanges, scannedChanged } from '../scanner-support.js';
import { scenario, testUnitReady, unmap, writePattern } from '../support/index.js';

const s = scenario();
const ranges = patternRanges(s.capacityBlocks);

beforeAll(async () => {
  await testUnitReady(s.sg);
  await writePattern(s.block, s.blockSize, ranges);
});
afterAll(async () => {
  await unmap(s.sg, 0, s.capacityBlocks).catch(() => {});
});

describe(`scanner on tgt over open-iscsi (${s.name})`, () => {
  it('refuses the 32-byte form with INVALID COMMAND OPERATION CODE', async () => {
    await using device = await openDevice(s.sg);
    const error = await device
      .getLbaStatus({ cdb: 32, lba: 0, scanLength: 8 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ScsiError);
    expect(error).toMatchObject({ asc: 0x20, ascq: 0 });
  });

  it('returns several descriptors per reply with a large allocation length', async () => {
    await using device = await openDevice(s.sg);
    const reply = await device.getLbaStatus({ cdb: 16, lba: 0, allocationLength: 8 + 16 * 64 });
    expect(reply.count).toBeGreaterThanOrEqual(2 * ranges.length - 1);
    expect(reply.truncated).toBe(false);
  });

  for (const allocationLength of [24, 40, 8 + 16 * 5, 32768]) {
    it(`auto falls back to 16 and reports exactly the written pattern (allocation length ${allocationLength})`, async () => {
      await using device = await openDevice(s.sg);
      expect(await scannedChanged(device, { cdb: 'auto', allocationLength })).toEqual(
        merged(ranges),
      );
      expect(device.glsForm).toBe(16);
    });
  }

  it('agrees with sg_get_lba_status reply by reply (cut replies: small allocation length)', async () => {
    await using device = await openDevice(s.sg);
    expect(await agreeWithOracle(device, s.sg, 8 + 16 * 3)).toBeGreaterThan(2);
  });

  it('follows an UNMAP (hole punched in the backing file)', async () => {
    const removed = ranges[3]!;
    await unmap(s.sg, removed.lba, removed.blocks);
    try {
      await using device = await openDevice(s.block);
      expect(await scannedChanged(device)).toEqual(merged(ranges.filter((r) => r !== removed)));
    } finally {
      await writePattern(s.block, s.blockSize, [removed]);
    }
  });
});
