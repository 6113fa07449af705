// SPDX-License-Identifier: Apache-2.0
// GET LBA STATUS (16/32) CDB bytes from the real addon, against the sg3_utils vectors
// (reference scsi-get-lba-status.md §1.1, §1.2) and edge values.
import { describe, expect, it } from 'vitest';
import { getBinding } from '../../lib/binding.js';
import { toHex } from './helpers.js';

const binding = getBinding();
const U64_MAX = 2n ** 64n - 1n;

describe('getLbaStatus16Cdb', () => {
  it('matches sg_get_lba_status -S -l 0x60 -m 32768 -t 1', () => {
    const cdb = binding.getLbaStatus16Cdb(0x60n, 32768, 1);
    expect(cdb).toBeInstanceOf(Uint8Array);
    expect(toHex(cdb)).toBe('9e 12 00 00 00 00 00 00 00 60 00 00 80 00 01 00');
  });

  it('encodes the largest LBA, allocation length and report type', () => {
    expect(toHex(binding.getLbaStatus16Cdb(U64_MAX, 0xffffffff, 0xff))).toBe(
      '9e 12 ff ff ff ff ff ff ff ff ff ff ff ff ff 00',
    );
  });

  it('is big-endian in every field', () => {
    expect(toHex(binding.getLbaStatus16Cdb(0x0102030405060708n, 0x090a0b0c, 0x10))).toBe(
      '9e 12 01 02 03 04 05 06 07 08 09 0a 0b 0c 10 00',
    );
  });

  it('encodes zeros', () => {
    expect(toHex(binding.getLbaStatus16Cdb(0n, 0, 0))).toBe(
      '9e 12 00 00 00 00 00 00 00 00 00 00 00 00 00 00',
    );
  });

  it('returns a fresh array each call', () => {
    const a = binding.getLbaStatus16Cdb(1n, 24, 1);
    const b = binding.getLbaStatus16Cdb(1n, 24, 1);
    expect(a).not.toBe(b);
    expect(a.buffer).not.toBe(b.buffer);
  });

  it('rejects a number LBA with a TypeError', () => {
    expect(() => binding.getLbaStatus16Cdb(96 as unknown as bigint, 32768, 1)).toThrow(TypeError);
    expect(() => binding.getLbaStatus16Cdb(96 as unknown as bigint, 32768, 1)).toThrow(
      /"lba" argument must be of type bigint/,
    );
  });

  it('rejects LBAs outside 0..2^64-1 with a RangeError', () => {
    for (const lba of [-1n, 2n ** 64n, -(2n ** 64n), 2n ** 100n]) {
      expect(() => binding.getLbaStatus16Cdb(lba, 24, 1)).toThrow(RangeError);
    }
  });

  it('rejects bad allocation lengths and report types', () => {
    const cases: Array<[unknown, unknown, ErrorConstructor]> = [
      [2 ** 32, 1, RangeError],
      [-1, 1, RangeError],
      [1.5, 1, RangeError],
      [Number.NaN, 1, RangeError],
      ['24', 1, TypeError],
      [24, 256, RangeError],
      [24, -1, RangeError],
      [24, null, TypeError],
    ];
    for (const [alloc, rt, type] of cases) {
      expect(() => binding.getLbaStatus16Cdb(0n, alloc as number, rt as number)).toThrow(type);
    }
    try {
      binding.getLbaStatus16Cdb(0n, 2 ** 32, 1);
      expect.unreachable();
    } catch (error) {
      expect((error as NodeJS.ErrnoException).code).toBe('ERR_OUT_OF_RANGE');
      expect((error as Error).message).toMatch(/allocationLength/);
    }
  });
});

describe('getLbaStatus32Cdb', () => {
  it("matches OCI's sg_get_lba_status -T -l 0 -m 32768 -s 2097152 -t 1", () => {
    const cdb = binding.getLbaStatus32Cdb(0n, 2097152, 0, 32768, 1);
    expect(cdb).toBeInstanceOf(Uint8Array);
    expect(toHex(cdb)).toBe(
      '7f 00 00 00 00 00 00 18 00 12 01 00 00 00 00 00 00 00 00 00 00 20 00 00 00 00 00 00 00 00 80 00',
    );
  });

  it('encodes the largest values in every field', () => {
    expect(
      toHex(binding.getLbaStatus32Cdb(U64_MAX, 0xffffffff, 0xffffffff, 0xffffffff, 0xff)),
    ).toBe(
      '7f 00 00 00 00 00 00 18 00 12 ff 00 ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff',
    );
  });

  it('puts each field at its own offset, big-endian', () => {
    const cdb = binding.getLbaStatus32Cdb(
      0x0102030405060708n,
      0x11121314,
      0x21222324,
      0x31323334,
      3,
    );
    expect(toHex(cdb)).toBe(
      '7f 00 00 00 00 00 00 18 00 12 03 00 01 02 03 04 05 06 07 08 11 12 13 14 21 22 23 24 31 32 33 34',
    );
  });

  it('rejects misuse with TypeError/RangeError', () => {
    expect(() => binding.getLbaStatus32Cdb(0 as unknown as bigint, 0, 0, 24, 1)).toThrow(TypeError);
    expect(() => binding.getLbaStatus32Cdb(2n ** 64n, 0, 0, 24, 1)).toThrow(RangeError);
    expect(() => binding.getLbaStatus32Cdb(0n, 2 ** 32, 0, 24, 1)).toThrow(RangeError);
    expect(() => binding.getLbaStatus32Cdb(0n, 0, -1, 24, 1)).toThrow(RangeError);
    expect(() => binding.getLbaStatus32Cdb(0n, 0, 0, 24, 300)).toThrow(RangeError);
    expect(() =>
      (binding.getLbaStatus32Cdb as (...args: unknown[]) => Uint8Array)(0n, 0, 0, 24),
    ).toThrow(TypeError);
  });
});
