/**
 * The GET LBA STATUS scanner: windows, completion conditions, 32 → 16 fallback, validation of
 * every reply, concurrency across windows, cancellation and progress.
 *
 * Continuation rules (scsi-get-lba-status.md §2.7, OCI's documentation):
 * - reply cut by the allocation length, or completion condition 1: continue right after the
 *   last whole descriptor;
 * - condition 2 (32-byte form): the window was scanned; continue after it;
 * - condition 3: end of the medium; only valid in the window that reaches the capacity;
 * - condition 0 (scsi_debug, tgt): after the last descriptor, or, with no descriptor, after the
 *   window (32) or done (16: no more matching LBAs).
 * A reply that breaks the rules is a {@link MalformedReplyError}: a changed block reported as
 * unchanged would be data loss, so nothing is skipped.
 */

import { throwIfAborted } from '../abort.js';
import type { ScsiDevice } from '../device/device.js';
import { MalformedReplyError, ScsiError } from '../errors.js';
import { SenseKey } from '../scsi/names.js';
import {
  InvalidArgValueError,
  optionalInteger,
  validateAbortSignal,
  validateFunction,
  validateOneOf,
  validateOptionKeys,
} from '../validate.js';
import {
  type GetLbaStatusReply,
  knownForm,
  rememberForm,
  sendGetLbaStatus,
} from './get-lba-status.js';

/** REPORT TYPE names (SBC-4 table 49). */
export const ReportType = {
  /** 00h: every LBA (provisioning status 0 = mapped or unknown, 1 deallocated, 2 anchored). */
  all: 0,
  /** 01h: LBAs with a non-zero provisioning status (OCI's recommendation). */
  nonzero: 1,
  /** 02h: mapped LBAs. */
  mapped: 2,
  /** 03h: deallocated LBAs. */
  deallocated: 3,
  /** 04h: anchored LBAs. */
  anchored: 4,
} as const;
export type ReportTypeName = keyof typeof ReportType;

/** PROVISIONING STATUS values (SBC-4 table 53). */
export const ProvisioningStatus = {
  mappedOrUnknown: 0,
  deallocated: 1,
  anchored: 2,
  mapped: 3,
  unknown: 4,
} as const;

/** Progress of a scan, reported after each batch. */
export interface ScanProgress {
  startLba: number;
  endLba: number;
  /** Every LBA below this one has been reported (the resume cursor). */
  scannedLba: number;
  /** 0..1 */
  fraction: number;
  commands: number;
  descriptors: number;
  elapsedMs: number;
  /** Logical blocks scanned per second so far. */
  blocksPerSecond: number;
  /** Estimated time left, in ms (undefined until something was scanned). */
  etaMs: number | undefined;
  /** The CDB form in use. */
  cdb: 16 | 32;
}

/** Options every scan takes. */
export interface ScanOptions {
  /** First LBA to report (default 0): pass a batch's `nextLba` to resume. */
  startLba?: number;
  /** Stop before this LBA (default: the capacity). */
  endLba?: number;
  /** REPORT TYPE: a name or 0..255 (default 'nonzero' = 1, as OCI recommends). */
  reportType?: ReportTypeName | number;
  /** CDB form: 32, 16, or 'auto' (default: 32, falling back to 16 once per device if refused). */
  cdb?: 'auto' | 16 | 32;
  /** SCAN LENGTH per window, in logical blocks (32-byte form). Default and maximum: 1 GiB worth. */
  windowBlocks?: number;
  /** Allocation length per command in bytes (default 32 768 = 2047 descriptors; prefer 8 + 16·k). */
  allocationLength?: number;
  /** Windows in flight (32-byte form; default 4; more than the device's queueDepth just queue). */
  concurrency?: number;
  signal?: AbortSignal;
  onProgress?: (progress: ScanProgress) => void;
  /** Per-command timeout in ms (default: the device's). */
  timeoutMs?: number;
}

/**
 * A batch of LBA status descriptors from one command, as columns (no object per descriptor).
 * Extents are validated, in ascending order, and clipped to the scanned range.
 */
export interface LbaStatusBatch {
  /** Number of descriptors (the typed arrays are exactly this long). */
  count: number;
  lba: Float64Array;
  blocks: Uint32Array;
  status: Uint8Array;
  additional: Uint8Array;
  /** LBA the command started at. */
  startLba: number;
  /** Every LBA below this has been reported: pass it as `startLba` to resume. */
  nextLba: number;
  /** COMPLETION CONDITION of the reply. */
  completionCondition: number;
  /**
   * RTP: false when the device ignored a non-zero REPORT TYPE and listed every LBA as for
   * report type 0 (statuses 0 = mapped or unknown, 1 = deallocated).
   */
  rtp: boolean;
  reportType: number;
  cdb: 16 | 32;
}

/** One extent, as the device reported it. */
export interface LbaExtent {
  lba: number;
  blocks: number;
  status: number;
  additional: number;
}

const SCAN_OPTION_KEYS = [
  'startLba',
  'endLba',
  'reportType',
  'cdb',
  'windowBlocks',
  'allocationLength',
  'concurrency',
  'signal',
  'onProgress',
  'timeoutMs',
] as const;

/** Validated, defaulted scan parameters. */
interface ScanPlan {
  startLba: number;
  endLba: number;
  capacity: number;
  reportType: number;
  cdb: 'auto' | 16 | 32;
  windowBlocks: number;
  allocationLength: number;
  concurrency: number;
  signal: AbortSignal | undefined;
  onProgress: ((progress: ScanProgress) => void) | undefined;
  timeoutMs: number | undefined;
}

/**
 * Windows in flight by default: 4 matches openDevice's default queueDepth and measured 3.4×
 * one-at-a-time on a volume with 2 ms per command (scripts/bench, figure 3).
 */
export const DEFAULT_SCAN_CONCURRENCY = 4;

/** 1 GiB of logical blocks: OCI's limit for SCAN LENGTH. */
export function maxWindowBlocks(blockSize: number): number {
  return Math.max(1, Math.floor(2 ** 30 / blockSize));
}

/** Validates scan options against the device geometry. */
export async function planScan(
  device: ScsiDevice,
  options: ScanOptions = {},
  extraKeys: readonly string[] = [],
): Promise<ScanPlan> {
  validateOptionKeys(options, 'options', [...SCAN_OPTION_KEYS, ...extraKeys]);
  const signal = validateAbortSignal(options.signal, 'options.signal');
  const onProgress = validateFunction<(p: ScanProgress) => void>(
    options.onProgress,
    'options.onProgress',
  );
  const reportType =
    typeof options.reportType === 'string'
      ? ReportType[
          validateOneOf(
            options.reportType,
            'options.reportType',
            Object.keys(ReportType) as ReportTypeName[],
          )
        ]
      : optionalInteger(options.reportType, 'options.reportType', 0, 255, ReportType.nonzero);
  const cdb = validateOneOf(options.cdb ?? 'auto', 'options.cdb', ['auto', 16, 32] as const);
  const allocationLength = optionalInteger(
    options.allocationLength,
    'options.allocationLength',
    24,
    1 << 20,
    32768,
  );
  const concurrency = optionalInteger(
    options.concurrency,
    'options.concurrency',
    1,
    64,
    DEFAULT_SCAN_CONCURRENCY,
  );
  const timeoutMs =
    options.timeoutMs === undefined
      ? undefined
      : optionalInteger(options.timeoutMs, 'options.timeoutMs', 1, 2 ** 31 - 1, 0);
  const { blockSize, blocks: capacity } = await device.capacity({ signal });
  const maxWindow = maxWindowBlocks(blockSize);
  const windowBlocks = optionalInteger(
    options.windowBlocks,
    'options.windowBlocks',
    1,
    maxWindow,
    maxWindow,
  );
  const startLba = optionalInteger(options.startLba, 'options.startLba', 0, capacity, 0);
  const endLba = optionalInteger(options.endLba, 'options.endLba', 0, capacity, capacity);
  if (endLba < startLba) {
    throw new InvalidArgValueError(
      'options.endLba',
      `must be >= options.startLba (${startLba})`,
      endLba,
    );
  }
  return {
    startLba,
    endLba,
    capacity,
    reportType,
    cdb,
    windowBlocks,
    allocationLength,
    concurrency,
    signal,
    onProgress,
    timeoutMs,
  };
}

/** ILLEGAL REQUEST 20h/00h or 24h/00h pointing at the opcode or service action: form unsupported. */
export function isUnsupportedForm(error: unknown, form: 16 | 32): boolean {
  if (!(error instanceof ScsiError) || error.senseKey !== SenseKey.ILLEGAL_REQUEST) return false;
  if (error.ascq !== 0 || (error.asc !== 0x20 && error.asc !== 0x24)) return false;
  const pointer = error.fieldPointer;
  if (!pointer) return true;
  const formBytes = form === 32 ? [0, 7, 8, 9] : [0, 1];
  return pointer.inCdb && formBytes.includes(pointer.byte);
}

class Scan {
  readonly #device: ScsiDevice;
  readonly #plan: ScanPlan;
  readonly #started = performance.now();
  #commands = 0;
  #descriptors = 0;
  /**
   * Reply buffers no window is using. A window holds one while it runs (each reply is parsed
   * into new columns at once), so a scan allocates `concurrency` of them, not one per window:
   * fresh memory costs page faults on every first touch, and a 32 TiB volume has 32 768 windows.
   */
  readonly #spareBuffers: Uint8Array[] = [];
  form: 16 | 32 | undefined;

  constructor(device: ScsiDevice, plan: ScanPlan) {
    this.#device = device;
    this.#plan = plan;
    this.form = plan.cdb === 'auto' ? knownForm(device) : plan.cdb;
  }

  get #context(): { command: string; path: string } {
    return { command: `GET LBA STATUS(${this.form ?? 32})`, path: this.#device.path };
  }

  /** The form is known: for this scan and for later scans of the device. */
  #settleForm(form: 16 | 32): void {
    this.form = form;
    rememberForm(this.#device, form);
  }

  /** One command; in 'auto' mode the first one decides the form for the device. */
  async #command(
    cursor: number,
    windowEnd: number,
    buffer: Uint8Array,
  ): Promise<GetLbaStatusReply> {
    const plan = this.#plan;
    throwIfAborted(plan.signal);
    const form = this.form ?? 32;
    this.#commands++;
    try {
      const reply = await sendGetLbaStatus(this.#device, {
        cdb: form,
        lba: cursor,
        allocationLength: plan.allocationLength,
        scanLength: form === 32 ? windowEnd - cursor : 0,
        reportType: plan.reportType,
        elementId: 0,
        signal: plan.signal,
        timeoutMs: plan.timeoutMs,
        replyBuffer: buffer,
      });
      if (this.form === undefined) this.#settleForm(form);
      return reply;
    } catch (error) {
      if (this.form === undefined && isUnsupportedForm(error, 32)) {
        this.#settleForm(16);
        return this.#command(cursor, windowEnd, buffer);
      }
      throw error;
    }
  }

  /**
   * Validates one reply in place (clipping to [cursor, windowEnd)) and returns the batch and the
   * next cursor.
   */
  #interpret(reply: GetLbaStatusReply, cursor: number, windowEnd: number): LbaStatusBatch {
    const form = this.form ?? 32;
    const fail = (problem: string): never => {
      throw new MalformedReplyError(this.#context, cursor, problem);
    };
    if (reply.validBytes < 8) {
      fail(
        `only ${reply.validBytes} byte(s) of parameter data arrived (a header needs 8; allocation length ${reply.allocationLength})`,
      );
    }
    if (reply.parameterDataLength < 4)
      fail(`PARAMETER DATA LENGTH ${reply.parameterDataLength} is below 4`);
    if (!reply.truncated && (reply.parameterDataLength - 4) % 16 !== 0) {
      fail(
        `PARAMETER DATA LENGTH ${reply.parameterDataLength} is not 4 + 16·k (a partial descriptor)`,
      );
    }
    if (reply.unsafeLbaIndex >= 0)
      fail(`descriptor ${reply.unsafeLbaIndex} addresses an LBA beyond 2^53`);
    const { capacity } = this.#plan;
    const { lba, blocks } = reply;
    let kept = 0;
    let previousEnd = cursor;
    for (let i = 0; i < reply.count; i++) {
      let start = lba[i]!;
      const count = blocks[i]!;
      let end = start + count;
      if (count === 0) fail(`descriptor ${i} (LBA ${start}) has 0 blocks`);
      if (end > capacity)
        fail(
          `descriptor ${i} (LBA ${start}, ${count} blocks) passes the capacity (${capacity} blocks)`,
        );
      if (start < previousEnd) {
        if (i > 0)
          fail(
            `descriptor ${i} (LBA ${start}) overlaps or goes back before the previous one (ending at ${previousEnd})`,
          );
        if (end <= cursor)
          fail(
            `descriptor 0 (LBA ${start}, ${count} blocks) ends before the requested LBA ${cursor}`,
          );
        start = cursor; // an extent that began before the request: report only what was asked
      }
      if (start >= windowEnd) break; // beyond the scanned range: the next window reports it
      if (end > windowEnd) end = windowEnd;
      lba[kept] = start;
      blocks[kept] = end - start;
      reply.status[kept] = reply.status[i]!;
      reply.additional[kept] = reply.additional[i]!;
      kept++;
      previousEnd = end;
      if (end === windowEnd) break;
    }
    const lastEnd = kept > 0 ? previousEnd : undefined;
    const condition = reply.completionCondition;
    let next: number;
    if (reply.truncated || condition === 1) {
      if (reply.count === 0) {
        fail(`the allocation length ${reply.allocationLength} did not hold one whole descriptor`);
      }
      next = lastEnd ?? windowEnd;
    } else if (condition === 2) {
      if (form === 16)
        fail('completion condition 2 (scan length) for a 16-byte CDB, which has no scan length');
      next = windowEnd;
    } else if (condition === 3) {
      if (windowEnd !== capacity) {
        fail(
          `completion condition 3 (end of medium) in a window that ends at LBA ${windowEnd}, before the capacity ${capacity}`,
        );
      }
      next = windowEnd;
    } else if (condition === 0) {
      next = lastEnd ?? windowEnd;
    } else {
      next = fail(`reserved completion condition ${condition}`);
    }
    if (next <= cursor) fail(`no progress (the next LBA would be ${next})`);
    this.#descriptors += kept;
    return {
      count: kept,
      lba: lba.subarray(0, kept),
      blocks: blocks.subarray(0, kept),
      status: reply.status.subarray(0, kept),
      additional: reply.additional.subarray(0, kept),
      startLba: cursor,
      nextLba: next,
      completionCondition: condition,
      rtp: reply.rtp === 1,
      reportType: this.#plan.reportType,
      cdb: form,
    };
  }

  /** Scans [start, end) to completion, command by command. */
  async *range(start: number, end: number): AsyncGenerator<LbaStatusBatch> {
    const buffer = this.#spareBuffers.pop() ?? new Uint8Array(this.#plan.allocationLength);
    try {
      for (let cursor = start; cursor < end; ) {
        const reply = await this.#command(cursor, end, buffer);
        const batch = this.#interpret(reply, cursor, end);
        cursor = batch.nextLba;
        yield batch;
      }
    } finally {
      this.#spareBuffers.push(buffer);
    }
  }

  async #collect(start: number, end: number): Promise<LbaStatusBatch[]> {
    const batches: LbaStatusBatch[] = [];
    for await (const batch of this.range(start, end)) batches.push(batch);
    return batches;
  }

  /** The whole scan: windows of the 32-byte form run `concurrency` at a time, yielded in order. */
  async *run(): AsyncGenerator<LbaStatusBatch> {
    const { startLba, endLba, windowBlocks, concurrency, signal } = this.#plan;
    let cursor = startLba;
    // Until the form is known (auto), scan the first window alone: it decides 32 or 16.
    if (this.form === undefined && cursor < endLba) {
      const first = Math.min(endLba, cursor + windowBlocks);
      for await (const batch of this.range(cursor, first)) {
        cursor = batch.nextLba;
        yield this.#report(batch);
        if (this.form === 16) break;
      }
      if (this.form === 16) cursor = Math.max(cursor, startLba);
    }
    if (this.form === 16) {
      // No scan length: the device decides how far each reply goes.
      for await (const batch of this.range(cursor, endLba)) yield this.#report(batch);
      return;
    }
    const pending: Promise<LbaStatusBatch[]>[] = [];
    let launched = cursor;
    const launch = (): void => {
      while (pending.length < concurrency && launched < endLba && !signal?.aborted) {
        const windowEnd = Math.min(endLba, launched + windowBlocks);
        const work = this.#collect(launched, windowEnd);
        work.catch(() => {}); // observed below, in order; avoid unhandled rejections meanwhile
        pending.push(work);
        launched = windowEnd;
      }
    };
    try {
      launch();
      while (pending.length > 0) {
        const batches = await pending[0]!;
        pending.shift();
        launch();
        for (const batch of batches) yield this.#report(batch);
      }
    } finally {
      // On error, abort or an early break: let commands in flight finish before returning.
      await Promise.allSettled(pending);
    }
  }

  #report(batch: LbaStatusBatch): LbaStatusBatch {
    const { onProgress, startLba, endLba } = this.#plan;
    if (onProgress) {
      const elapsedMs = performance.now() - this.#started;
      const done = batch.nextLba - startLba;
      const total = endLba - startLba;
      const rate = elapsedMs > 0 ? (done / elapsedMs) * 1000 : 0;
      onProgress({
        startLba,
        endLba,
        scannedLba: batch.nextLba,
        fraction: total === 0 ? 1 : done / total,
        commands: this.#commands,
        descriptors: this.#descriptors,
        elapsedMs,
        blocksPerSecond: rate,
        etaMs: rate > 0 ? ((total - done) / rate) * 1000 : undefined,
        cdb: batch.cdb,
      });
    }
    return batch;
  }
}

/** Scans the device and yields validated batches of descriptors. */
export async function* scanBatches(
  device: ScsiDevice,
  options: ScanOptions = {},
): AsyncGenerator<LbaStatusBatch> {
  const plan = await planScan(device, options);
  yield* new Scan(device, plan).run();
}

/** Scans the device and yields one object per extent. */
export async function* scanExtents(
  device: ScsiDevice,
  options: ScanOptions = {},
): AsyncGenerator<LbaExtent> {
  for await (const batch of scanBatches(device, options)) {
    for (let i = 0; i < batch.count; i++) {
      yield {
        lba: batch.lba[i]!,
        blocks: batch.blocks[i]!,
        status: batch.status[i]!,
        additional: batch.additional[i]!,
      };
    }
  }
}
