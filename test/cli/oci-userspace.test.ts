// `oci delta --attach userspace` as a user runs it, with no root, no iscsid and no iscsiadm:
// `lba-status sim serve --oci-api` in a child process (fake OCI API + simulator targets), then
// `lba-status oci delta --attach userspace --export DIR` in another, with a PATH that holds no
// iscsiadm. The printed extents and the export must be exactly the test's own byte ranges widened
// to the change block size; afterwards the fake tenancy holds no volume and no attachment.
// Then the same in process with an API whose attachments demand CHAP: the secret the
// attachment hands out never appears in any output.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { createOciDeltaCommand, createOciSweepCommand } from '../../lib/cli/oci.js';
import { startOciSimulation } from '../../lib/sim/fake-oci/oci-simulation.js';
import { expectedRuns, makeIo, mergeRuns } from './helpers.js';

const run = promisify(execFile);
const cli = join(process.cwd(), 'dist/cli.js');
const work = mkdtempSync(join(tmpdir(), 'lba-oci-userspace-'));
const SIZE = 64 << 20;
const CBS = 65536;
/** What changed between the two fake backups, in bytes: the test's own list. */
const RANGES = [
  { offset: 0, length: 512 },
  { offset: 3 << 20, length: 200_000 },
  { offset: (17 << 20) + 65_535, length: 2 },
  { offset: 50 << 20, length: 1 << 20 },
];
const EXPECTED = expectedRuns(RANGES, SIZE, CBS);

let server: ChildProcess | undefined;

afterAll(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((resolve) => server?.once('exit', resolve));
    server.kill('SIGTERM');
    await exited;
  }
  rmSync(work, { recursive: true, force: true });
});

/** A child's environment with no iscsiadm on PATH and no lba-status secrets. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: dirname(process.execPath) };
  for (const k of Object.keys(env)) if (k.startsWith('LBA_STATUS_')) delete env[k];
  return env;
}

const asRuns = (extents: Array<{ lba: number; blocks: number }>) =>
  mergeRuns(extents.map((e) => ({ offset: e.lba * 512, length: e.blocks * 512 })));

describe('oci delta --attach userspace against sim serve --oci-api (child processes)', () => {
  it('prints exactly the changed set, exports it, and leaves no volume or attachment', {
    timeout: 120_000,
  }, async () => {
    expect(existsSync(cli), `${cli} is missing: run npm run build:ts first`).toBe(true);
    const changed = join(work, 'changed.json');
    writeFileSync(changed, JSON.stringify(RANGES));
    server = spawn(
      process.execPath,
      [
        cli,
        'sim',
        'serve',
        '--size',
        '64M',
        '--changed',
        changed,
        '--port',
        '0',
        '--oci-api',
        '--oci-dir',
        work,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() },
    );
    let serverErr = '';
    server.stderr?.on('data', (d) => {
      serverErr += String(d);
    });
    const ready = await new Promise<{ oci: Record<string, string> }>((resolve, reject) => {
      let text = '';
      server?.stdout?.on('data', (chunk: Buffer) => {
        text += chunk;
        if (text.includes('\n')) resolve(JSON.parse(text.split('\n')[0] as string));
      });
      server?.once('exit', (code) => reject(new Error(`sim serve exited ${code}: ${serverErr}`)));
    });
    const { oci } = ready;
    const common = [
      '--config-file',
      oci.configFile as string,
      '--endpoint',
      oci.endpoint as string,
      '--instance-id',
      oci.instanceId as string,
    ];
    const exportDir = join(work, 'export');
    const delta = await run(
      process.execPath,
      [
        cli,
        'oci',
        'delta',
        '--attach',
        'userspace',
        '--first-backup',
        oci.firstBackupId as string,
        '--second-backup',
        oci.secondBackupId as string,
        '--change-block-size',
        String(CBS),
        '--export',
        exportDir,
        '--format',
        'ndjson',
        '--verbose',
        ...common,
      ],
      { env: childEnv(), maxBuffer: 16 << 20 },
    ).catch((e: { stdout?: string; stderr?: string; code?: number }) => {
      throw new Error(`oci delta exited ${e.code}: ${e.stderr}`);
    });
    const printed = delta.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { lba: number; blocks: number; status: number });
    expect(printed.every((e) => e.status === 3)).toBe(true);
    expect(asRuns(printed)).toEqual(EXPECTED);
    // The progress on stderr shows the userspace path: an iscsi:// device, no iscsiadm step.
    expect(delta.stderr).toMatch(/oci: device done iscsi:\/\/127\.0\.0\.1:\d+\/iqn\.[^ ]+\/1\n/);
    expect(delta.stderr).not.toMatch(/oci: (login|logout|node-delete) /);
    expect(delta.stderr).toMatch(/oci: delete done/);

    const manifest = JSON.parse(readFileSync(join(exportDir, 'manifest.json'), 'utf8'));
    expect(manifest).toMatchObject({
      complete: true,
      changeBlockSize: CBS,
      source: { firstBackupId: oci.firstBackupId, secondBackupId: oci.secondBackupId },
    });
    expect(mergeRuns(manifest.extents)).toEqual(EXPECTED);

    const sweep = await run(
      process.execPath,
      [cli, 'oci', 'sweep', '--older-than', '0', '--dry-run', '--format', 'json', ...common],
      { env: childEnv() },
    );
    const left = JSON.parse(sweep.stdout) as { volumes: unknown[]; attachments: unknown[] };
    expect(left.volumes).toEqual([]);
    expect(left.attachments).toEqual([]);
  });
});

describe('oci delta --attach userspace when the attachment demands CHAP', () => {
  it('logs in with the attachment’s credentials and never prints them', {
    timeout: 60_000,
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lba-oci-chap-'));
    const sim = await startOciSimulation({ dir, sizeBytes: SIZE, changed: RANGES, chap: true });
    try {
      const args = [
        '--config-file',
        sim.info.configFile,
        '--endpoint',
        sim.info.endpoint,
        '--instance-id',
        sim.info.instanceId,
      ];
      const io = makeIo();
      const code = await createOciDeltaCommand({
        config: { poll: { intervalMs: 10, maxIntervalMs: 50, timeoutMs: 20_000 } },
      }).run(
        [
          ...args,
          '--attach',
          'userspace',
          '--first-backup',
          sim.info.firstBackupId,
          '--second-backup',
          sim.info.secondBackupId,
          '--change-block-size',
          '64K',
          '--format',
          'json',
          '--verbose',
        ],
        io,
      );
      expect(io.err()).not.toMatch(/^lba-status:/m);
      expect(code).toBe(0);
      const doc = JSON.parse(io.out()) as {
        summary: { device: string };
        extents: Array<{ lba: number; blocks: number }>;
      };
      expect(asRuns(doc.extents)).toEqual(EXPECTED);
      expect(doc.summary.device).toMatch(/^iscsi:\/\/127\.0\.0\.1:\d+\//);
      const attachment = sim.api.attachments()[0] as { chapUsername?: string; chapSecret?: string };
      expect(attachment.chapSecret).toBeTruthy();
      expect(io.out() + io.err()).not.toContain(attachment.chapSecret as string);
      expect(io.err()).toMatch(/oci: device done iscsi:\/\/.* \(CHAP\)/);

      const sweepIo = makeIo();
      expect(
        await createOciSweepCommand().run(
          [...args, '--older-than', '0', '--dry-run', '--format', 'json'],
          sweepIo,
        ),
      ).toBe(0);
      expect(JSON.parse(sweepIo.out())).toMatchObject({ volumes: [], attachments: [] });
    } finally {
      await sim.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('oci delta --attach: usage errors (exit 2)', () => {
  it('refuses an unknown mode and --iscsiadm with userspace', async () => {
    const base = [
      '--first-backup',
      'ocid1.volumebackup.oc1..a',
      '--second-backup',
      'ocid1.volumebackup.oc1..b',
    ];
    for (const [args, message] of [
      [['--attach', 'kernel'], /--attach must be iscsiadm or userspace, got 'kernel'/],
      [
        ['--attach', 'userspace', '--iscsiadm', '/sbin/iscsiadm'],
        /--iscsiadm applies only to --attach iscsiadm/,
      ],
    ] as const) {
      const io = makeIo();
      expect(await createOciDeltaCommand().run([...base, ...args], io)).toBe(2);
      expect(io.err()).toMatch(message);
    }
  });
});
