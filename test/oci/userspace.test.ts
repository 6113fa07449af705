// OciDeltaVolumeProvisioner with attach: 'userspace': after ATTACHED the volume's device is the
// attachment's iscsi:// URL, nothing runs on the host (no iscsiadm call, no sysfs), CHAP from
// the attachment travels only in the non-enumerable deviceOptions, and release/sweep keep every
// guarantee of the iscsiadm path.
import { inspect } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createOciDeltaCommand } from '../../lib/cli/oci.js';
import type { OciDeltaOptions, OciDeltaVolume } from '../../lib/oci/provisioner.js';
import { OciDeltaVolumeProvisioner } from '../../lib/oci/provisioner.js';
import { sweep } from '../../lib/oci/sweep.js';
import { startSimulator } from '../../lib/sim/simulator.js';
import { makeIo } from '../cli/helpers.js';
import { provisionerContract } from '../provision/contract.js';
import { FAST, type Harness, makeHarness } from './harness.js';

const SECRET = 'Us3rspace-Chap-S3cret';

function chapTarget() {
  return {
    attachTarget: () => ({
      ipv4: '10.0.0.7',
      port: 3261,
      iqn: 'iqn.2015-12.com.oracleiaas:userspace',
      chap: { username: 'ocid1.volume.oc1..user', secret: SECRET },
    }),
  };
}

provisionerContract<OciDeltaOptions>(
  'OciDeltaVolumeProvisioner attach: userspace (fake OCI API)',
  async () => {
    const h = await makeHarness({}, { attach: 'userspace', sysfsRoot: '/nonexistent-sysfs' });
    const { first, second } = h.api.seedBackupPair();
    return {
      provisioner: h.provisioner,
      options: () => ({ firstBackupId: first.id, secondBackupId: second.id }),
      leftovers: async () => [
        ...(await h.leftovers()),
        ...(await h.iscsi.calls()).map((c) => `iscsiadm ${c.join(' ')}`),
      ],
      teardown: () => h.close(),
    };
  },
);

describe("OciDeltaVolumeProvisioner attach: 'userspace'", () => {
  let h: Harness;
  beforeEach(async () => {
    // sysfs and iscsiadm point at things that would fail if used.
    h = await makeHarness(chapTarget(), {
      attach: 'userspace',
      sysfsRoot: '/nonexistent-sysfs',
    });
  });
  afterEach(async () => {
    await h.close();
  });

  it('hands back the attachment as iscsi://IPV4:PORT/IQN/1 with CHAP only in the non-enumerable deviceOptions', async () => {
    const { first, second } = h.api.seedBackupPair();
    const progress: string[] = [];
    const vol: OciDeltaVolume = await h.provisioner.provision({
      firstBackupId: first.id,
      secondBackupId: second.id,
      changeBlockSize: 65536,
      onProgress: (e) => progress.push(`${e.step}:${e.phase}:${e.detail ?? ''}`),
    });
    try {
      expect(vol.attach).toBe('userspace');
      expect(vol.device).toBe('iscsi://10.0.0.7:3261/iqn.2015-12.com.oracleiaas:userspace/1');
      expect(vol.devicePath).toBe(vol.device);
      expect(vol.sgPath).toBeUndefined();
      expect(vol.deviceOptions).toEqual({
        chap: { username: 'ocid1.volume.oc1..user', secret: SECRET },
      });
      expect(vol.description).toContain(vol.device);
      // The secret is in no field, no serialisation, no progress line.
      expect(JSON.stringify(vol)).not.toContain(SECRET);
      expect(inspect(vol, { depth: 10 })).not.toContain(SECRET);
      expect({ ...vol }).not.toHaveProperty('deviceOptions');
      expect(progress.join('\n')).not.toContain(SECRET);
      expect(progress).toContain(`device:done:${vol.device} (CHAP)`);
      // No host-side step at all.
      expect(progress.some((p) => /^(login|logout|node-delete)/.test(p))).toBe(false);
      expect(await h.iscsi.calls()).toEqual([]);
      // Same tags as the iscsiadm path, plus how it was attached.
      const tags = (h.api.volume(vol.volumeId) as { freeformTags: Record<string, string> })
        .freeformTags;
      expect(tags).toMatchObject({
        'lba-status': 'delta',
        'lba-status-job': vol.jobId,
        'lba-status-attach': 'userspace',
      });
    } finally {
      await vol.release();
    }
    expect(await h.leftovers()).toEqual([]);
    expect(await h.iscsi.calls()).toEqual([]);
    expect(progress).toContain(`delete:done:${vol.volumeId}`);
  });

  it('an IPv6 portal is bracketed in the URL', async () => {
    await h.close();
    h = await makeHarness(
      {
        attachTarget: () => ({
          ipv4: 'fd00::7',
          port: 3260,
          iqn: 'iqn.2015-12.com.oracleiaas:v6',
        }),
      },
      { attach: 'userspace' },
    );
    const { first, second } = h.api.seedBackupPair();
    const vol = await h.provisioner.provision({
      firstBackupId: first.id,
      secondBackupId: second.id,
    });
    expect(vol.device).toBe('iscsi://[fd00::7]:3260/iqn.2015-12.com.oracleiaas:v6/1');
    await vol.release();
    expect(await h.leftovers()).toEqual([]);
  });

  it('an abort after ATTACHED detaches and deletes, with no iscsiadm call', async () => {
    const { first, second } = h.api.seedBackupPair();
    const ac = new AbortController();
    const err = await h.provisioner
      .provision({
        firstBackupId: first.id,
        secondBackupId: second.id,
        signal: ac.signal,
        onProgress: (e) => {
          if (e.step === 'wait-attached' && e.phase === 'done') ac.abort();
        },
      })
      .catch((e: unknown) => e);
    expect((err as Error).name).toBe('AbortError');
    expect(await h.leftovers()).toEqual([]);
    expect(await h.iscsi.calls()).toEqual([]);
  });

  it('sweep removes a userspace orphan attached to this instance without iscsiadm', async () => {
    const orphan = await h.api.plantOrphan({
      tags: {
        'lba-status': 'delta',
        'lba-status-created': new Date(Date.now() - 7_200_000).toISOString(),
        'lba-status-attach': 'userspace',
      },
      attach: true,
    });
    const result = await sweep(h.provisioner, { olderThanMs: 3_600_000 });
    expect(result.errors).toEqual([]);
    expect(result.volumes).toEqual([orphan.volumeId]);
    expect(result.attachments).toEqual([orphan.attachmentId]);
    expect(result.sessions).toEqual([]);
    expect(await h.iscsi.calls()).toEqual([]);
    expect(h.api.leftovers()).toEqual([]);
  });

  it('refuses an unknown attach mode', () => {
    expect(
      () => new OciDeltaVolumeProvisioner({ attach: 'kernel' as unknown as 'iscsiadm' }),
    ).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
  });
});

describe('oci delta --attach userspace: failures to reach the target still clean up', () => {
  const run = async (h: Harness) => {
    const { first, second } = h.api.seedBackupPair();
    const io = makeIo();
    const code = await createOciDeltaCommand({ config: { poll: FAST } }).run(
      [
        '--config-file',
        h.creds.configFile as string,
        '--endpoint',
        h.api.endpoint,
        '--imds-url',
        h.api.endpoint,
        '--attach',
        'userspace',
        '--first-backup',
        first.id,
        '--second-backup',
        second.id,
        '--verbose',
      ],
      io,
    );
    return { code, io };
  };

  it('a portal that refuses the connection exits 3, after detach and delete', async () => {
    const gone = await startSimulator({ sizeBytes: 1 << 20, port: 0 });
    const port = gone.port;
    await gone.close();
    const h = await makeHarness({
      attachTarget: () => ({ ipv4: '127.0.0.1', port, iqn: 'iqn.2015-12.com.oracleiaas:gone' }),
    });
    try {
      const { code, io } = await run(h);
      expect(code).toBe(3);
      expect(io.err()).toMatch(/^lba-status: .*ECONNREFUSED/m);
      expect(io.err()).toMatch(/oci: delete done/);
      expect(await h.leftovers()).toEqual([]);
      expect(await h.iscsi.calls()).toEqual([]);
    } finally {
      await h.close();
    }
  });

  it('a refused CHAP login exits 5 without printing the secret, after detach and delete', async () => {
    const sim = await startSimulator({
      sizeBytes: 1 << 20,
      port: 0,
      chap: { username: 'ocid1.volume.oc1..u', secret: 'the-real-Secret-1' },
    });
    const h = await makeHarness({
      attachTarget: () => ({
        ipv4: '127.0.0.1',
        port: sim.port,
        iqn: sim.iqn,
        chap: { username: 'ocid1.volume.oc1..u', secret: SECRET },
      }),
    });
    try {
      const { code, io } = await run(h);
      expect(code).toBe(5);
      expect(io.err()).toMatch(/^lba-status: .*login/m);
      expect(io.out() + io.err()).not.toContain(SECRET);
      expect(await h.leftovers()).toEqual([]);
    } finally {
      await h.close();
      await sim.close();
    }
  });
});
