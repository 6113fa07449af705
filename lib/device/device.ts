/**
 * A SCSI device handle: open/close, one `execute()` for any command, and the typed commands built
 * on it (INQUIRY, READ CAPACITY, GET LBA STATUS). Scans live in lib/scan.
 */
import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { debuglog } from 'node:util';
import {
  type CommandEngine,
  DataDirection,
  getBinding,
  type LbaStatusColumns,
  type NativeBinding,
  type NativeCommandQueue,
} from '../binding.js';
import {
  DeviceClosedError,
  DeviceSystemError,
  MalformedReplyError,
  ScsiError,
  throwIfAborted,
} from '../errors.js';
import { type ChangedChunk, type ReadChangedOptions, readChanged } from '../read/reader.js';
import { type ChangedExtent, type ChangedExtentsOptions, changedExtents } from '../scan/changed.js';
import {
  type LbaExtent,
  type LbaStatusBatch,
  type ScanOptions,
  scanBatches,
  scanExtents,
} from '../scan/scanner.js';
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
import { SenseKey } from '../scsi/names.js';
import {
  InvalidArgTypeError,
  InvalidArgValueError,
  optionalInteger,
  validateAbortSignal,
  validateOneOf,
  validateOptionKeys,
} from '../validate.js';
import { classifyOutcome, type RetryPolicy, retryDelay } from './execute.js';
import {
  type ResolvedDevice,
  type ResolveOptions,
  resolveDevice,
  SG_MAJOR,
  splitDev,
} from './resolve.js';

const debug = debuglog('lba-status');

/** Sense buffer size: 96 covers the kernel's own buffer (SCSI_SENSE_BUFFERSIZE). */
const SENSE_LENGTH = 96;
/** GET LBA STATUS can walk 1 GiB of a thin volume: give it a minute, as sg3_utils does. */
export const DEFAULT_TIMEOUT_MS = 60_000;

/** Options of {@link openDevice}. */
export interface OpenOptions extends ResolveOptions {
  /**
   * The most commands in flight at once on this device (default 4, at most 64). Neither engine
   * uses libuv's thread pool, so scans never starve fs, dns or zlib work.
   */
  queueDepth?: number;
  /**
   * How commands reach the kernel (default `'threads'`):
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
  /** Duration reported by the kernel, in ms. */
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

/** One GET LBA STATUS command's request. */
export interface GetLbaStatusRequest {
  cdb: 16 | 32;
  lba: number;
  /** Allocation length in bytes (default 32 768; prefer 8 + 16·k). */
  allocationLength?: number;
  /** SCAN LENGTH in logical blocks (32-byte form only; 0 = no limit). */
  scanLength?: number;
  /** REPORT TYPE (0..255). */
  reportType?: number;
  /** ELEMENT IDENTIFIER (32-byte form only). */
  elementId?: number;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** One GET LBA STATUS reply, parsed into columns. */
export interface GetLbaStatusReply extends LbaStatusColumns {
  /** Bytes the device transferred. */
  transferred: number;
  allocationLength: number;
  durationMs: number;
}

const OPEN_OPTION_KEYS = [
  'queueDepth',
  'engine',
  'retry',
  'timeoutMs',
  'preferSg',
  'sysfsRoot',
  'devRoot',
];

/**
 * Opens a SCSI device for GET LBA STATUS and friends.
 *
 * Accepts `/dev/sgN`, `/dev/sdX` and symlinks to them. A block device is mapped to its sg node
 * when it has one (no CAP_SYS_RAWIO needed for 32-byte CDBs). The node is opened
 * `O_RDWR | O_NONBLOCK` (read-only for a write-protected block node) and probed with INQUIRY, so
 * what is not a SCSI device fails here with ENOTTY, and no descriptor is left open on failure.
 *
 * @example
 * ```ts
 * await using dev = await openDevice('/dev/sdc');
 * console.log(await dev.info());
 * ```
 */
export async function openDevice(path: string, options: OpenOptions = {}): Promise<ScsiDevice> {
  if (typeof path !== 'string' || path.length === 0) {
    throw new InvalidArgTypeError('path', 'a non-empty string', path);
  }
  validateOptionKeys(options, 'options', OPEN_OPTION_KEYS);
  const queueDepth = optionalInteger(options.queueDepth, 'options.queueDepth', 1, 64, 4);
  const timeoutMs = optionalInteger(
    options.timeoutMs,
    'options.timeoutMs',
    1,
    2 ** 31 - 1,
    DEFAULT_TIMEOUT_MS,
  );
  const engine = validateOneOf(options.engine ?? 'threads', 'options.engine', ENGINES);
  const resolved = await resolveDevice(path, options);
  const binding = getBinding();
  const handle = await openNode(resolved);
  let queue: NativeCommandQueue | undefined;
  try {
    queue = await createQueue(binding, handle, resolved.path, engine, queueDepth);
    const device = new ScsiDevice(resolved, handle, queue, binding, options.retry ?? {}, timeoutMs);
    await device.probe();
    return device;
  } catch (error) {
    queue?.close();
    await handle.close();
    throw error;
  }
}

const ENGINES = ['threads', 'sg-async'] as const;

async function createQueue(
  binding: NativeBinding,
  handle: FileHandle,
  path: string,
  engine: CommandEngine,
  depth: number,
): Promise<NativeCommandQueue> {
  if (engine === 'threads') return binding.createCommandQueue(depth);
  const stats = await handle.stat();
  if (!stats.isCharacterDevice() || splitDev(stats.rdev).major !== SG_MAJOR) {
    throw new InvalidArgValueError(
      'options.engine',
      `needs an sg node (/dev/sgN), and ${path} is not one; use 'threads'`,
      engine,
    );
  }
  return binding.createSgAsyncQueue(handle.fd, depth);
}

async function openNode(resolved: ResolvedDevice): Promise<FileHandle> {
  const flags = constants.O_RDWR | constants.O_NONBLOCK;
  try {
    return await open(resolved.path, flags);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // A write-protected disk refuses O_RDWR on its block node; SG_IO works on a read-only open.
    if (code === 'EROFS' && resolved.path === resolved.blockPath) {
      try {
        return await open(resolved.path, constants.O_RDONLY | constants.O_NONBLOCK);
      } catch (retryError) {
        throw DeviceSystemError.fromNode(retryError as NodeJS.ErrnoException, resolved.path);
      }
    }
    // The sg node may be missing or unwritable where the block node works (e.g. root without udev).
    if (
      resolved.path === resolved.sgPath &&
      resolved.blockPath &&
      (code === 'ENOENT' || code === 'EACCES')
    ) {
      debug('cannot open %s (%s), using %s', resolved.sgPath, code, resolved.blockPath);
      resolved.path = resolved.blockPath;
      return openNode(resolved);
    }
    throw DeviceSystemError.fromNode(error as NodeJS.ErrnoException, resolved.path);
  }
}

/** An open SCSI device. Close it with `close()` or `await using`. */
export class ScsiDevice {
  /** The node SG_IO goes through. */
  readonly path: string;
  /** The path the caller opened. */
  readonly requestedPath: string;
  readonly sgPath: string | undefined;
  readonly blockPath: string | undefined;
  readonly #handle: FileHandle;
  readonly #queue: NativeCommandQueue;
  readonly #binding: NativeBinding;
  readonly #retry: RetryPolicy;
  readonly #timeoutMs: number;
  readonly #inFlight = new Set<Promise<unknown>>();
  #closing: Promise<void> | undefined;
  #inquiry: StandardInquiry | undefined;
  #capacity: Capacity | undefined;
  /** The GET LBA STATUS form that works here, once known ('auto' fallback happens once). */
  glsForm: 16 | 32 | undefined;

  /** @internal use {@link openDevice} */
  constructor(
    resolved: ResolvedDevice,
    handle: FileHandle,
    queue: NativeCommandQueue,
    binding: NativeBinding,
    retry: RetryPolicy,
    timeoutMs: number,
  ) {
    this.path = resolved.path;
    this.requestedPath = resolved.requested;
    this.sgPath = resolved.sgPath;
    this.blockPath = resolved.blockPath;
    this.#handle = handle;
    this.#queue = queue;
    this.#binding = binding;
    this.#retry = retry;
    this.#timeoutMs = timeoutMs;
  }

  /** The native binding this device uses (the scanner builds CDBs and parses with it). */
  get binding(): NativeBinding {
    return this.#binding;
  }

  /** The most commands this device has in flight at once. */
  get queueDepth(): number {
    return this.#queue.depth;
  }

  /** How commands reach the kernel on this device (see {@link OpenOptions.engine}). */
  get engine(): CommandEngine {
    return this.#queue.engine;
  }

  get closed(): boolean {
    return this.#closing !== undefined;
  }

  /** @internal first command after open: proves SG_IO works on the node. */
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
    const pending = this.#queue.execute(
      this.#handle.fd,
      cdb,
      direction,
      data,
      sense,
      options.timeoutMs ?? this.#timeoutMs,
    );
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
   * Sends exactly one GET LBA STATUS command and returns its parsed reply, unvalidated: the
   * building block of scans, and a way to compare with `sg_get_lba_status` command by command.
   */
  async getLbaStatus(request: GetLbaStatusRequest): Promise<GetLbaStatusReply> {
    validateOptionKeys(request, 'request', [
      'cdb',
      'lba',
      'allocationLength',
      'scanLength',
      'reportType',
      'elementId',
      'signal',
      'timeoutMs',
    ]);
    const form = validateOneOf(request.cdb, 'request.cdb', [16, 32] as const);
    const lba = optionalInteger(request.lba, 'request.lba', 0, Number.MAX_SAFE_INTEGER, 0);
    const allocationLength = optionalInteger(
      request.allocationLength,
      'request.allocationLength',
      8,
      1 << 24,
      32768,
    );
    const scanLength = optionalInteger(request.scanLength, 'request.scanLength', 0, 0xffffffff, 0);
    const reportType = optionalInteger(request.reportType, 'request.reportType', 0, 255, 0);
    const elementId = optionalInteger(request.elementId, 'request.elementId', 0, 0xffffffff, 0);
    const signal = validateAbortSignal(request.signal, 'request.signal');
    return this.sendGetLbaStatus(
      form,
      lba,
      allocationLength,
      scanLength,
      reportType,
      elementId,
      signal,
      request.timeoutMs,
    );
  }

  /** @internal validated form of {@link getLbaStatus}. */
  async sendGetLbaStatus(
    form: 16 | 32,
    lba: number,
    allocationLength: number,
    scanLength: number,
    reportType: number,
    elementId: number,
    signal: AbortSignal | undefined,
    timeoutMs?: number,
    replyBuffer?: Uint8Array,
  ): Promise<GetLbaStatusReply> {
    const cdb =
      form === 32
        ? this.#binding.getLbaStatus32Cdb(
            BigInt(lba),
            scanLength,
            elementId,
            allocationLength,
            reportType,
          )
        : this.#binding.getLbaStatus16Cdb(BigInt(lba), allocationLength, reportType);
    const result = await this.execute(cdb, {
      command: `GET LBA STATUS(${form})`,
      ...(replyBuffer?.byteLength === allocationLength
        ? { dataIn: replyBuffer }
        : { dataInLength: allocationLength }),
      signal,
      timeoutMs,
    });
    const columns = this.#binding.parseLbaStatus(result.data, result.transferred);
    return {
      ...columns,
      transferred: result.transferred,
      allocationLength,
      durationMs: result.durationMs,
    };
  }

  /**
   * Scans for LBA status and yields batches of descriptors as typed-array columns (no object per
   * extent): the fast path for large volumes.
   */
  batches(options?: ScanOptions): AsyncGenerator<LbaStatusBatch> {
    return scanBatches(this, options);
  }

  /** Scans for LBA status and yields one `{ lba, blocks, status, additional }` per extent. */
  extents(options?: ScanOptions): AsyncGenerator<LbaExtent> {
    return scanExtents(this, options);
  }

  /** Yields the changed (mapped) extents, aligned outward to the change block size and merged. */
  changedExtents(options?: ChangedExtentsOptions): AsyncGenerator<ChangedExtent> {
    return changedExtents(this, options);
  }

  /** Yields the changed data in volume order, several reads in flight, bounded memory. */
  readChanged(options?: ReadChangedOptions): AsyncGenerator<ChangedChunk> {
    return readChanged(this, options);
  }

  /**
   * Waits for commands in flight, stops the command queue and closes the node. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.allSettled([...this.#inFlight]);
      this.#queue.close();
      await this.#handle.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
