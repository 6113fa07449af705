// The userspace iSCSI path through the built CLI, as an unprivileged user: CHAP (secret from
// LBA_STATUS_CHAP_SECRET or --chap-secret-file, never in argv or output), and the way bad input
// fails — the documented exit status (2 usage, 3 system, 5 transport/login) and exactly one
// line on stderr that names what to fix.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  changedLbasOf,
  clientDir,
  cliReason,
  describeIf,
  expectedChangedLbas,
  freePort,
  parseNdjson,
  runAsClient,
  runCli,
  type SimServer,
  startSimServe,
} from './support.js';

const SIZE = 32 * 2 ** 20;
const RANGES = [
  { offset: 0, length: 1 },
  { offset: 5 * 2 ** 20 + 17, length: 70_000 },
  { offset: SIZE - 4096, length: 4096 },
];
const EXPECTED = expectedChangedLbas(RANGES, SIZE, 4096, 512);
const USER = 'backup-agent';
const SECRET = 'Sx9-not-in-output-4711';

/** Non-empty lines of a stream. */
const lines = (s: string): string[] => s.split('\n').filter((l) => l.trim() !== '');

describeIf('iscsi:// with CHAP and bad input (CLI, unprivileged)', cliReason(), () => {
  let open: SimServer;
  let chap: SimServer;
  let dir: ReturnType<typeof clientDir>;
  beforeAll(async () => {
    dir = clientDir('chap');
    const file = join(dir.path, 'changed.json');
    writeFileSync(file, JSON.stringify(RANGES));
    const common = ['--size', String(SIZE), '--changed', file];
    [open, chap] = await Promise.all([
      startSimServe(common),
      startSimServe([...common, '--chap', `${USER}:${SECRET}`]),
    ]);
  });
  afterAll(async () => {
    await Promise.all([open?.stop(), chap?.stop()]);
    dir?.remove();
  });

  const scan = (url: string, env: Record<string, string> = {}, extra: string[] = []) =>
    runCli(['scan', url, '--format', 'ndjson', ...extra], { env });

  it('info without authentication prints the simulated OCI volume', async () => {
    const r = await runCli(['info', open.url()]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/ORACLE/);
    expect(r.stdout).toMatch(/BlockVolume/);
  });

  it('CHAP with the secret in LBA_STATUS_CHAP_SECRET: the exact map, and no secret in output', async () => {
    const r = await scan(chap.url(USER), { LBA_STATUS_CHAP_SECRET: SECRET });
    expect(r.code, r.stderr).toBe(0);
    expect(changedLbasOf(parseNdjson(r.stdout), SIZE / 512)).toEqual(EXPECTED);
    expect(r.stdout + r.stderr).not.toContain(SECRET);
  });

  it('CHAP with --chap-secret-file', async () => {
    const secretFile = join(dir.path, 'chap-secret');
    const w = await runAsClient(
      'sh',
      ['-c', `umask 077 && printf '%s\\n' "$S" > '${secretFile}'`],
      {
        env: { S: SECRET },
      },
    );
    expect(w.code, w.stderr).toBe(0);
    const r = await scan(chap.url(USER), {}, ['--chap-secret-file', secretFile]);
    expect(r.code, r.stderr).toBe(0);
    expect(changedLbasOf(parseNdjson(r.stdout), SIZE / 512)).toEqual(EXPECTED);
    expect(r.stdout + r.stderr).not.toContain(SECRET);
  });

  it('a wrong CHAP secret: exit 5, one line about the authentication, the secret not shown', async () => {
    const wrong = `${SECRET}-wrong`;
    const r = await scan(chap.url(USER), { LBA_STATUS_CHAP_SECRET: wrong });
    expect(r.code, r.stderr).toBe(5);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr), r.stderr).toHaveLength(1);
    expect(r.stderr).toMatch(/CHAP|authenticat/i);
    expect(r.stderr).not.toContain(wrong);
    expect(r.stderr).not.toContain(SECRET);
  });

  /** The reason line, and at most the usage hint usage errors add. */
  const reasonLine = (stderr: string): string => {
    const l = lines(stderr);
    expect(l.length, stderr).toBeGreaterThanOrEqual(1);
    expect(l.slice(1), stderr).toEqual(l.length > 1 ? ["Try 'lba-status --help'."] : []);
    return l[0]!;
  };

  it('a target that requires CHAP, no secret given: exit 2, naming how to give it', async () => {
    const r = await scan(chap.url(USER));
    expect(r.code, r.stderr).toBe(2);
    expect(reasonLine(r.stderr)).toMatch(/LBA_STATUS_CHAP_SECRET|--chap-secret-file/);
  });

  it('a secret in the URL: exit 2, refused without echoing it', async () => {
    const r = await scan(`iscsi://${USER}:${SECRET}@${chap.portal}/${chap.iqn}/1`);
    expect(r.code, r.stderr).toBe(2);
    expect(reasonLine(r.stderr)).toMatch(/LBA_STATUS_CHAP_SECRET|--chap-secret-file/);
    expect(r.stdout + r.stderr).not.toContain(SECRET);
  });

  for (const [url, fix] of [
    ['iscsi://127.0.0.1:3260/iqn.2024-01.lba-status:sim', /no LUN/],
    ['iscsi://127.0.0.1:3260/iqn.2024-01.lba-status:sim/one', /LUN "one"/],
    ['iscsi://127.0.0.1:99999/iqn.2024-01.lba-status:sim/1', /port "99999"/],
    ['iscsi:///iqn.2024-01.lba-status:sim/1', /no host.*HOST/],
  ] as const) {
    it(`a malformed URL (${url}): exit 2, one line naming the part to fix`, async () => {
      const r = await scan(url);
      expect(r.code, r.stderr).toBe(2);
      expect(reasonLine(r.stderr)).toMatch(fix);
    });
  }

  it('a closed port: exit 3, one line with ECONNREFUSED and the portal', async () => {
    const port = await freePort();
    const r = await scan(`iscsi://127.0.0.1:${port}/iqn.2024-01.lba-status:sim/1`);
    expect(r.code, r.stderr).toBe(3);
    expect(lines(r.stderr), r.stderr).toHaveLength(1);
    expect(r.stderr).toContain('ECONNREFUSED');
    expect(r.stderr).toContain(`127.0.0.1:${port}`);
  });

  it('a wrong target IQN: exit 5, one line naming the IQN', async () => {
    const iqn = 'iqn.2024-01.lba-status:no-such-target';
    const r = await scan(`iscsi://${open.portal}/${iqn}/1`);
    expect(r.code, r.stderr).toBe(5);
    expect(lines(r.stderr), r.stderr).toHaveLength(1);
    expect(r.stderr).toContain(iqn);
  });
});
