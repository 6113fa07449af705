import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { OciDeltaOptions } from '../../lib/oci/provisioner.js';
import { isAbortError } from '../../lib/provision/errors.js';
import { withProvisionedVolume } from '../../lib/provision/with-volume.js';
import { type Harness, makeHarness } from './harness.js';

describe('a failure at each step leaves the tenancy and the host empty', () => {
  let h: Harness;
  let ids: OciDeltaOptions;
  beforeEach(async () => {
    h = await makeHarness();
    const { first, second } = h.api.seedBackupPair();
    ids = { firstBackupId: first.id, secondBackupId: second.id };
  });
  afterEach(async () => {
    await h.close();
  });

  const fails = async (code: string | RegExp) => {
    const err = await h.provisioner.provision(ids).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect((err as { code?: string }).code).toMatch(code);
    expect(await h.leftovers()).toEqual([]);
    return err as Error & { code: string };
  };

  it('create: the service keeps failing (500 after all retries)', async () => {
    h.api.inject({ operation: 'CreateVolume', status: 500, times: Number.POSITIVE_INFINITY });
    const err = await fails('ERR_OCI_SERVICE');
    expect(h.api.requests.filter((r) => r.operation === 'CreateVolume')).toHaveLength(4); // retried
    expect(err.message).toMatch(/createVolume/);
  });

  it('create: the volume was made but every answer was lost (found by its job tag and deleted)', async () => {
    h.api.inject({
      operation: 'CreateVolume',
      status: 500,
      times: Number.POSITIVE_INFINITY,
      when: 'after',
    });
    await fails('ERR_OCI_SERVICE');
    expect(h.api.volumes()).toHaveLength(1); // one volume despite 4 attempts: the retry token held
    expect(h.api.volumes()[0]?.lifecycleState).toBe('TERMINATED');
  });

  it('wait AVAILABLE: the volume goes FAULTY', async () => {
    h.api.volumeOutcome = 'FAULTY';
    const err = await fails('ERR_OCI_LIFECYCLE');
    expect(err.message).toMatch(/FAULTY/);
  });

  it('wait AVAILABLE: the deadline passes; cleanup has its own deadline', async () => {
    await h.close();
    h = await makeHarness({ delays: { provisionMs: 400 } });
    const { first, second } = h.api.seedBackupPair();
    const p = h.makeProvisioner({
      poll: { intervalMs: 5, maxIntervalMs: 20, timeoutMs: 100 },
      releaseTimeoutMs: 5000,
    });
    const err = await p
      .provision({ firstBackupId: first.id, secondBackupId: second.id })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_OCI_TIMEOUT' });
    expect((err as Error).message).toMatch(/PROVISIONING/);
    expect(await h.leftovers()).toEqual([]);
  });

  it('attach: rejected (400)', async () => {
    h.api.inject({ operation: 'AttachVolume', status: 400, code: 'InvalidParameter' });
    await fails('ERR_OCI_REQUEST_REJECTED');
  });

  it('attach: made but every answer lost (found by listing and detached)', async () => {
    h.api.inject({
      operation: 'AttachVolume',
      status: 500,
      times: Number.POSITIVE_INFINITY,
      when: 'after',
    });
    await fails('ERR_OCI_SERVICE');
    expect(h.api.attachments()).toHaveLength(1);
  });

  it('wait ATTACHED: the attachment falls to DETACHED', async () => {
    h.api.attachOutcome = 'DETACHED';
    await fails('ERR_OCI_LIFECYCLE');
  });

  it('login: iscsiadm exits 5 (login failure)', async () => {
    await h.iscsi.setBehavior({ fail: { login: [5] } });
    const err = await fails('ERR_ISCSIADM');
    expect(err.message).toMatch(/exit 5 \(login failure\)/);
  });

  it('node new: iscsiadm exits 12 (transport not loaded)', async () => {
    await h.iscsi.setBehavior({ fail: { new: [12] } });
    const err = await fails('ERR_ISCSIADM');
    expect(err.message).toMatch(/iscsi_tcp/);
  });

  it('iscsiadm missing (127)', async () => {
    const p = h.makeProvisioner({
      iscsiadm: { binary: '/nonexistent/iscsiadm', lockPath: `${h.dir}/l.lock` },
    });
    const err = await p.provision(ids).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_ISCSIADM', exitCode: 127 });
    expect(h.api.leftovers()).toEqual([]);
  });

  it('device discovery: no disk appears before the timeout', async () => {
    await h.iscsi.setBehavior({ noDevice: true });
    const err = await fails('ERR_OCI_DEVICE_NOT_FOUND');
    expect(err.message).toMatch(/sd_mod/);
  });

  it('scan: the work callback throws', async () => {
    const boom = new Error('scan blew up');
    await expect(
      withProvisionedVolume(h.provisioner, ids, async () => Promise.reject(boom)),
    ).rejects.toBe(boom);
    expect(await h.leftovers()).toEqual([]);
  });

  it('logout fails once: release reports what is left, a second release finishes', async () => {
    const vol = await h.provisioner.provision(ids);
    await h.iscsi.setBehavior({ fail: { logout: [10] } });
    const err = await vol.release().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_OCI_RELEASE' });
    expect((err as Error).message).toMatch(/iSCSI session/);
    expect(h.api.leftovers()).toEqual([]); // detach and delete went ahead (read-only volume)
    expect(await h.iscsi.leftovers()).not.toEqual([]);
    await vol.release();
    expect(await h.leftovers()).toEqual([]);
  });

  it('detach rejected (403) once: release fails naming the volume, a second release finishes', async () => {
    const vol = await h.provisioner.provision(ids);
    h.api.inject({ operation: 'DetachVolume', status: 403, code: 'NotAuthorized' });
    const err = await vol.release().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_OCI_RELEASE' });
    expect((err as Error).message).toMatch(/billed at full size/);
    await vol.release();
    expect(await h.leftovers()).toEqual([]);
  });

  it('detach and delete survive a burst of 500s longer than the SDK retry budget', async () => {
    const vol = await h.provisioner.provision(ids);
    h.api.inject({ operation: 'DetachVolume', status: 500, times: 6 });
    h.api.inject({ operation: 'DeleteVolume', status: 503, times: 6 });
    await vol.release();
    expect(await h.leftovers()).toEqual([]);
  });

  it('delete rejected (403) once: a second release finishes', async () => {
    const vol = await h.provisioner.provision(ids);
    h.api.inject({ operation: 'DeleteVolume', status: 403, code: 'NotAuthorized' });
    await expect(vol.release()).rejects.toMatchObject({ code: 'ERR_OCI_RELEASE' });
    expect(h.api.leftovers()).toHaveLength(1);
    await vol.release();
    expect(await h.leftovers()).toEqual([]);
  });
});

describe('abort', () => {
  let h: Harness;
  afterEach(async () => {
    await h.close();
  });

  it('while waiting for AVAILABLE: rejects with AbortError and cleans up', async () => {
    // The abort fires once the fake API has answered a GET of the volume, which stays
    // PROVISIONING for 300 ms (the wait is under way; the cleanup's delete is then accepted once it
    // is AVAILABLE, as OCI refuses to delete a PROVISIONING volume).
    h = await makeHarness({ delays: { provisionMs: 300 } });
    const { first, second } = h.api.seedBackupPair();
    const ac = new AbortController();
    const polled = (volumeId: string) =>
      h.api.requests.some(
        (r) => r.method === 'GET' && r.path.endsWith(`/volumes/${volumeId}`) && r.status === 200,
      );
    const abortOnceTrue = (cond: () => boolean): void => {
      if (cond()) ac.abort();
      else setTimeout(abortOnceTrue, 1, cond);
    };
    const p = h.provisioner.provision({
      firstBackupId: first.id,
      secondBackupId: second.id,
      signal: ac.signal,
      onProgress: (e) => {
        if (e.step === 'wait-available' && e.phase === 'start') {
          const volumeId = e.detail!;
          abortOnceTrue(() => polled(volumeId));
        }
      },
    });
    const err = await p.catch((e: unknown) => e);
    expect(isAbortError(err)).toBe(true);
    expect(await h.leftovers()).toEqual([]);
    expect(h.api.volumes()).toHaveLength(1);
  });

  it('while waiting for the disk: rejects with AbortError and cleans up', async () => {
    h = await makeHarness({}, { deviceTimeoutMs: 10_000 });
    await h.iscsi.setBehavior({ noDevice: true });
    const { first, second } = h.api.seedBackupPair();
    const ac = new AbortController();
    const err = await h.provisioner
      .provision({
        firstBackupId: first.id,
        secondBackupId: second.id,
        signal: ac.signal,
        // The disk never appears (noDevice): only the abort, on the step's start, ends the wait.
        onProgress: (e) => {
          if (e.step === 'device' && e.phase === 'start') ac.abort();
        },
      })
      .catch((e: unknown) => e);
    expect(isAbortError(err)).toBe(true);
    expect(await h.leftovers()).toEqual([]);
  });

  it('mid-scan: the work sees the abort and everything is released', async () => {
    h = await makeHarness();
    const { first, second } = h.api.seedBackupPair();
    const ac = new AbortController();
    let sawDevice = '';
    const err = await withProvisionedVolume(
      h.provisioner,
      { firstBackupId: first.id, secondBackupId: second.id, signal: ac.signal },
      async (vol, signal) => {
        sawDevice = vol.devicePath;
        const aborted = new Promise((_, reject) =>
          signal.addEventListener('abort', () => reject(signal.reason)),
        );
        ac.abort();
        await aborted;
      },
    ).catch((e: unknown) => e);
    expect(sawDevice).toMatch(/^\/dev\/sd/);
    expect(isAbortError(err)).toBe(true);
    expect(await h.leftovers()).toEqual([]);
  });
});

describe('retries and the circuit breaker', () => {
  let h: Harness;
  afterEach(async () => {
    await h.close();
  });

  it('429s and 5xx on every call are retried and the run succeeds with one volume', async () => {
    h = await makeHarness();
    const { first, second } = h.api.seedBackupPair();
    h.api.inject({ operation: 'GetVolumeBackup', status: 429, times: 2 });
    h.api.inject({ operation: 'CreateVolume', status: 500, times: 2 });
    h.api.inject({ operation: 'CreateVolume', status: 503, when: 'after' });
    h.api.inject({ operation: 'GetVolume', status: 502, times: 2 });
    h.api.inject({ operation: 'AttachVolume', status: 429 });
    h.api.inject({ operation: 'GetVolumeAttachment', status: 500 });
    h.api.inject({ operation: 'InstanceMetadata', status: 500 }); // not an SDK call: ignored
    const vol = await h.provisioner.provision({
      firstBackupId: first.id,
      secondBackupId: second.id,
    });
    expect(h.api.volumes()).toHaveLength(1);
    const statuses = h.api.requests
      .filter((r) => r.operation === 'CreateVolume')
      .map((r) => r.status);
    expect(statuses).toEqual([500, 500, 503, 200]);
    await vol.release();
    expect(await h.leftovers()).toEqual([]);
  });

  it('a short outage that opens the circuit breaker does not fail the run', async () => {
    h = await makeHarness(
      { delays: { provisionMs: 50 } },
      {
        circuitBreaker: { volumeThreshold: 3, resetTimeout: 30, errorThresholdPercentage: 50 },
      },
    );
    const { first, second } = h.api.seedBackupPair();
    h.api.inject({ operation: 'GetVolume', status: 500, times: 12 });
    const vol = await h.provisioner.provision({
      firstBackupId: first.id,
      secondBackupId: second.id,
    });
    expect(
      h.api.requests.filter((r) => r.operation === 'GetVolume' && r.status === 500),
    ).toHaveLength(12);
    await vol.release();
    expect(await h.leftovers()).toEqual([]);
  });

  it('4xx answers do not count against the breaker', async () => {
    h = await makeHarness(
      {},
      {
        circuitBreaker: { volumeThreshold: 2, resetTimeout: 60_000, errorThresholdPercentage: 10 },
      },
    );
    for (let i = 0; i < 5; i++) {
      await h.provisioner
        .validate({
          firstBackupId: 'ocid1.volumebackup.oc1.iad.aaaa',
          secondBackupId: 'ocid1.volumebackup.oc1.iad.bbbb',
        })
        .catch(() => undefined);
    }
    const { first, second } = h.api.seedBackupPair();
    const v = await h.provisioner.validate({ firstBackupId: first.id, secondBackupId: second.id });
    expect(v.kind).toBe('block');
  });
});
