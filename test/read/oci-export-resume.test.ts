// `lba-status oci delta --attach userspace --export DIR`, through dist/cli.js against `sim serve
// --oci-api` as a child (the fake tenancy's delta volumes are served with slowed reads): killed
// with SIGKILL mid-export and run again, the export resumes on a NEW delta volume of the same two
// backups and ends with the same data files and the same manifest (but for the first attempt's
// device) as an uninterrupted one; another change block size is refused with exit 2 before any
// volume is created. `oci sweep --older-than 0` then removes the killed run's volume, and the
// tenancy holds nothing.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ByteRange, expectedChangedRuns, expectedRead } from '../support/oracle.js';
import { describeIf } from '../support/require.js';

const CLI = resolve('dist/cli.js');
const SIZE = 64 << 20;
const CHANGE = 65536;
const SEED = 9;
const RANGES: ByteRange[] = [
  { offset: 512, length: 512 },
  { offset: 2 << 20, length: 5 << 20 },
  { offset: (20 << 20) + 3, length: 100_000 },
  { offset: 30 << 20, length: 4 << 20 },
];
const ENV = { ...process.env, SOURCE_DATE_EPOCH: '1764460800' };

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], kill?: (child: ChildProcess) => void): Promise<Run> {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: ENV,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
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

const journalHasSynced = (dir: string): boolean => {
  try {
    return readFileSync(join(dir, 'journal.ndjson'), 'utf8').includes('"synced"');
  } catch {
    return false;
  }
};

describeIf(
  'oci delta --export resumes after SIGKILL (dist/cli.js)',
  existsSync(CLI) ? undefined : `${CLI} is missing: run npm run build:ts`,
  () => {
    let work = '';
    let server: ChildProcess | undefined;
    let oci: Record<string, string> = {};
    beforeAll(async () => {
      work = mkdtempSync(join(tmpdir(), 'lba-status-oci-resume-'));
      const changed = join(work, 'changed.json');
      writeFileSync(changed, JSON.stringify(RANGES));
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
          '--port',
          '0',
          '--oci-api',
          '--oci-dir',
          join(work, 'oci'),
          '--fault',
          'latency:on=read,p=1,ms=800',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      server = child;
      let log = '';
      child.stderr!.on('data', (c: Buffer) => {
        log += c;
      });
      const ready = await new Promise<{ oci: Record<string, string> }>((done, fail) => {
        let text = '';
        child.stdout!.on('data', (c: Buffer) => {
          text += c;
          const nl = text.indexOf('\n');
          if (nl >= 0) done(JSON.parse(text.slice(0, nl)));
        });
        child.once('exit', (code) => fail(new Error(`sim serve exited ${code}: ${log}`)));
      });
      oci = ready.oci;
    });
    afterAll(async () => {
      if (server && server.exitCode === null) {
        const exited = new Promise((done) => server!.once('exit', done));
        server.kill('SIGTERM');
        await exited;
      }
      rmSync(work, { recursive: true, force: true });
    });

    const common = () => [
      '--config-file',
      oci.configFile!,
      '--endpoint',
      oci.endpoint!,
      '--instance-id',
      oci.instanceId!,
    ];
    const delta = (dir: string, extra: string[] = [], kill?: (c: ChildProcess) => void) =>
      cli(
        [
          'oci',
          'delta',
          '--attach',
          'userspace',
          '--first-backup',
          oci.firstBackupId!,
          '--second-backup',
          oci.secondBackupId!,
          '--change-block-size',
          String(CHANGE),
          '--format',
          'ndjson',
          '--no-progress',
          '--export',
          dir,
          ...common(),
          ...extra,
        ],
        kill,
      );
    const leftovers = async () => {
      const r = await cli([
        'oci',
        'sweep',
        '--older-than',
        '0',
        '--dry-run',
        '--format',
        'json',
        ...common(),
      ]);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as { volumes: string[]; attachments: string[] };
    };

    it('a killed export continues on a new delta volume; the result equals an uninterrupted one', {
      timeout: 120_000,
    }, async () => {
      const reference = join(work, 'reference');
      const ref = await delta(reference);
      expect(ref.code, ref.stderr).toBe(0);

      const dir = join(work, 'killed');
      const killed = await delta(dir, [], (child) => {
        const timer = setInterval(() => {
          if (journalHasSynced(dir)) {
            clearInterval(timer);
            child.kill('SIGKILL');
          }
        }, 5);
        child.once('exit', () => clearInterval(timer));
      });
      expect(killed.signal, `${killed.code} ${killed.stderr}`).toBe('SIGKILL');
      const killedManifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
      expect(killedManifest.complete).toBe(false);
      // The killed run's volume and attachment are still there (nothing released them).
      expect((await leftovers()).volumes).toHaveLength(1);

      // Another change block size: refused before any volume is created.
      const other = await delta(dir, ['--change-block-size', String(2 * CHANGE)]);
      expect(other.code, other.stderr).toBe(2);
      expect(other.stderr).toMatch(/its changeBlockSize is 65536, this run's is 131072/);
      expect((await leftovers()).volumes).toHaveLength(1);

      const resumed = await delta(dir);
      expect(resumed.code, resumed.stderr).toBe(0);
      for (const f of ['delta.img', 'delta.rbd-diff'])
        expect(sha256(readFileSync(join(dir, f))), f).toBe(
          sha256(readFileSync(join(reference, f))),
        );
      const a = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
      const b = JSON.parse(readFileSync(join(reference, 'manifest.json'), 'utf8'));
      expect(a.complete).toBe(true);
      expect({ ...a, device: undefined }).toEqual({ ...b, device: undefined });
      expect(a.device).toEqual(killedManifest.device); // the first attempt's delta volume
      expect(a.device.path).not.toBe(b.device.path);
      // Exactly the oracle's data.
      const g = { sizeBytes: SIZE, blockSize: 512, changeBlockSize: CHANGE };
      const image = readFileSync(join(dir, 'delta.img'));
      for (const [start, end] of expectedChangedRuns(RANGES, g))
        expect(
          image
            .subarray(start * 512, end * 512)
            .equals(expectedRead(RANGES, g, SEED, start, end - start)),
        ).toBe(true);

      const sweep = await cli([
        'oci',
        'sweep',
        '--older-than',
        '0',
        '--format',
        'json',
        ...common(),
      ]);
      expect(sweep.code, sweep.stderr).toBe(0);
      expect(await leftovers()).toMatchObject({ volumes: [], attachments: [] });
    });
  },
);
