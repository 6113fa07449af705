import { describe, expect, it } from 'vitest';
import { chapResponse, TargetLoginNegotiator } from '../../lib/iscsi/login.js';
import {
  decodeLun,
  decodePduBuffer,
  encodeLun,
  encodePdu,
  type LoginRequestPdu,
  Opcode,
  type ScsiCommandPdu,
  type ScsiResponsePdu,
  snLess,
} from '../../lib/iscsi/pdu.js';
import { PduReader } from '../../lib/iscsi/reader.js';
import { decodeText, decodeTextPairs, encodeText } from '../../lib/iscsi/text.js';

const gls32 = Buffer.from(
  '7f000000000000180012010000000000000000600020000000000000000080 00'.replace(/ /g, ''),
  'hex',
);

function login(over: Partial<LoginRequestPdu> = {}): LoginRequestPdu {
  return {
    opcode: Opcode.LoginRequest,
    transit: true,
    continue: false,
    csg: 0,
    nsg: 1,
    versionMax: 0,
    versionMin: 0,
    isid: Buffer.from('400001370000', 'hex'),
    tsih: 0,
    itt: 0x12345678,
    cid: 0,
    cmdSN: 7,
    expStatSN: 0,
    data: encodeText([
      ['InitiatorName', 'iqn.2024-01.test:init'],
      ['SessionType', 'Normal'],
      ['TargetName', 'iqn.2024-01.test:t'],
      ['AuthMethod', 'None'],
    ]),
    ...over,
  };
}

describe('PDU codec', () => {
  it('encodes a Login Request byte for byte', () => {
    const buf = encodePdu(login());
    const text =
      'InitiatorName=iqn.2024-01.test:init\0SessionType=Normal\0TargetName=iqn.2024-01.test:t\0AuthMethod=None\0';
    expect(buf.length).toBe(48 + ((text.length + 3) & ~3));
    expect(buf.subarray(0, 48).toString('hex')).toBe(
      [
        '43', // immediate | Login Request
        '81', // T, CSG 0, NSG 1
        '0000', // version max/min
        '00', // TotalAHSLength
        text.length.toString(16).padStart(6, '0'),
        '400001370000', // ISID
        '0000', // TSIH
        '12345678', // ITT
        '0000', // CID
        '0000',
        '00000007', // CmdSN
        '00000000', // ExpStatSN
        '00'.repeat(16),
      ].join(''),
    );
    expect(buf.subarray(48, 48 + text.length).toString('latin1')).toBe(text);
    expect(buf.subarray(48 + text.length).every((b) => b === 0)).toBe(true);
    const back = decodePduBuffer(buf) as LoginRequestPdu;
    expect(back).toMatchObject({
      opcode: 3,
      transit: true,
      csg: 0,
      nsg: 1,
      itt: 0x12345678,
      cmdSN: 7,
    });
    expect(decodeText(back.data!).get('TargetName')).toBe('iqn.2024-01.test:t');
  });

  it('decodes a Login Response', () => {
    const bhs = Buffer.alloc(48);
    Buffer.from(
      '2387000000000000400001370000000112345678000000000000000a0000000700000086000000',
      'hex',
    ).copy(bhs);
    const pdu = decodePduBuffer(bhs);
    expect(pdu).toMatchObject({
      opcode: Opcode.LoginResponse,
      transit: true,
      csg: 1,
      nsg: 3,
      tsih: 1,
      itt: 0x12345678,
      statSN: 10,
      expCmdSN: 7,
      maxCmdSN: 0x86,
      statusClass: 0,
      statusDetail: 0,
    });
  });

  it('carries a 32-byte CDB as 16 BHS bytes plus an Extended CDB AHS (AHSLength 17)', () => {
    const cmd: ScsiCommandPdu = {
      opcode: Opcode.ScsiCommand,
      final: true,
      read: true,
      write: false,
      attr: 1,
      lun: 1,
      itt: 5,
      expectedDataTransferLength: 32768,
      cmdSN: 9,
      expStatSN: 3,
      cdb: gls32,
    };
    const buf = encodePdu(cmd);
    expect(buf.length).toBe(48 + 20);
    expect(buf[0]).toBe(0x01);
    expect(buf[1]).toBe(0xc1);
    expect(buf[4]).toBe(5); // TotalAHSLength in words
    expect(buf.subarray(8, 16).toString('hex')).toBe('0001000000000000');
    expect(buf.subarray(32, 48)).toEqual(gls32.subarray(0, 16));
    expect(buf.subarray(48, 52).toString('hex')).toBe('00110100');
    expect(buf.subarray(52, 68)).toEqual(gls32.subarray(16));
    const back = decodePduBuffer(buf) as ScsiCommandPdu;
    expect(back.cdb).toEqual(gls32);
    expect(back).toMatchObject({ lun: 1, itt: 5, expectedDataTransferLength: 32768, read: true });
  });

  it('puts sense data in a SCSI Response data segment as u16 length + bytes', () => {
    const sense = Buffer.from('700005000000000a00000000240000c00014', 'hex');
    const seg = Buffer.concat([Buffer.from([0, sense.length]), sense]);
    const resp: ScsiResponsePdu = {
      opcode: Opcode.ScsiResponse,
      overflow: false,
      underflow: true,
      response: 0,
      status: 2,
      itt: 9,
      statSN: 4,
      expCmdSN: 10,
      maxCmdSN: 137,
      expDataSN: 0,
      residualCount: 32768,
      data: seg,
    };
    const buf = encodePdu(resp);
    expect(buf.subarray(0, 4).toString('hex')).toBe('21820002');
    expect(buf.readUIntBE(5, 3)).toBe(20);
    expect(buf.readUInt32BE(44)).toBe(32768);
    expect(buf.length).toBe(48 + 20);
    const back = decodePduBuffer(buf) as ScsiResponsePdu;
    expect(back.data!.readUInt16BE(0)).toBe(18);
    expect(back.data!.subarray(2)).toEqual(sense);
  });

  it('encodes LUNs in SAM format', () => {
    expect(encodeLun(1).toString('hex')).toBe('0001000000000000');
    expect(encodeLun(300).toString('hex')).toBe('412c000000000000');
    expect(decodeLun(encodeLun(300))).toBe(300);
    expect(decodeLun(Buffer.from('0001000000000000', 'hex'))).toBe(1);
  });

  it('compares sequence numbers with wrap-around', () => {
    expect(snLess(1, 2)).toBe(true);
    expect(snLess(0xffffffff, 0)).toBe(true);
    expect(snLess(0, 0xffffffff)).toBe(false);
    expect(snLess(5, 5)).toBe(false);
  });
});

describe('text keys', () => {
  it('round-trips key=value\\0 pairs and keeps repeated keys in pair form', () => {
    const buf = encodeText([
      ['TargetName', 'iqn.x'],
      ['TargetAddress', '127.0.0.1:3260,1'],
    ]);
    expect(buf.toString('latin1')).toBe('TargetName=iqn.x\0TargetAddress=127.0.0.1:3260,1\0');
    expect(decodeTextPairs(Buffer.from('a=1\0a=2\0'))).toEqual([
      ['a', '1'],
      ['a', '2'],
    ]);
    expect(() => decodeText(Buffer.from('a=1\0a=2\0'))).toThrow(/twice/);
    expect(() => decodeTextPairs(Buffer.from('novalue\0'))).toThrow(/malformed/);
  });
});

describe('PduReader', () => {
  it('reassembles PDUs from one-byte reads, with AHS and data padding', () => {
    const a = encodePdu({
      opcode: Opcode.NopOut,
      immediate: true,
      lun: 0,
      itt: 1,
      ttt: 0xffffffff,
      cmdSN: 1,
      expStatSN: 0,
      data: Buffer.from('hello'), // 5 bytes → 3 pad bytes
    });
    const b = encodePdu({
      opcode: Opcode.ScsiCommand,
      final: true,
      read: true,
      write: false,
      attr: 1,
      lun: 1,
      itt: 2,
      expectedDataTransferLength: 8,
      cmdSN: 1,
      expStatSN: 0,
      cdb: gls32,
    });
    const stream = Buffer.concat([a, b, a]);
    const reader = new PduReader();
    const got = [];
    for (const byte of stream) got.push(...reader.push(Buffer.from([byte])));
    expect(got).toHaveLength(3);
    expect(got[0]!.data.toString()).toBe('hello');
    expect(got[1]!.ahs.length).toBe(20);
    expect(reader.buffered).toBe(0);
    // All at once, too.
    expect(new PduReader().push(stream)).toHaveLength(3);
  });

  it('refuses a data segment above the limit', () => {
    const r = new PduReader({ maxDataSegmentLength: 4 });
    const pdu = encodePdu({
      opcode: Opcode.NopOut,
      lun: 0,
      itt: 1,
      ttt: 0xffffffff,
      cmdSN: 1,
      expStatSN: 0,
      data: Buffer.alloc(8),
    });
    expect(() => r.push(pdu)).toThrow(/exceeds/);
  });
});

describe('target login negotiation', () => {
  const hasTarget = (n: string): boolean => n === 'iqn.2024-01.test:t';

  it('goes security → operational → full feature and negotiates the keys', () => {
    const neg = new TargetLoginNegotiator({ hasTarget, portalGroupTag: 1 });
    const s1 = neg.handle(login());
    expect(s1).toMatchObject({ transit: true, csg: 0, nsg: 1, complete: false, failed: false });
    expect(s1.keys).toEqual([
      ['AuthMethod', 'None'],
      ['TargetPortalGroupTag', '1'],
    ]);
    const s2 = neg.handle(
      login({
        csg: 1,
        nsg: 3,
        data: encodeText([
          ['HeaderDigest', 'CRC32C,None'],
          ['DataDigest', 'None'],
          ['MaxRecvDataSegmentLength', '65536'],
          ['MaxBurstLength', '262144'],
          ['FirstBurstLength', '65536'],
          ['InitialR2T', 'No'],
          ['ImmediateData', 'Yes'],
          ['DefaultTime2Wait', '2'],
          ['ErrorRecoveryLevel', '2'],
          ['MaxConnections', '4'],
          ['X-vendor.key', 'x'],
        ]),
      }),
    );
    expect(s2).toMatchObject({ transit: true, csg: 1, nsg: 3, complete: true });
    expect(Object.fromEntries(s2.keys)).toEqual({
      HeaderDigest: 'None',
      DataDigest: 'None',
      MaxBurstLength: '262144',
      FirstBurstLength: '65536',
      InitialR2T: 'Yes',
      ImmediateData: 'Yes',
      DefaultTime2Wait: '2',
      ErrorRecoveryLevel: '0',
      MaxConnections: '1',
      'X-vendor.key': 'NotUnderstood',
      MaxRecvDataSegmentLength: '262144',
    });
    expect(neg.params.initiatorMaxRecvDataSegmentLength).toBe(65536);
    expect(neg.params.errorRecoveryLevel).toBe(0);
  });

  it('rejects an unknown target and a missing InitiatorName', () => {
    const neg = new TargetLoginNegotiator({ hasTarget, portalGroupTag: 1 });
    const bad = neg.handle(
      login({
        data: encodeText([
          ['InitiatorName', 'i'],
          ['TargetName', 'iqn.other:x'],
        ]),
      }),
    );
    expect(bad).toMatchObject({ failed: true, statusClass: 2, statusDetail: 3 });
    const neg2 = new TargetLoginNegotiator({ hasTarget, portalGroupTag: 1 });
    expect(neg2.handle(login({ data: encodeText([['TargetName', 'x']]) }))).toMatchObject({
      failed: true,
      statusClass: 2,
      statusDetail: 7,
    });
  });

  it('runs CHAP (MD5) and refuses a wrong response', () => {
    const chap = { username: 'u', secret: 'secretsecret' };
    const random = (n: number): Buffer => Buffer.alloc(n, 0x11);
    const keys = (k: Array<[string, string]>): Buffer => encodeText(k);
    for (const good of [true, false]) {
      const neg = new TargetLoginNegotiator({ hasTarget, portalGroupTag: 1, chap, random });
      const first = neg.handle(
        login({
          data: keys([
            ['InitiatorName', 'i'],
            ['TargetName', 'iqn.2024-01.test:t'],
            ['AuthMethod', 'CHAP,None'],
          ]),
        }),
      );
      expect(first.transit).toBe(false);
      expect(first.keys[0]).toEqual(['AuthMethod', 'CHAP']);
      const second = neg.handle(login({ transit: false, data: keys([['CHAP_A', '5']]) }));
      const m = Object.fromEntries(second.keys);
      expect(m).toEqual({ CHAP_A: '5', CHAP_I: '17', CHAP_C: `0x${'11'.repeat(16)}` });
      const resp = chapResponse(17, good ? chap.secret : 'wrong', Buffer.alloc(16, 0x11));
      const third = neg.handle(
        login({
          data: keys([
            ['CHAP_N', 'u'],
            ['CHAP_R', `0x${resp.toString('hex')}`],
          ]),
        }),
      );
      if (good) expect(third).toMatchObject({ transit: true, nsg: 1, failed: false });
      else expect(third).toMatchObject({ failed: true, statusClass: 2, statusDetail: 1 });
    }
  });
});
