/**
 * Sense-data builders used by the simulated device server. The numbers (status bytes, sense keys)
 * are lib/scsi's one table, re-exported here for the simulator's modules.
 */
import { ScsiStatus, SenseKey } from '../scsi/names.js';

export { ScsiStatus, SenseKey };

/** Sense-key-specific field pointer (SPC-5 §4.4.2.4.2). */
export interface FieldPointerSpec {
  /** true: the error is in the CDB; false: in the parameter data. */
  inCdb: boolean;
  field: number;
  bit?: number;
}

/** The content of one sense report, before formatting. */
export interface SenseSpec {
  key: number;
  asc: number;
  ascq: number;
  fieldPointer?: FieldPointerSpec;
}

function sks(fp: FieldPointerSpec): [number, number, number] {
  const b0 = 0x80 | (fp.inCdb ? 0x40 : 0) | (fp.bit !== undefined ? 0x08 | (fp.bit & 7) : 0);
  return [b0, (fp.field >> 8) & 0xff, fp.field & 0xff];
}

/** Fixed-format sense data (response code 70h), 18 bytes. */
export function fixedSense(s: SenseSpec): Buffer {
  const b = Buffer.alloc(18);
  b[0] = 0x70;
  b[2] = s.key & 0x0f;
  b[7] = 10;
  b[12] = s.asc;
  b[13] = s.ascq;
  if (s.fieldPointer) [b[15], b[16], b[17]] = sks(s.fieldPointer);
  return b;
}

/** Descriptor-format sense data (response code 72h), with a sense-key-specific descriptor. */
export function descriptorSense(s: SenseSpec): Buffer {
  const extra = s.fieldPointer ? 8 : 0;
  const b = Buffer.alloc(8 + extra);
  b[0] = 0x72;
  b[1] = s.key & 0x0f;
  b[2] = s.asc;
  b[3] = s.ascq;
  b[7] = extra;
  if (s.fieldPointer) {
    b[8] = 0x02;
    b[9] = 0x06;
    [b[12], b[13], b[14]] = sks(s.fieldPointer);
  }
  return b;
}

export const Sense = {
  invalidOpcode: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x20, ascq: 0x00 },
  lbaOutOfRange: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x21, ascq: 0x00 },
  invalidField: (field: number, bit?: number): SenseSpec => ({
    key: SenseKey.ILLEGAL_REQUEST,
    asc: 0x24,
    ascq: 0x00,
    fieldPointer: bit === undefined ? { inCdb: true, field } : { inCdb: true, field, bit },
  }),
  lunNotSupported: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x25, ascq: 0x00 },
  savingNotSupported: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x39, ascq: 0x00 },
  writeProtected: { key: SenseKey.DATA_PROTECT, asc: 0x27, ascq: 0x00 },
  powerOnReset: { key: SenseKey.UNIT_ATTENTION, asc: 0x29, ascq: 0x00 },
  becomingReady: { key: SenseKey.NOT_READY, asc: 0x04, ascq: 0x01 },
  noSense: { key: SenseKey.NO_SENSE, asc: 0x00, ascq: 0x00 },
} as const satisfies Record<string, SenseSpec | ((...a: never[]) => SenseSpec)>;
