/**
 * A small seeded PRNG (xoshiro128**, seeded through splitmix32) so that random maps and
 * probabilistic faults are reproducible from a seed on every platform.
 */

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export interface Prng {
  /** Next unsigned 32-bit integer. */
  u32(): number;
  /** A float in [0, 1) with 53 random bits. */
  float(): number;
  /** An integer in [0, n) for n ≤ 2^53. */
  int(n: number): number;
}

/** Creates a deterministic generator from any safe integer seed. */
export function createPrng(seed: number): Prng {
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 0x100000000) >>> 0;
  const sm = splitmix32(lo ^ Math.imul(hi, 0x27d4eb2d));
  let a = sm();
  let b = sm();
  let c = sm();
  let d = sm();
  if ((a | b | c | d) === 0) a = 1;
  const u32 = (): number => {
    const result = Math.imul(rotl(Math.imul(b, 5) >>> 0, 7), 9) >>> 0;
    const t = (b << 9) >>> 0;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return result;
  };
  const float = (): number => ((u32() >>> 5) * 67108864 + (u32() >>> 6)) / 9007199254740992;
  return { u32, float, int: (n: number) => Math.floor(float() * n) };
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
