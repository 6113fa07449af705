/**
 * The memory transport: the simulator's device server (lib/sim/device-server.ts) in this process,
 * behind the same seam as SG_IO and the userspace iSCSI initiator. For tests and demos: the
 * device, scanner and reader run unchanged against any volume, profile (oci, scsi_debug, tgt) and
 * fault the simulator can produce, without a kernel, a socket or root.
 *
 * Commands complete asynchronously (never inside `execute`), at most `queueDepth` at once, the
 * rest wait in order, so the callers' concurrency is exercised for real. The reply is delivered
 * as SG_IO delivers it: data-in copied into `command.data` from offset 0 (at most its length),
 * `resid` = requested − transferred, sense copied into `command.sense` with `senseLength` and
 * DRIVER_SENSE; a command whose injected latency reaches its timeout ends with DID_TIME_OUT
 * after the timeout.
 *
 * Never imports the native binding.
 */
import {
  type DeviceServer,
  NexusState,
  type ScsiResult,
  VOLUME_LUN,
} from '../sim/device-server.js';
import type { FaultInjector } from '../sim/faults.js';
import {
  type CommandOutcome,
  DataDirection,
  HostStatus,
  type ScsiTransport,
  type TransportCommand,
} from './types.js';

/** Linux DRIVER_SENSE: the driver byte SG_IO reports when sense data came back. */
const DRIVER_SENSE = 0x08;
/** errno for a command sent after `close()` (what SG_IO on a closed descriptor gives). */
const EBADF = 9;

/**
 * What a {@link MemoryTestHook} makes of one command instead of the device server, for what the
 * device server cannot produce:
 * - `{ hostStatus, detail? }`: the transport did not complete the command (DID_*);
 * - `{ errno }`: the system call failed;
 * - `{ reply, resid? }`: GOOD with these data-in bytes (a malformed reply, say); `resid`
 *   defaults to the requested length minus the bytes copied.
 */
export type MemoryTestOutcome =
  | { hostStatus: number; detail?: string }
  | { errno: number }
  | { reply: Uint8Array; resid?: number };

/**
 * Tests only: consulted for every command (with its CDB and its 0-based sequence number on this
 * transport) before faults and the device server; return undefined to let them answer.
 */
export type MemoryTestHook = (cdb: Uint8Array, sequence: number) => MemoryTestOutcome | undefined;

/** Options of {@link createMemoryTransport}. */
export interface MemoryTransportOptions {
  /** The name in the address, `memory:<name>` (default `volume-<n>`). */
  name?: string;
  /** The most commands served at once, 1..64 (default 4); more wait their turn. */
  queueDepth?: number;
  /** The LUN commands go to (default 1, the volume). */
  lun?: number;
  /** Start with a pending UNIT ATTENTION (power on/reset), as after an iSCSI login. */
  unitAttention?: boolean;
  /**
   * The simulator's fault injection (lib/sim/faults.ts), decided per command as the iSCSI
   * target does: latency delays the completion (up to the command's timeout: DID_TIME_OUT), BUSY / TASK SET FULL / UNIT ATTENTION / NOT READY
   * replace the result, gls-* malform the reply, and drop-connection becomes a transport
   * failure (DID_TRANSPORT_FAILFAST) of that command.
   */
  faults?: FaultInjector;
  /** Tests only: see {@link MemoryTestHook}. */
  testHook?: MemoryTestHook;
}

/** Counters of a memory transport (tests read them). */
export interface MemoryTransportStats {
  /** Commands received by `execute`. */
  commands: number;
  /** Commands being served now (not counting those waiting for a slot). */
  inFlight: number;
  /** The most commands served at once so far. */
  maxInFlight: number;
}

/** A transport to a device server in this process. */
export interface MemoryTransport extends ScsiTransport {
  readonly kind: 'memory';
  /** The device server commands go to. */
  readonly server: DeviceServer;
  readonly stats: Readonly<MemoryTransportStats>;
}

const OPTION_KEYS = ['name', 'queueDepth', 'lun', 'unitAttention', 'faults', 'testHook'];
let counter = 0;

/**
 * Creates a transport that serves commands from `server` in this process.
 *
 * @example
 * ```ts
 * import { openDevice } from 'lba-status';
 * import { ChangedMap, createMemoryTransport, DeviceServer } from 'lba-status/sim';
 * const map = ChangedMap.fromByteExtents(
 *   { sizeBytes: 1 << 30, blockSize: 512, changeBlockSize: 65536 },
 *   [{ offset: 1 << 20, length: 65536 }],
 * );
 * await using dev = await openDevice(createMemoryTransport(new DeviceServer({ map, dataSeed: 1 })));
 * ```
 */
export function createMemoryTransport(
  server: DeviceServer,
  options: MemoryTransportOptions = {},
): MemoryTransport {
  if (typeof server?.execute !== 'function') {
    throw new TypeError('createMemoryTransport(server): server must be a DeviceServer');
  }
  if (typeof options !== 'object' || options === null) {
    throw new TypeError('createMemoryTransport(server, options): options must be an object');
  }
  for (const key of Object.keys(options)) {
    if (!OPTION_KEYS.includes(key)) {
      throw new RangeError(`unknown memory transport option ${key} (${OPTION_KEYS.join(', ')})`);
    }
  }
  const queueDepth = options.queueDepth ?? 4;
  if (!Number.isInteger(queueDepth) || queueDepth < 1 || queueDepth > 64) {
    throw new RangeError(`queueDepth must be an integer in 1..64; got ${queueDepth}`);
  }
  const name = options.name ?? `volume-${++counter}`;
  if (typeof name !== 'string' || name.length === 0) {
    throw new TypeError('name must be a non-empty string');
  }
  const lun = options.lun ?? VOLUME_LUN;
  if (!Number.isInteger(lun) || lun < 0 || lun > 255) {
    throw new RangeError(`lun must be an integer in 0..255; got ${lun}`);
  }
  if (options.testHook !== undefined && typeof options.testHook !== 'function') {
    throw new TypeError('testHook must be a function');
  }
  return new MemoryTransportImpl(server, name, queueDepth, lun, options);
}

class MemoryTransportImpl implements MemoryTransport {
  readonly kind = 'memory';
  readonly address: string;
  readonly queueDepth: number;
  readonly server: DeviceServer;
  readonly stats: MemoryTransportStats = { commands: 0, inFlight: 0, maxInFlight: 0 };
  readonly #lun: number;
  readonly #nexus = new NexusState();
  readonly #faults: FaultInjector | undefined;
  readonly #hook: MemoryTestHook | undefined;
  /** Commands waiting for a slot, oldest first. */
  readonly #waiting: Array<() => void> = [];
  #closed = false;

  constructor(
    server: DeviceServer,
    name: string,
    queueDepth: number,
    lun: number,
    options: MemoryTransportOptions,
  ) {
    this.server = server;
    this.address = `memory:${name}`;
    this.queueDepth = queueDepth;
    this.#lun = lun;
    this.#faults = options.faults;
    this.#hook = options.testHook;
    if (options.unitAttention) this.#nexus.addUnitAttention(lun);
  }

  execute(command: TransportCommand): Promise<CommandOutcome> {
    const sequence = this.stats.commands++;
    return new Promise((resolve) => {
      const start = (): void => {
        this.stats.inFlight++;
        this.stats.maxInFlight = Math.max(this.stats.maxInFlight, this.stats.inFlight);
        this.#serve(command, sequence, (outcome) => {
          this.stats.inFlight--;
          this.#waiting.shift()?.();
          resolve(outcome);
        });
      };
      if (this.stats.inFlight < this.queueDepth) start();
      else this.#waiting.push(start);
    });
  }

  /** Serves one command in a slot; calls `done` from a later macrotask, never synchronously. */
  #serve(command: TransportCommand, sequence: number, done: (o: CommandOutcome) => void): void {
    const began = performance.now();
    const finish = (outcome: Omit<CommandOutcome, 'durationMs'>): void => {
      done({ ...outcome, durationMs: performance.now() - began });
    };
    const requested =
      command.direction === DataDirection.FromDevice ? (command.data?.byteLength ?? 0) : 0;
    if (this.#closed) {
      setImmediate(() => finish(systemFailure(EBADF)));
      return;
    }
    const canned = this.#hook?.(command.cdb.slice(), sequence);
    if (canned) {
      setImmediate(() => finish(this.#cannedOutcome(command, canned, requested)));
      return;
    }
    const cdb = Buffer.from(command.cdb);
    const decision = this.#faults?.decide(cdb) ?? { latencyMs: 0 };
    const run = (): void => {
      const request: Parameters<DeviceServer['execute']>[0] = {
        lun: this.#lun,
        cdb,
        nexus: this.#nexus,
      };
      if (command.direction === DataDirection.ToDevice && command.data) {
        request.dataOut = Buffer.from(command.data);
      }
      const result = this.server.executeWithFault(request, decision.action);
      if (!result) {
        finish({
          ...systemFailure(0),
          hostStatus: HostStatus.TRANSPORT_FAILFAST,
          resid: requested,
          detail: 'connection dropped (fault injection)',
        });
        return;
      }
      finish(deliver(command, result, requested));
    };
    if (decision.latencyMs >= command.timeoutMs) {
      // As SG_IO: the command is aborted when its timeout expires, with DID_TIME_OUT.
      setTimeout(() => {
        finish({
          ...systemFailure(0),
          hostStatus: HostStatus.TIME_OUT,
          resid: requested,
          detail: `timed out after ${command.timeoutMs} ms`,
        });
      }, command.timeoutMs);
    } else if (decision.latencyMs > 0) setTimeout(run, decision.latencyMs);
    else setImmediate(run);
  }

  #cannedOutcome(
    command: TransportCommand,
    canned: MemoryTestOutcome,
    requested: number,
  ): Omit<CommandOutcome, 'durationMs'> {
    if ('errno' in canned) return systemFailure(canned.errno);
    if ('hostStatus' in canned) {
      const outcome = { ...systemFailure(0), hostStatus: canned.hostStatus, resid: requested };
      return canned.detail === undefined ? outcome : { ...outcome, detail: canned.detail };
    }
    const outcome = deliver(command, { status: 0, data: Buffer.from(canned.reply) }, requested);
    if (canned.resid !== undefined) outcome.resid = canned.resid;
    return outcome;
  }

  allocate(length: number): Uint8Array {
    return new Uint8Array(length);
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }
}

function systemFailure(errno: number): Omit<CommandOutcome, 'durationMs'> {
  return { errno, status: 0, hostStatus: 0, driverStatus: 0, senseLength: 0, resid: 0 };
}

/** Copies a device server result into the command's buffers, as SG_IO would. */
function deliver(
  command: TransportCommand,
  result: ScsiResult,
  requested: number,
): Omit<CommandOutcome, 'durationMs'> {
  let transferred = 0;
  if (requested > 0 && result.data && command.data) {
    transferred = Math.min(requested, result.data.length);
    command.data.set(result.data.subarray(0, transferred), 0);
  }
  let senseLength = 0;
  if (result.sense) {
    senseLength = Math.min(result.sense.length, command.sense.byteLength);
    command.sense.set(result.sense.subarray(0, senseLength), 0);
  }
  return {
    errno: 0,
    status: result.status,
    hostStatus: 0,
    driverStatus: senseLength > 0 ? DRIVER_SENSE : 0,
    senseLength,
    resid: requested - transferred,
  };
}
