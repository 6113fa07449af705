/**
 * iSCSI PDU codec (RFC 7143 §11). Pure functions: a PDU is a 48-byte Basic Header Segment (BHS),
 * optional Additional Header Segments (AHS), and an optional data segment padded to 4 bytes.
 * Digests are never negotiated (HeaderDigest=None, DataDigest=None), so none are encoded.
 *
 * Shared by the simulator's target and the userspace initiator in ./initiator.ts.
 */

import { LbaStatusError } from '../errors.js';

/** BHS opcodes (byte 0, bits 5:0). */
export const Opcode = {
  NopOut: 0x00,
  ScsiCommand: 0x01,
  TaskMgmtRequest: 0x02,
  LoginRequest: 0x03,
  TextRequest: 0x04,
  DataOut: 0x05,
  LogoutRequest: 0x06,
  Snack: 0x10,
  NopIn: 0x20,
  ScsiResponse: 0x21,
  TaskMgmtResponse: 0x22,
  LoginResponse: 0x23,
  TextResponse: 0x24,
  DataIn: 0x25,
  LogoutResponse: 0x26,
  R2T: 0x31,
  AsyncMessage: 0x32,
  Reject: 0x3f,
} as const;
export type OpcodeValue = (typeof Opcode)[keyof typeof Opcode];

export const BHS_LENGTH = 48;
/** The reserved tag value (RFC 7143 §11.2.1.8, §11.18.3). */
export const RESERVED_TAG = 0xffffffff;
/** AHS types (RFC 7143 §11.2.1.2). */
export const AhsType = { ExtendedCdb: 1, BidiReadLength: 2 } as const;

/** Login stages (CSG/NSG). */
export const Stage = { Security: 0, Operational: 1, FullFeature: 3 } as const;

/** Task management function codes (RFC 7143 §11.5.1). */
export const TmfFunction = {
  AbortTask: 1,
  AbortTaskSet: 2,
  ClearAca: 3,
  ClearTaskSet: 4,
  LogicalUnitReset: 5,
  TargetWarmReset: 6,
  TargetColdReset: 7,
  TaskReassign: 8,
} as const;

/** Task management response codes (RFC 7143 §11.6.1). */
export const TmfResponse = {
  FunctionComplete: 0,
  TaskDoesNotExist: 1,
  LunDoesNotExist: 2,
  TaskStillAllegiant: 3,
  ReassignmentNotSupported: 4,
  NotSupported: 5,
  AuthorizationFailed: 6,
  Rejected: 255,
} as const;

/** Reject reasons (RFC 7143 §11.17.1). */
export const RejectReason = {
  DataDigestError: 0x02,
  SnackReject: 0x03,
  ProtocolError: 0x04,
  CommandNotSupported: 0x05,
  ImmediateCommandReject: 0x06,
  TaskInProgress: 0x07,
  InvalidDataAck: 0x08,
  InvalidPduField: 0x09,
  LongOpReject: 0x0a,
  WaitingForLogout: 0x0c,
} as const;

/** Errors in the byte stream: the connection cannot continue. */
export class IscsiProtocolError extends LbaStatusError {
  override name = 'IscsiProtocolError';
  readonly code = 'ERR_ISCSI_PROTOCOL';
}

// ---------------------------------------------------------------------------------------------
// PDU shapes

interface Base {
  /** Bit 6 of byte 0. */
  immediate?: boolean;
  /** The data segment (unpadded). */
  data?: Buffer;
}

export interface NopOutPdu extends Base {
  opcode: 0x00;
  lun: number;
  itt: number;
  ttt: number;
  cmdSN: number;
  expStatSN: number;
}

export interface ScsiCommandPdu extends Base {
  opcode: 0x01;
  final: boolean;
  read: boolean;
  write: boolean;
  /** Task attribute, bits 2:0 of byte 1 (0 untagged, 1 simple, 2 ordered, 3 head of queue, 4 ACA). */
  attr: number;
  lun: number;
  itt: number;
  expectedDataTransferLength: number;
  cmdSN: number;
  expStatSN: number;
  /** The whole CDB: BHS bytes 32–47 plus the Extended CDB AHS when longer than 16 bytes. */
  cdb: Buffer;
  /** Bidirectional Read Expected Data Transfer Length AHS, when present. */
  bidiReadLength?: number;
}

export interface TaskMgmtRequestPdu extends Base {
  opcode: 0x02;
  function: number;
  lun: number;
  itt: number;
  referencedTaskTag: number;
  cmdSN: number;
  expStatSN: number;
  refCmdSN: number;
  expDataSN: number;
}

export interface LoginRequestPdu extends Base {
  opcode: 0x03;
  transit: boolean;
  continue: boolean;
  csg: number;
  nsg: number;
  versionMax: number;
  versionMin: number;
  /** 6 bytes. */
  isid: Buffer;
  tsih: number;
  itt: number;
  cid: number;
  cmdSN: number;
  expStatSN: number;
}

export interface TextRequestPdu extends Base {
  opcode: 0x04;
  final: boolean;
  continue: boolean;
  lun: number;
  itt: number;
  ttt: number;
  cmdSN: number;
  expStatSN: number;
}

export interface DataOutPdu extends Base {
  opcode: 0x05;
  final: boolean;
  lun: number;
  itt: number;
  ttt: number;
  expStatSN: number;
  dataSN: number;
  bufferOffset: number;
}

export interface LogoutRequestPdu extends Base {
  opcode: 0x06;
  /** 0 close the session, 1 close the connection, 2 remove the connection for recovery. */
  reason: number;
  itt: number;
  cid: number;
  cmdSN: number;
  expStatSN: number;
}

export interface SnackPdu extends Base {
  opcode: 0x10;
  type: number;
  lun: number;
  itt: number;
  ttt: number;
  expStatSN: number;
  begRun: number;
  runLength: number;
}

export interface NopInPdu extends Base {
  opcode: 0x20;
  lun: number;
  itt: number;
  ttt: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
}

export interface ScsiResponsePdu extends Base {
  opcode: 0x21;
  bidiOverflow?: boolean;
  bidiUnderflow?: boolean;
  overflow: boolean;
  underflow: boolean;
  /** iSCSI response: 0 command completed at target, 1 target failure. */
  response: number;
  status: number;
  itt: number;
  snackTag?: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
  expDataSN: number;
  bidiResidualCount?: number;
  residualCount: number;
}

export interface TaskMgmtResponsePdu extends Base {
  opcode: 0x22;
  response: number;
  itt: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
}

export interface LoginResponsePdu extends Base {
  opcode: 0x23;
  transit: boolean;
  continue: boolean;
  csg: number;
  nsg: number;
  versionMax: number;
  versionActive: number;
  isid: Buffer;
  tsih: number;
  itt: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
  statusClass: number;
  statusDetail: number;
}

export interface TextResponsePdu extends Base {
  opcode: 0x24;
  final: boolean;
  continue: boolean;
  lun: number;
  itt: number;
  ttt: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
}

export interface DataInPdu extends Base {
  opcode: 0x25;
  final: boolean;
  acknowledge?: boolean;
  overflow: boolean;
  underflow: boolean;
  /** S bit: the status rides on this PDU. */
  hasStatus: boolean;
  status: number;
  lun: number;
  itt: number;
  ttt: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
  dataSN: number;
  bufferOffset: number;
  residualCount: number;
}

export interface LogoutResponsePdu extends Base {
  opcode: 0x26;
  response: number;
  itt: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
  time2Wait: number;
  time2Retain: number;
}

export interface R2TPdu extends Base {
  opcode: 0x31;
  lun: number;
  itt: number;
  ttt: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
  r2tSN: number;
  bufferOffset: number;
  desiredDataTransferLength: number;
}

export interface AsyncMessagePdu extends Base {
  opcode: 0x32;
  lun: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
  asyncEvent: number;
  asyncVCode: number;
  parameter1: number;
  parameter2: number;
  parameter3: number;
}

export interface RejectPdu extends Base {
  opcode: 0x3f;
  reason: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
  dataSN: number;
}

export type InitiatorPdu =
  | NopOutPdu
  | ScsiCommandPdu
  | TaskMgmtRequestPdu
  | LoginRequestPdu
  | TextRequestPdu
  | DataOutPdu
  | LogoutRequestPdu
  | SnackPdu;
export type TargetPdu =
  | NopInPdu
  | ScsiResponsePdu
  | TaskMgmtResponsePdu
  | LoginResponsePdu
  | TextResponsePdu
  | DataInPdu
  | LogoutResponsePdu
  | R2TPdu
  | AsyncMessagePdu
  | RejectPdu;
export type Pdu = InitiatorPdu | TargetPdu;

/** A PDU split into its segments, before field decoding. */
export interface RawPdu {
  bhs: Buffer;
  ahs: Buffer;
  data: Buffer;
}

// ---------------------------------------------------------------------------------------------
// LUN encoding (SAM-5 §4.7): single-level peripheral (LUN < 256) or flat (LUN < 16384).

/** Encodes a LUN into the 8-byte SAM format. */
export function encodeLun(lun: number, out: Buffer = Buffer.alloc(8), offset = 0): Buffer {
  if (!Number.isInteger(lun) || lun < 0 || lun > 0x3fff) {
    throw new RangeError(`LUN ${lun} is out of range 0..16383`);
  }
  out.fill(0, offset, offset + 8);
  if (lun < 256) {
    out[offset + 1] = lun;
  } else {
    out[offset] = 0x40 | (lun >> 8);
    out[offset + 1] = lun & 0xff;
  }
  return out;
}

/** Decodes the first level of an 8-byte SAM LUN (peripheral or flat addressing). */
export function decodeLun(buf: Buffer, offset = 0): number {
  const b0 = buf[offset]!;
  const method = b0 >> 6;
  if (method === 0) return b0 === 0 ? buf[offset + 1]! : ((b0 & 0x3f) << 8) | buf[offset + 1]!;
  if (method === 1) return ((b0 & 0x3f) << 8) | buf[offset + 1]!;
  // Logical unit / extended addressing: not used by this project; keep a distinct value.
  return 0x10000 + ((b0 << 8) | buf[offset + 1]!);
}

// ---------------------------------------------------------------------------------------------
// Encoding

function pad4(n: number): number {
  return (n + 3) & ~3;
}

function u32(buf: Buffer, off: number, v: number | undefined): void {
  buf.writeUInt32BE((v ?? 0) >>> 0, off);
}

/**
 * Encodes a PDU into one Buffer: BHS, AHS, data segment padded with zeros to a multiple of 4.
 * DataSegmentLength is taken from `pdu.data`.
 */
export function encodePdu(pdu: Pdu): Buffer {
  const data = pdu.data ?? EMPTY_SEGMENT;
  if (data.length > 0xffffff) throw new RangeError('data segment longer than 16 MiB - 1');
  // One buffer for the whole PDU (small ones come from Buffer's pool): the BHS is written in
  // place (`bhs` is the PDU's first 48 bytes), then the AHS, the data and zero padding.
  let ahsLength = 0;
  if (pdu.opcode === Opcode.ScsiCommand) {
    if (pdu.cdb.length > 16) ahsLength += pad4(4 + pdu.cdb.length - 16);
    if (pdu.bidiReadLength !== undefined) ahsLength += 8;
  }
  const padded = pad4(data.length);
  const bhs = Buffer.allocUnsafe(BHS_LENGTH + ahsLength + padded);
  bhs.fill(0, 0, BHS_LENGTH + ahsLength);
  if (padded > data.length) bhs.fill(0, BHS_LENGTH + ahsLength + data.length);
  bhs[0] = pdu.opcode | (pdu.immediate ? 0x40 : 0);
  switch (pdu.opcode) {
    case Opcode.NopOut:
      bhs[1] = 0x80;
      encodeLun(pdu.lun, bhs, 8);
      u32(bhs, 16, pdu.itt);
      u32(bhs, 20, pdu.ttt);
      u32(bhs, 24, pdu.cmdSN);
      u32(bhs, 28, pdu.expStatSN);
      break;
    case Opcode.ScsiCommand: {
      bhs[1] =
        (pdu.final ? 0x80 : 0) | (pdu.read ? 0x40 : 0) | (pdu.write ? 0x20 : 0) | (pdu.attr & 7);
      encodeLun(pdu.lun, bhs, 8);
      u32(bhs, 16, pdu.itt);
      u32(bhs, 20, pdu.expectedDataTransferLength);
      u32(bhs, 24, pdu.cmdSN);
      u32(bhs, 28, pdu.expStatSN);
      pdu.cdb.copy(bhs, 32, 0, Math.min(16, pdu.cdb.length));
      let at = BHS_LENGTH;
      if (pdu.cdb.length > 16) {
        const extra = pdu.cdb.length - 16;
        bhs.writeUInt16BE(extra + 1, at);
        bhs[at + 2] = AhsType.ExtendedCdb;
        pdu.cdb.copy(bhs, at + 4, 16);
        at += pad4(4 + extra);
      }
      if (pdu.bidiReadLength !== undefined) {
        bhs.writeUInt16BE(5, at);
        bhs[at + 2] = AhsType.BidiReadLength;
        bhs.writeUInt32BE(pdu.bidiReadLength >>> 0, at + 4);
      }
      break;
    }
    case Opcode.TaskMgmtRequest:
      bhs[1] = 0x80 | (pdu.function & 0x7f);
      encodeLun(pdu.lun, bhs, 8);
      u32(bhs, 16, pdu.itt);
      u32(bhs, 20, pdu.referencedTaskTag);
      u32(bhs, 24, pdu.cmdSN);
      u32(bhs, 28, pdu.expStatSN);
      u32(bhs, 32, pdu.refCmdSN);
      u32(bhs, 36, pdu.expDataSN);
      break;
    case Opcode.LoginRequest:
      bhs[0] = Opcode.LoginRequest | 0x40; // always immediate
      bhs[1] =
        (pdu.transit ? 0x80 : 0) | (pdu.continue ? 0x40 : 0) | ((pdu.csg & 3) << 2) | (pdu.nsg & 3);
      bhs[2] = pdu.versionMax;
      bhs[3] = pdu.versionMin;
      pdu.isid.copy(bhs, 8, 0, 6);
      bhs.writeUInt16BE(pdu.tsih, 14);
      u32(bhs, 16, pdu.itt);
      bhs.writeUInt16BE(pdu.cid, 20);
      u32(bhs, 24, pdu.cmdSN);
      u32(bhs, 28, pdu.expStatSN);
      break;
    case Opcode.TextRequest:
      bhs[1] = (pdu.final ? 0x80 : 0) | (pdu.continue ? 0x40 : 0);
      encodeLun(pdu.lun, bhs, 8);
      u32(bhs, 16, pdu.itt);
      u32(bhs, 20, pdu.ttt);
      u32(bhs, 24, pdu.cmdSN);
      u32(bhs, 28, pdu.expStatSN);
      break;
    case Opcode.DataOut:
      bhs[1] = pdu.final ? 0x80 : 0;
      encodeLun(pdu.lun, bhs, 8);
      u32(bhs, 16, pdu.itt);
      u32(bhs, 20, pdu.ttt);
      u32(bhs, 28, pdu.expStatSN);
      u32(bhs, 36, pdu.dataSN);
      u32(bhs, 40, pdu.bufferOffset);
      break;
    case Opcode.LogoutRequest:
      bhs[0] = Opcode.LogoutRequest | (pdu.immediate ? 0x40 : 0);
      bhs[1] = 0x80 | (pdu.reason & 0x7f);
      u32(bhs, 16, pdu.itt);
      bhs.writeUInt16BE(pdu.cid, 20);
      u32(bhs, 24, pdu.cmdSN);
      u32(bhs, 28, pdu.expStatSN);
      break;
    case Opcode.Snack:
      bhs[1] = 0x80 | (pdu.type & 0x0f);
      encodeLun(pdu.lun, bhs, 8);
      u32(bhs, 16, pdu.itt);
      u32(bhs, 20, pdu.ttt);
      u32(bhs, 28, pdu.expStatSN);
      u32(bhs, 40, pdu.begRun);
      u32(bhs, 44, pdu.runLength);
      break;
    case Opcode.NopIn:
      bhs[1] = 0x80;
      encodeLun(pdu.lun, bhs, 8);
      u32(bhs, 16, pdu.itt);
      u32(bhs, 20, pdu.ttt);
      u32(bhs, 24, pdu.statSN);
      u32(bhs, 28, pdu.expCmdSN);
      u32(bhs, 32, pdu.maxCmdSN);
      break;
    case Opcode.ScsiResponse:
      bhs[1] =
        0x80 |
        (pdu.bidiOverflow ? 0x10 : 0) |
        (pdu.bidiUnderflow ? 0x08 : 0) |
        (pdu.overflow ? 0x04 : 0) |
        (pdu.underflow ? 0x02 : 0);
      bhs[2] = pdu.response;
      bhs[3] = pdu.status;
      u32(bhs, 16, pdu.itt);
      u32(bhs, 20, pdu.snackTag);
      u32(bhs, 24, pdu.statSN);
      u32(bhs, 28, pdu.expCmdSN);
      u32(bhs, 32, pdu.maxCmdSN);
      u32(bhs, 36, pdu.expDataSN);
      u32(bhs, 40, pdu.bidiResidualCount);
      u32(bhs, 44, pdu.residualCount);
      break;
    case Opcode.TaskMgmtResponse:
      bhs[1] = 0x80;
      bhs[2] = pdu.response;
      u32(bhs, 16, pdu.itt);
      u32(bhs, 24, pdu.statSN);
      u32(bhs, 28, pdu.expCmdSN);
      u32(bhs, 32, pdu.maxCmdSN);
      break;
    case Opcode.LoginResponse:
      bhs[1] =
        (pdu.transit ? 0x80 : 0) | (pdu.continue ? 0x40 : 0) | ((pdu.csg & 3) << 2) | (pdu.nsg & 3);
      bhs[2] = pdu.versionMax;
      bhs[3] = pdu.versionActive;
      pdu.isid.copy(bhs, 8, 0, 6);
      bhs.writeUInt16BE(pdu.tsih, 14);
      u32(bhs, 16, pdu.itt);
      u32(bhs, 24, pdu.statSN);
      u32(bhs, 28, pdu.expCmdSN);
      u32(bhs, 32, pdu.maxCmdSN);
      bhs[36] = pdu.statusClass;
      bhs[37] = pdu.statusDetail;
      break;
    case Opcode.TextResponse:
      bhs[1] = (pdu.final ? 0x80 : 0) | (pdu.continue ? 0x40 : 0);
      encodeLun(pdu.lun, bhs, 8);
      u32(bhs, 16, pdu.itt);
      u32(bhs, 20, pdu.ttt);
      u32(bhs, 24, pdu.statSN);
      u32(bhs, 28, pdu.expCmdSN);
      u32(bhs, 32, pdu.maxCmdSN);
      break;
    case Opcode.DataIn:
      bhs[1] =
        (pdu.final ? 0x80 : 0) |
        (pdu.acknowledge ? 0x40 : 0) |
        (pdu.overflow ? 0x04 : 0) |
        (pdu.underflow ? 0x02 : 0) |
        (pdu.hasStatus ? 0x01 : 0);
      bhs[3] = pdu.hasStatus ? pdu.status : 0;
      if (pdu.acknowledge) encodeLun(pdu.lun, bhs, 8);
      u32(bhs, 16, pdu.itt);
      u32(bhs, 20, pdu.ttt);
      u32(bhs, 24, pdu.hasStatus ? pdu.statSN : 0);
      u32(bhs, 28, pdu.expCmdSN);
      u32(bhs, 32, pdu.maxCmdSN);
      u32(bhs, 36, pdu.dataSN);
      u32(bhs, 40, pdu.bufferOffset);
      u32(bhs, 44, pdu.residualCount);
      break;
    case Opcode.LogoutResponse:
      bhs[1] = 0x80;
      bhs[2] = pdu.response;
      u32(bhs, 16, pdu.itt);
      u32(bhs, 24, pdu.statSN);
      u32(bhs, 28, pdu.expCmdSN);
      u32(bhs, 32, pdu.maxCmdSN);
      bhs.writeUInt16BE(pdu.time2Wait, 40);
      bhs.writeUInt16BE(pdu.time2Retain, 42);
      break;
    case Opcode.R2T:
      bhs[1] = 0x80;
      encodeLun(pdu.lun, bhs, 8);
      u32(bhs, 16, pdu.itt);
      u32(bhs, 20, pdu.ttt);
      u32(bhs, 24, pdu.statSN);
      u32(bhs, 28, pdu.expCmdSN);
      u32(bhs, 32, pdu.maxCmdSN);
      u32(bhs, 36, pdu.r2tSN);
      u32(bhs, 40, pdu.bufferOffset);
      u32(bhs, 44, pdu.desiredDataTransferLength);
      break;
    case Opcode.AsyncMessage:
      bhs[1] = 0x80;
      encodeLun(pdu.lun, bhs, 8);
      u32(bhs, 16, RESERVED_TAG);
      u32(bhs, 24, pdu.statSN);
      u32(bhs, 28, pdu.expCmdSN);
      u32(bhs, 32, pdu.maxCmdSN);
      bhs[36] = pdu.asyncEvent;
      bhs[37] = pdu.asyncVCode;
      bhs.writeUInt16BE(pdu.parameter1, 38);
      bhs.writeUInt16BE(pdu.parameter2, 40);
      bhs.writeUInt16BE(pdu.parameter3, 42);
      break;
    case Opcode.Reject:
      bhs[1] = 0x80;
      bhs[2] = pdu.reason;
      u32(bhs, 16, RESERVED_TAG);
      u32(bhs, 24, pdu.statSN);
      u32(bhs, 28, pdu.expCmdSN);
      u32(bhs, 32, pdu.maxCmdSN);
      u32(bhs, 36, pdu.dataSN);
      break;
    default: {
      const never: never = pdu;
      throw new TypeError(`unknown opcode ${(never as { opcode: number }).opcode}`);
    }
  }
  if (ahsLength % 4 !== 0 || ahsLength / 4 > 255) throw new RangeError('AHS too long');
  bhs[4] = ahsLength / 4;
  bhs[5] = data.length >>> 16;
  bhs[6] = (data.length >>> 8) & 0xff;
  bhs[7] = data.length & 0xff;
  if (data.length > 0) data.copy(bhs, BHS_LENGTH + ahsLength);
  return bhs;
}

const EMPTY_SEGMENT = Buffer.alloc(0);

// ---------------------------------------------------------------------------------------------
// Decoding

/** Length in bytes of the whole PDU whose BHS is given (AHS + padded data, no digests). */
export function pduLength(bhs: Buffer): number {
  return BHS_LENGTH + bhs[4]! * 4 + pad4(bhs.readUIntBE(5, 3));
}

/** Splits one complete PDU (as produced by encodePdu or read from the wire). */
export function splitPdu(buf: Buffer): RawPdu {
  if (buf.length < BHS_LENGTH) throw new IscsiProtocolError('PDU shorter than the 48-byte BHS');
  const bhs = buf.subarray(0, BHS_LENGTH);
  const ahsLen = bhs[4]! * 4;
  const dataLen = bhs.readUIntBE(5, 3);
  if (buf.length < BHS_LENGTH + ahsLen + dataLen) {
    throw new IscsiProtocolError('PDU shorter than its AHS and data segment lengths');
  }
  return {
    bhs,
    ahs: buf.subarray(BHS_LENGTH, BHS_LENGTH + ahsLen),
    data: buf.subarray(BHS_LENGTH + ahsLen, BHS_LENGTH + ahsLen + dataLen),
  };
}

/** One AHS: type and its specific bytes (after the 3-byte header). */
export interface AhsSegment {
  type: number;
  /** AHSLength bytes following the type byte. */
  body: Buffer;
}

/** Walks the AHS area. */
export function parseAhs(ahs: Buffer): AhsSegment[] {
  const out: AhsSegment[] = [];
  let off = 0;
  while (off + 3 <= ahs.length) {
    const len = ahs.readUInt16BE(off);
    const type = ahs[off + 2]!;
    if (off + 3 + len > ahs.length)
      throw new IscsiProtocolError('AHS length exceeds TotalAHSLength');
    out.push({ type, body: ahs.subarray(off + 3, off + 3 + len) });
    off += pad4(3 + len);
  }
  return out;
}

function r32(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off);
}

/** Decodes a PDU's fields. Unknown opcodes throw IscsiProtocolError. */
export function decodePdu(raw: RawPdu): Pdu {
  const { bhs, ahs, data } = raw;
  const opcode = bhs[0]! & 0x3f;
  const immediate = (bhs[0]! & 0x40) !== 0;
  const b1 = bhs[1]!;
  switch (opcode) {
    case Opcode.NopOut:
      return {
        opcode,
        immediate,
        lun: decodeLun(bhs, 8),
        itt: r32(bhs, 16),
        ttt: r32(bhs, 20),
        cmdSN: r32(bhs, 24),
        expStatSN: r32(bhs, 28),
        data,
      };
    case Opcode.ScsiCommand: {
      let cdb: Buffer = Buffer.from(bhs.subarray(32, 48));
      let bidiReadLength: number | undefined;
      for (const seg of parseAhs(ahs)) {
        if (seg.type === AhsType.ExtendedCdb) {
          // AHSLength counts the reserved byte plus the CDB bytes beyond the first 16.
          if (seg.body.length < 1) throw new IscsiProtocolError('empty Extended CDB AHS');
          cdb = Buffer.concat([cdb, seg.body.subarray(1)]);
        } else if (seg.type === AhsType.BidiReadLength && seg.body.length >= 5) {
          bidiReadLength = seg.body.readUInt32BE(1);
        }
      }
      const pdu: ScsiCommandPdu = {
        opcode,
        immediate,
        final: (b1 & 0x80) !== 0,
        read: (b1 & 0x40) !== 0,
        write: (b1 & 0x20) !== 0,
        attr: b1 & 7,
        lun: decodeLun(bhs, 8),
        itt: r32(bhs, 16),
        expectedDataTransferLength: r32(bhs, 20),
        cmdSN: r32(bhs, 24),
        expStatSN: r32(bhs, 28),
        cdb,
        data,
      };
      if (bidiReadLength !== undefined) pdu.bidiReadLength = bidiReadLength;
      return pdu;
    }
    case Opcode.TaskMgmtRequest:
      return {
        opcode,
        immediate,
        function: b1 & 0x7f,
        lun: decodeLun(bhs, 8),
        itt: r32(bhs, 16),
        referencedTaskTag: r32(bhs, 20),
        cmdSN: r32(bhs, 24),
        expStatSN: r32(bhs, 28),
        refCmdSN: r32(bhs, 32),
        expDataSN: r32(bhs, 36),
        data,
      };
    case Opcode.LoginRequest:
      return {
        opcode,
        immediate,
        transit: (b1 & 0x80) !== 0,
        continue: (b1 & 0x40) !== 0,
        csg: (b1 >> 2) & 3,
        nsg: b1 & 3,
        versionMax: bhs[2]!,
        versionMin: bhs[3]!,
        isid: Buffer.from(bhs.subarray(8, 14)),
        tsih: bhs.readUInt16BE(14),
        itt: r32(bhs, 16),
        cid: bhs.readUInt16BE(20),
        cmdSN: r32(bhs, 24),
        expStatSN: r32(bhs, 28),
        data,
      };
    case Opcode.TextRequest:
      return {
        opcode,
        immediate,
        final: (b1 & 0x80) !== 0,
        continue: (b1 & 0x40) !== 0,
        lun: decodeLun(bhs, 8),
        itt: r32(bhs, 16),
        ttt: r32(bhs, 20),
        cmdSN: r32(bhs, 24),
        expStatSN: r32(bhs, 28),
        data,
      };
    case Opcode.DataOut:
      return {
        opcode,
        final: (b1 & 0x80) !== 0,
        lun: decodeLun(bhs, 8),
        itt: r32(bhs, 16),
        ttt: r32(bhs, 20),
        expStatSN: r32(bhs, 28),
        dataSN: r32(bhs, 36),
        bufferOffset: r32(bhs, 40),
        data,
      };
    case Opcode.LogoutRequest:
      return {
        opcode,
        immediate,
        reason: b1 & 0x7f,
        itt: r32(bhs, 16),
        cid: bhs.readUInt16BE(20),
        cmdSN: r32(bhs, 24),
        expStatSN: r32(bhs, 28),
        data,
      };
    case Opcode.Snack:
      return {
        opcode,
        type: b1 & 0x0f,
        lun: decodeLun(bhs, 8),
        itt: r32(bhs, 16),
        ttt: r32(bhs, 20),
        expStatSN: r32(bhs, 28),
        begRun: r32(bhs, 40),
        runLength: r32(bhs, 44),
        data,
      };
    case Opcode.NopIn:
      return {
        opcode,
        lun: decodeLun(bhs, 8),
        itt: r32(bhs, 16),
        ttt: r32(bhs, 20),
        statSN: r32(bhs, 24),
        expCmdSN: r32(bhs, 28),
        maxCmdSN: r32(bhs, 32),
        data,
      };
    case Opcode.ScsiResponse:
      return {
        opcode,
        bidiOverflow: (b1 & 0x10) !== 0,
        bidiUnderflow: (b1 & 0x08) !== 0,
        overflow: (b1 & 0x04) !== 0,
        underflow: (b1 & 0x02) !== 0,
        response: bhs[2]!,
        status: bhs[3]!,
        itt: r32(bhs, 16),
        snackTag: r32(bhs, 20),
        statSN: r32(bhs, 24),
        expCmdSN: r32(bhs, 28),
        maxCmdSN: r32(bhs, 32),
        expDataSN: r32(bhs, 36),
        bidiResidualCount: r32(bhs, 40),
        residualCount: r32(bhs, 44),
        data,
      };
    case Opcode.TaskMgmtResponse:
      return {
        opcode,
        response: bhs[2]!,
        itt: r32(bhs, 16),
        statSN: r32(bhs, 24),
        expCmdSN: r32(bhs, 28),
        maxCmdSN: r32(bhs, 32),
        data,
      };
    case Opcode.LoginResponse:
      return {
        opcode,
        transit: (b1 & 0x80) !== 0,
        continue: (b1 & 0x40) !== 0,
        csg: (b1 >> 2) & 3,
        nsg: b1 & 3,
        versionMax: bhs[2]!,
        versionActive: bhs[3]!,
        isid: Buffer.from(bhs.subarray(8, 14)),
        tsih: bhs.readUInt16BE(14),
        itt: r32(bhs, 16),
        statSN: r32(bhs, 24),
        expCmdSN: r32(bhs, 28),
        maxCmdSN: r32(bhs, 32),
        statusClass: bhs[36]!,
        statusDetail: bhs[37]!,
        data,
      };
    case Opcode.TextResponse:
      return {
        opcode,
        final: (b1 & 0x80) !== 0,
        continue: (b1 & 0x40) !== 0,
        lun: decodeLun(bhs, 8),
        itt: r32(bhs, 16),
        ttt: r32(bhs, 20),
        statSN: r32(bhs, 24),
        expCmdSN: r32(bhs, 28),
        maxCmdSN: r32(bhs, 32),
        data,
      };
    case Opcode.DataIn:
      return {
        opcode,
        final: (b1 & 0x80) !== 0,
        acknowledge: (b1 & 0x40) !== 0,
        overflow: (b1 & 0x04) !== 0,
        underflow: (b1 & 0x02) !== 0,
        hasStatus: (b1 & 0x01) !== 0,
        status: bhs[3]!,
        lun: decodeLun(bhs, 8),
        itt: r32(bhs, 16),
        ttt: r32(bhs, 20),
        statSN: r32(bhs, 24),
        expCmdSN: r32(bhs, 28),
        maxCmdSN: r32(bhs, 32),
        dataSN: r32(bhs, 36),
        bufferOffset: r32(bhs, 40),
        residualCount: r32(bhs, 44),
        data,
      };
    case Opcode.LogoutResponse:
      return {
        opcode,
        response: bhs[2]!,
        itt: r32(bhs, 16),
        statSN: r32(bhs, 24),
        expCmdSN: r32(bhs, 28),
        maxCmdSN: r32(bhs, 32),
        time2Wait: bhs.readUInt16BE(40),
        time2Retain: bhs.readUInt16BE(42),
        data,
      };
    case Opcode.R2T:
      return {
        opcode,
        lun: decodeLun(bhs, 8),
        itt: r32(bhs, 16),
        ttt: r32(bhs, 20),
        statSN: r32(bhs, 24),
        expCmdSN: r32(bhs, 28),
        maxCmdSN: r32(bhs, 32),
        r2tSN: r32(bhs, 36),
        bufferOffset: r32(bhs, 40),
        desiredDataTransferLength: r32(bhs, 44),
        data,
      };
    case Opcode.AsyncMessage:
      return {
        opcode,
        lun: decodeLun(bhs, 8),
        statSN: r32(bhs, 24),
        expCmdSN: r32(bhs, 28),
        maxCmdSN: r32(bhs, 32),
        asyncEvent: bhs[36]!,
        asyncVCode: bhs[37]!,
        parameter1: bhs.readUInt16BE(38),
        parameter2: bhs.readUInt16BE(40),
        parameter3: bhs.readUInt16BE(42),
        data,
      };
    case Opcode.Reject:
      return {
        opcode,
        reason: bhs[2]!,
        statSN: r32(bhs, 24),
        expCmdSN: r32(bhs, 28),
        maxCmdSN: r32(bhs, 32),
        dataSN: r32(bhs, 36),
        data,
      };
    default:
      throw new IscsiProtocolError(`unknown iSCSI opcode 0x${opcode.toString(16)}`);
  }
}

/** Decodes one complete PDU buffer. */
export function decodePduBuffer(buf: Buffer): Pdu {
  return decodePdu(splitPdu(buf));
}

/** Serial number arithmetic (RFC 1982, 32 bits): a < b. */
export function snLess(a: number, b: number): boolean {
  return a !== b && (b - a) >>> 0 < 0x80000000;
}

/** Adds to a 32-bit sequence number. */
export function snAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}
