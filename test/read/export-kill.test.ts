// Resume after SIGKILL, through the built CLI as child processes: `lba-status sim serve` serves a
// volume (reads slowed by a latency fault so that an export takes seconds), `lba-status export
// iscsi://… --dir D` is killed with SIGKILL three times at random moments — each after the
// journal grew by a random number of records, plus a random delay — and rerun: it finishes, and
// manifest.json, delta.img and delta.rbd-diff are byte-identical (SHA-256) to an uninterrupted
// export of the same target into another directory. A resume against another target or another
// change block size is refused with exit 2 and ERR_LBA_STATUS_EXPORT_MISMATCH's message, and
// leaves the directory resumable. The data is checked against the test's own byte ranges through
// the shared oracle.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ByteRange, expectedChangedRuns, expectedRead, testPrng } from '../support/oracle.js';
import { describeIf } from '../support/require.js';

const CLI = resolve('dist/cli.js');
const SIZE = 64 << 20;
const CHANGE = 65536;
const SEED = 3;
const RANGES: ByteRange[] = [
  { offset: 0, length: 512 },
  { offset: 1 << 20, length: 6 << 20 },
  { offset: (13 << 20) + 7, length: 300_000 },
  { offset: 24 << 20, length: 5 << 20 },
  { offset: 40 << 20, length: 3 << 20 },
  { offset: SIZE - 4096, length: 4096 },
];
const FILES = ['manifest.json', 'delta.img', 'delta.rbd-diff'];
const ENV = { ...process.env, SOURCE_DATE_EPOCH: '1764460800' };
/** Reads of 128 KiB, one at a time, each delayed by the target: about 8 s per export (a journal record per second). */
const READ_ARGS = [
  '--change-block-size',
  String(CHANGE),
  '--chunk-size',
  '128K',
  '--concurrency',
  '1',
];

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
const hashes = (dir: string) => Object.fromEntries(FILES.map((f) => [f, sha256(join(dir, f))]));

interface Served {
  child: ChildProcess;
  url: string;
}

async function serve(work: string, name: string, ranges: ByteRange[]): Promise<Served> {
  const changed = join(work, `${name}.json`);
  writeFileSync(changed, JSON.stringify(ranges));
  const child = spawn(
    process.execPath,
    [
      CLI,
      'sim',
      'serve',
      '--size',
      String(SIZE),
      '--changed',
      changed,
      '--seed',
      String(SEED),
      '--change-block-size',
      String(CHANGE),
      '--port',
      '0',
      '--no-unit-attention',
      '--fault',
      'latency:on=read,p=1,ms=40',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  child.stderr!.on('data', (c: Buffer) => {
    log += c;
  });
  const ready = await new Promise<{ iscsi: { portal: string; iqn: string; lun: number } }>(
    (done, fail) => {
      let text = '';
      child.stdout!.on('data', (c: Buffer) => {
        text += c;
        const nl = text.indexOf('\n');
        if (nl >= 0) done(JSON.parse(text.slice(0, nl)));
      });
      child.once('exit', (code) => fail(new Error(`sim serve exited ${code}: ${log}`)));
    },
  );
  const url = `iscsi://${ready.iscsi.portal}/${ready.iscsi.iqn}/${ready.iscsi.lun}`;
  return { child, url };
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function exportRun(
  url: string,
  dir: string,
  extra: string[] = [],
  kill?: (child: ChildProcess) => void,
): Promise<Run> {
  const child = spawn(
    process.execPath,
    [CLI, 'export', url, '--dir', dir, ...READ_ARGS, ...extra],
    {
      env: ENV,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => {
    stdout += c;
  });
  child.stderr!.on('data', (c: Buffer) => {
    stderr += c;
  });
  kill?.(child);
  return new Promise((done) =>
    child.once('exit', (code, signal) => done({ code, signal, stdout, stderr })),
  );
}

const journalRecords = (dir: string): number => {
  try {
    return readFileSync(join(dir, 'journal.ndjson'), 'utf8').split('\n').filter(Boolean).length;
  } catch {
    return 0;
  }
};

const cliMissing = !existsSync(CLI);

describeIf(
  'export killed with SIGKILL and rerun (dist/cli.js)',
  cliMissing ? `${CLI} is missing: run npm run build:ts` : undefined,
  () => {
    let work = '';
    let served: Served;
    let other: Served;
    beforeAll(async () => {
      work = mkdtempSync(join(tmpdir(), 'lba-status-kill-'));
      served = await serve(work, 'changed', RANGES);
      other = await serve(work, 'other', RANGES.slice(0, -1));
    });
    afterAll(async () => {
      for (const s of [served, other]) {
        if (s && s.child.exitCode === null) {
          const exited = new Promise((done) => s.child.once('exit', done));
          s.child.kill('SIGTERM');
          await exited;
        }
      }
      rmSync(work, { recursive: true, force: true });
    });

    it('three kills at random moments, then the rerun ends byte-identical to an uninterrupted export', {
      timeout: 120_000,
    }, async () => {
      const reference = join(work, 'reference');
      const ref = await exportRun(served.url, reference);
      expect(ref.code, ref.stderr).toBe(0);
      // The reference itself holds exactly the oracle's data.
      const g = { sizeBytes: SIZE, blockSize: 512, changeBlockSize: CHANGE };
      const image = readFileSync(join(reference, 'delta.img'));
      for (const [start, end] of expectedChangedRuns(RANGES, g))
        expect(
          image
            .subarray(start * 512, end * 512)
            .equals(expectedRead(RANGES, g, SEED, start, end - start)),
        ).toBe(true);
      expect(JSON.parse(readFileSync(join(reference, 'manifest.json'), 'utf8')).createdAt).toBe(
        '2025-11-30T00:00:00.000Z',
      );

      const dir = join(work, 'killed');
      const random = testPrng(Number(process.env.LBA_STATUS_KILL_SEED ?? Date.now() % 1e9));
      const kills: Array<{ records: number; delayMs: number; journalAfter: number }> = [];
      for (let k = 0; k < 3; k++) {
        const start = journalRecords(dir);
        const grow = 1;
        const delayMs = Math.floor(random() * 400);
        const run = await exportRun(served.url, dir, [], (child) => {
          const timer = setInterval(() => {
            if (journalRecords(dir) >= start + grow) {
              clearInterval(timer);
              setTimeout(() => child.kill('SIGKILL'), delayMs);
            }
          }, 5);
          child.once('exit', () => clearInterval(timer));
        });
        expect(run.signal, `kill ${k + 1}: ${run.stderr}`).toBe('SIGKILL');
        kills.push({ records: grow, delayMs, journalAfter: journalRecords(dir) });
        const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
        expect(manifest.complete).toBe(false);
      }
      const last = await exportRun(served.url, dir);
      expect(last.code, `${last.stderr} after kills ${JSON.stringify(kills)}`).toBe(0);
      expect(JSON.parse(last.stdout)).toMatchObject({ complete: true });
      expect(hashes(dir)).toEqual(hashes(reference));
      expect(existsSync(join(dir, 'journal.ndjson'))).toBe(false);
      expect(statSync(join(dir, 'delta.img')).size).toBe(SIZE);
    });

    it('a resume against another target or change block size exits 2, and the directory stays resumable', {
      timeout: 60_000,
    }, async () => {
      const dir = join(work, 'mismatch');
      const killed = await exportRun(served.url, dir, [], (child) => {
        const timer = setInterval(() => {
          if (journalRecords(dir) >= 2) {
            clearInterval(timer);
            child.kill('SIGKILL');
          }
        }, 5);
        child.once('exit', () => clearInterval(timer));
      });
      expect(killed.signal).toBe('SIGKILL');
      const target = await exportRun(other.url, dir);
      expect(target.code, target.stderr).toBe(2);
      expect(target.stderr).toMatch(/another delta: its device\.path is/);
      const cbs = await exportRun(served.url, dir, ['--change-block-size', String(2 * CHANGE)]);
      expect(cbs.code, cbs.stderr).toBe(2);
      expect(cbs.stderr).toMatch(/its changeBlockSize is 65536, this run's is 131072/);
      const done = await exportRun(served.url, dir);
      expect(done.code, done.stderr).toBe(0);
      expect(hashes(dir)).toEqual(hashes(join(work, 'reference')));
      // --restart starts over (another change block size is then fine).
      const restarted = await exportRun(served.url, dir, [
        '--change-block-size',
        String(2 * CHANGE),
        '--restart',
      ]);
      expect(restarted.code, restarted.stderr).toBe(0);
      expect(JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')).changeBlockSize).toBe(
        2 * CHANGE,
      );
    });
  },
);
