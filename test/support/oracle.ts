/**
 * Independent oracles for every simulator test (host and guest): what a delta volume must
 * report, computed from the test's own list of changed byte ranges with a naive model that is
 * obviously right — one entry per change block, set when any byte of it changed — and the
 * simulator's documented block-data rule written a second time, from its documentation
 * (`lba-status sim serve --help`, lib/sim/block-data.ts's header), with BigInt arithmetic.
 * Nothing here imports lib/: a bug in the simulator's widening, merging, report types or data
 * cannot cancel out against the same code in the expectation.
 */

/** A changed byte range, in the `--changed FILE` format. */
export interface ByteRange {
  offset: number;
  length: number;
  /** Default mapped (new data); deallocated = changed to zeros. */
  status?: 'mapped' | 'deallocated';
}

export interface Geometry {
  sizeBytes: number;
  blockSize: number;
  changeBlockSize: number;
}

/** An extent in logical blocks with an SBC provisioning status. */
export interface LbaExtent {
  lba: number;
  blocks: number;
  status: number;
}

const MAPPED = 3;
const DEALLOCATED = 1;

/**
 * The change-block bitmap: change block index → 3 (mapped) or 1 (deallocated), set for every
 * change block that holds at least one byte of a range; mapped wins over deallocated. Sparse (a
 * Map) so that 16 TiB volumes cost what their ranges cover, not their size.
 */
export function changeBlockBitmap(
  ranges: readonly ByteRange[],
  sizeBytes: number,
  changeBlockSize: number,
): Map<number, number> {
  const bits = new Map<number, number>();
  for (const r of ranges) {
    if (r.offset < 0 || r.length < 0 || r.offset + r.length > sizeBytes)
      throw new Error(`range outside the volume: ${JSON.stringify(r)}`);
    const status = r.status === 'deallocated' ? DEALLOCATED : MAPPED;
    for (
      let c = Math.floor(r.offset / changeBlockSize);
      c * changeBlockSize < r.offset + r.length;
      c++
    ) {
      if (bits.size > 20_000_000) throw new Error('oracle: too many change blocks for a test');
      if (bits.get(c) !== MAPPED) bits.set(c, status);
    }
  }
  return bits;
}

/** Runs of consecutive set change blocks with one status: [firstIndex, endIndex, status]. */
function bitmapRuns(bits: Map<number, number>): Array<[number, number, number]> {
  const keys = [...bits.keys()].sort((a, b) => a - b);
  const out: Array<[number, number, number]> = [];
  for (const c of keys) {
    const st = bits.get(c)!;
    const last = out[out.length - 1];
    if (last && last[1] === c && last[2] === st) last[1] = c + 1;
    else out.push([c, c + 1, st]);
  }
  return out;
}

/**
 * What a delta at `g.changeBlockSize` serves under report type 1: the changed change blocks as
 * LBA extents (3 mapped, 1 deallocated), adjacent equal ones merged, clipped to the volume.
 */
export function expectedDelta(ranges: readonly ByteRange[], g: Geometry): LbaExtent[] {
  const perCb = g.changeBlockSize / g.blockSize;
  const capacity = g.sizeBytes / g.blockSize;
  return bitmapRuns(changeBlockBitmap(ranges, g.sizeBytes, g.changeBlockSize)).map(
    ([s, e, status]) => ({
      lba: s * perCb,
      blocks: Math.min(e * perCb, capacity) - s * perCb,
      status,
    }),
  );
}

/** The changed (mapped) LBAs of the delta as merged [start, end) runs. */
export function expectedChangedRuns(
  ranges: readonly ByteRange[],
  g: Geometry,
): Array<[number, number]> {
  return mappedRuns(expectedDelta(ranges, g));
}

/** The delta in bytes, in the --changed format (`sim serve --dump-changed-at C FILE`). */
export function expectedWidenedBytes(ranges: readonly ByteRange[], g: Geometry): ByteRange[] {
  return expectedDelta(ranges, g).map((e) => {
    const r: ByteRange = { offset: e.lba * g.blockSize, length: e.blocks * g.blockSize };
    if (e.status === DEALLOCATED) r.status = 'deallocated';
    return r;
  });
}

/** Mapped (status 3, or 0 from report type 0) extents merged into [start, end) LBA runs. */
export function mappedRuns(extents: readonly LbaExtent[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const e of extents) {
    if (e.status !== MAPPED && e.status !== 0) continue;
    const last = out[out.length - 1];
    if (last && last[1] === e.lba) last[1] = e.lba + e.blocks;
    else out.push([e.lba, e.lba + e.blocks]);
  }
  return out;
}

/** Extents with adjacent equal statuses merged (to compare replies split at window edges). */
export function mergeExtents(extents: readonly LbaExtent[]): LbaExtent[] {
  const out: LbaExtent[] = [];
  for (const e of extents) {
    const last = out[out.length - 1];
    if (last && last.lba + last.blocks === e.lba && last.status === e.status)
      last.blocks += e.blocks;
    else out.push({ lba: e.lba, blocks: e.blocks, status: e.status });
  }
  return out;
}

/**
 * Per-LBA provisioning state of [start, end) (small volumes: one entry per LBA): 3 mapped, 1
 * deallocated (changed to zeros), 0 unchanged.
 */
export function lbaStates(
  ranges: readonly ByteRange[],
  g: Geometry,
  start = 0,
  end = g.sizeBytes / g.blockSize,
): Uint8Array {
  const states = new Uint8Array(end - start);
  const bits = changeBlockBitmap(ranges, g.sizeBytes, g.changeBlockSize);
  for (let lba = start; lba < end; lba++)
    states[lba - start] = bits.get(Math.floor((lba * g.blockSize) / g.changeBlockSize)) ?? 0;
  return states;
}

/**
 * The descriptors a correct GET LBA STATUS reports for [start, end) under a report type, from
 * the per-LBA states, following the documented semantics (SBC-4 Table 53, OCI's page): 0 lists
 * every LBA (mapped → 0, all else → 1); 1 the changed LBAs (3 and 1, unchanged omitted); 2 the
 * mapped LBAs (3); 3 every LBA type 0 calls deallocated (1); 4 nothing. Runs of equal status
 * are one descriptor.
 */
export function expectedReport(
  ranges: readonly ByteRange[],
  g: Geometry,
  reportType: number,
  start = 0,
  end = g.sizeBytes / g.blockSize,
): LbaExtent[] {
  const states = lbaStates(ranges, g, start, end);
  const statusOf = (state: number): number | undefined => {
    switch (reportType) {
      case 0:
        return state === MAPPED ? 0 : DEALLOCATED;
      case 1:
        return state === 0 ? undefined : state;
      case 2:
        return state === MAPPED ? MAPPED : undefined;
      case 3:
        return state === MAPPED ? undefined : DEALLOCATED;
      default:
        return undefined;
    }
  };
  const out: LbaExtent[] = [];
  for (let i = 0; i < states.length; i++) {
    const st = statusOf(states[i]!);
    if (st === undefined) continue;
    const last = out[out.length - 1];
    if (last && last.lba + last.blocks === start + i && last.status === st) last.blocks++;
    else out.push({ lba: start + i, blocks: 1, status: st });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The documented block-data rule, written again with BigInt arithmetic.

const M32 = 0xffffffffn;

/**
 * The bytes the simulator returns for a mapped block, from its documentation: bytes 0-7 the LBA
 * (u64 big-endian), bytes 8-15 the seed (u64 big-endian), then big-endian u32 words of an
 * xorshift32 stream (x ^= x << 13, x ^= x >> 17, x ^= x << 5, each word written after its
 * step) that starts from a 32-bit hash of (LBA, seed):
 * h = seedLo ^ 0x9e3779b9; h = (h ^ lbaLo) · 0x85ebca6b; h = (h ^ (h >> 13) ^ lbaHi) ·
 * 0xc2b2ae35; h = (h ^ (h >> 16) ^ seedHi) · 0x27d4eb2d; h ^= h >> 15 (all mod 2^32, logical
 * shifts); a hash of 0 becomes 0x6d2b79f5.
 */
export function documentedBlockData(lba: number, blockSize: number, seed: number): Buffer {
  const out = Buffer.alloc(blockSize);
  const l = BigInt(lba);
  const sd = BigInt(seed);
  out.writeBigUInt64BE(l, 0);
  out.writeBigUInt64BE(sd, 8);
  const lbaLo = l & M32;
  const lbaHi = (l >> 32n) & M32;
  const seedLo = sd & M32;
  const seedHi = (sd >> 32n) & M32;
  let h = seedLo ^ 0x9e3779b9n;
  h = ((h ^ lbaLo) * 0x85ebca6bn) & M32;
  h = ((h ^ (h >> 13n) ^ lbaHi) * 0xc2b2ae35n) & M32;
  h = ((h ^ (h >> 16n) ^ seedHi) * 0x27d4eb2dn) & M32;
  h ^= h >> 15n;
  let x = h === 0n ? 0x6d2b79f5n : h;
  for (let o = 16; o < blockSize; o += 4) {
    x ^= (x << 13n) & M32;
    x ^= x >> 17n;
    x ^= (x << 5n) & M32;
    out.writeUInt32BE(Number(x), o);
  }
  return out;
}

/** What reading [lba, lba + blocks) of the delta returns: mapped blocks' data, zeros elsewhere. */
export function expectedRead(
  ranges: readonly ByteRange[],
  g: Geometry,
  seed: number,
  lba: number,
  blocks: number,
): Buffer {
  const states = lbaStates(ranges, g, lba, lba + blocks);
  const out = Buffer.alloc(blocks * g.blockSize);
  for (let i = 0; i < blocks; i++)
    if (states[i] === MAPPED)
      documentedBlockData(lba + i, g.blockSize, seed).copy(out, i * g.blockSize);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Random byte ranges drawn by the test itself.

/** A small seeded generator (mulberry32) for the tests' own random maps. */
export function testPrng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/**
 * `count` random byte ranges on a volume of `sizeBytes`: any byte offset, 1 byte to
 * `maxLength` bytes long, in no particular order; they may overlap, touch or share change
 * blocks (so widening and merging are exercised). A fraction `deallocated` is changed to zeros.
 */
export function randomRanges(
  seed: number,
  count: number,
  sizeBytes: number,
  maxLength: number,
  deallocated = 0,
): ByteRange[] {
  const next = testPrng(seed);
  const out: ByteRange[] = [];
  for (let i = 0; i < count; i++) {
    const length = 1 + Math.floor(next() * Math.min(maxLength, sizeBytes));
    const offset = Math.floor(next() * (sizeBytes - length + 1));
    const r: ByteRange = { offset, length };
    if (deallocated > 0 && next() < deallocated) r.status = 'deallocated';
    out.push(r);
  }
  return out;
}
