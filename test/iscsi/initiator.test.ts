import { inspect } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { type InitiatorOptions, IscsiInitiator, isReadOnlyCdb } from '../../lib/iscsi/initiator.js';
import { encodePdu, Opcode } from '../../lib/iscsi/pdu.js';
import { PduReader } from '../../lib/iscsi/reader.js';
import {
  BLOCK,
  expectedRead,
  read16,
  startProxy,
  startTestTarget,
  type TestTarget,
  TUR,
  tcpSockets,
  waitFor,
} from '../transport/iscsi-support.js';

const cleanup: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const CHANGED = [{ offset: 1 << 20, length: 64 * 1024 }];

async function target(opts: Parameters<typeof startTestTarget>[0] = {}): Promise<TestTarget> {
  const t = await startTestTarget({ changed: CHANGED, ...opts });
  cleanup.push(() => t.close());
  return t;
}

async function connect(port: number, iqn: string, extra: Partial<InitiatorOptions> = {}) {
  const ini = await IscsiInitiator.connect({
    host: '127.0.0.1',
    port,
    targetName: iqn,
    initiatorName: 'iqn.2024-01.test:initiator',
    timeoutMs: 5000,
    ...extra,
  });
  cleanup.push(() => ini.close(500));
  return ini;
}

describe('IscsiInitiator', () => {
  it('keeps FIFO order and never exceeds a one-command window or its queue depth', async () => {
    const t = await target({ queueDepth: 1 });
    t.faults.add({ kind: 'latency', ms: 3, on: 'any', count: 1000 });
    const ini = await connect(t.port, t.iqn, { queueDepth: 3 });
    const done: number[] = [];
    let max = 0;
    const jobs = Array.from({ length: 12 }, (_, i) =>
      ini.execute(1, TUR).then((r) => {
        expect(r.failure).toBeUndefined();
        done.push(i);
      }),
    );
    const sampler = setInterval(() => {
      max = Math.max(max, ini.inFlight);
    }, 0);
    await Promise.all(jobs);
    clearInterval(sampler);
    expect(done).toEqual([...done].sort((a, b) => a - b));
    expect(max).toBe(1);
    expect(t.log.filter((l) => l.includes('ignoring CmdSN'))).toEqual([]);

    const wide = await target({ queueDepth: 64 });
    wide.faults.add({ kind: 'latency', ms: 20, on: 'any', count: 1000 });
    const ini2 = await connect(wide.port, wide.iqn, { queueDepth: 3 });
    const all = Promise.all(Array.from({ length: 9 }, () => ini2.execute(1, TUR)));
    await waitFor(() => ini2.inFlight === 3, 2000, '3 in flight');
    let over = false;
    const watch = setInterval(() => {
      if (ini2.inFlight > 3) over = true;
    }, 0);
    await all;
    clearInterval(watch);
    expect(over).toBe(false);
  });

  it('sends NOP-Out keepalives when idle and declares a silent connection dead, then re-issues the read', async () => {
    const t = await target();
    const proxy = await startProxy(t.port);
    cleanup.push(() => proxy.close());
    const ini = await connect(proxy.port, t.iqn, {
      keepaliveIntervalMs: 50,
      keepaliveTimeoutMs: 100,
      reconnect: { attempts: 3, delayMs: 10 },
    });
    await waitFor(() => ini.stats.keepalives >= 2, 3000, 'two keepalives');
    expect(ini.stats.reconnects).toBe(0);
    t.faults.add({ kind: 'latency', ms: 300, on: 'read' });
    const buf = new Uint8Array(128 * BLOCK);
    const p = ini.execute(1, read16(2048, 128), { dataIn: buf });
    await waitFor(() => t.target.stats.commands === 1, 2000, 'the read to reach the target');
    proxy.freeze(); // a silent partition: nothing arrives, nothing errors
    const r = await p;
    expect(r.failure).toBeUndefined();
    expect(r.status).toBe(0);
    expect(r.reissued).toBe(1);
    expect(Buffer.from(buf).equals(expectedRead(CHANGED, 2048, 128))).toBe(true);
    expect(ini.stats.reconnects).toBe(1);
    expect(proxy.accepted).toBe(2);
  });

  it('close() is bounded when the target never answers the logout, and leaves no socket', async () => {
    const t = await target();
    const proxy = await startProxy(t.port);
    cleanup.push(() => proxy.close());
    const before = tcpSockets();
    const ini = await IscsiInitiator.connect({
      host: '127.0.0.1',
      port: proxy.port,
      targetName: t.iqn,
      keepaliveIntervalMs: 0,
    });
    proxy.freeze();
    const pending = ini.execute(1, TUR);
    const t0 = Date.now();
    await ini.close(150);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect((await pending).failure).toBe('closed');
    expect(ini.closed).toBe(true);
    await ini.close(); // idempotent
    await proxy.close();
    cleanup.pop();
    await waitFor(() => tcpSockets() <= before, 2000, 'sockets to close');
  });

  it('never puts a secret into a log line, an error or its login keys', async () => {
    const SECRET = 'Init1atorS3cret';
    const TSECRET = 'Targ3tS3cretXY';
    const t = await target({
      chap: { username: 'u', secret: SECRET },
      mutualChap: { username: 't', secret: TSECRET },
    });
    const lines: string[] = [];
    const log = (l: string) => lines.push(l);
    const ini = await connect(t.port, t.iqn, {
      chap: { username: 'u', secret: SECRET, target: { username: 't', secret: TSECRET } },
      log,
    });
    const shown = `${inspect(ini, { depth: 10, showHidden: true })} ${JSON.stringify(ini.options)}`;
    expect(shown).toContain('(hidden)');
    ini.destroy();
    const errors: unknown[] = [];
    for (const chap of [
      { username: 'u', secret: 'nope-nope-nope' },
      { username: 'u', secret: SECRET, target: { username: 't', secret: 'nope-nope-nope' } },
    ]) {
      await IscsiInitiator.connect({
        host: '127.0.0.1',
        port: t.port,
        targetName: t.iqn,
        chap,
        log,
      }).then(
        () => errors.push(new Error('connected')),
        (e) => errors.push(e),
      );
    }
    expect(errors.map((e) => (e as { code: string }).code)).toEqual([
      'ERR_ISCSI_LOGIN',
      'ERR_ISCSI_MUTUAL_CHAP',
    ]);
    expect(lines.length).toBeGreaterThan(0);
    const text = [
      ...lines,
      ...errors.map((e) => `${(e as Error).message} ${(e as Error).stack}`),
      JSON.stringify([...ini.loginKeys]),
      shown,
    ].join('\n');
    for (const s of [SECRET, TSECRET, 'nope-nope-nope']) expect(text).not.toContain(s);
  });

  it('classifies read-only CDBs for re-issue exactly as the allowlist says', () => {
    const yes = [
      [0x00],
      [0x12],
      [0x1a],
      [0x5a],
      [0x25],
      [0x9e, 0x10],
      [0x9e, 0x12],
      [0x28],
      [0x88],
      [0xa0],
      [0xa3, 0x0c],
      [0x7f, 0, 0, 0, 0, 0, 0, 0x18, 0x00, 0x12],
    ];
    const no = [
      [0x2a],
      [0x8a],
      [0x35],
      [0x42],
      [0x9e, 0x11],
      [0xa3, 0x0d],
      [0x7f, 0, 0, 0, 0, 0, 0, 0x18, 0x00, 0x0b],
      [0x03],
      [0x08],
    ];
    for (const c of yes) expect(isReadOnlyCdb(Uint8Array.from(c)), c.join(',')).toBe(true);
    for (const c of no) expect(isReadOnlyCdb(Uint8Array.from(c)), c.join(',')).toBe(false);
  });
});

describe('PduReader bounds', () => {
  it('refuses an oversized segment from the BHS alone, with the login default of 8192', () => {
    const r = new PduReader();
    expect(r.maxDataSegmentLength).toBe(8192);
    const bhs = encodePdu({
      opcode: Opcode.NopOut,
      lun: 0,
      itt: 1,
      ttt: 0xffffffff,
      cmdSN: 1,
      expStatSN: 0,
    });
    bhs.writeUIntBE(8193, 5, 3);
    expect(() => r.push(bhs)).toThrow(
      /8193 bytes .* exceeds the declared MaxRecvDataSegmentLength of 8192/,
    );
  });

  it('takes a PDU split over many chunks without holding more than it', () => {
    const pdu = encodePdu({
      opcode: Opcode.NopOut,
      lun: 0,
      itt: 1,
      ttt: 0xffffffff,
      cmdSN: 1,
      expStatSN: 0,
      data: Buffer.alloc(1000, 7),
    });
    const r = new PduReader();
    const stream = Buffer.concat([pdu, pdu.subarray(0, 10)]);
    const out = [];
    for (let i = 0; i < stream.length; i += 97) out.push(...r.push(stream.subarray(i, i + 97)));
    expect(out).toHaveLength(1);
    expect(out[0]!.data.equals(Buffer.alloc(1000, 7))).toBe(true);
    expect(r.buffered).toBe(10);
  });
});
