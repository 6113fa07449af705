/**
 * The changed-block map of a simulated delta volume: sorted, disjoint, change-block-aligned
 * extents in logical blocks — a set of changed byte ranges (the writes between two backups)
 * widened outward to whole change blocks and merged. Memory is proportional to the number of extents, not to the volume
 * size (typed arrays; lookups by binary search).
 */
import { createPrng } from './prng.js';

/** Provisioning status of a changed extent as the simulator reports it. */
export type ExtentState = 'mapped' | 'deallocated';

/** A changed range in bytes, as accepted from users (`--changed FILE`, `changed: [...]`). */
export interface ByteExtent {
  offset: number;
  length: number;
  /** Default 'mapped': changed data. 'deallocated': changed to zeros (discarded). */
  status?: ExtentState;
}

/** A changed range in logical blocks. `status` is the SBC provisioning status (3 or 1). */
export interface BlockExtent {
  lba: number;
  blocks: number;
  status: 3 | 1;
}

export interface VolumeGeometry {
  /** Volume size in bytes; a multiple of blockSize. */
  sizeBytes: number;
  /** Logical block size: 512 or 4096. */
  blockSize: number;
  /** Change-tracking granularity in bytes: a power of two, ≥ blockSize (OCI: 4 KiB – 1 MiB). */
  changeBlockSize: number;
}

/**
 * A reproducible random set of changed byte ranges: the writes between two backups, drawn once
 * in bytes, independent of any change block size (a delta at change block size C is this set
 * widened to C).
 */
export interface RandomChangesOptions {
  /** Number of changed byte ranges (exactly this many, disjoint and separated). */
  count: number;
  seed: number;
  /**
   * Longest range in logical blocks (default: 64 KiB worth, 128 blocks of 512 bytes or 16 of
   * 4096). Ranges are whole logical blocks, like the writes of a block device.
   */
  maxExtentBlocks?: number;
  /**
   * @deprecated The longest range in units of 4 KiB (the default change block size of earlier
   * versions, when the map was drawn in change blocks). Use `maxExtentBlocks`.
   */
  maxExtentChangeBlocks?: number;
  /** Fraction of ranges changed to zeros (deallocated) instead of data (default 0). */
  deallocatedRatio?: number;
}

/** @deprecated The same as {@link RandomChangesOptions}. */
export type RandomMapOptions = RandomChangesOptions;

/**
 * The largest gap the random draw keeps between consecutive ranges: twice OCI's largest change
 * block size (1 MiB), so that, when the volume has room, a delta at any change block size up to
 * 1 MiB has exactly `count` extents (two ranges closer than one change block merge when widened).
 */
export const RANDOM_MAX_GAP_BYTES = 2 * 1024 * 1024;

/**
 * Draws `count` changed byte ranges on a volume of `sizeBytes` with `blockSize`-byte blocks:
 * whole logical blocks at random offsets, each 1..maxExtentBlocks blocks long, sorted, disjoint,
 * and separated by at least min(2 MiB, about sizeBytes / count) unchanged bytes. Depends on the
 * size, block size, count, seed and options only — never on a change block size.
 */
export function randomByteExtents(
  sizeBytes: number,
  blockSize: number,
  opts: RandomChangesOptions,
): ByteExtent[] {
  if (blockSize !== 512 && blockSize !== 4096) {
    throw new RangeError(`blockSize must be 512 or 4096, got ${blockSize}`);
  }
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % blockSize !== 0) {
    throw new RangeError(
      `sizeBytes must be a positive multiple of the block size, got ${sizeBytes}`,
    );
  }
  const { count, seed } = opts;
  const cap = sizeBytes / blockSize;
  const most = cap < 2 ? cap : Math.floor((cap + 2) / 3);
  if (!Number.isSafeInteger(count) || count < 0 || count > most) {
    throw new RangeError(
      `random: count must be 0..${most} for ${cap} logical blocks, got ${count}`,
    );
  }
  if (!Number.isSafeInteger(seed)) throw new RangeError(`random: seed must be an integer`);
  const maxRun =
    opts.maxExtentBlocks ??
    (opts.maxExtentChangeBlocks !== undefined
      ? Math.max(1, (opts.maxExtentChangeBlocks * 4096) / blockSize)
      : 65536 / blockSize);
  if (!Number.isSafeInteger(maxRun) || maxRun < 1) {
    throw new RangeError(`random: the longest range must be ≥ 1 logical block, got ${maxRun}`);
  }
  const ratio = opts.deallocatedRatio ?? 0;
  if (!(ratio >= 0 && ratio <= 1)) throw new RangeError('deallocatedRatio must be in [0, 1]');
  if (count === 0) return [];
  // Starts are v[i] + i·step with v sorted, distinct, in [0, pool): consecutive starts are at
  // least step + 1 blocks apart, which leaves every range ≥ 1 block and a gap ≥ step − 1 blocks.
  const maxGap = RANDOM_MAX_GAP_BYTES / blockSize;
  const step =
    count === 1 ? maxGap + 1 : Math.min(maxGap + 1, Math.floor((cap - count) / (count - 1)));
  const gap = step - 1;
  const pool = cap - (count - 1) * step;
  const rnd = createPrng(seed);
  // Floyd's algorithm: `count` distinct values in [0, pool).
  const chosen = new Set<number>();
  for (let j = pool - count; j < pool; j++) {
    const t = rnd.int(j + 1);
    chosen.add(chosen.has(t) ? j : t);
  }
  const v = Float64Array.from(chosen).sort();
  const out: ByteExtent[] = [];
  for (let i = 0; i < count; i++) {
    const start = v[i]! + i * step;
    const next = i + 1 < count ? v[i + 1]! + (i + 1) * step : cap + gap;
    const room = Math.min(maxRun, next - gap - start);
    const len = 1 + rnd.int(room);
    const e: ByteExtent = { offset: start * blockSize, length: len * blockSize };
    if (ratio > 0 && rnd.float() < ratio) e.status = 'deallocated';
    out.push(e);
  }
  return out;
}

export const STATUS_MAPPED = 3;
export const STATUS_DEALLOCATED = 1;

function checkGeometry(g: VolumeGeometry): void {
  const { sizeBytes, blockSize, changeBlockSize } = g;
  if (blockSize !== 512 && blockSize !== 4096) {
    throw new RangeError(`blockSize must be 512 or 4096, got ${blockSize}`);
  }
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % blockSize !== 0) {
    throw new RangeError(
      `sizeBytes must be a positive multiple of the block size, got ${sizeBytes}`,
    );
  }
  if (
    !Number.isSafeInteger(changeBlockSize) ||
    changeBlockSize < blockSize ||
    (changeBlockSize & (changeBlockSize - 1)) !== 0 ||
    changeBlockSize > 1 << 30
  ) {
    throw new RangeError(
      `changeBlockSize must be a power of two ≥ the block size (${blockSize}), got ${changeBlockSize}`,
    );
  }
}

/** An immutable changed map. */
export class ChangedMap {
  readonly blockSize: number;
  readonly changeBlockSize: number;
  readonly sizeBytes: number;
  /** Number of logical blocks in the volume. */
  readonly capacityBlocks: number;
  /** Start LBA of each extent, ascending. */
  readonly starts: Float64Array;
  /** End LBA (exclusive) of each extent. */
  readonly ends: Float64Array;
  /** Provisioning status of each extent (3 mapped, 1 deallocated). */
  readonly statuses: Uint8Array;

  private constructor(
    g: VolumeGeometry,
    starts: Float64Array,
    ends: Float64Array,
    statuses: Uint8Array,
  ) {
    this.blockSize = g.blockSize;
    this.changeBlockSize = g.changeBlockSize;
    this.sizeBytes = g.sizeBytes;
    this.capacityBlocks = g.sizeBytes / g.blockSize;
    this.starts = starts;
    this.ends = ends;
    this.statuses = statuses;
  }

  get count(): number {
    return this.starts.length;
  }

  /**
   * Builds the map from byte ranges: each range is widened to whole change blocks and clipped to
   * the volume; overlapping or adjacent ranges of the same status merge; where a mapped and a
   * deallocated range share a change block, mapped wins.
   */
  static fromByteExtents(g: VolumeGeometry, extents: readonly ByteExtent[]): ChangedMap {
    checkGeometry(g);
    const cbs = g.changeBlockSize;
    const mapped: Array<[number, number]> = [];
    const dealloc: Array<[number, number]> = [];
    extents.forEach((e, i) => {
      if (
        !Number.isSafeInteger(e.offset) ||
        !Number.isSafeInteger(e.length) ||
        e.offset < 0 ||
        e.length < 0
      ) {
        throw new RangeError(`changed[${i}]: offset and length must be non-negative integers`);
      }
      if (e.offset + e.length > g.sizeBytes) {
        throw new RangeError(
          `changed[${i}]: range ${e.offset}+${e.length} ends beyond the volume size ${g.sizeBytes}`,
        );
      }
      if (e.status !== undefined && e.status !== 'mapped' && e.status !== 'deallocated') {
        throw new RangeError(`changed[${i}]: status must be "mapped" or "deallocated"`);
      }
      if (e.length === 0) return;
      const s = Math.floor(e.offset / cbs) * cbs;
      const end = Math.min(Math.ceil((e.offset + e.length) / cbs) * cbs, g.sizeBytes);
      (e.status === 'deallocated' ? dealloc : mapped).push([s / g.blockSize, end / g.blockSize]);
    });
    const m = union(mapped);
    const d = subtract(union(dealloc), m);
    const all: Array<[number, number, number]> = [
      ...m.map(([a, b]) => [a, b, STATUS_MAPPED] as [number, number, number]),
      ...d.map(([a, b]) => [a, b, STATUS_DEALLOCATED] as [number, number, number]),
    ].sort((x, y) => x[0] - y[0]);
    const n = all.length;
    const starts = new Float64Array(n);
    const ends = new Float64Array(n);
    const statuses = new Uint8Array(n);
    all.forEach(([a, b, st], i) => {
      starts[i] = a;
      ends[i] = b;
      statuses[i] = st;
    });
    return new ChangedMap(g, starts, ends, statuses);
  }

  /**
   * The map of a reproducible random set of changed bytes ({@link randomByteExtents}, drawn
   * independently of the change block size) widened to this geometry's change block size.
   */
  static random(g: VolumeGeometry, opts: RandomChangesOptions): ChangedMap {
    checkGeometry(g);
    return ChangedMap.fromByteExtents(g, randomByteExtents(g.sizeBytes, g.blockSize, opts));
  }

  /** Index of the first extent whose end is > lba (count when none). */
  firstEndingAfter(lba: number): number {
    let lo = 0;
    let hi = this.starts.length;
    const ends = this.ends;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ends[mid]! <= lba) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Provisioning status of one LBA: 3 mapped, 1 deallocated, 0 unchanged. */
  statusAt(lba: number): 0 | 1 | 3 {
    const i = this.firstEndingAfter(lba);
    if (i < this.count && this.starts[i]! <= lba) return this.statuses[i] as 1 | 3;
    return 0;
  }

  /** The extents in blocks (one object each: for tests and small maps). */
  extents(): BlockExtent[] {
    const out: BlockExtent[] = [];
    for (let i = 0; i < this.count; i++) {
      out.push({
        lba: this.starts[i]!,
        blocks: this.ends[i]! - this.starts[i]!,
        status: this.statuses[i] as 3 | 1,
      });
    }
    return out;
  }

  /** The extents in bytes, in the `--changed FILE` format (status only when deallocated). */
  byteExtents(): ByteExtent[] {
    const bs = this.blockSize;
    const out: ByteExtent[] = [];
    for (let i = 0; i < this.count; i++) {
      const e: ByteExtent = {
        offset: this.starts[i]! * bs,
        length: (this.ends[i]! - this.starts[i]!) * bs,
      };
      if (this.statuses[i] === STATUS_DEALLOCATED) e.status = 'deallocated';
      out.push(e);
    }
    return out;
  }

  /** Total changed blocks (mapped + deallocated). */
  changedBlocks(): number {
    let n = 0;
    for (let i = 0; i < this.count; i++) n += this.ends[i]! - this.starts[i]!;
    return n;
  }
}

function union(list: Array<[number, number]>): Array<[number, number]> {
  list.sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const [a, b] of list) {
    const last = out[out.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

/** a minus b; both sorted and disjoint. */
function subtract(a: Array<[number, number]>, b: Array<[number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let j = 0;
  for (const [s0, e] of a) {
    let s = s0;
    while (j < b.length && b[j]![1] <= s) j++;
    let k = j;
    while (s < e) {
      const cut = b[k];
      if (!cut || cut[0] >= e) {
        out.push([s, e]);
        break;
      }
      if (cut[0] > s) out.push([s, cut[0]]);
      s = Math.max(s, cut[1]);
      k++;
    }
  }
  return out;
}
