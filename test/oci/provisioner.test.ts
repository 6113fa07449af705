import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { OciDeltaOptions } from '../../lib/oci/provisioner.js';
import { provisionerContract } from '../provision/contract.js';
import { type Harness, makeHarness } from './harness.js';

provisionerContract<OciDeltaOptions>(
  'OciDeltaVolumeProvisioner (fake OCI API, fake iscsiadm)',
  async () => {
    const h = await makeHarness();
    const { first, second } = h.api.seedBackupPair();
    return {
      provisioner: h.provisioner,
      options: () => ({
        firstBackupId: first.id,
        secondBackupId: second.id,
        changeBlockSize: 65536,
      }),
      leftovers: () => h.leftovers(),
      teardown: () => h.close(),
    };
  },
);

describe('OciDeltaVolumeProvisioner happy path', () => {
  let h: Harness;
  beforeEach(async () => {
    h = await makeHarness();
  });
  afterEach(async () => {
    await h.close();
  });

  it('creates, attaches, logs in, finds the disk, and releases everything', async () => {
    const { first, second } = h.api.seedBackupPair({ sizeInGBs: 2 });
    const steps: string[] = [];
    const vol = await h.provisioner.provision({
      firstBackupId: first.id,
      secondBackupId: second.id,
      changeBlockSize: 1 << 20,
      onProgress: (e) => steps.push(`${e.step}:${e.phase}`),
    });
    expect(vol.devicePath).toMatch(/^\/dev\/sd[a-z]$/);
    expect(vol.sgPath).toMatch(/^\/dev\/sg\d+$/);
    expect(vol.blockSize).toBe(512);
    expect(vol.sizeInBytes).toBe(2 * 2 ** 30);
    const v = h.api.volume(vol.volumeId) as Record<string, unknown>;
    expect(v.lifecycleState).toBe('AVAILABLE');
    expect(v.sourceDetails).toEqual({
      type: 'volumeBackupDelta',
      firstBackupId: first.id,
      secondBackupId: second.id,
      changeBlockSizeInBytes: 1048576,
    });
    const tags = v.freeformTags as Record<string, string>;
    expect(tags['lba-status']).toBe('delta');
    expect(tags['lba-status-job']).toBe(vol.jobId);
    expect(Date.parse(tags['lba-status-created'] as string)).toBeGreaterThan(Date.now() - 60_000);
    expect(tags['lba-status-host']).toBeTruthy();
    const att = h.api.attachments()[0] as Record<string, unknown>;
    expect(att).toMatchObject({
      lifecycleState: 'ATTACHED',
      isReadOnly: true,
      instanceId: h.api.instance.id,
    });
    // The POSTs carried retry tokens.
    const posts = h.api.requests.filter((r) => r.method === 'POST');
    expect(posts.map((r) => r.operation)).toEqual(['CreateVolume', 'AttachVolume']);
    expect(posts.every((r) => r.retryToken?.startsWith(`lba-status-${vol.jobId}`))).toBe(true);
    // iscsiadm: node new, startup manual, login.
    const calls = await h.iscsi.calls();
    expect(calls.map((c) => c.slice(6).join(' '))).toEqual([
      '-o new',
      '-o update -n node.startup -v manual',
      '-l',
    ]);
    await vol.release();
    expect(await h.leftovers()).toEqual([]);
    const after = (await h.iscsi.calls()).slice(3).map((c) => c.slice(6).join(' '));
    expect(after).toEqual(['-u', '-o delete']);
    expect(steps).toContain('delete:done');
  });

  it('creates a boot volume delta from boot volume backups', async () => {
    const { first, second } = h.api.seedBackupPair({ kind: 'boot' });
    const vol = await h.provisioner.provision({
      firstBackupId: first.id,
      secondBackupId: second.id,
    });
    expect(vol.kind).toBe('boot');
    expect(vol.volumeId).toMatch(/^ocid1\.bootvolume\./);
    expect(
      (h.api.volume(vol.volumeId) as { sourceDetails: { type: string } }).sourceDetails.type,
    ).toBe('bootVolumeBackupDelta');
    await vol.release();
    expect(await h.leftovers()).toEqual([]);
  });

  it('passes CHAP credentials to iscsiadm but never into errors', async () => {
    await h.close();
    h = await makeHarness({
      attachTarget: () => ({
        ipv4: '127.0.0.1',
        port: 3260,
        iqn: 'iqn.2015-12.com.oracleiaas:chap',
        chap: { username: 'ocid1.volume.oc1..u', secret: 'S3cr3t-Chap' },
      }),
    });
    const { first, second } = h.api.seedBackupPair();
    await h.iscsi.setBehavior({ fail: { login: [24] } });
    const err = await h.provisioner
      .provision({ firstBackupId: first.id, secondBackupId: second.id })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_ISCSIADM', exitCode: 24 });
    expect(String((err as Error).message)).toMatch(/authentication failure/);
    expect(JSON.stringify(err, Object.getOwnPropertyNames(err))).not.toContain('S3cr3t-Chap');
    const calls = await h.iscsi.calls();
    expect(
      calls.some((c) => c.includes('node.session.auth.authmethod') && c.includes('CHAP')),
    ).toBe(true);
    expect(await h.leftovers()).toEqual([]);
  });
});
