/**
 * The one module that loads the native addon (`build/Release/lba_status.node` or a prebuild).
 *
 * Everything above this file talks to {@link NativeBinding}, never to the `.node` file, so unit
 * tests can inject a fake with {@link setBindingForTesting}. Loading is lazy: importing the
 * package never dlopens anything, so the simulator and provisioners work where the addon cannot
 * load (macOS, a missing build).
 *
 * @packageDocumentation
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LbaStatusError } from './errors.js';
import type { DataDirection } from './scsi/names.js';

export { DataDirection } from './scsi/names.js';

/**
 * The raw outcome of one `ioctl(fd, SG_IO, &sg_io_hdr)`, copied field by field. The native layer
 * never interprets it: classification (errno → system error, host/driver status → transport error,
 * CHECK CONDITION → sense) happens in `lib/device/execute.ts`.
 */
export interface RawSgResult {
  /** `errno` when the ioctl itself failed (returned -1), else 0; the other fields are then 0. */
  errno: number;
  /** SCSI status byte (`sg_io_hdr.status`): 0 GOOD, 2 CHECK CONDITION, 8 BUSY, 0x28 TASK SET FULL… */
  status: number;
  /** `sg_io_hdr.host_status` (DID_* codes). Non-zero is a transport error. */
  hostStatus: number;
  /** `sg_io_hdr.driver_status` (0 or 8 = DRIVER_SENSE are the only non-errors). */
  driverStatus: number;
  /** `sg_io_hdr.sb_len_wr`: bytes of sense data written into the sense buffer. */
  senseLength: number;
  /** `sg_io_hdr.resid`: data bytes requested but not transferred (0 if the LLD does not report it). */
  resid: number;
  /** `sg_io_hdr.duration` in milliseconds. */
  durationMs: number;
  /** `sg_io_hdr.info` (bit 0 = SG_INFO_CHECK). */
  info: number;
}

/**
 * How a queue hands commands to the kernel:
 * - `'sg-async'`: the sg driver's write()/read() interface, polled on the event loop — no thread,
 *   one wake-up of the JS thread per completion. `/dev/sgN` only. The kernel may sleep in the
 *   submitting write() (frozen request queue, no free tag), blocking the JS thread meanwhile.
 * - `'threads'`: dedicated native threads (not libuv's shared pool) each running the SG_IO ioctl;
 *   works on sg and block nodes.
 */
export type CommandEngine = 'sg-async' | 'threads';

/**
 * Runs SG_IO commands off the JS thread, up to `depth` at once, and delivers each completion on
 * the JS thread. Made by `createSgAsyncQueue` or `createCommandQueue`.
 */
export interface NativeCommandQueue {
  /** Most commands in flight at once. */
  readonly depth: number;
  /** How commands reach the kernel. */
  readonly engine: CommandEngine;
  /**
   * Queues one SG_IO v3 command on `fd`.
   *
   * The buffers are pinned until the promise settles; the caller must neither mutate nor transfer
   * them before that. The promise never rejects for errno or SCSI status (that is data, see
   * {@link RawSgResult}); it rejects only on misuse (wrong argument types, queue closed).
   *
   * @param fd - open file descriptor of a `/dev/sgN` or `/dev/sdX` node
   * @param cdb - 6..32 bytes
   * @param direction - see {@link DataDirection}
   * @param data - data-in or data-out buffer (`dxfer_len = data.byteLength`); null for `None`
   * @param sense - sense buffer (`mx_sb_len = min(sense.byteLength, 255)`), at least 64 bytes
   * @param timeoutMs - `sg_io_hdr.timeout`
   */
  execute(
    fd: number,
    cdb: Uint8Array,
    direction: DataDirection,
    data: Uint8Array | null,
    sense: Uint8Array,
    timeoutMs: number,
  ): Promise<RawSgResult>;
  /**
   * Stops the queue (joins the threads, or stops polling). Call only when no command is pending
   * (the TS device layer guarantees it); later `execute()` calls reject. Idempotent.
   */
  close(): void;
}

/**
 * GET LBA STATUS parameter data split into columns (no JS object per descriptor).
 *
 * The native parser only reports facts about the bytes; what is acceptable (overlap, order,
 * capacity, RTP) is decided in TS.
 */
export interface LbaStatusColumns {
  /** PARAMETER DATA LENGTH from bytes 0..3 (0 when fewer than 4 valid bytes). */
  parameterDataLength: number;
  /** Byte 7 bits 3:1 (0 when fewer than 8 valid bytes). */
  completionCondition: number;
  /** Byte 7 bit 0 (0 when fewer than 8 valid bytes). */
  rtp: number;
  /** `min(4 + parameterDataLength, allocationLength, receivedBytes)`; see design.md. */
  validBytes: number;
  /** `4 + parameterDataLength > min(allocationLength, receivedBytes)`: the reply was cut. */
  truncated: boolean;
  /** Number of whole 16-byte descriptors within `validBytes`. */
  count: number;
  /** Bytes after the last whole descriptor within `validBytes` (a partial descriptor). */
  trailingBytes: number;
  /** Index of the first descriptor whose LBA or LBA + blocks exceeds 2^53, or -1. */
  unsafeLbaIndex: number;
  /** Descriptor start LBAs (exact: every value < 2^53 unless `unsafeLbaIndex >= 0`). */
  lba: Float64Array;
  /** NUMBER OF LOGICAL BLOCKS. */
  blocks: Uint32Array;
  /** PROVISIONING STATUS (byte 12 bits 3:0). */
  status: Uint8Array;
  /** ADDITIONAL STATUS (byte 13). */
  additional: Uint8Array;
}

/** The addon's exports, typed. */
export interface NativeBinding {
  /** Starts `threads` (1..64) dedicated SG_IO threads. */
  createCommandQueue(threads: number): NativeCommandQueue;
  /**
   * A queue on the sg driver's asynchronous interface for the open `/dev/sgN` descriptor `fd`,
   * `depth` (1..64) commands in flight (sg itself takes 16 per open file; the rest wait natively).
   * Every `execute()` must pass this same `fd`. Throws (code from libuv, e.g. `EPERM`) when the
   * descriptor cannot be polled, as for a block node.
   */
  createSgAsyncQueue(fd: number, depth: number): NativeCommandQueue;
  /** GET LBA STATUS(16) CDB (16 bytes), as sg3_utils' `sg_ll_get_lba_status16`. */
  getLbaStatus16Cdb(lba: bigint, allocationLength: number, reportType: number): Uint8Array;
  /** GET LBA STATUS(32) CDB (32 bytes), as sg3_utils' `sg_ll_get_lba_status32`. */
  getLbaStatus32Cdb(
    lba: bigint,
    scanLength: number,
    elementId: number,
    allocationLength: number,
    reportType: number,
  ): Uint8Array;
  /**
   * Parses GET LBA STATUS parameter data. `data.byteLength` is the allocation length;
   * `receivedBytes` is `dxfer_len - resid` (the bytes the device really sent).
   */
  parseLbaStatus(data: Uint8Array, receivedBytes: number): LbaStatusColumns;
  /**
   * A zero-filled buffer whose address is a multiple of `alignment` (a power of two), for
   * O_DIRECT reads; freed when garbage-collected.
   */
  allocateAligned(length: number, alignment: number): ArrayBuffer;
}

/** Error thrown when the addon cannot be loaded; lists what was tried and how to fix it. */
export class BindingLoadError extends LbaStatusError {
  override name = 'BindingLoadError';
  readonly code = 'ERR_LBA_STATUS_BINDING';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

let binding: NativeBinding | undefined;

/** Package root: lib/ (sources under vitest) and dist/ (bundled) are both one level down. */
function packageRoot(): string {
  const here = typeof __dirname === 'string' ? __dirname : dirname(fileURLToPath(import.meta.url));
  return join(here, '..');
}

function loadNative(): NativeBinding {
  const root = packageRoot();
  const require = createRequire(join(root, 'package.json'));
  const override = process.env.LBA_STATUS_NATIVE_PATH;
  const tried: string[] = [];
  try {
    if (override) {
      tried.push(override);
      return require(override) as NativeBinding;
    }
    tried.push(`node-gyp-build(${root})`);
    const load = require('node-gyp-build') as (dir: string) => unknown;
    return load(root) as NativeBinding;
  } catch (cause) {
    const platform = `${process.platform}-${process.arch} (Node ${process.version})`;
    const hint =
      process.platform === 'linux'
        ? 'Run `npm rebuild lba-status` in your project: it loads the prebuilt binary for ' +
          'linux-x64 or linux-arm64 (glibc 2.34 or later), else compiles the addon (needs ' +
          'python3, make and g++). In a checkout of lba-status itself: `npm run build:native`.'
        : 'The SG_IO addon runs on Linux only; the simulator (lba-status/sim) works everywhere.';
    throw new BindingLoadError(
      `Could not load the lba-status native addon on ${platform}. Tried: ${tried.join(', ')}. ${hint}`,
      { cause },
    );
  }
}

/** Returns the native binding, loading it on first use. */
export function getBinding(): NativeBinding {
  binding ??= loadNative();
  return binding;
}

/**
 * Replaces the binding (unit tests and fakes); `undefined` restores lazy loading of the real one.
 * @internal
 */
export function setBindingForTesting(replacement: NativeBinding | undefined): void {
  binding = replacement;
}
