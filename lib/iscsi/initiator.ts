/**
 * A userspace iSCSI initiator over node:net (RFC 7143): login (AuthMethod None, CHAP or mutual
 * CHAP), SendTargets discovery, SCSI commands with any CDB length (Extended CDB AHS for > 16
 * bytes), immediate data / R2T for writes, NOP, task management and logout. One connection per
 * session, ErrorRecoveryLevel 0, no digests.
 *
 * What makes it usable for a backup agent (lib/transport/iscsi.ts builds on it):
 * - several commands in flight, never past the target's command window (ExpCmdSN..MaxCmdSN) nor
 *   `queueDepth`; the rest wait in FIFO order;
 * - Data-In written straight into the caller's buffer, in order, every offset and length checked
 *   (a violation ends the command and drops the connection: it cannot be trusted);
 * - the negotiated MaxRecvDataSegmentLength / MaxBurstLength / FirstBurstLength honoured both
 *   ways (the PDU reader refuses segments longer than what we declared; 8192 during login);
 * - NOP-In pings answered, a NOP-Out keepalive after `keepaliveIntervalMs` of silence;
 * - a per-command timeout that sends ABORT TASK, and drops the connection if that goes
 *   unanswered;
 * - on connection loss, a new login with the same ISID (and the old TSIH, falling back to a new
 *   session when the target no longer knows it), then the read-only commands that were in flight
 *   are sent again; bounded attempts;
 * - every failure of a command is a result (`execute` never rejects); secrets never appear in a
 *   message or a log line.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { debuglog } from 'node:util';
import { type IscsiInitiatorErrorCode, LbaStatusError } from '../errors.js';
import { chapResponse, parseChapBinary } from './login.js';
import {
  type DataInPdu,
  decodePdu,
  encodePdu,
  IscsiProtocolError,
  type LoginResponsePdu,
  type NopInPdu,
  Opcode,
  type Pdu,
  type R2TPdu,
  RESERVED_TAG,
  type RejectPdu,
  type ScsiResponsePdu,
  Stage,
  snAdd,
  snLess,
  TmfFunction,
} from './pdu.js';
import { PduReader } from './reader.js';
import { decodeText, decodeTextPairs, encodeText } from './text.js';

/** CHAP credentials; `target` asks for mutual CHAP (the target must prove it knows its secret). */
export interface InitiatorChap {
  username: string;
  secret: string;
  target?: { username: string; secret: string };
}

export interface InitiatorOptions {
  host: string;
  port: number;
  initiatorName?: string;
  /** Required for a normal session. */
  targetName?: string;
  sessionType?: 'Normal' | 'Discovery';
  chap?: InitiatorChap;
  /** What this initiator can receive per PDU (default 262144). */
  maxRecvDataSegmentLength?: number;
  /** Our MaxBurstLength offer (default 16776192). */
  maxBurstLength?: number;
  /** Our FirstBurstLength offer (default 262144). */
  firstBurstLength?: number;
  /** 6-byte ISID (default: random, type "random" 80h). */
  isid?: Buffer;
  /** Default per-command timeout in ms (default 30 000; 0 = none). */
  timeoutMs?: number;
  /** Bound on TCP connect + login, in ms (default 15 000). */
  loginTimeoutMs?: number;
  /** Most commands in flight (default 32); the target's window may allow fewer. */
  queueDepth?: number;
  /** Silence after which a NOP-Out keepalive is sent, in ms (default 5000; 0 = never). */
  keepaliveIntervalMs?: number;
  /** How long the keepalive waits for its NOP-In before the connection is declared dead (5000). */
  keepaliveTimeoutMs?: number;
  /** How long ABORT TASK may take before the connection is dropped (default 5000). */
  abortTimeoutMs?: number;
  /** Log in again after a lost connection (default: attempts 0, i.e. never). */
  reconnect?: { attempts?: number; delayMs?: number };
  /** Aborts the initial connect and login. */
  signal?: AbortSignal;
  /** One line per event (default: util.debuglog('lba_status_iscsi')). Never given secrets. */
  log?: (line: string) => void;
}

/** Outcome of one SCSI command (the throwing `command()` API). */
export interface CommandResult {
  /** iSCSI response code (0 = command completed at target). */
  response: number;
  status: number;
  sense?: Buffer;
  /** Data-In actually received (its length is the transferred byte count). */
  data: Buffer;
  residualCount: number;
  underflow: boolean;
  overflow: boolean;
  /** Number of Data-In PDUs. */
  dataInPdus: number;
}

export interface CommandOptions {
  /** Expected Data-In length (R bit). */
  dataInLength?: number;
  /** Data-Out payload (W bit). */
  dataOut?: Buffer;
  timeoutMs?: number;
  /** Task attribute (default 1 = simple). */
  attr?: number;
}

/** Options of {@link IscsiInitiator.execute}. */
export interface ExecuteOptions {
  /** Data-In goes here, from offset 0, never past its byteLength (the Expected Data Transfer Length). */
  dataIn?: Uint8Array | null | undefined;
  /** Data-Out payload. */
  dataOut?: Uint8Array | null | undefined;
  /** Sense data from a SCSI Response is copied here. */
  sense?: Uint8Array | null | undefined;
  /** Per-command timeout in ms (default: the initiator's timeoutMs). */
  timeoutMs?: number | undefined;
  /** Task attribute (default 1 = simple). */
  attr?: number | undefined;
}

/** Why a command did not complete with a SCSI status. */
export type ExecuteFailure = 'timeout' | 'protocol' | 'connection' | 'target' | 'closed';

/** How one command ended. Exactly one of `failure` or a meaningful `status`. */
export interface ExecuteResult {
  /** Set when the command did not complete (no SCSI status). */
  failure?: ExecuteFailure;
  /** What went wrong, in words (with `failure`). */
  detail?: string;
  /** iSCSI response code (0 = completed at target). */
  response: number;
  status: number;
  /** Bytes of sense data copied into the sense buffer. */
  senseLength: number;
  /** Data bytes moved (Data-In placed into the buffer, or Data-Out accepted). */
  transferred: number;
  residualCount: number;
  overflow: boolean;
  underflow: boolean;
  dataInPdus: number;
  /** How often the command was sent again after a reconnect. */
  reissued: number;
}

/** A failure of the initiator itself (login, closed session), with a stable `code`. */
export class IscsiInitiatorError extends LbaStatusError {
  override name = 'IscsiInitiatorError';
  /**
   * `ERR_ISCSI_LOGIN` (the target refused: see statusClass/statusDetail),
   * `ERR_ISCSI_LOGIN_TIMEOUT`, `ERR_ISCSI_LOGIN_PROTOCOL`, `ERR_ISCSI_CHAP_REQUIRED`,
   * `ERR_ISCSI_MUTUAL_CHAP`, `ECONNRESET`, `ETIMEDOUT`, `ERR_ISCSI_REJECT`, `ABORT_ERR`, …
   */
  readonly code: IscsiInitiatorErrorCode;
  readonly statusClass: number | undefined;
  readonly statusDetail: number | undefined;
  constructor(
    message: string,
    code: IscsiInitiatorErrorCode = 'ERR_ISCSI_INITIATOR',
    status?: { statusClass: number; statusDetail: number },
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.code = code;
    this.statusClass = status?.statusClass;
    this.statusDetail = status?.statusDetail;
  }
}

/**
 * Commands that only read, and so may be sent again after a reconnect: TEST UNIT READY,
 * INQUIRY, MODE SENSE(6/10), READ CAPACITY(10/16), READ(10/16), GET LBA STATUS(16/32),
 * REPORT LUNS, REPORT SUPPORTED OPERATION CODES.
 */
export function isReadOnlyCdb(cdb: Uint8Array): boolean {
  const op = cdb[0];
  switch (op) {
    case 0x00:
    case 0x12:
    case 0x1a:
    case 0x5a:
    case 0x25:
    case 0x28:
    case 0x88:
    case 0xa0:
      return true;
    case 0x9e: {
      const sa = (cdb[1] ?? 0) & 0x1f;
      return sa === 0x10 || sa === 0x12;
    }
    case 0xa3:
      return ((cdb[1] ?? 0) & 0x1f) === 0x0c;
    case 0x7f:
      return cdb.length >= 10 && ((cdb[8]! << 8) | cdb[9]!) === 0x0012;
    default:
      return false;
  }
}

const LOGIN_MAX_DATA = 8192;
const MAX_LOGIN_EXCHANGES = 16;
const RETIRED_LIMIT = 1024;
const EMPTY = Buffer.alloc(0);
const defaultLog = debuglog('lba_status_iscsi');

type State = 'login' | 'full' | 'reconnecting' | 'failed' | 'closing' | 'closed';

interface Task {
  itt: number;
  lun: number;
  cdb: Buffer;
  dataIn: Uint8Array | null;
  dataOut: Buffer | null;
  sense: Uint8Array | null;
  edtl: number;
  attr: number;
  readOnly: boolean;
  timeoutMs: number;
  state: 'queued' | 'sent' | 'aborting' | 'done';
  cmdSN: number;
  expDataSN: number;
  nextOffset: number;
  burst: number;
  reissued: number;
  /** performance.now() after which the command times out; 0: none (or already handled). */
  deadline: number;
  resolve(result: ExecuteResult): void;
}

interface Control {
  resolve(pdu: Pdu): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout | undefined;
}

function toBuffer(u8: Uint8Array): Buffer {
  return Buffer.isBuffer(u8) ? u8 : Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
}

function hex(n: number, width = 2): string {
  return `0x${n.toString(16).padStart(width, '0')}`;
}

function failed(failure: ExecuteFailure, detail: string, reissued = 0): ExecuteResult {
  return {
    failure,
    detail,
    response: 0,
    status: 0,
    senseLength: 0,
    transferred: 0,
    residualCount: 0,
    overflow: false,
    underflow: false,
    dataInPdus: 0,
    reissued,
  };
}

const tmfResponseNames: Record<number, string> = {
  0: 'function complete',
  1: 'task does not exist',
  2: 'LUN does not exist',
  3: 'task still allegiant',
  4: 'reassignment not supported',
  5: 'not supported',
  6: 'authorization failed',
  255: 'rejected',
};

/**
 * Bytes read per system call into one buffer per connection (`onread`): no buffer allocated per
 * read and no stream machinery per chunk. The chunk is valid only during the callback; the
 * PduReader (transientChunks) copies what it keeps.
 */
const READ_BUFFER_BYTES = 1 << 20;

/** Where a connection's reads go once the session attached it (before: kept, copied). */
const readSinks = new WeakMap<net.Socket, (chunk: Buffer) => void>();
const earlyReads = new WeakMap<net.Socket, Buffer[]>();

/** Sends `socket`'s reads to `sink`, the ones before first. */
function setReadSink(socket: net.Socket, sink: (chunk: Buffer) => void): void {
  readSinks.set(socket, sink);
  const early = earlyReads.get(socket);
  earlyReads.delete(socket);
  for (const c of early ?? []) sink(c);
}

/** Opens a TCP connection within `timeoutMs`; errors are Node's (errno, syscall, code). */
function openSocket(
  host: string,
  port: number,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new IscsiInitiatorError('the connect was aborted', 'ABORT_ERR'));
      return;
    }
    const s: net.Socket = net.connect({
      host,
      port,
      onread: {
        buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES),
        callback: (n: number, buf: Uint8Array): boolean => {
          const chunk = Buffer.from(buf.buffer, buf.byteOffset, n);
          const sink = readSinks.get(s);
          if (sink) sink(chunk);
          else {
            const early = earlyReads.get(s) ?? [];
            early.push(Buffer.from(chunk));
            earlyReads.set(s, early);
          }
          return true;
        },
      },
    });
    const done = (err?: Error): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      s.off('connect', onConnect);
      if (err) {
        s.destroy();
        reject(err);
        return;
      }
      // Keep a listener until the session attaches its own, so no error goes unhandled.
      s.on('error', () => {});
      s.off('error', done);
      resolve(s);
    };
    const onConnect = (): void => done();
    const onAbort = (): void =>
      done(new IscsiInitiatorError('the connect was aborted', 'ABORT_ERR', undefined));
    const timer = setTimeout(() => {
      done(
        Object.assign(new Error(`connect ETIMEDOUT ${host}:${port}`), {
          code: 'ETIMEDOUT',
          errno: -(os.constants.errno.ETIMEDOUT ?? 110),
          syscall: 'connect',
          address: host,
          port,
        }),
      );
    }, timeoutMs);
    s.once('error', done);
    s.once('connect', onConnect);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A logged-in iSCSI session with one connection. */
export class IscsiInitiator {
  /** The options, with every CHAP secret replaced by `'(hidden)'` (safe to log or inspect). */
  readonly options: Readonly<InitiatorOptions>;
  /** The options as given (with the secrets); private so that inspecting the object shows none. */
  readonly #opts: InitiatorOptions;
  /** Keys the target answered during the last login (last value of each). */
  readonly loginKeys = new Map<string, string>();
  tsih = 0;
  /** What the target declared it can receive per PDU. */
  targetMaxRecvDataSegmentLength = 8192;
  maxBurstLength = 262144;
  firstBurstLength = 65536;
  immediateData = true;
  /** Counters for tests and diagnostics. */
  readonly stats = { logins: 0, reconnects: 0, reissued: 0, aborts: 0, keepalives: 0 };

  #isid: Buffer;
  #log: (line: string) => void;
  #queueDepth: number;
  #timeoutMs: number;
  #loginTimeoutMs: number;
  #abortTimeoutMs: number;
  #kaInterval: number;
  #kaTimeout: number;
  #reconnectAttempts: number;
  #reconnectDelayMs: number;
  #ourMrdsl: number;
  #ourMaxBurst: number;
  #ourFirstBurst: number;

  #state: State = 'login';
  #failReason = '';
  #socket: net.Socket | undefined;
  #reader = new PduReader({ maxDataSegmentLength: LOGIN_MAX_DATA });
  /** Bumped when a connection ends: events of older sockets are ignored. */
  #gen = 0;
  #loginActive = false;
  #loginWaiter: { resolve(pdu: LoginResponsePdu): void; reject(err: Error): void } | undefined;

  #itt = 1;
  #cmdSN = 1;
  #expStatSN = 0;
  #expCmdSN = 1;
  #maxCmdSN = 1;
  #tasks = new Map<number, Task>();
  #queue: Task[] = [];
  #inFlight = 0;
  #control = new Map<number, Control>();
  /** ITTs of aborted tasks: late PDUs for them are dropped, not a protocol error. */
  #retired = new Set<number>();
  #lastRx = 0;
  #burstNoted = false;
  #kaTimer: NodeJS.Timeout | undefined;
  /** The one timer for command timeouts, armed for #sweepAt (a performance.now() time). */
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweepAt = Number.POSITIVE_INFINITY;
  #cancelSleep: (() => void) | undefined;
  #closing: Promise<number | Error> | undefined;

  private constructor(options: InitiatorOptions) {
    this.#opts = options;
    const chap = options.chap;
    this.options = Object.freeze({
      ...options,
      ...(chap
        ? {
            chap: {
              username: chap.username,
              secret: '(hidden)',
              ...(chap.target
                ? { target: { username: chap.target.username, secret: '(hidden)' } }
                : {}),
            },
          }
        : {}),
    });
    this.#isid = options.isid ?? Buffer.concat([Buffer.from([0x80]), randomBytes(5)]);
    this.#log = options.log ?? ((line) => defaultLog('%s', line));
    this.#queueDepth = options.queueDepth ?? 32;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#loginTimeoutMs = options.loginTimeoutMs ?? 15_000;
    this.#abortTimeoutMs = options.abortTimeoutMs ?? 5000;
    this.#kaInterval = options.keepaliveIntervalMs ?? 5000;
    this.#kaTimeout = options.keepaliveTimeoutMs ?? 5000;
    this.#reconnectAttempts = options.reconnect?.attempts ?? 0;
    this.#reconnectDelayMs = options.reconnect?.delayMs ?? 1000;
    this.#ourMrdsl = options.maxRecvDataSegmentLength ?? 262144;
    this.#ourMaxBurst = options.maxBurstLength ?? 16776192;
    this.#ourFirstBurst = Math.min(options.firstBurstLength ?? 262144, this.#ourMaxBurst);
  }

  /** Connects and logs in. On failure nothing is left open. */
  static async connect(options: InitiatorOptions): Promise<IscsiInitiator> {
    const ini = new IscsiInitiator(options);
    await ini.#establish(0, options.signal);
    ini.#state = 'full';
    ini.#armKeepalive();
    return ini;
  }

  /** True once the session can no longer carry commands (closed, or lost for good). */
  get closed(): boolean {
    return this.#state === 'failed' || this.#state === 'closing' || this.#state === 'closed';
  }

  /** `full` (logged in), `reconnecting`, `failed`, `closing`, `closed` (or `login`). */
  get state(): State {
    return this.#state;
  }

  /** Commands on the wire now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** The ITT the next command will use (for task management tests). */
  get nextItt(): number {
    return this.#itt;
  }

  /** The MaxRecvDataSegmentLength this initiator declared (the reader refuses longer segments). */
  get maxRecvDataSegmentLength(): number {
    return this.#ourMrdsl;
  }

  /** The ISID of this session (kept across reconnects). */
  get isid(): Buffer {
    return Buffer.from(this.#isid);
  }

  // ------------------------------------------------------------------------------------------
  // Connection

  async #establish(tsih: number, signal?: AbortSignal): Promise<void> {
    const o = this.#opts;
    const deadline = performance.now() + this.#loginTimeoutMs;
    const socket = await openSocket(o.host, o.port, this.#loginTimeoutMs, signal);
    if (this.#state === 'closing' || this.#state === 'closed') {
      socket.destroy();
      throw new IscsiInitiatorError('the initiator was closed', 'ECONNRESET');
    }
    this.#attach(socket);
    const gen = this.#gen;
    const onAbort = (): void =>
      this.#lost(gen, new IscsiInitiatorError('the login was aborted', 'ABORT_ERR'));
    signal?.addEventListener('abort', onAbort, { once: true });
    this.#loginActive = true;
    try {
      await this.#login(tsih, deadline);
      const state = this.#state as State;
      if (state === 'closing' || state === 'closed') {
        throw new IscsiInitiatorError('the initiator was closed', 'ECONNRESET');
      }
    } catch (err) {
      this.#loginActive = false;
      this.#lost(gen, err as Error);
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    this.#loginActive = false;
    this.#reader.setMaxDataSegmentLength(this.#ourMrdsl);
    this.stats.logins++;
    this.#log(
      `logged in to ${o.targetName ?? '(discovery)'} at ${o.host}:${o.port} tsih=${this.tsih} ` +
        `MRDSL ours=${this.#ourMrdsl} theirs=${this.targetMaxRecvDataSegmentLength} ` +
        `MaxBurstLength=${this.maxBurstLength} FirstBurstLength=${this.firstBurstLength}`,
    );
  }

  #attach(socket: net.Socket): void {
    const gen = ++this.#gen;
    const reader = new PduReader({
      maxDataSegmentLength: LOGIN_MAX_DATA,
      reuseDataInBuffer: true,
      transientChunks: true,
    });
    this.#socket = socket;
    this.#reader = reader;
    this.#lastRx = performance.now();
    socket.setNoDelay(true);
    setReadSink(socket, (chunk: Buffer) => {
      if (gen !== this.#gen) return;
      this.#lastRx = performance.now();
      try {
        for (const raw of reader.push(chunk)) {
          this.#dispatch(decodePdu(raw));
          if (gen !== this.#gen) return;
        }
      } catch (err) {
        this.#lost(gen, err as Error);
      }
    });
    socket.on('error', (err) => this.#lost(gen, err));
    socket.on('close', () =>
      this.#lost(gen, new IscsiInitiatorError('the target closed the connection', 'ECONNRESET')),
    );
  }

  /** The connection of generation `gen` is over (error, close, protocol violation, timeout). */
  #lost(gen: number, err: Error): void {
    if (gen !== this.#gen) return;
    this.#gen++;
    const socket = this.#socket;
    this.#socket = undefined;
    socket?.destroy();
    clearTimeout(this.#kaTimer);
    this.#kaTimer = undefined;
    const why = err.message;
    if (this.#state !== 'closed') this.#log(`connection lost: ${why}`);
    const waiter = this.#loginWaiter;
    this.#loginWaiter = undefined;
    waiter?.reject(err);
    this.#rejectControl(new IscsiInitiatorError(`connection lost: ${why}`, 'ECONNRESET'));
    if (this.#loginActive) return; // #establish reports it
    if (this.#state === 'closing' || this.#state === 'closed') {
      this.#failAll('closed', 'the initiator was closed');
      return;
    }
    if (this.#state !== 'full') return;
    const reconnect = this.#reconnectAttempts > 0;
    this.#state = reconnect ? 'reconnecting' : 'failed';
    if (!reconnect) this.#failReason = `the connection closed (${why}) and reconnect is off`;
    const again: Task[] = [];
    for (const t of [...this.#tasks.values()]) {
      if (t.state === 'queued' || t.state === 'done') continue;
      if (t.state === 'aborting') {
        this.#finish(
          t,
          failed(
            'timeout',
            `no answer within ${t.timeoutMs} ms; the connection was lost while aborting it (${why})`,
            t.reissued,
          ),
        );
        continue;
      }
      if (reconnect && t.readOnly && t.reissued < this.#reconnectAttempts) {
        this.#inFlight--;
        t.state = 'queued';
        t.reissued++;
        t.dataIn?.fill(0); // nothing of the lost attempt may pass for data
        again.push(t);
        continue;
      }
      const op = hex(t.cdb[0] ?? 0);
      this.#finish(
        t,
        failed(
          'connection',
          !reconnect
            ? `the connection closed (${why}) and reconnect is off`
            : t.readOnly
              ? `the connection was lost (${why}) after the command had been sent ${t.reissued + 1} times`
              : `the connection was lost (${why}); the command (opcode ${op}) was not sent again because it may change the medium`,
          t.reissued,
        ),
      );
    }
    again.sort((a, b) => (snLess(a.cmdSN, b.cmdSN) ? -1 : 1));
    this.#queue.unshift(...again);
    if (reconnect) void this.#reconnect(err);
    else this.#failAll('connection', this.#failReason);
  }

  async #reconnect(cause: Error): Promise<void> {
    this.stats.reconnects++;
    let last: Error = cause;
    let tries = 0;
    for (let i = 0; i < this.#reconnectAttempts; i++) {
      await this.#sleep(this.#reconnectDelayMs);
      if (this.#state !== 'reconnecting') return;
      tries++;
      try {
        try {
          await this.#establish(this.tsih);
        } catch (err) {
          // The target forgot the session (restarted, or timed it out): a new session, same ISID.
          const e = err as IscsiInitiatorError;
          if (e.code !== 'ERR_ISCSI_LOGIN' || e.statusClass !== 2 || e.statusDetail !== 0x0a) {
            throw err;
          }
          this.#log('the target no longer knows the session; logging in to a new one');
          if (this.#state !== 'reconnecting') return;
          await this.#establish(0);
        }
        if (this.#state !== 'reconnecting') return;
        this.#retired.clear();
        this.#state = 'full';
        this.#armKeepalive();
        const again = this.#queue.filter((t) => t.reissued > 0).length;
        this.stats.reissued += again;
        this.#log(`reconnected after ${tries} attempt(s); ${this.#queue.length} command(s) queued`);
        this.#pump();
        return;
      } catch (err) {
        last = err as Error;
        this.#log(`reconnect attempt ${tries} failed: ${last.message}`);
        const e = err as IscsiInitiatorError;
        // A refusal that will not change by itself (wrong CHAP, unknown target): stop.
        if (e.code === 'ERR_ISCSI_LOGIN' && e.statusClass === 2) break;
        if (e.code === 'ERR_ISCSI_MUTUAL_CHAP' || e.code === 'ERR_ISCSI_CHAP_REQUIRED') break;
      }
    }
    if (this.#state !== 'reconnecting') return;
    this.#state = 'failed';
    this.#failReason = `the connection was lost (${cause.message}) and ${tries} reconnect attempt(s) failed (last: ${last.message})`;
    this.#failAll('connection', this.#failReason);
  }

  #sleep(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#cancelSleep = done;
    });
  }

  // ------------------------------------------------------------------------------------------
  // Login

  async #login(tsih: number, deadline: number): Promise<void> {
    const o = this.#opts;
    const discovery = o.sessionType === 'Discovery';
    const itt = this.#allocItt();
    this.loginKeys.clear();
    let exchanges = 0;
    const send = async (
      csg: number,
      nsg: number,
      transit: boolean,
      keys: Array<[string, string]>,
    ): Promise<{ r: LoginResponsePdu; keys: Map<string, string> }> => {
      if (++exchanges > MAX_LOGIN_EXCHANGES) {
        throw new IscsiInitiatorError(
          `the login did not finish within ${MAX_LOGIN_EXCHANGES} exchanges`,
          'ERR_ISCSI_LOGIN_PROTOCOL',
        );
      }
      const remaining = deadline - performance.now();
      const timeoutError = new IscsiInitiatorError(
        `no login response within ${this.#loginTimeoutMs} ms`,
        'ERR_ISCSI_LOGIN_TIMEOUT',
      );
      if (remaining <= 0) throw timeoutError;
      if (!this.#socket) {
        throw new IscsiInitiatorError(
          'the target closed the connection during login',
          'ECONNRESET',
        );
      }
      const wait = new Promise<LoginResponsePdu>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.#loginWaiter = undefined;
          reject(timeoutError);
        }, remaining);
        this.#loginWaiter = {
          resolve: (p) => {
            clearTimeout(timer);
            resolve(p);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        };
      });
      wait.catch(() => {});
      this.#write({
        opcode: Opcode.LoginRequest,
        immediate: true,
        transit,
        continue: false,
        csg,
        nsg,
        versionMax: 0,
        versionMin: 0,
        isid: this.#isid,
        tsih,
        itt,
        cid: 0,
        cmdSN: this.#cmdSN,
        expStatSN: this.#expStatSN,
        data: encodeText(keys),
      });
      const r = await wait;
      if (r.itt !== itt) {
        throw new IscsiInitiatorError(
          `login response for ITT ${r.itt}, expected ${itt}`,
          'ERR_ISCSI_LOGIN_PROTOCOL',
        );
      }
      this.#expStatSN = snAdd(r.statSN, 1);
      if (r.statusClass !== 0) {
        throw new IscsiInitiatorError(
          `login failed: status class ${r.statusClass} detail ${r.statusDetail}`,
          'ERR_ISCSI_LOGIN',
          { statusClass: r.statusClass, statusDetail: r.statusDetail },
        );
      }
      if (r.continue) {
        throw new IscsiInitiatorError(
          'the target split a login response over several PDUs (C bit), which this initiator does not accept',
          'ERR_ISCSI_LOGIN_PROTOCOL',
        );
      }
      let got: Map<string, string>;
      try {
        got = decodeText(r.data ?? EMPTY);
      } catch (err) {
        throw new IscsiInitiatorError(
          `malformed login response text: ${(err as Error).message}`,
          'ERR_ISCSI_LOGIN_PROTOCOL',
        );
      }
      for (const [k, v] of got) this.loginKeys.set(k, v);
      return { r, keys: got };
    };

    const chap = o.chap;
    const mutual = chap?.target;
    const first: Array<[string, string]> = [
      ['InitiatorName', o.initiatorName ?? 'iqn.2024-01.lba-status:initiator'],
      ['SessionType', discovery ? 'Discovery' : 'Normal'],
    ];
    if (!discovery) {
      if (!o.targetName) throw new TypeError('targetName is required for a normal session');
      first.push(['TargetName', o.targetName]);
    }
    first.push(['AuthMethod', chap ? (mutual ? 'CHAP' : 'CHAP,None') : 'None']);
    let { r, keys } = await send(Stage.Security, Stage.Operational, true, first);
    const method = keys.get('AuthMethod');
    if (method === 'CHAP') {
      if (!chap) {
        throw new IscsiInitiatorError(
          'the target requires CHAP authentication',
          'ERR_ISCSI_CHAP_REQUIRED',
        );
      }
      ({ r, keys } = await send(Stage.Security, Stage.Operational, false, [['CHAP_A', '5']]));
      const id = Number(keys.get('CHAP_I'));
      const challenge = parseChapBinary(keys.get('CHAP_C') ?? '');
      if (keys.get('CHAP_A') !== '5' || !challenge || !Number.isInteger(id) || id < 0 || id > 255) {
        throw new IscsiInitiatorError(
          'the target sent no usable CHAP challenge (CHAP_A=5 with MD5, CHAP_I and CHAP_C)',
          'ERR_ISCSI_LOGIN_PROTOCOL',
        );
      }
      const answer: Array<[string, string]> = [
        ['CHAP_N', chap.username],
        ['CHAP_R', `0x${chapResponse(id, chap.secret, challenge).toString('hex')}`],
      ];
      let myId = 0;
      let myChallenge = EMPTY;
      if (mutual) {
        myId = randomBytes(1)[0]!;
        do myChallenge = randomBytes(16);
        while (myChallenge.equals(challenge));
        answer.push(['CHAP_I', String(myId)], ['CHAP_C', `0x${myChallenge.toString('hex')}`]);
      }
      ({ r, keys } = await send(Stage.Security, Stage.Operational, true, answer));
      if (mutual) {
        const name = keys.get('CHAP_N');
        const resp = parseChapBinary(keys.get('CHAP_R') ?? '');
        const expected = chapResponse(myId, mutual.secret, myChallenge);
        if (name !== mutual.username) {
          throw new IscsiInitiatorError(
            name === undefined
              ? 'the target did not answer the mutual CHAP challenge'
              : 'the target answered mutual CHAP under another user name than the one configured for the target',
            'ERR_ISCSI_MUTUAL_CHAP',
          );
        }
        if (!resp || resp.length !== expected.length || !timingSafeEqual(resp, expected)) {
          throw new IscsiInitiatorError(
            'the target answered the mutual CHAP challenge wrongly',
            'ERR_ISCSI_MUTUAL_CHAP',
          );
        }
      }
    } else if (method === 'None') {
      if (mutual) {
        throw new IscsiInitiatorError(
          'the target did not authenticate itself (AuthMethod=None) although mutual CHAP was asked for',
          'ERR_ISCSI_MUTUAL_CHAP',
        );
      }
    } else if (method !== undefined || chap) {
      throw new IscsiInitiatorError(
        `the target accepted none of the offered authentication methods (it answered AuthMethod=${method ?? '(nothing)'})`,
        'ERR_ISCSI_LOGIN_PROTOCOL',
      );
    }
    while (!r.transit) ({ r, keys } = await send(Stage.Security, Stage.Operational, true, []));

    if (r.nsg !== Stage.FullFeature) {
      const op: Array<[string, string]> = [
        ['HeaderDigest', 'None'],
        ['DataDigest', 'None'],
        ['MaxRecvDataSegmentLength', String(this.#ourMrdsl)],
      ];
      if (!discovery) {
        op.push(
          ['InitialR2T', 'Yes'],
          ['ImmediateData', 'Yes'],
          ['MaxBurstLength', String(this.#ourMaxBurst)],
          ['FirstBurstLength', String(this.#ourFirstBurst)],
          ['DefaultTime2Wait', '0'],
          ['DefaultTime2Retain', '0'],
          ['MaxOutstandingR2T', '1'],
          ['DataPDUInOrder', 'Yes'],
          ['DataSequenceInOrder', 'Yes'],
          ['ErrorRecoveryLevel', '0'],
          ['MaxConnections', '1'],
        );
      }
      ({ r } = await send(Stage.Operational, Stage.FullFeature, true, op));
      while (!(r.transit && r.nsg === Stage.FullFeature)) {
        ({ r } = await send(Stage.Operational, Stage.FullFeature, true, []));
      }
    }
    this.#applyNegotiated(discovery);
    if (r.tsih) this.tsih = r.tsih;
    // The command window of the (re)newed session.
    this.#cmdSN = r.expCmdSN;
    this.#expCmdSN = r.expCmdSN;
    this.#maxCmdSN = r.maxCmdSN;
  }

  #applyNegotiated(discovery: boolean): void {
    const k = this.loginKeys;
    const bad = (key: string, value: string): never => {
      throw new IscsiInitiatorError(
        `the target answered ${key}=${value}, which this initiator cannot use`,
        'ERR_ISCSI_LOGIN_PROTOCOL',
      );
    };
    const num = (key: string, fallback: number, lo: number, hi: number): number => {
      const v = k.get(key);
      if (v === undefined) return fallback;
      const n = Number(v);
      if (!/^\d+$/.test(v) || n < lo || n > hi) bad(key, v);
      return n;
    };
    for (const key of ['HeaderDigest', 'DataDigest']) {
      const v = k.get(key);
      if (v !== undefined && v !== 'None') bad(key, v);
    }
    this.targetMaxRecvDataSegmentLength = num('MaxRecvDataSegmentLength', 8192, 512, 16777215);
    if (discovery) return;
    this.maxBurstLength = num('MaxBurstLength', 262144, 512, this.#ourMaxBurst);
    this.firstBurstLength = Math.min(
      num('FirstBurstLength', 65536, 512, this.#ourFirstBurst),
      this.maxBurstLength,
    );
    const erl = k.get('ErrorRecoveryLevel');
    if (erl !== undefined && erl !== '0') bad('ErrorRecoveryLevel', erl);
    for (const key of ['DataPDUInOrder', 'DataSequenceInOrder', 'InitialR2T']) {
      const v = k.get(key);
      if (v !== undefined && v !== 'Yes') bad(key, v);
    }
    const imm = k.get('ImmediateData');
    if (imm !== undefined && imm !== 'Yes' && imm !== 'No') bad('ImmediateData', imm);
    this.immediateData = imm !== 'No';
  }

  // ------------------------------------------------------------------------------------------
  // Receiving

  #dispatch(pdu: Pdu): void {
    if (this.#loginActive) {
      if (pdu.opcode !== Opcode.LoginResponse) {
        throw new IscsiProtocolError(`opcode ${hex(pdu.opcode)} during login`);
      }
      const w = this.#loginWaiter;
      this.#loginWaiter = undefined;
      if (!w) throw new IscsiProtocolError('an unsolicited login response');
      w.resolve(pdu);
      return;
    }
    switch (pdu.opcode) {
      case Opcode.DataIn:
        this.#window(pdu);
        this.#onDataIn(pdu);
        return;
      case Opcode.ScsiResponse:
        this.#window(pdu);
        this.#expStatSN = snAdd(pdu.statSN, 1);
        this.#onResponse(pdu);
        return;
      case Opcode.R2T:
        this.#window(pdu);
        this.#onR2T(pdu);
        return;
      case Opcode.NopIn:
        this.#window(pdu);
        this.#onNopIn(pdu);
        return;
      case Opcode.TaskMgmtResponse:
      case Opcode.TextResponse:
      case Opcode.LogoutResponse:
        this.#window(pdu);
        this.#expStatSN = snAdd(pdu.statSN, 1);
        this.#settleControl(pdu.itt, pdu);
        return;
      case Opcode.Reject:
        this.#window(pdu);
        this.#expStatSN = snAdd(pdu.statSN, 1);
        this.#onReject(pdu);
        return;
      case Opcode.AsyncMessage:
        this.#window(pdu);
        this.#expStatSN = snAdd(pdu.statSN, 1);
        this.#log(`asynchronous message event ${pdu.asyncEvent} from the target`);
        return;
      default:
        throw new IscsiProtocolError(`unexpected opcode ${hex(pdu.opcode)} from the target`);
    }
  }

  /** ExpCmdSN/MaxCmdSN from the target (RFC 7143 §4.2.2.1); opens the window. */
  #window(pdu: { expCmdSN: number; maxCmdSN: number }): void {
    const { expCmdSN, maxCmdSN } = pdu;
    if (snLess(maxCmdSN, snAdd(expCmdSN, 0xffffffff))) return; // MaxCmdSN < ExpCmdSN - 1: ignore
    if (snLess(this.#expCmdSN, expCmdSN)) this.#expCmdSN = expCmdSN;
    if (snLess(this.#maxCmdSN, maxCmdSN)) {
      this.#maxCmdSN = maxCmdSN;
      this.#pump();
    }
  }

  /** The task a response names, or undefined for a retired (aborted) one. */
  #taskFor(itt: number, what: string): Task | undefined {
    const t = this.#tasks.get(itt);
    if (t && (t.state === 'sent' || t.state === 'aborting')) return t;
    if (this.#retired.has(itt)) return undefined;
    throw new IscsiProtocolError(`${what} for ITT ${hex(itt, 8)}, which has no command in flight`);
  }

  /** Ends the task with a protocol error, then throws to drop the connection. */
  #violation(t: Task, what: string): never {
    this.#finish(t, failed('protocol', `protocol error: ${what}; connection dropped`, t.reissued));
    throw new IscsiProtocolError(what);
  }

  #onDataIn(pdu: DataInPdu): void {
    const t = this.#taskFor(pdu.itt, 'Data-In');
    if (!t) return;
    const data = pdu.data ?? EMPTY;
    const off = pdu.bufferOffset;
    if (!t.dataIn) this.#violation(t, 'Data-In for a command without a data-in phase');
    if (pdu.dataSN !== t.expDataSN) {
      this.#violation(t, `Data-In with DataSN ${pdu.dataSN}, expected ${t.expDataSN}`);
    }
    if (off !== t.nextOffset) {
      this.#violation(
        t,
        `Data-In at buffer offset ${off}, expected ${t.nextOffset} (DataPDUInOrder=Yes)`,
      );
    }
    if (off + data.length > t.edtl) {
      this.#violation(
        t,
        `Data-In of ${data.length} bytes at offset ${off} passes the expected data transfer length of ${t.edtl} bytes`,
      );
    }
    // MaxBurstLength also bounds a Data-In sequence (RFC 7143 §13.13), but tgt sets the F bit
    // only on a command's last Data-In; nothing depends on it here (every byte is checked
    // against the buffer above), so a longer sequence is noted, not a reason to drop.
    t.burst += data.length;
    if (t.burst > this.maxBurstLength && !this.#burstNoted) {
      this.#burstNoted = true;
      this.#log(
        `the target sent a Data-In sequence of more than MaxBurstLength ${this.maxBurstLength} bytes (accepted)`,
      );
    }
    if (pdu.final) t.burst = 0;
    if (data.length > 0) t.dataIn.set(data, off);
    t.nextOffset = off + data.length;
    t.expDataSN++;
    if (!pdu.hasStatus) return;
    if (!pdu.final) this.#violation(t, 'Data-In with status (S bit) but without the F bit');
    this.#expStatSN = snAdd(pdu.statSN, 1);
    this.#finish(t, {
      response: 0,
      status: pdu.status,
      senseLength: 0,
      transferred: t.nextOffset,
      residualCount: pdu.residualCount,
      overflow: pdu.overflow,
      underflow: pdu.underflow,
      dataInPdus: t.expDataSN,
      reissued: t.reissued,
    });
  }

  #onResponse(pdu: ScsiResponsePdu): void {
    const t = this.#taskFor(pdu.itt, 'SCSI Response');
    if (!t) return;
    if (pdu.response !== 0) {
      this.#finish(
        t,
        failed(
          'target',
          `the target reported iSCSI response ${hex(pdu.response)} (target failure) instead of a SCSI status`,
          t.reissued,
        ),
      );
      return;
    }
    // ExpDataSN counts the Data-In PDUs sent; tgt always sends 0 there, so 0 means "not said".
    if (t.dataIn && pdu.expDataSN !== 0 && pdu.expDataSN !== t.expDataSN) {
      this.#violation(
        t,
        `SCSI Response says ${pdu.expDataSN} Data-In PDU(s) were sent, but ${t.expDataSN} arrived`,
      );
    }
    let senseLength = 0;
    const seg = pdu.data ?? EMPTY;
    if (seg.length >= 2 && t.sense) {
      const n = Math.min(seg.readUInt16BE(0), seg.length - 2, t.sense.byteLength);
      t.sense.set(seg.subarray(2, 2 + n));
      senseLength = n;
    }
    let transferred = t.nextOffset;
    if (t.dataOut) transferred = Math.max(0, t.edtl - (pdu.underflow ? pdu.residualCount : 0));
    this.#finish(t, {
      response: 0,
      status: pdu.status,
      senseLength,
      transferred,
      residualCount: pdu.residualCount,
      overflow: pdu.overflow,
      underflow: pdu.underflow,
      dataInPdus: t.expDataSN,
      reissued: t.reissued,
    });
  }

  #onR2T(pdu: R2TPdu): void {
    const t = this.#taskFor(pdu.itt, 'R2T');
    if (!t) return;
    const out = t.dataOut;
    if (!out) this.#violation(t, 'R2T for a command without data-out');
    const want = pdu.desiredDataTransferLength;
    if (want > this.maxBurstLength) {
      this.#violation(t, `R2T for ${want} bytes exceeds MaxBurstLength ${this.maxBurstLength}`);
    }
    if (pdu.bufferOffset + want > out.length) {
      this.#violation(
        t,
        `R2T for bytes ${pdu.bufferOffset}+${want} past the ${out.length} to send`,
      );
    }
    const end = pdu.bufferOffset + want;
    const seg = this.targetMaxRecvDataSegmentLength;
    let dataSN = 0;
    for (let off = pdu.bufferOffset; off < end; off += seg) {
      const len = Math.min(seg, end - off);
      this.#write({
        opcode: Opcode.DataOut,
        final: off + len >= end,
        lun: t.lun,
        itt: t.itt,
        ttt: pdu.ttt,
        expStatSN: this.#expStatSN,
        dataSN: dataSN++,
        bufferOffset: off,
        data: out.subarray(off, off + len),
      });
    }
  }

  #onNopIn(pdu: NopInPdu): void {
    if (pdu.itt === RESERVED_TAG) {
      // The target's ping: answer when it asks for one (TTT ≠ FFFFFFFFh), echoing its data.
      if (pdu.ttt !== RESERVED_TAG) {
        const data = pdu.data ?? EMPTY;
        this.#write({
          opcode: Opcode.NopOut,
          immediate: true,
          lun: pdu.lun,
          itt: RESERVED_TAG,
          ttt: pdu.ttt,
          cmdSN: this.#cmdSN,
          expStatSN: this.#expStatSN,
          data: data.subarray(0, this.targetMaxRecvDataSegmentLength),
        });
      }
      return;
    }
    this.#expStatSN = snAdd(pdu.statSN, 1);
    this.#settleControl(pdu.itt, pdu);
  }

  #onReject(pdu: RejectPdu): void {
    const bhs = pdu.data ?? EMPTY;
    const itt = bhs.length >= 20 ? bhs.readUInt32BE(16) : RESERVED_TAG;
    const op = bhs.length > 0 ? bhs[0]! & 0x3f : -1;
    const what = `the target rejected the PDU (reason ${hex(pdu.reason)})`;
    this.#log(`${what}, opcode ${hex(op)} ITT ${hex(itt, 8)}`);
    if (op === Opcode.ScsiCommand) {
      const t = this.#tasks.get(itt);
      if (t && (t.state === 'sent' || t.state === 'aborting')) {
        this.#retire(itt);
        this.#finish(t, failed('protocol', what, t.reissued));
      }
      return;
    }
    const c = this.#control.get(itt);
    if (c) {
      this.#control.delete(itt);
      clearTimeout(c.timer);
      c.reject(new IscsiInitiatorError(what, 'ERR_ISCSI_REJECT'));
    }
  }

  // ------------------------------------------------------------------------------------------
  // Sending

  #write(pdu: Pdu): boolean {
    const s = this.#socket;
    if (!s || s.destroyed) return false;
    // PDUs written in the same tick (commands started by one batch of completions) leave in
    // one writev: one system call and one wake-up of the target instead of one per PDU.
    if (!this.#corked) {
      this.#corked = true;
      s.cork();
      process.nextTick(() => {
        this.#corked = false;
        s.uncork();
      });
    }
    s.write(encodePdu(pdu));
    return true;
  }
  #corked = false;

  #allocItt(): number {
    for (;;) {
      const itt = this.#itt;
      this.#itt = itt >= 0x7fffffff ? 1 : itt + 1;
      if (!this.#tasks.has(itt) && !this.#control.has(itt) && !this.#retired.has(itt)) return itt;
    }
  }

  #retire(itt: number): void {
    this.#retired.add(itt);
    if (this.#retired.size > RETIRED_LIMIT) {
      this.#retired.delete(this.#retired.values().next().value as number);
    }
  }

  /** Sends queued commands while the queue depth and the target's window allow. */
  #pump(): void {
    while (
      this.#state === 'full' &&
      this.#queue.length > 0 &&
      this.#inFlight < this.#queueDepth &&
      !snLess(this.#maxCmdSN, this.#cmdSN)
    ) {
      this.#send(this.#queue.shift()!);
    }
  }

  #send(t: Task): void {
    t.state = 'sent';
    this.#inFlight++;
    t.cmdSN = this.#cmdSN;
    this.#cmdSN = snAdd(this.#cmdSN, 1);
    t.nextOffset = 0;
    t.expDataSN = 0;
    t.burst = 0;
    const out = t.dataOut;
    let immediate: Buffer | undefined;
    if (out && out.length > 0 && this.immediateData) {
      immediate = out.subarray(
        0,
        Math.min(out.length, this.firstBurstLength, this.targetMaxRecvDataSegmentLength),
      );
    }
    this.#write({
      opcode: Opcode.ScsiCommand,
      final: true, // InitialR2T=Yes: no unsolicited Data-Out beyond immediate data
      read: t.dataIn !== null && t.edtl > 0,
      write: out !== null && out.length > 0,
      attr: t.attr,
      lun: t.lun,
      itt: t.itt,
      expectedDataTransferLength: t.edtl,
      cmdSN: t.cmdSN,
      expStatSN: this.#expStatSN,
      cdb: t.cdb,
      data: immediate && immediate.length > 0 ? immediate : undefined,
    });
  }

  #finish(t: Task, result: ExecuteResult): void {
    if (t.state === 'done') return;
    t.deadline = 0;
    if (t.state === 'sent' || t.state === 'aborting') this.#inFlight--;
    else if (t.state === 'queued') {
      const i = this.#queue.indexOf(t);
      if (i >= 0) this.#queue.splice(i, 1);
    }
    t.state = 'done';
    this.#tasks.delete(t.itt);
    // Nothing left to time out: the sweep timer stays armed but no longer holds the process.
    if (this.#tasks.size === 0) this.#sweepTimer?.unref();
    t.resolve(result);
    this.#pump();
  }

  #failAll(failure: ExecuteFailure, detail: string): void {
    for (const t of [...this.#tasks.values()]) this.#finish(t, failed(failure, detail, t.reissued));
  }

  /** Arms the one timeout timer for `deadline` unless it already fires earlier. */
  #armSweep(deadline: number): void {
    const timer = this.#sweepTimer;
    if (timer && deadline >= this.#sweepAt) {
      if (!timer.hasRef()) timer.ref();
      return;
    }
    if (timer) clearTimeout(timer);
    this.#sweepAt = deadline;
    this.#sweepTimer = setTimeout(
      this.#onSweep,
      Math.max(1, Math.ceil(deadline - performance.now())),
    );
  }

  /** The timeout timer fired: times out every command past its deadline, re-arms for the next. */
  #onSweep = (): void => {
    this.#sweepTimer = undefined;
    this.#sweepAt = Number.POSITIVE_INFINITY;
    const now = performance.now();
    const due: Task[] = [];
    for (const t of this.#tasks.values()) if (t.deadline !== 0 && t.deadline <= now) due.push(t);
    for (const t of due) {
      if (t.deadline === 0) continue; // ended by an earlier one's timeout
      t.deadline = 0;
      this.#onTimeout(t);
    }
    let next = Number.POSITIVE_INFINITY;
    for (const t of this.#tasks.values())
      if (t.deadline !== 0 && t.deadline < next) next = t.deadline;
    if (next !== Number.POSITIVE_INFINITY) this.#armSweep(next);
  };

  #onTimeout(t: Task): void {
    if (t.state === 'queued') {
      this.#finish(
        t,
        failed(
          'timeout',
          `no answer within ${t.timeoutMs} ms (the command was never sent: ${
            this.#state === 'reconnecting'
              ? 'the session was reconnecting'
              : "it waited for the target's command window or the queue depth"
          })`,
          t.reissued,
        ),
      );
      return;
    }
    if (t.state !== 'sent') return;
    t.state = 'aborting';
    this.stats.aborts++;
    const gen = this.#gen;
    this.#log(`command ITT ${hex(t.itt, 8)} timed out after ${t.timeoutMs} ms; ABORT TASK`);
    this.#controlRequest(
      (itt) => ({
        opcode: Opcode.TaskMgmtRequest,
        immediate: true,
        function: TmfFunction.AbortTask,
        lun: t.lun,
        itt,
        referencedTaskTag: t.itt,
        cmdSN: this.#cmdSN,
        expStatSN: this.#expStatSN,
        refCmdSN: t.cmdSN,
        expDataSN: t.expDataSN,
      }),
      this.#abortTimeoutMs,
    ).then(
      (pdu) => {
        if (t.state !== 'aborting') return;
        const code = (pdu as { response: number }).response;
        this.#retire(t.itt);
        this.#finish(
          t,
          failed(
            'timeout',
            `no answer within ${t.timeoutMs} ms; aborted with ABORT TASK (${tmfResponseNames[code] ?? `response ${code}`})`,
            t.reissued,
          ),
        );
      },
      () => {
        if (t.state !== 'aborting') return; // the connection loss already ended it
        this.#retire(t.itt);
        this.#finish(
          t,
          failed(
            'timeout',
            `no answer within ${t.timeoutMs} ms, and no answer to ABORT TASK within ${this.#abortTimeoutMs} ms: connection dropped`,
            t.reissued,
          ),
        );
        this.#lost(
          gen,
          new IscsiInitiatorError(
            'ABORT TASK went unanswered; the connection cannot be trusted',
            'ETIMEDOUT',
          ),
        );
      },
    );
  }

  /** An immediate request (NOP-Out, TMF, logout, text) answered by a PDU with the same ITT. */
  #controlRequest(build: (itt: number) => Pdu, timeoutMs: number): Promise<Pdu> {
    const p = new Promise<Pdu>((resolve, reject) => {
      if (!this.#socket || (this.#state !== 'full' && this.#state !== 'closing')) {
        reject(new IscsiInitiatorError(`the session is down: ${this.#downReason()}`, 'ECONNRESET'));
        return;
      }
      const itt = this.#allocItt();
      const c: Control = { resolve, reject, timer: undefined };
      if (timeoutMs > 0) {
        c.timer = setTimeout(() => {
          this.#control.delete(itt);
          this.#retire(itt);
          reject(new IscsiInitiatorError(`no answer within ${timeoutMs} ms`, 'ETIMEDOUT'));
        }, timeoutMs);
      }
      this.#control.set(itt, c);
      this.#write(build(itt));
    });
    p.catch(() => {});
    return p;
  }

  #settleControl(itt: number, pdu: Pdu): void {
    const c = this.#control.get(itt);
    if (!c) {
      if (this.#retired.has(itt)) return;
      throw new IscsiProtocolError(`a response for ITT ${hex(itt, 8)}, which nothing waits for`);
    }
    this.#control.delete(itt);
    clearTimeout(c.timer);
    c.resolve(pdu);
  }

  #rejectControl(err: Error): void {
    const all = [...this.#control.values()];
    this.#control.clear();
    for (const c of all) {
      clearTimeout(c.timer);
      c.reject(err);
    }
  }

  #downReason(): string {
    if (this.#state === 'closing' || this.#state === 'closed') return 'the initiator was closed';
    if (this.#state === 'reconnecting')
      return 'the connection was lost and is being re-established';
    return this.#failReason || 'the connection closed';
  }

  #armKeepalive(delay = this.#kaInterval): void {
    if (!(this.#kaInterval > 0)) return;
    clearTimeout(this.#kaTimer);
    const gen = this.#gen;
    this.#kaTimer = setTimeout(() => this.#keepalive(gen), Math.max(1, delay));
    this.#kaTimer.unref();
  }

  #keepalive(gen: number): void {
    if (gen !== this.#gen || this.#state !== 'full') return;
    const idle = performance.now() - this.#lastRx;
    if (idle < this.#kaInterval) {
      this.#armKeepalive(this.#kaInterval - idle);
      return;
    }
    this.stats.keepalives++;
    this.#controlRequest(
      (itt) => ({
        opcode: Opcode.NopOut,
        immediate: true,
        lun: 0,
        itt,
        ttt: RESERVED_TAG,
        cmdSN: this.#cmdSN,
        expStatSN: this.#expStatSN,
      }),
      this.#kaTimeout,
    ).then(
      () => {
        if (gen === this.#gen) this.#armKeepalive();
      },
      () => {
        this.#lost(
          gen,
          new IscsiInitiatorError(
            `no answer to a keepalive NOP-Out within ${this.#kaTimeout} ms: the connection is dead`,
            'ETIMEDOUT',
          ),
        );
      },
    );
  }

  // ------------------------------------------------------------------------------------------
  // Public operations

  /**
   * Sends one SCSI command. Never rejects: a timeout (after ABORT TASK), a protocol violation, a
   * lost connection or a closed initiator is the result's `failure` with a `detail`.
   */
  execute(lun: number, cdb: Uint8Array, opts: ExecuteOptions = {}): Promise<ExecuteResult> {
    return new Promise<ExecuteResult>((resolve) => {
      if (this.#state !== 'full' && this.#state !== 'reconnecting') {
        const closed = this.#state === 'closing' || this.#state === 'closed';
        resolve(
          failed(closed ? 'closed' : 'connection', `the session is down: ${this.#downReason()}`),
        );
        return;
      }
      const dataIn = opts.dataIn ?? null;
      const dataOut = opts.dataOut ? toBuffer(opts.dataOut) : null;
      const timeoutMs = opts.timeoutMs ?? this.#timeoutMs;
      const t: Task = {
        itt: this.#allocItt(),
        lun,
        cdb: toBuffer(cdb),
        dataIn,
        dataOut,
        sense: opts.sense ?? null,
        edtl: dataOut ? dataOut.length : (dataIn?.byteLength ?? 0),
        attr: opts.attr ?? 1,
        readOnly: isReadOnlyCdb(cdb),
        timeoutMs,
        state: 'queued',
        cmdSN: 0,
        expDataSN: 0,
        nextOffset: 0,
        burst: 0,
        reissued: 0,
        deadline: timeoutMs > 0 ? performance.now() + timeoutMs : 0,
        resolve,
      };
      this.#tasks.set(t.itt, t);
      this.#queue.push(t);
      // One timer for every command's timeout (armed for the earliest deadline), not one each
      if (t.deadline !== 0) this.#armSweep(t.deadline);
      this.#pump();
    });
  }

  /** Sends one SCSI command and waits for its status; rejects when it did not complete. */
  async command(lun: number, cdb: Buffer, opts: CommandOptions = {}): Promise<CommandResult> {
    const dataIn = opts.dataInLength ? Buffer.alloc(opts.dataInLength) : null;
    const sense = Buffer.alloc(252);
    const r = await this.execute(lun, cdb, {
      dataIn,
      dataOut: opts.dataOut ?? null,
      sense,
      timeoutMs: opts.timeoutMs,
      attr: opts.attr,
    });
    if (r.failure) {
      const code =
        r.failure === 'timeout'
          ? 'ETIMEDOUT'
          : r.failure === 'protocol'
            ? 'ERR_ISCSI_PROTOCOL'
            : r.failure === 'target'
              ? 'ERR_ISCSI_TARGET_FAILURE'
              : 'ECONNRESET';
      throw new IscsiInitiatorError(r.detail ?? r.failure, code);
    }
    const result: CommandResult = {
      response: r.response,
      status: r.status,
      data: dataIn ? dataIn.subarray(0, r.transferred) : Buffer.alloc(0),
      residualCount: r.residualCount,
      underflow: r.underflow,
      overflow: r.overflow,
      dataInPdus: r.dataInPdus,
    };
    if (r.senseLength > 0) result.sense = Buffer.from(sense.subarray(0, r.senseLength));
    return result;
  }

  /** Sends SendTargets (discovery sessions) and returns the targets with their addresses. */
  async sendTargets(value = 'All'): Promise<Array<{ targetName: string; addresses: string[] }>> {
    const r = await this.#controlRequest((itt) => {
      const cmdSN = this.#cmdSN;
      this.#cmdSN = snAdd(cmdSN, 1);
      return {
        opcode: Opcode.TextRequest,
        final: true,
        continue: false,
        lun: 0,
        itt,
        ttt: RESERVED_TAG,
        cmdSN,
        expStatSN: this.#expStatSN,
        data: encodeText([['SendTargets', value]]),
      };
    }, this.#timeoutMs);
    const out: Array<{ targetName: string; addresses: string[] }> = [];
    for (const [k, v] of decodeTextPairs(r.data ?? EMPTY)) {
      if (k === 'TargetName') out.push({ targetName: v, addresses: [] });
      else if (k === 'TargetAddress' && out.length > 0) out[out.length - 1]!.addresses.push(v);
    }
    return out;
  }

  /** NOP-Out ping (immediate); resolves with the echoed data. */
  async nop(data: Buffer = EMPTY): Promise<Buffer> {
    const r = await this.#controlRequest(
      (itt) => ({
        opcode: Opcode.NopOut,
        immediate: true,
        lun: 0,
        itt,
        ttt: RESERVED_TAG,
        cmdSN: this.#cmdSN,
        expStatSN: this.#expStatSN,
        data: data.subarray(0, this.targetMaxRecvDataSegmentLength),
      }),
      this.#timeoutMs,
    );
    return Buffer.from(r.data ?? EMPTY);
  }

  /** Task management (immediate); resolves with the TMF response code. */
  async taskManagement(fn: number, lun: number, referencedTaskTag = RESERVED_TAG): Promise<number> {
    const ref = this.#tasks.get(referencedTaskTag);
    const r = await this.#controlRequest(
      (itt) => ({
        opcode: Opcode.TaskMgmtRequest,
        immediate: true,
        function: fn,
        lun,
        itt,
        referencedTaskTag,
        cmdSN: this.#cmdSN,
        expStatSN: this.#expStatSN,
        refCmdSN: ref && ref.state !== 'queued' ? ref.cmdSN : this.#cmdSN,
        expDataSN: 0,
      }),
      this.#timeoutMs,
    );
    if (r.opcode !== Opcode.TaskMgmtResponse) {
      throw new IscsiProtocolError('expected a TMF response');
    }
    return r.response;
  }

  /** Logs out (closes the session) and closes the socket; resolves with the logout response. */
  async logout(): Promise<number> {
    const r = await this.#close(this.#timeoutMs);
    if (r instanceof Error) throw r;
    return r;
  }

  /**
   * Ends the session: commands still waiting end as `closed`, a Logout Request goes out (at most
   * `timeoutMs` for its answer), then the socket is closed. Idempotent; never rejects.
   */
  async close(timeoutMs = 5000): Promise<void> {
    await this.#close(timeoutMs);
  }

  /** Closes the socket at once, without logging out. */
  destroy(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#cancelSleep?.();
    this.#lost(this.#gen, new IscsiInitiatorError('the initiator was destroyed', 'ECONNRESET'));
    this.#failAll('closed', 'the initiator was closed');
  }

  #close(timeoutMs: number): Promise<number | Error> {
    this.#closing ??= this.#doClose(timeoutMs);
    return this.#closing;
  }

  async #doClose(timeoutMs: number): Promise<number | Error> {
    const wasFull = this.#state === 'full';
    if (this.#state !== 'closed') this.#state = 'closing';
    this.#cancelSleep?.();
    clearTimeout(this.#kaTimer);
    clearTimeout(this.#sweepTimer);
    this.#sweepTimer = undefined;
    this.#sweepAt = Number.POSITIVE_INFINITY;
    for (const t of [...this.#queue]) this.#finish(t, failed('closed', 'the initiator was closed'));
    let result: number | Error = new IscsiInitiatorError(
      `the session is down: ${this.#failReason || 'the connection closed'}`,
      'ECONNRESET',
    );
    if (wasFull && this.#socket) {
      try {
        const r = await this.#controlRequest(
          (itt) => ({
            opcode: Opcode.LogoutRequest,
            immediate: true,
            reason: 0,
            itt,
            cid: 0,
            cmdSN: this.#cmdSN,
            expStatSN: this.#expStatSN,
          }),
          timeoutMs,
        );
        result = (r as { response: number }).response;
      } catch (err) {
        result = err as Error;
      }
    }
    this.#failAll('closed', 'the initiator was closed');
    const socket = this.#socket;
    if (socket && !socket.destroyed && typeof result === 'number') {
      // Logged out: the target closes its side; wait a little for that, then destroy.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => socket.destroy(), Math.min(1000, Math.max(1, timeoutMs)));
        socket.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
        socket.end();
      });
    }
    this.#state = 'closed';
    this.#lost(this.#gen, new IscsiInitiatorError('the initiator was closed', 'ECONNRESET'));
    return result;
  }
}
