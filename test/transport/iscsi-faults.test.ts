import { afterEach, describe, expect, it } from 'vitest';
import { Opcode, RESERVED_TAG } from '../../lib/iscsi/pdu.js';
import type { IscsiTransport } from '../../lib/transport/iscsi.js';
import { openIscsiTransport } from '../../lib/transport/iscsi.js';
import { DataDirection, HostStatus } from '../../lib/transport/types.js';
import {
  BLOCK,
  expectedRead,
  frame,
  gls32,
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
  { offset: 6 << 20, length: 4096 },
];

async function target(opts: Parameters<typeof startTestTarget>[0] = {}): Promise<TestTarget> {
  const t = await startTestTarget({ changed: CHANGED, ...opts });
  cleanup.push(() => t.close());
  return t;
}

async function open(url: string, opts: Parameters<typeof openIscsiTransport>[1] = {}) {
  const tr = (await openIscsiTransport(url, {
    reconnect: { attempts: 3, delayMs: 10 },
    ...opts,
  })) as IscsiTransport;
  cleanup.push(() => tr.close());
  return tr;
}

function cmd(cdb: Uint8Array, dataIn = 0, timeoutMs = 5000) {
  return {
    cdb,
    direction: dataIn > 0 ? DataDirection.FromDevice : DataDirection.None,
    data: dataIn > 0 ? new Uint8Array(dataIn) : null,
    sense: new Uint8Array(96),
    timeoutMs,
  } as const;
}

function senseTriple(c: { sense: Uint8Array }): string {
  return [c.sense[2]! & 0x0f, c.sense[12]!, c.sense[13]!]
    .map((x) => x.toString(16).padStart(2, '0'))
    .join('/');
}

const READ_LBA = 2048;
const READ_BLOCKS = 128;
const readCmd = () => cmd(read16(READ_LBA, READ_BLOCKS), READ_BLOCKS * BLOCK);
const exact = (c: { data: Uint8Array | null }) =>
  Buffer.from(c.data!).equals(expectedRead(CHANGED, READ_LBA, READ_BLOCKS));

describe('SCSI-level faults come back as status and sense, never retried by the transport', () => {
  it('BUSY, TASK SET FULL, NOT READY, UNIT ATTENTION, malformed GET LBA STATUS', async () => {
    const t = await target();
    const tr = await open(t.url());
    const one = async (kind: string, on: 'any' | 'get-lba-status' = 'any') => {
      t.faults.add({ kind: kind as 'busy', on });
      const c = cmd(gls32(0, 1 << 17, 4096), 4096);
      return { o: await tr.execute(c), c };
    };
    const busy = await one('busy');
    expect(busy.o).toMatchObject({ status: 8, hostStatus: 0, senseLength: 0 });
    expect((await one('task-set-full')).o).toMatchObject({ status: 0x28, hostStatus: 0 });
    const nr = await one('not-ready');
    expect(nr.o).toMatchObject({ status: 2, hostStatus: 0, driverStatus: 8 });
    expect(senseTriple(nr.c)).toBe('02/04/01');
    const ua = await one('unit-attention');
    expect(ua.o).toMatchObject({ status: 2, hostStatus: 0 });
    expect(senseTriple(ua.c)).toBe('06/29/00');
    // Malformed replies pass through untouched: judging them is the scanner's job.
    const bad = await one('gls-bad-length', 'get-lba-status');
    expect(bad.o).toMatchObject({ status: 0, hostStatus: 0 });
    expect((Buffer.from(bad.c.data!).readUInt32BE(0) - 4) % 16).not.toBe(0);
    const ov = await one('gls-overlap', 'get-lba-status');
    expect(ov.o.status).toBe(0);
    // One command each: the transport retried nothing.
    expect(t.target.stats.commands).toBe(6);
    expect(tr.initiator.stats.reconnects).toBe(0);
  });
});

describe('timeouts', () => {
  it('latency beyond the timeout: ABORT TASK, then TIME_OUT with a detail; the session goes on', async () => {
    const t = await target();
    const tr = await open(t.url());
    t.faults.add({ kind: 'latency', ms: 60_000, on: 'read' });
    const c = cmd(read16(READ_LBA, READ_BLOCKS), READ_BLOCKS * BLOCK, 100);
    const o = await tr.execute(c);
    expect(o.hostStatus).toBe(HostStatus.TIME_OUT);
    expect(o.detail).toMatch(
      /no answer within 100 ms; aborted with ABORT TASK \(function complete\)/,
    );
    expect(o.status).toBe(0);
    expect(o.resid).toBe(READ_BLOCKS * BLOCK);
    expect(t.log.some((l) => l.startsWith('tmf function=1 '))).toBe(true);
    expect(tr.initiator.stats.aborts).toBe(1);
    const next = readCmd();
    expect((await tr.execute(next)).status).toBe(0);
    expect(exact(next)).toBe(true);
    expect(tr.initiator.stats.reconnects).toBe(0);
  });

  it('an unanswered ABORT TASK drops the connection; the command ends TIME_OUT and the session reconnects', async () => {
    const t = await target();
    const proxy = await startProxy(t.port);
    cleanup.push(() => proxy.close());
    const tr = await open(`iscsi://127.0.0.1:${proxy.port}/${t.iqn}/1`);
    t.faults.add({ kind: 'latency', ms: 60_000, on: 'read' });
    // The target never sees the ABORT TASK (nor answers it).
    proxy.toTarget = (raw) => ((raw.bhs[0]! & 0x3f) === Opcode.TaskMgmtRequest ? null : frame(raw));
    const o = await tr.execute(cmd(read16(0, 8), 8 * BLOCK, 100));
    expect(o.hostStatus).toBe(HostStatus.TIME_OUT);
    expect(o.detail).toMatch(/no answer to ABORT TASK within \d+ ms: connection dropped/);
    proxy.toTarget = undefined;
    await waitFor(() => tr.initiator.state === 'full' && proxy.accepted === 2, 5000, 'reconnect');
    const next = readCmd();
    expect((await tr.execute(next)).status).toBe(0);
    expect(exact(next)).toBe(true);
  }, 15_000);
});

describe('connection loss', () => {
  it('drop-connection: the read is re-issued after reconnect (old TSIH) and completes GOOD with exact data', async () => {
    const t = await target({ unitAttentionOnLogin: true });
    const tr = await open(t.url());
    await tr.execute(cmd(TUR)); // consume the login UNIT ATTENTION
    const tsih = tr.initiator.tsih;
    t.faults.add({ kind: 'drop-connection', on: 'read' });
    const c = readCmd();
    const o = await tr.execute(c);
    expect(o).toMatchObject({ status: 0, hostStatus: 0, resid: 0 });
    expect(exact(c)).toBe(true);
    expect(tr.initiator.stats).toMatchObject({ reconnects: 1, reissued: 1 });
    // Connection reinstatement kept the session: same TSIH, no new UNIT ATTENTION.
    expect(tr.initiator.tsih).toBe(tsih);
    expect(t.target.stats.logins).toBe(1);
    expect((await tr.execute(cmd(TUR))).status).toBe(0);
  });

  it('many reads in flight when the connection drops: every one completes with exact data', async () => {
    const t = await target({ queueDepth: 4 });
    const tr = await open(t.url(), { queueDepth: 8 });
    t.faults.add({ kind: 'latency', ms: 10, on: 'any', count: 1000 });
    t.faults.add({ kind: 'drop-connection', on: 'read', count: 1 });
    const jobs = Array.from({ length: 24 }, (_, i) => {
      const lba = 2000 + i * 7;
      const c = cmd(read16(lba, 64), 64 * BLOCK);
      return tr.execute(c).then((o) => {
        expect(o).toMatchObject({ status: 0, hostStatus: 0 });
        expect(Buffer.from(c.data!).equals(expectedRead(CHANGED, lba, 64))).toBe(true);
      });
    });
    await Promise.all(jobs);
    expect(tr.initiator.stats.reconnects).toBe(1);
  });

  it('a command that may change the medium is not re-issued: TRANSPORT_FAILFAST', async () => {
    const t = await target();
    const tr = await open(t.url());
    t.faults.add({ kind: 'drop-connection', on: 'any' });
    const w = Buffer.alloc(10);
    w[0] = 0x2a;
    w.writeUInt16BE(1, 7);
    const o = await tr.execute({
      cdb: w,
      direction: DataDirection.ToDevice,
      data: new Uint8Array(512),
      sense: new Uint8Array(96),
      timeoutMs: 5000,
    });
    expect(o.hostStatus).toBe(HostStatus.TRANSPORT_FAILFAST);
    expect(o.detail).toMatch(/opcode 0x2a\) was not sent again because it may change the medium/);
    // The session itself recovered.
    expect((await tr.execute(cmd(TUR))).status).toBe(0);
  });

  it('a target that drops every try: re-issue is bounded, then TRANSPORT_FAILFAST', async () => {
    const t = await target();
    const tr = await open(t.url(), { reconnect: { attempts: 2, delayMs: 5 } });
    t.faults.add({ kind: 'drop-connection', on: 'read', count: 100 });
    const o = await tr.execute(readCmd());
    expect(o.hostStatus).toBe(HostStatus.TRANSPORT_FAILFAST);
    expect(o.detail).toMatch(/after the command had been sent 3 times/);
    expect(t.faults.fired.get('drop-connection')).toBe(3);
  });

  it('a target that goes away mid-command: reconnect gives up, TRANSPORT_FAILFAST, no socket left', async () => {
    const before = tcpSockets();
    const t = await startTestTarget({ changed: CHANGED });
    const tr = await openIscsiTransport(t.url(), { reconnect: { attempts: 2, delayMs: 5 } });
    t.faults.add({ kind: 'latency', ms: 60_000, on: 'read' });
    const p = tr.execute(readCmd());
    await waitFor(() => t.target.stats.commands === 1, 2000, 'the read to reach the target');
    await t.close();
    const o = await p;
    expect(o.hostStatus).toBe(HostStatus.TRANSPORT_FAILFAST);
    expect(o.detail).toMatch(/2 reconnect attempt\(s\) failed \(last: connect ECONNREFUSED/);
    const later = await tr.execute(cmd(TUR));
    expect(later.hostStatus).toBe(HostStatus.TRANSPORT_FAILFAST);
    expect(later.detail).toMatch(/session is down/);
    await tr.close();
    await waitFor(() => tcpSockets() <= before, 2000, 'sockets to close');
  });

  it('a restarted target (session forgotten): a new session with the same ISID; its UNIT ATTENTION is just an outcome', async () => {
    const first = await startTestTarget({ changed: CHANGED, unitAttentionOnLogin: true });
    cleanup.push(() => first.close());
    const port = first.port;
    const tr = await open(first.url(), { reconnect: { attempts: 50, delayMs: 20 } });
    const isid = tr.initiator.isid;
    await tr.execute(cmd(TUR)); // login UA
    first.faults.add({ kind: 'latency', ms: 60_000, on: 'read' });
    const inflight = readCmd();
    const p = tr.execute(inflight);
    await waitFor(() => first.target.stats.commands === 2, 2000, 'the read to reach the target');
    await first.close();
    const second = await target({ port, unitAttentionOnLogin: true });
    const o = await p;
    // Re-issued on the new session, which raises its UNIT ATTENTION: returned, not retried.
    expect(o).toMatchObject({ status: 2, hostStatus: 0, driverStatus: 8 });
    expect(senseTriple(inflight)).toBe('06/29/00');
    expect(second.target.stats.logins).toBe(1);
    expect(second.log.some((l) => l.includes('login Normal'))).toBe(true);
    expect(tr.initiator.isid.equals(isid)).toBe(true);
    const again = readCmd();
    expect((await tr.execute(again)).status).toBe(0);
    expect(exact(again)).toBe(true);
  }, 15_000);
});

describe('protocol violations by the target', () => {
  it('Data-In outside the buffer: the command ends with ERROR and a detail; the connection is dropped and re-made', async () => {
    const t = await target();
    const proxy = await startProxy(t.port);
    cleanup.push(() => proxy.close());
    const tr = await open(`iscsi://127.0.0.1:${proxy.port}/${t.iqn}/1`);
    let mangled = 0;
    proxy.toInitiator = (raw) => {
      if ((raw.bhs[0]! & 0x3f) === Opcode.DataIn && mangled === 0) {
        mangled++;
        raw.bhs.writeUInt32BE(1 << 20, 40); // Buffer Offset far past the 4 KiB asked for
      }
      return frame(raw);
    };
    const c = cmd(read16(READ_LBA, 8), 8 * BLOCK);
    const o = await tr.execute(c);
    expect(o.hostStatus).toBe(HostStatus.ERROR);
    expect(o.detail).toMatch(
      /protocol error: Data-In at buffer offset 1048576, expected 0 .*connection dropped/,
    );
    expect(Buffer.from(c.data!).every((b) => b === 0)).toBe(true); // nothing written
    await waitFor(() => tr.initiator.state === 'full' && proxy.accepted === 2, 5000, 'reconnect');
    const next = readCmd();
    expect((await tr.execute(next)).status).toBe(0);
    expect(exact(next)).toBe(true);
  });

  it('a data segment longer than our MaxRecvDataSegmentLength is refused from its header; the read is re-issued', async () => {
    const t = await target();
    const proxy = await startProxy(t.port);
    cleanup.push(() => proxy.close());
    const tr = await open(`iscsi://127.0.0.1:${proxy.port}/${t.iqn}/1`);
    const declared = tr.initiator.maxRecvDataSegmentLength;
    expect(declared).toBe(262144);
    let mangled = 0;
    proxy.toInitiator = (raw) => {
      if ((raw.bhs[0]! & 0x3f) === Opcode.DataIn && mangled === 0) {
        mangled++;
        raw.bhs.writeUIntBE(declared + 4, 5, 3); // claims more than we can receive
        return raw.bhs; // the header alone: the reader must refuse before buffering a byte more
      }
      return frame(raw);
    };
    const c = readCmd();
    const o = await tr.execute(c);
    expect(o).toMatchObject({ status: 0, hostStatus: 0 });
    expect(exact(c)).toBe(true);
    expect(tr.initiator.stats.reconnects).toBe(1);
  });

  it('answers a target NOP-In ping (TTT set) with a NOP-Out echoing TTT and data', async () => {
    const t = await target();
    const proxy = await startProxy(t.port);
    cleanup.push(() => proxy.close());
    const tr = await open(`iscsi://127.0.0.1:${proxy.port}/${t.iqn}/1`);
    const seen: Buffer[] = [];
    proxy.toTarget = (raw) => {
      if ((raw.bhs[0]! & 0x3f) === Opcode.NopOut && raw.bhs.readUInt32BE(16) === RESERVED_TAG) {
        seen.push(frame(raw));
      }
      return frame(raw);
    };
    proxy.inject({
      opcode: Opcode.NopIn,
      lun: 0,
      itt: RESERVED_TAG,
      ttt: 0x1234,
      statSN: 0,
      expCmdSN: 0,
      maxCmdSN: 0,
      data: Buffer.from('ping'),
    });
    await waitFor(() => seen.length === 1, 2000, 'the NOP-Out answer');
    expect(seen[0]!.readUInt32BE(20)).toBe(0x1234);
    expect(seen[0]!.subarray(48, 52).toString()).toBe('ping');
    expect((await tr.execute(cmd(TUR))).status).toBe(0);
  });
});
