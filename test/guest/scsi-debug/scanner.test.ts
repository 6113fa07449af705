// The scanner on a real kernel: scsi_debug (GET LBA STATUS(16) only, one descriptor per reply),
// through the sg node and the block node, checked against the written pattern and sg3_utils.
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { openDevice, ScsiError } from '../../../lib/index.js';
import {
  agreeWithOracle,
  merged,
  patternRanges,
  scannedChanged,
  useWrittenPattern,
} from '../scanner-support.js';
import { run, scenario, unmap, writePattern } from '../support/index.js';

const s = scenario();
const ranges = patternRanges(s.capacityBlocks);
const cli = join(process.cwd(), 'dist/cli.js');

useWrittenPattern(s, ranges);

describe(`scanner on scsi_debug (${s.name}, ${s.blockSize}-byte blocks)`, () => {
  it('identifies the device through the sg node and maps the block node to it', async () => {
    await using viaBlock = await openDevice(s.block);
    expect(viaBlock.path).toBe(s.sg);
    expect(viaBlock.blockPath).toBe(s.block);
    const info = await viaBlock.info();
    expect(info).toMatchObject({
      vendor: 'Linux',
      product: 'scsi_debug',
      blockSize: s.blockSize,
      capacityBlocks: s.capacityBlocks,
      lbpme: true,
    });
    expect(info.provisioning?.lbpu).toBe(true);
  });

  it('follows symlinks such as /dev/oracleoci/oraclevdb to the disk and its sg node', async () => {
    const link = join(mkdtempSync(join(tmpdir(), 'oracleoci-')), 'oraclevdb');
    symlinkSync(s.block, link);
    await using device = await openDevice(link);
    expect(device.requestedPath).toBe(link);
    expect(device.path).toBe(s.sg);
    expect(device.blockPath).toBe(s.block);
  });

  it('auto falls back from 32 to 16 and reports exactly the written pattern (sg node)', async () => {
    await using device = await openDevice(s.sg);
    expect(await scannedChanged(device, { cdb: 'auto' })).toEqual(merged(ranges));
    expect(device.glsForm).toBe(16);
  });

  it('reports the same through the block node (SG_IO on /dev/sdX)', async () => {
    await using device = await openDevice(s.block, { preferSg: false });
    expect(device.path).toBe(s.block);
    expect(await scannedChanged(device, { cdb: 16 })).toEqual(merged(ranges));
  });

  it('answers the 32-byte form with INVALID FIELD IN CDB at byte 8 bit 7', async () => {
    await using device = await openDevice(s.sg);
    const error = await device
      .getLbaStatus({ cdb: 32, lba: 0, scanLength: 8 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ScsiError);
    expect(error).toMatchObject({
      senseKeyName: 'ILLEGAL_REQUEST',
      asc: 0x24,
      ascq: 0,
      fieldPointer: { inCdb: true, byte: 8, bit: 7 },
    });
  });

  it('agrees with sg_get_lba_status reply by reply over the whole device', async () => {
    await using device = await openDevice(s.sg);
    expect(await agreeWithOracle(device, s.sg, 8 + 16 * 4)).toBeGreaterThan(ranges.length);
  });

  it('follows an UNMAP: the deallocated part disappears from the changed set', async () => {
    const removed = ranges[1]!;
    await unmap(s.sg, removed.lba, removed.blocks);
    try {
      await using device = await openDevice(s.sg);
      expect(await scannedChanged(device)).toEqual(merged(ranges.filter((r) => r !== removed)));
    } finally {
      await writePattern(s.block, s.blockSize, [removed]);
    }
  });

  it('scans concurrently with the same result, and leaks no descriptor', async () => {
    const before = readdirSync('/proc/self/fd').length;
    {
      await using device = await openDevice(s.sg, { queueDepth: 4 });
      // scsi_debug has no 32-byte form, so windows are sequential 16-byte commands; the result
      // must not depend on the options.
      expect(await scannedChanged(device, { concurrency: 4, allocationLength: 24 })).toEqual(
        merged(ranges),
      );
    }
    expect(readdirSync('/proc/self/fd').length).toBe(before);
  });

  it('CLI: scan --format sg3 prints what sg_get_lba_status -b prints', async () => {
    for (const lba of [0, ranges[1]!.lba, ranges[3]!.lba + 3]) {
      const ours = await promisify(execFile)(process.execPath, [
        cli,
        'scan',
        s.sg,
        '--format',
        'sg3',
        '--cdb',
        '16',
        '--start-lba',
        String(lba),
        '--allocation-length',
        '72',
      ]);
      const oracle = await run('sg_get_lba_status', [
        '-b',
        '-S',
        '-m',
        '72',
        '-l',
        String(lba),
        s.sg,
      ]);
      expect(ours.stdout).toBe(oracle.stdout);
    }
  });

  it('CLI: scan prints ndjson and info reports the device', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [
      cli,
      'scan',
      s.block,
      '--changed-only',
    ]);
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((e) => [e.lba, e.lba + e.blocks])).toEqual(merged(ranges));
    const info = await promisify(execFile)(process.execPath, [cli, 'info', s.sg, '--json']);
    expect(JSON.parse(info.stdout)).toMatchObject({
      product: 'scsi_debug',
      getLbaStatus32: expect.any(String),
    });
  });
});
