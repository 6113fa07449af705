/**
 * The simulator's iSCSI target: a TCP listener, login, sessions, command sequencing, Data-In
 * splitting, task management, logout and fault injection around a DeviceServer.
 */
import net from 'node:net';
import { type SessionParams, TargetLoginNegotiator } from '../iscsi/login.js';
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
import { PduReader } from '../iscsi/reader.js';
import { decodeTextPairs, encodeText } from '../iscsi/text.js';
import { type DeviceServer, NexusState, type ScsiResult, VOLUME_LUN } from './device-server.js';
import type { FaultInjector } from './faults.js';
import { fixedSense, Sense, Status } from './sense.js';

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
}

/** Counters for tests and diagnostics. */
export interface TargetStats {
  connections: number;
  logins: number;
  logouts: number;
  commands: number;
  /** Commands by opcode (hex string, with service action for 7Fh/9Eh/A3h). */
  byOpcode: Record<string, number>;
}

interface Session {
  tsih: number;
  isid: string;
  initiatorName: string;
  type: 'Normal' | 'Discovery';
  nexus: NexusState;
  connections: Set<Connection>;
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
  readonly stats: TargetStats = {
    connections: 0,
    logins: 0,
    logouts: 0,
    commands: 0,
    byOpcode: {},
  };
  #server: net.Server;
  #sessions = new Map<number, Session>();
  #connections = new Set<Connection>();
  #nextTsih = 1;
  #address: { host: string; port: number } | undefined;

  constructor(options: TargetOptions) {
    this.options = options;
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

  /** Number of sessions in full feature phase. */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Stops listening and ends every connection; resolves when all sockets are closed. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await Promise.all([...this.#connections].map((c) => c.shutdown()));
    this.#sessions.clear();
    await closed;
  }

  /** Drops every connection at once (like a network failure). */
  dropConnections(): void {
    for (const c of this.#connections) c.socket.destroy();
  }

  #accept(socket: net.Socket): void {
    this.stats.connections++;
    socket.setNoDelay(true);
    const conn = new Connection(this, socket);
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

  /** @internal Finds or creates the session a completed login joins. */
  bindSession(
    conn: Connection,
    req: LoginRequestPdu,
    neg: TargetLoginNegotiator,
  ): Session | undefined {
    const isid = req.isid.toString('hex');
    if (req.tsih !== 0) {
      const s = this.#sessions.get(req.tsih);
      if (!s || s.isid !== isid || s.initiatorName !== neg.initiatorName) return undefined;
      // Connection reinstatement: MaxConnections=1, so the new connection replaces the old.
      for (const old of s.connections) if (old !== conn) old.socket.destroy();
      s.connections.clear();
      s.connections.add(conn);
      return s;
    }
    // Session reinstatement: a new login from the same initiator port replaces its session.
    for (const [tsih, s] of this.#sessions) {
      if (s.isid === isid && s.initiatorName === neg.initiatorName && s.type === neg.sessionType) {
        for (const old of s.connections) old.socket.destroy();
        this.#sessions.delete(tsih);
      }
    }
    let tsih = this.#nextTsih;
    while (this.#sessions.has(tsih) || tsih === 0) tsih = (tsih % 0xffff) + 1;
    this.#nextTsih = (tsih % 0xffff) + 1;
    const session: Session = {
      tsih,
      isid,
      initiatorName: neg.initiatorName,
      type: neg.sessionType,
      nexus: new NexusState(),
      connections: new Set([conn]),
    };
    if (neg.sessionType === 'Normal' && this.options.unitAttentionOnLogin !== false) {
      session.nexus.addUnitAttention(VOLUME_LUN);
    }
    this.#sessions.set(tsih, session);
    this.stats.logins++;
    return session;
  }

  /** @internal */
  hasSession(tsih: number): boolean {
    return this.#sessions.has(tsih);
  }

  /** @internal */
  endSession(session: Session): void {
    this.#sessions.delete(session.tsih);
  }
}

/** One TCP connection. */
class Connection {
  readonly socket: net.Socket;
  #target: IscsiTarget;
  #reader = new PduReader({ maxDataSegmentLength: 16 * 1024 * 1024 });
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

  constructor(target: IscsiTarget, socket: net.Socket) {
    this.#target = target;
    this.socket = socket;
    const o = target.options;
    const login: ConstructorParameters<typeof TargetLoginNegotiator>[0] = {
      hasTarget: (name) => name === o.iqn,
      portalGroupTag: o.portalGroupTag ?? 1,
    };
    if (o.chap) login.chap = o.chap;
    if (o.mutualChap) login.mutualChap = o.mutualChap;
    this.#neg = new TargetLoginNegotiator(login);
    this.#closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err) => target.log(`socket error: ${err.message}`));
  }

  get #maxCmdSN(): number {
    return snAdd(this.#expCmdSN, (this.#target.options.queueDepth ?? 128) - 1);
  }

  detach(): void {
    for (const t of this.#tasks.values()) {
      t.aborted = true;
      if (t.timer) clearTimeout(t.timer);
    }
    this.#tasks.clear();
    if (this.#session) {
      this.#session.connections.delete(this);
      // ERL 0: a session without connections is gone once the initiator gives up; keep it so
      // that a reconnect with the same TSIH can resume (the kernel's session recovery).
    }
  }

  async shutdown(): Promise<void> {
    this.#phase = 'closing';
    this.socket.end();
    const t = setTimeout(() => this.socket.destroy(), 1000);
    await this.#closed;
    clearTimeout(t);
  }

  #send(pdu: Pdu): void {
    if (this.socket.destroyed || this.socket.writableEnded) return;
    this.socket.write(encodePdu(pdu));
  }

  #onData(chunk: Buffer): void {
    let pdus: RawPdu[];
    try {
      pdus = this.#reader.push(chunk);
    } catch (err) {
      this.#target.log(`protocol error: ${(err as Error).message}`);
      this.socket.destroy();
      return;
    }
    for (const raw of pdus) {
      if (this.socket.destroyed) return;
      let pdu: Pdu;
      try {
        pdu = decodePdu(raw);
      } catch (err) {
        if (err instanceof IscsiProtocolError && this.#phase === 'full') {
          this.#reject(raw, RejectReason.CommandNotSupported);
          continue;
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
        return;
      }
    }
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
        this.#command(pdu);
        return;
      case Opcode.NopOut:
        this.#nop(pdu);
        return;
      case Opcode.TaskMgmtRequest:
        if (!this.#advanceCmdSN(pdu.cmdSN, pdu.immediate)) return;
        this.#tmf(pdu);
        return;
      case Opcode.TextRequest:
        if (!this.#advanceCmdSN(pdu.cmdSN, pdu.immediate)) return;
        this.#text(pdu);
        return;
      case Opcode.LogoutRequest:
        if (!this.#advanceCmdSN(pdu.cmdSN, pdu.immediate)) return;
        this.#logout(pdu);
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

  #login(req: LoginRequestPdu): void {
    const target = this.#target;
    if (!this.#loginStarted) {
      this.#loginStarted = true;
      this.#statSN = req.expStatSN >>> 0;
      this.#loginIsid = req.isid;
      this.#loginTsih = req.tsih;
    }
    this.#expCmdSN = req.cmdSN >>> 0;
    const step = this.#neg.handle(req);
    let { statusClass, statusDetail } = step;
    let failed = step.failed;
    if (!failed && req.tsih !== 0 && !target.hasSession(req.tsih)) {
      [statusClass, statusDetail] = [2, 0x0a];
      failed = true;
    }
    let tsih = this.#loginTsih;
    if (!failed && step.complete) {
      const session = target.bindSession(this, req, this.#neg);
      if (!session) {
        [statusClass, statusDetail] = [2, 0x0a];
        failed = true;
      } else {
        this.#session = session;
        tsih = session.tsih;
      }
    }
    this.#send({
      opcode: Opcode.LoginResponse,
      transit: failed ? false : step.transit,
      continue: false,
      csg: step.csg,
      nsg: failed ? 0 : step.nsg,
      versionMax: 0,
      versionActive: 0,
      isid: this.#loginIsid,
      tsih: failed ? 0 : step.complete ? tsih : 0,
      itt: req.itt,
      statSN: this.#nextStatSN(),
      expCmdSN: this.#expCmdSN,
      maxCmdSN: this.#maxCmdSN,
      statusClass,
      statusDetail,
      data: failed ? Buffer.alloc(0) : encodeText(step.keys),
    });
    if (failed) {
      target.log(`login failed ${statusClass}/${statusDetail} from ${this.#neg.initiatorName}`);
      this.#phase = 'closing';
      this.socket.end();
      return;
    }
    if (step.complete) {
      this.#phase = 'full';
      this.#params = { ...this.#neg.params };
      target.log(
        `login ${this.#neg.sessionType} ${this.#neg.initiatorName} tsih=${tsih} ` +
          `mrdsl=${this.#params.initiatorMaxRecvDataSegmentLength}`,
      );
    }
  }

  #nop(pdu: NopOutPdu): void {
    if (pdu.itt === RESERVED_TAG) return; // a reply to a NOP-In we never send
    if (!this.#advanceCmdSN(pdu.cmdSN, pdu.immediate)) return;
    this.#send({
      opcode: Opcode.NopIn,
      lun: pdu.lun,
      itt: pdu.itt,
      ttt: RESERVED_TAG,
      statSN: this.#nextStatSN(),
      expCmdSN: this.#expCmdSN,
      maxCmdSN: this.#maxCmdSN,
      data: pdu.data ?? Buffer.alloc(0),
    });
  }

  #text(pdu: TextRequestPdu): void {
    const o = this.#target.options;
    const out: Array<[string, string]> = [];
    let pairs: Array<[string, string]> = [];
    try {
      pairs = decodeTextPairs(pdu.data ?? Buffer.alloc(0));
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
    this.#send({
      opcode: Opcode.TextResponse,
      final: true,
      continue: false,
      lun: 0,
      itt: pdu.itt,
      ttt: RESERVED_TAG,
      statSN: this.#nextStatSN(),
      expCmdSN: this.#expCmdSN,
      maxCmdSN: this.#maxCmdSN,
      data: encodeText(out),
    });
  }

  #logout(pdu: LogoutRequestPdu): void {
    const recovery = pdu.reason === 2;
    this.#send({
      opcode: Opcode.LogoutResponse,
      response: recovery ? 2 : 0,
      itt: pdu.itt,
      statSN: this.#nextStatSN(),
      expCmdSN: this.#expCmdSN,
      maxCmdSN: this.#maxCmdSN,
      time2Wait: 0,
      time2Retain: 0,
    });
    if (recovery) return;
    this.#target.stats.logouts++;
    if (this.#session) this.#target.endSession(this.#session);
    this.#target.log(`logout tsih=${this.#session?.tsih ?? 0}`);
    this.#phase = 'closing';
    this.socket.end();
  }

  #tmf(pdu: TaskMgmtRequestPdu): void {
    let response: number = TmfResponse.FunctionComplete;
    const abort = (t: Task): void => {
      t.aborted = true;
      if (t.timer) clearTimeout(t.timer);
      this.#tasks.delete(t.itt);
    };
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
    this.#target.log(`tmf function=${pdu.function} response=${response}`);
    this.#send({
      opcode: Opcode.TaskMgmtResponse,
      response,
      itt: pdu.itt,
      statSN: this.#nextStatSN(),
      expCmdSN: this.#expCmdSN,
      maxCmdSN: this.#maxCmdSN,
    });
    if (pdu.function === TmfFunction.TargetColdReset) this.socket.end();
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
          result = { status: Status.Busy };
          break;
        case 'task-set-full':
          result = { status: Status.TaskSetFull };
          break;
        case 'unit-attention':
          result = { status: Status.CheckCondition, sense: fixedSense(Sense.powerOnReset) };
          break;
        case 'not-ready':
          result = { status: Status.CheckCondition, sense: fixedSense(Sense.becomingReady) };
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
      if (result.status !== Status.Good) {
        target.log(
          `cmd ${key} lun=${pdu.lun} status=0x${result.status.toString(16)}` +
            (result.sense ? ` sense=${result.sense.subarray(0, 14).toString('hex')}` : ''),
        );
      }
      this.#respond(pdu, result);
    };
    if (decision.latencyMs > 0) task.timer = setTimeout(run, decision.latencyMs);
    else run();
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
