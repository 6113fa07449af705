// SPDX-License-Identifier: Apache-2.0
// GET LBA STATUS parameter-data parser, against the canned vectors of
// reference scsi-get-lba-status.md §10 and the edge cases of §9 item 4.
import { describe, expect, it } from 'vitest';
import { getBinding, type LbaStatusColumns } from '../../lib/binding.js';
import { hex, replyBuffer } from './helpers.js';

const binding = getBinding();

/** §10.1: OCI documented example, report type 1, 56 bytes. */
const OCI_EXAMPLE = hex(`
  00 00 00 34 00 00 00 07
  00 00 00 00 00 00 00 60  00 00 00 10  03 00 00 00
  00 00 00 00 00 00 00 70  00 00 00 08  01 00 00 00
  00 00 00 00 00 00 00 a0  00 0f ff 60  01 00 00 00
`);

/** §10.3: header claims 3 descriptors, 36 bytes really arrived. */
const TRUNCATED_TRANSFER = hex(`
  00 00 00 34 00 00 00 03
  00 00 00 00 00 00 00 60  00 00 00 10  03 00 00 00
  00 00 00 00 00 00 00 70  00 00 00 08
`);

/** §10.4: sg3_utils' inhex/get_lba_status.hex (byte 12 carries LBA ACCESSIBILITY in 7:4). */
const SG3_UTILS_VECTOR = hex(`
  00 00 00 34 00 00 00 06
  00 00 00 00 00 00 00 00  11 22 33 00  00 00 00 00
  00 00 00 00 11 22 33 00  00 00 00 44  31 01 00 00
  00 00 00 00 11 22 33 44  00 00 00 33  11 01 00 00
`);

function columns(parsed: LbaStatusColumns) {
  return {
    lba: Array.from(parsed.lba),
    blocks: Array.from(parsed.blocks),
    status: Array.from(parsed.status),
    additional: Array.from(parsed.additional),
  };
}

function header(parsed: LbaStatusColumns) {
  const { lba, blocks, status, additional, ...rest } = parsed;
  return rest;
}

/** Builds a reply with the given descriptors ([lba, blocks, byte12, byte13]). */
function reply(
  descriptors: Array<[bigint, number, number, number]>,
  byte7 = 0,
  parameterDataLength = 4 + 16 * descriptors.length,
): Uint8Array {
  const out = new Uint8Array(8 + 16 * descriptors.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, parameterDataLength);
  out[7] = byte7;
  descriptors.forEach(([lba, blocks, b12, b13], i) => {
    view.setBigUint64(8 + 16 * i, lba);
    view.setUint32(16 + 16 * i, blocks);
    out[20 + 16 * i] = b12;
    out[21 + 16 * i] = b13;
  });
  return out;
}

describe('parseLbaStatus', () => {
  it('§10.1 OCI example: 3 descriptors, completion condition 3, RTP 1', () => {
    const parsed = binding.parseLbaStatus(OCI_EXAMPLE, OCI_EXAMPLE.byteLength);
    expect(header(parsed)).toEqual({
      parameterDataLength: 0x34,
      completionCondition: 3,
      rtp: 1,
      validBytes: 56,
      truncated: false,
      count: 3,
      trailingBytes: 0,
      unsafeLbaIndex: -1,
    });
    expect(columns(parsed)).toEqual({
      lba: [0x60, 0x70, 0xa0],
      blocks: [0x10, 0x8, 0xfff60],
      status: [3, 1, 1],
      additional: [0, 0, 0],
    });
    expect(parsed.lba).toBeInstanceOf(Float64Array);
    expect(parsed.blocks).toBeInstanceOf(Uint32Array);
    expect(parsed.status).toBeInstanceOf(Uint8Array);
    expect(parsed.additional).toBeInstanceOf(Uint8Array);
    expect(parsed.lba.length).toBe(3);
  });

  it('§10.1 in a 32 KiB allocation: the header length bounds the valid bytes', () => {
    const parsed = binding.parseLbaStatus(replyBuffer(OCI_EXAMPLE, 32768), 56);
    expect(parsed.validBytes).toBe(56);
    expect(parsed.count).toBe(3);
    expect(parsed.truncated).toBe(false);
  });

  it('§10.1 trusts the header, not resid, when the device reports the whole buffer', () => {
    // resid 0 on a 32 KiB buffer: received = allocation; still only 56 bytes are valid.
    const parsed = binding.parseLbaStatus(replyBuffer(OCI_EXAMPLE, 32768), 32768);
    expect(parsed.validBytes).toBe(56);
    expect(parsed.count).toBe(3);
    expect(parsed.truncated).toBe(false);
  });

  it('§10.1 cut by the allocation length (-m 24 and -m 40)', () => {
    const at24 = binding.parseLbaStatus(replyBuffer(OCI_EXAMPLE, 24), 24);
    expect(header(at24)).toMatchObject({ validBytes: 24, truncated: true, count: 1 });
    expect(at24.trailingBytes).toBe(0);
    expect(columns(at24).lba).toEqual([0x60]);

    const at40 = binding.parseLbaStatus(replyBuffer(OCI_EXAMPLE, 40), 40);
    expect(header(at40)).toMatchObject({ validBytes: 40, truncated: true, count: 2 });
    expect(columns(at40).blocks).toEqual([0x10, 0x8]);
    expect(at40.completionCondition).toBe(3);
    expect(at40.rtp).toBe(1);
  });

  it('§10.2 zero-descriptor reply: no extents, completion condition 2, RTP 1', () => {
    const parsed = binding.parseLbaStatus(hex('00 00 00 04 00 00 00 05'), 8);
    expect(header(parsed)).toEqual({
      parameterDataLength: 4,
      completionCondition: 2,
      rtp: 1,
      validBytes: 8,
      truncated: false,
      count: 0,
      trailingBytes: 0,
      unsafeLbaIndex: -1,
    });
    expect(parsed.lba.length).toBe(0);
    expect(parsed.blocks.length).toBe(0);
    expect(parsed.status.length).toBe(0);
    expect(parsed.additional.length).toBe(0);
  });

  it('§10.3 truncated transfer (received 36 of a 32 KiB buffer): one descriptor, 12 trailing', () => {
    const parsed = binding.parseLbaStatus(replyBuffer(TRUNCATED_TRANSFER, 32768), 36);
    expect(header(parsed)).toEqual({
      parameterDataLength: 0x34,
      completionCondition: 1,
      rtp: 1,
      validBytes: 36,
      truncated: true,
      count: 1,
      trailingBytes: 12,
      unsafeLbaIndex: -1,
    });
    expect(columns(parsed)).toEqual({ lba: [0x60], blocks: [0x10], status: [3], additional: [0] });
  });

  it('tgt style: PARAMETER DATA LENGTH 0x74 with allocation 24 → one descriptor, truncated', () => {
    const bytes = hex(`
      00 00 00 74 00 00 00 00
      00 00 00 00 00 00 00 00  00 00 08 00  00 00 00 00
    `);
    const parsed = binding.parseLbaStatus(bytes, 24);
    expect(header(parsed)).toEqual({
      parameterDataLength: 0x74,
      completionCondition: 0,
      rtp: 0,
      validBytes: 24,
      truncated: true,
      count: 1,
      trailingBytes: 0,
      unsafeLbaIndex: -1,
    });
    expect(columns(parsed)).toEqual({ lba: [0], blocks: [0x800], status: [0], additional: [0] });
  });

  it('an allocation length that is not 8 + 16k leaves a partial descriptor', () => {
    const parsed = binding.parseLbaStatus(replyBuffer(OCI_EXAMPLE, 32), 32);
    expect(header(parsed)).toMatchObject({ validBytes: 32, truncated: true, count: 1 });
    expect(parsed.trailingBytes).toBe(8);
  });

  it('a length that is not 4 + 16k without truncation is reported as trailing bytes', () => {
    const bytes = replyBuffer(OCI_EXAMPLE, 56);
    bytes[3] = 0x30; // 48: two descriptors and 12 stray bytes
    const parsed = binding.parseLbaStatus(bytes, 56);
    expect(header(parsed)).toMatchObject({
      parameterDataLength: 0x30,
      validBytes: 52,
      truncated: false,
      count: 2,
      trailingBytes: 12,
    });
  });

  it('fewer than 8 valid bytes: no header fields, no descriptors', () => {
    // scsi_debug with an allocation length below 24 transfers nothing.
    const none = binding.parseLbaStatus(new Uint8Array(16), 0);
    expect(header(none)).toEqual({
      parameterDataLength: 0,
      completionCondition: 0,
      rtp: 0,
      validBytes: 0,
      truncated: true,
      count: 0,
      trailingBytes: 0,
      unsafeLbaIndex: -1,
    });

    // 6 bytes: the length is readable, byte 7 is not.
    const six = binding.parseLbaStatus(replyBuffer(OCI_EXAMPLE, 32), 6);
    expect(header(six)).toMatchObject({
      parameterDataLength: 0x34,
      completionCondition: 0,
      rtp: 0,
      validBytes: 6,
      truncated: true,
      count: 0,
      trailingBytes: 0,
    });

    // 3 bytes: not even the length.
    const three = binding.parseLbaStatus(replyBuffer(OCI_EXAMPLE, 3), 3);
    expect(header(three)).toMatchObject({ parameterDataLength: 0, validBytes: 3, truncated: true });

    // An empty buffer (allocation length 0).
    const empty = binding.parseLbaStatus(new Uint8Array(0), 0);
    expect(header(empty)).toMatchObject({ validBytes: 0, truncated: true, count: 0 });
  });

  it('a header with PARAMETER DATA LENGTH 0 (< 4) limits the valid bytes to 4', () => {
    const parsed = binding.parseLbaStatus(hex('00 00 00 00 00 00 00 07'), 8);
    expect(header(parsed)).toMatchObject({
      parameterDataLength: 0,
      validBytes: 4,
      truncated: false,
      count: 0,
      completionCondition: 0,
      rtp: 0,
    });
  });

  it('§10.4 sg3_utils vector: high nibble of byte 12 ignored, additional status read', () => {
    const parsed = binding.parseLbaStatus(SG3_UTILS_VECTOR, 1024);
    expect(header(parsed)).toEqual({
      parameterDataLength: 0x34,
      completionCondition: 3,
      rtp: 0,
      validBytes: 56,
      truncated: false,
      count: 3,
      trailingBytes: 0,
      unsafeLbaIndex: -1,
    });
    expect(columns(parsed)).toEqual({
      lba: [0, 0x11223300, 0x11223344],
      blocks: [0x11223300, 0x44, 0x33],
      status: [0, 1, 1],
      additional: [0, 1, 1],
    });
  });

  it('received bytes beyond the allocation length are clamped', () => {
    const parsed = binding.parseLbaStatus(replyBuffer(OCI_EXAMPLE, 40), 1 << 20);
    expect(header(parsed)).toMatchObject({ validBytes: 40, truncated: true, count: 2 });
  });

  it('honours byteOffset of a view into a larger buffer', () => {
    const backing = new Uint8Array(100).fill(0xee);
    backing.set(OCI_EXAMPLE, 13);
    const view = backing.subarray(13, 13 + 56);
    const parsed = binding.parseLbaStatus(view, 56);
    expect(parsed.count).toBe(3);
    expect(columns(parsed).lba).toEqual([0x60, 0x70, 0xa0]);
    const dataView = new DataView(backing.buffer, 13, 56);
    expect(binding.parseLbaStatus(dataView as unknown as Uint8Array, 56).blocks[2]).toBe(0xfff60);
  });

  it('unsafeLbaIndex flags the first LBA >= 2^53', () => {
    const parsed = binding.parseLbaStatus(
      reply([
        [0x10n, 8, 3, 0],
        [2n ** 53n, 8, 3, 0],
        [2n ** 64n - 16n, 8, 3, 0],
      ]),
      1024,
    );
    expect(parsed.count).toBe(3);
    expect(parsed.unsafeLbaIndex).toBe(1);
    expect(parsed.lba[0]).toBe(0x10);
  });

  it('unsafeLbaIndex flags an extent whose end exceeds 2^53', () => {
    const end = binding.parseLbaStatus(
      reply([
        [2n ** 53n - 1n, 1, 3, 0], // ends exactly at 2^53: still exact
        [2n ** 53n - 1n, 2, 3, 0], // ends past 2^53
      ]),
      1024,
    );
    expect(end.unsafeLbaIndex).toBe(1);
    expect(end.lba[0]).toBe(2 ** 53 - 1);

    const safe = binding.parseLbaStatus(reply([[2n ** 53n - 0x100n, 0x100, 3, 0]]), 1024);
    expect(safe.unsafeLbaIndex).toBe(-1);
    expect(safe.lba[0]).toBe(2 ** 53 - 0x100);

    const top = binding.parseLbaStatus(reply([[2n ** 64n - 1n, 0xffffffff, 1, 0]]), 1024);
    expect(top.unsafeLbaIndex).toBe(0);
    expect(top.blocks[0]).toBe(0xffffffff);
  });

  it('handles the largest PARAMETER DATA LENGTH without overflow', () => {
    const bytes = replyBuffer(OCI_EXAMPLE, 56);
    bytes.set([0xff, 0xff, 0xff, 0xff], 0);
    const parsed = binding.parseLbaStatus(bytes, 56);
    expect(header(parsed)).toMatchObject({
      parameterDataLength: 0xffffffff,
      validBytes: 56,
      truncated: true,
      count: 3,
    });
  });

  it('parses a full 32 KiB reply into 2047 descriptors', () => {
    const descriptors: Array<[bigint, number, number, number]> = [];
    for (let i = 0; i < 2047; i++) descriptors.push([BigInt(i * 64), 32, (i % 2) + 1, 0]);
    const bytes = reply(descriptors, 0b0011);
    expect(bytes.byteLength).toBe(32760);
    const parsed = binding.parseLbaStatus(replyBuffer(bytes, 32768), 32768);
    expect(parsed.count).toBe(2047);
    expect(parsed.completionCondition).toBe(1);
    expect(parsed.lba[2046]).toBe(2046 * 64);
    expect(parsed.status[2046]).toBe(1);
  });

  it('rejects misuse with TypeError/RangeError', () => {
    const parse = binding.parseLbaStatus as (...args: unknown[]) => LbaStatusColumns;
    expect(() => parse('00000004', 8)).toThrow(TypeError);
    expect(() => parse([0, 0, 0, 4], 8)).toThrow(TypeError);
    expect(() => parse(new ArrayBuffer(8), 8)).toThrow(TypeError);
    expect(() => parse(null, 8)).toThrow(TypeError);
    expect(() => parse(new Uint8Array(8), -1)).toThrow(RangeError);
    expect(() => parse(new Uint8Array(8), 1.5)).toThrow(RangeError);
    expect(() => parse(new Uint8Array(8), 8n)).toThrow(TypeError);
    expect(() => parse(new Uint8Array(8))).toThrow(TypeError);
  });
});
