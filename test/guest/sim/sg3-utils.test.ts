// The simulator through the real kernel: the guest's iscsi_tcp initiator is logged in to
// `lba-status sim serve` (scripts/guest/scenarios/sim.sh) and sg3_utils, the tool OCI documents,
// talks to LUN 1. The oracle: the changed byte ranges the simulator drew (`sim serve
// --dump-changed`, before widening) widened by test/support/oracle.ts's naive change-block
// bitmap, and the documented block-data rule written again there — nothing from lib/sim.
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  type ByteRange,
  documentedBlockData,
  expectedDelta,
  expectedReport,
  type Geometry,
  type LbaExtent,
} from '../../support/oracle.js';
import { CommandError, run, scenario, sgGetLbaStatus, testUnitReady } from '../support/index.js';

const s = scenario();
const env = process.env;
const changeBlockSize = Number(env.LBA_STATUS_TEST_SIM_CHANGE_BLOCK_SIZE);
const geometry: Geometry = {
  sizeBytes: s.capacityBlocks * s.blockSize,
  blockSize: s.blockSize,
  changeBlockSize,
};
const changedBytes = JSON.parse(readFileSync(env.LBA_STATUS_TEST_SIM_MAP!, 'utf8')) as ByteRange[];
const expected: LbaExtent[] = expectedDelta(changedBytes, geometry);
const iqn = env.LBA_STATUS_TEST_ISCSI_TARGET!;
const portal = env.LBA_STATUS_TEST_ISCSI_PORTAL!;
const seed = 20240601;

type Ext = { lba: number; blocks: number; status: number };

function merge(list: Ext[]): Ext[] {
  const out: Ext[] = [];
  for (const d of list) {
    const last = out[out.length - 1];
    if (last && last.lba + last.blocks === d.lba && last.status === d.status)
      last.blocks += d.blocks;
    else out.push({ ...d });
  }
  return out;
}

/** Scans the whole LUN with sg_get_lba_status -T -t 1, following the completion conditions. */
async function scan(
  scanLen: number,
  maxlen: number,
): Promise<{ extents: Ext[]; conditions: Set<number> }> {
  const got: Ext[] = [];
  const conditions = new Set<number>();
  let lba = 0;
  for (let i = 0; i < 100_000 && lba < s.capacityBlocks; i++) {
    const r = await sgGetLbaStatus(s.sg, { cdb: 32, lba, scanLen, maxlen, reportType: 1 });
    expect(r.rtp ?? 1).toBe(1);
    const descs = r.descriptors.map((d) => ({
      lba: Number(d.lba),
      blocks: d.blocks,
      status: d.status,
    }));
    for (const d of descs) expect(d.lba).toBeGreaterThanOrEqual(lba);
    got.push(...descs);
    // sg_get_lba_status omits the header when no descriptor came back: that is condition 2 or 3.
    const cc = r.completionCondition ?? (lba + scanLen >= s.capacityBlocks ? 3 : 2);
    conditions.add(cc);
    if (cc === 3) break;
    if (cc === 1) {
      const last = descs[descs.length - 1]!;
      lba = last.lba + last.blocks;
    } else {
      expect(cc).toBe(2);
      lba += scanLen;
    }
  }
  return { extents: merge(got), conditions };
}

describe(`simulator through the kernel initiator (${s.name})`, () => {
  it('attached exactly one disk, LUN 1, identified as ORACLE BlockVolume', async () => {
    const sessions = (await run('iscsiadm', ['-m', 'session'])).stdout.trim().split('\n');
    expect(sessions).toHaveLength(1);
    expect(sessions[0]).toContain(iqn);
    const inq = await run('sg_inq', [s.sg]);
    expect(inq.exitCode).toBe(0);
    expect(inq.stdout).toMatch(/Vendor identification: ORACLE/);
    expect(inq.stdout).toMatch(/Product identification: BlockVolume/);
    const disks = readFileSync('/proc/partitions', 'utf8')
      .split('\n')
      .filter((l) => /\bsd[a-z]+$/.test(l));
    expect(disks).toHaveLength(1);
    expect(readFileSync(`/sys/block/${s.block.slice(5)}/ro`, 'utf8').trim()).toBe('1');
    expect(await testUnitReady(s.sg)).toBe(0);
  });

  it('sg_readcap -l reports the size, block size, LBPME and LBPRZ', async () => {
    const r = await run('sg_readcap', ['-l', s.sg]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`Logical block length=${s.blockSize} bytes`));
    expect(r.stdout).toMatch(/lbpme=1/i);
    expect(r.stdout).toMatch(/lbprz=1/i);
    expect(r.stdout).toMatch(new RegExp(`Last LBA=${s.capacityBlocks - 1} `));
  });

  it('GET LBA STATUS(32) in 1 GiB windows returns exactly the changed set (condition 3)', async () => {
    const window = 2 ** 30 / s.blockSize;
    const { extents, conditions } = await scan(window, 32768);
    expect(extents).toEqual(expected);
    expect(conditions).toEqual(new Set([3]));
  });

  it('agrees window by window with small scan lengths (condition 2) and allocation lengths (condition 1)', async () => {
    const small = Math.floor(s.capacityBlocks / 16);
    const a = await scan(small, 32768);
    expect(a.extents).toEqual(expected);
    expect(a.conditions.has(2)).toBe(true);
    const b = await scan(2 ** 30 / s.blockSize, 8 + 16 * 7);
    expect(b.extents).toEqual(expected);
    expect(b.conditions.has(1)).toBe(true);
    expect(b.conditions.has(3)).toBe(true);
  });

  it('rejects GET LBA STATUS(16) like OCI (sg_get_lba_status -S exits 9)', async () => {
    const err = await sgGetLbaStatus(s.sg, { cdb: 16, lba: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    expect((err as CommandError).exitCode).toBe(9);
  });

  it('sg_get_lba_status -T without -s (scan length 0) scans 1 GiB of blocks from the LBA', async () => {
    const r = await sgGetLbaStatus(s.sg, { cdb: 32, lba: 0, maxlen: 32768, reportType: 1 });
    const window = 2 ** 30 / s.blockSize;
    const end = Math.min(window, s.capacityBlocks);
    expect(r.completionCondition ?? 3).toBe(end === s.capacityBlocks ? 3 : 2);
    const got = r.descriptors.map((d) => ({
      lba: Number(d.lba),
      blocks: d.blocks,
      status: d.status,
    }));
    expect(merge(got)).toEqual(expectedReport(changedBytes, geometry, 1, 0, end));
  });

  it('report types 0, 2 and 3 agree with the per-LBA model (types 0 and 3 report the deallocated rest)', async () => {
    // A window of a few change blocks around the first changed extent.
    const first = expected[0]!;
    const start = Math.max(0, first.lba - 3 * (changeBlockSize / s.blockSize));
    const scanLen = Math.min(
      s.capacityBlocks - start,
      first.blocks + 6 * (changeBlockSize / s.blockSize),
    );
    for (const reportType of [0, 2, 3]) {
      const r = await sgGetLbaStatus(s.sg, {
        cdb: 32,
        lba: start,
        scanLen,
        maxlen: 32768,
        reportType,
      });
      const got = r.descriptors.map((d) => ({
        lba: Number(d.lba),
        blocks: d.blocks,
        status: d.status,
      }));
      expect(merge(got), `report type ${reportType}`).toEqual(
        expectedReport(changedBytes, geometry, reportType, start, start + scanLen),
      );
      expect(got.length, `report type ${reportType}`).toBeGreaterThan(0);
    }
  });

  it('rejects a scan length above 1 GiB of blocks with ILLEGAL REQUEST (exit 5)', async () => {
    const err = await sgGetLbaStatus(s.sg, {
      cdb: 32,
      lba: 0,
      scanLen: 2 ** 30 / s.blockSize + 1,
    }).catch((e: unknown) => e);
    expect((err as CommandError).exitCode).toBe(5);
  });

  it('reads the deterministic data of changed blocks and zeros elsewhere through the block device', async () => {
    const e = expected.find((x) => x.status === 3)!;
    const file = join(tmpdir(), `sim-block-${e.lba}.bin`);
    const r = await run('dd', [
      `if=${s.block}`,
      `of=${file}`,
      `bs=${s.blockSize}`,
      `skip=${e.lba}`,
      'count=2',
      'iflag=direct',
      'status=none',
    ]);
    expect(r.exitCode).toBe(0);
    const got = readFileSync(file);
    expect(got.length).toBe(2 * s.blockSize);
    expect(
      got.subarray(s.blockSize).equals(documentedBlockData(e.lba + 1, s.blockSize, seed)),
    ).toBe(e.blocks > 1);
    // An unchanged block reads zeros.
    const hole = expected[0]!.lba > 0 ? 0 : expected[0]!.lba + expected[0]!.blocks;
    await run('dd', [
      `if=${s.block}`,
      `of=${file}`,
      `bs=${s.blockSize}`,
      `skip=${hole}`,
      'count=1',
      'iflag=direct',
      'status=none',
    ]);
    expect(readFileSync(file).every((b) => b === 0)).toBe(true);
    const first = got.subarray(0, s.blockSize);
    expect(first.equals(documentedBlockData(e.lba, s.blockSize, seed))).toBe(true);
  });

  it('logout leaves no session; a new login brings LUN 1 back', async () => {
    expect(
      (await run('iscsiadm', ['-m', 'node', '-T', iqn, '-p', portal, '--logout'])).exitCode,
    ).toBe(0);
    const none = await run('iscsiadm', ['-m', 'session']);
    expect(none.exitCode).toBe(21); // "No active sessions"
    expect(readFileSync('/proc/partitions', 'utf8')).not.toMatch(/\bsd[a-z]+\n/);
    expect(
      (await run('iscsiadm', ['-m', 'node', '-T', iqn, '-p', portal, '--login'])).exitCode,
    ).toBe(0);
    expect((await run('iscsiadm', ['-m', 'session'])).stdout).toContain(iqn);
  });
});
