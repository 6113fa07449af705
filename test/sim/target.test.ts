import { afterEach, describe, expect, it } from 'vitest';
import { IscsiInitiator } from '../../lib/iscsi/initiator.js';
import { TmfFunction } from '../../lib/iscsi/pdu.js';
import { blockData } from '../../lib/sim/block-data.js';
import { type Simulator, type SimulatorOptions, startSimulator } from '../../lib/sim/simulator.js';
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
