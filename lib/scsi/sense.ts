/**
 * Sense data decoding (SPC-6 §4.4): fixed (70h/71h) and descriptor (72h/73h) formats.
 * Pure functions, no device access.
 */

/** Where an ILLEGAL REQUEST points: the offending byte (and bit) of the CDB or parameter list. */
export interface FieldPointer {
  /** true: the error is in the CDB; false: in the parameter data. */
  inCdb: boolean;
  /** Byte offset of the offending field. */
  byte: number;
  /** Bit within that byte, when the device says (BPV). */
  bit?: number;
}

/** Decoded sense data. */
export interface DecodedSense {
  /** Response code 70h–73h. */
  responseCode: number;
  /** 71h/73h: the error belongs to an earlier command. */
  deferred: boolean;
  senseKey: number;
  asc: number;
  ascq: number;
  /** Sense-key-specific field pointer (ILLEGAL REQUEST with SKSV set). */
  fieldPointer?: FieldPointer;
  /** Sense-key-specific progress indication (NOT READY), 0..1. */
  progress?: number;
  /** INFORMATION field when VALID is set (e.g. the failing LBA of a MEDIUM ERROR). */
  information?: bigint;
}

/**
 * Decodes `sense` (only the bytes the device wrote). Returns `undefined` when there is no
 * recognisable sense data (empty buffer or an unknown response code).
 */
export function decodeSense(sense: Uint8Array): DecodedSense | undefined {
  if (sense.length < 2) return undefined;
  const responseCode = sense[0]! & 0x7f;
  if (responseCode === 0x70 || responseCode === 0x71) return decodeFixed(sense, responseCode);
  if (responseCode === 0x72 || responseCode === 0x73) return decodeDescriptor(sense, responseCode);
  return undefined;
}

function decodeFixed(sense: Uint8Array, responseCode: number): DecodedSense {
  const usable = Math.min(sense.length, sense.length >= 8 ? sense[7]! + 8 : sense.length);
  const at = (i: number): number => (i < usable ? sense[i]! : 0);
  const decoded: DecodedSense = {
    responseCode,
    deferred: responseCode === 0x71,
    senseKey: at(2) & 0x0f,
    asc: at(12),
    ascq: at(13),
  };
  if (sense[0]! & 0x80 && usable >= 7) {
    decoded.information = BigInt(((at(3) << 24) | (at(4) << 16) | (at(5) << 8) | at(6)) >>> 0);
  }
  if (usable >= 18) addSenseKeySpecific(decoded, at(15), at(16), at(17));
  return decoded;
}

function decodeDescriptor(sense: Uint8Array, responseCode: number): DecodedSense {
  const usable = Math.min(sense.length, sense.length >= 8 ? sense[7]! + 8 : sense.length);
  const decoded: DecodedSense = {
    responseCode,
    deferred: responseCode === 0x73,
    senseKey: sense[1]! & 0x0f,
    asc: sense.length > 2 ? sense[2]! : 0,
    ascq: sense.length > 3 ? sense[3]! : 0,
  };
  // Walk the descriptor list: type byte, additional length, then that many bytes.
  for (let offset = 8; offset + 2 <= usable; ) {
    const type = sense[offset]!;
    const length = sense[offset + 1]! + 2;
    if (offset + length > usable) break;
    if (type === 0x00 && length >= 12 && sense[offset + 2]! & 0x80) {
      const view = new DataView(sense.buffer, sense.byteOffset + offset + 4, 8);
      decoded.information = view.getBigUint64(0);
    } else if (type === 0x02 && length >= 7) {
      addSenseKeySpecific(decoded, sense[offset + 4]!, sense[offset + 5]!, sense[offset + 6]!);
    }
    offset += length;
  }
  return decoded;
}

function addSenseKeySpecific(decoded: DecodedSense, b0: number, b1: number, b2: number): void {
  if (!(b0 & 0x80)) return; // SKSV clear: the bytes mean nothing
  if (decoded.senseKey === 0x05) {
    const pointer: FieldPointer = { inCdb: (b0 & 0x40) !== 0, byte: (b1 << 8) | b2 };
    if (b0 & 0x08) pointer.bit = b0 & 0x07;
    decoded.fieldPointer = pointer;
  } else if (decoded.senseKey === 0x02 || decoded.senseKey === 0x00) {
    decoded.progress = ((b1 << 8) | b2) / 65536;
  }
}
