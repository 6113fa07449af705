// The OCI contract exactly as a user runs it, as two processes of the built CLI in the guest:
// `lba-status sim serve --oci-api` (fake OCI API + simulator targets), then `lba-status oci
// delta` with the ready line's endpoint, config file, instance and backups, through the real
// iscsid/iscsiadm. The result must equal the changed byte ranges the server drew
// (`--dump-changed`) widened to the delta's change block size by the test's own naive bitmap
// (test/support/oracle.ts), and `--dump-changed-at` at that size; afterwards nothing is left:
// no iSCSI session or node record, and `oci sweep` finds no volume or attachment.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { type ByteRange, expectedDelta, mappedRuns } from '../../support/oracle.js';
import { mappedRanges } from '../sim/attach.js';
import { run } from '../support/index.js';

const cli = join(process.cwd(), 'dist/cli.js');
const work = mkdtempSync(join(process.env.GUEST_OUT ?? tmpdir(), 'oci-cli-'));
let server: ChildProcess | undefined;

afterAll(() => {
  server?.kill('SIGTERM');
});

describe('sim serve --oci-api + oci delta (the CLI contract)', () => {
  it('returns exactly the served changed set and leaves nothing behind', {
    timeout: 180_000,
  }, async () => {
    const map = join(work, 'map.json');
    server = spawn(
      process.execPath,
      [
        cli,
        'sim',
        'serve',
        '--size',
        '128M',
        '--change-block-size',
        '65536',
        '--random-changes',
        '30',
        '--seed',
        '11',
        '--port',
        '0',
        '--oci-api',
        '--oci-dir',
        work,
        '--dump-changed',
        map,
        '--dump-changed-at',
        '65536',
        `${map}.at-65536`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const ready = await new Promise<{ oci: Record<string, string> }>((resolve, reject) => {
      let text = '';
      server!.stdout!.on('data', (chunk: Buffer) => {
        text += chunk;
        if (text.includes('\n')) resolve(JSON.parse(text.split('\n')[0]!));
      });
      server!.once('exit', (code) => reject(new Error(`sim serve exited ${code}`)));
    });
    const { oci } = ready;
    const common = [
      '--config-file',
      oci.configFile!,
      '--endpoint',
      oci.endpoint!,
      '--instance-id',
      oci.instanceId!,
    ];
    const delta = await promisify(execFile)(
      process.execPath,
      [
        cli,
        'oci',
        'delta',
        '--first-backup',
        oci.firstBackupId!,
        '--second-backup',
        oci.secondBackupId!,
        '--change-block-size',
        '65536',
        '--no-progress',
        ...common,
      ],
      { maxBuffer: 64 << 20 },
    );
    const printed = delta.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { lba: number; blocks: number; status: number });
    // The server serves its own target at 65536 and draws the byte set once; the delta asks
    // for 65536 too (the OCI API's changeBlockSizeInBytes).
    const geometry = { sizeBytes: 128 << 20, blockSize: 512, changeBlockSize: 65536 };
    const bytes = JSON.parse(readFileSync(map, 'utf8')) as ByteRange[];
    expect(bytes).toHaveLength(30);
    const expected = mappedRuns(expectedDelta(bytes, geometry));
    expect(mappedRanges(printed)).toEqual(expected);
    const dumpedAt = JSON.parse(readFileSync(`${map}.at-65536`, 'utf8')) as ByteRange[];
    expect(mappedRuns(expectedDelta(dumpedAt, { ...geometry, changeBlockSize: 512 }))).toEqual(
      expected,
    );
    expect(printed.length).toBeGreaterThan(0);

    expect((await run('iscsiadm', ['-m', 'session'])).stdout).not.toContain('oracleiaas');
    expect((await run('iscsiadm', ['-m', 'node'])).stdout).not.toContain('oracleiaas');
    const sweep = await promisify(execFile)(process.execPath, [
      cli,
      'oci',
      'sweep',
      '--older-than',
      '0',
      '--dry-run',
      '--format',
      'json',
      ...common,
    ]);
    const leftovers = JSON.parse(sweep.stdout) as { volumes: unknown[]; attachments: unknown[] };
    expect(leftovers.volumes).toEqual([]);
    expect(leftovers.attachments).toEqual([]);
  });
});
