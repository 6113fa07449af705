import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { AbortError } from '../../lib/abort.js';
import { DeviceSystemError, IscsiLoginError } from '../../lib/errors.js';
import { openIscsiTransport } from '../../lib/transport/iscsi.js';
import { DataDirection } from '../../lib/transport/types.js';
import { InvalidArgTypeError, InvalidArgValueError, OutOfRangeError } from '../../lib/validate.js';
import { startTestTarget, type TestTarget, TUR, tcpSockets, waitFor } from './iscsi-support.js';

const SECRET = 'Init1atorS3cret';
const TARGET_SECRET = 'Targ3tS3cretXY';
const WRONG = 'Wr0ngS3cretZZZ';

const cleanup: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function target(opts: Parameters<typeof startTestTarget>[0] = {}): Promise<TestTarget> {
  const t = await startTestTarget(opts);
  cleanup.push(() => t.close());
  return t;
}

/** Runs `open`, expects a rejection, and checks that no socket was left open. */
async function failsWith(open: () => Promise<unknown>): Promise<Error> {
  const before = tcpSockets();
  let error: unknown;
  try {
    const tr = await open();
    cleanup.push(() => (tr as { close(): Promise<void> }).close());
  } catch (err) {
    error = err;
  }
  expect(error, 'expected the open to fail').toBeInstanceOf(Error);
  await waitFor(() => tcpSockets() <= before, 3000, 'sockets to close');
  const e = error as Error;
  for (const s of [SECRET, TARGET_SECRET, WRONG]) {
    expect(e.message).not.toContain(s);
    expect(String(e.stack)).not.toContain(s);
    expect(JSON.stringify(e)).not.toContain(s);
  }
  return e;
}

const tur = () => ({
  cdb: TUR,
  direction: DataDirection.None,
  data: null,
  sense: new Uint8Array(96),
  timeoutMs: 5000,
});

describe('openIscsiTransport: bad input is a typed error and leaks nothing', () => {
  it('a closed port: DeviceSystemError ECONNREFUSED, syscall connect, path = the address', async () => {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    const port = (s.address() as net.AddressInfo).port;
    await new Promise<void>((r) => s.close(() => r()));
    const url = `iscsi://127.0.0.1:${port}/iqn.2024-01.test:x/1`;
    const e = (await failsWith(() => openIscsiTransport(url))) as DeviceSystemError;
    expect(e).toBeInstanceOf(DeviceSystemError);
    expect(e).toMatchObject({ code: 'ECONNREFUSED', syscall: 'connect', path: url });
    expect(e.errno).toBeLessThan(0);
    expect(e.message).toMatch(/^ECONNREFUSED: connection refused, connect 'iscsi:\/\//);
  });

  it('a wrong IQN: IscsiLoginError 2/03 that says to check the IQN', async () => {
    const t = await target();
    const url = `iscsi://127.0.0.1:${t.port}/iqn.2024-01.test:nope/1`;
    const e = (await failsWith(() => openIscsiTransport(url))) as IscsiLoginError;
    expect(e).toBeInstanceOf(IscsiLoginError);
    expect(e).toMatchObject({
      code: 'ERR_ISCSI_LOGIN',
      statusClass: 2,
      statusDetail: 3,
      path: url,
    });
    expect(e.message).toMatch(/target IQN was not found on this portal.*check the IQN/);
  });

  it('CHAP: wrong secret, none given, and the right one (user from the URL)', async () => {
    const t = await target({ chap: { username: 'backup', secret: SECRET } });
    const wrong = (await failsWith(() =>
      openIscsiTransport(t.url('backup'), { chap: { secret: WRONG } }),
    )) as IscsiLoginError;
    expect(wrong).toMatchObject({ statusClass: 2, statusDetail: 1 });
    expect(wrong.message).toMatch(/authentication failed.*check the CHAP user name and secret/);
    expect(wrong.path).toBe(t.url('backup'));
    const none = (await failsWith(() => openIscsiTransport(t.url()))) as IscsiLoginError;
    expect(none).toBeInstanceOf(IscsiLoginError);
    expect(none.message).toMatch(/CHAP/);
    // The chap option's username wins over the URL's.
    const wrongUser = (await failsWith(() =>
      openIscsiTransport(t.url('backup'), { chap: { username: 'other', secret: SECRET } }),
    )) as IscsiLoginError;
    expect(wrongUser.statusDetail).toBe(1);
    const tr = await openIscsiTransport(t.url('backup'), { chap: { secret: SECRET } });
    cleanup.push(() => tr.close());
    expect((await tr.execute(tur())).status).toBe(0);
  });

  it('mutual CHAP: the right target secret works; a wrong one or a target that skips it fails', async () => {
    const t = await target({
      chap: { username: 'backup', secret: SECRET },
      mutualChap: { username: 'tgt', secret: TARGET_SECRET },
    });
    const ok = await openIscsiTransport(t.url(), {
      chap: {
        username: 'backup',
        secret: SECRET,
        target: { username: 'tgt', secret: TARGET_SECRET },
      },
    });
    cleanup.push(() => ok.close());
    expect((await ok.execute(tur())).status).toBe(0);
    const bad = (await failsWith(() =>
      openIscsiTransport(t.url(), {
        chap: { username: 'backup', secret: SECRET, target: { username: 'tgt', secret: WRONG } },
      }),
    )) as IscsiLoginError;
    expect(bad).toBeInstanceOf(IscsiLoginError);
    expect(bad.message).toMatch(
      /mutual CHAP failed: the target answered the mutual CHAP challenge wrongly/,
    );
    const name = (await failsWith(() =>
      openIscsiTransport(t.url(), {
        chap: {
          username: 'backup',
          secret: SECRET,
          target: { username: 'x', secret: TARGET_SECRET },
        },
      }),
    )) as IscsiLoginError;
    expect(name.message).toMatch(/mutual CHAP failed: .*another user name/);
    // A target without CHAP at all cannot prove itself.
    const plain = await target();
    const skipped = (await failsWith(() =>
      openIscsiTransport(plain.url(), {
        chap: {
          username: 'backup',
          secret: SECRET,
          target: { username: 'tgt', secret: TARGET_SECRET },
        },
      }),
    )) as IscsiLoginError;
    expect(skipped).toBeInstanceOf(IscsiLoginError);
  });

  it('a portal that never answers the login: IscsiLoginError naming the timeout; an AbortSignal aborts', async () => {
    const held = new Set<net.Socket>();
    const silent = net.createServer((s) => {
      held.add(s);
      s.resume(); // read and discard, so that our FIN is seen
      s.on('close', () => held.delete(s));
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    cleanup.push(
      () =>
        new Promise<void>((r) => {
          for (const s of held) s.destroy();
          silent.close(() => r());
        }),
    );
    const url = `iscsi://127.0.0.1:${(silent.address() as net.AddressInfo).port}/iqn.2024-01.test:x/1`;
    const e = await failsWith(() => openIscsiTransport(url, { loginTimeoutMs: 150 }));
    expect(e).toBeInstanceOf(IscsiLoginError);
    expect(e.message).toMatch(/no answer to the login within 150 ms/);
    const ac = new AbortController();
    const p = failsWith(() => openIscsiTransport(url, { signal: ac.signal }));
    await waitFor(() => held.size > 0, 2000, 'the connection');
    ac.abort();
    expect(await p).toBeInstanceOf(AbortError);
    await waitFor(() => held.size === 0, 2000, 'the server side to close');
    const pre = new AbortController();
    pre.abort();
    expect(await failsWith(() => openIscsiTransport(url, { signal: pre.signal }))).toBeInstanceOf(
      AbortError,
    );
  });

  it('validates options once at the boundary, never echoing a secret', async () => {
    const url = 'iscsi://127.0.0.1:1/iqn.2024-01.test:x/1';
    await expect(openIscsiTransport(url, { queueDepht: 4 } as never)).rejects.toThrow(
      InvalidArgValueError,
    );
    await expect(openIscsiTransport(url, { queueDepth: 65 })).rejects.toThrow(OutOfRangeError);
    await expect(openIscsiTransport(url, { queueDepth: 0 })).rejects.toThrow(OutOfRangeError);
    await expect(openIscsiTransport(url, { timeoutMs: -1 })).rejects.toThrow(OutOfRangeError);
    await expect(
      openIscsiTransport(url, { reconnect: { attempts: 1, tries: 2 } as never }),
    ).rejects.toThrow(/options.reconnect.tries/);
    await expect(openIscsiTransport(url, { chap: { secret: SECRET } })).rejects.toThrow(
      /options.chap.username.*USER@ in the URL/,
    );
    await expect(openIscsiTransport(url, { initiatorName: 'not a name' })).rejects.toThrow(
      /must be an iSCSI name/,
    );
    for (const bad of [12345678, { s: SECRET }]) {
      const e = await failsWith(() =>
        openIscsiTransport(url, { chap: { username: 'u', secret: bad as never } }),
      );
      expect(e).toBeInstanceOf(InvalidArgTypeError);
      expect(e.message).not.toContain('12345678');
    }
    const e = await failsWith(() =>
      openIscsiTransport(`iscsi://u%${SECRET}@127.0.0.1/iqn.2024-01.test:x/1`),
    );
    expect(e.message).toMatch(/LBA_STATUS_CHAP_SECRET/);
  });
});
