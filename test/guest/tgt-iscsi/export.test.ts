// Changed data on a real kernel over iSCSI: export after a random set of writes, apply to the
// base image, compare with the second image (tgt's backing file); verify; bounded memory; bad
// output paths and a full disk.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  applyExport,
  exportChanged,
  openDevice,
  sha256File,
  VerifyMismatchError,
  verifyDevice,
  verifyExport,
} from '../../../lib/index.js';
import {
  type BlockRange,
  run,
  scenario,
  testUnitReady,
  unmap,
  writePattern,
} from '../support/index.js';

const s = scenario();
let work: string;
let base: string;
let expected: string;

/** A seeded set of 4 KiB-aligned ranges in the second half of the LUN (the first half belongs to other files). */
function randomRanges(seed: number, count: number): BlockRange[] {
  let state = seed;
  const next = (): number => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state;
  };
  const unit = 4096 / s.blockSize;
  const first = Math.floor(s.capacityBlocks / 2 / unit);
  const units = Math.floor(s.capacityBlocks / unit) - first - 64;
  const ranges: BlockRange[] = [];
  for (let i = 0; i < count; i++) {
    ranges.push({ lba: (first + (next() % units)) * unit, blocks: (1 + (next() % 16)) * unit });
  }
  return ranges;
}

beforeAll(async () => {
  await testUnitReady(s.sg);
  work = await mkdtemp(join(tmpdir(), 'lba-export-'));
  base = join(work, 'base.img');
  expected = join(work, 'expected.img');
  await writeFile(base, '');
  await truncate(base, s.capacityBlocks * s.blockSize); // the first backup: an empty volume
  await unmap(s.sg, 0, s.capacityBlocks);
  await writePattern(s.block, s.blockSize, randomRanges(7, 40));
  await copyFile(s.backing!, expected); // the second backup: what the LUN holds now
});
afterAll(async () => {
  await unmap(s.sg, 0, s.capacityBlocks).catch(() => {});
});

describe(`changed data over iSCSI (${s.name})`, () => {
  it('export + apply to the base image = the second image, byte for byte', async () => {
    await using device = await openDevice(s.block);
    const dir = join(work, 'export');
    const manifest = await exportChanged(device, dir, { changeBlockSize: 4096, concurrency: 4 });
    expect(manifest.complete).toBe(true);
    expect(manifest.extents.length).toBeGreaterThan(10);
    const verified = await verifyExport(base, dir, expected);
    expect(verified.sha256).toBe(await sha256File(expected));
    const restored = join(work, 'restored.img');
    await copyFile(base, restored);
    await applyExport(dir, restored);
    expect(await sha256File(restored)).toBe(await sha256File(expected));
    expect((await verifyDevice(device, dir)).extents).toBe(manifest.extents.length);
  });

  it('reads the same through O_DIRECT on the block node and SG_IO READ(16) on the sg node', async () => {
    await using device = await openDevice(s.sg);
    const direct = await exportChanged(device, join(work, 'direct'), {
      method: 'direct',
      formats: ['raw'],
    });
    const sg = await exportChanged(device, join(work, 'sg'), {
      method: 'sg',
      formats: ['rbd-diff'],
      chunkSize: 65536,
    });
    const digest = (m: typeof direct) =>
      createHash('sha256')
        .update(JSON.stringify(m.extents.map((e) => [e.offset, e.length])))
        .digest('hex');
    expect(direct.changedBytes).toBe(sg.changedBytes);
    expect(digest(direct)).not.toBe(''); // chunking differs (64 KiB vs 1 MiB); the bytes do not:
    const raw = await readFile(join(work, 'direct', 'delta.img'));
    const diff = await readFile(join(work, 'sg', 'delta.rbd-diff'));
    let at = 21;
    while (diff[at] === 0x77) {
      const offset = Number(diff.readBigUInt64LE(at + 1));
      const length = Number(diff.readBigUInt64LE(at + 9));
      expect(
        diff.subarray(at + 17, at + 17 + length).equals(raw.subarray(offset, offset + length)),
      ).toBe(true);
      at += 17 + length;
    }
    expect(diff[at]).toBe(0x65);
  });

  it('verify fails at the first differing offset after one flipped byte', async () => {
    const tampered = join(work, 'tampered.img');
    await copyFile(expected, tampered);
    const image = await readFile(tampered);
    const at = randomRanges(7, 40)[5]!.lba * s.blockSize + 123;
    image[at]! ^= 0x5a;
    await writeFile(tampered, image);
    const error = await verifyExport(base, join(work, 'export'), tampered).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VerifyMismatchError);
    expect((error as VerifyMismatchError).offset).toBe(at);
    const cli = await promisify(execFile)(process.execPath, [
      join(process.cwd(), 'dist/cli.js'),
      'verify',
      '--delta',
      join(work, 'export'),
      '--base',
      base,
      '--expect',
      tampered,
    ]).catch((e: { code: number; stdout: string }) => e);
    expect(cli).toMatchObject({ code: 7 });
    expect(JSON.parse((cli as { stdout: string }).stdout)).toEqual({ ok: false, offset: at });
  });

  it('keeps memory bounded while exporting a delta far larger than its buffers', async () => {
    // 24 MiB changed; 2 reads of 64 KiB in flight. Measured in a child with --expose-gc so that
    // only live memory counts (garbage waiting for collection is not held by the reader).
    const dd = await run('dd', [
      'if=/dev/urandom',
      `of=${s.block}`,
      'bs=1M',
      'count=24',
      `seek=${(s.capacityBlocks * s.blockSize) / 4 / (1 << 20)}`,
      'oflag=direct',
      'status=none',
    ]);
    expect(dd.exitCode).toBe(0);
    const script = `
      const { openDevice, exportChanged } = await import(${JSON.stringify(join(process.cwd(), 'dist/index.js'))});
      const live = () => { globalThis.gc(); const m = process.memoryUsage(); return m.arrayBuffers + m.external; };
      const device = await openDevice(${JSON.stringify(s.sg)});
      const baseline = live();
      let high = 0, chunks = 0;
      const manifest = await exportChanged(device, ${JSON.stringify(join(work, 'big'))}, {
        formats: ['rbd-diff'], concurrency: 2, chunkSize: 65536,
        onProgress: () => { if (++chunks % 16 === 0) high = Math.max(high, live() - baseline); },
      });
      await device.close();
      console.log(JSON.stringify({ high, changedBytes: manifest.changedBytes, chunks }));`;
    const { stdout } = await promisify(execFile)(process.execPath, [
      '--expose-gc',
      '--input-type=module',
      '-e',
      script,
    ]);
    const result = JSON.parse(stdout) as { high: number; changedBytes: number; chunks: number };
    expect(result.changedBytes).toBeGreaterThanOrEqual(24 << 20);
    expect(result.high).toBeLessThan(2 << 20); // the buffers in flight, not the delta
  });

  it('fails with a typed error on an unwritable output and on a full disk, never a complete manifest', async () => {
    await using device = await openDevice(s.sg);
    await expect(
      exportChanged(device, '/proc/lba-status-export', { formats: ['raw'] }),
    ).rejects.toMatchObject({ code: expect.stringMatching(/^E(NOENT|ACCES|ROFS|PERM)$/) });
    const small = join(work, 'small');
    await mkdir(small);
    expect((await run('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'small', small])).exitCode).toBe(
      0,
    );
    try {
      const error = await exportChanged(device, join(small, 'x'), { formats: ['rbd-diff'] }).catch(
        (e: unknown) => e,
      );
      expect(error).toMatchObject({ code: 'ENOSPC' });
      const manifest = JSON.parse(await readFile(join(small, 'x', 'manifest.json'), 'utf8'));
      expect(manifest.complete).toBe(false);
    } finally {
      await run('umount', [small]);
    }
  });
});
