// The DEVICE argument and its CHAP options in every command that opens a device (info, scan,
// read, export, verify --device): usage errors name the flag and exit 2, the secret file is
// refused unless private, the secret comes from a file or the environment only, and no secret
// ever reaches stdout or stderr — including when the login is refused.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deviceArgs } from '../../lib/cli/device-args.js';
import { main } from '../../lib/cli/main.js';
import { type Simulator, startSimulator } from '../../lib/sim/simulator.js';
import { expectedRuns, makeIo, mergeRuns, type TestIo } from './helpers.js';

const SECRET = 'Cli-Chap-S3cret-7f1d';
const TARGET_SECRET = 'Cli-Mutual-S3cret-9a2c';
const IQN = 'iqn.2024-01.lba-status:cli-test';
const SIZE = 64 << 20;
const CBS = 65536;
/** What the simulator is told changed, in bytes; the expectation is derived from this list. */
const RANGES = [
  { offset: 5000, length: 1 },
  { offset: 1 << 20, length: 70_000 },
  { offset: 40 << 20, length: 4096 },
  { offset: SIZE - 1, length: 1 },
];

const dir = mkdtempSync(join(tmpdir(), 'lba-cli-dev-'));
const privateFile = join(dir, 'chap.secret');
const openFile = join(dir, 'chap-open.secret');
const groupFile = join(dir, 'chap-group.secret');
const targetFile = join(dir, 'target.secret');
/** Everything every command printed, to grep for the secrets at the end. */
const printed: string[] = [];

async function cli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<TestIo & { code: number }> {
  const io = makeIo(env);
  const code = await main(args, io);
  printed.push(io.out(), io.err());
  return Object.assign(io, { code });
}

const url = (port: number, user = 'backup') =>
  `iscsi://${user ? `${user}@` : ''}127.0.0.1:${port}/${IQN}/1`;

beforeAll(() => {
  writeFileSync(privateFile, `${SECRET}\n`, { mode: 0o600 });
  writeFileSync(openFile, `${SECRET}\n`, { mode: 0o644 });
  chmodSync(openFile, 0o644); // whatever the umask
  writeFileSync(groupFile, SECRET, { mode: 0o600 });
  chmodSync(groupFile, 0o640);
  writeFileSync(targetFile, TARGET_SECRET, { mode: 0o600 });
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  const all = printed.join('\n');
  expect(all).not.toContain(SECRET);
  expect(all).not.toContain(TARGET_SECRET);
});

describe('device/CHAP options: usage errors (exit 2, the flag named, no secret)', () => {
  const u = url(3260);

  it('refuses a secret file group or others can read, saying chmod 600 FILE', async () => {
    for (const file of [openFile, groupFile]) {
      const r = await cli(['scan', u, '--chap-secret-file', file]);
      expect(r.code).toBe(2);
      expect(r.err()).toContain(`chmod 600 ${file}`);
      expect(r.err()).toMatch(/^lba-status: --chap-secret-file /);
    }
    const t = await cli(
      ['info', u, '--target-chap-user', 't', '--target-chap-secret-file', openFile],
      {
        LBA_STATUS_CHAP_SECRET: SECRET,
      },
    );
    expect(t.code).toBe(2);
    expect(t.err()).toContain(`--target-chap-secret-file ${openFile}`);
    expect(t.err()).toContain(`chmod 600 ${openFile}`);
  });

  it('a missing or empty secret file is a usage error naming the flag', async () => {
    const empty = join(dir, 'empty.secret');
    writeFileSync(empty, '\n', { mode: 0o600 });
    for (const file of [join(dir, 'nope'), empty, dir]) {
      const r = await cli(['scan', u, '--chap-secret-file', file]);
      expect(r.code).toBe(2);
      expect(r.err()).toContain(`--chap-secret-file ${file}`);
    }
  });

  it('a user without a secret, or a secret without a user, is a usage error', async () => {
    const noSecret = await cli(['scan', u]);
    expect(noSecret.code).toBe(2);
    expect(noSecret.err()).toMatch(
      /CHAP user 'backup' has no secret: set LBA_STATUS_CHAP_SECRET or give --chap-secret-file/,
    );
    const flagUser = await cli(['scan', url(3260, ''), '--chap-user', 'backup']);
    expect(flagUser.code).toBe(2);
    const noUser = await cli(['info', url(3260, '')], { LBA_STATUS_CHAP_SECRET: SECRET });
    expect(noUser.code).toBe(2);
    expect(noUser.err()).toMatch(/\$LBA_STATUS_CHAP_SECRET\) but no CHAP user: .*--chap-user NAME/);
    const fileNoUser = await cli([
      'export',
      url(3260, ''),
      '--dir',
      dir,
      '--chap-secret-file',
      privateFile,
    ]);
    expect(fileNoUser.code).toBe(2);
    expect(fileNoUser.err()).toContain('--chap-user');
    const differ = await cli(['scan', u, '--chap-user', 'other'], {
      LBA_STATUS_CHAP_SECRET: SECRET,
    });
    expect(differ.code).toBe(2);
    expect(differ.err()).toMatch(/--chap-user 'other' differs from the user in the URL/);
  });

  it('mutual CHAP needs its user, its secret and one-way CHAP', async () => {
    const env = { LBA_STATUS_CHAP_SECRET: SECRET };
    const noSecret = await cli(['scan', u, '--target-chap-user', 'tgt'], env);
    expect(noSecret.code).toBe(2);
    expect(noSecret.err()).toMatch(
      /--target-chap-user 'tgt' has no secret: set LBA_STATUS_TARGET_CHAP_SECRET/,
    );
    const noUser = await cli(['scan', u], { ...env, LBA_STATUS_TARGET_CHAP_SECRET: TARGET_SECRET });
    expect(noUser.code).toBe(2);
    expect(noUser.err()).toContain('no --target-chap-user NAME');
    const oneWayMissing = await cli([
      'scan',
      url(3260, ''),
      '--target-chap-user',
      'tgt',
      '--target-chap-secret-file',
      targetFile,
    ]);
    expect(oneWayMissing.code).toBe(2);
    expect(oneWayMissing.err()).toMatch(/--target-chap-user needs CHAP for the initiator too/);
  });

  it('iSCSI flags on a device node, and device-node flags on a URL, name the flag', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['scan', '/dev/null', '--chap-user', 'x'], /--chap-user applies only to iscsi:\/\/ devices/],
      [['info', '/dev/null', '--chap-secret-file', privateFile], /--chap-secret-file applies only/],
      [
        ['read', '/dev/null', '--out', join(dir, 'o'), '--initiator-name', 'iqn.2024-01.a:b'],
        /--initiator-name applies only/,
      ],
      [
        ['verify', '--delta', dir, '--device', '/dev/null', '--target-chap-user', 't'],
        /--target-chap-user applies only to iscsi:\/\/ devices; --device '\/dev\/null'/,
      ],
      [
        ['verify', '--delta', dir, '--base', 'a', '--expect', 'b', '--chap-user', 'x'],
        /--chap-user applies only to --device iscsi:/,
      ],
      [['scan', u, '--engine', 'sg-async'], /--engine applies only to device nodes/],
      [
        ['read', u, '--out', join(dir, 'o'), '--engine', 'threads'],
        /--engine applies only to device nodes/,
      ],
      [
        ['export', u, '--dir', dir, '--method', 'direct'],
        /--method direct applies only to device nodes/,
      ],
      [['scan', u, '--initiator-name', 'not-an-iqn'], /--initiator-name must be an iSCSI name/],
    ];
    for (const [args, message] of cases) {
      const r = await cli(args, { LBA_STATUS_CHAP_SECRET: SECRET });
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err(), args.join(' ')).toMatch(message);
    }
  });

  it('refuses a secret inside the URL without echoing it', async () => {
    for (const bad of [
      `iscsi://backup%${SECRET}@127.0.0.1/${IQN}/1`,
      `iscsi://backup:${SECRET}@127.0.0.1/${IQN}/1`,
    ]) {
      const r = await cli(['scan', bad]);
      expect(r.code).toBe(2);
      expect(r.err()).toMatch(/must not carry a CHAP secret/);
    }
  });

  it('a malformed URL is a usage error', async () => {
    const r = await cli(['info', 'iscsi://127.0.0.1/no-lun-here']);
    expect(r.code).toBe(2);
  });
});

describe('deviceArgs: where the secret comes from', () => {
  it('reads the file (one trailing newline dropped), prefers it to the environment', async () => {
    const io = makeIo({ LBA_STATUS_CHAP_SECRET: 'from-env' });
    const crlf = join(dir, 'crlf.secret');
    writeFileSync(crlf, 'abc\r\n', { mode: 0o600 });
    const twice = join(dir, 'twice.secret');
    writeFileSync(twice, 'abc\n\n', { mode: 0o600 });
    const u = url(3260);
    expect((await deviceArgs(u, { 'chap-secret-file': privateFile }, io)).options.chap).toEqual({
      username: 'backup',
      secret: SECRET,
    });
    expect((await deviceArgs(u, { 'chap-secret-file': crlf }, io)).options.chap?.secret).toBe(
      'abc',
    );
    expect((await deviceArgs(u, { 'chap-secret-file': twice }, io)).options.chap?.secret).toBe(
      'abc\n',
    );
    expect((await deviceArgs(u, {}, io)).options.chap?.secret).toBe('from-env');
  });

  it('builds mutual CHAP, the initiator name, and leaves device nodes alone', async () => {
    const io = makeIo({
      LBA_STATUS_CHAP_SECRET: SECRET,
      LBA_STATUS_TARGET_CHAP_SECRET: TARGET_SECRET,
    });
    const a = await deviceArgs(
      url(3260, ''),
      {
        'chap-user': 'me',
        'target-chap-user': 'tgt',
        'initiator-name': 'iqn.2024-01.com.example:host',
      },
      io,
    );
    expect(a.options).toEqual({
      chap: { username: 'me', secret: SECRET, target: { username: 'tgt', secret: TARGET_SECRET } },
      initiatorName: 'iqn.2024-01.com.example:host',
    });
    // The environment is ignored for a device node (it may be set for other runs).
    expect(await deviceArgs('/dev/sdb', { engine: 'sg-async' }, io)).toEqual({
      address: '/dev/sdb',
      options: { engine: 'sg-async' },
    });
  });
});

describe('every command takes --help with an iscsi:// example and where the secret comes from', () => {
  it('lba-status --help', async () => {
    const r = await cli(['--help']);
    expect(r.code).toBe(0);
    expect(r.out()).toMatch(/^ {2}lba-status scan iscsi:\/\//m);
    expect(r.out()).toContain('LBA_STATUS_CHAP_SECRET');
    expect(r.out()).toMatch(/5 transport \(iSCSI login refused included\)/);
  });

  it.each([['info'], ['scan'], ['read'], ['export'], ['verify']])('%s --help', async (command) => {
    const r = await cli([command, '--help']);
    expect(r.code).toBe(0);
    expect(r.out()).toMatch(/^ {2}.*lba-status .*iscsi:\/\//m);
    expect(r.out()).toContain('LBA_STATUS_CHAP_SECRET');
    expect(r.out()).toContain('--chap-secret-file FILE');
    expect(r.out()).toContain('chmod 600');
  });
});

describe('commands over iscsi:// against a CHAP simulator (userspace initiator)', () => {
  let sim: Simulator;
  beforeAll(async () => {
    sim = await startSimulator({
      sizeBytes: SIZE,
      changeBlockSize: CBS,
      changed: RANGES,
      chap: { username: 'backup', secret: SECRET },
      port: 0,
      iqn: IQN,
    });
  });
  afterAll(async () => {
    await sim?.close();
  });
  const expected = expectedRuns(RANGES, SIZE, CBS);

  it('info, scan, read, export and verify --device work with the secret from a file or the environment', async () => {
    const env = { LBA_STATUS_CHAP_SECRET: SECRET };
    const info = await cli(['info', url(sim.port), '--json'], env);
    expect(info.err()).toBe('');
    expect(info.code).toBe(0);
    expect(JSON.parse(info.out())).toMatchObject({ vendor: 'ORACLE', blockSize: 512 });

    const scan = await cli([
      'scan',
      url(sim.port, ''),
      '--chap-user',
      'backup',
      '--chap-secret-file',
      privateFile,
      '--changed-only',
      '--change-block-size',
      '64K',
      '--format',
      'ndjson',
    ]);
    expect(scan.err()).toBe('');
    expect(scan.code).toBe(0);
    const lines = scan
      .out()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { offset: number; length: number });
    expect(mergeRuns(lines)).toEqual(expected);

    const json = await cli(['scan', url(sim.port), '--format', 'json', '--concurrency', '2'], env);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.out()).summary.device).toBe(url(sim.port));

    const img = join(dir, 'delta.img');
    const read = await cli(
      ['read', url(sim.port), '--out', img, '--change-block-size', '64K', '--checksum', 'sha256'],
      env,
    );
    expect(read.code).toBe(0);
    expect(
      mergeRuns(
        read
          .out()
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as { offset: number; length: number }),
      ),
    ).toEqual(expected);
    // Changed blocks carry data (bytes 0-7 of a changed block are its LBA, non-zero past LBA 0).
    const data = readFileSync(img);
    expect(data.subarray(1 << 20, (1 << 20) + 8).readBigUInt64BE()).toBe(2048n);

    const out = join(dir, 'export');
    const exp = await cli(
      ['export', url(sim.port), '--dir', out, '--change-block-size', '64K'],
      env,
    );
    expect(exp.code).toBe(0);
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    expect(manifest.complete).toBe(true);
    expect(mergeRuns(manifest.extents)).toEqual(expected);

    const verify = await cli([
      'verify',
      '--delta',
      out,
      '--device',
      url(sim.port),
      '--chap-secret-file',
      privateFile,
    ]);
    expect(verify.code).toBe(0);
    expect(JSON.parse(verify.out())).toMatchObject({ ok: true });
  });

  it('a wrong secret is a refused login: exit 5, one line, no secret', async () => {
    const wrong = `${SECRET}-wrong`;
    const r = await cli(['scan', url(sim.port)], { LBA_STATUS_CHAP_SECRET: wrong });
    expect(r.code).toBe(5);
    expect(r.err()).toMatch(/^lba-status: .*login/);
    expect(r.err().trim().split('\n')).toHaveLength(1);
    expect(r.out() + r.err()).not.toContain(wrong);
    const none = await cli(['info', url(sim.port, '')]);
    expect(none.code).toBe(5);
  });

  it('a portal that refuses the connection is a system error: exit 3', async () => {
    const closed = await startSimulator({ sizeBytes: 1 << 20, port: 0 });
    const port = closed.port;
    await closed.close();
    const r = await cli(['info', `iscsi://127.0.0.1:${port}/${IQN}/1`]);
    expect(r.code).toBe(3);
    expect(r.err()).toMatch(/ECONNREFUSED/);
  });
});
