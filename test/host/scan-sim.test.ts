// `lba-status scan iscsi://…` — the built CLI, as an unprivileged user, through the userspace
// iSCSI initiator (no root, no iscsid, no kernel module) — against `lba-status sim serve`
// started by the test with a random changed map. The expectation is the test's own: its byte
// ranges through a naive bitmap of change blocks (support.ts), never lib/ code.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  type ByteRange,
  changedLbasOf,
  clientDir,
  clientUser,
  cliReason,
  describeIf,
  expectedChangedLbas,
  parseNdjson,
  randomByteRanges,
  runAsClient,
  runCli,
  type SimServer,
  startSimServe,
} from './support.js';

const GiB = 2 ** 30;
const MiB = 2 ** 20;

interface MapCase {
  name: string;
  blockSize: 512 | 4096;
  sizeBytes: number;
  changeBlockSize: number;
  ranges: number;
  maxLength: number;
  seed: number;
  /** scan options beyond the URL */
  scans: Array<{ label: string; args: string[] }>;
}

const seed = Number(process.env.LBA_STATUS_TEST_SEED ?? 20260601);

const CASES: MapCase[] = [
  {
    name: '512-byte blocks, 3 GiB (3 default windows), 4 KiB change blocks',
    blockSize: 512,
    sizeBytes: 3 * GiB,
    changeBlockSize: 4096,
    ranges: 400,
    maxLength: 300_000,
    seed,
    scans: [
      { label: 'default windows', args: [] },
      {
        label: '--window-blocks 50000 --concurrency 8 --allocation-length 56',
        args: ['--window-blocks', '50000', '--concurrency', '8', '--allocation-length', '56'],
      },
    ],
  },
  {
    name: '512-byte blocks, 64 MiB, 64 KiB change blocks',
    blockSize: 512,
    sizeBytes: 64 * MiB,
    changeBlockSize: 65536,
    ranges: 120,
    maxLength: 200_000,
    seed: seed + 1,
    scans: [
      { label: 'default windows', args: [] },
      {
        label: '--window-blocks 999 --concurrency 8',
        args: ['--window-blocks', '999', '--concurrency', '8'],
      },
    ],
  },
  {
    name: '4096-byte blocks, 5 GiB (5 default windows), 64 KiB change blocks',
    blockSize: 4096,
    sizeBytes: 5 * GiB,
    changeBlockSize: 65536,
    ranges: 300,
    maxLength: 3 * MiB,
    seed: seed + 2,
    scans: [
      { label: 'default windows', args: [] },
      {
        label: '--window-blocks 20000 --concurrency 8 --allocation-length 104',
        args: ['--window-blocks', '20000', '--concurrency', '8', '--allocation-length', '104'],
      },
    ],
  },
  {
    name: '4096-byte blocks, 256 MiB, 4 KiB change blocks',
    blockSize: 4096,
    sizeBytes: 256 * MiB,
    changeBlockSize: 4096,
    ranges: 200,
    maxLength: 100_000,
    seed: seed + 3,
    scans: [
      { label: 'default windows', args: [] },
      {
        label: '--window-blocks 777 --concurrency 8',
        args: ['--window-blocks', '777', '--concurrency', '8'],
      },
    ],
  },
];

describeIf('scan iscsi:// as an unprivileged user (userspace initiator)', cliReason(), () => {
  it('runs the client without privileges', async () => {
    const r = await runAsClient(process.execPath, [
      '-e',
      "const s=require('fs').readFileSync('/proc/self/status','utf8');console.log(process.getuid(),/CapEff:\\s*(\\S+)/.exec(s)[1])",
    ]);
    expect(r.code, r.stderr).toBe(0);
    const [uid, capEff] = r.stdout.trim().split(' ');
    expect(Number(uid), clientUser().user?.label).not.toBe(0);
    expect(capEff).toBe('0000000000000000');
  });

  for (const c of CASES) {
    describeIf(c.name, undefined, () => {
      const ranges: ByteRange[] = randomByteRanges(c.seed, c.sizeBytes, c.ranges, c.maxLength);
      const expected = expectedChangedLbas(ranges, c.sizeBytes, c.changeBlockSize, c.blockSize);
      const capacity = c.sizeBytes / c.blockSize;
      let sim: SimServer;
      let dir: ReturnType<typeof clientDir>;
      beforeAll(async () => {
        dir = clientDir('scan');
        const file = join(dir.path, 'changed.json');
        writeFileSync(file, JSON.stringify(ranges));
        sim = await startSimServe([
          '--size',
          String(c.sizeBytes),
          '--block-size',
          String(c.blockSize),
          '--change-block-size',
          String(c.changeBlockSize),
          '--changed',
          file,
        ]);
      });
      afterAll(async () => {
        await sim?.stop();
        dir?.remove();
      });

      it('the expectation is a real map (sanity of the oracle)', () => {
        expect(expected.length).toBeGreaterThan(10);
        expect(expected[expected.length - 1]![1]).toBe(capacity);
      });

      for (const s of c.scans) {
        it(`returns exactly the changed map (${s.label}, seed ${c.seed})`, async () => {
          const r = await runCli(['scan', sim.url(), '--format', 'ndjson', ...s.args]);
          expect(r.code, r.stderr).toBe(0);
          expect(changedLbasOf(parseNdjson(r.stdout), capacity)).toEqual(expected);
        });
      }

      it(`--changed-only --change-block-size ${c.changeBlockSize} prints the changed map in bytes`, async () => {
        const r = await runCli([
          'scan',
          sim.url(),
          '--changed-only',
          '--change-block-size',
          String(c.changeBlockSize),
          '--format',
          'ndjson',
        ]);
        expect(r.code, r.stderr).toBe(0);
        const lines = r.stdout
          .trim()
          .split('\n')
          .map(
            (l) => JSON.parse(l) as { lba: number; blocks: number; offset: number; length: number },
          );
        expect(lines.map((e) => [e.offset, e.offset + e.length])).toEqual(
          expected.map(([s0, e0]) => [s0 * c.blockSize, e0 * c.blockSize]),
        );
        expect(lines.map((e) => [e.lba, e.lba + e.blocks])).toEqual(expected);
      });
    });
  }
});
