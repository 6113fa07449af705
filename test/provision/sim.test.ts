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
