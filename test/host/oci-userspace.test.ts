// Issue 10's OCI proof, without privileges: `lba-status sim serve --oci-api` (fake tenancy +
// simulator targets) and `lba-status oci delta --attach userspace`, both as the unprivileged
// client user (nobody when the tests run as root) with no iscsiadm on PATH — the exact changed
// set, and afterwards no volume and no attachment in the fake tenancy. The expectation is the
// test's own byte ranges through the naive change-block bitmap of support.ts.
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import {
  changedLbasOf,
  clientDir,
  clientRootDir,
  clientUser,
  cliReason,
  describeIf,
  expectedChangedLbas,
  parseNdjson,
  runCli,
} from './support.js';

const SIZE = 64 * 2 ** 20;
const CHANGE = 65536;
const RANGES = [
  { offset: 0, length: 512 },
  { offset: 3 * 2 ** 20, length: 200_000 },
  { offset: 17 * 2 ** 20 + 65_535, length: 2 },
  { offset: 50 * 2 ** 20, length: 2 ** 20 },
  { offset: SIZE - 1, length: 1 },
];

/** A PATH with node and nothing else: no iscsiadm, no sg3_utils. */
const BARE_PATH = dirname(process.execPath);

describeIf('oci delta --attach userspace as an unprivileged user', cliReason(), () => {
  const dir = clientDir('oci-userspace');
  let server: ChildProcess | undefined;
  afterAll(async () => {
    if (server && server.exitCode === null) {
      const exited = new Promise((done) => server!.once('exit', done));
      server.kill('SIGTERM');
      await exited;
    }
    dir.remove();
  });

  it('prints exactly the changed set and leaves no volume or attachment', async () => {
    const { user } = clientUser();
    const changed = join(dir.path, 'changed.json');
    writeFileSync(changed, JSON.stringify(RANGES));
    const argv = [
      ...user!.prefix,
      process.execPath,
      join(clientRootDir(), 'dist/cli.js'),
      'sim',
      'serve',
      '--size',
      String(SIZE),
      '--changed',
      changed,
      '--port',
      '0',
      '--oci-api',
      '--oci-dir',
      join(dir.path, 'oci'),
    ];
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: dir.path,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: dir.path,
        TMPDIR: tmpdir(),
        LANG: 'C.UTF-8',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    server = child;
    let log = '';
    child.stderr!.on('data', (c: Buffer) => {
      log += c;
    });
    const ready = await new Promise<{ oci: Record<string, string> }>((done, fail) => {
      let text = '';
      child.stdout!.on('data', (c: Buffer) => {
        text += c;
        const nl = text.indexOf('\n');
        if (nl >= 0) done(JSON.parse(text.slice(0, nl)));
      });
      child.once('exit', (code) => fail(new Error(`sim serve exited ${code}: ${log}`)));
    });
    const common = [
      '--config-file',
      ready.oci.configFile!,
      '--endpoint',
      ready.oci.endpoint!,
      '--instance-id',
      ready.oci.instanceId!,
    ];
    const env = { PATH: BARE_PATH };
    const delta = await runCli(
      [
        'oci',
        'delta',
        '--attach',
        'userspace',
        '--first-backup',
        ready.oci.firstBackupId!,
        '--second-backup',
        ready.oci.secondBackupId!,
        '--change-block-size',
        String(CHANGE),
        '--format',
        'ndjson',
        ...common,
      ],
      { env },
    );
    expect(delta.code, delta.stderr).toBe(0);
    const extents = parseNdjson(delta.stdout);
    expect(changedLbasOf(extents, SIZE / 512)).toEqual(
      expectedChangedLbas(RANGES, SIZE, CHANGE, 512),
    );

    const sweep = await runCli(
      ['oci', 'sweep', '--older-than', '0', '--dry-run', '--format', 'json', ...common],
      { env },
    );
    expect(sweep.code, sweep.stderr).toBe(0);
    const left = JSON.parse(sweep.stdout) as { volumes: unknown[]; attachments: unknown[] };
    expect(left).toMatchObject({ volumes: [], attachments: [] });
  });
});
