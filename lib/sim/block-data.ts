/**
 * The data a simulated delta volume returns for a changed (mapped) block: deterministic from
 * (LBA, seed), so a reader can verify every byte without the simulator. Unchanged and
 * deallocated blocks read as zeros.
 *
 * The rule (documented so that a reader can implement it independently; the tests do):
 * - bytes 0–7: the LBA, u64 big-endian; bytes 8–15: the seed, u64 big-endian (low 53 bits);
 * - then big-endian u32 words of an xorshift32 stream — per word x ^= x << 13, x ^= x >> 17,
 *   x ^= x << 5, then the word is x — starting from a 32-bit hash of (LBA, seed), all
 *   arithmetic mod 2^32 with logical shifts, lo/hi the low and high 32 bits:
 *   h = seedLo ^ 0x9e3779b9; h = (h ^ lbaLo) · 0x85ebca6b; h = (h ^ (h >> 13) ^ lbaHi) ·
 *   0xc2b2ae35; h = (h ^ (h >> 16) ^ seedHi) · 0x27d4eb2d; h ^= h >> 15; a hash of 0 becomes
 *   0x6d2b79f5.
 * A block is never all zeros.
 */

function mix(lba: number, seed: number): number {
  const lo = lba >>> 0;
  const hi = Math.floor(lba / 0x100000000) >>> 0;
  let h = (seed >>> 0) ^ 0x9e3779b9;
  h = Math.imul(h ^ lo, 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13) ^ hi, 0xc2b2ae35) >>> 0;
  h = Math.imul(h ^ (h >>> 16) ^ (Math.floor(seed / 0x100000000) >>> 0), 0x27d4eb2d) >>> 0;
  h ^= h >>> 15;
  return h === 0 ? 0x6d2b79f5 : h >>> 0;
}

/** Writes the block for `lba` into `out` at `offset` (blockSize bytes, a multiple of 16). */
export function fillBlockData(
  out: Buffer,
  offset: number,
  lba: number,
  blockSize: number,
  seed: number,
): void {
  out.writeUInt32BE(Math.floor(lba / 0x100000000) >>> 0, offset);
  out.writeUInt32BE(lba >>> 0, offset + 4);
  out.writeUInt32BE(Math.floor(seed / 0x100000000) >>> 0, offset + 8);
  out.writeUInt32BE(seed >>> 0, offset + 12);
  let x = mix(lba, seed);
  for (let i = offset + 16; i < offset + blockSize; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeUInt32BE(x >>> 0, i);
  }
}

/** The bytes of one changed block. */
export function blockData(lba: number, blockSize: number, seed: number): Buffer {
  const buf = Buffer.alloc(blockSize);
  fillBlockData(buf, 0, lba, blockSize, seed);
  return buf;
}
