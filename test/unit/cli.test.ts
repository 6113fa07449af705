import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { setBindingForTesting } from '../../lib/binding.js';
import { main } from '../../lib/cli/main.js';
import { fakeNodePath, type ModelVolume, useFakeDevice } from '../support/fake-binding.js';

const nodePath = fakeNodePath();
afterEach(() => setBindingForTesting(undefined));

const ociExample: ModelVolume = {
  blockSize: 512,
  capacity: 0x100000,
  behaviour: 'oci',
  runs: [
    { lba: 0, blocks: 0x60, state: 'uninitialised' },
    { lba: 0x60, blocks: 0x10, state: 'mapped' },
    { lba: 0x70, blocks: 0x8, state: 'deallocated' },
    { lba: 0x78, blocks: 0x28, state: 'uninitialised' },
  ],
};

async function run(argv: string[], model: ModelVolume = ociExample) {
  const fake = useFakeDevice(model);
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (c: Buffer) => out.push(c));
  stderr.on('data', (c: Buffer) => err.push(c));
  const code = await main(argv, { stdout, stderr, signal: new AbortController().signal, env: {} });
  return {
    code,
    stdout: Buffer.concat(out).toString(),
    stderr: Buffer.concat(err).toString(),
    fake,
  };
}

describe('lba-status scan', () => {
  it('prints ndjson extents as the device reported them', async () => {
    const { code, stdout } = await run(['scan', nodePath]);
    expect(code).toBe(0);
    expect(stdout).toBe(
      '{"lba":96,"blocks":16,"status":3,"additional":0}\n' +
        '{"lba":112,"blocks":8,"status":1,"additional":0}\n' +
        '{"lba":160,"blocks":1048416,"status":1,"additional":0}\n',
    );
  });

  it('prints only changed extents, aligned and merged to the change block size', async () => {
    const { stdout } = await run([
      'scan',
      nodePath,
      '--changed-only',
      '--change-block-size',
      '64K',
    ]);
    expect(stdout).toBe('{"lba":0,"blocks":128,"offset":0,"length":65536}\n');
  });

  it('prints one json document with a summary', async () => {
    const { stdout } = await run(['scan', nodePath, '--format', 'json']);
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
    const { stdout, fake } = await run([
      'scan',
      nodePath,
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
    const gls = fake.calls.filter((c) => c.cdb[0] === 0x7f);
    expect(Buffer.from(gls[0]!.cdb).toString('hex')).toBe(
      '7f00000000000018001201000000000000000000002000000000000000008000',
    );
  });

  it('prints a text table and summary', async () => {
    const { stdout } = await run(['scan', nodePath, '--format', 'text']);
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
    const model = { ...ociExample, behaviour: 'oci' as const };
    const { code, stderr } = await run(['scan', nodePath, '--cdb', '16'], model);
    expect(code).toBe(4);
    expect(stderr).toMatch(/GET LBA STATUS\(16\).*ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE/);
  });

  it('rejects bad usage with exit 2', async () => {
    expect((await run(['scan'])).code).toBe(2);
    expect((await run(['scan', nodePath, '--format', 'xml'])).stderr).toMatch(/--format must be/);
    expect((await run(['scan', nodePath, '--bogus'])).code).toBe(2);
    expect((await run(['scan', nodePath, '--window-blocks', '-3'])).code).toBe(2);
    expect((await run(['frobnicate'])).code).toBe(2);
    expect((await run(['scan', nodePath, '--engine', 'uring'])).stderr).toMatch(
      /--engine must be threads or sg-async, got 'uring'/,
    );
  });

  it('takes --engine: threads scans; sg-async on what is not an sg node is refused', async () => {
    const threads = await run(['scan', nodePath, '--engine', 'threads', '--format', 'ndjson']);
    expect(threads.code).toBe(0);
    expect(threads.stdout).toBe((await run(['scan', nodePath, '--format', 'ndjson'])).stdout);
    expect(threads.stdout).toMatch(/"status":3/);
    const refused = await run(['scan', nodePath, '--engine', 'sg-async']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/needs an sg node/);
  });

  it('teaches with --help', async () => {
    const { code, stdout } = await run(['scan', '--help']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/Examples:/);
    expect((await run(['--help'])).stdout).toMatch(/Commands:\n {2}info/);
  });
});

describe('lba-status info', () => {
  it('prints identity and geometry', async () => {
    const { code, stdout } = await run(['info', nodePath]);
    expect(code).toBe(0);
    expect(stdout).toMatch(/vendor:\s+FAKE/);
    expect(stdout).toMatch(/capacity:\s+1048576 blocks \(512 MiB\)/);
    expect(stdout).toMatch(/GET LBA STATUS\(32\):\s+unknown/);
  });

  it('prints JSON with --json', async () => {
    const { stdout } = await run(['info', nodePath, '--json']);
    expect(JSON.parse(stdout)).toMatchObject({
      blockSize: 512,
      capacityBlocks: 0x100000,
      lbpme: true,
    });
  });
});

describe('lba-status scan summary', () => {
  it('counts the aligned extents it printed with --change-block-size', async () => {
    const { stdout } = await run([
      'scan',
      nodePath,
      '--changed-only',
      '--change-block-size',
      '64K',
      '--format',
      'text',
    ]);
    expect(stdout).toMatch(/^1 changed extent\(s\), 8\.0 KiB of 512 MiB changed/m);
  });
});
