import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ChangedMap } from '../../lib/sim/changed-map.js';
import { DeviceServer, NexusState } from '../../lib/sim/device-server.js';
import {
  type ByteRange,
  documentedBlockData,
  expectedRead,
  expectedReport,
  type Geometry,
  mergeExtents,
  randomRanges,
  testPrng,
} from '../support/oracle.js';
import { cdb, gls16Cdb, gls32Cdb, parseGls, senseTriple } from './helpers.js';

// Expected results are literal bytes from the references, or computed by test/support/oracle.ts
// from each test's own byte ranges (a per-LBA model, the documented block-data rule written
// again): never by lib/sim's own ChangedMap, glsDescriptors or blockData. The device servers
// are built from ChangedMap, which is the input under test.

// The OCI documented example (scsi-get-lba-status.md §10.1): 512 MiB, 512-byte blocks.
const ociMap = ChangedMap.fromByteExtents(
  { sizeBytes: 0x100000 * 512, blockSize: 512, changeBlockSize: 4096 },
  [
    { offset: 0x60 * 512, length: 0x10 * 512 },
    { offset: 0x70 * 512, length: 8 * 512, status: 'deallocated' },
    { offset: 0xa0 * 512, length: (0x100000 - 0xa0) * 512, status: 'deallocated' },
  ],
);
const oci = new DeviceServer({ map: ociMap, dataSeed: 5 });
const ociReply =
  '00000034 00000007' +
  '0000000000000060 00000010 03000000' +
  '0000000000000070 00000008 01000000' +
  '00000000000000a0 000fff60 01000000';

function run(dev: DeviceServer, c: Buffer, lun = 1) {
  return dev.execute({ lun, cdb: c });
}

describe('GET LBA STATUS(32)', () => {
  it('reproduces the OCI documented reply byte for byte (completion condition 3)', () => {
    const r = run(oci, gls32Cdb(0x60, 2097152, 32768));
    expect(r.status).toBe(0);
    expect(r.data!.toString('hex')).toBe(ociReply.replace(/ /g, ''));
  });

  it('reports completion condition 2 when the scan length ends before the medium', () => {
    const r = run(oci, gls32Cdb(0, 0x78, 32768));
    const p = parseGls(r.data!);
    expect(p).toEqual({
      parameterDataLength: 36,
      completionCondition: 2,
      rtp: 1,
      descriptors: [
        { lba: 0x60, blocks: 0x10, status: 3 },
        { lba: 0x70, blocks: 8, status: 1 },
      ],
    });
    // Window ending inside an extent: the descriptor is clipped to the window.
    expect(parseGls(run(oci, gls32Cdb(0x64, 4, 1024)).data!).descriptors).toEqual([
      { lba: 0x64, blocks: 4, status: 3 },
    ]);
    // A window with nothing changed: header only, length 4.
    expect(run(oci, gls32Cdb(0x80, 0x10, 1024)).data!.toString('hex')).toBe('0000000400000005');
  });

  it('reports condition 1 and the full PARAMETER DATA LENGTH when the allocation length is met', () => {
    const r = run(oci, gls32Cdb(0x60, 2097152, 24));
    expect(r.data!.toString('hex')).toBe(
      `0000003400000003${'0000000000000060 00000010 03000000'.replace(/ /g, '')}`,
    );
    // Allocation length not 8 + 16k: the last descriptor arrives cut.
    const cutReply = run(oci, gls32Cdb(0x60, 2097152, 30));
    expect(cutReply.data!.length).toBe(30);
    expect(cutReply.data!.readUInt32BE(0)).toBe(0x34);
    // Allocation lengths 0 and 4.
    expect(run(oci, gls32Cdb(0x60, 2097152, 0)).data!.length).toBe(0);
    expect(run(oci, gls32Cdb(0x60, 2097152, 4)).data!.toString('hex')).toBe('00000034');
    // Exactly enough room for all three descriptors: condition 3, not 1.
    expect(parseGls(run(oci, gls32Cdb(0x60, 2097152, 56)).data!).completionCondition).toBe(3);
  });

  it('honours report types 0, 2, 3 and 4', () => {
    const rt = (t: number) => parseGls(run(oci, gls32Cdb(0, 0x100, 4096, t)).data!);
    expect(rt(0).descriptors).toEqual([
      { lba: 0, blocks: 0x60, status: 1 },
      { lba: 0x60, blocks: 0x10, status: 0 },
      { lba: 0x70, blocks: 0x90, status: 1 },
    ]);
    expect(rt(2).descriptors).toEqual([{ lba: 0x60, blocks: 0x10, status: 3 }]);
    // Every LBA report type 0 calls deallocated: the unchanged rest too (OCI: "report type 0
    // reports uninitialized blocks as deallocated"), where type 1 leaves a gap.
    expect(rt(3).descriptors).toEqual([
      { lba: 0, blocks: 0x60, status: 1 },
      { lba: 0x70, blocks: 0x90, status: 1 },
    ]);
    expect(rt(4)).toMatchObject({ parameterDataLength: 4, completionCondition: 2, rtp: 1 });
    expect(senseTriple(run(oci, gls32Cdb(0, 8, 1024, 0x10)).sense)).toBe('05/24/00');
  });

  it('refuses a scan length above 1 GiB of blocks with 24h/00h pointing at byte 20', () => {
    const r = run(oci, gls32Cdb(0, 2097153, 1024));
    expect(r.status).toBe(2);
    expect(r.sense!.toString('hex')).toBe('700005000000000a00000000240000c00014');
    expect(run(oci, gls32Cdb(0, 2097152, 1024)).status).toBe(0);
    const dev4k = new DeviceServer({
      map: ChangedMap.fromByteExtents(
        { sizeBytes: 2 ** 32, blockSize: 4096, changeBlockSize: 4096 },
        [],
      ),
      dataSeed: 0,
    });
    expect(run(dev4k, gls32Cdb(0, 262144, 1024)).status).toBe(0);
    expect(senseTriple(run(dev4k, gls32Cdb(0, 262145, 1024)).sense)).toBe('05/24/00');
  });

  it('scan length 0 scans 1 GiB of blocks from the starting LBA (OCI: "the entire volume, subject to the same 1 GB limit")', () => {
    // The OCI example volume is 512 MiB: one scan reaches the end (condition 3), as with 2097152.
    expect(run(oci, gls32Cdb(0x60, 0, 32768)).data!.toString('hex')).toBe(
      ociReply.replace(/ /g, ''),
    );
    // A 3 GiB volume, 512-byte blocks, mapped at 1 GiB - 4 KiB .. 1 GiB + 4 KiB and at 2.5 GiB.
    const ranges: ByteRange[] = [
      { offset: 2 ** 30 - 4096, length: 8192 },
      { offset: 2.5 * 2 ** 30, length: 4096 },
    ];
    const g: Geometry = { sizeBytes: 3 * 2 ** 30, blockSize: 512, changeBlockSize: 4096 };
    const dev = new DeviceServer({ map: ChangedMap.fromByteExtents(g, ranges), dataSeed: 0 });
    const window = 2 ** 30 / 512;
    for (const start of [0, 12345, window * 2]) {
      const zero = parseGls(run(dev, gls32Cdb(start, 0, 32768)).data!);
      const end = Math.min(start + window, g.sizeBytes / 512);
      expect(zero).toEqual({
        ...parseGls(run(dev, gls32Cdb(start, window, 32768)).data!),
        completionCondition: end === g.sizeBytes / 512 ? 3 : 2,
      });
      expect(zero.descriptors).toEqual(expectedReport(ranges, g, 1, start, end));
    }
    // 4096-byte blocks: 262144 blocks.
    const g4k: Geometry = { sizeBytes: 2 ** 32, blockSize: 4096, changeBlockSize: 4096 };
    const last: ByteRange[] = [{ offset: 2 ** 30 - 4096, length: 8192 }];
    const dev4k = new DeviceServer({ map: ChangedMap.fromByteExtents(g4k, last), dataSeed: 0 });
    expect(parseGls(run(dev4k, gls32Cdb(0, 0, 1024)).data!)).toEqual({
      parameterDataLength: 20,
      completionCondition: 2,
      rtp: 1,
      descriptors: [{ lba: 262143, blocks: 1, status: 3 }],
    });
  });

  it('report types 0-4 on random maps: each is the per-LBA model, and they agree with one another', () => {
    const next = testPrng(77);
    for (let m = 0; m < 60; m++) {
      const blockSize = next() < 0.5 ? 512 : 4096;
      const capacity = 64 + Math.floor(next() * 3000);
      const changeBlockSize = blockSize * 2 ** Math.floor(next() * 4);
      const g: Geometry = { sizeBytes: capacity * blockSize, blockSize, changeBlockSize };
      const ranges = randomRanges(1000 + m, Math.floor(next() * 12), g.sizeBytes, 9000, 0.3);
      const dev = new DeviceServer({ map: ChangedMap.fromByteExtents(g, ranges), dataSeed: 0 });
      const start = Math.floor(next() * capacity);
      const scan = 1 + Math.floor(next() * capacity);
      const end = Math.min(start + scan, capacity);
      const got = [0, 1, 2, 3, 4].map((t) => {
        const p = parseGls(run(dev, gls32Cdb(start, scan, 1 << 20, t)).data!);
        expect(p.rtp).toBe(1);
        expect(p.completionCondition).toBe(end === capacity ? 3 : 2);
        return p.descriptors;
      });
      const label = JSON.stringify({ g, ranges, start, scan });
      for (const t of [0, 1, 2, 3, 4])
        expect(mergeExtents(got[t]!), `${label} type ${t}`).toEqual(
          expectedReport(ranges, g, t, start, end),
        );
      // Type 0 covers the window without gaps; 2 and 3 split it; 1's deallocated ⊆ 3.
      const lbas = (list: (typeof got)[0], status?: number) =>
        list.flatMap((d) =>
          status === undefined || d.status === status
            ? Array.from({ length: d.blocks }, (_, i) => d.lba + i)
            : [],
        );
      expect(lbas(got[0]!)).toEqual(Array.from({ length: end - start }, (_, i) => start + i));
      expect([...lbas(got[2]!), ...lbas(got[3]!)].sort((a, b) => a - b)).toEqual(lbas(got[0]!));
      expect(lbas(got[0]!, 0)).toEqual(lbas(got[2]!));
      const dealloc3 = new Set(lbas(got[3]!));
      expect(lbas(got[1]!, 1).every((l) => dealloc3.has(l))).toBe(true);
    }
  });

  it('refuses a start LBA beyond the capacity with 21h/00h', () => {
    for (const lba of [0x100000, 0x100001, 2 ** 63]) {
      const c = gls32Cdb(0, 8, 1024);
      c.writeBigUInt64BE(BigInt(lba), 12);
      expect(senseTriple(run(oci, c).sense)).toBe('05/21/00');
    }
    expect(parseGls(run(oci, gls32Cdb(0xfffff, 8, 1024)).data!)).toMatchObject({
      completionCondition: 3,
      descriptors: [{ lba: 0xfffff, blocks: 1, status: 1 }],
    });
  });

  it('agrees with sg_get_lba_status --inhex (the sg3_utils oracle)', () => {
    if (!existsSync('/usr/bin/sg_get_lba_status')) return;
    const dir = mkdtempSync(join(tmpdir(), 'gls-'));
    const file = join(dir, 'reply.hex');
    const bytes = run(oci, gls32Cdb(0x60, 2097152, 32768)).data!;
    writeFileSync(file, bytes.toString('hex').replace(/(..)/g, '$1 '));
    let out: string;
    try {
      out = execFileSync('sg_get_lba_status', ['--inhex', file, '-b', '-m', '1024'], {
        encoding: 'utf8',
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(out.trim().split('\n')).toEqual([
      'Completion condition=3',
      'RTP=1',
      '0x0000000000000060  0x10  3  0',
      '0x0000000000000070  0x8  1  0',
      '0x00000000000000a0  0xfff60  1  0',
    ]);
  });

  it('produces the malformed replies fault injection asks for', () => {
    const bad = oci.execute({ lun: 1, cdb: gls32Cdb(0x60, 2097152, 32768), malform: 'bad-length' });
    const len = bad.data!.readUInt32BE(0);
    expect((len - 4) % 16).not.toBe(0);
    expect(bad.data!.length).toBe(4 + len); // nothing cut: the length itself is wrong
    const ov = parseGls(
      oci.execute({ lun: 1, cdb: gls32Cdb(0x60, 2097152, 32768), malform: 'overlap' }).data!,
    );
    const [a, b] = ov.descriptors;
    expect(b!.lba).toBeLessThan(a!.lba + a!.blocks);
  });
});

describe('GET LBA STATUS(16)', () => {
  it('is refused with 20h/00h like OCI', () => {
    expect(senseTriple(run(oci, gls16Cdb(0, 1024)).sense)).toBe('05/20/00');
  });

  it('is answered to the end of the medium when enabled', () => {
    const dev = new DeviceServer({ map: ociMap, dataSeed: 0, gls16: true });
    expect(run(dev, gls16Cdb(0x60, 32768)).data!.toString('hex')).toBe(ociReply.replace(/ /g, ''));
    expect(parseGls(run(dev, gls16Cdb(0, 32768, 2)).data!).descriptors).toEqual([
      { lba: 0x60, blocks: 0x10, status: 3 },
    ]);
    expect(parseGls(run(dev, gls16Cdb(0x60, 24)).data!).completionCondition).toBe(1);
  });

  it('splits descriptors longer than 2^32 - 1 blocks', () => {
    const map = ChangedMap.fromByteExtents(
      { sizeBytes: 2 ** 44, blockSize: 512, changeBlockSize: 4096 },
      [{ offset: 0, length: 2 ** 43 }],
    );
    const dev = new DeviceServer({ map, dataSeed: 0, gls16: true });
    const p = parseGls(run(dev, gls16Cdb(0, 1024, 0)).data!);
    const total = p.descriptors.reduce((s, d) => s + d.blocks, 0);
    expect(p.descriptors[0]).toEqual({ lba: 0, blocks: 0xffffffff, status: 0 });
    expect(total).toBe(2 ** 35);
    expect(p.completionCondition).toBe(3);
  });
});

describe('other commands', () => {
  it('INQUIRY: ORACLE BlockVolume on LUN 1, peripheral qualifier 3 elsewhere', () => {
    const std = run(oci, cdb('120000006000'));
    expect(std.data!.length).toBe(96);
    expect(std.data![0]).toBe(0);
    expect(std.data![2]).toBe(6);
    expect(std.data!.subarray(8, 32).toString('latin1')).toBe('ORACLE  BlockVolume     ');
    const lun0 = run(oci, cdb('120000006000'), 0);
    expect(lun0.data![0]).toBe(0x7f);
    expect(lun0.data![2]).toBe(6);
    expect(run(oci, cdb('120100ff0000')).data!.toString('hex')).toBe('00000006008083b0b1b2');
    expect(run(oci, cdb('1201b2ff0000')).data!.toString('hex')).toBe('00b2000400040200');
    const b0 = run(oci, cdb('1201b0ff0000')).data!;
    expect(b0.readUInt16BE(2)).toBe(0x3c);
    expect(b0.readUInt32BE(8)).toBe(8192); // 4 MiB of 512-byte blocks
    expect(b0.readUInt32BE(20)).toBe(0); // no UNMAP
    expect(
      senseTriple(run(oci, cdb('120000006000'.replace(/^1200/, '1201')).subarray(0, 6)).sense),
    ).toBe('none');
    expect(senseTriple(run(oci, cdb('1201c0ff0000')).sense)).toBe('05/24/00');
  });

  it('REPORT LUNS lists LUN 1 only, on any LUN', () => {
    const r = run(oci, cdb('a00000000000000010000000'), 0);
    expect(r.data!.toString('hex')).toBe('00000008000000000001000000000000');
  });

  it('READ CAPACITY(10/16) with LBPME and LBPRZ', () => {
    expect(run(oci, cdb('25000000000000000000')).data!.toString('hex')).toBe('000fffff00000200');
    expect(run(oci, cdb('9e100000000000000000000000200000')).data!.toString('hex')).toBe(
      `00000000000fffff00000200 0000c000`.replace(/ /g, '') + '00'.repeat(16),
    );
  });

  it('MODE SENSE reports a write-protected medium; writes get DATA PROTECT 27h/00h', () => {
    const ms6 = run(oci, cdb('1a003f00ff00')).data!;
    expect(ms6[2]! & 0x80).toBe(0x80);
    expect(ms6[3]).toBe(8);
    expect(ms6.readUIntBE(9, 3)).toBe(512);
    const ms10 = run(oci, cdb('5a10080000000000ff00')).data!;
    expect(ms10[3]! & 0x80).toBe(0x80);
    expect(ms10.readUInt16BE(6)).toBe(16);
    expect(Number(ms10.readBigUInt64BE(8))).toBe(0x100000);
    expect(senseTriple(run(oci, cdb('2a000000000000000100')).sense)).toBe('07/27/00');
    expect(senseTriple(run(oci, cdb('8a000000000000000000000000010000')).sense)).toBe('07/27/00');
    expect(senseTriple(run(oci, cdb('1a00c000ff00')).sense)).toBe('05/39/00');
  });

  it('READ returns the deterministic data of changed blocks and zeros elsewhere', () => {
    const r = run(oci, cdb('28000000005e00000400')); // LBAs 0x5e..0x61
    expect(r.data!.length).toBe(4 * 512);
    expect(r.data!.subarray(0, 1024).every((b) => b === 0)).toBe(true);
    expect(r.data!.subarray(1024, 1536)).toEqual(documentedBlockData(0x60, 512, 5));
    expect(r.data!.subarray(1024, 1040).toString('hex')).toBe(
      '0000000000000060' + '0000000000000005',
    );
    expect(r.data!.readUInt32BE(1536 + 4)).toBe(0x61);
    // Deallocated blocks read zeros.
    expect(run(oci, cdb('28000000007000000100')).data!.every((b) => b === 0)).toBe(true);
    expect(senseTriple(run(oci, cdb('2800000fffff00000200')).sense)).toBe('05/21/00');
    expect(senseTriple(run(oci, cdb('28000010000000000000')).sense)).toBe('05/21/00');
    expect(run(oci, cdb('28000000000000000000')).status).toBe(0);
    expect(senseTriple(run(oci, cdb('28000000000000ffff00')).sense)).toBe('05/24/00');
  });

  it('READ of random maps equals the documented block-data rule on changed blocks, zeros elsewhere', () => {
    const next = testPrng(5);
    for (let m = 0; m < 20; m++) {
      const blockSize = next() < 0.5 ? 512 : 4096;
      const g: Geometry = {
        sizeBytes: 2 ** 45, // LBAs at and above 2^32: the high words of the hash and of bytes 0-7
        blockSize,
        changeBlockSize: blockSize * 2 ** Math.floor(next() * 3),
      };
      const base = 2 ** 44 + Math.floor(next() * 1000) * blockSize;
      const ranges = randomRanges(m, 4, 256 * 1024, 20_000, 0.25).map((r) => ({
        ...r,
        offset: r.offset + base,
      }));
      const seed = Math.floor(next() * 2 ** 53);
      const dev = new DeviceServer({ map: ChangedMap.fromByteExtents(g, ranges), dataSeed: seed });
      const lba = base / blockSize;
      const blocks = (256 * 1024) / blockSize;
      const c = Buffer.alloc(16);
      c[0] = 0x88;
      c.writeBigUInt64BE(BigInt(lba), 2);
      c.writeUInt32BE(blocks, 10);
      const r = run(dev, c);
      expect(r.status).toBe(0);
      expect(
        r.data!.equals(expectedRead(ranges, g, seed, lba, blocks)),
        JSON.stringify(ranges),
      ).toBe(true);
    }
  });

  it('REPORT SUPPORTED OPERATION CODES lists GET LBA STATUS(32) and not (16)', () => {
    const one = run(oci, cdb('a30c027f0012000010000000')).data!;
    expect(one[1]! & 7).toBe(3);
    expect(one.readUInt16BE(2)).toBe(32);
    expect(one[4]).toBe(0x7f);
    expect(run(oci, cdb('a30c029e0012000010000000')).data!.toString('hex')).toBe('00010000');
    expect(run(oci, cdb('a30c029e0010000010000000')).data![1]! & 7).toBe(3);
    const all = run(oci, cdb('a30c00000000000100000000')).data!;
    const n = all.readUInt32BE(0) / 8;
    const ops = [];
    for (let i = 0; i < n; i++) ops.push(all.subarray(4 + i * 8, 4 + i * 8 + 4).toString('hex'));
    expect(ops).toContain('7f000012');
    expect(ops).not.toContain('9e000012');
    const with16 = new DeviceServer({ map: ociMap, dataSeed: 0, gls16: true });
    expect(run(with16, cdb('a30c029e0012000010000000')).data![1]! & 7).toBe(3);
  });

  it('UNIT ATTENTION 29h/00h once per nexus; INQUIRY does not consume it', () => {
    const nexus = new NexusState();
    nexus.addUnitAttention(1);
    const exec = (c: string) => oci.execute({ lun: 1, cdb: cdb(c), nexus });
    expect(exec('120000006000').status).toBe(0);
    expect(senseTriple(exec('000000000000').sense)).toBe('06/29/00');
    expect(exec('000000000000').status).toBe(0);
    nexus.addUnitAttention(1);
    const rs = exec('0300000012 00');
    expect(rs.status).toBe(0);
    expect(senseTriple(rs.data)).toBe('06/29/00');
    expect(senseTriple(exec('030000001200').data)).toBe('00/00/00');
  });

  it('answers unknown opcodes with 20h/00h and other LUNs with 25h/00h', () => {
    expect(senseTriple(run(oci, cdb('c10000000000')).sense)).toBe('05/20/00');
    expect(senseTriple(run(oci, cdb('000000000000'), 2).sense)).toBe('05/25/00');
  });
});

describe('profiles', () => {
  // A 4096-block volume: mapped [0x40, 0x48) and [0x100, 0x110); deallocated [0x48, 0x50).
  const small = (cbs = 512) =>
    ChangedMap.fromByteExtents({ sizeBytes: 4096 * 512, blockSize: 512, changeBlockSize: cbs }, [
      { offset: 0x40 * 512, length: 8 * 512 },
      { offset: 0x48 * 512, length: 8 * 512, status: 'deallocated' },
      { offset: 0x100 * 512, length: 0x10 * 512 },
    ]);
  const hex = (s: string) => s.replace(/ /g, '');

  describe('scsi_debug', () => {
    const dev = new DeviceServer({ map: small(), dataSeed: 0, profile: 'scsi_debug' });

    it('refuses GET LBA STATUS(32) with 24h/00h, field pointer byte 8 bit 7 (as observed)', () => {
      const r = run(dev, gls32Cdb(0, 8, 1024));
      expect(r.status).toBe(2);
      expect(r.sense!.toString('hex')).toBe('700005000000000a00000000240000cf0008');
    });

    it('answers (16) with one descriptor, statuses 0/1, condition 0 and RTP 0', () => {
      // The observed reply after writing at LBA 0x40: length 20, byte 7 zero.
      expect(run(dev, gls16Cdb(0x40, 1024)).data!.toString('hex')).toBe(
        hex('00000014 00000000 0000000000000040 00000008 00000000'),
      );
      // From the requested LBA to the end of its run; deallocated and never-written alike are 1.
      expect(parseGls(run(dev, gls16Cdb(0x44, 1024)).data!).descriptors).toEqual([
        { lba: 0x44, blocks: 4, status: 0 },
      ]);
      expect(parseGls(run(dev, gls16Cdb(0x48, 1024)).data!).descriptors).toEqual([
        { lba: 0x48, blocks: 0x100 - 0x48, status: 1 },
      ]);
      expect(parseGls(run(dev, gls16Cdb(0, 1024)).data!).descriptors).toEqual([
        { lba: 0, blocks: 0x40, status: 1 },
      ]);
      expect(parseGls(run(dev, gls16Cdb(0x110, 1024)).data!).descriptors).toEqual([
        { lba: 0x110, blocks: 4096 - 0x110, status: 1 },
      ]);
    });

    it('ignores the report type', () => {
      for (const rt of [0, 1, 2, 3, 0x10, 0xff]) {
        expect(run(dev, gls16Cdb(0x40, 1024, rt)).data!.toString('hex')).toBe(
          hex('00000014 00000000 0000000000000040 00000008 00000000'),
        );
      }
    });

    it('returns GOOD with no data for an allocation length below 24', () => {
      for (const alloc of [0, 8, 23]) {
        const r = run(dev, gls16Cdb(0x40, alloc));
        expect(r.status).toBe(0);
        expect(r.data?.length ?? 0).toBe(0);
      }
      expect(run(dev, gls16Cdb(0x40, 24)).data!.length).toBe(24);
    });

    it('refuses a start LBA at or past the capacity with 21h/00h', () => {
      expect(senseTriple(run(dev, gls16Cdb(4096, 1024)).sense)).toBe('05/21/00');
    });

    it('identifies as Linux scsi_debug and lists (16), not (32)', () => {
      expect(run(dev, cdb('120000006000')).data!.subarray(8, 36).toString('latin1')).toBe(
        'Linux   scsi_debug      0191',
      );
      expect(run(dev, cdb('a30c029e0012000010000000')).data![1]! & 7).toBe(3);
      expect(run(dev, cdb('a30c027f0012000010000000')).data!.toString('hex')).toBe('00010000');
    });
  });

  describe('tgt', () => {
    const dev = new DeviceServer({ map: small(), dataSeed: 0, profile: 'tgt' });
    // Every run from the requested LBA to the end of the LUN: 5 from LBA 0.
    const fromZero = [
      { lba: 0, blocks: 0x40, status: 1 },
      { lba: 0x40, blocks: 8, status: 0 },
      { lba: 0x48, blocks: 0xb8, status: 1 },
      { lba: 0x100, blocks: 0x10, status: 0 },
      { lba: 0x110, blocks: 4096 - 0x110, status: 1 },
    ];

    it('refuses GET LBA STATUS(32) with 20h/00h', () => {
      expect(senseTriple(run(dev, gls32Cdb(0, 8, 1024)).sense)).toBe('05/20/00');
    });

    it('reports every run to the end of the LUN, condition 0, RTP 0, whatever the report type', () => {
      for (const rt of [0, 1, 2, 3]) {
        expect(parseGls(run(dev, gls16Cdb(0, 1024, rt)).data!)).toEqual({
          parameterDataLength: 4 + 16 * 5,
          completionCondition: 0,
          rtp: 0,
          descriptors: fromZero,
        });
      }
      expect(parseGls(run(dev, gls16Cdb(0x44, 1024)).data!).descriptors).toEqual([
        { lba: 0x44, blocks: 4, status: 0 },
        ...fromZero.slice(2),
      ]);
    });

    it('counts every descriptor in PARAMETER DATA LENGTH and cuts the data at the allocation length', () => {
      const one = run(dev, gls16Cdb(0, 24)).data!;
      expect(one.toString('hex')).toBe(hex('00000054 00000000 0000000000000000 00000040 01000000'));
      // 30 bytes: one descriptor and the first 6 bytes of the next (cut in half).
      const cutReply = run(dev, gls16Cdb(0, 30)).data!;
      expect(cutReply.length).toBe(30);
      expect(cutReply.readUInt32BE(0)).toBe(0x54);
      expect(cutReply.subarray(24).toString('hex')).toBe('000000000000');
      expect(run(dev, gls16Cdb(0, 4)).data!.toString('hex')).toBe('00000054');
    });

    it('identifies as IET VIRTUAL-DISK', () => {
      expect(run(dev, cdb('120000006000')).data!.subarray(8, 32).toString('latin1')).toBe(
        'IET     VIRTUAL-DISK    ',
      );
    });
  });

  describe('oci quirks', () => {
    // One mapped extent [90, 130) on a 1000-block volume.
    const map = ChangedMap.fromByteExtents(
      { sizeBytes: 1000 * 512, blockSize: 512, changeBlockSize: 512 },
      [{ offset: 90 * 512, length: 40 * 512 }],
    );
    const with_ = (quirks: object) => new DeviceServer({ map, dataSeed: 0, quirks });
    const window = (dev: DeviceServer, rt = 1) =>
      parseGls(run(dev, gls32Cdb(100, 20, 1024, rt)).data!);

    it('clips to the window by default', () => {
      expect(window(with_({})).descriptors).toEqual([{ lba: 100, blocks: 20, status: 3 }]);
    });

    it('unclippedStart: the descriptor starts where the extent starts', () => {
      expect(window(with_({ unclippedStart: true }))).toMatchObject({
        completionCondition: 2,
        descriptors: [{ lba: 90, blocks: 30, status: 3 }],
      });
    });

    it('overrunWindow: the descriptor runs to the end of the extent', () => {
      expect(window(with_({ overrunWindow: true })).descriptors).toEqual([
        { lba: 100, blocks: 30, status: 3 },
      ]);
      expect(window(with_({ unclippedStart: true, overrunWindow: true })).descriptors).toEqual([
        { lba: 90, blocks: 40, status: 3 },
      ]);
    });

    it('ignoreReportType: RTP 0 and every LBA listed, mapped as 0', () => {
      const dev = with_({ ignoreReportType: true });
      for (const rt of [1, 2, 3]) {
        expect(parseGls(run(dev, gls32Cdb(0, 1000, 1024, rt)).data!)).toEqual({
          parameterDataLength: 4 + 16 * 3,
          completionCondition: 3,
          rtp: 0,
          descriptors: [
            { lba: 0, blocks: 90, status: 1 },
            { lba: 90, blocks: 40, status: 0 },
            { lba: 130, blocks: 870, status: 1 },
          ],
        });
      }
    });

    it('refuses quirks on other profiles, unknown quirks and unknown profiles', () => {
      expect(
        () =>
          new DeviceServer({ map, dataSeed: 0, profile: 'tgt', quirks: { unclippedStart: true } }),
      ).toThrow(RangeError);
      expect(() => with_({ clipEverything: true })).toThrow(/unknown quirk/);
      expect(() => new DeviceServer({ map, dataSeed: 0, profile: 'lio' as never })).toThrow(
        /profile must be one of oci, scsi_debug, tgt/,
      );
    });
  });

  it('reads mapped blocks with the pattern fillBlock writes, zeros elsewhere', () => {
    const dev = new DeviceServer({
      map: small(),
      dataSeed: 0,
      fillBlock: (out, offset, lba) => out.fill(lba & 0xff, offset, offset + 512),
    });
    const r = run(dev, cdb('28000000003f00000300')); // LBAs 0x3f..0x41
    expect(r.data!.subarray(0, 512).every((b) => b === 0)).toBe(true);
    expect(r.data!.subarray(512, 1024).every((b) => b === 0x40)).toBe(true);
    expect(r.data!.subarray(1024).every((b) => b === 0x41)).toBe(true);
  });

  it('executes under fault decisions as the iSCSI target does', () => {
    const req = { lun: 1, cdb: gls32Cdb(0x60, 2097152, 32768) };
    expect(oci.executeWithFault(req, 'busy')).toEqual({ status: 8 });
    expect(oci.executeWithFault(req, 'task-set-full')).toEqual({ status: 0x28 });
    expect(senseTriple(oci.executeWithFault(req, 'unit-attention')!.sense)).toBe('06/29/00');
    expect(senseTriple(oci.executeWithFault(req, 'not-ready')!.sense)).toBe('02/04/01');
    expect(oci.executeWithFault(req, 'drop-connection')).toBeUndefined();
    const bad = oci.executeWithFault(req, 'gls-bad-length')!.data!;
    expect((bad.readUInt32BE(0) - 4) % 16).not.toBe(0);
    const [a, b] = parseGls(oci.executeWithFault(req, 'gls-overlap')!.data!).descriptors;
    expect(b!.lba).toBeLessThan(a!.lba + a!.blocks);
    expect(oci.executeWithFault(req, undefined)!.data!.toString('hex')).toBe(
      ociReply.replace(/ /g, ''),
    );
  });
});
