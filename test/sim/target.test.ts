import { afterEach, describe, expect, it } from 'vitest';
import { IscsiInitiator } from '../../lib/iscsi/initiator.js';
import {
  encodePdu,
  Opcode,
  type Pdu,
  RESERVED_TAG,
  RejectReason,
  TmfFunction,
} from '../../lib/iscsi/pdu.js';
import { PduReader, PduTooLargeError } from '../../lib/iscsi/reader.js';
import { decodeTextPairs, encodeText } from '../../lib/iscsi/text.js';
import { blockData } from '../../lib/sim/block-data.js';
import { type Simulator, type SimulatorOptions, startSimulator } from '../../lib/sim/simulator.js';
import { TsihAllocator } from '../../lib/sim/target.js';
import {
  isid,
  loginRequest,
  quickLogin,
  RawConn,
  read10,
  scsiCommand,
  waitFor,
} from './abuse-support.js';
import { cdb, gls32Cdb, parseGls, senseTriple } from './helpers.js';

const open: Array<{ close(): unknown }> = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
});

async function sim(opts: Partial<SimulatorOptions> = {}): Promise<Simulator> {
  const s = await startSimulator({
    sizeBytes: 64 * 1024 * 1024,
    changed: [
      { offset: 1 << 20, length: 64 * 1024 },
      { offset: 8 << 20, length: 4096, status: 'deallocated' },
    ],
    ...opts,
  });
  open.push(s);
  return s;
}

async function connect(
  s: Simulator,
  extra: Partial<Parameters<typeof IscsiInitiator.connect>[0]> = {},
) {
  const ini = await IscsiInitiator.connect({
    host: s.host,
    port: s.port,
    targetName: s.iqn,
    initiatorName: 'iqn.2024-01.test:vitest',
    timeoutMs: 5000,
    ...extra,
  });
  open.push({ close: () => ini.destroy() });
  return ini;
}

describe('simulator over TCP', () => {
  it('logs in, raises one UNIT ATTENTION, then answers INQUIRY, READ CAPACITY and GET LBA STATUS(32)', async () => {
    const s = await sim();
    const ini = await connect(s);
    expect(s.sessions).toBe(1);
    expect(ini.loginKeys.get('TargetPortalGroupTag')).toBe('1');
    expect(ini.tsih).toBeGreaterThan(0);
    const tur = await ini.command(1, cdb('000000000000'));
    expect(tur.status).toBe(2);
    expect(senseTriple(tur.sense)).toBe('06/29/00');
    expect((await ini.command(1, cdb('000000000000'))).status).toBe(0);

    const inq = await ini.command(1, cdb('12000000ff00'), { dataInLength: 255 });
    expect(inq.status).toBe(0);
    expect(inq.data.subarray(8, 19).toString()).toBe('ORACLE  Blo');
    expect(inq).toMatchObject({ underflow: true, residualCount: 255 - 96 });

    const rc = await ini.command(1, cdb('9e100000000000000000000000200000'), { dataInLength: 32 });
    expect(Number(rc.data.readBigUInt64BE(0))).toBe(s.capacityBlocks - 1);
    expect(rc.data[14]).toBe(0xc0);

    const gls = await ini.command(1, gls32Cdb(0, 2097152, 32768), { dataInLength: 32768 });
    expect(gls.status).toBe(0);
    expect(gls.residualCount).toBe(32768 - gls.data.length);
    expect(parseGls(gls.data)).toEqual({
      parameterDataLength: 36,
      completionCondition: 3, // the 1 GiB window passes the end of the 64 MiB volume
      rtp: 1,
      descriptors: [
        { lba: 2048, blocks: 128, status: 3 },
        { lba: 16384, blocks: 8, status: 1 },
      ],
    });
    expect(s.stats.byOpcode['7f/0012']).toBe(1);
    await ini.logout();
    expect(s.sessions).toBe(0);
  });

  it('splits Data-In by the initiator MaxRecvDataSegmentLength and returns the block data', async () => {
    const s = await sim({ unitAttentionOnLogin: false, dataSeed: 9 });
    const ini = await connect(s, { maxRecvDataSegmentLength: 4096 });
    const r = await ini.command(1, cdb('28000000080000008000'), { dataInLength: 65536 });
    expect(r.status).toBe(0);
    expect(r.dataInPdus).toBe(16);
    expect(r.data.length).toBe(65536);
    for (let i = 0; i < 128; i++) {
      expect(r.data.subarray(i * 512, i * 512 + 512).equals(blockData(2048 + i, 512, 9))).toBe(
        true,
      );
    }
    // A shorter Expected Data Transfer Length: overflow, data cut.
    const o = await ini.command(1, cdb('28000000080000000200'), { dataInLength: 512 });
    expect(o).toMatchObject({ overflow: true, residualCount: 512 });
    expect(o.data.length).toBe(512);
  });

  it('serves SendTargets in a discovery session and echoes NOP-Out', async () => {
    const s = await sim();
    const d = await IscsiInitiator.connect({
      host: s.host,
      port: s.port,
      sessionType: 'Discovery',
    });
    open.push({ close: () => d.destroy() });
    expect(await d.sendTargets()).toEqual([
      { targetName: s.iqn, addresses: [`127.0.0.1:${s.port},1`] },
    ]);
    expect((await d.nop(Buffer.from('ping'))).toString()).toBe('ping');
    await d.logout();
  });

  it('refuses an unknown target name and bad CHAP credentials', async () => {
    const s = await sim({ chap: { username: 'user', secret: 'secret12chars' } });
    await expect(connect(s, { targetName: 'iqn.2024-01.nope:x' })).rejects.toThrow(
      /status class 2 detail 3/,
    );
    await expect(connect(s)).rejects.toThrow(/CHAP|status class 2/);
    await expect(
      connect(s, { chap: { username: 'user', secret: 'wrong-secret' } }),
    ).rejects.toThrow(/status class 2 detail 1/);
    const ok = await connect(s, { chap: { username: 'user', secret: 'secret12chars' } });
    expect(ok.loginKeys.get('AuthMethod')).toBe('CHAP');
  });

  it('injects BUSY, NOT READY, TASK SET FULL and malformed replies for the next N commands', async () => {
    const s = await sim({
      unitAttentionOnLogin: false,
      faults: [
        { kind: 'busy', count: 1 },
        { kind: 'not-ready', count: 1 },
      ],
    });
    const ini = await connect(s);
    const glsCmd = () => ini.command(1, gls32Cdb(0, 2097152, 4096), { dataInLength: 4096 });
    expect((await ini.command(1, cdb('000000000000'))).status).toBe(0); // not a GET LBA STATUS
    expect((await glsCmd()).status).toBe(8);
    expect(senseTriple((await glsCmd()).sense)).toBe('02/04/01');
    expect((await glsCmd()).status).toBe(0);
    s.faults.add({ kind: 'task-set-full' });
    expect((await glsCmd()).status).toBe(0x28);
    s.faults.add({ kind: 'unit-attention', on: 'any' });
    expect(senseTriple((await ini.command(1, cdb('000000000000'))).sense)).toBe('06/29/00');
    s.faults.add({ kind: 'gls-overlap' });
    const ov = parseGls((await glsCmd()).data);
    expect(ov.descriptors[1]!.lba).toBeLessThan(ov.descriptors[0]!.lba + ov.descriptors[0]!.blocks);
    s.faults.add({ kind: 'gls-bad-length' });
    const bl = (await glsCmd()).data;
    expect((bl.readUInt32BE(0) - 4) % 16).not.toBe(0);
    expect(s.faults.fired.get('busy')).toBe(1);
    expect(s.faults.active).toEqual([]);
  });

  it('applies probabilistic faults reproducibly from a seed', async () => {
    const outcomes = async () => {
      const s = await sim({
        unitAttentionOnLogin: false,
        faults: [{ kind: 'busy', probability: 0.5, seed: 42 }],
      });
      const ini = await connect(s);
      const got: number[] = [];
      for (let i = 0; i < 20; i++) {
        got.push((await ini.command(1, gls32Cdb(0, 8, 1024), { dataInLength: 1024 })).status);
      }
      return got;
    };
    const a = await outcomes();
    expect(a).toEqual(await outcomes());
    expect(a.filter((x) => x === 8).length).toBeGreaterThan(3);
    expect(a.filter((x) => x === 0).length).toBeGreaterThan(3);
  });

  it('adds latency, aborts a delayed task with ABORT TASK, and drops the connection on demand', async () => {
    const s = await sim({ unitAttentionOnLogin: false, faults: [{ kind: 'latency', ms: 150 }] });
    const ini = await connect(s);
    const t0 = Date.now();
    expect((await ini.command(1, gls32Cdb(0, 8, 1024), { dataInLength: 1024 })).status).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);

    s.faults.add({ kind: 'latency', ms: 10_000 });
    const itt = ini.nextItt;
    const received = s.stats.commands + 1;
    const slow = ini.command(1, gls32Cdb(0, 8, 1024), { dataInLength: 1024, timeoutMs: 600 });
    // ABORT TASK once the target holds the delayed command (its stats count it on arrival).
    await expect.poll(() => s.stats.commands, { interval: 1 }).toBe(received);
    expect(await ini.taskManagement(TmfFunction.AbortTask, 1, itt)).toBe(0);
    await expect(slow).rejects.toThrow(/no answer/);
    expect(await ini.taskManagement(TmfFunction.LogicalUnitReset, 1)).toBe(0);
    expect((await ini.command(1, cdb('000000000000'))).status).toBe(0);

    s.faults.add({ kind: 'drop-connection' });
    await expect(ini.command(1, gls32Cdb(0, 8, 1024), { dataInLength: 1024 })).rejects.toThrow(
      /closed/,
    );
    // The session survives the connection for a reconnect; a new login works.
    const again = await connect(s);
    expect((await again.command(1, cdb('000000000000'))).status).toBe(0);
  });

  it('close() ends the sessions', async () => {
    const s = await sim();
    const ini = await connect(s);
    await s.close();
    await expect(ini.command(1, cdb('000000000000'))).rejects.toThrow(/closed/);
    expect(ini.closed).toBe(true);
  });
});

describe('a 16 TiB volume with 100 000 changed extents', () => {
  it('is served and scanned in 1 GiB windows with exactly the changed set', async () => {
    const s = await sim({
      sizeBytes: 16 * 2 ** 40,
      blockSize: 4096,
      changeBlockSize: 1 << 20,
      changed: { random: 100_000, seed: 3, maxExtentChangeBlocks: 8 },
      unitAttentionOnLogin: false,
    });
    expect(s.changedExtents.length).toBe(100_000);
    const ini = await connect(s);
    const window = 2 ** 30 / 4096;
    const got: Array<{ lba: number; blocks: number; status: number }> = [];
    let lba = 0;
    let windows = 0;
    while (lba < s.capacityBlocks) {
      const r = await ini.command(1, gls32Cdb(lba, window, 32768), { dataInLength: 32768 });
      expect(r.status).toBe(0);
      const p = parseGls(r.data);
      got.push(...p.descriptors);
      windows++;
      if (p.completionCondition === 3) break;
      expect(p.completionCondition).toBe(2);
      lba += window;
    }
    expect(windows).toBe(16384);
    // Merge extents split at window edges, then compare with the map.
    const merged: typeof got = [];
    for (const d of got) {
      const last = merged[merged.length - 1];
      if (last && last.lba + last.blocks === d.lba && last.status === d.status)
        last.blocks += d.blocks;
      else merged.push({ ...d });
    }
    expect(merged).toEqual(s.changedExtents);
  }, 120_000);
});

async function raw(s: Simulator): Promise<RawConn> {
  const c = await RawConn.connect(s.host, s.port);
  open.push({ close: () => c.destroy() });
  return c;
}

function expectOpcode<O extends Pdu['opcode']>(p: Pdu, opcode: O): Extract<Pdu, { opcode: O }> {
  expect(p.opcode).toBe(opcode);
  return p as Extract<Pdu, { opcode: O }>;
}

/** The status, sense key/ASC/ASCQ and data of the reply to one command. */
async function reply(c: RawConn): Promise<{ status: number; sense: string; data: Buffer }> {
  const chunks: Buffer[] = [];
  for (;;) {
    const p = await c.next();
    if (p.opcode === Opcode.DataIn) {
      chunks.push(p.data ?? Buffer.alloc(0));
      if (p.hasStatus) return { status: p.status, sense: 'none', data: Buffer.concat(chunks) };
    } else if (p.opcode === Opcode.ScsiResponse) {
      const d = p.data ?? Buffer.alloc(0);
      return {
        status: p.status,
        sense: senseTriple(d.length > 2 ? d.subarray(2) : undefined),
        data: Buffer.concat(chunks),
      };
    } else throw new Error(`unexpected opcode ${p.opcode}`);
  }
}

describe('target limits', () => {
  it('allocates TSIHs without 0 and in bounded steps; none when all 65 535 are taken', () => {
    const used = new Set<number>();
    const a = new TsihAllocator((t) => used.has(t));
    for (let i = 0; i < 65_535; i++) {
      const t = a.allocate()!;
      expect(t).toBeGreaterThan(0);
      used.add(t);
    }
    expect(used.size).toBe(65_535);
    expect(a.allocate()).toBeUndefined();
    used.delete(4242);
    expect(a.allocate()).toBe(4242);
  });

  it('refuses a session past maxSessions with 3/02 while all have connections; a dropped one makes room', async () => {
    const s = await sim({ limits: { maxSessions: 2 } });
    const [c1, c2, c3] = [await raw(s), await raw(s), await raw(s)];
    expect((await quickLogin(c1, { isid: isid(1) })).statusClass).toBe(0);
    expect((await quickLogin(c2, { isid: isid(2) })).statusClass).toBe(0);
    const r3 = await quickLogin(c3, { isid: isid(3) });
    expect([r3.statusClass, r3.statusDetail]).toEqual([3, 2]);
    await c3.waitClosed();
    c1.destroy();
    await waitFor('the target to see the drop', () => s.connections === 1);
    expect(s.sessions).toBe(2); // kept for a reconnect (DefaultTime2Retain)
    const c4 = await raw(s);
    expect((await quickLogin(c4, { isid: isid(4) })).statusClass).toBe(0);
    expect(s.sessions).toBe(2);
    expect(s.stats.reclaimed).toBe(1);
  });

  it('reclaims a session without a connection after sessionRetainSeconds (0: at once)', async () => {
    const s0 = await sim({ limits: { sessionRetainSeconds: 0 } });
    const a = await raw(s0);
    expect((await quickLogin(a)).statusClass).toBe(0);
    a.destroy();
    await waitFor('the session to go', () => s0.sessions === 0);
    const s1 = await sim({ limits: { sessionRetainSeconds: 1 } });
    const b = await raw(s1);
    const r = await quickLogin(b);
    b.destroy();
    await waitFor('the drop', () => s1.connections === 0);
    expect(s1.sessions).toBe(1);
    // Within the retain time the same TSIH reconnects (connection reinstatement)…
    const again = await raw(s1);
    expect((await quickLogin(again, { tsih: r.tsih })).statusClass).toBe(0);
    again.destroy();
    await waitFor('the drop', () => s1.connections === 0);
    // …after it, the session is gone: 2/0a.
    await waitFor('the retain time to pass', () => s1.sessions === 0, 5000);
    const late = await raw(s1);
    const lr = await quickLogin(late, { tsih: r.tsih });
    expect([lr.statusClass, lr.statusDetail]).toEqual([2, 0x0a]);
  });

  it('refuses a second connection with another CID to a session: 2/06 too many connections', async () => {
    const s = await sim();
    const c1 = await raw(s);
    const r = await quickLogin(c1, { isid: isid(7) });
    const c2 = await raw(s);
    const r2 = await quickLogin(c2, { isid: isid(7), tsih: r.tsih, cid: 1 });
    expect([r2.statusClass, r2.statusDetail]).toEqual([2, 6]);
  });

  it('answers a connection past maxConnections with 3/02, and closes a login that takes too long', async () => {
    const s = await sim({ limits: { maxConnections: 2, loginTimeoutMs: 300 } });
    const [c1, c2] = [await raw(s), await raw(s)];
    await waitFor('two connections', () => s.connections === 2);
    const c3 = await raw(s);
    const r = await quickLogin(c3);
    expect([r.statusClass, r.statusDetail]).toEqual([3, 2]);
    await c3.waitClosed();
    // c1 and c2 never log in: the login timeout closes them.
    await Promise.all([c1.waitClosed(), c2.waitClosed()]);
    expect(s.stats.loginTimeouts).toBe(2);
    const c4 = await raw(s);
    expect((await quickLogin(c4)).statusClass).toBe(0);
  });

  it('refuses a PDU above the declared MaxRecvDataSegmentLength from its header: Reject, then close', async () => {
    const s = await sim({ limits: { maxRecvDataSegmentLength: 65536 } });
    const c = await raw(s);
    const r = await quickLogin(c, { mrdsl: 262144 });
    expect(new Map(decodeTextPairs(r.data!)).get('MaxRecvDataSegmentLength')).toBe('65536');
    const nop = (data: Buffer, itt: number, cmdSN: number): Buffer =>
      encodePdu({
        opcode: Opcode.NopOut,
        immediate: true,
        lun: 0,
        itt,
        ttt: RESERVED_TAG,
        cmdSN,
        expStatSN: 0,
        data,
      });
    // Within the limit: echoed.
    const ok = Buffer.alloc(65536, 7);
    await c.write(nop(ok, 1, r.expCmdSN));
    expect(expectOpcode(await c.next(), Opcode.NopIn).data!.equals(ok)).toBe(true);
    // 1 MiB: only the header is read; the rest is never buffered.
    const big = nop(Buffer.alloc(2 ** 20, 8), 2, r.expCmdSN);
    void c.write(big);
    const rej = expectOpcode(await c.next(), Opcode.Reject);
    expect(rej.reason).toBe(RejectReason.ProtocolError);
    expect(rej.data!.equals(big.subarray(0, 48))).toBe(true);
    await c.waitClosed();
    // Ping data the initiator could not receive back (it declared 8192): Reject, connection kept.
    const d = await raw(s);
    const rd = await quickLogin(d, { mrdsl: 8192, isid: isid(2) });
    await d.write(nop(Buffer.alloc(9000), 3, rd.expCmdSN));
    expect(expectOpcode(await d.next(), Opcode.Reject).reason).toBe(RejectReason.ProtocolError);
    await d.write(nop(Buffer.from('ping'), 4, rd.expCmdSN));
    expect(expectOpcode(await d.next(), Opcode.NopIn).data!.toString()).toBe('ping');
  });

  it('releases a refused connection as soon as the client goes, not when its 2 s grace ends', async () => {
    const s = await sim({ limits: { maxRecvDataSegmentLength: 65536 } });
    const c = await raw(s);
    const r = await quickLogin(c, { mrdsl: 262144 });
    const big = encodePdu({
      opcode: Opcode.NopOut,
      immediate: true,
      lun: 0,
      itt: 1,
      ttt: RESERVED_TAG,
      cmdSN: r.expCmdSN,
      expStatSN: 0,
      data: Buffer.alloc(2 ** 20),
    });
    void c.write(big);
    expectOpcode(await c.next(), Opcode.Reject);
    const gone = performance.now();
    c.destroy();
    while (s.connections > 0 && performance.now() - gone < 1500) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(s.connections).toBe(0);
  });

  it('the reader refuses a data segment above its limit from the header alone, after the PDUs before it', () => {
    const r = new PduReader({ maxDataSegmentLength: 8192 });
    const small = encodePdu(loginRequest({ keys: [['A', 'b']] }));
    const head = encodePdu(loginRequest({}, Buffer.alloc(0)));
    head.writeUIntBE(0xffffff, 5, 3);
    let err: unknown;
    try {
      r.push(Buffer.concat([small, head]));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PduTooLargeError);
    const e = err as PduTooLargeError;
    expect(e.pdus.length).toBe(1);
    expect(e.bhs.equals(head)).toBe(true);
    expect([e.dataSegmentLength, e.limit]).toEqual([0xffffff, 8192]);
  });

  it('stops reading commands while replies pass the high-water mark, then resumes on drain', async () => {
    const s = await sim({ unitAttentionOnLogin: false });
    const c = await raw(s);
    const r = await quickLogin(c);
    c.socket.pause();
    const n = 16;
    const cmds = Array.from({ length: n }, (_, i) =>
      encodePdu(scsiCommand(i + 1, r.expCmdSN + i, read10(i * 8192, 8192), 4 * 2 ** 20)),
    );
    await c.write(Buffer.concat(cmds));
    await waitFor('backpressure', () => s.stats.backpressure > 0);
    expect(s.stats.commands).toBeLessThan(4); // 4 MiB replies over a 1 MiB mark: one or two
    c.socket.resume();
    let done = 0;
    while (done < n) {
      const p = await c.next(10_000);
      if (p.opcode === Opcode.DataIn && p.hasStatus) done++;
    }
    expect(s.stats.commands).toBe(n);
  });
});

describe('target fidelity', () => {
  it('honours LUN bytes 2-7: a second-level LUN is not LUN 1', async () => {
    const s = await sim({ unitAttentionOnLogin: false });
    const c = await raw(s);
    const r = await quickLogin(c);
    let sn = r.expCmdSN;
    const send = (cdbBuf: Buffer, alloc: number, secondLevel: boolean): Promise<void> => {
      const b = encodePdu(scsiCommand(sn, sn++, cdbBuf, alloc));
      if (secondLevel) b.writeUInt16BE(0x0001, 10); // LUN 1, then LUN 1 of it
      return c.write(b);
    };
    await send(cdb('120000006000'), 96, true);
    expect((await reply(c)).data[0]).toBe(0x7f); // peripheral qualifier 3: no LU there
    await send(cdb('000000000000'), 0, true);
    expect(await reply(c)).toMatchObject({ status: 2, sense: '05/25/00' });
    await send(cdb('120000006000'), 96, false);
    expect((await reply(c)).data[0]).toBe(0x00);
    // LU RESET of a LUN that does not exist.
    const tmf = encodePdu({
      opcode: Opcode.TaskMgmtRequest,
      immediate: true,
      function: TmfFunction.LogicalUnitReset,
      lun: 1,
      itt: 99,
      referencedTaskTag: RESERVED_TAG,
      cmdSN: sn,
      expStatSN: 0,
      refCmdSN: 0,
      expDataSN: 0,
    });
    tmf.writeUInt16BE(0x0001, 10);
    await c.write(tmf);
    expect(expectOpcode(await c.next(), Opcode.TaskMgmtResponse).response).toBe(2);
  });

  function text(
    itt: number,
    cmdSN: number,
    o: { final: boolean; continue?: boolean; ttt?: number; data?: string },
  ): Pdu {
    return {
      opcode: Opcode.TextRequest,
      immediate: true,
      final: o.final,
      continue: o.continue ?? false,
      lun: 0,
      itt,
      ttt: o.ttt ?? RESERVED_TAG,
      cmdSN,
      expStatSN: 0,
      data: Buffer.from(o.data ?? '', 'latin1'),
    };
  }

  it('answers a Text Request with the C bit by an empty Text Response (F clear, a TTT), then the final answer', async () => {
    const s = await sim();
    const c = await raw(s);
    const r = await quickLogin(c, { sessionType: 'Discovery' });
    await c.send(text(5, r.expCmdSN, { final: false, continue: true, data: 'SendTarg' }));
    const first = expectOpcode(await c.next(), Opcode.TextResponse);
    expect(first).toMatchObject({ final: false, continue: false, itt: 5 });
    expect(first.ttt).not.toBe(RESERVED_TAG);
    expect(first.data?.length ?? 0).toBe(0);
    await c.send(text(5, r.expCmdSN, { final: true, ttt: first.ttt, data: 'ets=All\0' }));
    const last = expectOpcode(await c.next(), Opcode.TextResponse);
    expect(last).toMatchObject({ final: true, continue: false, itt: 5, ttt: RESERVED_TAG });
    expect(decodeTextPairs(last.data!)).toEqual([
      ['TargetName', s.iqn],
      ['TargetAddress', `127.0.0.1:${s.port},1`],
    ]);
    // A TTT the target never gave: Reject.
    await c.send(text(6, r.expCmdSN, { final: true, ttt: 12345 }));
    expect(expectOpcode(await c.next(), Opcode.Reject).reason).toBe(RejectReason.ProtocolError);
  });

  it('splits a Text Response longer than the initiator MaxRecvDataSegmentLength (C bit) and answers F=0 to F=0', async () => {
    const s = await sim();
    const c = await raw(s);
    const r = await quickLogin(c, { sessionType: 'Discovery', mrdsl: 512 });
    const keys: Array<[string, string]> = Array.from({ length: 60 }, (_, i) => [
      `X-vitest-key-${String(i).padStart(3, '0')}`,
      'v',
    ]);
    await c.send({ ...text(8, r.expCmdSN, { final: true }), data: encodeText(keys) } as Pdu);
    const parts: Buffer[] = [];
    for (;;) {
      const p = expectOpcode(await c.next(), Opcode.TextResponse);
      expect(p.data!.length).toBeLessThanOrEqual(512);
      parts.push(p.data!);
      if (p.final) {
        expect(p).toMatchObject({ continue: false, ttt: RESERVED_TAG });
        break;
      }
      expect(p).toMatchObject({ continue: true });
      expect(p.ttt).not.toBe(RESERVED_TAG);
      await c.send(text(8, r.expCmdSN, { final: true, ttt: p.ttt }));
    }
    const answerBytes = keys.length * 'X-vitest-key-000=NotUnderstood\0'.length;
    expect(parts.length).toBe(Math.ceil(answerBytes / 512));
    expect(decodeTextPairs(Buffer.concat(parts))).toEqual(keys.map(([k]) => [k, 'NotUnderstood']));
    // F=0 (the initiator has more to say): F=0 and a TTT, then F=1 ends it.
    await c.send(text(9, r.expCmdSN, { final: false, data: 'SendTargets=All\0' }));
    const open1 = expectOpcode(await c.next(), Opcode.TextResponse);
    expect(open1.final).toBe(false);
    expect(open1.ttt).not.toBe(RESERVED_TAG);
    expect(new Map(decodeTextPairs(open1.data!)).get('TargetName')).toBe(s.iqn);
    await c.send(text(9, r.expCmdSN, { final: true, ttt: open1.ttt }));
    expect(expectOpcode(await c.next(), Opcode.TextResponse)).toMatchObject({
      final: true,
      ttt: RESERVED_TAG,
    });
  });

  it('rejects a Logout with a reserved reason code and keeps the session', async () => {
    const s = await sim();
    const c = await raw(s);
    const r = await quickLogin(c);
    const logout = (reason: number, itt: number, cmdSN: number, cid = 0): Pdu => ({
      opcode: Opcode.LogoutRequest,
      immediate: true,
      reason,
      itt,
      cid,
      cmdSN,
      expStatSN: 0,
    });
    await c.send(logout(5, 1, r.expCmdSN));
    const rej = expectOpcode(await c.next(), Opcode.Reject);
    expect(rej.reason).toBe(RejectReason.InvalidPduField);
    expect(rej.data![1]! & 0x7f).toBe(5);
    expect(s.sessions).toBe(1);
    await c.send({
      opcode: Opcode.NopOut,
      immediate: true,
      lun: 0,
      itt: 2,
      ttt: RESERVED_TAG,
      cmdSN: r.expCmdSN,
      expStatSN: 0,
      data: Buffer.from('still here'),
    });
    expect(expectOpcode(await c.next(), Opcode.NopIn).data!.toString()).toBe('still here');
    // Reason 1 naming another CID: "CID not found", nothing closed.
    await c.send(logout(1, 3, r.expCmdSN, 9));
    expect(expectOpcode(await c.next(), Opcode.LogoutResponse).response).toBe(1);
    await c.send(logout(0, 4, r.expCmdSN));
    expect(expectOpcode(await c.next(), Opcode.LogoutResponse).response).toBe(0);
    await c.waitClosed();
    expect(s.sessions).toBe(0);
  });
});
