// tgt (GET LBA STATUS(16) only) through two initiators in one guest: the kernel's (the
// scenario's iscsid session; `lba-status scan /dev/sgN --cdb 16`, SG_IO) and the package's
// userspace one (a second session; `lba-status scan iscsi://…` with --cdb auto, which falls back
// to 16). With the scanner tests' pattern written (test/shared/patterns.ts, the same definition
// the host test test/host/tgt.test.ts checks against the host's own tgtd), both must print
// identical ndjson, reply by reply (small allocation lengths cut tgt's replies), and report
// exactly the pattern.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mergedRanges, patternRanges } from '../../shared/patterns.js';
import { run, scenario, testUnitReady, unmap, writePattern } from '../support/index.js';

const s = scenario();
const cli = join(process.cwd(), 'dist/cli.js');
const url = `iscsi://${process.env.LBA_STATUS_TEST_ISCSI_PORTAL}/${process.env.LBA_STATUS_TEST_ISCSI_TARGET}/1`;
const ranges = patternRanges(s.capacityBlocks);

async function scan(device: string, args: string[]): Promise<string> {
  const r = await run(
    process.execPath,
    [cli, 'scan', device, '--format', 'ndjson', ...args],
    300_000,
  );
  if (r.exitCode !== 0)
    throw new Error(
      `lba-status scan ${device} ${args.join(' ')} exited ${r.exitCode}: ${r.stderr}`,
    );
  return r.stdout;
}

/** Changed (status != 1) runs of an ndjson scan, merged. */
function changedRuns(ndjson: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const line of ndjson.split('\n')) {
    if (!line) continue;
    const e = JSON.parse(line) as { lba: number; blocks: number; status: number };
    if (e.status === 1) continue;
    const last = out[out.length - 1];
    if (last && last[1] === e.lba) last[1] = e.lba + e.blocks;
    else out.push([e.lba, e.lba + e.blocks]);
  }
  return out;
}

beforeAll(async () => {
  await testUnitReady(s.sg);
  await unmap(s.sg, 0, s.capacityBlocks);
  await writePattern(s.block, s.blockSize, ranges);
});
afterAll(async () => {
  await unmap(s.sg, 0, s.capacityBlocks).catch(() => {});
});

describe(`tgt: userspace iSCSI initiator vs the kernel's (${s.name})`, () => {
  it('has what it needs', () => {
    expect(existsSync(cli), `${cli} (npm run build:ts)`).toBe(true);
    expect(process.env.LBA_STATUS_TEST_ISCSI_PORTAL).toBeTruthy();
  });

  for (const reportType of ['0', '1']) {
    for (const allocationLength of [24, 8 + 16 * 5, 32768]) {
      it(`report type ${reportType}, allocation length ${allocationLength}: identical ndjson, exactly the pattern`, async () => {
        const common = [
          '--report-type',
          reportType,
          '--allocation-length',
          String(allocationLength),
        ];
        const kernel = await scan(s.sg, ['--cdb', '16', ...common]);
        const userspace = await scan(url, ['--cdb', 'auto', ...common]);
        expect(userspace).toBe(kernel);
        expect(changedRuns(kernel)).toEqual(mergedRanges(ranges));
      });
    }
  }
});
