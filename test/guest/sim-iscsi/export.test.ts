// Changed data from the simulated OCI delta volume through the guest kernel: the whole OCI flow
// with `oci delta --export` against the fake API (deterministic block data, so the second image
// is known), and a volume detached (iSCSI logout) in the middle of an export.
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { open, readFile, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  exportChanged,
  openDevice,
  readManifest,
  sha256File,
  verifyExport,
} from '../../../lib/index.js';
import { startOciSimulation, startSimulator } from '../../../lib/sim.js';
import { documentedBlockData, expectedDelta, randomRanges } from '../../support/oracle.js';
import { attach, ociConnectionArgs } from '../sim/attach.js';

const work = mkdtempSync(join(process.env.GUEST_OUT ?? tmpdir(), 'sim-export-'));
const cli = join(process.cwd(), 'dist/cli.js');

/** A sparse image: zeros, with the documented block data (written by the test) in the mapped extents. */
async function secondImage(
  path: string,
  sizeBytes: number,
  extents: ReadonlyArray<{ lba: number; blocks: number; status: number }>,
  seed: number,
) {
  await writeFile(path, '');
  await truncate(path, sizeBytes);
  const handle = await open(path, 'r+');
  try {
    for (const e of extents) {
      if (e.status !== 3) continue;
      for (let lba = e.lba; lba < e.lba + e.blocks; lba++)
        await handle.write(documentedBlockData(lba, 512, seed), 0, 512, lba * 512);
    }
  } finally {
    await handle.close();
  }
}

/** Runs the CLI asynchronously: the fake API and the targets live in this process. */
function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('changed data from the simulated delta volume', () => {
  it('oci delta --export: manifest with both OCIDs; base + delta = the second image', {
    timeout: 180_000,
  }, async () => {
    const seed = 4242;
    const own = randomRanges(seed, 40, 64 << 20, 100_000);
    await using sim = await startOciSimulation({
      dir: mkdtempSync(join(work, 'oci-')),
      sizeBytes: 64 << 20,
      changed: own,
      dataSeed: seed,
      delays: { provisionMs: 100, attachMs: 100, detachMs: 50, terminateMs: 50 },
    });
    const dir = join(work, 'oci-export');
    const result = await runCli([
      'oci',
      'delta',
      '--first-backup',
      sim.info.firstBackupId,
      '--second-backup',
      sim.info.secondBackupId,
      '--change-block-size',
      '65536',
      ...ociConnectionArgs(sim.info),
      '--export',
      dir,
      '--no-progress',
    ]);
    expect(result.code, result.stderr).toBe(0);
    const manifest = await readManifest(dir);
    expect(manifest.source).toEqual({
      firstBackupId: sim.info.firstBackupId,
      secondBackupId: sim.info.secondBackupId,
    });
    expect(manifest.changeBlockSize).toBe(65536);
    const base = join(work, 'base.img');
    await writeFile(base, '');
    await truncate(base, 64 << 20);
    const expected = join(work, 'second.img');
    await secondImage(
      expected,
      64 << 20,
      expectedDelta(own, { sizeBytes: 64 << 20, blockSize: 512, changeBlockSize: 65536 }),
      seed,
    );
    expect((await verifyExport(base, dir, expected)).sha256).toBe(await sha256File(expected));
    expect(sim.api.leftovers()).toEqual([]);
  });

  it('a volume logged out in the middle of an export: typed error, manifest marked incomplete', {
    timeout: 180_000,
  }, async () => {
    await using sim = await startSimulator({
      sizeBytes: 64 << 20,
      changeBlockSize: 4096,
      changed: { random: 300, seed: 77 },
      iqn: 'iqn.2024-01.lba-status:detach',
      faults: [{ kind: 'latency', ms: 20, probability: 1, on: 'read' }],
    });
    const lun = await attach(sim);
    let detaching: Promise<void> | undefined;
    const dir = join(work, 'detached');
    try {
      await using device = await openDevice(lun.sg);
      let chunks = 0;
      const error = await exportChanged(device, dir, {
        method: 'sg',
        concurrency: 1,
        chunkSize: 65536,
        formats: ['raw'],
        onProgress: () => {
          if (++chunks === 3) detaching = lun.detach();
        },
      }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(Error);
      expect((error as { code?: unknown }).code).toEqual(
        expect.stringMatching(/^(E[A-Z]+|ERR_[A-Z_]+)$/),
      );
      const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
      expect(manifest.complete).toBe(false);
      await expect(readManifest(dir)).rejects.toMatchObject({
        code: 'ERR_LBA_STATUS_EXPORT_INCOMPLETE',
      });
    } finally {
      await detaching;
      await lun.detach();
    }
  });
});
