import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OciDeltaVolumeProvisioner } from '../../lib/oci/provisioner.js';
import { type OciSimulation, startOciSimulation } from '../../lib/sim/fake-oci/oci-simulation.js';
import { FakeIscsiadm } from './fake-iscsiadm.js';
import { FAST } from './harness.js';

const canConnect = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });

describe('fake OCI API wired to simulator targets', () => {
  let dir: string;
  let sim: OciSimulation;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lba-ocisim-'));
  });
  afterEach(async () => {
    await sim?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('attachments point at a running simulator serving the delta; detach stops it', async () => {
    const changed = [
      { offset: 1 << 20, length: 65536 },
      { offset: 8 << 20, length: 4096 },
    ];
    sim = await startOciSimulation({ dir, sizeBytes: 64 << 20, changed });
    expect(sim.info).toMatchObject({ profile: 'DEFAULT', endpoint: sim.api.endpoint });
    expect(sim.info.configFile).toMatch(/config$/);
    const iscsi = await FakeIscsiadm.create(join(dir, 'iscsi'));
    const p = new OciDeltaVolumeProvisioner({
      configFile: sim.info.configFile,
      endpoint: sim.info.endpoint,
      instanceId: sim.info.instanceId,
      iscsiadm: { binary: iscsi.binary, env: iscsi.env, lockPath: join(dir, 'lock') },
      sysfsRoot: iscsi.sysfsRoot,
      poll: FAST,
      deviceIntervalMs: 10,
    });
    try {
      const vol = await p.provision({
        firstBackupId: sim.info.firstBackupId,
        secondBackupId: sim.info.secondBackupId,
        changeBlockSize: 65536,
      });
      expect(sim.simulators.size).toBe(1);
      const target = [...sim.simulators.values()][0]!;
      expect(vol.target).toEqual({ iqn: target.iqn, address: '127.0.0.1', port: target.port });
      expect(target.changeBlockSize).toBe(65536);
      expect(target.sizeBytes).toBe(64 << 20);
      expect(target.changedExtents).toEqual(sim.expectedChangedExtents(65536));
      expect(target.changedExtents.length).toBeGreaterThan(0);
      expect(await canConnect(target.port)).toBe(true);
      await vol.release();
      expect(sim.simulators.size).toBe(0);
      expect(await canConnect(target.port)).toBe(false);
      expect(sim.api.leftovers()).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('rejects a size that is not a multiple of 1 MiB', async () => {
    await expect(startOciSimulation({ dir, sizeBytes: 1000 })).rejects.toThrow(RangeError);
  });
});
