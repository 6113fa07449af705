/**
 * CDBs and reply decoders for the few commands besides GET LBA STATUS that the device layer
 * needs (SPC-6, SBC-4). Pure functions. GET LBA STATUS CDBs come from the native addon.
 */

/** TEST UNIT READY (6). */
export function testUnitReadyCdb(): Uint8Array {
  return new Uint8Array(6);
}

/** INQUIRY (6): standard data, or a VPD page when `page` is given. */
export function inquiryCdb(allocationLength: number, page?: number): Uint8Array {
  const cdb = new Uint8Array(6);
  cdb[0] = 0x12;
  if (page !== undefined) {
    cdb[1] = 0x01; // EVPD
    cdb[2] = page;
  }
  cdb[3] = (allocationLength >> 8) & 0xff;
  cdb[4] = allocationLength & 0xff;
  return cdb;
}

/** READ CAPACITY (16): SERVICE ACTION IN (16) 9Eh / 10h. */
export function readCapacity16Cdb(allocationLength = 32): Uint8Array {
  const cdb = new Uint8Array(16);
  cdb[0] = 0x9e;
  cdb[1] = 0x10;
  new DataView(cdb.buffer).setUint32(10, allocationLength);
  return cdb;
}

/** READ CAPACITY (10). */
export function readCapacity10Cdb(): Uint8Array {
  const cdb = new Uint8Array(10);
  cdb[0] = 0x25;
  return cdb;
}

/** REPORT SUPPORTED OPERATION CODES, one command (reporting option 2: opcode + service action). */
export function reportSupportedOpcodeCdb(
  opcode: number,
  serviceAction: number,
  allocationLength = 64,
): Uint8Array {
  const cdb = new Uint8Array(12);
  const view = new DataView(cdb.buffer);
  cdb[0] = 0xa3;
  cdb[1] = 0x0c;
  cdb[2] = 0x02;
  cdb[3] = opcode;
  view.setUint16(4, serviceAction);
  view.setUint32(6, allocationLength);
  return cdb;
}

/** READ (16). */
export function read16Cdb(lba: number, blocks: number): Uint8Array {
  const cdb = new Uint8Array(16);
  const view = new DataView(cdb.buffer);
  cdb[0] = 0x88;
  view.setBigUint64(2, BigInt(lba));
  view.setUint32(10, blocks);
  return cdb;
}

function ascii(bytes: Uint8Array, start: number, end: number): string {
  return Buffer.from(bytes.subarray(start, Math.min(end, bytes.length)))
    .toString('latin1')
    .replace(/\0/g, '')
    .trim();
}

/** Standard INQUIRY data. */
export interface StandardInquiry {
  /** Peripheral device type (0 = direct-access block device). */
  deviceType: number;
  /** Peripheral qualifier (0 = connected, 3 = no LU at this LUN). */
  qualifier: number;
  /** SPC version claimed (6 = SPC-4, 7 = SPC-5). */
  version: number;
  vendor: string;
  product: string;
  revision: string;
}

export function decodeStandardInquiry(data: Uint8Array): StandardInquiry {
  return {
    deviceType: (data[0] ?? 0x1f) & 0x1f,
    qualifier: (data[0] ?? 0) >> 5,
    version: data[2] ?? 0,
    vendor: ascii(data, 8, 16),
    product: ascii(data, 16, 32),
    revision: ascii(data, 32, 36),
  };
}

/** Page codes listed in VPD page 00h. */
export function decodeSupportedVpdPages(data: Uint8Array): number[] {
  const length = ((data[2] ?? 0) << 8) | (data[3] ?? 0);
  return Array.from(data.subarray(4, Math.min(data.length, 4 + length)));
}

/** VPD 80h unit serial number. */
export function decodeSerialNumber(data: Uint8Array): string {
  const length = ((data[2] ?? 0) << 8) | (data[3] ?? 0);
  return ascii(data, 4, 4 + length);
}

/** One designation descriptor of VPD 83h. */
export interface Designator {
  /** 1 T10 vendor id, 2 EUI-64, 3 NAA, 8 SCSI name string… */
  type: number;
  /** 0 logical unit, 1 target port, 2 target device. */
  association: number;
  /** Text for ASCII/UTF-8 designators, hex otherwise. */
  value: string;
}

export function decodeDeviceIdentification(data: Uint8Array): Designator[] {
  const length = ((data[2] ?? 0) << 8) | (data[3] ?? 0);
  const end = Math.min(data.length, 4 + length);
  const designators: Designator[] = [];
  for (let offset = 4; offset + 4 <= end; ) {
    const codeSet = data[offset]! & 0x0f;
    const type = data[offset + 1]! & 0x0f;
    const association = (data[offset + 1]! >> 4) & 0x03;
    const size = data[offset + 3]!;
    if (offset + 4 + size > end) break;
    const body = data.subarray(offset + 4, offset + 4 + size);
    const value =
      codeSet === 2 || codeSet === 3
        ? ascii(body, 0, body.length)
        : Buffer.from(body).toString('hex');
    designators.push({ type, association, value });
    offset += 4 + size;
  }
  return designators;
}

/** VPD B0h block limits (the fields this package uses). */
export interface BlockLimits {
  /** MAXIMUM TRANSFER LENGTH in logical blocks (0 = not reported). */
  maxTransferBlocks: number;
  /** OPTIMAL TRANSFER LENGTH in logical blocks (0 = not reported). */
  optimalTransferBlocks: number;
  /** MAXIMUM UNMAP LBA COUNT. */
  maxUnmapBlocks: number;
  /** OPTIMAL UNMAP GRANULARITY in logical blocks. */
  unmapGranularity: number;
}

export function decodeBlockLimits(data: Uint8Array): BlockLimits {
  const u32 = (offset: number): number =>
    data.length >= offset + 4
      ? new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(offset)
      : 0;
  return {
    maxTransferBlocks: u32(8),
    optimalTransferBlocks: u32(12),
    maxUnmapBlocks: u32(20),
    unmapGranularity: u32(28),
  };
}

/** VPD B2h logical block provisioning. */
export interface LogicalBlockProvisioning {
  /** UNMAP supported. */
  lbpu: boolean;
  /** WRITE SAME(16) with UNMAP supported. */
  lbpws: boolean;
  /** WRITE SAME(10) with UNMAP supported. */
  lbpws10: boolean;
  /** What unmapped blocks read as (0 = unspecified, 1 = zeros). */
  lbprz: number;
  /** 0 not reported / fully provisioned, 1 resource provisioned, 2 thin provisioned. */
  provisioningType: number;
}

export function decodeLogicalBlockProvisioning(data: Uint8Array): LogicalBlockProvisioning {
  const flags = data[5] ?? 0;
  return {
    lbpu: (flags & 0x80) !== 0,
    lbpws: (flags & 0x40) !== 0,
    lbpws10: (flags & 0x20) !== 0,
    lbprz: (flags >> 2) & 0x07,
    provisioningType: (data[6] ?? 0) & 0x07,
  };
}

/** READ CAPACITY (16) or (10) data. */
export interface Capacity {
  /** Logical block size in bytes. */
  blockSize: number;
  /** Number of logical blocks (last LBA + 1). */
  blocks: number;
  /** Logical blocks per physical block exponent. */
  lbppbe: number;
  /** Logical block provisioning management enabled (thin provisioning). */
  lbpme: boolean;
  /** Unmapped blocks read zeros. */
  lbprz: boolean;
}

/** Decodes READ CAPACITY(16) data; capacities of 2^53 blocks or more are refused by the caller. */
export function decodeReadCapacity16(data: Uint8Array): Capacity & { lastLba: bigint } {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const lastLba = view.getBigUint64(0);
  return {
    lastLba,
    blocks: Number(lastLba + 1n),
    blockSize: view.getUint32(8),
    lbppbe: data[13]! & 0x0f,
    lbpme: (data[14]! & 0x80) !== 0,
    lbprz: (data[14]! & 0x40) !== 0,
  };
}

export function decodeReadCapacity10(data: Uint8Array): Capacity & { lastLba: bigint } {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const lastLba = BigInt(view.getUint32(0));
  return {
    lastLba,
    blocks: Number(lastLba + 1n),
    blockSize: view.getUint32(4),
    lbppbe: 0,
    lbpme: false,
    lbprz: false,
  };
}

/** Support reported by REPORT SUPPORTED OPERATION CODES for one command. */
export type CommandSupport = 'supported' | 'vendor-specific' | 'not-supported' | 'unknown';

export function decodeOneCommandSupport(data: Uint8Array): CommandSupport {
  switch ((data[1] ?? 0) & 0x07) {
    case 3:
      return 'supported';
    case 5:
      return 'vendor-specific';
    case 1:
      return 'not-supported';
    default:
      return 'unknown';
  }
}
