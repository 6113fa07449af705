// SPDX-License-Identifier: Apache-2.0
// Property tests: the native CDB builders and parser against small TypeScript models written
// straight from the SBC-4 tables (reference scsi-get-lba-status.md §1, §2, §9 item 4).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { getBinding } from '../../lib/binding.js';

const binding = getBinding();
const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u8 = fc.integer({ min: 0, max: 0xff });

function model16(lba: bigint, alloc: number, rt: number): number[] {
  const cdb = new DataView(new ArrayBuffer(16));
  cdb.setUint8(0, 0x9e);
  cdb.setUint8(1, 0x12);
  cdb.setBigUint64(2, lba);
  cdb.setUint32(10, alloc);
  cdb.setUint8(14, rt);
  return Array.from(new Uint8Array(cdb.buffer));
}

function model32(lba: bigint, scan: number, element: number, alloc: number, rt: number): number[] {
  const cdb = new DataView(new ArrayBuffer(32));
  cdb.setUint8(0, 0x7f);
  cdb.setUint8(7, 0x18);
  cdb.setUint16(8, 0x0012);
  cdb.setUint8(10, rt);
  cdb.setBigUint64(12, lba);
  cdb.setUint32(20, scan);
  cdb.setUint32(24, element);
  cdb.setUint32(28, alloc);
  return Array.from(new Uint8Array(cdb.buffer));
}

function modelParse(data: Uint8Array, received: number) {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const available = Math.min(data.byteLength, received);
  const pdl = available >= 4 ? view.getUint32(0) : 0;
  const valid = Math.min(4 + pdl, available);
  const header = valid >= 8;
  const count = header ? Math.floor((valid - 8) / 16) : 0;
  const lba: number[] = [];
  const blocks: number[] = [];
  const status: number[] = [];
  const additional: number[] = [];
  let unsafeLbaIndex = -1;
  for (let i = 0; i < count; i++) {
    const at = 8 + 16 * i;
    const l = view.getBigUint64(at);
    const b = view.getUint32(at + 8);
    lba.push(Number(l));
    blocks.push(b);
    status.push(data[at + 12]! & 0x0f);
    additional.push(data[at + 13]!);
    if (unsafeLbaIndex < 0 && (l >= 2n ** 53n || l + BigInt(b) > 2n ** 53n)) unsafeLbaIndex = i;
  }
  return {
    parameterDataLength: pdl,
    completionCondition: header ? (data[7]! >> 1) & 7 : 0,
    rtp: header ? data[7]! & 1 : 0,
    validBytes: valid,
    truncated: 4 + pdl > available,
    count,
    trailingBytes: header ? (valid - 8) % 16 : 0,
    unsafeLbaIndex,
    lba,
    blocks,
    status,
    additional,
  };
}

/** A reply: a plausible header for `descriptors` (sometimes lying), random descriptor bytes. */
const replies = fc
  .record({
    descriptors: fc.integer({ min: 0, max: 40 }),
    pdlDelta: fc.oneof(fc.constant(0), fc.integer({ min: -40, max: 40 }), u32),
    byte7: u8,
    seed: fc.uint8Array({ minLength: 16 * 40, maxLength: 16 * 40 }),
    bigLbas: fc.boolean(),
    allocation: fc.integer({ min: 0, max: 8 + 16 * 45 }),
    received: fc.integer({ min: 0, max: 8 + 16 * 50 }),
  })
  .map(({ descriptors, pdlDelta, byte7, seed, bigLbas, allocation, received }) => {
    const bytes = new Uint8Array(allocation);
    const view = new DataView(bytes.buffer);
    const natural = 4 + 16 * descriptors;
    const pdl = pdlDelta > 40 ? pdlDelta : Math.max(0, natural + pdlDelta);
    if (allocation >= 4) view.setUint32(0, pdl >>> 0);
    if (allocation >= 8) bytes[7] = byte7;
    if (allocation > 8) bytes.set(seed.subarray(0, Math.min(seed.length, allocation - 8)), 8);
    if (!bigLbas) {
      // Mostly realistic LBAs: clear the top bytes so values stay below 2^53.
      for (let at = 8; at + 2 <= allocation; at += 16) {
        bytes[at] = 0;
        bytes[at + 1] = 0;
      }
    }
    return { bytes, received };
  });

describe('properties', () => {
  it('GET LBA STATUS (16) CDB equals the model for any field values', () => {
    fc.assert(
      fc.property(u64, u32, u8, (lba, alloc, rt) => {
        expect(Array.from(binding.getLbaStatus16Cdb(lba, alloc, rt))).toEqual(
          model16(lba, alloc, rt),
        );
      }),
    );
  });

  it('GET LBA STATUS (32) CDB equals the model for any field values', () => {
    fc.assert(
      fc.property(u64, u32, u32, u32, u8, (lba, scan, element, alloc, rt) => {
        expect(Array.from(binding.getLbaStatus32Cdb(lba, scan, element, alloc, rt))).toEqual(
          model32(lba, scan, element, alloc, rt),
        );
      }),
    );
  });

  it('parseLbaStatus equals the model for arbitrary replies', () => {
    fc.assert(
      fc.property(replies, ({ bytes, received }) => {
        const parsed = binding.parseLbaStatus(bytes, received);
        const expected = modelParse(bytes, received);
        expect({
          ...parsed,
          lba: Array.from(parsed.lba),
          blocks: Array.from(parsed.blocks),
          status: Array.from(parsed.status),
          additional: Array.from(parsed.additional),
        }).toEqual(expected);
        // Invariants the scanner relies on.
        expect(parsed.validBytes).toBeLessThanOrEqual(Math.min(bytes.byteLength, received));
        if (parsed.validBytes >= 8) {
          expect(8 + 16 * parsed.count + parsed.trailingBytes).toBe(parsed.validBytes);
        }
        if (parsed.unsafeLbaIndex === -1) {
          for (const l of parsed.lba) expect(Number.isSafeInteger(l)).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });
});
