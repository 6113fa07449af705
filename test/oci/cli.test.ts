import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CliIo } from '../../lib/cli/command.js';
import {
  createOciDeltaCommand,
  createOciSweepCommand,
  type DeltaScanner,
  ociDeltaCommand,
  ociSweepCommand,
} from '../../lib/cli/oci.js';
import type { OciDeltaProvisionerConfig } from '../../lib/oci/provisioner.js';
import { FAST, type Harness, makeHarness } from './harness.js';

function makeIo(
  signal = new AbortController().signal,
): CliIo & { out: () => string; err: () => string } {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => {
    out += String(d);
  });
  stderr.on('data', (d) => {
    err += String(d);
  });
  return { stdout, stderr, signal, env: {}, out: () => out, err: () => err };
}

describe('lba-status oci delta / sweep', () => {
  let h: Harness;
  let config: Partial<OciDeltaProvisionerConfig>;
  let args: string[];
  beforeEach(async () => {
    h = await makeHarness();
    config = {
      iscsiadm: { binary: h.iscsi.binary, env: h.iscsi.env, lockPath: join(h.dir, 'cli.lock') },
      sysfsRoot: h.iscsi.sysfsRoot,
      deviceTimeoutMs: 400,
      deviceIntervalMs: 10,
      poll: FAST,
      retry: { maxAttempts: 3, baseDelayMs: 5, maxDelayMs: 20 },
    };
    args = [
      '--config-file',
      h.creds.configFile as string,
      '--endpoint',
      h.api.endpoint,
      '--imds-url',
      h.api.endpoint,
    ];
  });
  afterEach(async () => {
    await h.close();
  });

  const scanner: DeltaScanner = async (volume, emit) => {
    expect(volume.devicePath).toMatch(/^\/dev\/sd/);
    await emit({ lba: 96, blocks: 16, status: 3, additional: 0 });
    await emit({ lba: 2048, blocks: 2048, status: 3, additional: 0 });
    return { blockSize: 512, capacityBlocks: 2097152 };
  };

  it('prints changed extents as ndjson, progress on stderr, and leaves nothing behind', async () => {
    const { first, second } = h.api.seedBackupPair();
    const io = makeIo();
    const cmd = createOciDeltaCommand({ config, scan: scanner });
    const code = await cmd.run(
      [
        ...args,
        '--first-backup',
        first.id,
        '--second-backup',
        second.id,
        '--change-block-size',
        '64K',
        '--verbose',
      ],
      io,
    );
    expect(io.err()).toMatch(/oci: create start/);
    expect(code).toBe(0);
    expect(io.out()).toBe(
      '{"lba":96,"blocks":16,"status":3,"additional":0}\n{"lba":2048,"blocks":2048,"status":3,"additional":0}\n',
    );
    expect(io.err()).toMatch(/oci: delete done/);
    expect(await h.leftovers()).toEqual([]);
    const vol = h.api.volumes()[0] as { sourceDetails: { changeBlockSizeInBytes: number } };
    expect(vol.sourceDetails.changeBlockSizeInBytes).toBe(65536);
  });

  it('json format carries a summary', async () => {
    const { first, second } = h.api.seedBackupPair();
    const io = makeIo();
    const code = await createOciDeltaCommand({ config, scan: scanner }).run(
      [
        ...args,
        '--first-backup',
        first.id,
        '--second-backup',
        second.id,
        '--format',
        'json',
        '--no-progress',
      ],
      io,
    );
    expect(code).toBe(0);
    const doc = JSON.parse(io.out()) as { summary: Record<string, unknown>; extents: unknown[] };
    expect(doc.extents).toHaveLength(2);
    expect(doc.summary).toMatchObject({
      changedExtents: 2,
      changedBlocks: 2064,
      changedBytes: 2064 * 512,
      kind: 'block',
      changeBlockSize: 4096,
    });
    expect(io.err()).toBe('');
  });

  it('usage errors and backups that cannot make a delta exit 2 with one line naming the flag', async () => {
    const io = makeIo();
    expect(await ociDeltaCommand.run(['--first-backup', 'x'], io)).toBe(2);
    expect(io.err()).toMatch(/--second-backup are required/);
    const io2 = makeIo();
    const { first, second } = h.api.seedBackupPair();
    expect(
      await createOciDeltaCommand({ config, scan: scanner }).run(
        [...args, '--first-backup', first.id, '--second-backup', first.id],
        io2,
      ),
    ).toBe(2);
    expect(io2.err()).toMatch(
      /^lba-status: --first-backup, --second-backup: first and second backup are the same/m,
    );
    const bad = makeIo();
    expect(
      await createOciDeltaCommand({ config, scan: scanner }).run(
        [...args, '--first-backup', 'ocid1.volume.oc1..nope', '--second-backup', second.id],
        bad,
      ),
    ).toBe(2);
    expect(bad.err()).toBe(
      'lba-status: --first-backup "ocid1.volume.oc1..nope" is not a volume backup OCID (expected ocid1.volumebackup.<realm>.<region>.<id> or ocid1.bootvolumebackup.…)\n',
    );
    const swapped = makeIo();
    expect(
      await createOciDeltaCommand({ config, scan: scanner }).run(
        [...args, '--first-backup', second.id, '--second-backup', first.id],
        swapped,
      ),
    ).toBe(2);
    expect(swapped.err()).toMatch(/^lba-status: --first-backup, --second-backup: .*swap them\n$/);
    expect(await h.leftovers()).toEqual([]);
  });

  it('an OCI API failure exits 8 (cloud API error) with one line', async () => {
    const { first, second } = h.api.seedBackupPair();
    h.api.inject({ operation: 'GetVolumeBackup', status: 500, times: Infinity });
    const io = makeIo();
    const code = await createOciDeltaCommand({ config, scan: scanner }).run(
      [...args, '--first-backup', first.id, '--second-backup', second.id],
      io,
    );
    expect(code).toBe(8);
    expect(io.err().trim().split('\n')).toHaveLength(1);
    expect(io.err()).toMatch(/^lba-status: /);
    expect(await h.leftovers()).toEqual([]);
  });

  it('prints no step line on a non-TTY stderr without --verbose, and prints them on a TTY', async () => {
    const { first, second } = h.api.seedBackupPair();
    const quiet = makeIo();
    const cmd = createOciDeltaCommand({ config, scan: scanner });
    expect(
      await cmd.run([...args, '--first-backup', first.id, '--second-backup', second.id], quiet),
    ).toBe(0);
    expect(quiet.err()).toBe('');
    const tty = makeIo();
    Object.assign(tty.stderr, { isTTY: true });
    expect(
      await cmd.run([...args, '--first-backup', first.id, '--second-backup', second.id], tty),
    ).toBe(0);
    expect(tty.err()).toMatch(/^oci: create start/m);
    const off = makeIo();
    Object.assign(off.stderr, { isTTY: true });
    expect(
      await cmd.run(
        [...args, '--first-backup', first.id, '--second-backup', second.id, '--no-progress'],
        off,
      ),
    ).toBe(0);
    expect(off.err()).toBe('');
    expect(await h.leftovers()).toEqual([]);
  });

  it('a signal during the scan (SIGINT/SIGTERM) cleans up and exits 130', async () => {
    const { first, second } = h.api.seedBackupPair();
    const ac = new AbortController();
    const io = makeIo(ac.signal);
    const slow: DeltaScanner = async (_v, emit, signal) => {
      await emit({ lba: 0, blocks: 8, status: 3, additional: 0 });
      setTimeout(() => ac.abort(new Error('received SIGINT')), 10);
      await new Promise((_, reject) =>
        signal.addEventListener('abort', () => reject(signal.reason)),
      );
      return { blockSize: 512, capacityBlocks: 0 };
    };
    const code = await createOciDeltaCommand({ config, scan: slow }).run(
      [...args, '--first-backup', first.id, '--second-backup', second.id],
      io,
    );
    expect(code).toBe(130);
    expect(await h.leftovers()).toEqual([]);
  });

  it('sweep removes an orphan and reports it', async () => {
    const orphan = await h.api.plantOrphan({
      tags: {
        'lba-status': 'delta',
        'lba-status-created': new Date(Date.now() - 7_200_000).toISOString(),
      },
      attach: true,
    });
    const io = makeIo();
    const code = await createOciSweepCommand({ config }).run([...args, '--older-than', '1h'], io);
    expect(code).toBe(0);
    expect(JSON.parse(io.out())).toMatchObject({
      dryRun: false,
      volumes: [orphan.volumeId],
      attachments: [orphan.attachmentId],
      errors: [],
    });
    expect(await h.leftovers()).toEqual([]);
  });

  it('turns the SDK retry warnings into short oci: lines and drops the rest', async () => {
    const { first, second } = h.api.seedBackupPair();
    h.api.inject({ operation: 'GetVolumeBackup', status: 500 });
    const io = makeIo();
    const code = await createOciDeltaCommand({ config, scan: scanner }).run(
      [...args, '--first-backup', first.id, '--second-backup', second.id, '--verbose'],
      io,
    );
    expect(code).toBe(0);
    expect(io.err()).toMatch(/^oci: retry 1 in [\d.]+ s after: /m);
    expect(io.err()).not.toMatch(/Request failed with Exception|Request cannot be retried/);
    const ghost = makeIo();
    expect(
      await createOciDeltaCommand({ config, scan: scanner }).run(
        [
          ...args,
          '--first-backup',
          first.id,
          '--second-backup',
          second.id.replace(/.{4}$/, '0000'),
        ],
        ghost,
      ),
    ).toBe(2);
    expect(ghost.err()).toMatch(/^lba-status: --second-backup .* was not found/m);
    expect(ghost.err()).not.toMatch(/Request cannot be retried/);
  });

  it('every command has --help with an example', async () => {
    for (const c of [ociDeltaCommand, ociSweepCommand]) {
      const io = makeIo();
      expect(await c.run(['--help'], io)).toBe(0);
      expect(io.out()).toMatch(/Examples:\n {2}(sudo )?lba-status oci /);
    }
    expect(ociDeltaCommand.path).toEqual(['oci', 'delta']);
    expect(ociSweepCommand.path).toEqual(['oci', 'sweep']);
  });
});
