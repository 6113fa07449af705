// Hostile clients against `lba-status sim serve` (a child process, its memory read from /proc):
// each case leaves the server under the documented peak (PEAK_RSS_BYTES, 300 MiB) and serving a
// fresh client exactly. Before the target's limits every one of them grew the process without
// bound (1 GB and more) or held its connections forever.
import { PassThrough } from 'node:stream';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { simServeCommand } from '../../lib/cli/sim-serve.js';
import { encodePdu, Opcode, type Pdu, RejectReason } from '../../lib/iscsi/pdu.js';
import { decodeText } from '../../lib/iscsi/text.js';
import {
  freshClientServed,
  IQN,
  isid,
  loginRequest,
  PEAK_RSS_BYTES,
  quickLogin,
  RawConn,
  read10,
  removeCli,
  type Served,
  scsiCommand,
  serve,
} from './abuse-support.js';

const servers: Served[] = [];
const conns: RawConn[] = [];
afterEach(async () => {
  for (const c of conns.splice(0)) c.destroy();
  for (const s of servers.splice(0)) await s.stop();
});
afterAll(() => removeCli());

async function start(extra: string[] = []): Promise<Served> {
  const s = await serve(extra);
  servers.push(s);
  return s;
}

async function open(s: Served): Promise<RawConn> {
  const c = await RawConn.connect(s.host, s.port);
  conns.push(c);
  return c;
}

function report(name: string, s: Served): number {
  const { peak } = s.memory();
  console.log(`${name}: server peak RSS ${(peak / 2 ** 20).toFixed(0)} MiB`);
  return peak;
}

/** The first Login Response that is not a plain "go on" (status 0/0), or the close. */
async function refusal(c: RawConn, maxResponses = 1000): Promise<[number, number]> {
  for (let i = 0; i < maxResponses; i++) {
    const p = await c.next(10_000);
    if (p.opcode !== Opcode.LoginResponse) throw new Error(`opcode ${p.opcode} during login`);
    if (p.statusClass !== 0) return [p.statusClass, p.statusDetail];
  }
  throw new Error(`${maxResponses} Login Responses and no refusal`);
}

/** A BHS (+ AHS) announcing `dataLength` bytes of data segment, without the data. */
function headerOnly(pdu: Pdu, dataLength: number): Buffer {
  const b = encodePdu({ ...pdu, data: Buffer.alloc(0) });
  b.writeUIntBE(dataLength, 5, 3);
  return b;
}

describe('sim serve against hostile clients', () => {
  it('250 READs of 4 MiB never read: the server stops reading at the high-water mark, stays bounded, serves a second client, then delivers all 250', async () => {
    const s = await start();
    const c = await open(s);
    const login = await quickLogin(c, { isid: isid(1) });
    expect(login.statusClass).toBe(0);
    c.socket.pause(); // never read
    const cmds = Buffer.concat(
      Array.from({ length: 250 }, (_, i) =>
        encodePdu(
          scsiCommand(i + 1, login.expCmdSN + i, read10((i % 16) * 8192, 8192), 4 * 2 ** 20),
        ),
      ),
    );
    await c.write(cmds); // 12 KiB: all of it reaches the server at once
    await freshClientServed(s.host, s.port);
    const peak = report('250 unread 4 MiB READs', s);
    expect(peak).toBeLessThan(PEAK_RSS_BYTES);
    // Backpressure loses nothing: reading now, every command completes.
    c.socket.resume();
    let done = 0;
    while (done < 250) {
      const p = await c.next(30_000);
      if (p.opcode === Opcode.ScsiResponse || (p.opcode === Opcode.DataIn && p.hasStatus)) done++;
    }
    expect(s.memory().peak).toBeLessThan(PEAK_RSS_BYTES);
  }, 120_000);

  it('continued Login PDUs (C bit): refused past 8192 bytes a PDU, 64 KiB of text or 32 PDUs, each connection closed; bounded', async () => {
    const s = await start();
    // 24 connections × 20 continued PDUs of 1 MiB, written without waiting for answers.
    const big = await Promise.all(Array.from({ length: 24 }, () => open(s)));
    const flood = Buffer.concat(
      Array.from({ length: 20 }, (_, i) =>
        encodePdu(loginRequest({ continue: true, itt: i }, Buffer.alloc(2 ** 20, 0x61))),
      ),
    );
    for (const c of big) void c.write(flood);
    for (const c of big) expect(await refusal(c)).toEqual([2, 0]);
    await Promise.all(big.map((c) => c.waitClosed()));
    // Small continued PDUs: 8000 bytes each hit the text limit, 10 bytes each the PDU count.
    const small = await Promise.all(Array.from({ length: 16 }, () => open(s)));
    small.forEach((c, n) => {
      const size = n % 2 === 0 ? 8000 : 10;
      const pdus = Array.from({ length: 40 }, (_, i) =>
        encodePdu(
          loginRequest({ continue: true, itt: i, isid: isid(n) }, Buffer.alloc(size, 0x62)),
        ),
      );
      void c.write(Buffer.concat(pdus));
    });
    for (const c of small) expect(await refusal(c, 40)).toEqual([2, 0]);
    await Promise.all(small.map((c) => c.waitClosed()));
    await freshClientServed(s.host, s.port);
    expect(report('continued Login PDU flood', s)).toBeLessThan(PEAK_RSS_BYTES);
  }, 120_000);

  it('half-sent 16 MiB PDUs from many connections: refused from the header and closed, in login and after', async () => {
    const s = await start();
    // Login phase: a header announcing 16 MiB − 4, then 15 MiB of it, then silence.
    const half = await Promise.all(Array.from({ length: 24 }, () => open(s)));
    half.forEach((c, n) => {
      const h = headerOnly(
        loginRequest({ isid: isid(n), csg: 1, nsg: 3, transit: true }),
        0xfffffc,
      );
      void c.write(Buffer.concat([h, Buffer.alloc(15 * 2 ** 20, 0x63)]));
    });
    for (const c of half) expect(await refusal(c, 1)).toEqual([2, 0]);
    await Promise.all(half.map((c) => c.waitClosed()));
    // Full feature phase: a SCSI command announcing 16 MiB of immediate data, 1 MiB sent.
    const full = await Promise.all(Array.from({ length: 8 }, () => open(s)));
    for (const [n, c] of full.entries()) {
      const r = await quickLogin(c, { isid: isid(100 + n) });
      expect(r.statusClass).toBe(0);
      const cmd = scsiCommand(1, r.expCmdSN, read10(0, 8), 4096);
      const h = headerOnly({ ...cmd, write: true }, 0xfffffc);
      void c.write(Buffer.concat([h, Buffer.alloc(2 ** 20)]));
      const rej = await c.next();
      expect(rej.opcode).toBe(Opcode.Reject);
      if (rej.opcode !== Opcode.Reject) return;
      expect(rej.reason).toBe(RejectReason.ProtocolError);
      expect(rej.data!.subarray(0, 8).equals(h.subarray(0, 8))).toBe(true);
      await c.waitClosed();
    }
    await freshClientServed(s.host, s.port);
    expect(report('half-sent 16 MiB PDUs', s)).toBeLessThan(PEAK_RSS_BYTES);
  }, 120_000);

  it('half-sent PDUs within the limits, then silence, from as many connections as allowed: closed by the login timeout, and the slots come back', async () => {
    const s = await start(['--login-timeout', '2']);
    // 32 connections (--max-connections) each send half of an 8 KiB Login PDU and stop.
    const slow = await Promise.all(Array.from({ length: 32 }, () => open(s)));
    for (const c of slow) {
      const h = headerOnly(loginRequest({ csg: 1, nsg: 3, transit: true }), 8192);
      await c.write(Buffer.concat([h, Buffer.alloc(4096)]));
    }
    const t0 = Date.now();
    await Promise.all(slow.map((c) => c.waitClosed(10_000)));
    expect(Date.now() - t0).toBeGreaterThan(1000);
    await freshClientServed(s.host, s.port);
    expect(report('half-sent PDUs until the login timeout', s)).toBeLessThan(PEAK_RSS_BYTES);
  }, 60_000);

  it('an unauthenticated CHAP flood: huge and endless security-stage PDUs and wrong responses are refused and closed; bounded; a CHAP client is served', async () => {
    const chap = { username: 'backup', secret: 'secret-of-16-chr' };
    const s = await start(['--chap', `${chap.username}:${chap.secret}`]);
    const first: Array<[string, string]> = [
      ['InitiatorName', 'iqn.2024-01.test:flood'],
      ['TargetName', IQN],
      ['SessionType', 'Normal'],
      ['AuthMethod', 'CHAP'],
    ];
    // 40 connections (more than --max-connections' 32) × 20 security-stage PDUs of 1 MiB.
    const flood = await Promise.all(Array.from({ length: 40 }, () => open(s)));
    const body = Buffer.concat(
      Array.from({ length: 20 }, (_, i) =>
        encodePdu(
          loginRequest({ continue: true, itt: i, keys: first }, Buffer.alloc(2 ** 20, 0x64)),
        ),
      ),
    );
    for (const c of flood) void c.write(body);
    for (const c of flood) {
      const [cls, detail] = await refusal(c, 1);
      // Too large (2/00), or past the connection limit (3/02, out of resources).
      expect(cls === 2 ? detail : cls === 3 ? detail : -1).toBe(cls === 2 ? 0 : 2);
    }
    await Promise.all(flood.map((c) => c.waitClosed()));
    // Wrong CHAP responses from 16 connections: 2/01, closed.
    await Promise.all(
      Array.from({ length: 16 }, async (_, n) => {
        const c = await open(s);
        await c.send(loginRequest({ isid: isid(n), csg: 0, nsg: 1, keys: first }));
        expect((await c.next()).opcode).toBe(Opcode.LoginResponse);
        await c.send(
          loginRequest({ isid: isid(n), csg: 0, nsg: 1, itt: 1, keys: [['CHAP_A', '5']] }),
        );
        const ch = await c.next();
        if (ch.opcode !== Opcode.LoginResponse) throw new Error('no CHAP challenge');
        expect(decodeText(ch.data!).get('CHAP_C')).toMatch(/^0x/);
        await c.send(
          loginRequest({
            isid: isid(n),
            csg: 0,
            nsg: 1,
            transit: true,
            itt: 2,
            keys: [
              ['CHAP_N', chap.username],
              ['CHAP_R', `0x${'00'.repeat(16)}`],
            ],
          }),
        );
        expect(await refusal(c, 1)).toEqual([2, 1]);
        await c.waitClosed();
      }),
    );
    await freshClientServed(s.host, s.port, chap);
    expect(report('unauthenticated CHAP flood', s)).toBeLessThan(PEAK_RSS_BYTES);
  }, 120_000);
});

describe('sim serve limit flags', () => {
  async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = '';
    let err = '';
    stdout.on('data', (c) => {
      out += c;
    });
    stderr.on('data', (c) => {
      err += c;
    });
    const io = { stdout, stderr, signal: new AbortController().signal, env: {} };
    const code = await simServeCommand.run(args, io);
    return { code, out, err };
  }

  it('documents every limit with its default, one line each, in --help', async () => {
    const { code, out } = await run(['--help']);
    expect(code).toBe(0);
    for (const flag of [
      '--max-connections N',
      '--max-sessions N',
      '--session-retain S',
      '--login-timeout S',
      '--max-login-pdus N',
      '--max-text-bytes N',
      '--max-recv-data-segment N',
      '--reply-high-water N',
    ]) {
      expect(out).toMatch(new RegExp(`^  ${flag} +.*\\(default [^)]+\\)$`, 'm'));
    }
  });

  it('refuses a limit out of range with exit 2 and the flag in the message', async () => {
    const base = ['--size', '1M', '--random-changes', '1', '--port', '0'];
    const zero = await run([...base, '--max-connections', '0']);
    expect(zero.code).toBe(2);
    expect(zero.err).toMatch(/--max-connections must be 1\.\.65535/);
    const small = await run([...base, '--max-recv-data-segment', '100']);
    expect(small.code).toBe(2);
    expect(small.err).toMatch(/--max-recv-data-segment must be 512\.\.16777215/);
    const timeout = await run([...base, '--login-timeout', '0']);
    expect(timeout.code).toBe(2);
    expect(timeout.err).toMatch(/--login-timeout must be 1\.\.3600/);
  });
});
