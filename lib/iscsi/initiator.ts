/**
 * A small userspace iSCSI initiator over node:net: login (None or CHAP), SendTargets discovery,
 * SCSI commands with any CDB length (Extended CDB AHS for > 16 bytes), Data-In reassembly,
 * immediate data / R2T for writes, NOP, task management and logout. One connection per session,
 * ErrorRecoveryLevel 0, no digests.
 *
 * It talks to any RFC 7143 target; the project uses it to test its simulator without a kernel.
 */
import net from 'node:net';
import { chapResponse, parseChapBinary } from './login.js';
import {
  type DataInPdu,
  decodePdu,
  encodePdu,
  IscsiProtocolError,
  type LoginResponsePdu,
  Opcode,
  type Pdu,
  type R2TPdu,
  RESERVED_TAG,
  type ScsiResponsePdu,
  Stage,
  snAdd,
  snLess,
} from './pdu.js';
import { PduReader } from './reader.js';
import { decodeText, decodeTextPairs, encodeText } from './text.js';

export interface InitiatorOptions {
  host: string;
  port: number;
  initiatorName?: string;
  /** Required for a normal session. */
  targetName?: string;
  sessionType?: 'Normal' | 'Discovery';
  chap?: { username: string; secret: string };
  /** What this initiator can receive per PDU (default 262144). */
  maxRecvDataSegmentLength?: number;
  /** 6-byte ISID (default: random, type "random" 80h). */
  isid?: Buffer;
  /** Default per-command timeout in ms (default 30 000). */
  timeoutMs?: number;
}

/** Outcome of one SCSI command. */
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

export class IscsiInitiatorError extends Error {
  override name = 'IscsiInitiatorError';
  readonly code: string;
  constructor(message: string, code = 'ERR_ISCSI_INITIATOR') {
    super(message);
    this.code = code;
  }
}

interface Pending {
  resolve(pdu: Pdu): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout | undefined;
  /** Data-In reassembly for SCSI commands. */
  chunks?: Array<{ offset: number; data: Buffer }>;
  dataInPdus?: number;
  dataOut?: Buffer;
  lun?: number;
}

/** A logged-in iSCSI session with one connection. */
export class IscsiInitiator {
  readonly options: InitiatorOptions;
  /** Keys the target answered during login (last value of each). */
  readonly loginKeys = new Map<string, string>();
  tsih = 0;
  /** What the target declared it can receive. */
  targetMaxRecvDataSegmentLength = 8192;
  firstBurstLength = 65536;
  immediateData = true;
  #socket: net.Socket;
  #reader = new PduReader();
  #isid: Buffer;
  #itt = 1;
  #cmdSN = 1;
  #expStatSN = 0;
  #maxCmdSN = 1;
  #pending = new Map<number, Pending>();
  #closed = false;
  #closeError: Error | undefined;
  #windowWaiters: Array<() => void> = [];

  private constructor(options: InitiatorOptions, socket: net.Socket) {
    this.options = options;
    this.#socket = socket;
    this.#isid =
      options.isid ??
      Buffer.from([0x80, ...Array.from({ length: 5 }, () => (Math.random() * 256) | 0)]);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err) => this.#fail(err));
    socket.on('close', () =>
      this.#fail(this.#closeError ?? new IscsiInitiatorError('connection closed', 'ECONNRESET')),
    );
  }

  /** Connects and logs in. */
  static async connect(options: InitiatorOptions): Promise<IscsiInitiator> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: options.host, port: options.port }, () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    });
    const ini = new IscsiInitiator(options, socket);
    try {
      await ini.#login();
    } catch (err) {
      socket.destroy();
      throw err;
    }
    return ini;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Closes the socket without logging out. */
  destroy(): void {
    this.#socket.destroy();
  }

  #fail(err: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const p of this.#pending.values()) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(err);
    }
    this.#pending.clear();
    for (const w of this.#windowWaiters) w();
    this.#windowWaiters = [];
  }

  #onData(chunk: Buffer): void {
    try {
      for (const raw of this.#reader.push(chunk)) this.#dispatch(decodePdu(raw));
    } catch (err) {
      this.#closeError = err as Error;
      this.#socket.destroy();
    }
  }

  #updateSN(pdu: { expCmdSN?: number; maxCmdSN?: number }): void {
    if (pdu.maxCmdSN !== undefined && pdu.expCmdSN !== undefined) {
      if (!snLess(pdu.maxCmdSN, this.#maxCmdSN)) this.#maxCmdSN = pdu.maxCmdSN;
      const waiters = this.#windowWaiters;
      this.#windowWaiters = [];
      for (const w of waiters) w();
    }
  }

  #dispatch(pdu: Pdu): void {
    switch (pdu.opcode) {
      case Opcode.DataIn: {
        this.#updateSN(pdu);
        const p = this.#pending.get(pdu.itt);
        if (!p) throw new IscsiProtocolError(`Data-In for unknown ITT ${pdu.itt}`);
        p.chunks!.push({ offset: pdu.bufferOffset, data: Buffer.from(pdu.data ?? []) });
        p.dataInPdus = (p.dataInPdus ?? 0) + 1;
        if (pdu.hasStatus) {
          this.#expStatSN = snAdd(pdu.statSN, 1);
          this.#complete(pdu.itt, pdu);
        }
        return;
      }
      case Opcode.R2T:
        this.#updateSN(pdu);
        this.#r2t(pdu);
        return;
      case Opcode.NopIn:
        this.#updateSN(pdu);
        if (pdu.itt === RESERVED_TAG) {
          // Target ping: answer when it asks for one (TTT ≠ FFFFFFFFh).
          if (pdu.ttt !== RESERVED_TAG) {
            this.#write({
              opcode: Opcode.NopOut,
              immediate: true,
              lun: pdu.lun,
              itt: RESERVED_TAG,
              ttt: pdu.ttt,
              cmdSN: this.#cmdSN,
              expStatSN: this.#expStatSN,
            });
          }
          return;
        }
        this.#expStatSN = snAdd(pdu.statSN, 1);
        this.#complete(pdu.itt, pdu);
        return;
      case Opcode.ScsiResponse:
      case Opcode.TaskMgmtResponse:
      case Opcode.LoginResponse:
      case Opcode.TextResponse:
      case Opcode.LogoutResponse:
        this.#updateSN(pdu);
        this.#expStatSN = snAdd(pdu.statSN, 1);
        this.#complete(pdu.itt, pdu);
        return;
      case Opcode.Reject: {
        this.#updateSN(pdu);
        const bhs = pdu.data ?? Buffer.alloc(0);
        const itt = bhs.length >= 20 ? bhs.readUInt32BE(16) : RESERVED_TAG;
        const p = this.#pending.get(itt);
        if (p) {
          this.#pending.delete(itt);
          if (p.timer) clearTimeout(p.timer);
          p.reject(
            new IscsiInitiatorError(
              `target rejected the PDU (reason 0x${pdu.reason.toString(16)})`,
              'ERR_ISCSI_REJECT',
            ),
          );
        }
        return;
      }
      case Opcode.AsyncMessage:
        this.#updateSN(pdu);
        return;
      default:
        throw new IscsiProtocolError(`unexpected opcode 0x${pdu.opcode.toString(16)} from target`);
    }
  }

  #complete(itt: number, pdu: Pdu): void {
    const p = this.#pending.get(itt);
    if (!p) return;
    this.#pending.delete(itt);
    if (p.timer) clearTimeout(p.timer);
    p.resolve(pdu);
  }

  #write(pdu: Pdu): void {
    if (this.#closed) throw new IscsiInitiatorError('connection closed', 'ECONNRESET');
    this.#socket.write(encodePdu(pdu));
  }

  #nextItt(): number {
    const itt = this.#itt;
    this.#itt = this.#itt >= 0x7fffffff ? 1 : this.#itt + 1;
    return itt;
  }

  #await(itt: number, timeoutMs: number, extra: Partial<Pending> = {}): Promise<Pdu> {
    const p = new Promise<Pdu>((resolve, reject) => {
      if (this.#closed) {
        reject(new IscsiInitiatorError('connection closed', 'ECONNRESET'));
        return;
      }
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              this.#pending.delete(itt);
              reject(new IscsiInitiatorError(`no answer within ${timeoutMs} ms`, 'ETIMEDOUT'));
            }, timeoutMs)
          : undefined;
      this.#pending.set(itt, { resolve, reject, timer, ...extra });
    });
    // The caller may fail to send (closed socket) before awaiting: never an unhandled rejection.
    p.catch(() => {});
    return p;
  }

  async #waitWindow(): Promise<void> {
    while (!this.#closed && snLess(this.#maxCmdSN, this.#cmdSN)) {
      await new Promise<void>((r) => this.#windowWaiters.push(r));
    }
  }

  // ------------------------------------------------------------------------------------------

  async #login(): Promise<void> {
    const o = this.options;
    const discovery = o.sessionType === 'Discovery';
    const timeout = o.timeoutMs ?? 30000;
    const itt = this.#nextItt();
    const send = async (
      csg: number,
      nsg: number,
      transit: boolean,
      keys: Array<[string, string]>,
    ): Promise<LoginResponsePdu> => {
      const wait = this.#await(itt, timeout);
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
        tsih: 0,
        itt,
        cid: 0,
        cmdSN: this.#cmdSN,
        expStatSN: this.#expStatSN,
        data: encodeText(keys),
      });
      const r = (await wait) as LoginResponsePdu;
      if (r.statusClass !== 0) {
        throw new IscsiInitiatorError(
          `login failed: status class ${r.statusClass} detail ${r.statusDetail}`,
          'ERR_ISCSI_LOGIN',
        );
      }
      for (const [k, v] of decodeText(r.data ?? Buffer.alloc(0))) this.loginKeys.set(k, v);
      if (r.tsih) this.tsih = r.tsih;
      this.#maxCmdSN = r.maxCmdSN;
      return r;
    };

    const first: Array<[string, string]> = [
      ['InitiatorName', o.initiatorName ?? 'iqn.2024-01.lba-status:initiator'],
      ['SessionType', discovery ? 'Discovery' : 'Normal'],
    ];
    if (!discovery) {
      if (!o.targetName) throw new TypeError('targetName is required for a normal session');
      first.push(['TargetName', o.targetName]);
    }
    first.push(['AuthMethod', o.chap ? 'CHAP,None' : 'None']);
    let r = await send(Stage.Security, Stage.Operational, true, first);
    if (this.loginKeys.get('AuthMethod') === 'CHAP') {
      if (!o.chap) throw new IscsiInitiatorError('target requires CHAP', 'ERR_ISCSI_LOGIN');
      r = await send(Stage.Security, Stage.Operational, false, [['CHAP_A', '5']]);
      const id = Number(this.loginKeys.get('CHAP_I'));
      const challenge = parseChapBinary(this.loginKeys.get('CHAP_C') ?? '');
      if (!challenge || !Number.isInteger(id)) {
        throw new IscsiInitiatorError('bad CHAP challenge from target', 'ERR_ISCSI_LOGIN');
      }
      const resp = chapResponse(id, o.chap.secret, challenge);
      r = await send(Stage.Security, Stage.Operational, true, [
        ['CHAP_N', o.chap.username],
        ['CHAP_R', `0x${resp.toString('hex')}`],
      ]);
    }
    while (
      !(r.transit && r.nsg === Stage.Operational) &&
      !(r.transit && r.nsg === Stage.FullFeature)
    ) {
      r = await send(Stage.Security, Stage.Operational, true, []);
    }
    const mrdsl = String(o.maxRecvDataSegmentLength ?? 262144);
    const op: Array<[string, string]> = [
      ['HeaderDigest', 'None'],
      ['DataDigest', 'None'],
      ['MaxRecvDataSegmentLength', mrdsl],
    ];
    if (!discovery) {
      op.push(
        ['InitialR2T', 'Yes'],
        ['ImmediateData', 'Yes'],
        ['MaxBurstLength', '16776192'],
        ['FirstBurstLength', '262144'],
        ['DefaultTime2Wait', '2'],
        ['DefaultTime2Retain', '0'],
        ['MaxOutstandingR2T', '1'],
        ['DataPDUInOrder', 'Yes'],
        ['DataSequenceInOrder', 'Yes'],
        ['ErrorRecoveryLevel', '0'],
        ['MaxConnections', '1'],
      );
    }
    if (!(r.transit && r.nsg === Stage.FullFeature)) {
      r = await send(Stage.Operational, Stage.FullFeature, true, op);
      while (!(r.transit && r.nsg === Stage.FullFeature)) {
        r = await send(Stage.Operational, Stage.FullFeature, true, []);
      }
    }
    this.targetMaxRecvDataSegmentLength = Number(
      this.loginKeys.get('MaxRecvDataSegmentLength') ?? 8192,
    );
    this.firstBurstLength = Number(this.loginKeys.get('FirstBurstLength') ?? 65536);
    this.immediateData = (this.loginKeys.get('ImmediateData') ?? 'Yes') === 'Yes';
    this.#reader.setMaxDataSegmentLength(Number(mrdsl));
  }

  /** Sends SendTargets=All (discovery sessions) and returns the targets with their addresses. */
  async sendTargets(value = 'All'): Promise<Array<{ targetName: string; addresses: string[] }>> {
    await this.#waitWindow();
    const itt = this.#nextItt();
    const wait = this.#await(itt, this.options.timeoutMs ?? 30000);
    this.#write({
      opcode: Opcode.TextRequest,
      final: true,
      continue: false,
      lun: 0,
      itt,
      ttt: RESERVED_TAG,
      cmdSN: this.#cmdSN,
      expStatSN: this.#expStatSN,
      data: encodeText([['SendTargets', value]]),
    });
    this.#cmdSN = snAdd(this.#cmdSN, 1);
    const r = await wait;
    const out: Array<{ targetName: string; addresses: string[] }> = [];
    for (const [k, v] of decodeTextPairs(r.data ?? Buffer.alloc(0))) {
      if (k === 'TargetName') out.push({ targetName: v, addresses: [] });
      else if (k === 'TargetAddress' && out.length > 0) out[out.length - 1]!.addresses.push(v);
    }
    return out;
  }

  /** Sends one SCSI command and waits for its status. */
  async command(lun: number, cdb: Buffer, opts: CommandOptions = {}): Promise<CommandResult> {
    await this.#waitWindow();
    const itt = this.#nextItt();
    const dataIn = opts.dataInLength ?? 0;
    const dataOut = opts.dataOut;
    let immediate: Buffer | undefined;
    if (dataOut && this.immediateData) {
      immediate = dataOut.subarray(
        0,
        Math.min(dataOut.length, this.firstBurstLength, this.targetMaxRecvDataSegmentLength),
      );
    }
    const extra: Partial<Pending> = { chunks: [], dataInPdus: 0, lun };
    if (dataOut) extra.dataOut = dataOut;
    const wait = this.#await(itt, opts.timeoutMs ?? this.options.timeoutMs ?? 30000, extra);
    const pending = this.#pending.get(itt);
    this.#write({
      opcode: Opcode.ScsiCommand,
      final: true,
      read: dataIn > 0,
      write: dataOut !== undefined && dataOut.length > 0,
      attr: opts.attr ?? 1,
      lun,
      itt,
      expectedDataTransferLength: dataOut ? dataOut.length : dataIn,
      cmdSN: this.#cmdSN,
      expStatSN: this.#expStatSN,
      cdb,
      ...(immediate && immediate.length > 0 ? { data: immediate } : {}),
    });
    this.#cmdSN = snAdd(this.#cmdSN, 1);
    const r = (await wait) as ScsiResponsePdu | DataInPdu;
    const chunks = pending?.chunks ?? [];
    const size = chunks.reduce((m, c) => Math.max(m, c.offset + c.data.length), 0);
    const data = Buffer.alloc(size);
    for (const c of chunks) c.data.copy(data, c.offset);
    if (r.opcode === Opcode.DataIn) {
      return {
        response: 0,
        status: r.status,
        data,
        residualCount: r.residualCount,
        underflow: r.underflow,
        overflow: r.overflow,
        dataInPdus: pending?.dataInPdus ?? 0,
      };
    }
    const result: CommandResult = {
      response: r.response,
      status: r.status,
      data,
      residualCount: r.residualCount,
      underflow: r.underflow,
      overflow: r.overflow,
      dataInPdus: pending?.dataInPdus ?? 0,
    };
    const seg = r.data ?? Buffer.alloc(0);
    if (seg.length >= 2) {
      const len = seg.readUInt16BE(0);
      result.sense = Buffer.from(seg.subarray(2, 2 + len));
    }
    return result;
  }

  #r2t(pdu: R2TPdu): void {
    const p = this.#pending.get(pdu.itt);
    if (!p?.dataOut) throw new IscsiProtocolError(`R2T for unknown ITT ${pdu.itt}`);
    const end = Math.min(p.dataOut.length, pdu.bufferOffset + pdu.desiredDataTransferLength);
    let dataSN = 0;
    for (let off = pdu.bufferOffset; off < end; off += this.targetMaxRecvDataSegmentLength) {
      const len = Math.min(this.targetMaxRecvDataSegmentLength, end - off);
      this.#write({
        opcode: Opcode.DataOut,
        final: off + len >= end,
        lun: p.lun ?? 0,
        itt: pdu.itt,
        ttt: pdu.ttt,
        expStatSN: this.#expStatSN,
        dataSN: dataSN++,
        bufferOffset: off,
        data: p.dataOut.subarray(off, off + len),
      });
    }
  }

  /** NOP-Out ping (immediate); resolves with the echoed data. */
  async nop(data: Buffer = Buffer.alloc(0)): Promise<Buffer> {
    const itt = this.#nextItt();
    const wait = this.#await(itt, this.options.timeoutMs ?? 30000);
    this.#write({
      opcode: Opcode.NopOut,
      immediate: true,
      lun: 0,
      itt,
      ttt: RESERVED_TAG,
      cmdSN: this.#cmdSN,
      expStatSN: this.#expStatSN,
      data,
    });
    const r = await wait;
    return Buffer.from(r.data ?? []);
  }

  /** Task management (immediate); resolves with the TMF response code. */
  async taskManagement(fn: number, lun: number, referencedTaskTag = RESERVED_TAG): Promise<number> {
    const itt = this.#nextItt();
    const wait = this.#await(itt, this.options.timeoutMs ?? 30000);
    this.#write({
      opcode: Opcode.TaskMgmtRequest,
      immediate: true,
      function: fn,
      lun,
      itt,
      referencedTaskTag,
      cmdSN: this.#cmdSN,
      expStatSN: this.#expStatSN,
      refCmdSN: this.#cmdSN,
      expDataSN: 0,
    });
    const r = await wait;
    if (r.opcode !== Opcode.TaskMgmtResponse)
      throw new IscsiProtocolError('expected a TMF response');
    return r.response;
  }

  /** The ITT the next command will use (for task management tests). */
  get nextItt(): number {
    return this.#itt;
  }

  /** Logs out (close the session) and closes the socket. */
  async logout(): Promise<number> {
    const itt = this.#nextItt();
    const wait = this.#await(itt, this.options.timeoutMs ?? 30000);
    this.#write({
      opcode: Opcode.LogoutRequest,
      immediate: true,
      reason: 0,
      itt,
      cid: 0,
      cmdSN: this.#cmdSN,
      expStatSN: this.#expStatSN,
    });
    const r = await wait;
    if (r.opcode !== Opcode.LogoutResponse)
      throw new IscsiProtocolError('expected a logout response');
    this.#closeError = new IscsiInitiatorError('logged out', 'ERR_ISCSI_LOGGED_OUT');
    await new Promise<void>((resolve) => {
      if (this.#socket.destroyed) resolve();
      else {
        this.#socket.once('close', () => resolve());
        this.#socket.end();
      }
    });
    return r.response;
  }
}
