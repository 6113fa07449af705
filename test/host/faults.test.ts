// Every fault kind of the simulator over the userspace transport, through the built CLI as an
// unprivileged user: `lba-status scan iscsi://…` against `sim serve --fault KIND` is retried to
// the exact changed map, or stops with the documented exit code and one line — never a silent
// gap. The expectation is the test's own byte ranges through the naive bitmap of support.ts.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  changedLbasOf,
  clientDir,
  cliReason,
  describeIf,
  expectedChangedLbas,
  parseNdjson,
  randomByteRanges,
  runCli,
  startSimServe,
} from './support.js';

const SIZE = 256 * 2 ** 20;
const BLOCK = 512;
const CHANGE = 4096;
// Small windows: many GET LBA STATUS commands, so faults land mid-scan with windows in flight.
const SCAN = ['--format', 'ndjson', '--window-blocks', '20000', '--concurrency', '4'];

interface FaultCase {
  spec: string;
  /** 0: the exact map (the fault was survived); else the exit code and what stderr says. */
  exit: 0 | 5 | 6;
  says?: RegExp;
  /** What the simulator's --verbose log shows when the fault fired (proof it did). */
  fired?: RegExp;
}

const CASES: FaultCase[] = [
  { spec: 'latency:ms=20,count=6', exit: 0 },
  { spec: 'busy:count=3', exit: 0, fired: /7f\/0012 lun=1 status=0x8\b/ },
  { spec: 'task-set-full:count=3', exit: 0, fired: /7f\/0012 lun=1 status=0x28/ },
  {
    spec: 'unit-attention:count=2',
    exit: 0,
    fired: /7f\/0012 lun=1 status=0x2 sense=70000600.{16}2900/,
  },
  {
    spec: 'not-ready:count=2',
    exit: 0,
    fired: /7f\/0012 lun=1 status=0x2 sense=70000200.{16}0401/,
  },
  { spec: 'busy:p=0.3,seed=4', exit: 0, fired: /7f\/0012 lun=1 status=0x8\b/ },
  // The connection drops mid-scan: the initiator logs in again and re-issues what was in flight.
  { spec: 'drop-connection:count=2', exit: 0, fired: /login[^\n]*\n(.*\n)*.*login/ },
  { spec: 'drop-connection:count=1,on=any', exit: 0, fired: /login[^\n]*\n(.*\n)*.*login/ },
  { spec: 'gls-bad-length:count=1', exit: 6, says: /malformed reply.*PARAMETER DATA LENGTH/ },
  { spec: 'gls-overlap:count=1', exit: 6, says: /malformed reply.*overlaps/ },
];

describeIf('faults over iscsi:// (userspace transport)', cliReason(), () => {
  const dir = clientDir('faults');
  const ranges = randomByteRanges(7, SIZE, 120, 200_000);
  const file = join(dir.path, 'changed.json');
  const expected = expectedChangedLbas(ranges, SIZE, CHANGE, BLOCK);
  beforeAll(() => writeFileSync(file, JSON.stringify(ranges)));
  afterAll(() => dir.remove());

  for (const c of CASES) {
    describe(`--fault ${c.spec}`, () => {
      it(
        c.exit === 0 ? 'is survived: exactly the changed map' : `exits ${c.exit} with one line`,
        async () => {
          const sim = await startSimServe([
            '--size',
            String(SIZE),
            '--change-block-size',
            String(CHANGE),
            '--changed',
            file,
            '--fault',
            c.spec,
          ]);
          try {
            const r = await runCli(['scan', sim.url(), ...SCAN]);
            if (c.exit === 0) {
              expect(r.code, r.stderr).toBe(0);
              expect(changedLbasOf(parseNdjson(r.stdout), SIZE / BLOCK)).toEqual(expected);
            } else {
              expect(r.code, r.stderr).toBe(c.exit);
              const lines = r.stderr.trim().split('\n');
              expect(lines[0]).toMatch(c.says!);
            }
          } finally {
            await sim.stop();
          }
        },
      );
    });
  }
});
