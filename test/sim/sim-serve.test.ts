import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { simServeCommand } from '../../lib/cli/sim-serve.js';
import { IscsiInitiator } from '../../lib/iscsi/initiator.js';
import { expectedWidenedBytes } from '../support/oracle.js';
import { gls32Cdb, parseGls } from './helpers.js';

/** Temporary directories of these tests, removed at the end. */
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const tempDir = (prefix: string): string => {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
};

function io() {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (c) => {
    out += c;
  });
  stderr.on('data', (c) => {
    err += c;
  });
  const ac = new AbortController();
  return {
    io: { stdout, stderr, signal: ac.signal, env: {} },
    abort: () => ac.abort(),
    out: () => out,
    err: () => err,
  };
}

async function waitFor(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
}

describe('lba-status sim serve', () => {
  it('prints the ready line, serves the map from --changed, dumps it, and stops on abort', async () => {
    const dir = tempDir('sim-serve-');
    writeFileSync(
      join(dir, 'changed.json'),
      JSON.stringify([
        { offset: 4096, length: 1 },
        { offset: 1 << 20, length: 8192 },
      ]),
    );
    const t = io();
    const done = simServeCommand.run(
      [
        '--size',
        '64M',
        '--changed',
        join(dir, 'changed.json'),
        '--port',
        '0',
        '--iqn',
        'iqn.2024-01.test:cli',
        '--dump-changed',
        join(dir, 'dump.json'),
        '--dump-changed-at',
        '4096',
        join(dir, 'dump-4k.json'),
        '--dump-changed-at',
        '2M',
        join(dir, 'dump-2m.json'),
      ],
      t.io,
    );
    await waitFor(() => t.out().includes('\n'));
    const ready = JSON.parse(t.out());
    expect(ready).toMatchObject({ iscsi: { iqn: 'iqn.2024-01.test:cli', lun: 1 }, changed: 2 });
    expect(ready.iscsi.portal).toMatch(/^127\.0\.0\.1:\d+$/);
    // --dump-changed: the byte ranges as given; --dump-changed-at C: widened to C and merged.
    const ranges = [
      { offset: 4096, length: 1 },
      { offset: 1 << 20, length: 8192 },
    ];
    const dumped = (name: string) => JSON.parse(readFileSync(join(dir, name), 'utf8'));
    expect(dumped('dump.json')).toEqual(ranges);
    const g = { sizeBytes: 64 << 20, blockSize: 512 };
    expect(dumped('dump-4k.json')).toEqual(
      expectedWidenedBytes(ranges, { ...g, changeBlockSize: 4096 }),
    );
    expect(dumped('dump-4k.json')).toEqual([
      { offset: 4096, length: 4096 },
      { offset: 1 << 20, length: 8192 },
    ]);
    expect(dumped('dump-2m.json')).toEqual([{ offset: 0, length: 2 << 20 }]);
    const [host, port] = ready.iscsi.portal.split(':');
    const ini = await IscsiInitiator.connect({
      host,
      port: Number(port),
      targetName: ready.iscsi.iqn,
    });
    await ini.command(1, Buffer.alloc(6)); // consume the UNIT ATTENTION
    const r = await ini.command(1, gls32Cdb(0, 4096, 1024), { dataInLength: 1024 });
    expect(parseGls(r.data).descriptors).toEqual([
      { lba: 8, blocks: 8, status: 3 },
      { lba: 2048, blocks: 16, status: 3 },
    ]);
    t.abort();
    expect(await done).toBe(0);
    expect(
      ini.closed ||
        (await ini.nop().then(
          () => false,
          () => true,
        )),
    ).toBe(true);
  });

  it('accepts --random-changes with faults and rejects usage mistakes with exit code 2', async () => {
    const t = io();
    const done = simServeCommand.run(
      [
        '--size',
        '1G',
        '--random-changes',
        '10',
        '--seed',
        '4',
        '--port',
        '0',
        '--fault',
        'busy:count=2',
      ],
      t.io,
    );
    await waitFor(() => t.out().includes('\n'));
    expect(JSON.parse(t.out()).changed).toBe(10);
    t.abort();
    expect(await done).toBe(0);
    for (const args of [
      ['--random-changes', '3'],
      ['--size', '1G'],
      ['--size', '1G', '--random-changes', '3', '--block-size', '1024'],
      ['--size', '1G', '--random-changes', '3', '--fault', 'explode'],
      ['--size', '1G', '--random-changes', '3', '--bogus'],
      ['--size', '1G', '--changed', '/nonexistent.json'],
    ]) {
      const u = io();
      expect(await simServeCommand.run(args, u.io)).toBe(2);
      expect(u.err()).toMatch(/^lba-status: /);
    }
  });

  it('has help with examples', async () => {
    const t = io();
    expect(await simServeCommand.run(['--help'], t.io)).toBe(0);
    expect(t.out()).toContain('Examples:');
    expect(simServeCommand.path).toEqual(['sim', 'serve']);
  });
});

describe('lba-status sim serve --oci-api', () => {
  it('adds the fake OCI API to the ready line; it refuses unsigned requests and shuts down with the target', async () => {
    const dir = tempDir('sim-serve-oci-');
    const t = io();
    const done = simServeCommand.run(
      [
        '--size',
        '64M',
        '--random-changes',
        '10',
        '--seed',
        '3',
        '--port',
        '0',
        '--oci-api',
        '--oci-dir',
        dir,
      ],
      t.io,
    );
    await waitFor(() => t.out().includes('\n'));
    const ready = JSON.parse(t.out().split('\n')[0]!);
    expect(ready.changed).toBe(10);
    expect(ready.oci).toMatchObject({
      endpoint: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/),
      configFile: expect.stringContaining(dir),
      profile: 'DEFAULT',
      instanceId: expect.stringMatching(/^ocid1\.instance\./),
      firstBackupId: expect.stringMatching(/^ocid1\.volumebackup\./),
      secondBackupId: expect.stringMatching(/^ocid1\.volumebackup\./),
    });
    expect(readFileSync(ready.oci.configFile, 'utf8')).toMatch(/key_file=/);
    const unsigned = await fetch(
      `${ready.oci.endpoint}/20160918/volumeBackups/${ready.oci.secondBackupId}`,
    );
    expect(unsigned.status).toBe(401);
    t.abort();
    expect(await done).toBe(0);
    await expect(fetch(`${ready.oci.endpoint}/20160918/volumes`)).rejects.toThrow();
  });
});
