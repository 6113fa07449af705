import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { withHostLock } from '../../lib/oci/host-lock.js';
import { Iscsiadm, portalOf } from '../../lib/oci/iscsiadm.js';
import { lookupDevice, waitForDevice } from '../../lib/oci/sysfs.js';
import { FakeIscsiadm } from './fake-iscsiadm.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lba-host-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function session(
  root: string,
  n: number,
  iqn: string,
  addr: string,
  port: number,
  luns: Array<{ lun: number; type: string; block?: string; sg?: string; queuePending?: boolean }>,
) {
  const s = join(root, 'class/iscsi_session', `session${n}`);
  await mkdir(s, { recursive: true });
  await writeFile(join(s, 'targetname'), `${iqn}\n`);
  const c = join(root, 'class/iscsi_connection', `connection${n}:0`);
  await mkdir(c, { recursive: true });
  await writeFile(join(c, 'persistent_address'), `${addr}\n`);
  await writeFile(join(c, 'persistent_port'), `${port}\n`);
  for (const l of luns) {
    const d = join(s, 'device', `target${n + 2}:0:0`, `${n + 2}:0:0:${l.lun}`);
    await mkdir(d, { recursive: true });
    await writeFile(join(d, 'type'), `${l.type}\n`);
    if (l.block) {
      await mkdir(join(d, 'block', l.block, 'queue'), { recursive: true });
      if (!l.queuePending)
        await writeFile(join(d, 'block', l.block, 'queue/logical_block_size'), '4096\n');
    }
    if (l.sg) await mkdir(join(d, 'scsi_generic', l.sg), { recursive: true });
  }
}

describe('sysfs device discovery', () => {
  const t = { iqn: 'iqn.2015-12.com.oracleiaas:abc', address: '169.254.2.2', port: 3260 };

  it('matches target name and portal, skips the controller LUN, returns block and sg nodes', async () => {
    await session(dir, 1, 'iqn.other', '169.254.2.2', 3260, [
      { lun: 1, type: '0', block: 'sdb', sg: 'sg1' },
    ]);
    await session(dir, 2, t.iqn, '169.254.2.3', 3260, [
      { lun: 1, type: '0', block: 'sdc', sg: 'sg2' },
    ]); // other portal
    await session(dir, 3, t.iqn, '169.254.2.2', 3260, [
      { lun: 0, type: '12', sg: 'sg3' },
      { lun: 1, type: '0', block: 'sdd', sg: 'sg4' },
    ]);
    const d = await lookupDevice(t, { sysfsRoot: dir });
    expect(d).toEqual({
      devicePath: '/dev/sdd',
      sgPath: '/dev/sg4',
      blockSize: 4096,
      hctl: '5:0:0:1',
      session: 'session3',
    });
  });

  it('does not report a disk whose request queue is not registered yet (no block size)', async () => {
    await session(dir, 1, t.iqn, t.address, t.port, [
      { lun: 1, type: '0', block: 'sdb', sg: 'sg1', queuePending: true },
    ]);
    expect(await lookupDevice(t, { sysfsRoot: dir })).toBeUndefined();
    const lun = join(dir, 'class/iscsi_session/session1/device/target3:0:0/3:0:0:1');
    await writeFile(join(lun, 'block/sdb/queue/logical_block_size'), '512\n');
    expect(await lookupDevice(t, { sysfsRoot: dir })).toMatchObject({
      devicePath: '/dev/sdb',
      blockSize: 512,
    });
  });

  it('handles IPv6 portals', async () => {
    await session(dir, 1, t.iqn, '2001:db8::1', 3260, [{ lun: 1, type: '0', block: 'sdb' }]);
    expect(portalOf({ ...t, address: '2001:db8::1' })).toBe('[2001:db8::1]:3260');
    const d = await lookupDevice({ ...t, address: '2001:DB8::1' }, { sysfsRoot: dir });
    expect(d?.devicePath).toBe('/dev/sdb');
  });

  it('refuses to guess between several disks unless a LUN is given', async () => {
    await session(dir, 1, t.iqn, t.address, t.port, [
      { lun: 1, type: '0', block: 'sdb' },
      { lun: 2, type: '0', block: 'sdc' },
    ]);
    await expect(lookupDevice(t, { sysfsRoot: dir })).rejects.toMatchObject({
      code: 'ERR_OCI_DEVICE_NOT_FOUND',
    });
    expect((await lookupDevice(t, { sysfsRoot: dir, lun: 2 }))?.devicePath).toBe('/dev/sdc');
  });

  it('waits for the disk to appear, and times out with a reason', async () => {
    setTimeout(
      () => void session(dir, 1, t.iqn, t.address, t.port, [{ lun: 1, type: '0', block: 'sdb' }]),
      50,
    );
    expect(
      (await waitForDevice(t, { sysfsRoot: dir, intervalMs: 10, timeoutMs: 2000 })).devicePath,
    ).toBe('/dev/sdb');
    await expect(
      waitForDevice({ ...t, iqn: 'iqn.none' }, { sysfsRoot: dir, intervalMs: 10, timeoutMs: 50 }),
    ).rejects.toThrow(/no matching session/);
  });
});

describe('iscsiadm runner', () => {
  it('maps exit codes, treats 15 on login and 21 on logout/delete as success, and redacts secrets', async () => {
    const f = await FakeIscsiadm.create(dir);
    const a = new Iscsiadm({ binary: f.binary, env: f.env, lockPath: join(dir, 'lock') });
    const t = { iqn: 'iqn.x:1', address: '127.0.0.1', port: 3260 };
    await a.logout(t); // 21: no session
    await a.deleteNode(t); // 21: no record
    await a.addNode(t, { username: 'u', secret: 'hunter2' });
    await a.login(t);
    await a.login(t); // 15: already logged in
    await f.setBehavior({ fail: { update: [6] } });
    const err = await a
      .update(t, 'node.session.auth.password', 'hunter2', true)
      .catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'ERR_ISCSIADM',
      exitCode: 6,
      meaning: 'iSCSI database error',
    });
    expect(
      JSON.stringify({ m: (err as Error).message, a: (err as { args: string[] }).args }),
    ).not.toContain('hunter2');
    await a.logout(t);
    await a.deleteNode(t);
    expect(await f.leftovers()).toEqual([]);
    const calls = await f.calls();
    expect(calls.every((c) => c[0] === '-m' && c[1] === 'node')).toBe(true);
  });

  it('refuses to touch a boot:uefi target', async () => {
    const a = new Iscsiadm({ binary: '/bin/false', lockPath: join(dir, 'lock') });
    await expect(
      a.logout({ iqn: 'iqn.2015-02.oracle.boot:uefi', address: '169.254.0.2', port: 3260 }),
    ).rejects.toThrow(/boot target/);
  });
});

describe('host lock', () => {
  it('serialises callers in this process', async () => {
    const path = join(dir, 'l.lock');
    let inside = 0;
    let maxInside = 0;
    await Promise.all(
      Array.from({ length: 5 }, () =>
        withHostLock({ path }, async () => {
          inside++;
          maxInside = Math.max(maxInside, inside);
          await new Promise((r) => setTimeout(r, 5));
          inside--;
        }),
      ),
    );
    expect(maxInside).toBe(1);
  });

  it('takes over a lock file left by a dead process, waits for a live one', async () => {
    const path = join(dir, 'stale.lock');
    await writeFile(path, '999999999\n');
    await expect(withHostLock({ path }, async () => 'ran')).resolves.toBe('ran');
    await writeFile(path, `${process.ppid}\n`); // alive
    await expect(withHostLock({ path, timeoutMs: 60 }, async () => 'ran')).rejects.toMatchObject({
      code: 'ETIMEDOUT',
    });
  });
});
