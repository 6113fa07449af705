/**
 * Changed extents: what a backup must copy. On an OCI delta volume, "mapped" (3) LBAs are the
 * blocks that changed between the two backups and "deallocated" (1) the rest.
 */
import type { ScsiDevice } from '../device/device.js';
import { OutOfRangeError } from '../validate.js';
import { type LbaStatusBatch, planScan, type ScanOptions, scanBatches } from './scanner.js';

/**
 * Whether a provisioning status counts as changed. Only "deallocated" (1) counts as unchanged:
 * "mapped" (3), "mapped or unknown" (0, what a device that ignored the report type says, RTP=0),
 * "anchored" (2) and "unknown" (4) are copied — when in doubt, copy.
 */
export function isChangedStatus(status: number): boolean {
  return status !== 1;
}

/** A changed range, aligned to the change block size, in blocks and in bytes. */
export interface ChangedExtent {
  lba: number;
  blocks: number;
  /** Byte offset on the volume (lba × block size). */
  offset: number;
  /** Length in bytes (blocks × block size). */
  length: number;
}

/** Options of {@link changedExtents}. */
export interface ChangedExtentsOptions extends ScanOptions {
  /**
   * The delta volume's `changeBlockSizeInBytes` (power of two, at least the logical block size):
   * extents are widened outward to multiples of it and merged. Default: the logical block size.
   */
  changeBlockSize?: number;
}

/**
 * Aligns and coalesces the changed extents of a stream of batches. Pure; exported for reuse by
 * readers and tests.
 */
export async function* coalesceChanged(
  batches: AsyncIterable<LbaStatusBatch>,
  blockSize: number,
  changeBlocks: number,
  capacity: number,
): AsyncGenerator<ChangedExtent> {
  let pendingStart = -1;
  let pendingEnd = -1;
  const emit = (): ChangedExtent => ({
    lba: pendingStart,
    blocks: pendingEnd - pendingStart,
    offset: pendingStart * blockSize,
    length: (pendingEnd - pendingStart) * blockSize,
  });
  for await (const batch of batches) {
    for (let i = 0; i < batch.count; i++) {
      if (!isChangedStatus(batch.status[i]!)) continue;
      const first = batch.lba[i]!;
      const start = Math.floor(first / changeBlocks) * changeBlocks;
      const end = Math.min(
        capacity,
        Math.ceil((first + batch.blocks[i]!) / changeBlocks) * changeBlocks,
      );
      if (pendingEnd >= start) {
        pendingEnd = Math.max(pendingEnd, end);
        continue;
      }
      if (pendingEnd >= 0) yield emit();
      pendingStart = start;
      pendingEnd = end;
    }
  }
  if (pendingEnd >= 0) yield emit();
}

/**
 * Scans the device (report type 'nonzero' unless told otherwise) and yields the changed extents,
 * widened to the change block size and merged.
 *
 * @example
 * ```ts
 * for await (const e of changedExtents(dev, { changeBlockSize: 1 << 20 })) {
 *   console.log(e.offset, e.length);
 * }
 * ```
 */
export async function* changedExtents(
  device: ScsiDevice,
  options: ChangedExtentsOptions = {},
): AsyncGenerator<ChangedExtent> {
  const { changeBlockSize, ...scanOptions } = options;
  const { blockSize, blocks: capacity } = await device.capacity({ signal: options.signal });
  // Validate everything (including unknown keys) before the first command.
  await planScan(device, options, ['changeBlockSize']);
  const size = changeBlockSize ?? blockSize;
  if (
    typeof size !== 'number' ||
    !Number.isSafeInteger(size) ||
    size < blockSize ||
    size > 2 ** 30 ||
    (size & (size - 1)) !== 0
  ) {
    throw new OutOfRangeError(
      'options.changeBlockSize',
      `a power of two from the logical block size (${blockSize}) to 1 GiB`,
      changeBlockSize,
    );
  }
  yield* coalesceChanged(scanBatches(device, scanOptions), blockSize, size / blockSize, capacity);
}
