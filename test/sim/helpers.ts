/** CDB builders and reply parsers shared by the simulator tests. */

export function gls32Cdb(lba: number, scanLength: number, alloc: number, reportType = 1): Buffer {
  const c = Buffer.alloc(32);
  c[0] = 0x7f;
  c[7] = 0x18;
  c.writeUInt16BE(0x0012, 8);
  c[10] = reportType;
  c.writeBigUInt64BE(BigInt(lba), 12);
  c.writeUInt32BE(scanLength, 20);
  c.writeUInt32BE(alloc, 28);
  return c;
}

export function gls16Cdb(lba: number, alloc: number, reportType = 1): Buffer {
  const c = Buffer.alloc(16);
  c[0] = 0x9e;
  c[1] = 0x12;
  c.writeBigUInt64BE(BigInt(lba), 2);
  c.writeUInt32BE(alloc, 10);
  c[14] = reportType;
  return c;
}

export interface ParsedGls {
  parameterDataLength: number;
  completionCondition: number;
  rtp: number;
  descriptors: Array<{ lba: number; blocks: number; status: number }>;
}

export function parseGls(buf: Buffer): ParsedGls {
  const n = Math.floor((buf.length - 8) / 16);
  const descriptors = [];
  for (let i = 0; i < n; i++) {
    const o = 8 + i * 16;
    descriptors.push({
      lba: Number(buf.readBigUInt64BE(o)),
      blocks: buf.readUInt32BE(o + 8),
      status: buf[o + 12]! & 0x0f,
    });
  }
  return {
    parameterDataLength: buf.readUInt32BE(0),
    completionCondition: (buf[7]! >> 1) & 7,
    rtp: buf[7]! & 1,
    descriptors,
  };
}

export function senseTriple(sense: Buffer | undefined): string {
  if (!sense) return 'none';
  return [sense[2]! & 0x0f, sense[12]!, sense[13]!]
    .map((x) => x.toString(16).padStart(2, '0'))
    .join('/');
}

export function cdb(hex: string): Buffer {
  return Buffer.from(hex.replace(/\s+/g, ''), 'hex');
}
