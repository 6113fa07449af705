/**
 * The changed-block map of a simulated delta volume: sorted, disjoint, change-block-aligned
 * extents in logical blocks. Memory is proportional to the number of extents, not to the volume
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

export interface RandomMapOptions {
  /** Number of extents to create (exactly this many, separated by unchanged gaps). */
  count: number;
  seed: number;
  /** Longest extent in change blocks (default 16). */
  maxExtentChangeBlocks?: number;
  /** Fraction of extents reported deallocated instead of mapped (default 0). */
  deallocatedRatio?: number;
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
   * A reproducible random map of exactly `count` extents, each 1..maxExtentChangeBlocks change
   * blocks long and separated from the next by at least one unchanged change block.
   */
  static random(g: VolumeGeometry, opts: RandomMapOptions): ChangedMap {
    checkGeometry(g);
    const { count, seed } = opts;
    const maxRun = opts.maxExtentChangeBlocks ?? 16;
    const ratio = opts.deallocatedRatio ?? 0;
    const cbTotal = Math.ceil(g.sizeBytes / g.changeBlockSize);
    if (!Number.isSafeInteger(count) || count < 0 || count > Math.floor(cbTotal / 2)) {
      throw new RangeError(
        `random: count must be 0..${Math.floor(cbTotal / 2)} for ${cbTotal} change blocks, got ${count}`,
      );
    }
    if (!Number.isInteger(maxRun) || maxRun < 1) throw new RangeError('maxExtentChangeBlocks ≥ 1');
    if (!(ratio >= 0 && ratio <= 1)) throw new RangeError('deallocatedRatio must be in [0, 1]');
    const rnd = createPrng(seed);
    // Floyd's algorithm: `count` distinct values in [0, cbTotal - count).
    const pool = cbTotal - count;
    const chosen = new Set<number>();
    for (let j = pool - count; j < pool; j++) {
      const t = rnd.int(j + 1);
      chosen.add(chosen.has(t) ? j : t);
    }
    const v = Float64Array.from(chosen).sort();
    const cbBlocks = g.changeBlockSize / g.blockSize;
    const cap = g.sizeBytes / g.blockSize;
    const starts = new Float64Array(count);
    const ends = new Float64Array(count);
    const statuses = new Uint8Array(count);
    for (let i = 0; i < count; i++) {
      const startCb = v[i]! + i; // gaps of ≥ 1 change block between consecutive starts
      const nextCb = i + 1 < count ? v[i + 1]! + i + 1 : cbTotal + 1;
      const room = Math.min(maxRun, nextCb - startCb - 1);
      const len = 1 + rnd.int(room);
      starts[i] = startCb * cbBlocks;
      ends[i] = Math.min((startCb + len) * cbBlocks, cap);
      statuses[i] = ratio > 0 && rnd.float() < ratio ? STATUS_DEALLOCATED : STATUS_MAPPED;
    }
    return new ChangedMap(g, starts, ends, statuses);
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
