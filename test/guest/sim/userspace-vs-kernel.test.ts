// The same simulated OCI delta volume through two initiators in one guest: the kernel's
// (iscsid + iscsi_tcp, the scenario's session; `lba-status scan /dev/sgN`, SG_IO) and the
// package's userspace one (a second session to the same target; `lba-status scan
// iscsi://127.0.0.1:3260/IQN/1`, TCP from the process). Both must print identical ndjson — the
// same descriptors, window by window — for report types 0 (all) and 1 (nonzero), at the default
// window and at small windows / cut replies, and both must match the map the simulator served.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type ByteRange, expectedChangedRuns } from '../../support/oracle.js';
import { run, scenario } from '../support/index.js';

const s = scenario();
const cli = join(process.cwd(), 'dist/cli.js');
const portal = process.env.LBA_STATUS_TEST_ISCSI_PORTAL;
const iqn = process.env.LBA_STATUS_TEST_ISCSI_TARGET;
const url = `iscsi://${portal}/${iqn}/1`;

interface Extent {
  lba: number;
  blocks: number;
  status: number;
}

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

/**
 * The served changed set as [start, end) LBA runs: the byte ranges sim serve drew (--dump-changed,
 * before widening) widened to the scenario's change block size by the test-side oracle.
 */
function servedRuns(): Array<[number, number]> {
  const file = process.env.LBA_STATUS_TEST_SIM_MAP;
  if (!file) throw new Error('LBA_STATUS_TEST_SIM_MAP is not set (scripts/guest/scenarios/sim.sh)');
  return expectedChangedRuns(JSON.parse(readFileSync(file, 'utf8')) as ByteRange[], {
    sizeBytes: s.capacityBlocks * s.blockSize,
    blockSize: s.blockSize,
    changeBlockSize: Number(process.env.LBA_STATUS_TEST_SIM_CHANGE_BLOCK_SIZE),
  });
}

/** Mapped (status != 1) runs of an ndjson scan, merged. */
function mappedRuns(ndjson: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const line of ndjson.split('\n')) {
    if (!line) continue;
    const e = JSON.parse(line) as Extent;
    if (e.status === 1) continue;
    const last = out[out.length - 1];
    if (last && last[1] === e.lba) last[1] = e.lba + e.blocks;
    else out.push([e.lba, e.lba + e.blocks]);
  }
  return out;
}

describe(`userspace iSCSI initiator vs the kernel's, same target (${s.name})`, () => {
  it('has what it needs', () => {
    expect(existsSync(cli), `${cli} (npm run build:ts)`).toBe(true);
    expect(portal && iqn, 'LBA_STATUS_TEST_ISCSI_PORTAL/_TARGET from sim.sh').toBeTruthy();
  });

  const windows = Math.floor(s.capacityBlocks / 5) + 3; // several windows, the last one short
  const variants: Array<{ label: string; args: string[] }> = [
    { label: 'default windows', args: [] },
    {
      label: `--window-blocks ${windows} --allocation-length 56 --concurrency 8`,
      args: ['--window-blocks', String(windows), '--allocation-length', '56', '--concurrency', '8'],
    },
  ];
  for (const reportType of ['0', '1']) {
    for (const v of variants) {
      it(`report type ${reportType}, ${v.label}: identical ndjson`, async () => {
        const args = ['--report-type', reportType, '--cdb', '32', ...v.args];
        const kernel = await scan(s.sg, args);
        const userspace = await scan(url, args);
        expect(userspace.split('\n').length).toBeGreaterThan(2);
        expect(userspace).toBe(kernel);
        expect(mappedRuns(kernel)).toEqual(servedRuns());
      });
    }
  }

  it('--changed-only --change-block-size: identical output', async () => {
    const cbs = process.env.LBA_STATUS_TEST_SIM_CHANGE_BLOCK_SIZE ?? '65536';
    const args = ['--changed-only', '--change-block-size', cbs];
    expect(await scan(url, args)).toBe(await scan(s.block, args));
  });
});
