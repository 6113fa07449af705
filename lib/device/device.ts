/**
 * A SCSI device over a transport: open/close, one `execute()` for any command (classified, with
 * retries of transient conditions), and the typed commands every user needs (INQUIRY, VPD,
 * READ CAPACITY). GET LBA STATUS and scans live in lib/scan, changed-data reads in lib/read;
 * this layer knows neither.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { debuglog } from 'node:util';
import { throwIfAborted } from '../abort.js';
import type { CommandEngine } from '../binding.js';
import { DeviceClosedError, MalformedReplyError, ScsiError } from '../errors.js';
import {
  type BlockLimits,
  type Capacity,
  type CommandSupport,
  type Designator,
  decodeBlockLimits,
  decodeDeviceIdentification,
  decodeLogicalBlockProvisioning,
  decodeOneCommandSupport,
  decodeReadCapacity10,
  decodeReadCapacity16,
  decodeSerialNumber,
  decodeStandardInquiry,
  decodeSupportedVpdPages,
  inquiryCdb,
  type LogicalBlockProvisioning,
  readCapacity10Cdb,
  readCapacity16Cdb,
  reportSupportedOpcodeCdb,
  type StandardInquiry,
} from '../scsi/commands.js';
import { DataDirection, SenseKey } from '../scsi/names.js';
import type { ResolveOptions } from '../transport/resolve.js';
import type { ScsiTransport } from '../transport/types.js';
import {
  InvalidArgTypeError,
  optionalInteger,
  validateAbortSignal,
  validateOneOf,
  validateOptionKeys,
} from '../validate.js';
import { classifyOutcome, type RetryPolicy, retryDelay } from './execute.js';

const debug = debuglog('lba-status');

/** Sense buffer size: 96 covers the kernel's own buffer (SCSI_SENSE_BUFFERSIZE). */
const SENSE_LENGTH = 96;
/** GET LBA STATUS can walk 1 GiB of a thin volume: give it a minute, as sg3_utils does. */
export const DEFAULT_TIMEOUT_MS = 60_000;

/** CHAP credentials for an `iscsi://` device; the secrets never appear in messages. */
export interface ChapOptions {
  /** CHAP name (default: the user part of the URL). */
  username?: string;
  secret: string;
  /** Mutual CHAP: what the target must answer with. */
  target?: { username: string; secret: string };
}

/** Options of {@link openDevice}. */
export interface OpenOptions extends ResolveOptions {
  /**
   * The most commands in flight at once on this device (default 4, at most 64). No transport
   * uses libuv's thread pool, so scans never starve fs, dns or zlib work.
   */
  queueDepth?: number;
  /**
   * How commands reach the kernel, for device nodes (default `'threads'`):
   * - `'threads'`: dedicated native threads running the SG_IO ioctl. The JS thread never enters
   *   the kernel for a command, so nothing the device or the block layer does can stall it.
   * - `'sg-async'`: the sg driver's write()/read() interface polled on the event loop (`/dev/sgN`
   *   only) — no thread hand-offs, the least CPU per command. But the kernel may put the
   *   submitting thread to sleep inside write(): while the request queue is frozen (a rescan,
   *   the disk being probed, a sysfs queue change) or out of tags, until commands in flight
   *   drain. Use it in a process (or worker_thread) that does nothing else, and never with a
   *   target served from the same process (it deadlocks until the transport times out).
   */
  engine?: CommandEngine;
  /** Retry policy for transient conditions (UNIT ATTENTION, BUSY, TASK SET FULL, NOT READY). */
  retry?: RetryPolicy;
  /** Per-command timeout in ms (default 60 000). */
  timeoutMs?: number;
  /** `iscsi://` devices: CHAP credentials (never put a secret in the URL). */
  chap?: ChapOptions;
  /** `iscsi://` devices: this initiator's IQN (default `iqn.2024-01.lba-status:initiator`). */
  initiatorName?: string;
}

/** Options of {@link ScsiDevice.execute}. */
export interface ExecuteOptions {
  /** Human name of the command, used in errors (default: the opcode in hex). */
  command?: string;
  /** Data-in length in bytes (direction from device); a new zeroed buffer per try. */
  dataInLength?: number;
  /**
   * A buffer to receive the data in instead of a new one (direction from device): zero-filled
   * before each try, so that bytes a short transfer did not overwrite can never pass for data.
   */
  dataIn?: Uint8Array;
  /** Data-out bytes (direction to device). */
  dataOut?: Uint8Array;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Override the device's retry policy for this command. */
  retry?: RetryPolicy;
}

/** A completed command. */
export interface CommandResult {
  /** The data-in buffer (its full allocated length; see `transferred`). */
  data: Uint8Array;
  /** Bytes the device really transferred (allocation length − resid). */
  transferred: number;
  /** Duration reported by the transport, in ms. */
  durationMs: number;
  /** Tries it took (1 = no retry). */
  attempts: number;
}

/** What {@link ScsiDevice.info} reports. */
export interface DeviceInfo extends StandardInquiry {
  path: string;
  sgPath: string | undefined;
  blockPath: string | undefined;
  serialNumber: string | undefined;
  identifiers: Designator[];
  /** VPD pages the device lists in page 00h. */
  vpdPages: number[];
  blockSize: number;
  /** Capacity in logical blocks. */
  capacityBlocks: number;
  capacityBytes: number;
  /** Logical block provisioning management enabled (READ CAPACITY(16) LBPME). */
  lbpme: boolean;
  lbprz: boolean;
  /** Logical blocks per physical block exponent. */
  lbppbe: number;
  blockLimits: BlockLimits | undefined;
  provisioning: LogicalBlockProvisioning | undefined;
  /** GET LBA STATUS support as REPORT SUPPORTED OPERATION CODES says ('unknown' if it does not answer). */
  getLbaStatus16: CommandSupport;
  getLbaStatus32: CommandSupport;
}

const PATH_OPTION_KEYS = ['queueDepth', 'engine', 'preferSg', 'sysfsRoot', 'devRoot'];
const ISCSI_OPTION_KEYS = ['queueDepth', 'chap', 'initiatorName'];
const COMMON_OPTION_KEYS = ['retry', 'timeoutMs'];
const ENGINES = ['threads', 'sg-async'] as const;

/** Settings a device keeps from {@link OpenOptions}. */
export interface DeviceSettings {
  retry: RetryPolicy;
  timeoutMs: number;
}

function isTransport(value: unknown): value is ScsiTransport {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as ScsiTransport).execute === 'function' &&
    typeof (value as ScsiTransport).close === 'function'
  );
}

/**
 * Opens the transport `address` names (a device node, an `iscsi://` URL, or a transport
 * object the caller made, whose ownership passes to the device), wraps it with `make`, and
 * probes it with INQUIRY, so that what is not a SCSI device fails here. Nothing is left open
 * on failure.
 *
 * @internal the public entry is `openDevice` in lib/api (it adds scans and reads).
 */
export async function openWith<T extends ScsiDevice>(
  address: string | ScsiTransport,
  options: OpenOptions,
  make: (transport: ScsiTransport, settings: DeviceSettings) => T,
): Promise<T> {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgTypeError('options', 'an object', options);
  }
  const given = isTransport(address);
  const url = typeof address === 'string' && /^iscsi:/i.test(address);
  if (!given && (typeof address !== 'string' || address.length === 0)) {
    throw new InvalidArgTypeError('path', 'a non-empty string or a transport', address);
  }
  validateOptionKeys(options, 'options', [
    ...COMMON_OPTION_KEYS,
    ...(given ? [] : url ? ISCSI_OPTION_KEYS : PATH_OPTION_KEYS),
  ]);
  const queueDepth = optionalInteger(options.queueDepth, 'options.queueDepth', 1, 64, 4);
  const timeoutMs = optionalInteger(
    options.timeoutMs,
    'options.timeoutMs',
    1,
    2 ** 31 - 1,
    DEFAULT_TIMEOUT_MS,
  );
  let transport: ScsiTransport;
  if (given) {
    transport = address;
  } else if (url) {
    const { openIscsiTransport } = await import('../transport/iscsi.js');
    transport = await openIscsiTransport(address as string, {
      queueDepth,
      timeoutMs,
      ...(options.chap === undefined ? {} : { chap: options.chap }),
      ...(options.initiatorName === undefined ? {} : { initiatorName: options.initiatorName }),
    });
  } else {
    const engine = validateOneOf(options.engine ?? 'threads', 'options.engine', ENGINES);
    const { openSgioTransport } = await import('../transport/sgio.js');
    transport = await openSgioTransport(address as string, { ...options, engine, queueDepth });
  }
  try {
    const device = make(transport, { retry: options.retry ?? {}, timeoutMs });
    await device.probe();
    return device;
  } catch (error) {
    await transport.close();
    throw error;
  }
}

/** An open SCSI device. Close it with `close()` or `await using`. */
export class ScsiDevice {
  /** Where commands go: the node SG_IO goes through, or the `iscsi://` URL (no secret). */
  readonly path: string;
  readonly #transport: ScsiTransport;
  readonly #retry: RetryPolicy;
  readonly #timeoutMs: number;
  readonly #inFlight = new Set<Promise<unknown>>();
  #closing: Promise<void> | undefined;
  #inquiry: StandardInquiry | undefined;
  #capacity: Capacity | undefined;

  /** @internal use `openDevice` */
  constructor(transport: ScsiTransport, settings: DeviceSettings) {
    this.path = transport.address;
    this.#transport = transport;
    this.#retry = settings.retry;
    this.#timeoutMs = settings.timeoutMs;
  }

  /** Which transport commands take: `'sgio'` (kernel), `'iscsi'` (userspace) or `'memory'`. */
  get transport(): ScsiTransport['kind'] {
    return this.#transport.kind;
  }

  /** The path the caller opened (device nodes; otherwise the address). */
  get requestedPath(): string {
    return (this.#transport as { requestedPath?: string }).requestedPath ?? this.path;
  }

  /** The sg node (device nodes only). */
  get sgPath(): string | undefined {
    return this.#transport.sgPath;
  }

  /** The block node, which O_DIRECT reads use (device nodes only). */
  get blockPath(): string | undefined {
    return this.#transport.blockPath;
  }

  /** The most commands this device has in flight at once. */
  get queueDepth(): number {
    return this.#transport.queueDepth;
  }

  /** How commands reach the kernel (device nodes; undefined on other transports). */
  get engine(): CommandEngine | undefined {
    return (this.#transport as { engine?: CommandEngine }).engine;
  }

  get closed(): boolean {
    return this.#closing !== undefined;
  }

  /**
   * A zero-filled buffer for data-in that this device's fastest read path can use (native memory
   * aligned to `alignment`, default 4096, for device nodes, so O_DIRECT reads of the block node
   * take it).
   */
  allocate(length: number, alignment?: number): Uint8Array {
    return this.#transport.allocate(length, alignment);
  }

  /**
   * The largest transfer one command may carry below the device's own limit (VPD B0h): the
   * kernel queue's for device nodes; none for userspace transports.
   */
  async transportMaxTransferBytes(): Promise<number | undefined> {
    const probe = (this.#transport as { maxTransferBytes?: () => Promise<number> })
      .maxTransferBytes;
    return probe ? probe.call(this.#transport) : undefined;
  }

  /** @internal first command after open: proves the transport reaches a SCSI device. */
  async probe(): Promise<void> {
    const result = await this.execute(inquiryCdb(96), { command: 'INQUIRY', dataInLength: 96 });
    this.#inquiry = decodeStandardInquiry(result.data.subarray(0, result.transferred));
  }

  /**
   * Sends one CDB and classifies the outcome; retries transient conditions per the policy.
   * Rejects with DeviceSystemError, TransportError, ScsiError, DeviceClosedError or AbortError.
   */
  async execute(cdb: Uint8Array, options: ExecuteOptions = {}): Promise<CommandResult> {
    const command = options.command ?? `opcode 0x${(cdb[0] ?? 0).toString(16).padStart(2, '0')}`;
    const policy = options.retry ?? this.#retry;
    const attempts = policy.attempts ?? 6;
    for (let attempt = 1; ; attempt++) {
      throwIfAborted(options.signal);
      let data: Uint8Array | null = options.dataOut ?? options.dataIn?.fill(0) ?? null;
      if (!data && options.dataInLength) data = new Uint8Array(options.dataInLength);
      const outcome = await this.#executeOnce(cdb, data, options, command);
      if (!(outcome instanceof Error)) return { ...outcome, attempts: attempt };
      const delay = attempt < attempts ? retryDelay(outcome, attempt, policy) : undefined;
      if (delay === undefined) throw outcome;
      debug('%s on %s: %s; retry %d in %d ms', command, this.path, outcome.message, attempt, delay);
      if (delay > 0) await sleep(delay, undefined, { signal: options.signal }).catch(() => {});
    }
  }

  async #executeOnce(
    cdb: Uint8Array,
    data: Uint8Array | null,
    options: ExecuteOptions,
    command: string,
  ): Promise<Omit<CommandResult, 'attempts'> | Error> {
    if (this.#closing) throw new DeviceClosedError(this.path);
    const direction = options.dataOut
      ? DataDirection.ToDevice
      : data
        ? DataDirection.FromDevice
        : DataDirection.None;
    const sense = new Uint8Array(SENSE_LENGTH);
    const pending = this.#transport.execute({
      cdb,
      direction,
      data,
      sense,
      timeoutMs: options.timeoutMs ?? this.#timeoutMs,
    });
    this.#inFlight.add(pending);
    let raw: Awaited<typeof pending>;
    try {
      raw = await pending;
    } finally {
      this.#inFlight.delete(pending);
    }
    const error = classifyOutcome(raw, sense, command, this.path);
    if (error) return error;
    const length = data?.byteLength ?? 0;
    const transferred =
      direction === DataDirection.FromDevice
        ? Math.max(0, Math.min(length, length - raw.resid))
        : 0;
    return { data: data ?? new Uint8Array(0), transferred, durationMs: raw.durationMs };
  }

  /** Standard INQUIRY data (read at open). */
  get inquiry(): StandardInquiry {
    return this.#inquiry!;
  }

  /** Block size and capacity (READ CAPACITY(16), or (10) where 16 is refused). Cached. */
  async capacity(options: { signal?: AbortSignal } = {}): Promise<Capacity> {
    if (this.#capacity) return this.#capacity;
    let capacity: Capacity & { lastLba: bigint };
    try {
      const result = await this.execute(readCapacity16Cdb(32), {
        command: 'READ CAPACITY(16)',
        dataInLength: 32,
        signal: options.signal,
      });
      capacity = decodeReadCapacity16(result.data);
    } catch (error) {
      if (!(error instanceof ScsiError) || error.senseKey !== SenseKey.ILLEGAL_REQUEST) throw error;
      const result = await this.execute(readCapacity10Cdb(), {
        command: 'READ CAPACITY(10)',
        dataInLength: 8,
        signal: options.signal,
      });
      capacity = decodeReadCapacity10(result.data);
    }
    if (capacity.lastLba >= 2n ** 53n - 1n || capacity.blockSize === 0) {
      throw new MalformedReplyError(
        { command: 'READ CAPACITY', path: this.path },
        0,
        `capacity ${capacity.lastLba + 1n} blocks of ${capacity.blockSize} bytes is not usable`,
      );
    }
    const { lastLba: _lastLba, ...plain } = capacity;
    this.#capacity = plain;
    return plain;
  }

  async #vpd(page: number, length: number, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    try {
      const result = await this.execute(inquiryCdb(length, page), {
        command: `INQUIRY VPD 0x${page.toString(16)}`,
        dataInLength: length,
        signal,
      });
      return result.data.subarray(0, result.transferred);
    } catch (error) {
      if (error instanceof ScsiError && error.senseKey === SenseKey.ILLEGAL_REQUEST)
        return undefined;
      throw error;
    }
  }

  async #commandSupport(
    opcode: number,
    serviceAction: number,
    signal?: AbortSignal,
  ): Promise<CommandSupport> {
    try {
      const result = await this.execute(reportSupportedOpcodeCdb(opcode, serviceAction, 64), {
        command: 'REPORT SUPPORTED OPERATION CODES',
        dataInLength: 64,
        signal,
        retry: { attempts: 2 },
      });
      return decodeOneCommandSupport(result.data.subarray(0, result.transferred));
    } catch (error) {
      // RSOC is optional: a refusal says nothing about GET LBA STATUS.
      if (error instanceof ScsiError) return 'unknown';
      throw error;
    }
  }

  /**
   * Identity, geometry, provisioning and GET LBA STATUS support: INQUIRY (standard and VPD 00h,
   * 80h, 83h, B0h, B2h), READ CAPACITY(16), REPORT SUPPORTED OPERATION CODES.
   */
  async info(options: { signal?: AbortSignal } = {}): Promise<DeviceInfo> {
    validateOptionKeys(options, 'options', ['signal']);
    const signal = validateAbortSignal(options.signal, 'options.signal');
    const capacity = await this.capacity({ signal });
    const pagesData = await this.#vpd(0x00, 255, signal);
    const vpdPages = pagesData ? decodeSupportedVpdPages(pagesData) : [];
    const has = (page: number): boolean => vpdPages.includes(page);
    const serial = has(0x80) ? await this.#vpd(0x80, 255, signal) : undefined;
    const ids = has(0x83) ? await this.#vpd(0x83, 1024, signal) : undefined;
    const limits = has(0xb0) ? await this.#vpd(0xb0, 64, signal) : undefined;
    const lbp = has(0xb2) ? await this.#vpd(0xb2, 64, signal) : undefined;
    return {
      path: this.path,
      sgPath: this.sgPath,
      blockPath: this.blockPath,
      ...this.inquiry,
      serialNumber: serial ? decodeSerialNumber(serial) : undefined,
      identifiers: ids ? decodeDeviceIdentification(ids) : [],
      vpdPages,
      blockSize: capacity.blockSize,
      capacityBlocks: capacity.blocks,
      capacityBytes: capacity.blocks * capacity.blockSize,
      lbpme: capacity.lbpme,
      lbprz: capacity.lbprz,
      lbppbe: capacity.lbppbe,
      blockLimits: limits ? decodeBlockLimits(limits) : undefined,
      provisioning: lbp ? decodeLogicalBlockProvisioning(lbp) : undefined,
      getLbaStatus16: await this.#commandSupport(0x9e, 0x12, signal),
      getLbaStatus32: await this.#commandSupport(0x7f, 0x12, signal),
    };
  }

  /**
   * Waits for commands in flight, then closes the transport (the node and its queue, or the
   * iSCSI session). Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.allSettled([...this.#inFlight]);
      await this.#transport.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
