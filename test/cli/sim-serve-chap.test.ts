// `sim serve --chap-user NAME --chap-secret-file FILE`: the target demands CHAP with the file's
// secret (refused unless private), `--chap USER:SECRET` still works for tests, mistakes exit 2,
// and the secret is never printed.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDevice } from '../../lib/api/device.js';
import { main } from '../../lib/cli/main.js';
import { makeIo, type TestIo } from './helpers.js';

const SECRET = 'Serve-Chap-S3cret-41ab';
const dir = mkdtempSync(join(tmpdir(), 'lba-sim-chap-'));
const printed: string[] = [];

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  expect(printed.join('\n')).not.toContain(SECRET);
});

async function waitForLine(io: TestIo): Promise<{ iscsi: { portal: string; iqn: string } }> {
  for (let i = 0; i < 500 && !io.out().includes('\n'); i++)
    await new Promise((r) => setTimeout(r, 10));
  return JSON.parse(io.out().split('\n')[0] as string);
}

async function serve(args: string[]) {
  const io = makeIo();
  const done = main(
    ['sim', 'serve', '--size', '16M', '--random-changes', '4', '--port', '0', ...args],
    io,
  );
  const ready = await waitForLine(io);
  const url = (user: string) => `iscsi://${user}@${ready.iscsi.portal}/${ready.iscsi.iqn}/1`;
  const stop = async () => {
    io.abort();
    const code = await done;
    printed.push(io.out(), io.err());
    return code;
  };
  return { url, stop };
}

describe('sim serve --chap-user/--chap-secret-file', () => {
  it('requires CHAP with the secret from the file', async () => {
    const file = join(dir, 'secret');
    writeFileSync(file, `${SECRET}\n`, { mode: 0o600 });
    const s = await serve(['--chap-user', 'backup', '--chap-secret-file', file]);
    try {
      await expect(openDevice(s.url('backup'))).rejects.toMatchObject({ code: 'ERR_ISCSI_LOGIN' });
      await expect(
        openDevice(s.url('backup'), { chap: { secret: `${SECRET}x` } }),
      ).rejects.toMatchObject({ code: 'ERR_ISCSI_LOGIN' });
      const dev = await openDevice(s.url('backup'), { chap: { secret: SECRET } });
      expect((await dev.info()).vendor).toBe('ORACLE');
      await dev.close();
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  it('keeps --chap USER:SECRET for tests', async () => {
    const s = await serve(['--chap', `backup:${SECRET}`]);
    try {
      const dev = await openDevice(s.url('backup'), { chap: { secret: SECRET } });
      await dev.close();
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  it('refuses an open secret file and half-given or mixed CHAP options (exit 2)', async () => {
    const open = join(dir, 'open');
    writeFileSync(open, SECRET);
    chmodSync(open, 0o644);
    const secret = join(dir, 'ok');
    writeFileSync(secret, SECRET, { mode: 0o600 });
    const base = ['sim', 'serve', '--size', '16M', '--random-changes', '1', '--port', '0'];
    const cases: Array<[string[], RegExp]> = [
      [['--chap-user', 'u', '--chap-secret-file', open], new RegExp(`chmod 600 ${open}`)],
      [['--chap-user', 'u'], /--chap-user needs --chap-secret-file FILE/],
      [['--chap-secret-file', secret], /--chap-secret-file needs --chap-user NAME/],
      [['--chap', 'u:x', '--chap-user', 'u'], /not both/],
      [['--oci-api-chap'], /--oci-api-chap needs --oci-api/],
    ];
    for (const [args, message] of cases) {
      const io = makeIo();
      expect(await main([...base, ...args], io), args.join(' ')).toBe(2);
      expect(io.err()).toMatch(message);
      printed.push(io.out(), io.err());
    }
  });
});
