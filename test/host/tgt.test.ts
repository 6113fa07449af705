// tgt on the host, through the userspace initiator: the test starts its own tgtd (root; its own
// control port and TCP port on 127.0.0.1) with a sparse 64 MiB backing file in which it wrote
// the scanner tests' pattern (test/shared/patterns.ts — the same definition the guest's
// tgt-iscsi test checks through the kernel initiator) and punched one written range out again.
// tgt answers only GET LBA STATUS(16), from SEEK_DATA/SEEK_HOLE on that file, so `scan --cdb
// auto` must fall back to 16 and report exactly the pattern — what the kernel path reports in
// the guest (test/guest/tgt-iscsi/scanner.test.ts). The client runs unprivileged; tgtd is
// stopped and its files removed even when a test fails.
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  rmSync,
  statfsSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mergedRanges, type PatternRange, patternRanges, TGT_LUN } from '../shared/patterns.js';
import {
  changedLbasOf,
  cliReason,
  describeIf,
  parseNdjson,
  qemuImgReason,
  runCli,
  runCommand,
  skipUnless,
  startTgt,
  type Tgt,
  tgtReason,
} from './support.js';

const { sizeBytes, blockSize } = TGT_LUN;
const capacity = sizeBytes / blockSize;
const ranges = patternRanges(capacity);
/** Written, then deallocated again (a hole punched in the backing file, as UNMAP does in tgt). */
const DISCARDED: PatternRange = { lba: 4096, blocks: 64 };

/** Non-zero content that differs per block: the LBA in every 8 bytes, XOR a byte counter. */
function blockData(lba: number): Buffer {
  const b = Buffer.alloc(blockSize);
  for (let off = 0; off < blockSize; off += 8) b.writeBigUInt64LE(BigInt(lba), off);
  for (let i = 0; i < blockSize; i++) b[i] = (b[i] ?? 0) ^ ((i * 7 + 1) & 0xff);
  return b;
}

/** A directory for the backing file on a filesystem with 4 KiB SEEK_HOLE (tmpfs preferred, as in the guest). */
function backingDir(): string {
  const TMPFS = 0x01021994;
  try {
    const s = statfsSync('/dev/shm');
    if (s.type === TMPFS && s.bavail * s.bsize > 256 * 2 ** 20)
      return mkdtempSync('/dev/shm/lba-host-tgt-');
  } catch {}
  return mkdtempSync(join(tmpdir(), 'lba-host-tgt-'));
}

describeIf(
  'tgt on the host over iscsi:// (GET LBA STATUS(16), userspace initiator)',
  cliReason() ?? tgtReason(),
  () => {
    let dir: string;
    let tgt: Tgt | undefined;
    beforeAll(async () => {
      dir = backingDir();
      const backing = join(dir, 'lun1.img');
      const fd = openSync(backing, 'w');
      try {
        for (const r of [...ranges, DISCARDED]) {
          for (let i = 0; i < r.blocks; i++)
            writeSync(fd, blockData(r.lba + i), 0, blockSize, (r.lba + i) * blockSize);
        }
      } finally {
        closeSync(fd);
      }
      execFileSync('truncate', ['-s', String(sizeBytes), backing]);
      execFileSync('fallocate', [
        '--punch-hole',
        '--offset',
        String(DISCARDED.lba * blockSize),
        '--length',
        String(DISCARDED.blocks * blockSize),
        backing,
      ]);
      tgt = await startTgt(backing, `iqn.2024-01.dev.lba-status:host-tgt-${process.pid}`);
    });
    afterAll(async () => {
      await tgt?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
      if (tgt) expect(existsSync(`/var/run/tgtd/socket.${tgt.controlPort}`)).toBe(false);
    });

    for (const allocationLength of [24, 40, 8 + 16 * 5, 32768]) {
      it(`--cdb auto falls back to 16 and reports exactly the written pattern (allocation length ${allocationLength})`, async () => {
        const r = await runCli([
          'scan',
          tgt!.url,
          '--cdb',
          'auto',
          '--allocation-length',
          String(allocationLength),
          '--format',
          'ndjson',
        ]);
        expect(r.code, r.stderr).toBe(0);
        expect(changedLbasOf(parseNdjson(r.stdout), capacity)).toEqual(mergedRanges(ranges));
      });
    }

    it('--report-type all: every LBA once, mapped (3) exactly on the pattern', async () => {
      const r = await runCli(['scan', tgt!.url, '--cdb', '16', '--report-type', 'all']);
      expect(r.code, r.stderr).toBe(0);
      const extents = parseNdjson(r.stdout);
      expect(extents.reduce((n, e) => n + e.blocks, 0)).toBe(capacity);
      // deallocated (1) off the pattern; mapped is 0 ("mapped or unknown") or 3, as tgt reports it
      const statuses = new Set(extents.map((e) => e.status));
      expect(statuses.has(1)).toBe(true);
      for (const st of statuses) expect([0, 1, 3]).toContain(st);
      expect(changedLbasOf(extents, capacity)).toEqual(mergedRanges(ranges));
    });

    it('qemu-img map (libiscsi, GET LBA STATUS(16)) sees the same pattern: the oracle is sound', async (ctx) => {
      skipUnless(ctx, qemuImgReason());
      const r = await runCommand('qemu-img', ['map', '--output=json', tgt!.url]);
      expect(r.code, r.stderr).toBe(0);
      const data = (JSON.parse(r.stdout) as Array<{ start: number; length: number; data: boolean }>)
        .filter((e) => e.data)
        .map((e) => [e.start / blockSize, (e.start + e.length) / blockSize]);
      expect(data).toEqual(mergedRanges(ranges));
    });

    it('--cdb 32: tgt refuses it (exit 4, one line)', async () => {
      const r = await runCli(['scan', tgt!.url, '--cdb', '32']);
      expect(r.code, r.stderr).toBe(4);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    });

    it('--changed-only --change-block-size 65536 widens the pattern to 64 KiB', async () => {
      const r = await runCli([
        'scan',
        tgt!.url,
        '--changed-only',
        '--change-block-size',
        '65536',
        '--format',
        'ndjson',
      ]);
      expect(r.code, r.stderr).toBe(0);
      const per = 65536 / blockSize;
      const widened = mergedRanges(
        ranges.map((x) => {
          const s = Math.floor(x.lba / per) * per;
          return { lba: s, blocks: Math.ceil((x.lba + x.blocks) / per) * per - s };
        }),
      );
      const got = r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { lba: number; blocks: number });
      expect(got.map((e) => [e.lba, e.lba + e.blocks])).toEqual(widened);
    });
  },
);
