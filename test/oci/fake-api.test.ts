import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as common from 'oci-common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OciDeltaVolumeProvisioner } from '../../lib/oci/provisioner.js';
import { createOciClients, type OciClients } from '../../lib/oci/sdk.js';
import {
  generateFakeCredentials,
  keyFingerprint,
  writeOciConfig,
} from '../../lib/sim/fake-oci/credentials.js';
import { FakeOciApi } from '../../lib/sim/fake-oci/server.js';

describe('fake OCI API', () => {
  let api: FakeOciApi;
  let dir: string;
  let good: OciClients;
  let configFile: string;
  const opened: OciClients[] = [];
  const clients = async (cfg: string) => {
    const c = await createOciClients({
      configFile: cfg,
      endpoint: api.endpoint,
      retry: { maxAttempts: 1 },
    });
    opened.push(c);
    return c;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lba-fakeapi-'));
    api = await new FakeOciApi().start();
    const creds = await api.createCredentials(join(dir, 'good'));
    configFile = creds.configFile as string;
    good = await clients(configFile);
  });
  afterAll(async () => {
    for (const c of opened) c.close();
    await api.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('computes OCI key fingerprints (MD5 of the DER public key)', () => {
    const c = generateFakeCredentials();
    expect(c.fingerprint).toMatch(/^([0-9a-f]{2}:){15}[0-9a-f]{2}$/);
    expect(keyFingerprint(c.publicKeyPem)).toBe(c.fingerprint);
    expect(c.keyId).toBe(`${c.tenancyId}/${c.userId}/${c.fingerprint}`);
  });

  it('serves a signed SDK request', async () => {
    const { first } = api.seedBackupPair();
    const r = await good.blockstorage.getVolumeBackup({ volumeBackupId: first.id });
    expect(r.volumeBackup).toMatchObject({
      id: first.id,
      type: 'FULL',
      lifecycleState: 'AVAILABLE',
      volumeId: first.volumeId,
    });
    expect(r.opcRequestId).toBeTruthy();
  });

  it('rejects an unsigned request with 401', async () => {
    const res = await fetch(`${api.endpoint}/20160918/volumes?compartmentId=${api.compartmentId}`);
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ code: 'NotAuthenticated' });
  });

  it('rejects a request signed with the wrong private key for a known keyId (401)', async () => {
    const creds = generateFakeCredentials();
    const registered = await writeOciConfig(join(dir, 'real'), creds);
    api.registerKey(registered);
    const impostor = generateFakeCredentials();
    const cfg = await writeOciConfig(join(dir, 'wrong'), {
      ...creds,
      privateKeyPem: impostor.privateKeyPem,
    });
    const c = await clients(cfg.configFile);
    const { first } = api.seedBackupPair();
    await expect(
      c.blockstorage.getVolumeBackup({ volumeBackupId: first.id }),
    ).rejects.toMatchObject({ statusCode: 401, serviceCode: 'NotAuthenticated' });
    // …and the right key for the same keyId works.
    const ok = await clients(registered.configFile);
    await expect(
      ok.blockstorage.getVolumeBackup({ volumeBackupId: first.id }),
    ).resolves.toBeTruthy();
  });

  it('rejects an unknown keyId (401)', async () => {
    const stranger = await writeOciConfig(join(dir, 'stranger'), generateFakeCredentials());
    const c = await clients(stranger.configFile);
    await expect(c.compute.getInstance({ instanceId: api.instance.id })).rejects.toMatchObject({
      statusCode: 401,
    });
  });

  const signed = async (method: string, path: string, body?: string) => {
    const creds = generateFakeCredentials();
    api.registerKey(creds);
    const provider = new common.SimpleAuthenticationDetailsProvider(
      creds.tenancyId,
      creds.userId,
      creds.fingerprint,
      creds.privateKeyPem,
      null,
    );
    const signer = new common.DefaultRequestSigner(provider);
    const headers = new Headers();
    const uri = `${api.endpoint}/20160918${path}`;
    await signer.signHttpRequest({
      method,
      headers,
      uri,
      ...(body === undefined ? {} : { body }),
    } as never);
    return { headers, uri };
  };

  it('accepts a request signed with the SDK signer as sent', async () => {
    const { headers, uri } = await signed('GET', `/instances/${api.instance.id}`);
    expect(headers.get('authorization')).toMatch(
      /^Signature version="1",keyId="ocid1\.tenancy\.[^"]+",algorithm="rsa-sha256",headers="[^"]*\(request-target\)[^"]*"/,
    );
    const res = await fetch(uri, { headers });
    expect(res.status).toBe(200);
  });

  it('rejects a tampered body (x-content-sha256 mismatch) and a tampered path', async () => {
    const body = JSON.stringify({
      compartmentId: api.compartmentId,
      availabilityDomain: api.availabilityDomain,
    });
    const s1 = await signed('POST', '/volumes', body);
    const tampered = body.replace('"compartmentId"', '"compartmentID"');
    const r1 = await fetch(s1.uri, { method: 'POST', headers: s1.headers, body: tampered });
    expect(r1.status).toBe(401);
    expect(((await r1.json()) as { message: string }).message).toMatch(/x-content-sha256/);
    const s2 = await signed('GET', `/instances/${api.instance.id}`);
    const r2 = await fetch(`${api.endpoint}/20160918/volumes?compartmentId=${api.compartmentId}`, {
      headers: s2.headers,
    });
    expect(r2.status).toBe(401);
    expect(((await r2.json()) as { message: string }).message).toMatch(/signature does not verify/);
  });

  it('rejects a signature whose date is more than 5 minutes off', async () => {
    const creds = generateFakeCredentials();
    api.registerKey(creds);
    const provider = new common.SimpleAuthenticationDetailsProvider(
      creds.tenancyId,
      creds.userId,
      creds.fingerprint,
      creds.privateKeyPem,
      null,
    );
    const headers = new Headers({ 'x-date': new Date(Date.now() - 10 * 60_000).toUTCString() });
    const uri = `${api.endpoint}/20160918/instances/${api.instance.id}`;
    await new common.DefaultRequestSigner(provider).signHttpRequest({
      method: 'GET',
      headers,
      uri,
    } as never);
    const res = await fetch(uri, { headers });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { message: string }).message).toMatch(/5 minutes/);
  });

  it('serves instance metadata only with Authorization: Bearer Oracle', async () => {
    expect((await fetch(`${api.endpoint}/opc/v2/instance/`)).status).toBe(401);
    const res = await fetch(`${api.endpoint}/opc/v2/instance/`, {
      headers: { Authorization: 'Bearer Oracle' },
    });
    expect(await res.json()).toMatchObject({
      id: api.instance.id,
      compartmentId: api.compartmentId,
      availabilityDomain: api.availabilityDomain,
    });
  });

  describe('documented delta-volume errors (straight to the API, no pre-flight)', () => {
    const create = (
      src: Record<string, unknown>,
      extra: Record<string, unknown> = {},
      token?: string,
    ) =>
      good.blockstorage.createVolume({
        createVolumeDetails: {
          compartmentId: api.compartmentId,
          availabilityDomain: api.availabilityDomain,
          sourceDetails: { type: 'volumeBackupDelta', ...src } as never,
          ...extra,
        },
        ...(token ? { opcRetryToken: token } : {}),
      });

    it('400: malformed OCID, same OCID twice, first newer than second, bad type', async () => {
      const { first, second } = api.seedBackupPair();
      await expect(
        create({ firstBackupId: 'ocid1.bogus', secondBackupId: second.id }),
      ).rejects.toMatchObject({ statusCode: 400 });
      await expect(
        create({ firstBackupId: first.id, secondBackupId: first.id }),
      ).rejects.toMatchObject({ statusCode: 400 });
      await expect(
        create({ firstBackupId: second.id, secondBackupId: first.id }),
      ).rejects.toMatchObject({ statusCode: 400 });
      await expect(
        good.blockstorage.createVolume({
          createVolumeDetails: {
            compartmentId: api.compartmentId,
            availabilityDomain: api.availabilityDomain,
            sourceDetails: { type: 'volumeBackup', id: first.id } as never,
          },
        }),
      ).rejects.toMatchObject({ statusCode: 400 });
    });

    it('403: different volumes, resized volume', async () => {
      const a = api.seedBackupPair();
      const b = api.seedBackupPair();
      await expect(
        create({ firstBackupId: a.first.id, secondBackupId: b.second.id }),
      ).rejects.toMatchObject({ statusCode: 403 });
      const big = api.addBackup({ volumeId: a.first.volumeId, sizeInGBs: 3 });
      await expect(
        create({ firstBackupId: a.first.id, secondBackupId: big.id }),
      ).rejects.toMatchObject({ statusCode: 403 });
    });

    it('404: backup not found, Lower Cost requested, feature not enabled', async () => {
      const { first, second } = api.seedBackupPair();
      await expect(
        create({ firstBackupId: first.id, secondBackupId: second.id.replace(/.{4}$/, '0000') }),
      ).rejects.toMatchObject({ statusCode: 404 });
      await expect(
        create({ firstBackupId: first.id, secondBackupId: second.id }, { vpusPerGB: 0 }),
      ).rejects.toMatchObject({ statusCode: 404 });
      api.deltaFeatureEnabled = false;
      await expect(
        create({ firstBackupId: first.id, secondBackupId: second.id }),
      ).rejects.toMatchObject({ statusCode: 404 });
      api.deltaFeatureEnabled = true;
    });

    it('409: a backup not AVAILABLE', async () => {
      const { first } = api.seedBackupPair();
      const pending = api.addBackup({ volumeId: first.volumeId, lifecycleState: 'CREATING' });
      await expect(
        create({ firstBackupId: first.id, secondBackupId: pending.id }),
      ).rejects.toMatchObject({ statusCode: 409 });
    });

    it('opc-retry-token: the same request returns the same volume; a different one is 409 InvalidatedRetryToken', async () => {
      const { first, second } = api.seedBackupPair();
      const a = await create({ firstBackupId: first.id, secondBackupId: second.id }, {}, 'tok-1');
      const b = await create({ firstBackupId: first.id, secondBackupId: second.id }, {}, 'tok-1');
      expect(b.volume.id).toBe(a.volume.id);
      await expect(
        create(
          { firstBackupId: first.id, secondBackupId: second.id },
          { displayName: 'x' },
          'tok-1',
        ),
      ).rejects.toMatchObject({
        statusCode: 409,
        serviceCode: 'InvalidatedRetryToken',
      });
      expect(a.volume.sourceDetails).toMatchObject({
        type: 'volumeBackupDelta',
        firstBackupId: first.id,
      });
    });
  });

  it('a provisioner with the wrong key fails with ERR_OCI_NOT_AUTHENTICATED and creates nothing', async () => {
    const creds = generateFakeCredentials();
    api.registerKey(creds);
    const cfg = await writeOciConfig(join(dir, 'wrong2'), {
      ...creds,
      privateKeyPem: generateFakeCredentials().privateKeyPem,
    });
    const before = api.volumes().length;
    const { first, second } = api.seedBackupPair();
    const p = new OciDeltaVolumeProvisioner({
      configFile: cfg.configFile,
      endpoint: api.endpoint,
      imdsUrl: api.endpoint,
      retry: { maxAttempts: 1 },
    });
    try {
      await expect(
        p.provision({ firstBackupId: first.id, secondBackupId: second.id }),
      ).rejects.toMatchObject({
        code: 'ERR_OCI_NOT_AUTHENTICATED',
        httpStatus: 401,
      });
    } finally {
      await p.close();
    }
    expect(api.volumes().length).toBe(before);
  });
});
