/**
 * Reading the changed data: the extents from the scanner, split into transfers no larger than
 * the device allows, read with several transfers in flight and yielded in order. Memory is
 * bounded by `concurrency × chunk size`: a read is only started when the consumer asks for more.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { throwIfAborted } from '../abort.js';
import type { ScsiDevice } from '../device/device.js';
import { DeviceSystemError, LbaStatusError } from '../errors.js';
import { type ChangedExtent, type ChangedExtentsOptions, changedExtents } from '../scan/changed.js';
import { read16Cdb } from '../scsi/commands.js';
import {
  optionalInteger,
  validateAbortSignal,
  validateFunction,
  validateOneOf,
} from '../validate.js';

/** One piece of changed data. */
export interface ChangedChunk {
  /** Byte offset on the volume. */
  offset: number;
  length: number;
  lba: number;
  blocks: number;
  /** The bytes; the consumer owns them (never reused by the reader). */
  data: Uint8Array;
  /** Hex SHA-256 of `data`, with `checksum: 'sha256'`. */
  sha256?: string;
}

/** Progress of a read, after each chunk. */
export interface ReadProgress {
  bytesRead: number;
  totalBytes: number;
  chunks: number;
  elapsedMs: number;
  bytesPerSecond: number;
  etaMs: number | undefined;
}

/** Options of {@link readChanged}. */
export interface ReadChangedOptions
  extends Omit<ChangedExtentsOptions, 'concurrency' | 'onProgress'> {
  /** Reads in flight (default 4). */
  concurrency?: number;
  /** Windows scanned at once while finding the extents (default 1). */
  scanConcurrency?: number;
  /**
   * Largest transfer in bytes (default 1 MiB), aligned to the change block size; for SG_IO reads
   * also lowered to the device's maximum transfer length (VPD B0h, sysfs max_sectors_kb) — an
   * O_DIRECT read is split by the block layer instead.
   */
  chunkSize?: number;
  /**
   * 'direct': pread with O_DIRECT from the block node; 'sg': SG_IO READ(16) through the sg node;
   * 'auto' (default): direct when the device has a block node, else sg.
   */
  method?: 'auto' | 'direct' | 'sg';
  checksum?: 'sha256' | 'none';
  onProgress?: (progress: ReadProgress) => void;
  /**
   * Recycle data buffers (default false): a chunk's `data` is then valid only until you ask for
   * the next chunk — copy it if you keep it. Saves an allocation and its page faults per chunk.
   */
  reuseBuffers?: boolean;
  /** Called once with the extents before reading starts (e.g. to write a manifest). */
  onExtents?: (extents: readonly ChangedExtent[]) => void;
}

/** A read returned fewer bytes than asked: the device shrank or went away. */
export class ShortReadError extends LbaStatusError {
  override name = 'ShortReadError';
  readonly code = 'ERR_LBA_STATUS_SHORT_READ';
  constructor(
    readonly path: string,
    readonly offset: number,
    readonly expected: number,
    readonly received: number,
  ) {
    super(
      `Reading ${expected} bytes at offset ${offset} of '${path}' returned ${received}: the device shrank or was detached; the data read so far is incomplete`,
    );
  }
}

/** The largest transfer the device and its transport accept in one command, in bytes. */
async function maxTransferBytes(device: ScsiDevice, blockSize: number): Promise<number> {
  const limits: number[] = [];
  const info = await device.info().catch(() => undefined);
  if (info?.blockLimits?.maxTransferBlocks)
    limits.push(info.blockLimits.maxTransferBlocks * blockSize);
  const transportLimit = await device.transportMaxTransferBytes();
  if (transportLimit) limits.push(transportLimit);
  return Math.min(...limits, 2 ** 30);
}

/** Splits extents into transfers of at most `chunkBytes` (a multiple of `unit`). */
export function* splitExtents(
  extents: Iterable<ChangedExtent>,
  blockSize: number,
  chunkBytes: number,
): Generator<ChangedExtent> {
  for (const extent of extents) {
    for (let done = 0; done < extent.length; done += chunkBytes) {
      const length = Math.min(chunkBytes, extent.length - done);
      const offset = extent.offset + done;
      yield { offset, length, lba: offset / blockSize, blocks: length / blockSize };
    }
  }
}

/** Reads one piece into `target` (exactly `piece.length` bytes long) and returns it. */
type ChunkReader = (piece: ChangedExtent, target: Uint8Array) => Promise<Uint8Array>;

async function directReader(
  device: ScsiDevice,
): Promise<{ read: ChunkReader; close: () => Promise<void> }> {
  const path = device.blockPath!;
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_DIRECT);
  } catch (error) {
    throw DeviceSystemError.fromNode(error as NodeJS.ErrnoException, path);
  }
  return {
    async read(piece, target) {
      const buffer = Buffer.from(target.buffer, target.byteOffset, piece.length);
      let received = 0;
      try {
        while (received < piece.length) {
          const { bytesRead } = await handle.read(
            buffer,
            received,
            piece.length - received,
            piece.offset + received,
          );
          if (bytesRead === 0) break;
          received += bytesRead;
        }
      } catch (error) {
        throw DeviceSystemError.fromNode(error as NodeJS.ErrnoException, path);
      }
      if (received !== piece.length)
        throw new ShortReadError(path, piece.offset, piece.length, received);
      return target;
    },
    close: () => handle.close(),
  };
}

function sgReader(device: ScsiDevice, signal: AbortSignal | undefined): ChunkReader {
  return async (piece, target) => {
    const result = await device.execute(read16Cdb(piece.lba, piece.blocks), {
      command: 'READ(16)',
      dataIn: target,
      signal,
    });
    if (result.transferred !== piece.length) {
      throw new ShortReadError(device.path, piece.offset, piece.length, result.transferred);
    }
    return result.data;
  };
}

/**
 * Yields the changed data of the device in volume order: the changed extents (see
 * {@link changedExtents}), read in chunks with `concurrency` reads in flight.
 *
 * @example
 * ```ts
 * for await (const c of dev.readChanged({ changeBlockSize: 1 << 20, checksum: 'sha256' })) {
 *   await backup.put(c.offset, c.data, c.sha256);
 * }
 * ```
 */
export async function* readChanged(
  device: ScsiDevice,
  options: ReadChangedOptions = {},
): AsyncGenerator<ChangedChunk> {
  const {
    concurrency: rawConcurrency,
    scanConcurrency,
    chunkSize,
    method: rawMethod,
    checksum,
    onProgress,
    onExtents,
    reuseBuffers,
    ...scanOptions
  } = options;
  const concurrency = optionalInteger(rawConcurrency, 'options.concurrency', 1, 64, 4);
  const method = validateOneOf(rawMethod ?? 'auto', 'options.method', [
    'auto',
    'direct',
    'sg',
  ] as const);
  validateOneOf(checksum ?? 'none', 'options.checksum', ['sha256', 'none'] as const);
  const signal = validateAbortSignal(options.signal, 'options.signal');
  const progress = validateFunction<(p: ReadProgress) => void>(onProgress, 'options.onProgress');
  const { blockSize } = await device.capacity({ signal });
  const changeBlockSize = options.changeBlockSize ?? blockSize;
  const wanted = optionalInteger(
    chunkSize,
    'options.chunkSize',
    blockSize,
    2 ** 30,
    Math.max(1 << 20, changeBlockSize),
  );

  // The extents first: their total gives progress an ETA, and they are few (merged ranges).
  const extents: ChangedExtent[] = [];
  for await (const extent of changedExtents(device, {
    ...scanOptions,
    concurrency: scanConcurrency,
  }))
    extents.push(extent);
  onExtents?.(extents);
  const useDirect = method === 'direct' || (method === 'auto' && device.blockPath !== undefined);
  // SG_IO passes a transfer to the device as one command, so it must fit the device's and the
  // queue's limits; an O_DIRECT pread is split by the block layer itself, like dd's.
  const limit = useDirect ? wanted : Math.min(wanted, await maxTransferBytes(device, blockSize));
  const unit = changeBlockSize <= limit ? changeBlockSize : blockSize;
  const chunkBytes = Math.max(blockSize, Math.floor(limit / unit) * unit);
  const totalBytes = extents.reduce((sum, e) => sum + e.length, 0);

  const direct = useDirect ? await directReader(device) : undefined;
  const read = direct?.read ?? sgReader(device, signal);
  // O_DIRECT needs buffers aligned to the block size (and the page, for every kernel path).
  const alignment = Math.max(blockSize, 4096);
  const allocate = (length: number): Uint8Array =>
    useDirect ? device.allocate(length, alignment) : new Uint8Array(length);
  // With reuseBuffers, concurrency + 1 buffers of chunkBytes cycle: one per read in flight and
  // the one the consumer holds. New pages are costly (page faults), reused ones are not.
  const free: Uint8Array[] = [];
  let created = 0;
  const take = (length: number): Uint8Array | undefined => {
    if (!reuseBuffers) return allocate(length);
    let base = free.pop();
    if (!base && created <= concurrency) {
      base = allocate(chunkBytes);
      created++;
    }
    return base?.subarray(0, length);
  };
  const pieces = splitExtents(extents, blockSize, chunkBytes);
  const pending: Array<Promise<ChangedChunk>> = [];
  const started = performance.now();
  let bytesRead = 0;
  let chunks = 0;
  const launch = (): void => {
    while (pending.length < concurrency && !signal?.aborted) {
      if (reuseBuffers && free.length === 0 && created > concurrency) return;
      const next = pieces.next();
      if (next.done) return;
      const piece = next.value;
      const work = read(piece, take(piece.length)!).then((data): ChangedChunk => {
        const chunk: ChangedChunk = { ...piece, data };
        if (checksum === 'sha256') chunk.sha256 = createHash('sha256').update(data).digest('hex');
        return chunk;
      });
      work.catch(() => {}); // observed in order below
      pending.push(work);
    }
  };
  try {
    launch();
    while (pending.length > 0) {
      throwIfAborted(signal);
      const chunk = await pending.shift()!;
      bytesRead += chunk.length;
      chunks++;
      if (progress) {
        const elapsedMs = performance.now() - started;
        const rate = elapsedMs > 0 ? (bytesRead / elapsedMs) * 1000 : 0;
        progress({
          bytesRead,
          totalBytes,
          chunks,
          elapsedMs,
          bytesPerSecond: rate,
          etaMs: rate > 0 ? ((totalBytes - bytesRead) / rate) * 1000 : undefined,
        });
      }
      yield chunk;
      if (reuseBuffers) free.push(new Uint8Array(chunk.data.buffer)); // the consumer is done with it
      launch();
    }
    throwIfAborted(signal);
  } finally {
    await Promise.allSettled(pending);
    await direct?.close();
  }
}
