/**
 * Support for the abuse tests of the simulator's iSCSI target: `lba-status sim serve` as a child
 * process (its peak RSS read from /proc), a raw PDU client that can break every rule, and a check
 * that a fresh, well-behaved client is still served exactly.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IscsiInitiator } from '../../lib/iscsi/initiator.js';
import {
  decodePdu,
  encodePdu,
  type LoginResponsePdu,
  Opcode,
  type Pdu,
  type ScsiCommandPdu,
} from '../../lib/iscsi/pdu.js';
import { PduReader } from '../../lib/iscsi/reader.js';
import { encodeText } from '../../lib/iscsi/text.js';
import { type ByteRange, expectedRead } from '../support/oracle.js';

/** The documented peak for every abuse case (README, `sim serve --help`). */
export const PEAK_RSS_BYTES = 300 * 2 ** 20;

/** The served volume: 64 MiB, one changed 64 KiB range at 1 MiB, block data seed 5. */
export const RANGES: ByteRange[] = [{ offset: 1 << 20, length: 64 * 1024 }];
export const GEOMETRY = { sizeBytes: 64 * 2 ** 20, blockSize: 512, changeBlockSize: 4096 };
export const SEED = 5;
export const IQN = 'iqn.2024-01.lba-status:sim';

/** Polls `cond` until it holds, or throws after `ms` (no fixed sleeps). */
export async function waitFor(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Rejects after `ms` with `what`; the timer never outlives the promise. */
export function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------
// sim serve as a child process

let built: string | undefined;
let buildDir: string | undefined;

/**
 * The CLI to run: $LBA_STATUS_ABUSE_CLI (e.g. a bundle of an older commit, to see these tests
 * fail there), else lib/cli/main.ts bundled with esbuild into a temp dir (no dist/ needed).
 */
export async function cliPath(): Promise<string> {
  if (process.env.LBA_STATUS_ABUSE_CLI) return process.env.LBA_STATUS_ABUSE_CLI;
  if (built) return built;
  const esbuild = await import('esbuild');
  buildDir = mkdtempSync(join(tmpdir(), 'lba-status-abuse-'));
  mkdirSync(buildDir, { recursive: true });
  const out = join(buildDir, 'cli.js');
  await esbuild.build({
    entryPoints: [join(__dirname, '../../lib/cli/main.ts')],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile: out,
    logLevel: 'error',
    banner: {
      js: "import { createRequire as __abuseRequire } from 'node:module'; const require = __abuseRequire(import.meta.url);",
    },
  });
  built = out;
  return out;
}

/** Removes the bundle (afterAll). */
export function removeCli(): void {
  if (buildDir) rmSync(buildDir, { recursive: true, force: true });
  built = undefined;
  buildDir = undefined;
}

export interface Served {
  host: string;
  port: number;
  iqn: string;
  pid: number;
  stderr(): string;
  /** Peak (VmHWM) and current (VmRSS) resident set of the server, in bytes. */
  memory(): { peak: number; rss: number };
  /** Whether the process is still running. */
  alive(): boolean;
  /** SIGTERM, then SIGKILL after 5 s; resolves once it exited. */
  stop(): Promise<void>;
}

/** Starts `lba-status sim serve` over {@link RANGES} with `extra` flags; resolves when ready. */
export async function serve(extra: string[] = []): Promise<Served> {
  const cli = await cliPath();
  const dir = mkdtempSync(join(tmpdir(), 'lba-status-abuse-map-'));
  const changed = join(dir, 'changed.json');
  writeFileSync(changed, JSON.stringify(RANGES));
  const child: ChildProcess = spawn(
    process.execPath,
    [
      cli,
      'sim',
      'serve',
      '--size',
      String(GEOMETRY.sizeBytes),
      '--changed',
      changed,
      '--seed',
      String(SEED),
      '--port',
      '0',
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      rmSync(dir, { recursive: true, force: true });
      resolve();
    }),
  );
  child.stdout!.on('data', (c) => {
    out += c;
  });
  child.stderr!.on('data', (c) => {
    // Keep the tail only: a verbose server logs a line per event.
    err = (err + c).slice(-64 * 1024);
  });
  const stop = async (): Promise<void> => {
    if (!exited) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exit;
    clearTimeout(timer);
  };
  try {
    await waitFor('the ready line', () => out.includes('\n') || exited, 20_000);
  } catch (e) {
    await stop();
    throw e;
  }
  if (exited) throw new Error(`sim serve exited before it was ready: ${err}`);
  const ready = JSON.parse(out.split('\n')[0]!) as { iscsi: { portal: string; iqn: string } };
  const [host, port] = ready.iscsi.portal.split(':');
  const pid = child.pid!;
  return {
    host: host!,
    port: Number(port),
    iqn: ready.iscsi.iqn,
    pid,
    stderr: () => err,
    memory() {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const kb = (key: string): number => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)![1]);
      return { peak: kb('VmHWM') * 1024, rss: kb('VmRSS') * 1024 };
    },
    alive: () => !exited,
    stop,
  };
}

// ---------------------------------------------------------------------------------------------
// A raw client

/** A TCP connection that speaks PDUs without any of the initiator's rules. */
export class RawConn {
  readonly socket: net.Socket;
  readonly closed: Promise<void>;
  #reader = new PduReader({ maxDataSegmentLength: 16 * 2 ** 20 });
  #pdus: Pdu[] = [];
  #wake: (() => void) | undefined;
  #isClosed = false;
  /** Bytes received (counted even when PDUs are not decoded). */
  received = 0;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.#isClosed = true;
        this.#wake?.();
        resolve();
      }),
    );
    socket.on('data', (chunk: Buffer) => {
      this.received += chunk.length;
      for (const raw of this.#reader.push(chunk)) this.#pdus.push(decodePdu(raw));
      this.#wake?.();
    });
  }

  static connect(host: string, port: number): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port, noDelay: true });
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new RawConn(s));
      });
      s.once('error', reject);
    });
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  write(buf: Buffer): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) resolve();
      else this.socket.write(buf, () => resolve());
    });
  }

  send(pdu: Pdu): Promise<void> {
    return this.write(encodePdu(pdu));
  }

  /** The next PDU from the target; rejects when the connection closed first or after `ms`. */
  async next(ms = 5000): Promise<Pdu> {
    const end = Date.now() + ms;
    for (;;) {
      const p = this.#pdus.shift();
      if (p) return p;
      if (this.#isClosed) throw new Error('the connection closed');
      const left = end - Date.now();
      if (left <= 0) throw new Error(`no PDU within ${ms} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  /** Resolves once the target closed the connection; rejects after `ms`. */
  waitClosed(ms = 5000): Promise<void> {
    return deadline(this.closed, ms, 'the target closing the connection');
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export interface LoginOptions {
  isid?: Buffer;
  initiatorName?: string;
  targetName?: string;
  sessionType?: 'Normal' | 'Discovery';
  /** MaxRecvDataSegmentLength this client declares (default 262144). */
  mrdsl?: number;
  extraKeys?: Array<[string, string]>;
  tsih?: number;
  cid?: number;
}

export function isid(n: number): Buffer {
  const b = Buffer.from([0x80, 0, 0, 0, 0, 0]);
  b.writeUIntBE(n % 2 ** 40, 1, 5);
  return b;
}

/** A Login Request; `data` overrides the text. */
export function loginRequest(
  o: {
    isid?: Buffer;
    itt?: number;
    cmdSN?: number;
    csg?: number;
    nsg?: number;
    transit?: boolean;
    continue?: boolean;
    tsih?: number;
    cid?: number;
    keys?: Array<[string, string]>;
  },
  data?: Buffer,
): Pdu {
  return {
    opcode: Opcode.LoginRequest,
    transit: o.transit ?? false,
    continue: o.continue ?? false,
    csg: o.csg ?? 0,
    nsg: o.nsg ?? 0,
    versionMax: 0,
    versionMin: 0,
    isid: o.isid ?? isid(1),
    tsih: o.tsih ?? 0,
    itt: o.itt ?? 0,
    cid: o.cid ?? 0,
    cmdSN: o.cmdSN ?? 0,
    expStatSN: 0,
    data: data ?? encodeText(o.keys ?? []),
  };
}

/** One-PDU login straight to full feature phase (no CHAP): operational stage, T=1, NSG=3. */
export async function quickLogin(c: RawConn, o: LoginOptions = {}): Promise<LoginResponsePdu> {
  const keys: Array<[string, string]> = [
    ['InitiatorName', o.initiatorName ?? 'iqn.2024-01.test:abuse'],
    ['SessionType', o.sessionType ?? 'Normal'],
  ];
  if ((o.sessionType ?? 'Normal') === 'Normal') keys.push(['TargetName', o.targetName ?? IQN]);
  keys.push(['MaxRecvDataSegmentLength', String(o.mrdsl ?? 262144)], ...(o.extraKeys ?? []));
  await c.send(
    loginRequest({
      isid: o.isid ?? isid(1),
      csg: 1,
      nsg: 3,
      transit: true,
      cmdSN: 1,
      keys,
      tsih: o.tsih ?? 0,
      cid: o.cid ?? 0,
    }),
  );
  const r = await c.next();
  if (r.opcode !== Opcode.LoginResponse) throw new Error(`opcode ${r.opcode} during login`);
  return r;
}

/** A SCSI command PDU for LUN 1 (or `lun`), reading `read` bytes. */
export function scsiCommand(
  itt: number,
  cmdSN: number,
  cdb: Buffer,
  read: number,
  lun = 1,
): ScsiCommandPdu {
  const c = Buffer.alloc(Math.max(16, cdb.length));
  cdb.copy(c);
  return {
    opcode: Opcode.ScsiCommand,
    final: true,
    read: read > 0,
    write: false,
    attr: 1,
    lun,
    itt,
    expectedDataTransferLength: read,
    cmdSN,
    expStatSN: 0,
    cdb: c,
  };
}

/** READ(10) of `blocks` 512-byte blocks at `lba`. */
export function read10(lba: number, blocks: number): Buffer {
  const c = Buffer.alloc(10);
  c[0] = 0x28;
  c.writeUInt32BE(lba, 2);
  c.writeUInt16BE(blocks, 7);
  return c;
}

/**
 * A well-behaved client logs in (CHAP when given), clears the UNIT ATTENTION, reads 64 KiB
 * across the changed range and compares it with the test's own oracle; then logs out.
 */
export async function freshClientServed(
  host: string,
  port: number,
  chap?: { username: string; secret: string },
): Promise<void> {
  const ini = await IscsiInitiator.connect({
    host,
    port,
    targetName: IQN,
    initiatorName: 'iqn.2024-01.test:fresh',
    timeoutMs: 10_000,
    ...(chap ? { chap } : {}),
  });
  try {
    await ini.command(1, Buffer.alloc(6)); // TEST UNIT READY: the UNIT ATTENTION after login
    const lba = 2048 - 64;
    const r = await ini.command(1, read10(lba, 128), { dataInLength: 128 * 512 });
    if (r.status !== 0) throw new Error(`READ status ${r.status}`);
    const want = expectedRead(RANGES, GEOMETRY, SEED, lba, 128);
    if (!r.data.equals(want)) throw new Error('READ returned other data than the oracle');
    await ini.logout();
  } finally {
    ini.destroy();
  }
}
