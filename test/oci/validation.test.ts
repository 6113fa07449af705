import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { OciDeltaError } from '../../lib/oci/errors.js';
import { validateDeltaRequest } from '../../lib/oci/provisioner.js';
import { type Harness, makeHarness } from './harness.js';

describe('validation before spending money', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await makeHarness();
  });
  afterAll(async () => {
    await h.close();
  });
  beforeEach(() => {
    h.api.requests.length = 0;
  });

  const expectRejected = async (
    o: Record<string, unknown>,
    code: string,
    httpStatus: number | undefined,
  ): Promise<OciDeltaError> => {
    const err = await h.provisioner.provision(o as never).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OciDeltaError);
    expect(err).toMatchObject({ code });
    expect((err as OciDeltaError).httpStatus).toBe(httpStatus);
    if (httpStatus !== undefined && httpStatus < 500)
      expect((err as OciDeltaError).documentedMeaning).toBeTruthy();
    expect(h.api.requests.filter((r) => r.method !== 'GET')).toEqual([]); // nothing created
    expect(await h.leftovers()).toEqual([]);
    return err as OciDeltaError;
  };

  it('rejects malformed OCIDs (400)', async () => {
    const { second } = h.api.seedBackupPair();
    for (const bad of [
      '',
      'volumebackup',
      'ocid1.volumebackup',
      'ocid1.volume.oc1.iad.abc',
      'OCID1.volumebackup.oc1.iad.abc',
      'ocid1.volumebackup.oc1.iad.a b',
      42,
    ]) {
      await expectRejected(
        { firstBackupId: bad, secondBackupId: second.id },
        'ERR_OCI_BAD_OCID',
        400,
      );
    }
    await expectRejected(
      { firstBackupId: second.id, secondBackupId: 'ocid1.instance.oc1.iad.abc' },
      'ERR_OCI_BAD_OCID',
      400,
    );
    expect(h.api.requests).toEqual([]); // not even a GET
  });

  it('rejects the same backup twice (400)', async () => {
    const { second } = h.api.seedBackupPair();
    await expectRejected(
      { firstBackupId: second.id, secondBackupId: second.id },
      'ERR_OCI_SAME_BACKUP',
      400,
    );
  });

  it('rejects a block backup paired with a boot backup (400)', async () => {
    const a = h.api.seedBackupPair();
    const b = h.api.seedBackupPair({ kind: 'boot' });
    await expectRejected(
      { firstBackupId: a.first.id, secondBackupId: b.second.id },
      'ERR_OCI_BACKUP_TYPE_MISMATCH',
      400,
    );
  });

  it('rejects change block sizes that are not a power of two in 4096..1048576 (400)', async () => {
    const { first, second } = h.api.seedBackupPair();
    for (const cbs of [0, 512, 2048, 12288, 4096.5, 2097152, -4096, Number.NaN, '4096']) {
      await expectRejected(
        { firstBackupId: first.id, secondBackupId: second.id, changeBlockSize: cbs },
        'ERR_OCI_BAD_CHANGE_BLOCK_SIZE',
        400,
      );
    }
    for (const ok of [4096, 8192, 65536, 1048576]) {
      expect(
        validateDeltaRequest({
          firstBackupId: first.id,
          secondBackupId: second.id,
          changeBlockSize: ok,
        }).changeBlockSize,
      ).toBe(ok);
    }
  });

  it('rejects the Lower Cost performance level (404, as OCI documents)', async () => {
    const { first, second } = h.api.seedBackupPair();
    await expectRejected(
      { firstBackupId: first.id, secondBackupId: second.id, vpusPerGB: 0 },
      'ERR_OCI_REQUEST_REJECTED',
      404,
    );
  });

  it('rejects a performance level OCI does not have (400) before creating anything', async () => {
    const { first, second } = h.api.seedBackupPair();
    for (const vpusPerGB of [25, 130]) {
      await expectRejected(
        { firstBackupId: first.id, secondBackupId: second.id, vpusPerGB },
        'ERR_OCI_REQUEST_REJECTED',
        400,
      );
    }
  });

  it('rejects a backup that does not exist (404)', async () => {
    const { first } = h.api.seedBackupPair();
    const ghost = first.id.replace(/[0-9a-f]{8}$/, '00000000');
    const err = await expectRejected(
      { firstBackupId: first.id, secondBackupId: ghost },
      'ERR_OCI_BACKUP_NOT_FOUND',
      404,
    );
    expect(err.resourceId).toBe(ghost);
  });

  it('rejects a backup that is not AVAILABLE (409)', async () => {
    const { first } = h.api.seedBackupPair();
    const creating = h.api.addBackup({
      volumeId: first.volumeId,
      lifecycleState: 'CREATING',
      timeCreated: new Date().toISOString(),
    });
    await expectRejected(
      { firstBackupId: first.id, secondBackupId: creating.id },
      'ERR_OCI_BACKUP_NOT_AVAILABLE',
      409,
    );
  });

  it('rejects backups of different volumes (403)', async () => {
    const a = h.api.seedBackupPair();
    const b = h.api.seedBackupPair();
    await expectRejected(
      { firstBackupId: a.first.id, secondBackupId: b.second.id },
      'ERR_OCI_BACKUPS_DIFFERENT_VOLUMES',
      403,
    );
  });

  it('rejects a first backup that is not older than the second (400)', async () => {
    const { first, second } = h.api.seedBackupPair();
    await expectRejected(
      { firstBackupId: second.id, secondBackupId: first.id },
      'ERR_OCI_BACKUP_ORDER',
      400,
    );
  });

  it('rejects a second backup that is FULL', async () => {
    const { first } = h.api.seedBackupPair();
    const full = h.api.addBackup({
      volumeId: first.volumeId,
      type: 'FULL',
      timeCreated: new Date().toISOString(),
    });
    await expectRejected(
      { firstBackupId: first.id, secondBackupId: full.id },
      'ERR_OCI_SECOND_BACKUP_NOT_INCREMENTAL',
      400,
    );
  });

  it('rejects a volume resized between the backups (403)', async () => {
    const { first } = h.api.seedBackupPair({ sizeInGBs: 1 });
    const bigger = h.api.addBackup({
      volumeId: first.volumeId,
      sizeInGBs: 2,
      timeCreated: new Date().toISOString(),
    });
    await expectRejected(
      { firstBackupId: first.id, secondBackupId: bigger.id },
      'ERR_OCI_VOLUME_RESIZED',
      403,
    );
  });

  it('rejects two incremental backups with a full backup between them', async () => {
    const t = Date.now() - 10 * 3_600_000;
    const inc1 = h.api.addBackup({ type: 'INCREMENTAL', timeCreated: new Date(t).toISOString() });
    h.api.addBackup({
      volumeId: inc1.volumeId,
      type: 'FULL',
      timeCreated: new Date(t + 3_600_000).toISOString(),
    });
    const inc2 = h.api.addBackup({
      volumeId: inc1.volumeId,
      type: 'INCREMENTAL',
      timeCreated: new Date(t + 7_200_000).toISOString(),
    });
    await expectRejected(
      { firstBackupId: inc1.id, secondBackupId: inc2.id },
      'ERR_OCI_FULL_BACKUP_BETWEEN',
      400,
    );
  });

  it('accepts two incremental backups with no full backup between them', async () => {
    const t = Date.now() - 10 * 3_600_000;
    const inc1 = h.api.addBackup({ type: 'INCREMENTAL', timeCreated: new Date(t).toISOString() });
    const inc2 = h.api.addBackup({
      volumeId: inc1.volumeId,
      type: 'INCREMENTAL',
      timeCreated: new Date(t + 7_200_000).toISOString(),
    });
    const v = await h.provisioner.validate({ firstBackupId: inc1.id, secondBackupId: inc2.id });
    expect(v.kind).toBe('block');
  });

  it('maps a create rejected by OCI (feature not enabled: 404) to its documented meaning', async () => {
    const { first, second } = h.api.seedBackupPair();
    h.api.deltaFeatureEnabled = false;
    try {
      const err = (await h.provisioner
        .provision({ firstBackupId: first.id, secondBackupId: second.id })
        .catch((e: unknown) => e)) as OciDeltaError;
      expect(err).toMatchObject({
        code: 'ERR_OCI_NOT_FOUND',
        httpStatus: 404,
        operation: 'createVolume',
        serviceCode: 'NotAuthorizedOrNotFound',
      });
      expect(err.documentedMeaning).toMatch(/not enabled for the tenancy/);
      expect(err.message).toMatch(/opc-request-id/);
      expect(await h.leftovers()).toEqual([]);
    } finally {
      h.api.deltaFeatureEnabled = true;
    }
  });
});
