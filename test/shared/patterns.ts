// Plain data shared by the real-kernel guest tests and the host tests: no imports, no I/O, so
// a host test (userspace iSCSI) and a guest test (kernel initiator) can state their expectation
// from one definition (test/guest/scanner-support.ts re-exports it).

/** A range of logical blocks, [lba, lba + blocks). */
export interface PatternRange {
  lba: number;
  blocks: number;
}

/**
 * The written pattern of the scanner tests, for a volume of `capacity` blocks: ranges aligned to
 * 8 blocks (scsi_debug granules of 8; tgt's 4 KiB holes with 512-byte LBAs), the last one
 * ending at the capacity.
 */
export function patternRanges(capacity: number): PatternRange[] {
  const unit = 8;
  const candidates = [
    { lba: 0, blocks: 8 },
    { lba: 64, blocks: 16 },
    { lba: 96, blocks: 8 },
    { lba: 200, blocks: 40 },
    { lba: 1024, blocks: 8 },
    { lba: 2048, blocks: 256 },
    { lba: capacity - 16, blocks: 16 },
  ];
  return candidates.filter((r) => r.lba % unit === 0 && r.lba + r.blocks <= capacity);
}

/** Merges touching or overlapping ranges into sorted [start, end) pairs. */
export function mergedRanges(ranges: readonly PatternRange[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const r of [...ranges].sort((a, b) => a.lba - b.lba)) {
    const last = out[out.length - 1];
    if (last && last[1] >= r.lba) last[1] = Math.max(last[1], r.lba + r.blocks);
    else out.push([r.lba, r.lba + r.blocks]);
  }
  return out;
}

/** The tgt scenario's LUN: a 64 MiB sparse backing file, 512-byte blocks. */
export const TGT_LUN = { sizeBytes: 64 * 2 ** 20, blockSize: 512 } as const;
