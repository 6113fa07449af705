// PduReader with transientChunks (the initiator's `onread` mode): the chunk pushed is reused by
// the socket for its next read, so the reader may keep nothing of it but the bytes of a PDU that
// is still incomplete. Property: for a random stream of PDUs built by the test (Data-In and
// others, with AHS and padded data segments), cut at random points into one reused chunk
// buffer, every PDU comes out with exactly the test's own BHS, AHS and data bytes — read while
// push() has not returned (Data-In) and still intact later (every other PDU).
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { PduReader } from '../../lib/iscsi/reader.js';

interface Built {
  bhs: Buffer;
  ahs: Buffer;
  data: Buffer;
  wire: Buffer;
}

function build(opcode: number, ahsWords: number, data: Uint8Array, fill: number): Built {
  const bhs = Buffer.alloc(48, fill);
  bhs[0] = opcode;
  bhs[4] = ahsWords;
  bhs.writeUIntBE(data.length, 5, 3);
  const ahs = Buffer.alloc(ahsWords * 4, fill ^ 0x5a);
  const padded = Buffer.alloc((data.length + 3) & ~3, 0xee);
  padded.set(data, 0);
  return { bhs, ahs, data: Buffer.from(data), wire: Buffer.concat([bhs, ahs, padded]) };
}

const pduArb = fc
  .record({
    dataIn: fc.boolean(),
    ahsWords: fc.integer({ min: 0, max: 3 }),
    data: fc.uint8Array({ maxLength: 6000 }),
    fill: fc.integer({ min: 1, max: 255 }),
  })
  .map((p) => build(p.dataIn ? 0x25 : 0x21, p.ahsWords, p.data, p.fill));

it('transientChunks: every PDU exactly as built, whatever the cuts, with the chunk reused', () => {
  fc.assert(
    fc.property(
      fc.array(pduArb, { minLength: 1, maxLength: 12 }),
      fc.array(fc.integer({ min: 1, max: 9000 }), { minLength: 1, maxLength: 50 }),
      (pdus, cuts) => {
        const stream = Buffer.concat(pdus.map((p) => p.wire));
        const reader = new PduReader({ maxDataSegmentLength: 8192, transientChunks: true });
        const chunk = Buffer.alloc(9000); // the socket's one read buffer
        const kept: Array<{ bhs: Buffer; ahs: Buffer; data: Buffer }> = [];
        const others: Array<{ index: number; pdu: { bhs: Buffer; ahs: Buffer; data: Buffer } }> =
          [];
        let pos = 0;
        for (let i = 0; pos < stream.length; i++) {
          const n = Math.min(stream.length - pos, cuts[i % cuts.length]!);
          stream.copy(chunk, 0, pos, pos + n);
          for (const pdu of reader.push(chunk.subarray(0, n))) {
            // Copied out before push() returns, as the initiator does with Data-In.
            kept.push({
              bhs: Buffer.from(pdu.bhs),
              ahs: Buffer.from(pdu.ahs),
              data: Buffer.from(pdu.data),
            });
            if ((pdu.bhs[0]! & 0x3f) !== 0x25) others.push({ index: kept.length - 1, pdu });
          }
          chunk.fill(0xcc); // the next read overwrites the buffer
          pos += n;
        }
        expect(kept).toHaveLength(pdus.length);
        kept.forEach((got, i) => {
          expect(got.bhs.equals(pdus[i]!.bhs)).toBe(true);
          expect(got.ahs.equals(pdus[i]!.ahs)).toBe(true);
          expect(got.data.equals(pdus[i]!.data)).toBe(true);
        });
        // PDUs other than Data-In are the reader's copies: still intact after later reads.
        for (const { index, pdu } of others) {
          expect(pdu.data.equals(pdus[index]!.data)).toBe(true);
          expect(pdu.bhs.equals(pdus[index]!.bhs)).toBe(true);
        }
      },
    ),
    { numRuns: 400 },
  );
});
