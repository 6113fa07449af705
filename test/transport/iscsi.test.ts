import { afterEach, describe, expect, it } from 'vitest';
import { startSimulator } from '../../lib/sim/simulator.js';
import type { IscsiTransport } from '../../lib/transport/iscsi.js';
import { openIscsiTransport } from '../../lib/transport/iscsi.js';
import { DataDirection, HostStatus } from '../../lib/transport/types.js';
import {
  BLOCK,
  expectedRead,
  frame,
  gls32,
  parseDescriptors,
  read16,
  startProxy,
  startTestTarget,
  type TestTarget,
  TUR,
  tcpSockets,
  waitFor,
} from './iscsi-support.js';

const cleanup: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const CHANGED = [
  { offset: 1 << 20, length: 64 * 1024 },
  { offset: 3 << 20, length: 4096 },
  { offset: 5 << 20, length: 8192, status: 'deallocated' as const },
  { offset: 9 << 20, length: 256 * 1024 },
];

async function target(opts: Parameters<typeof startTestTarget>[0] = {}): Promise<TestTarget> {
  const t = await startTestTarget({ changed: CHANGED, ...opts });
  cleanup.push(() => t.close());
  return t;
}

async function open(url: string, opts: Parameters<typeof openIscsiTransport>[1] = {}) {
  const tr = (await openIscsiTransport(url, opts)) as IscsiTransport;
  cleanup.push(() => tr.close());
  return tr;
}

function cmd(
  cdb: Uint8Array,
  dataIn = 0,
  timeoutMs = 5000,
): {
  cdb: Uint8Array;
  direction: DataDirection;
  data: Uint8Array | null;
  sense: Uint8Array;
  timeoutMs: number;
} {
  return {
    cdb,
    direction: dataIn > 0 ? DataDirection.FromDevice : DataDirection.None,
    data: dataIn > 0 ? new Uint8Array(dataIn) : null,
    sense: new Uint8Array(96),
    timeoutMs,
  };
}

function senseTriple(c: { sense: Uint8Array }): string {
  return [c.sense[2]! & 0x0f, c.sense[12]!, c.sense[13]!]
    .map((x) => x.toString(16).padStart(2, '0'))
    .join('/');
}

describe('openIscsiTransport against the simulator', () => {
  it('opens with the documented shape and returns SG_IO-shaped outcomes (UA after login, INQUIRY resid)', async () => {
    const s = await startSimulator({ sizeBytes: 16 << 20 });
    cleanup.push(() => s.close());
    const url = `iscsi://${s.host}:${s.port}/${s.iqn}/${s.lun}`;
    const tr = await open(url);
    expect(tr.kind).toBe('iscsi');
    expect(tr.address).toBe(url);
    expect(tr.queueDepth).toBe(4);
    expect(tr.allocate(10)).toEqual(new Uint8Array(10));

    const ua = cmd(TUR);
    const o1 = await tr.execute(ua);
    expect(o1).toMatchObject({ errno: 0, status: 2, hostStatus: 0, driverStatus: 8, resid: 0 });
    expect(o1.senseLength).toBeGreaterThanOrEqual(14);
    expect(senseTriple(ua)).toBe('06/29/00');
    expect(await tr.execute(cmd(TUR))).toMatchObject({ status: 0, hostStatus: 0, senseLength: 0 });

    const inq = cmd(Uint8Array.from([0x12, 0, 0, 0, 0xff, 0]), 255);
    const o = await tr.execute(inq);
    expect(o).toMatchObject({ status: 0, hostStatus: 0, driverStatus: 0 });
    const got = 255 - o.resid;
    expect(Buffer.from(inq.data!.subarray(8, 14)).toString()).toBe('ORACLE');
    expect(got).toBeGreaterThanOrEqual(36);
    expect(inq.data!.subarray(got).every((b) => b === 0)).toBe(true);
    expect(o.durationMs).toBeGreaterThanOrEqual(0);
    await tr.close();
    await tr.close(); // idempotent
    expect(s.stats.logouts).toBe(1);
    expect(s.sessions).toBe(0);
    const after = await tr.execute(cmd(TUR));
    expect(after.hostStatus).toBe(HostStatus.TRANSPORT_FAILFAST);
    expect(after.detail).toMatch(/closed/);
  });

  it('runs 64 READ(16) and GET LBA STATUS(32) at queue depth 8 through a window of 2, all with exact data', async () => {
    const t = await target({ queueDepth: 2 });
    t.faults.add({ kind: 'latency', ms: 5, on: 'any', count: 1000 });
    const tr = await open(t.url(), { queueDepth: 8 });
    let maxInFlight = 0;
    const jobs: Array<Promise<void>> = [];
    for (let i = 0; i < 64; i++) {
      if (i % 4 === 3) {
        const c = cmd(gls32(0, 1 << 21, 4096), 4096);
        jobs.push(
          tr.execute(c).then((o) => {
            expect(o).toMatchObject({ status: 0, hostStatus: 0 });
            const valid = 4096 - o.resid;
            expect(parseDescriptors(c.data!, valid)).toEqual(
              CHANGED.map((x) => ({
                lba: x.offset / BLOCK,
                blocks: x.length / BLOCK,
                status: x.status === 'deallocated' ? 1 : 3,
              })),
            );
          }),
        );
      } else {
        // Ranges over changed, deallocated and untouched blocks; up to 1 MiB.
        const lba = ((i * 977) % 24_000) + (i % 2 ? 2000 : 0);
        const blocks = 1 + ((i * 131) % 2048);
        const c = cmd(read16(lba, blocks), blocks * BLOCK);
        jobs.push(
          tr.execute(c).then((o) => {
            expect(o).toMatchObject({ status: 0, hostStatus: 0, resid: 0 });
            expect(Buffer.from(c.data!).equals(expectedRead(CHANGED, lba, blocks))).toBe(true);
          }),
        );
      }
      maxInFlight = Math.max(maxInFlight, tr.initiator.inFlight);
    }
    const sampler = setInterval(() => {
      maxInFlight = Math.max(maxInFlight, tr.initiator.inFlight);
    }, 1);
    await Promise.all(jobs);
    clearInterval(sampler);
    expect(maxInFlight).toBeGreaterThanOrEqual(2);
    expect(maxInFlight).toBeLessThanOrEqual(8);
    expect(t.log.filter((l) => l.includes('ignoring CmdSN'))).toEqual([]);
    expect(t.target.stats.commands).toBe(64);
  });

  it('reads exact data at queue depth 8 with a wide window (several commands really in flight)', async () => {
    const t = await target();
    t.faults.add({ kind: 'latency', ms: 20, on: 'read', count: 16 });
    const tr = await open(t.url(), { queueDepth: 8 });
    const cmds = Array.from({ length: 16 }, (_, i) => {
      const lba = 2048 + i * 16;
      return { lba, c: cmd(read16(lba, 16), 16 * BLOCK) };
    });
    const p = Promise.all(cmds.map(({ c }) => tr.execute(c)));
    await waitFor(() => tr.initiator.inFlight === 8, 2000, '8 commands in flight');
    const outs = await p;
    for (const [i, o] of outs.entries()) {
      expect(o.status).toBe(0);
      expect(Buffer.from(cmds[i]!.c.data!).equals(expectedRead(CHANGED, cmds[i]!.lba, 16))).toBe(
        true,
      );
    }
  });

  it('writes a data-out command (immediate data) and returns the target sense as the outcome', async () => {
    const t = await target();
    const tr = await open(t.url());
    const w = Buffer.alloc(10);
    w[0] = 0x2a;
    w.writeUInt32BE(100, 2);
    w.writeUInt16BE(1, 7);
    const c = {
      cdb: w,
      direction: DataDirection.ToDevice,
      data: new Uint8Array(512).fill(7),
      sense: new Uint8Array(96),
      timeoutMs: 5000,
    };
    const o = await tr.execute(c);
    expect(o).toMatchObject({ status: 2, hostStatus: 0, driverStatus: 8 });
    expect(senseTriple(c)).toBe('07/27/00'); // write protected: the delta volume is read-only
  });

  it('never sends more immediate data than FirstBurstLength and the target MaxRecvDataSegmentLength allow', async () => {
    const t = await target();
    const proxy = await startProxy(t.port);
    cleanup.push(() => proxy.close());
    const tr = await open(`iscsi://127.0.0.1:${proxy.port}/${t.iqn}/1`);
    const segments: number[] = [];
    proxy.toTarget = (raw) => {
      if ((raw.bhs[0]! & 0x3f) === 0x01) segments.push(raw.data.length);
      return frame(raw);
    };
    const limit = Math.min(
      tr.initiator.firstBurstLength,
      tr.initiator.targetMaxRecvDataSegmentLength,
    );
    expect(limit).toBe(Number(tr.initiator.loginKeys.get('MaxRecvDataSegmentLength')));
    const w = Buffer.alloc(10);
    w[0] = 0x2a;
    w.writeUInt16BE(600, 7);
    const c = {
      cdb: w,
      direction: DataDirection.ToDevice,
      data: new Uint8Array(600 * BLOCK),
      sense: new Uint8Array(96),
      timeoutMs: 5000,
    };
    expect((await tr.execute(c)).status).toBe(2);
    expect(segments).toEqual([limit]);
  });

  it('closes in bounded time, logs out, and leaves no socket behind', async () => {
    const t = await target();
    const before = tcpSockets();
    const tr = await openIscsiTransport(t.url());
    expect(tcpSockets()).toBeGreaterThan(before);
    await tr.close();
    await waitFor(() => tcpSockets() <= before, 2000, 'sockets to close');
    expect(t.target.stats.logouts).toBe(1);
  });
});
