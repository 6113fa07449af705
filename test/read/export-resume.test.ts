// Resumable exports, in process: an export interrupted after some chunks (abort, error, a torn
// journal line) and run again ends byte-identical — manifest, delta.img, delta.rbd-diff — to an
// uninterrupted export of the same target; a different target, change block size or backup pair
// is refused with ExportMismatchError; restart starts over. The data is checked against the
// test's own byte ranges through the shared oracle (test/support/oracle.ts).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ExportManifest,
  ExportMismatchError,
  exportChanged,
  openDevice,
  sha256File,
} from '../../lib/index.js';
import { type Simulator, startSimulator } from '../../lib/sim/simulator.js';
import { type ByteRange, expectedChangedRuns, expectedRead } from '../support/oracle.js';

const SIZE = 32 << 20;
const CHANGE = 65536;
const SEED = 11;
const RANGES: ByteRange[] = [
  { offset: 0, length: 4096 },
  { offset: 1 << 20, length: 3 << 20 }, // split into several chunks
  { offset: (9 << 20) + 1000, length: 70_000 }, // not aligned: widened to change blocks
  { offset: 20 << 20, length: 5 << 20 },
  { offset: SIZE - 512, length: 512 },
];
const CREATED = new Date('2026-11-30T12:00:00.000Z');
const FILES = ['manifest.json', 'delta.img', 'delta.rbd-diff'];

let root = '';
let sim: Simulator;
let other: Simulator;
const url = (s: Simulator) => `iscsi://${s.portal}/${s.iqn}/1`;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'lba-status-resume-'));
  sim = await startSimulator({
    sizeBytes: SIZE,
    changeBlockSize: CHANGE,
    changed: RANGES,
    dataSeed: SEED,
    unitAttentionOnLogin: false,
  });
  other = await startSimulator({
    sizeBytes: SIZE,
    changeBlockSize: CHANGE,
    changed: RANGES.slice(0, -1), // differs at the end: after any resume point
    dataSeed: SEED,
    unitAttentionOnLogin: false,
  });
});
afterAll(async () => {
  await sim?.close();
  await other?.close();
  rmSync(root, { recursive: true, force: true });
});

const options = { changeBlockSize: CHANGE, chunkSize: 256 << 10, createdAt: CREATED };

async function exportOnce(
  dir: string,
  extra: Parameters<typeof exportChanged>[2] = {},
  target = sim,
): Promise<ExportManifest> {
  await using device = await openDevice(url(target));
  return await exportChanged(device, dir, { ...options, ...extra });
}

async function hashes(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of FILES) out[f] = await sha256File(join(dir, f));
  return out;
}

/** Interrupts an export once `chunks` chunks were handed to it (an abort mid-read). */
async function interrupted(dir: string, chunks: number, extra = {}): Promise<void> {
  const controller = new AbortController();
  let seen = 0;
  await expect(
    exportOnce(dir, {
      ...extra,
      journalEveryBytes: 1,
      signal: controller.signal,
      onProgress: () => {
        if (++seen === chunks) controller.abort();
      },
    }),
  ).rejects.toMatchObject({ name: 'AbortError' });
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  expect(manifest.complete).toBe(false);
}

describe('resumable exports', () => {
  let reference: Record<string, string>;
  let referenceManifest: ExportManifest;

  it('an uninterrupted export holds exactly the oracle data', async () => {
    const dir = join(root, 'reference');
    referenceManifest = await exportOnce(dir);
    reference = await hashes(dir);
    const g = { sizeBytes: SIZE, blockSize: 512, changeBlockSize: CHANGE };
    const runs = expectedChangedRuns(RANGES, g);
    // Chunks merged back into runs are the oracle's changed runs.
    const merged: Array<[number, number]> = [];
    for (const e of referenceManifest.extents) {
      const last = merged[merged.length - 1];
      if (last && last[1] === e.offset / 512) last[1] = (e.offset + e.length) / 512;
      else merged.push([e.offset / 512, (e.offset + e.length) / 512]);
    }
    expect(merged).toEqual(runs);
    const image = readFileSync(join(dir, 'delta.img'));
    for (const [start, end] of runs)
      expect(
        image
          .subarray(start * 512, end * 512)
          .equals(expectedRead(RANGES, g, SEED, start, end - start)),
      ).toBe(true);
    expect(readFileSync(join(dir, 'delta.img')).length).toBe(SIZE);
    expect(referenceManifest.extents.length).toBeGreaterThan(10);
  });

  it.each([1, 5, 13])(
    'interrupted after %i chunk(s) and resumed: byte-identical to the uninterrupted export',
    async (chunks) => {
      const dir = join(root, `abort-${chunks}`);
      await interrupted(dir, chunks);
      let resumed: { chunks: number; bytes: number } | undefined;
      const manifest = await exportOnce(dir, { onResume: (r) => (resumed = r) });
      expect(resumed?.chunks).toBeGreaterThan(0);
      expect(manifest).toEqual(referenceManifest);
      expect(await hashes(dir)).toEqual(reference);
      expect(() => readFileSync(join(dir, 'journal.ndjson'))).toThrow(/ENOENT/);
    },
  );

  it('a torn last journal line and garbage after the synced data are ignored', async () => {
    const dir = join(root, 'torn');
    await interrupted(dir, 7);
    const journal = join(dir, 'journal.ndjson');
    writeFileSync(journal, `${readFileSync(journal, 'utf8')}{"type":"synced","chunks":[[1`);
    // Bytes written after the last journal record (not synced as far as the journal knows).
    const rbd = join(dir, 'delta.rbd-diff');
    writeFileSync(rbd, Buffer.concat([readFileSync(rbd), Buffer.alloc(1000, 0xee)]));
    await exportOnce(dir);
    expect(await hashes(dir)).toEqual(reference);
  });

  it('killed after the last chunk was journaled, before the manifest said complete', async () => {
    const dir = join(root, 'last');
    await exportOnce(dir);
    const {
      extents,
      changedBytes: _b,
      complete: _c,
      ...header
    } = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as ExportManifest;
    const merged: Array<[number, number]> = [];
    for (const e of extents) {
      const last = merged[merged.length - 1];
      if (last && last[0] + last[1] === e.offset) last[1] += e.length;
      else merged.push([e.offset, e.length]);
    }
    writeFileSync(
      join(dir, 'journal.ndjson'),
      [
        { type: 'start', version: 1, manifest: header },
        { type: 'extents', extents: merged },
        { type: 'synced', chunks: extents.map((e) => [e.offset, e.length, e.sha256]) },
      ]
        .map((r) => `${JSON.stringify(r)}\n`)
        .join(''),
    );
    writeFileSync(
      join(dir, 'manifest.json'),
      JSON.stringify({ ...header, complete: false, extents: [], changedBytes: 0 }),
    );
    // The rbd diff stream lost its end record.
    const rbd = join(dir, 'delta.rbd-diff');
    writeFileSync(rbd, readFileSync(rbd).subarray(0, -1));
    let resumed: { chunks: number } | undefined;
    expect(await exportOnce(dir, { onResume: (r) => (resumed = r) })).toEqual(referenceManifest);
    expect(resumed?.chunks).toBe(extents.length);
    expect(await hashes(dir)).toEqual(reference);
  });

  it('refuses another target, change block size or formats, naming the difference', async () => {
    const dir = join(root, 'mismatch');
    await interrupted(dir, 3);
    const refused = async (promise: Promise<unknown>, field: string) => {
      const error = await promise.catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ExportMismatchError);
      expect(error).toMatchObject({ code: 'ERR_LBA_STATUS_EXPORT_MISMATCH', field });
      expect((error as Error).message).toContain(field);
    };
    await refused(exportOnce(dir, {}, other), 'device.path');
    await refused(exportOnce(dir, { changeBlockSize: 2 * CHANGE }), 'changeBlockSize');
    await refused(exportOnce(dir, { formats: ['raw'] }), 'files');
    // Still resumable after the refusals.
    await exportOnce(dir);
    expect(await hashes(dir)).toEqual(reference);
    // Complete: another target is refused as well; the same target gets the export back.
    await refused(exportOnce(dir, {}, other), 'device.path');
    expect(await exportOnce(dir)).toEqual(referenceManifest);
  });

  it('with both backups named, compares the backups, not the device', async () => {
    const dir = join(root, 'backups');
    const source = {
      firstBackupId: 'ocid1.volumebackup.oc1..a',
      secondBackupId: 'ocid1.volumebackup.oc1..b',
    };
    await interrupted(dir, 4, { source });
    const error = await exportOnce(dir, {
      source: { ...source, secondBackupId: 'ocid1.volumebackup.oc1..c' },
    }).catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: 'ERR_LBA_STATUS_EXPORT_MISMATCH',
      field: 'source.secondBackupId',
    });
    // Another "delta volume" of the same pair whose changed data differs: caught by the extents.
    const differs = await exportOnce(dir, { source }, other).catch((e: unknown) => e);
    expect(differs).toMatchObject({ code: 'ERR_LBA_STATUS_EXPORT_MISMATCH', field: 'extents' });
    const manifest = await exportOnce(dir, { source });
    expect(manifest.complete).toBe(true);
    expect(manifest.extents).toEqual(referenceManifest.extents);
  });

  it('restart starts over', async () => {
    const dir = join(root, 'restart');
    await interrupted(dir, 3, {});
    await exportOnce(dir, { restart: true, changeBlockSize: 2 * CHANGE });
    const manifest = await exportOnce(dir, { restart: true });
    expect(manifest).toEqual(referenceManifest);
    expect(await hashes(dir)).toEqual(reference);
  });
});
