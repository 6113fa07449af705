import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SimulatorProvisioner, type SimulatorProvisionOptions } from '../../lib/provision/sim.js';
import { FakeIscsiadm } from '../oci/fake-iscsiadm.js';
import { provisionerContract } from './contract.js';

const volume = {
  sizeBytes: 16 << 20,
  changeBlockSize: 65536,
  changed: [{ offset: 1 << 20, length: 131072 }],
};

async function fixture() {
  const dir = await mkdtemp(join(tmpdir(), 'lba-simprov-'));
  const iscsi = await FakeIscsiadm.create(dir);
  const provisioner = new SimulatorProvisioner({
    iscsiadm: { binary: iscsi.binary, env: iscsi.env, lockPath: join(dir, 'lock') },
    sysfsRoot: iscsi.sysfsRoot,
    deviceIntervalMs: 10,
    deviceTimeoutMs: 400,
  });
  return { dir, iscsi, provisioner };
}

provisionerContract<SimulatorProvisionOptions>('SimulatorProvisioner (fake iscsiadm)', async () => {
  const { dir, iscsi, provisioner } = await fixture();
  return {
    provisioner,
    options: () => ({ simulator: volume }),
    leftovers: () => iscsi.leftovers(),
    teardown: () => rm(dir, { recursive: true, force: true }),
  };
});

describe('SimulatorProvisioner', () => {
  it('serves the changed map on a local target and stops it on release', async () => {
    const { dir, iscsi, provisioner } = await fixture();
    try {
      const vol = await provisioner.provision({ simulator: volume });
      expect(vol.expectedChangedExtents).toEqual([{ lba: 2048, blocks: 256, status: 3 }]);
      const up = await new Promise<boolean>((r) => {
        const s = connect(vol.target.port, '127.0.0.1');
        s.once('connect', () => {
          s.destroy();
          r(true);
        });
        s.once('error', () => r(false));
      });
      expect(up).toBe(true);
      expect((await iscsi.calls()).map((c) => c.slice(6).join(' '))).toEqual([
        '-o new',
        '-o update -n node.startup -v manual',
        '-l',
      ]);
      await vol.release();
      expect(await iscsi.leftovers()).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a failed login stops the target and removes the node record', async () => {
    const { dir, iscsi, provisioner } = await fixture();
    try {
      await iscsi.setBehavior({ fail: { login: [19] } });
      await expect(provisioner.provision({ simulator: volume })).rejects.toMatchObject({
        code: 'ERR_ISCSIADM',
        exitCode: 19,
      });
      expect(await iscsi.leftovers()).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

provisionerContract<SimulatorProvisionOptions>(
  'SimulatorProvisioner (attach: userspace)',
  async () => {
    const provisioner = new SimulatorProvisioner({ attach: 'userspace' });
    return {
      provisioner,
      options: () => ({ simulator: volume }),
      leftovers: async () => [],
    };
  },
);

describe("SimulatorProvisioner attach: 'userspace'", () => {
  const chap = { username: 'backup', secret: 'Sim-Chap-S3cret!' };

  it('hands back iscsi://127.0.0.1:PORT/IQN/1 with CHAP in deviceOptions, stops on release', async () => {
    const provisioner = new SimulatorProvisioner({ attach: 'userspace' });
    const vol = await provisioner.provision({ simulator: { ...volume, chap } });
    try {
      expect(vol.device).toBe(`iscsi://127.0.0.1:${vol.target.port}/${vol.target.iqn}/1`);
      expect(JSON.stringify(vol.description + vol.device)).not.toContain(chap.secret);
      // Without the credentials the target refuses the login.
      const { openDevice } = await import('../../lib/api/device.js');
      await expect(openDevice(vol.device)).rejects.toMatchObject({ code: 'ERR_ISCSI_LOGIN' });
      // With them the changed set is exactly the test's own range:
      // bytes [1 MiB, 1 MiB + 128 KiB) = LBAs 2048..2303 (512-byte blocks).
      expect(vol.deviceOptions).toEqual({ chap });
      const dev = await openDevice(vol.device, { ...vol.deviceOptions, queueDepth: 2 });
      try {
        const got: Array<[number, number]> = [];
        for await (const e of dev.changedExtents({ changeBlockSize: 65536 }))
          got.push([e.offset, e.length]);
        expect(got).toEqual([[1 << 20, 131072]]);
      } finally {
        await dev.close();
      }
    } finally {
      await vol.release();
    }
    const up = await new Promise<boolean>((r) => {
      const s = connect(vol.target.port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    expect(up).toBe(false);
  });
});
