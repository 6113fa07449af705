/**
 * The simulator's iSCSI target: a TCP listener, login, sessions, command sequencing, Data-In
 * splitting, task management, logout and fault injection around a DeviceServer.
 *
 * Bounded by design ({@link TargetLimits}): concurrent connections, sessions (a session without a
 * connection is reclaimed after DefaultTime2Retain, the oldest first when the table is full; the
 * TSIH search is bounded), login PDUs, text and time, the data segment of every PDU (8192 during
 * login, then the MaxRecvDataSegmentLength the target declared, refused from the header alone),
 * and the reply bytes queued on each socket (commands are not read while they pass a high-water
 * mark). Memory is at most about maxConnections × (replyHighWaterBytes + the largest reply +
 * maxRecvDataSegmentLength) above the process's base.
 */
import net from 'node:net';
import { LoginStatus, type SessionParams, TargetLoginNegotiator } from '../iscsi/login.js';
import {
  decodePdu,
  encodePdu,
  IscsiProtocolError,
  type LoginRequestPdu,
  type LogoutRequestPdu,
  type NopOutPdu,
  Opcode,
  type Pdu,
  type RawPdu,
  RESERVED_TAG,
  RejectReason,
  type ScsiCommandPdu,
  snAdd,
  snLess,
  type TaskMgmtRequestPdu,
  type TextRequestPdu,
  TmfFunction,
  TmfResponse,
} from '../iscsi/pdu.js';
import { PduReader, PduTooLargeError } from '../iscsi/reader.js';
import { decodeTextPairs, encodeText } from '../iscsi/text.js';
import { type DeviceServer, NexusState, type ScsiResult, VOLUME_LUN } from './device-server.js';
import type { FaultInjector } from './faults.js';
import { fixedSense, ScsiStatus, Sense } from './sense.js';

export interface TargetOptions {
  device: DeviceServer;
  faults: FaultInjector;
  iqn: string;
  host: string;
  port: number;
  portalGroupTag?: number;
  chap?: { username: string; secret: string };
  mutualChap?: { username: string; secret: string };
  /** Queue UNIT ATTENTION 29h/00h on LUN 1 for every new session (default true). */
  unitAttentionOnLogin?: boolean;
  /** Command window: MaxCmdSN = ExpCmdSN + queueDepth − 1 (default 128). */
  queueDepth?: number;
  /** Diagnostic log (one line per event); default silent. */
  log?: (line: string) => void;
  /** Resource limits (each defaults to {@link defaultTargetLimits}). */
  limits?: Partial<TargetLimits>;
  /**
   * Read bandwidth of the volume in bytes per second, shared by all its connections, like a
   * volume performance level: a READ's reply waits until its bytes fit (default: unlimited).
   */
  readBytesPerSecond?: number;
}

/** What the target holds at most; every limit has a `sim serve` flag. */
export interface TargetLimits {
  /**
   * TCP connections at once, in login or full feature phase. One more is answered with login
   * status 3/02 (out of resources) and closed; beyond that many again it is closed at accept.
   */
  maxConnections: number;
  /**
   * Sessions kept (≤ 65535, the TSIH space). A new session beyond it takes the place of the
   * oldest session without a connection; when every session has one, 3/02 (out of resources).
   */
  maxSessions: number;
  /**
   * Seconds a session outlives its last connection, for a reconnect with its TSIH (RFC 7143's
   * DefaultTime2Retain, default 20); then it is reclaimed. Kept even when the initiator negotiated
   * less (open-iscsi and lba-status's initiator send 0 and still reconnect with the old TSIH).
   */
  sessionRetainSeconds: number;
  /** A connection that has not completed login in this time is closed (half-sent PDUs included). */
  loginTimeoutMs: number;
  /** Login Requests on one connection, continued ones (C bit) included; more → 2/00 and close. */
  maxLoginPdus: number;
  /** Bytes of one key=value set split over continued Login or Text Requests; more → refused. */
  maxTextBytes: number;
  /**
   * The MaxRecvDataSegmentLength the target declares (512..16777215). A PDU whose data segment
   * is longer is refused from its header (Reject, protocol error) and the connection closed.
   */
  maxRecvDataSegmentLength: number;
  /**
   * Reply bytes queued on a socket above which the connection stops reading commands (≥ 65536);
   * it reads again once the socket has drained.
   */
  replyHighWaterBytes: number;
}

export const defaultTargetLimits: Readonly<TargetLimits> = Object.freeze({
  maxConnections: 32,
  maxSessions: 1024,
  sessionRetainSeconds: 20,
  loginTimeoutMs: 15_000,
  maxLoginPdus: 32,
  maxTextBytes: 65_536,
  maxRecvDataSegmentLength: 262_144,
  replyHighWaterBytes: 1 << 20,
});

/** Validates partial limits and fills in the defaults. */
export function resolveTargetLimits(limits: Partial<TargetLimits> = {}): TargetLimits {
  const out: TargetLimits = { ...defaultTargetLimits };
  const ranges: Record<keyof TargetLimits, [number, number]> = {
    maxConnections: [1, 65_535],
    maxSessions: [1, 65_535],
    sessionRetainSeconds: [0, 3600],
    loginTimeoutMs: [1, 3_600_000],
    maxLoginPdus: [1, 65_535],
    maxTextBytes: [8192, 16 * 2 ** 20],
    maxRecvDataSegmentLength: [512, 16_777_215],
    replyHighWaterBytes: [65_536, 2 ** 30],
  };
  for (const [key, value] of Object.entries(limits)) {
    const range = ranges[key as keyof TargetLimits];
    if (!range) throw new TypeError(`limits: unknown key '${key}'`);
    if (value === undefined) continue;
    if (!Number.isInteger(value) || value < range[0] || value > range[1]) {
      throw new RangeError(
        `limits.${key} must be an integer in ${range[0]}..${range[1]}; got ${value}`,
      );
    }
    out[key as keyof TargetLimits] = value;
  }
  return out;
}

/**
 * TSIH allocation (RFC 7143 §11.12.6): never 0, the next free one after the last given, in at
 * most 65535 steps; undefined when every TSIH is taken (the login is refused, never a spin).
 */
export class TsihAllocator {
  #next = 1;
  #inUse: (tsih: number) => boolean;

  constructor(inUse: (tsih: number) => boolean) {
    this.#inUse = inUse;
  }

  allocate(): number | undefined {
    for (let i = 0; i < 0xffff; i++) {
      const tsih = this.#next;
      this.#next = tsih === 0xffff ? 1 : tsih + 1;
      if (!this.#inUse(tsih)) return tsih;
    }
    return undefined;
  }
}

/** Counters for tests and diagnostics. */
export interface TargetStats {
  connections: number;
  logins: number;
  logouts: number;
  commands: number;
  /** Commands by opcode (hex string, with service action for 7Fh/9Eh/A3h). */
  byOpcode: Record<string, number>;
  /** Logins refused for a limit (connections, sessions, login PDUs or text, PDU size). */
  refused: number;
  /** Sessions without a connection reclaimed (DefaultTime2Retain, or the oldest when full). */
  reclaimed: number;
  /** Connections closed because login did not complete in time. */
  loginTimeouts: number;
  /** Times a connection stopped reading because its queued replies passed the high-water mark. */
  backpressure: number;
}

interface Session {
  tsih: number;
  isid: string;
  initiatorName: string;
  type: 'Normal' | 'Discovery';
  nexus: NexusState;
  connections: Set<Connection>;
  /** How long the session outlives its last connection. */
  retainMs: number;
  reclaimTimer?: NodeJS.Timeout | undefined;
}

/** A LUN the target does not serve: bytes 2-7 of the LUN field were not zero (multi-level). */
const UNSUPPORTED_LUN = 0x7fffffff;

/** The LUN a request addresses: the first level, unless a second level is present. */
function effectiveLun(raw: RawPdu, decoded: number): number {
  for (let i = 10; i < 16; i++) if (raw.bhs[i] !== 0) return UNSUPPORTED_LUN;
  return decoded;
}

interface Task {
  itt: number;
  lun: number;
  aborted: boolean;
  timer?: NodeJS.Timeout;
}

function opcodeKey(cdb: Buffer): string {
  const op = cdb[0] ?? 0;
  const h = (n: number, w = 2): string => n.toString(16).padStart(w, '0');
  if (op === 0x7f && cdb.length >= 10) return `7f/${h(cdb.readUInt16BE(8), 4)}`;
  if ((op === 0x9e || op === 0xa3) && cdb.length >= 2) return `${h(op)}/${h(cdb[1]! & 0x1f)}`;
  return h(op);
}

/** The TCP side of the simulator. */
export class IscsiTarget {
  readonly options: TargetOptions;
  readonly limits: TargetLimits;
  readonly stats: TargetStats = {
    connections: 0,
    logins: 0,
    logouts: 0,
    commands: 0,
    byOpcode: {},
    refused: 0,
    reclaimed: 0,
    loginTimeouts: 0,
    backpressure: 0,
  };
  #server: net.Server;
  #sessions = new Map<number, Session>();
  /** Sessions by initiator port (ISID, session type, initiator name). */
  #byPort = new Map<string, Session>();
  /** Sessions without a connection, oldest first. */
  #detached = new Set<Session>();
  #connections = new Set<Connection>();
  #tsih = new TsihAllocator((tsih) => this.#sessions.has(tsih));
  #address: { host: string; port: number } | undefined;
  /** When the volume's read bandwidth is free again (performance.now() ms). */
  #readFreeAt = 0;

  constructor(options: TargetOptions) {
    this.options = options;
    this.limits = resolveTargetLimits(options.limits);
    const rate = options.readBytesPerSecond;
    if (rate !== undefined && !(Number.isFinite(rate) && rate > 0))
      throw new RangeError(`readBytesPerSecond must be a positive number; got ${String(rate)}`);
    this.#server = net.createServer((socket) => this.#accept(socket));
  }

  /** Starts listening; resolves with the bound address. */
  listen(): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#server.once('error', onError);
      this.#server.listen(this.options.port, this.options.host, () => {
        this.#server.off('error', onError);
        const a = this.#server.address() as net.AddressInfo;
        this.#address = { host: this.options.host, port: a.port };
        resolve(this.#address);
      });
    });
  }

  get address(): { host: string; port: number } | undefined {
    return this.#address;
  }

  /** Number of sessions kept (in full feature phase, or waiting for a reconnect). */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Number of open TCP connections. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Stops listening and ends every connection; resolves when all sockets are closed. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await Promise.all([...this.#connections].map((c) => c.shutdown()));
    for (const s of this.#sessions.values()) clearTimeout(s.reclaimTimer);
    this.#sessions.clear();
    this.#byPort.clear();
    this.#detached.clear();
    await closed;
  }

  /**
   * How long a READ of `bytes` waits for the volume's read bandwidth (0 when unlimited): the
   * bytes of all connections' READs are served one after another at `readBytesPerSecond`.
   */
  readDelayMs(bytes: number): number {
    const rate = this.options.readBytesPerSecond;
    if (rate === undefined || bytes <= 0) return 0;
    const now = performance.now();
    const start = Math.max(now, this.#readFreeAt);
    this.#readFreeAt = start + (bytes * 1000) / rate;
    return this.#readFreeAt - now;
  }

  /** Drops every connection at once (like a network failure). */
  dropConnections(): void {
    for (const c of this.#connections) c.socket.destroy();
  }

  #accept(socket: net.Socket): void {
    this.stats.connections++;
    const max = this.limits.maxConnections;
    // Past the limit, a few more are told why (3/02) before closing; beyond those, closed at once.
    if (this.#connections.size >= max + Math.min(max, 16)) {
      this.stats.refused++;
      this.log(`refusing a connection from ${socket.remoteAddress}: ${max} connections open`);
      socket.on('error', () => {});
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const conn = new Connection(this, socket, this.#connections.size >= max);
    this.#connections.add(conn);
    socket.on('close', () => {
      this.#connections.delete(conn);
      conn.detach();
    });
  }

  /** @internal */
  log(line: string): void {
    this.options.log?.(line);
  }

  /**
   * @internal Finds or creates the session a completed login joins; a login status
   * [class, detail] when it cannot.
   */
  bindSession(
    conn: Connection,
    req: LoginRequestPdu,
    neg: TargetLoginNegotiator,
  ): Session | readonly [number, number] {
    const isid = req.isid.toString('hex');
    if (req.tsih !== 0) {
      const s = this.#sessions.get(req.tsih);
      if (!s || s.isid !== isid || s.initiatorName !== neg.initiatorName) {
        return LoginStatus.SessionDoesNotExist;
      }
      for (const old of s.connections) {
        // MaxConnections=1: another CID would be a second connection (RFC 7143 §13.2).
        if (old !== conn && old.cid !== req.cid) return LoginStatus.TooManyConnections;
      }
      // Connection reinstatement: the new connection replaces the old one with its CID.
      for (const old of s.connections) if (old !== conn) old.socket.destroy();
      s.connections.clear();
      s.connections.add(conn);
      this.#attached(s);
      return s;
    }
    // Session reinstatement: a new login from the same initiator port replaces its session.
    const port = `${isid} ${neg.sessionType} ${neg.initiatorName}`;
    const previous = this.#byPort.get(port);
    if (previous) {
      for (const old of previous.connections) old.socket.destroy();
      this.#drop(previous);
    }
    if (this.#sessions.size >= this.limits.maxSessions) {
      const oldest = this.#detached.values().next().value;
      if (!oldest) {
        this.log(`refusing a session: ${this.#sessions.size} sessions, all with a connection`);
        return LoginStatus.OutOfResources;
      }
      this.log(`reclaiming session tsih=${oldest.tsih} (the oldest without a connection)`);
      this.stats.reclaimed++;
      this.#drop(oldest);
    }
    const tsih = this.#tsih.allocate();
    if (tsih === undefined) return LoginStatus.OutOfResources;
    const session: Session = {
      tsih,
      isid,
      initiatorName: neg.initiatorName,
      type: neg.sessionType,
      nexus: new NexusState(),
      connections: new Set([conn]),
      retainMs: this.limits.sessionRetainSeconds * 1000,
    };
    if (neg.sessionType === 'Normal' && this.options.unitAttentionOnLogin !== false) {
      session.nexus.addUnitAttention(VOLUME_LUN);
    }
    this.#sessions.set(tsih, session);
    this.#byPort.set(port, session);
    this.stats.logins++;
    return session;
  }

  /** @internal */
  hasSession(tsih: number): boolean {
    return this.#sessions.has(tsih);
  }

  /** @internal */
  endSession(session: Session): void {
    this.#drop(session);
  }

  /** @internal The session lost its last connection: keep it for DefaultTime2Retain. */
  sessionDetached(session: Session): void {
    if (this.#sessions.get(session.tsih) !== session || session.connections.size > 0) return;
    if (session.retainMs === 0) {
      this.stats.reclaimed++;
      this.#drop(session);
      return;
    }
    this.#detached.add(session);
    session.reclaimTimer = setTimeout(() => {
      this.log(`reclaiming session tsih=${session.tsih} after DefaultTime2Retain`);
      this.stats.reclaimed++;
      this.#drop(session);
    }, session.retainMs);
    session.reclaimTimer.unref();
  }

  #attached(session: Session): void {
    clearTimeout(session.reclaimTimer);
    session.reclaimTimer = undefined;
    this.#detached.delete(session);
  }

  #drop(session: Session): void {
    this.#attached(session);
    if (this.#sessions.get(session.tsih) === session) this.#sessions.delete(session.tsih);
    const port = `${session.isid} ${session.type} ${session.initiatorName}`;
    if (this.#byPort.get(port) === session) this.#byPort.delete(port);
  }
}

/** A PDU refused from its header: its BHS, for the Reject or Login Response. */
interface TooLarge {
  tooLarge: Buffer;
}

/** A Text Request exchange in progress (RFC 7143 §11.10, §11.11). */
interface TextExchange {
  itt: number;
  /** The Target Transfer Tag the initiator must send back to continue. */
  ttt: number;
  /** Request text received so far (continued requests, C bit). */
  chunks: Buffer[];
  bytes: number;
  /** Response text not sent yet (it did not fit the initiator's MaxRecvDataSegmentLength). */
  rest?: Buffer | undefined;
}

/** One TCP connection. */
class Connection {
  readonly socket: net.Socket;
  #target: IscsiTarget;
  #limits: TargetLimits;
  /** During login, PDUs above 8192 bytes are refused (RFC 7143 §13.12). */
  #reader = new PduReader({ maxDataSegmentLength: 8192 });
  #phase: 'login' | 'full' | 'closing' = 'login';
  #neg: TargetLoginNegotiator;
  #session: Session | undefined;
  #params: SessionParams | undefined;
  #statSN = 0;
  #expCmdSN = 0;
  #tasks = new Map<number, Task>();
  #closed: Promise<void>;
  #loginStarted = false;
  #loginIsid: Buffer = Buffer.alloc(6);
  #loginTsih = 0;
  #loginPdus = 0;
  #loginTimer: NodeJS.Timeout | undefined;
  /** Answer the first Login Request with this status and close (a limit was reached). */
  #refuse: readonly [number, number] | undefined;
  /** PDUs read but not handled yet: the socket is paused while replies are queued. */
  #inbox: Array<RawPdu | TooLarge> = [];
  #inboxHead = 0;
  /** Delayed commands (latency faults) whose reply waits for the queue to drain. */
  #deferred: Array<() => void> = [];
  #paused = false;
  #text: TextExchange | undefined;
  #nextTtt = 1;
  /** The CID this connection logged in with. */
  cid = 0;

  constructor(target: IscsiTarget, socket: net.Socket, refuse: boolean) {
    this.#target = target;
    this.#limits = target.limits;
    this.socket = socket;
    if (refuse) this.#refuse = LoginStatus.OutOfResources;
    const o = target.options;
    const login: ConstructorParameters<typeof TargetLoginNegotiator>[0] = {
      hasTarget: (name) => name === o.iqn,
      portalGroupTag: o.portalGroupTag ?? 1,
      offer: { targetMaxRecvDataSegmentLength: this.#limits.maxRecvDataSegmentLength },
      maxTextBytes: this.#limits.maxTextBytes,
    };
    if (o.chap) login.chap = o.chap;
    if (o.mutualChap) login.mutualChap = o.mutualChap;
    this.#neg = new TargetLoginNegotiator(login);
    this.#closed = new Promise((resolve) => socket.once('close', () => resolve()));
    this.#loginTimer = setTimeout(() => {
      target.stats.loginTimeouts++;
      target.log(
        `closing a connection from ${socket.remoteAddress}: no login within ${this.#limits.loginTimeoutMs} ms`,
      );
      socket.destroy();
    }, this.#limits.loginTimeoutMs);
    this.#loginTimer.unref();
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('drain', () => this.#onDrain());
    socket.on('error', (err) => target.log(`socket error: ${err.message}`));
  }

  get #maxCmdSN(): number {
    return snAdd(this.#expCmdSN, (this.#target.options.queueDepth ?? 128) - 1);
  }

  detach(): void {
    clearTimeout(this.#loginTimer);
    for (const t of this.#tasks.values()) {
      t.aborted = true;
      if (t.timer) clearTimeout(t.timer);
    }
    this.#tasks.clear();
    this.#inbox = [];
    this.#inboxHead = 0;
    this.#deferred = [];
    this.#text = undefined;
    if (this.#session) {
      this.#session.connections.delete(this);
      // Kept for DefaultTime2Retain so that a reconnect with the same TSIH can resume (the
      // kernel's session recovery), then reclaimed.
      this.#target.sessionDetached(this.#session);
    }
  }

  async shutdown(): Promise<void> {
    this.#phase = 'closing';
    this.socket.end();
    const t = setTimeout(() => this.socket.destroy(), 1000);
    await this.#closed;
    clearTimeout(t);
  }

  /** Sends the last PDU and closes; whatever the peer still sends is dropped unread. */
  #close(): void {
    this.#phase = 'closing';
    this.#inbox = [];
    this.#inboxHead = 0;
    this.socket.end();
    // Reading may have been paused (backpressure, a refused PDU): resume so that the client's
    // FIN or reset is seen at once (#onData drops everything while closing) and the connection
    // is released; the timer only covers a client that stays connected.
    this.socket.resume();
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  #send(pdu: Pdu, lunField?: Buffer): void {
    if (this.socket.destroyed || this.socket.writableEnded) return;
    const out = encodePdu(pdu);
    if (lunField) lunField.copy(out, 8, 8, 16);
    // Replies written in one turn of the event loop (the answers to one batch of commands, or
    // to the commands whose latency timers fired together) leave in one writev: one system call
    // and one wake-up of the initiator instead of one per PDU. end() uncorks by itself.
    if (!this.#corked) {
      this.#corked = true;
      const socket = this.socket;
      socket.cork();
      setImmediate(() => {
        this.#corked = false;
        socket.uncork();
      });
    }
    this.socket.write(out);
  }
  #corked = false;

  /** Reply bytes queued on the socket passed the high-water mark: read no more commands. */
  get #congested(): boolean {
    return this.socket.writableLength > this.#limits.replyHighWaterBytes;
  }

  #onData(chunk: Buffer): void {
    if (this.#phase === 'closing') return;
    let pdus: Array<RawPdu | TooLarge>;
    try {
      pdus = this.#reader.push(chunk);
    } catch (err) {
      if (!(err instanceof PduTooLargeError)) {
        this.#target.log(`protocol error: ${(err as Error).message}`);
        this.socket.destroy();
        return;
      }
      this.#target.log(`protocol error: ${err.message}`);
      // Nothing more is read: the PDUs before it are handled, then it is refused.
      this.socket.pause();
      pdus = [...err.pdus, { tooLarge: err.bhs }];
    }
    for (const p of pdus) this.#inbox.push(p);
    this.#pump();
  }

  #onDrain(): void {
    if (this.socket.destroyed) return;
    while (this.#deferred.length > 0 && !this.#congested) this.#deferred.shift()!();
    this.#pump();
  }

  /** Handles queued PDUs until the reply queue passes its high-water mark. */
  #pump(): void {
    while (this.#inboxHead < this.#inbox.length) {
      if (this.socket.destroyed || this.#phase === 'closing') return;
      if (this.#congested || this.#deferred.length > 0) {
        if (!this.#paused) {
          this.#paused = true;
          this.#target.stats.backpressure++;
          this.socket.pause();
        }
        return;
      }
      const item = this.#inbox[this.#inboxHead]!;
      this.#inbox[this.#inboxHead++] = undefined as unknown as RawPdu;
      if ('tooLarge' in item) {
        this.#refuseTooLarge(item.tooLarge);
        return;
      }
      this.#dispatch(item);
    }
    this.#inbox = [];
    this.#inboxHead = 0;
    if (this.#paused && !this.socket.destroyed && this.#phase !== 'closing') {
      this.#paused = false;
      this.socket.resume();
    }
  }

  #dispatch(raw: RawPdu): void {
    let pdu: Pdu;
    try {
      pdu = decodePdu(raw);
    } catch (err) {
      if (err instanceof IscsiProtocolError && this.#phase === 'full') {
        this.#reject(raw, RejectReason.CommandNotSupported);
        return;
      }
      this.#target.log(`protocol error: ${(err as Error).message}`);
      this.socket.destroy();
      return;
    }
    try {
      this.#handle(pdu, raw);
    } catch (err) {
      this.#target.log(`internal error: ${(err as Error).stack ?? String(err)}`);
      this.socket.destroy();
    }
  }

  /**
   * A data segment above the limit: during login a Login Response 2/00 (Initiator Error), in full
   * feature phase a Reject (protocol error); then the connection is closed.
   */
  #refuseTooLarge(bhs: Buffer): void {
    const opcode = bhs[0]! & 0x3f;
    if (this.#phase === 'login') {
      this.#target.stats.refused++;
      if (opcode === Opcode.LoginRequest) {
        this.#loginFailure(bhs.readUInt32BE(16), Buffer.from(bhs.subarray(8, 14)), [2, 0]);
      } else {
        this.socket.destroy();
      }
      return;
    }
    this.#reject({ bhs, ahs: Buffer.alloc(0), data: Buffer.alloc(0) }, RejectReason.ProtocolError);
    this.#close();
  }

  #reject(raw: RawPdu, reason: number): void {
    this.#send({
      opcode: Opcode.Reject,
      reason,
      statSN: this.#nextStatSN(),
      expCmdSN: this.#expCmdSN,
      maxCmdSN: this.#maxCmdSN,
      dataSN: 0,
      data: Buffer.from(raw.bhs),
    });
  }

  #nextStatSN(): number {
    const sn = this.#statSN;
    this.#statSN = snAdd(sn, 1);
    return sn;
  }

  /**
   * Sequencing of a non-immediate request (RFC 7143 §4.2.2.1): a CmdSN outside
   * [ExpCmdSN, MaxCmdSN] is silently ignored (returns false). Requests arrive in order on the
   * single connection; a gap inside the window moves the window forward.
   */
  #advanceCmdSN(cmdSN: number, immediate: boolean | undefined): boolean {
    if (immediate) return true;
    if (snLess(cmdSN, this.#expCmdSN) || snLess(this.#maxCmdSN, cmdSN)) {
      this.#target.log(`ignoring CmdSN ${cmdSN} outside [${this.#expCmdSN}, ${this.#maxCmdSN}]`);
      return false;
    }
    this.#expCmdSN = snAdd(cmdSN, 1);
    return true;
  }

  #handle(pdu: Pdu, raw: RawPdu): void {
    if (this.#phase === 'login') {
      if (pdu.opcode !== Opcode.LoginRequest) {
        this.#target.log(`opcode ${pdu.opcode} before login completed`);
        this.socket.destroy();
        return;
      }
      this.#login(pdu);
      return;
    }
    if (this.#phase !== 'full') return;
    switch (pdu.opcode) {
      case Opcode.ScsiCommand:
        if (!this.#advanceCmdSN(pdu.cmdSN, pdu.immediate)) return;
        if (this.#session?.type !== 'Normal') {
          this.#reject(raw, RejectReason.ProtocolError);
          return;
        }
        pdu.lun = effectiveLun(raw, pdu.lun);
        this.#command(pdu);
        return;
      case Opcode.NopOut:
        this.#nop(pdu, raw);
        return;
      case Opcode.TaskMgmtRequest:
        if (!this.#advanceCmdSN(pdu.cmdSN, pdu.immediate)) return;
        pdu.lun = effectiveLun(raw, pdu.lun);
        this.#tmf(pdu);
        return;
      case Opcode.TextRequest:
        if (!this.#advanceCmdSN(pdu.cmdSN, pdu.immediate)) return;
        this.#textRequest(pdu, raw);
        return;
      case Opcode.LogoutRequest:
        if (!this.#advanceCmdSN(pdu.cmdSN, pdu.immediate)) return;
        this.#logout(pdu, raw);
        return;
      case Opcode.DataOut:
        // Never solicited (writes are refused before any R2T); unsolicited data is discarded.
        return;
      case Opcode.LoginRequest:
        this.#reject(raw, RejectReason.ProtocolError);
        return;
      default:
        this.#reject(raw, RejectReason.CommandNotSupported);
    }
  }

  // ------------------------------------------------------------------------------------------

  /** A failed login: the Login Response with the status, then close (RFC 7143 §11.13.5). */
  #loginFailure(itt: number, isid: Buffer, status: readonly [number, number], csg = 0): void {
    this.#send({
      opcode: Opcode.LoginResponse,
      transit: false,
      continue: false,
      csg,
      nsg: 0,
      versionMax: 0,
      versionActive: 0,
      isid,
      tsih: 0,
      itt,
      statSN: this.#nextStatSN(),
      expCmdSN: this.#expCmdSN,
      maxCmdSN: this.#maxCmdSN,
      statusClass: status[0],
      statusDetail: status[1],
      data: Buffer.alloc(0),
    });
    this.#target.log(
      `login failed ${status[0]}/${status[1]} from ${this.#neg.initiatorName || this.socket.remoteAddress}`,
    );
    this.#close();
  }

  #login(req: LoginRequestPdu): void {
    const target = this.#target;
    if (!this.#loginStarted) {
      this.#loginStarted = true;
      this.#statSN = req.expStatSN >>> 0;
      this.#loginIsid = req.isid;
      this.#loginTsih = req.tsih;
      this.cid = req.cid;
    }
    this.#expCmdSN = req.cmdSN >>> 0;
    if (this.#refuse) {
      target.stats.refused++;
      this.#loginFailure(req.itt, this.#loginIsid, this.#refuse, req.csg);
      return;
    }
    if (++this.#loginPdus > this.#limits.maxLoginPdus) {
      target.stats.refused++;
      target.log(`more than ${this.#limits.maxLoginPdus} Login Requests on one connection`);
      this.#loginFailure(req.itt, this.#loginIsid, LoginStatus.InitiatorError, req.csg);
      return;
    }
    const step = this.#neg.handle(req);
    let status: readonly [number, number] = [step.statusClass, step.statusDetail];
    let failed = step.failed;
    if (!failed && req.tsih !== 0 && !target.hasSession(req.tsih)) {
      status = LoginStatus.SessionDoesNotExist;
      failed = true;
    }
    let tsih = this.#loginTsih;
    if (!failed && step.complete) {
      const bound = target.bindSession(this, req, this.#neg);
      if (Array.isArray(bound)) {
        status = bound as readonly [number, number];
        if (status[0] === 3) target.stats.refused++;
        failed = true;
      } else {
        this.#session = bound as Session;
        tsih = this.#session.tsih;
      }
    }
    if (failed) {
      this.#loginFailure(req.itt, this.#loginIsid, status, step.csg);
      return;
    }
    this.#send({
      opcode: Opcode.LoginResponse,
      transit: step.transit,
      continue: false,
      csg: step.csg,
      nsg: step.nsg,
      versionMax: 0,
      versionActive: 0,
      isid: this.#loginIsid,
      tsih: step.complete ? tsih : 0,
      itt: req.itt,
      statSN: this.#nextStatSN(),
      expCmdSN: this.#expCmdSN,
      maxCmdSN: this.#maxCmdSN,
      statusClass: 0,
      statusDetail: 0,
      data: encodeText(step.keys),
    });
    if (step.complete) {
      clearTimeout(this.#loginTimer);
      this.#loginTimer = undefined;
      this.#phase = 'full';
      this.#params = { ...this.#neg.params };
      this.#reader.setMaxDataSegmentLength(this.#params.targetMaxRecvDataSegmentLength);
      target.log(
        `login ${this.#neg.sessionType} ${this.#neg.initiatorName} tsih=${tsih} ` +
          `mrdsl=${this.#params.initiatorMaxRecvDataSegmentLength}`,
      );
    }
  }

  #nop(pdu: NopOutPdu, raw: RawPdu): void {
    if (pdu.itt === RESERVED_TAG) return; // a reply to a NOP-In we never send
    if (!this.#advanceCmdSN(pdu.cmdSN, pdu.immediate)) return;
    const data = pdu.data ?? Buffer.alloc(0);
    // Ping data that could not come back within the initiator's MaxRecvDataSegmentLength.
    if (data.length > this.#initiatorMrdsl) {
      this.#target.log(`NOP-Out ping data of ${data.length} bytes > ${this.#initiatorMrdsl}`);
      this.#reject(raw, RejectReason.ProtocolError);
      return;
    }
    this.#send(
      {
        opcode: Opcode.NopIn,
        lun: 0,
        itt: pdu.itt,
        ttt: RESERVED_TAG,
        statSN: this.#nextStatSN(),
        expCmdSN: this.#expCmdSN,
        maxCmdSN: this.#maxCmdSN,
        data,
      },
      raw.bhs, // the LUN field echoed as sent (RFC 7143 §11.19.3), all 8 bytes
    );
  }

  get #initiatorMrdsl(): number {
    return Math.max(512, this.#params?.initiatorMaxRecvDataSegmentLength ?? 8192);
  }

  #newTtt(): number {
    const ttt = this.#nextTtt;
    this.#nextTtt = ttt >= 0x7fffffff ? 1 : ttt + 1;
    return ttt;
  }

  /**
   * Text Request (RFC 7143 §11.10): text split over requests with the C bit is collected, each
   * answered by an empty Text Response with F clear and a Target Transfer Tag asking for the
   * rest; an answer longer than the initiator's MaxRecvDataSegmentLength goes out in pieces
   * (C set) the initiator fetches with empty requests carrying that tag.
   */
  #textRequest(pdu: TextRequestPdu, raw: RawPdu): void {
    let ex = this.#text;
    if (pdu.ttt !== RESERVED_TAG) {
      if (!ex || ex.ttt !== pdu.ttt || ex.itt !== pdu.itt) {
        this.#text = undefined;
        this.#reject(raw, RejectReason.ProtocolError);
        return;
      }
    } else {
      ex = undefined; // a new exchange resets one in progress (§11.10.4)
    }
    if (pdu.continue && pdu.final) {
      this.#text = undefined;
      this.#reject(raw, RejectReason.ProtocolError);
      return;
    }
    ex ??= { itt: pdu.itt, ttt: RESERVED_TAG, chunks: [], bytes: 0 };
    const piece = pdu.data ?? Buffer.alloc(0);
    ex.bytes += piece.length;
    if (ex.bytes > this.#limits.maxTextBytes) {
      this.#target.log(`text of more than ${this.#limits.maxTextBytes} bytes refused`);
      this.#text = undefined;
      this.#reject(raw, RejectReason.ProtocolError);
      return;
    }
    if (piece.length > 0) ex.chunks.push(piece);
    let answer: Buffer;
    if (pdu.continue) {
      answer = Buffer.alloc(0);
    } else if (ex.rest && piece.length === 0) {
      answer = ex.rest;
    } else {
      answer = this.#textAnswer(Buffer.concat(ex.chunks));
      ex.chunks = [];
      ex.bytes = 0;
    }
    const max = this.#initiatorMrdsl;
    const more = answer.length > max;
    ex.rest = more ? answer.subarray(max) : undefined;
    // F only when the initiator's request was final and nothing is left (§11.11.1).
    const final = pdu.final && !more && !pdu.continue;
    if (final) {
      this.#text = undefined;
    } else {
      ex.ttt = this.#newTtt();
      this.#text = ex;
    }
    this.#send({
      opcode: Opcode.TextResponse,
      final,
      continue: more,
      lun: 0,
      itt: pdu.itt,
      ttt: final ? RESERVED_TAG : ex.ttt,
      statSN: this.#nextStatSN(),
      expCmdSN: this.#expCmdSN,
      maxCmdSN: this.#maxCmdSN,
      data: answer.subarray(0, max),
    });
  }

  #textAnswer(text: Buffer): Buffer {
    const o = this.#target.options;
    const out: Array<[string, string]> = [];
    let pairs: Array<[string, string]> = [];
    try {
      pairs = decodeTextPairs(text);
    } catch {
      pairs = [];
    }
    for (const [k, v] of pairs) {
      if (k === 'SendTargets') {
        if (v === 'All' || v === o.iqn || (v === '' && this.#session?.type === 'Normal')) {
          const addr = this.#target.address ?? { host: o.host, port: o.port };
          const host = addr.host.includes(':') ? `[${addr.host}]` : addr.host;
          out.push(['TargetName', o.iqn]);
          out.push(['TargetAddress', `${host}:${addr.port},${o.portalGroupTag ?? 1}`]);
        }
      } else {
        out.push([k, 'NotUnderstood']);
      }
    }
    return encodeText(out);
  }

  #logout(pdu: LogoutRequestPdu, raw: RawPdu): void {
    // Reasons 3-127 are reserved (RFC 7143 §11.14.1): refused, the session stays.
    if (pdu.reason > 2) {
      this.#target.log(`logout with reserved reason ${pdu.reason} rejected`);
      this.#reject(raw, RejectReason.InvalidPduField);
      return;
    }
    const recovery = pdu.reason === 2;
    // Closing another connection (reason 1 with another CID): there is none (MaxConnections=1).
    const unknownCid = pdu.reason === 1 && pdu.cid !== this.cid;
    this.#send({
      opcode: Opcode.LogoutResponse,
      response: recovery ? 2 : unknownCid ? 1 : 0,
      itt: pdu.itt,
      statSN: this.#nextStatSN(),
      expCmdSN: this.#expCmdSN,
      maxCmdSN: this.#maxCmdSN,
      time2Wait: 0,
      time2Retain: 0,
    });
    if (recovery || unknownCid) return;
    this.#target.stats.logouts++;
    if (this.#session) this.#target.endSession(this.#session);
    this.#target.log(`logout tsih=${this.#session?.tsih ?? 0}`);
    this.#close();
  }

  #tmf(pdu: TaskMgmtRequestPdu): void {
    let response: number = TmfResponse.FunctionComplete;
    const abort = (t: Task): void => {
      t.aborted = true;
      if (t.timer) clearTimeout(t.timer);
      this.#tasks.delete(t.itt);
    };
    const lunScoped = (
      [
        TmfFunction.AbortTaskSet,
        TmfFunction.ClearTaskSet,
        TmfFunction.LogicalUnitReset,
        TmfFunction.ClearAca,
      ] as number[]
    ).includes(pdu.function);
    if (lunScoped && pdu.lun !== VOLUME_LUN) {
      response = TmfResponse.LunDoesNotExist;
    } else {
      switch (pdu.function) {
        case TmfFunction.AbortTask: {
          const t = this.#tasks.get(pdu.referencedTaskTag);
          if (t) abort(t);
          break;
        }
        case TmfFunction.AbortTaskSet:
        case TmfFunction.ClearTaskSet:
        case TmfFunction.LogicalUnitReset:
          for (const t of [...this.#tasks.values()]) if (t.lun === pdu.lun) abort(t);
          break;
        case TmfFunction.ClearAca:
          break;
        case TmfFunction.TargetWarmReset:
        case TmfFunction.TargetColdReset:
          for (const t of [...this.#tasks.values()]) abort(t);
          break;
        case TmfFunction.TaskReassign:
          response = TmfResponse.ReassignmentNotSupported;
          break;
        default:
          response = TmfResponse.NotSupported;
      }
    }
    this.#target.log(`tmf function=${pdu.function} response=${response}`);
    this.#send({
      opcode: Opcode.TaskMgmtResponse,
      response,
      itt: pdu.itt,
      statSN: this.#nextStatSN(),
      expCmdSN: this.#expCmdSN,
      maxCmdSN: this.#maxCmdSN,
    });
    if (pdu.function === TmfFunction.TargetColdReset) this.#close();
  }

  #command(pdu: ScsiCommandPdu): void {
    const target = this.#target;
    const stats = target.stats;
    const key = opcodeKey(pdu.cdb);
    stats.commands++;
    stats.byOpcode[key] = (stats.byOpcode[key] ?? 0) + 1;
    const decision =
      pdu.lun === VOLUME_LUN ? target.options.faults.decide(pdu.cdb) : { latencyMs: 0 };
    const task: Task = { itt: pdu.itt, lun: pdu.lun, aborted: false };
    this.#tasks.set(pdu.itt, task);
    const run = (): void => {
      if (task.aborted || this.socket.destroyed) return;
      this.#tasks.delete(pdu.itt);
      let result: ScsiResult;
      switch (decision.action) {
        case 'drop-connection':
          target.log(`fault: dropping the connection on ${key}`);
          this.socket.destroy();
          return;
        case 'busy':
          result = { status: ScsiStatus.BUSY };
          break;
        case 'task-set-full':
          result = { status: ScsiStatus.TASK_SET_FULL };
          break;
        case 'unit-attention':
          result = { status: ScsiStatus.CHECK_CONDITION, sense: fixedSense(Sense.powerOnReset) };
          break;
        case 'not-ready':
          result = { status: ScsiStatus.CHECK_CONDITION, sense: fixedSense(Sense.becomingReady) };
          break;
        default: {
          const req: Parameters<DeviceServer['execute']>[0] = {
            lun: pdu.lun,
            cdb: pdu.cdb,
            nexus: this.#session!.nexus,
          };
          if (pdu.data && pdu.data.length > 0) req.dataOut = pdu.data;
          if (decision.action === 'gls-bad-length') req.malform = 'bad-length';
          if (decision.action === 'gls-overlap') req.malform = 'overlap';
          result = target.options.device.execute(req);
        }
      }
      if (result.status !== ScsiStatus.GOOD) {
        target.log(
          `cmd ${key} lun=${pdu.lun} status=0x${result.status.toString(16)}` +
            (result.sense ? ` sense=${result.sense.subarray(0, 14).toString('hex')}` : ''),
        );
      }
      this.#respond(pdu, result);
    };
    // READ(10)/READ(16) to the volume wait for its read bandwidth (readBytesPerSecond).
    const op = pdu.cdb[0];
    const throttleMs =
      pdu.lun === VOLUME_LUN && (op === 0x28 || op === 0x88)
        ? target.readDelayMs(pdu.expectedDataTransferLength)
        : 0;
    const delayMs = decision.latencyMs + throttleMs;
    if (delayMs > 0) {
      // A delayed reply also waits for the reply queue to drain below its high-water mark.
      task.timer = setTimeout(() => {
        if (this.#congested || this.#deferred.length > 0) this.#deferred.push(run);
        else run();
      }, delayMs);
    } else run();
  }

  /** Sends Data-In (split by the initiator's MaxRecvDataSegmentLength) and the status. */
  #respond(cmd: ScsiCommandPdu, result: ScsiResult): void {
    const params = this.#params!;
    const edtl = cmd.expectedDataTransferLength;
    const data = result.data ?? Buffer.alloc(0);
    const n = Math.min(data.length, edtl);
    const overflow = data.length > edtl;
    const underflow = data.length < edtl;
    const residual = overflow ? data.length - edtl : edtl - data.length;
    const withSense = result.sense !== undefined;
    const seg = Math.max(512, params.initiatorMaxRecvDataSegmentLength);
    const burst = Math.max(seg, params.maxBurstLength);
    let dataSN = 0;
    for (let off = 0; off < n; off += seg) {
      const len = Math.min(seg, n - off);
      const last = off + len >= n;
      const statusHere = last && !withSense;
      const endOfBurst = last || (off + len) % burst === 0;
      this.#send({
        opcode: Opcode.DataIn,
        final: endOfBurst,
        acknowledge: false,
        overflow: statusHere && overflow,
        underflow: statusHere && underflow,
        hasStatus: statusHere,
        status: result.status,
        lun: cmd.lun,
        itt: cmd.itt,
        ttt: RESERVED_TAG,
        statSN: statusHere ? this.#nextStatSN() : 0,
        expCmdSN: this.#expCmdSN,
        maxCmdSN: this.#maxCmdSN,
        dataSN: dataSN++,
        bufferOffset: off,
        residualCount: statusHere ? residual : 0,
        data: data.subarray(off, off + len),
      });
      if (statusHere) return;
    }
    let senseData = Buffer.alloc(0);
    if (result.sense) {
      senseData = Buffer.alloc(2 + result.sense.length);
      senseData.writeUInt16BE(result.sense.length, 0);
      result.sense.copy(senseData, 2);
    }
    this.#send({
      opcode: Opcode.ScsiResponse,
      overflow,
      underflow,
      response: 0,
      status: result.status,
      itt: cmd.itt,
      statSN: this.#nextStatSN(),
      expCmdSN: this.#expCmdSN,
      maxCmdSN: this.#maxCmdSN,
      expDataSN: dataSN,
      residualCount: residual,
      data: senseData,
    });
  }
}
