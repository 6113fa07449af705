// SPDX-License-Identifier: Apache-2.0
/**
 * Fuzzer for the simulator's iSCSI target over a real socket. Starts `lba-status sim serve`
 * (dist/cli.js, the CLI users run) as a child process and, from two client lanes at once, sends it
 * inputs: one TCP connection each, carrying
 * - before login: random and mutated Login Requests (any stage, C bit, CHAP keys, long text) and
 *   other PDUs the target must refuse before login;
 * - after a real login (the corpus's valid Login Request): random and mutated SCSI commands
 *   (INQUIRY and VPD pages, READ CAPACITY, GET LBA STATUS 16/32, READ 10/16, REPORT LUNS, MODE
 *   SENSE, writes, random opcodes; any Expected Data Transfer Length and CmdSN), NOP-Out, Text
 *   (SendTargets), task management, Data-Out, SNACK, Logout;
 * - mutations: opcode, flags, TotalAHSLength, DataSegmentLength up to 16 MiB - 1 (half-sent
 *   PDUs), truncation, random bytes; written in random chunks, then closed (FIN or reset).
 *
 * Invariants: every byte the target sends back parses as target PDUs; the process stays up; a
 * fresh client (lib/iscsi's IscsiInitiator: login, TEST UNIT READY, INQUIRY) is served, checked
 * every 2 s once every connection the fuzzer closed is released (within RELEASE_MS); its peak
 * memory (VmHWM of /proc/PID/status) stays under 300 MB (LBA_STATUS_FUZZ_MAX_HWM_MB).
 *
 * A failure writes a crash file (JSON: the server's arguments, the last 64 inputs as the exact
 * bytes and chunks sent, the server's stderr) and prints how to replay it:
 *   npm run fuzz -- --only target --replay FILE
 * which starts a fresh target, sends those inputs in order, then runs the same checks.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { IscsiInitiator } from '../../lib/iscsi/initiator.js';
import { decodePdu, encodePdu, Opcode, type Pdu } from '../../lib/iscsi/pdu.js';
import { PduReader } from '../../lib/iscsi/reader.js';
import { encodeText } from '../../lib/iscsi/text.js';
import { createPrng, type Prng } from '../../lib/sim/prng.js';
import { type FuzzResult, fuzzArgs, repoRoot, report, writeCrash } from './common.js';

const IQN = 'iqn.2024-01.lba-status:fuzz';
const SERVER_ARGS = [
  'sim',
  'serve',
  '--size',
  '256M',
  '--random-changes',
  '40',
  '--seed',
  '5',
  '--port',
  '0',
  '--iqn',
  IQN,
  '--gls16',
  '--login-timeout',
  '3',
  '--session-retain',
  '2',
];
const MAX_HWM_MB = Number(process.env.LBA_STATUS_FUZZ_MAX_HWM_MB ?? 300);
/**
 * How long a connection the client closed may stay open in the target: a connection it refuses
 * (a PDU over MaxRecvDataSegmentLength) stops reading, sends its Reject, ends, and is destroyed
 * 2 s later whatever the peer did (lib/sim/target.ts #close); 1 s of margin on top.
 */
const RELEASE_MS = 3000;

/** One input: the chunks written on one connection, in order. */
interface Input {
  kind: string;
  chunks: string[]; // hex
  reset: boolean;
}

class Finding extends Error {
  override name = 'Finding';
}

// ---------------------------------------------------------------------------------------------
// Generators

class Gen {
  constructor(readonly r: Prng) {}
  int(n: number): number {
    return this.r.int(n);
  }
  chance(p: number): boolean {
    return this.r.float() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.r.int(items.length)]!;
  }
  u32(): number {
    return this.chance(0.3)
      ? this.pick([0, 1, 2, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff])
      : this.r.u32();
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.r.int(256);
    return b;
  }
  size(): number {
    return this.pick([0, 1, 4, 16, 48, 96, 255, 512, 4096, 8191, 8192, 8193, 65536, 262144]);
  }
}

function cdb(g: Gen): Buffer {
  const lba = (): bigint =>
    g.chance(0.7)
      ? BigInt(g.int(524288))
      : g.pick([0n, 524287n, 524288n, 2n ** 32n, 2n ** 53n, 2n ** 64n - 1n]);
  const u32 = () => g.u32();
  const kind = g.int(14);
  switch (kind) {
    case 0: {
      const c = Buffer.from([0x12, 0, 0, 0, 96, 0]);
      if (g.chance(0.6)) {
        c[1] = 1;
        c[2] = g.pick([0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2, 0xff, g.int(256)]);
      }
      c.writeUInt16BE(g.pick([0, 4, 96, 255, 1024, 65535]), 3);
      return c;
    }
    case 1:
      return Buffer.alloc(6); // TEST UNIT READY
    case 2:
      return Buffer.from([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    case 3: {
      const c = Buffer.alloc(16);
      c[0] = 0x9e;
      c[1] = 0x10;
      c.writeUInt32BE(g.pick([0, 12, 32, 4096]), 10);
      return c;
    }
    case 4: {
      const c = Buffer.alloc(16);
      c[0] = 0x9e;
      c[1] = 0x12;
      c.writeBigUInt64BE(lba(), 2);
      c.writeUInt32BE(g.pick([0, 8, 24, 4096, 32768, u32()]), 10);
      c[14] = g.int(256);
      return c;
    }
    case 5: {
      const c = Buffer.alloc(32);
      c[0] = 0x7f;
      c[7] = g.chance(0.9) ? 0x18 : g.int(256);
      c.writeUInt16BE(0x0012, 8);
      c[10] = g.pick([0, 1, 2, 3, 4, g.int(256)]);
      c.writeBigUInt64BE(lba(), 12);
      c.writeUInt32BE(g.pick([0, 1, 2048, 2097152, u32()]), 20);
      c.writeUInt32BE(g.chance(0.9) ? 0 : u32(), 24);
      c.writeUInt32BE(g.pick([0, 8, 24, 32768, u32()]), 28);
      return c;
    }
    case 6: {
      const c = Buffer.alloc(10);
      c[0] = 0x28;
      c.writeUInt32BE(Number(lba() & 0xffffffffn), 2);
      c.writeUInt16BE(g.pick([0, 1, 8, 128, 8192, 65535]), 7);
      return c;
    }
    case 7: {
      const c = Buffer.alloc(16);
      c[0] = 0x88;
      c.writeBigUInt64BE(lba(), 2);
      c.writeUInt32BE(g.pick([0, 1, 8, 2048, 8192, 8193, u32()]), 10);
      return c;
    }
    case 8: {
      const c = Buffer.alloc(12);
      c[0] = 0xa0;
      c.writeUInt32BE(g.pick([0, 16, 4096, u32()]), 6);
      return c;
    }
    case 9:
      return g.chance(0.5)
        ? Buffer.from([0x1a, 0, g.int(256), 0, 255, 0])
        : Buffer.from([0x5a, 0, g.int(256), 0, 0, 0, 0, 0xff, 0xff, 0]);
    case 10: {
      const c = Buffer.alloc(10);
      c[0] = g.pick([0x2a, 0x35, 0x42, 0x03, 0x1b, 0xa3]);
      c.writeUInt32BE(Number(lba() & 0xffffffffn), 2);
      c.writeUInt16BE(g.int(65536), 7);
      return c;
    }
    case 11:
      return g.bytes(g.pick([6, 10, 12, 16]));
    case 12:
      return g.bytes(g.pick([17, 24, 32, 40, 64, 260]));
    default: {
      const c = Buffer.alloc(16);
      c[0] = 0x9e;
      c[1] = g.int(32);
      c.writeUInt32BE(u32(), 10);
      return c;
    }
  }
}

interface Session {
  cmdSN: number;
  expStatSN: number;
  itt: number;
}

function ffpPdu(g: Gen, s: Session): Pdu {
  const itt = g.chance(0.9) ? s.itt++ : g.u32();
  const cmdSN = g.chance(0.85) ? s.cmdSN : g.u32();
  const expStatSN = s.expStatSN;
  const lun = g.chance(0.85) ? 1 : g.pick([0, 2, 255, 256, 16383]);
  const data = () => (g.chance(0.7) ? Buffer.alloc(0) : g.bytes(g.size() % 9000));
  const k = g.int(100);
  if (k < 45) {
    const c = cdb(g);
    const read = g.chance(0.8);
    const write = g.chance(0.15);
    const immediate = g.chance(0.05);
    if (!immediate) s.cmdSN = (s.cmdSN + 1) >>> 0;
    return {
      opcode: Opcode.ScsiCommand,
      immediate,
      final: g.chance(0.95),
      read,
      write,
      attr: g.chance(0.9) ? 1 : g.int(8),
      lun,
      itt,
      expectedDataTransferLength: g.pick([0, 8, 96, 512, 4096, 32768, 1 << 20, 4 << 20, g.u32()]),
      cmdSN,
      expStatSN,
      cdb: c,
      ...(g.chance(0.05) ? { bidiReadLength: g.u32() } : {}),
      data: write || g.chance(0.1) ? g.bytes(g.size() % 9000) : Buffer.alloc(0),
    };
  }
  if (k < 60) {
    return {
      opcode: Opcode.NopOut,
      immediate: g.chance(0.7),
      lun: 0,
      itt: g.chance(0.9) ? itt : 0xffffffff,
      ttt: g.chance(0.8) ? 0xffffffff : g.u32(),
      cmdSN,
      expStatSN,
      data: data(),
    };
  }
  if (k < 68) {
    const pairs: Array<[string, string]> = g.chance(0.6)
      ? [['SendTargets', g.pick(['All', IQN, '', 'x'])]]
      : [[g.pick(['MaxRecvDataSegmentLength', 'HeaderDigest', 'Foo', 'X-a']), String(g.u32())]];
    if (!g.chance(0.1)) s.cmdSN = (s.cmdSN + 1) >>> 0;
    return {
      opcode: Opcode.TextRequest,
      immediate: false,
      final: g.chance(0.8),
      continue: g.chance(0.2),
      lun: 0,
      itt,
      ttt: g.chance(0.8) ? 0xffffffff : g.u32(),
      cmdSN,
      expStatSN,
      data: g.chance(0.9) ? encodeText(pairs) : g.bytes(g.size() % 9000),
    };
  }
  if (k < 76) {
    return {
      opcode: Opcode.TaskMgmtRequest,
      immediate: true,
      function: g.chance(0.8) ? g.pick([1, 2, 3, 4, 5, 6, 7, 8]) : g.int(128),
      lun,
      itt,
      referencedTaskTag: g.chance(0.7) ? (s.itt - 1 - g.int(3)) >>> 0 : g.u32(),
      cmdSN,
      expStatSN,
      refCmdSN: g.u32(),
      expDataSN: g.u32(),
    };
  }
  if (k < 84) {
    return {
      opcode: Opcode.DataOut,
      final: g.chance(0.7),
      lun,
      itt: g.chance(0.7) ? (s.itt - 1) >>> 0 : g.u32(),
      ttt: g.u32(),
      expStatSN,
      dataSN: g.u32(),
      bufferOffset: g.u32(),
      data: g.bytes(g.size() % 9000),
    };
  }
  if (k < 88) {
    return {
      opcode: Opcode.Snack,
      type: g.int(16),
      lun,
      itt,
      ttt: g.u32(),
      expStatSN,
      begRun: g.u32(),
      runLength: g.u32(),
    };
  }
  if (k < 93) {
    return {
      opcode: Opcode.LogoutRequest,
      immediate: g.chance(0.5),
      reason: g.chance(0.8) ? g.int(3) : g.int(128),
      itt,
      cid: g.chance(0.8) ? 0 : g.int(65536),
      cmdSN,
      expStatSN,
    };
  }
  if (k < 96) return loginPdu(g);
  // Target-side opcodes sent by a confused initiator.
  return {
    opcode: Opcode.NopIn,
    lun: 0,
    itt,
    ttt: g.u32(),
    statSN: g.u32(),
    expCmdSN: g.u32(),
    maxCmdSN: g.u32(),
    data: data(),
  };
}

const LOGIN_KEYS: Array<[string, () => string]> = [];

function loginKeys(g: Gen): Array<[string, string]> {
  if (LOGIN_KEYS.length === 0) {
    LOGIN_KEYS.push(
      ['InitiatorName', () => g.pick(['iqn.2024-01.fuzz:a', '', 'x'.repeat(300)])],
      ['TargetName', () => g.pick([IQN, 'iqn.nope', ''])],
      ['SessionType', () => g.pick(['Normal', 'Discovery', 'Bogus'])],
      ['AuthMethod', () => g.pick(['None', 'CHAP', 'CHAP,None', 'KRB5', ''])],
      ['CHAP_A', () => g.pick(['5', '7', '5,7', 'x'])],
      ['CHAP_N', () => g.pick(['user', ''])],
      ['CHAP_R', () => g.pick(['0x00', `0x${'ab'.repeat(16)}`, '0b', 'zz'])],
      ['CHAP_I', () => String(g.int(300))],
      ['CHAP_C', () => `0x${'cd'.repeat(g.int(200))}`],
      ['HeaderDigest', () => g.pick(['None', 'CRC32C', 'CRC32C,None', ''])],
      ['DataDigest', () => g.pick(['None', 'CRC32C'])],
      ['MaxRecvDataSegmentLength', () => g.pick(['512', '8192', '262144', '0', '-1', '16777216'])],
      ['MaxBurstLength', () => g.pick(['512', '262144', '16776192', '0', 'abc'])],
      ['FirstBurstLength', () => g.pick(['512', '65536', '99999999'])],
      ['ImmediateData', () => g.pick(['Yes', 'No', 'Maybe'])],
      ['InitialR2T', () => g.pick(['Yes', 'No'])],
      ['MaxConnections', () => g.pick(['1', '65535', '0'])],
      ['ErrorRecoveryLevel', () => g.pick(['0', '2', '9'])],
      ['DefaultTime2Retain', () => g.pick(['0', '20', '3600', '99999'])],
      ['MaxOutstandingR2T', () => g.pick(['1', '65535', '0'])],
      ['X-com.example.key', () => 'v'],
    );
  }
  const n = g.int(6);
  const out: Array<[string, string]> = [];
  for (let i = 0; i < n; i++) {
    const [k, v] = g.pick(LOGIN_KEYS);
    out.push([k, v()]);
  }
  return out;
}

function loginPdu(g: Gen): Pdu {
  const csg = g.chance(0.8) ? g.pick([0, 1]) : g.int(4);
  return {
    opcode: Opcode.LoginRequest,
    immediate: true,
    transit: g.chance(0.6),
    continue: g.chance(0.2),
    csg,
    nsg: g.chance(0.8) ? g.pick([1, 3]) : g.int(4),
    versionMax: g.chance(0.9) ? 0 : g.int(256),
    versionMin: g.chance(0.9) ? 0 : g.int(256),
    isid: g.chance(0.9) ? Buffer.from([0x80, 1, 2, 3, 4, 5]) : g.bytes(6),
    tsih: g.chance(0.9) ? 0 : g.int(65536),
    itt: g.u32(),
    cid: 0,
    cmdSN: g.u32(),
    expStatSN: 0,
    data: g.chance(0.9)
      ? encodeText(loginKeys(g))
      : g.bytes(g.pick([0, 1, 100, 8192, 8193, 20000])),
  };
}

/** The corpus's valid login: one request from the operational stage straight to full feature. */
function validLogin(isid: Buffer): Buffer {
  return encodePdu({
    opcode: Opcode.LoginRequest,
    immediate: true,
    transit: true,
    continue: false,
    csg: 1,
    nsg: 3,
    versionMax: 0,
    versionMin: 0,
    isid,
    tsih: 0,
    itt: 0x10,
    cid: 0,
    cmdSN: 1,
    expStatSN: 0,
    data: encodeText([
      ['InitiatorName', 'iqn.2024-01.lba-status:fuzzer'],
      ['TargetName', IQN],
      ['SessionType', 'Normal'],
      ['HeaderDigest', 'None'],
      ['DataDigest', 'None'],
      ['MaxRecvDataSegmentLength', '262144'],
      ['ImmediateData', 'Yes'],
      ['InitialR2T', 'Yes'],
    ]),
  });
}

function mutate(g: Gen, buf: Buffer): Buffer {
  let b = Buffer.from(buf);
  const edits = 1 + g.int(4);
  for (let i = 0; i < edits; i++) {
    const k = g.int(7);
    if (b.length < 48 && k < 5) {
      b = Buffer.concat([b, g.bytes(48 - b.length)]);
    }
    if (k === 0) b[0] = g.chance(0.5) ? (b[0]! & 0xc0) | g.int(64) : g.int(256);
    else if (k === 1) b[1] = g.int(256);
    else if (k === 2) b[4] = g.pick([0, 1, 2, 4, 255, g.int(256)]);
    else if (k === 3)
      b.writeUIntBE(g.pick([0, 1, 3, 4, 8192, 8193, 262145, 0xffffff, g.int(0x1000000)]), 5, 3);
    else if (k === 4) b[g.int(b.length)] = g.int(256);
    else if (k === 5) b = b.subarray(0, g.int(b.length + 1));
    else b = Buffer.concat([b, g.bytes(g.int(200))]);
  }
  return b;
}

function randomPreLogin(g: Gen): Buffer[] {
  const n = 1 + g.int(5);
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const k = g.int(10);
    if (k < 5) out.push(encodePdu(loginPdu(g)));
    else if (k < 7) out.push(mutate(g, encodePdu(loginPdu(g))));
    else if (k < 9) out.push(encodePdu(ffpPdu(g, { cmdSN: 1, expStatSN: 0, itt: 1 })));
    else out.push(g.bytes(g.int(300)));
  }
  return out;
}

function randomFullFeature(g: Gen, isid: Buffer): Buffer[] {
  const s: Session = { cmdSN: 1, expStatSN: 1, itt: 0x100 };
  const out = [validLogin(isid)];
  const n = 1 + g.int(12);
  for (let i = 0; i < n; i++) {
    const p = encodePdu(ffpPdu(g, s));
    out.push(g.chance(0.15) ? mutate(g, p) : p);
  }
  return out;
}

/** Cuts the bytes of an input into write() chunks. */
function chunk(g: Gen, pdus: Buffer[]): Buffer[] {
  const all = Buffer.concat(pdus);
  if (g.chance(0.5)) return pdus;
  const out: Buffer[] = [];
  let off = 0;
  while (off < all.length) {
    const len = Math.min(all.length - off, 1 + g.int(g.chance(0.5) ? 64 : 4096));
    out.push(all.subarray(off, off + len));
    off += len;
  }
  return out;
}

function generate(g: Gen, lane: number, n: number): Input {
  const isid = Buffer.from([0x80, 0xf0, lane, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
  const preLogin = g.chance(0.35);
  const pdus = preLogin ? randomPreLogin(g) : randomFullFeature(g, isid);
  return {
    kind: preLogin ? 'pre-login' : 'full-feature',
    chunks: chunk(g, pdus).map((c) => c.toString('hex')),
    reset: g.chance(0.3),
  };
}

// ---------------------------------------------------------------------------------------------
// The target process and the checks

interface Target {
  child: ChildProcess;
  host: string;
  port: number;
  /** Sockets the idle target holds (its listener): what it must return to. */
  baselineSockets: number;
  stderr: string[];
  exited: { code: number | null; signal: string | null } | undefined;
}

async function startTarget(): Promise<Target> {
  const cli = process.env.LBA_STATUS_FUZZ_CLI ?? join(repoRoot, 'dist', 'cli.js');
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run npm run build:ts first`);
  const child = spawn(process.execPath, [cli, ...SERVER_ARGS], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const t: Target = {
    child,
    host: '127.0.0.1',
    port: 0,
    baselineSockets: 0,
    stderr: [],
    exited: undefined,
  };
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (s: string) => {
    t.stderr.push(s);
    if (t.stderr.length > 200) t.stderr.shift();
  });
  child.on('exit', (code, signal) => {
    t.exited = { code, signal };
  });
  const ready = await new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (s: string) => {
      buf += s;
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(buf.slice(0, nl));
    });
    child.once('exit', () => reject(new Error(`sim serve exited: ${t.stderr.join('')}`)));
    setTimeout(() => reject(new Error('sim serve did not start in 20 s')), 20_000).unref();
  });
  const portal = (JSON.parse(ready) as { iscsi: { portal: string } }).iscsi.portal;
  const colon = portal.lastIndexOf(':');
  t.host = portal.slice(0, colon);
  t.port = Number(portal.slice(colon + 1));
  t.baselineSockets = socketCount(child.pid!);
  return t;
}

/** Open sockets of a process (fds linking to socket:[…]). */
function socketCount(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
    } catch {}
  }
  return n;
}

function vmHwmMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmHWM:\s+(\d+) kB/m.exec(status);
  return m ? Number(m[1]) / 1024 : 0;
}

const TARGET_OPCODES = new Set<number>([
  Opcode.NopIn,
  Opcode.ScsiResponse,
  Opcode.TaskMgmtResponse,
  Opcode.LoginResponse,
  Opcode.TextResponse,
  Opcode.DataIn,
  Opcode.LogoutResponse,
  Opcode.R2T,
  Opcode.AsyncMessage,
  Opcode.Reject,
]);

/** Sends one input on a fresh connection; checks every reply PDU; resolves when it is closed. */
function runInput(t: Target, input: Input, quietMs: number): Promise<{ pdus: number }> {
  return new Promise((resolve, reject) => {
    const reader = new PduReader({ maxDataSegmentLength: 0xffffff });
    let pdus = 0;
    let bad: Error | undefined;
    let timer: NodeJS.Timeout | undefined;
    let hard: NodeJS.Timeout | undefined;
    const sock = net.connect({ host: t.host, port: t.port });
    const finish = () => {
      clearTimeout(timer);
      clearTimeout(hard);
      if (input.reset) sock.resetAndDestroy();
      else sock.destroy();
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(finish, quietMs);
    };
    sock.on('connect', () => {
      for (const c of input.chunks) sock.write(Buffer.from(c, 'hex'));
      arm();
      hard = setTimeout(finish, 2000);
    });
    sock.on('data', (chunk: Buffer) => {
      arm();
      if (bad) return;
      try {
        for (const raw of reader.push(chunk)) {
          const pdu = decodePdu(raw);
          if (!TARGET_OPCODES.has(pdu.opcode)) {
            throw new Error(`target sent opcode 0x${pdu.opcode.toString(16)}`);
          }
          pdus++;
        }
      } catch (err) {
        bad = new Finding(`malformed reply from the target: ${(err as Error).message}`);
        finish();
      }
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      clearTimeout(hard);
      if (bad) reject(bad);
      else resolve({ pdus });
    });
  });
}

/** A fresh client must be served: login, TEST UNIT READY (eats the UNIT ATTENTION), INQUIRY. */
async function healthCheck(t: Target): Promise<void> {
  if (t.exited) {
    throw new Finding(`sim serve exited (code ${t.exited.code}, signal ${t.exited.signal})`);
  }
  let ini: IscsiInitiator | undefined;
  try {
    ini = await IscsiInitiator.connect({
      host: t.host,
      port: t.port,
      targetName: IQN,
      initiatorName: 'iqn.2024-01.lba-status:fuzz-health',
      loginTimeoutMs: 10_000,
      timeoutMs: 10_000,
      keepaliveIntervalMs: 0,
    });
    await ini.command(1, Buffer.alloc(6));
    const inq = await ini.command(1, Buffer.from([0x12, 0, 0, 0, 96, 0]), { dataInLength: 96 });
    if (inq.status !== 0 || inq.data.length < 36) {
      throw new Error(`INQUIRY status ${inq.status}, ${inq.data.length} bytes`);
    }
    const vendor = inq.data.subarray(8, 16).toString('latin1').trim();
    if (vendor.length === 0) throw new Error('INQUIRY without a vendor');
  } catch (err) {
    if (err instanceof Finding) throw err;
    const sockets = t.exited ? '?' : socketCount(t.child.pid!);
    throw new Finding(
      `a fresh client was not served: ${(err as Error).message} (sim serve has ${sockets} sockets open)`,
    );
  } finally {
    await ini?.close(2000).catch(() => {});
    ini?.destroy();
  }
  const hwm = vmHwmMb(t.child.pid!);
  if (hwm > MAX_HWM_MB) {
    throw new Finding(`sim serve peak RSS (VmHWM) ${hwm.toFixed(0)} MB > ${MAX_HWM_MB} MB`);
  }
}

/**
 * Every connection a client closed is released: the target's sockets return to the baseline
 * within `ms` (the login timeout bounds a half-sent PDU; a closed peer should need far less).
 */
async function expectSocketsReleased(t: Target, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  let n = socketCount(t.child.pid!);
  while (n > t.baselineSockets && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    n = socketCount(t.child.pid!);
  }
  if (n > t.baselineSockets) {
    throw new Finding(
      `sim serve still holds ${n - t.baselineSockets} connection(s) ${ms} ms after ${what} closed them (${n} sockets, ${t.baselineSockets} when idle)`,
    );
  }
}

async function stopTarget(t: Target): Promise<void> {
  if (t.exited) return;
  const gone = new Promise<void>((resolve) => t.child.once('exit', () => resolve()));
  t.child.kill('SIGTERM');
  const timer = setTimeout(() => t.child.kill('SIGKILL'), 5000);
  await gone;
  clearTimeout(timer);
}

async function main(): Promise<void> {
  const args = fuzzArgs();
  const result: FuzzResult = {
    name: 'target',
    inputs: 0,
    crashes: 0,
    seconds: args.seconds,
    seed: args.seed,
    crashFiles: [],
    reproduce: [],
  };
  const t = await startTarget();
  const recent: Input[] = [];
  let pdusSent = 0;
  let pdusReceived = 0;
  let checks = 0;
  const record = (input: Input) => {
    recent.push(input);
    if (recent.length > 64) recent.shift();
  };
  try {
    if (args.replay) {
      const saved = JSON.parse(readFileSync(args.replay, 'utf8')) as { inputs: Input[] };
      for (const [i, input] of saved.inputs.entries()) {
        record(input);
        result.inputs++;
        pdusReceived += (await runInput(t, input, 200)).pdus;
        await expectSocketsReleased(t, RELEASE_MS, `input ${i} (${input.kind})`);
      }
      await healthCheck(t);
      checks++;
    } else {
      const deadline = Date.now() + args.seconds * 1000;
      // Two lanes send inputs; every 2 s both stop at an input boundary for the checks.
      let gate: Promise<void> | undefined;
      let active = 0;
      let idle: (() => void) | undefined;
      const checkpoint = async () => {
        let open!: () => void;
        gate = new Promise((r) => {
          open = r;
        });
        while (active > 0) await new Promise<void>((r) => (idle = r));
        try {
          await expectSocketsReleased(t, RELEASE_MS, 'the fuzzer');
          await healthCheck(t);
          checks++;
        } finally {
          gate = undefined;
          open();
        }
      };
      let failure: unknown;
      const checker = (async () => {
        while (Date.now() < deadline && failure === undefined) {
          await new Promise((r) => setTimeout(r, 2000));
          await checkpoint();
        }
      })().catch((err) => {
        failure ??= err;
      });
      const lanes = [0, 1].map(async (lane) => {
        const g = new Gen(createPrng(args.seed * 2 + lane));
        let n = 0;
        while (Date.now() < deadline && failure === undefined) {
          while (gate) await gate;
          const input = generate(g, lane, n++);
          record(input);
          result.inputs++;
          pdusSent += input.chunks.length;
          active++;
          try {
            pdusReceived += (await runInput(t, input, 15)).pdus;
          } catch (err) {
            failure ??= err;
          } finally {
            active--;
            if (active === 0) idle?.();
          }
        }
      });
      await Promise.all(lanes);
      await checker;
      if (failure !== undefined) throw failure;
      await checkpoint();
    }
  } catch (err) {
    if (!(err instanceof Finding)) throw err;
    result.crashes++;
    const name = `target-${args.seed}-${Date.now()}.json`;
    const file = writeCrash(
      args.crashDir,
      name,
      JSON.stringify(
        {
          finding: err.message,
          seed: args.seed,
          server: ['node', 'dist/cli.js', ...SERVER_ARGS],
          serverStderr: t.stderr.join('').slice(-20_000),
          inputs: recent,
        },
        null,
        1,
      ),
    );
    const repro = `npm run fuzz -- --only target --replay ${file}`;
    console.error(`target-fuzz: ${err.message}\n  crash file: ${file}\n  reproduce: ${repro}`);
    result.crashFiles.push(file);
    result.reproduce.push(repro);
  } finally {
    const hwm = t.exited ? 0 : vmHwmMb(t.child.pid!);
    result.notes = {
      healthChecks: checks,
      writes: pdusSent,
      replyPdus: pdusReceived,
      targetPeakRssMb: Math.round(hwm),
      maxPeakRssMb: MAX_HWM_MB,
    };
    await stopTarget(t);
  }
  report(result);
  process.exitCode = result.crashes > 0 ? 1 : 0;
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
