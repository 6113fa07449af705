// Smoke test of the guest harness itself, with sg3_utils only (no addon): runs in every guest
// scenario (scripts/guest/run-guest-tests.mjs) and proves the device, the helpers and the oracle.
import { stat } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import {
  CommandError,
  parseBrief,
  run,
  scenario,
  sgGetLbaStatus,
  testUnitReady,
  unmap,
  writePattern,
} from './support/index.js';

const s = scenario();
// 16 blocks at LBA 3072, aligned to scsi_debug's granules (1 or 8) and to tgt's 4 KiB holes.
// This file owns LBAs 3008-3151 (inside every scenario's capacity, 4096 blocks at 4 KiB); other
// guest tests leave them alone, and this one deallocates what it writes.
const range = { lba: 3072, blocks: 16 };
const maxlen = 8 + 16 * 16;

describe(`guest harness (${s.name})`, () => {
  it('exposes the sg node and the block device', async () => {
    expect((await stat(s.sg)).isCharacterDevice()).toBe(true);
    expect((await stat(s.block)).isBlockDevice()).toBe(true);
    expect([512, 4096]).toContain(s.blockSize);
    expect(s.capacityBlocks).toBeGreaterThan(range.lba + range.blocks);
    const inq = await run('sg_inq', [s.sg]);
    expect(inq.exitCode).toBe(0);
    expect(inq.stdout).toMatch(
      s.target === 'tgt' ? /Vendor identification: IET/ : /Product identification: scsi_debug/,
    );
  });

  it('answers TEST UNIT READY (after at most one UNIT ATTENTION)', async () => {
    expect(await testUnitReady(s.sg)).toBe(0);
  });

  it('maps written blocks and deallocates unmapped ones (oracle: sg_get_lba_status -S)', async () => {
    await writePattern(s.block, s.blockSize, [range]);
    const mapped = await sgGetLbaStatus(s.sg, { cdb: 16, lba: range.lba, maxlen });
    expect(mapped.completionCondition).toBe(0);
    expect(mapped.rtp).toBe(0);
    const first = mapped.descriptors[0];
    expect(first).toMatchObject({ lba: BigInt(range.lba), status: 0 });
    expect(first?.blocks).toBeGreaterThanOrEqual(range.blocks);

    await unmap(s.sg, range.lba, range.blocks);
    const gone = await sgGetLbaStatus(s.sg, { cdb: 16, lba: range.lba, maxlen });
    expect(gone.descriptors[0]).toMatchObject({ lba: BigInt(range.lba), status: 1 });
  });

  it(`${s.target}: its own GET LBA STATUS behaviour (sg3_utils' exit codes for the 32-byte form)`, async () => {
    await writePattern(s.block, s.blockSize, [range]);
    if (s.target === 'scsi_debug') {
      // One descriptor per reply; the 32-byte form is an invalid field (exit 5).
      const r = await sgGetLbaStatus(s.sg, { cdb: 16, lba: range.lba, maxlen });
      expect(r.descriptors).toEqual([
        { lba: BigInt(range.lba), blocks: range.blocks, status: 0, additional: 0 },
      ]);
      await expect(sgGetLbaStatus(s.sg, { cdb: 32, lba: 0, maxlen })).rejects.toMatchObject({
        exitCode: 5,
      });
    } else {
      // tgt: several descriptors per reply; the 32-byte form is an invalid opcode (exit 9).
      const r = await sgGetLbaStatus(s.sg, { cdb: 16, lba: range.lba - 64, maxlen });
      expect(r.descriptors.length).toBeGreaterThanOrEqual(3);
      expect(r.descriptors.slice(0, 2)).toEqual([
        { lba: BigInt(range.lba - 64), blocks: 64, status: 1, additional: 0 },
        { lba: BigInt(range.lba), blocks: range.blocks, status: 0, additional: 0 },
      ]);
      const err = await sgGetLbaStatus(s.sg, { cdb: 32, lba: 0, maxlen }).catch((e) => e);
      expect(err).toBeInstanceOf(CommandError);
      expect(err.exitCode).toBe(9);
    }
    await unmap(s.sg, range.lba, range.blocks);
  });

  it('parses brief output of sg3_utils 1.46', () => {
    const r = parseBrief(
      'Completion condition=3\nRTP=1\n0x0000000000000060  0x10  3  0\n0x00000000000000a0  0xfff60  1  0\n',
    );
    expect(r).toMatchObject({ completionCondition: 3, rtp: 1 });
    expect(r.descriptors).toEqual([
      { lba: 0x60n, blocks: 16, status: 3, additional: 0 },
      { lba: 0xa0n, blocks: 0xfff60, status: 1, additional: 0 },
    ]);
    expect(parseBrief('No complete LBA status descriptors available\n').descriptors).toEqual([]);
  });
});
