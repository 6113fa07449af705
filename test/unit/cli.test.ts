/**
 * The CLI in process (`main(argv, io)`) against the simulator's device server, reached the way
 * a user without root reaches a volume: `iscsi://` through the userspace initiator to a
 * simulator target started in this process. Nothing is faked: argument parsing, the device
 * layer, the scanner and the formatting are the real ones. The volume is OCI's documented example
 * (scsi-get-lba-status.md §10.1); expected outputs are written out by hand.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../lib/cli/main.js';
import { type Simulator, startSimulator } from '../../lib/sim/simulator.js';

let sim: Simulator;
let url: string;
/** A regular file: a device node that is not a SCSI device. */
const file = join(tmpdir(), `lba-status-cli-${process.pid}`);
writeFileSync(file, '');

beforeAll(async () => {
  const block = 512;
  sim = await startSimulator({
    sizeBytes: 0x100000 * block,
    changeBlockSize: 4096,
    // Each run is a new session: no UNIT ATTENTION after login, so command counts are exact
    // (its retry is the scanner suite's and the target tests' business).
    unitAttentionOnLogin: false,
    changed: [
      { offset: 0x60 * block, length: 0x10 * block },
      { offset: 0x70 * block, length: 0x8 * block, status: 'deallocated' },
      { offset: 0xa0 * block, length: (0x100000 - 0xa0) * block, status: 'deallocated' },
    ],
  });
  url = `iscsi://${sim.portal}/${sim.iqn}/1`;
});

afterAll(async () => {
  await sim?.close();
  rmSync(file, { force: true });
});

async function run(argv: string[]) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (c: Buffer) => out.push(c));
  stderr.on('data', (c: Buffer) => err.push(c));
  const code = await main(argv, { stdout, stderr, signal: new AbortController().signal, env: {} });
  return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

/** GET LBA STATUS(32) commands the simulator received so far. */
const gls32Count = () => sim.stats.byOpcode['7f/0012'] ?? 0;

describe('lba-status scan', () => {
  it('prints ndjson extents as the device reported them', async () => {
    const { code, stdout, stderr } = await run(['scan', url]);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toBe(
      '{"lba":96,"blocks":16,"status":3,"additional":0}\n' +
        '{"lba":112,"blocks":8,"status":1,"additional":0}\n' +
        '{"lba":160,"blocks":1048416,"status":1,"additional":0}\n',
    );
  });

  it('prints only changed extents, aligned and merged to the change block size', async () => {
    const { stdout } = await run(['scan', url, '--changed-only', '--change-block-size', '64K']);
    expect(stdout).toBe('{"lba":0,"blocks":128,"offset":0,"length":65536}\n');
  });

  it('prints one json document with a summary', async () => {
    const { stdout } = await run(['scan', url, '--format', 'json']);
    const doc = JSON.parse(stdout);
    expect(doc.summary).toMatchObject({
      cdb: 32,
      rtp: true,
      extents: 3,
      changedExtents: 1,
      changedBlocks: 16,
      changedBytes: 8192,
      nextLba: 0x100000,
    });
    expect(doc.extents).toHaveLength(3);
  });

  it("prints sg3_utils 1.46's brief format for one command", async () => {
    const before = gls32Count();
    const { stdout } = await run([
      'scan',
      url,
      '--format',
      'sg3',
      '--cdb',
      '32',
      '--window-blocks',
      '2097152',
    ]);
    expect(stdout).toBe(
      'Completion condition=3\nRTP=1\n0x0000000000000060  0x10  3  0\n0x0000000000000070  0x8  1  0\n0x00000000000000a0  0xfff60  1  0\n',
    );
    expect(gls32Count() - before).toBe(1);
    // The window and the allocation length reach the CDB: a window that ends at 0x78 stops with
    // condition 2; 24 bytes hold one descriptor (condition 1); no window is a scan length of 0,
    // which OCI's page defines as the entire volume subject to the 1 GB limit: 1 GiB of blocks.
    expect((await run(['scan', url, '--format', 'sg3', '--window-blocks', '120'])).stdout).toBe(
      'Completion condition=2\nRTP=1\n0x0000000000000060  0x10  3  0\n0x0000000000000070  0x8  1  0\n',
    );
    const sg3 = ['scan', url, '--format', 'sg3', '--window-blocks', '2097152'];
    expect((await run([...sg3, '--allocation-length', '24'])).stdout).toBe(
      'Completion condition=1\nRTP=1\n0x0000000000000060  0x10  3  0\n',
    );
    const noWindow = await run(['scan', url, '--format', 'sg3']);
    expect(noWindow.code).toBe(0);
    expect(noWindow.stdout).toBe(stdout);
  });

  it('prints a text table and summary', async () => {
    const { stdout } = await run(['scan', url, '--format', 'text']);
    expect(stdout).toMatch(/96\s+16\s+mapped/);
    expect(stdout).toMatch(/1 changed extent\(s\), 8\.0 KiB of 512 MiB changed/);
  });

  it('fails with a one-line reason and exit 3 for a missing device', async () => {
    const { code, stderr, stdout } = await run(['scan', '/dev/does-not-exist']);
    expect(code).toBe(3);
    expect(stdout).toBe('');
    expect(stderr).toMatch(
      /^lba-status: ENOENT: no such file or directory, \w+ '\/dev\/does-not-exist'/,
    );
    expect(stderr.trim().split('\n')).toHaveLength(1);
  });

  it('fails with exit 4 when the device refuses both CDB forms', async () => {
    const { code, stderr } = await run(['scan', url, '--cdb', '16']);
    expect(code).toBe(4);
    expect(stderr).toMatch(/GET LBA STATUS\(16\).*ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE/);
  });

  it('rejects bad usage with exit 2', async () => {
    expect((await run(['scan'])).code).toBe(2);
    expect((await run(['scan', url, '--format', 'xml'])).stderr).toMatch(/--format must be/);
    expect((await run(['scan', url, '--bogus'])).code).toBe(2);
    expect((await run(['scan', url, '--window-blocks', '-3'])).code).toBe(2);
    expect((await run(['frobnicate'])).code).toBe(2);
    expect((await run(['scan', file, '--engine', 'uring'])).stderr).toMatch(
      /--engine must be threads or sg-async, got 'uring'/,
    );
  });

  it('takes --engine for device nodes only: threads reaches SG_IO, sg-async needs an sg node', async () => {
    const threads = await run(['scan', file, '--engine', 'threads']);
    expect(threads.code).toBe(3);
    expect(threads.stderr).toMatch(/ENOTTY/);
    const refused = await run(['scan', file, '--engine', 'sg-async']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/needs an sg node/);
    // An iSCSI device has no engine to choose.
    const url32 = await run(['scan', url, '--engine', 'threads']);
    expect(url32.code).toBe(2);
    expect(url32.stderr).toMatch(/--engine/);
  });

  it('teaches with --help', async () => {
    const { code, stdout } = await run(['scan', '--help']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/Examples:/);
    expect((await run(['--help'])).stdout).toMatch(/Commands:\n {2}info/);
  });
});

describe('lba-status info', () => {
  it('prints identity, geometry and GET LBA STATUS support', async () => {
    const { code, stdout } = await run(['info', url]);
    expect(code).toBe(0);
    expect(stdout).toMatch(/vendor:\s+ORACLE\n/);
    expect(stdout).toMatch(/product:\s+BlockVolume\n/);
    expect(stdout).toMatch(/capacity:\s+1048576 blocks \(512 MiB\)/);
    expect(stdout).toMatch(/thin provisioning:\s+LBPME=1 LBPRZ=1 type=thin/);
    expect(stdout).toMatch(/GET LBA STATUS\(16\):\s+not-supported/);
    expect(stdout).toMatch(/GET LBA STATUS\(32\):\s+supported/);
  });

  it('prints JSON with --json', async () => {
    const { stdout } = await run(['info', url, '--json']);
    expect(JSON.parse(stdout)).toMatchObject({
      blockSize: 512,
      capacityBlocks: 0x100000,
      lbpme: true,
      vendor: 'ORACLE',
    });
  });
});

describe('lba-status scan summary', () => {
  it('counts the aligned extents it printed with --change-block-size', async () => {
    const { stdout } = await run([
      'scan',
      url,
      '--changed-only',
      '--change-block-size',
      '64K',
      '--format',
      'text',
    ]);
    expect(stdout).toMatch(/^1 changed extent\(s\), 8\.0 KiB of 512 MiB changed/m);
  });
});

describe('lba-status and its device', () => {
  it('logs out of every session it opened', async () => {
    await run(['scan', url, '--format', 'json']);
    await run(['scan', url, '--cdb', '16']); // a failing run too
    for (let i = 0; i < 100 && sim.sessions > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(sim.sessions).toBe(0);
  });
});
