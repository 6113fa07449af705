/**
 * A test volume as plain data — a list of runs — and the expected results computed naively from
 * it (a per-LBA walk, a byte pattern). Nothing here comes from lib/: the device server only
 * serves the volume (see targets.ts), and what the tests expect never passes through the
 * simulator's or the library's own helpers.
 */
import type { DeviceProfile, GlsQuirks } from '../../lib/sim/device-server.js';

/**
 * A run of LBAs with one provisioning state. 'uninitialised' LBAs were never written: OCI omits
 * them under report type 1 (the gaps of its documented example); they read as zeros.
 */
export interface Run {
  lba: number;
  blocks: number;
  state: 'mapped' | 'deallocated' | 'uninitialised';
}

export interface TestVolume {
  blockSize: 512 | 4096;
  /** Capacity in logical blocks. */
  capacity: number;
  /** Sorted, non-overlapping runs; LBAs in no run are deallocated. */
  runs: Run[];
  /** Whose GET LBA STATUS to answer with (default 'oci'). */
  profile?: DeviceProfile;
  /** oci only: replies that start before the requested LBA, overrun the window, or RTP=0. */
  quirks?: GlsQuirks;
}

/** The OCI documented example (512 MiB): a gap, mapped 0x60+0x10, deallocated 0x70+8, a gap. */
export function ociExample(overrides: Partial<TestVolume> = {}): TestVolume {
  return {
    blockSize: 512,
    capacity: 0x100000,
    runs: [
      { lba: 0, blocks: 0x60, state: 'uninitialised' },
      { lba: 0x60, blocks: 0x10, state: 'mapped' },
      { lba: 0x70, blocks: 0x8, state: 'deallocated' },
      { lba: 0x78, blocks: 0x28, state: 'uninitialised' },
    ],
    ...overrides,
  };
}

/** `count` runs of `blocks` mapped blocks, one every `stride` LBAs from `first`. */
export function mappedEvery(count: number, stride: number, blocks: number, first = 0): Run[] {
  return Array.from({ length: count }, (_, i) => ({
    lba: first + stride * i,
    blocks,
    state: 'mapped' as const,
  }));
}

/** Whether `lba` is in a mapped run (a linear walk: obviously right, fast enough for tests). */
export function isMapped(volume: TestVolume, lba: number): boolean {
  return volume.runs.some((r) => r.state === 'mapped' && lba >= r.lba && lba < r.lba + r.blocks);
}

/**
 * The changed (mapped) LBAs in [start, end) as merged [start, end) ranges, by walking the runs
 * LBA by LBA (volumes with huge capacities walk the runs instead: see the loop bound).
 */
export function expectedChanged(
  volume: TestVolume,
  start = 0,
  end = volume.capacity,
): Array<[number, number]> {
  const lbas: number[] = [];
  for (const run of volume.runs) {
    if (run.state !== 'mapped') continue;
    for (let lba = run.lba; lba < run.lba + run.blocks; lba++) {
      if (lba >= start && lba < end) lbas.push(lba);
    }
  }
  lbas.sort((a, b) => a - b);
  const ranges: Array<[number, number]> = [];
  for (const lba of lbas) {
    const last = ranges.at(-1);
    if (last && last[1] === lba) last[1] = lba + 1;
    else ranges.push([lba, lba + 1]);
  }
  return ranges;
}

/** Byte `i` of mapped block `lba`: a pattern that differs per block and per byte, never all 0. */
export function patternByte(lba: number, i: number): number {
  return (lba * 31 + i * 7 + 1) & 0xff;
}

/** The volume's content of [lba, lba + blocks): mapped blocks hold the pattern, others zeros. */
export function expectedData(volume: TestVolume, lba: number, blocks: number): Uint8Array {
  const bs = volume.blockSize;
  const data = new Uint8Array(blocks * bs);
  for (let b = 0; b < blocks; b++) {
    if (!isMapped(volume, lba + b)) continue;
    for (let i = 0; i < bs; i++) data[b * bs + i] = patternByte(lba + b, i);
  }
  return data;
}
