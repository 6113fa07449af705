import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Iscsiadm } from '../../lib/oci/iscsiadm.js';
import { parseDuration, sweep } from '../../lib/oci/sweep.js';
import { type Harness, makeHarness } from './harness.js';

const ourTags = (ageMs: number) => ({
  'lba-status': 'delta',
  'lba-status-job': 'crashed-job',
  'lba-status-created': new Date(Date.now() - ageMs).toISOString(),
  'lba-status-host': 'h',
});

describe('sweep', () => {
  let h: Harness;
  beforeEach(async () => {
    h = await makeHarness();
  });
  afterEach(async () => {
    await h.close();
  });

  it('removes old tagged delta volumes with their attachments and iSCSI sessions, keeps the rest', async () => {
    const old = await h.api.plantOrphan({ tags: ourTags(2 * 3_600_000), attach: true });
    const oldUnattached = await h.api.plantOrphan({ tags: ourTags(3 * 3_600_000) });
    const young = await h.api.plantOrphan({ tags: ourTags(60_000), attach: true });
    const foreign = await h.api.plantOrphan({ tags: { team: 'db' }, attach: false });
    // The crashed run had logged in to the old attachment on this host.
    const att = h.api.attachments().find((a) => a.id === old.attachmentId) as {
      iqn: string;
      ipv4: string;
      port: number;
    };
    const iscsiadm = new Iscsiadm({
      binary: h.iscsi.binary,
      env: h.iscsi.env,
      lockPath: `${h.dir}/sw.lock`,
    });
    const target = { iqn: att.iqn, address: att.ipv4, port: att.port };
    await iscsiadm.addNode(target);
    await iscsiadm.login(target);
    expect(await h.iscsi.sessions()).toHaveLength(1);

    const result = await sweep(h.provisioner, { olderThanMs: parseDuration('1h') });
    expect(result.errors).toEqual([]);
    expect(result.volumes.sort()).toEqual([old.volumeId, oldUnattached.volumeId].sort());
    expect(result.attachments).toEqual([old.attachmentId]);
    expect(result.sessions).toEqual([att.iqn]);
    expect(await h.iscsi.leftovers()).toEqual([]);
    const left = h.api.leftovers().join('\n');
    expect(left).toContain(young.volumeId);
    expect(left).toContain(young.attachmentId);
    expect(left).toContain(foreign.volumeId);
    expect(left).not.toContain(old.volumeId);
    expect(left).not.toContain(oldUnattached.volumeId);
  });

  it('dry run lists without removing', async () => {
    const old = await h.api.plantOrphan({ tags: ourTags(2 * 3_600_000), attach: true });
    const result = await sweep(h.provisioner, { olderThanMs: 3_600_000, dryRun: true });
    expect(result.volumes).toEqual([old.volumeId]);
    expect(h.api.leftovers()).toHaveLength(2);
  });

  it('olderThan 0 also sweeps a volume left a moment ago by a killed run', async () => {
    const { first, second } = h.api.seedBackupPair();
    const vol = await h.provisioner.provision({
      firstBackupId: first.id,
      secondBackupId: second.id,
    });
    // Simulate kill -9: never call release().
    expect(vol.devicePath).toBeTruthy();
    const result = await sweep(h.makeProvisioner(), { olderThanMs: 0 });
    expect(result.errors).toEqual([]);
    expect(result.volumes).toEqual([vol.volumeId]);
    expect(await h.leftovers()).toEqual([]);
  });

  it('parses durations', () => {
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('15m')).toBe(900_000);
    expect(parseDuration('2d')).toBe(172_800_000);
    expect(parseDuration('250')).toBe(250);
    expect(() => parseDuration('soon')).toThrow(RangeError);
  });
});
