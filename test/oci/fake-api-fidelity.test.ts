// The fake OCI API answers the way OCI documents, driven through the official oci-core SDK (raw
// signed HTTP only where the SDK cannot send the request). Expected statuses and `code` strings
// are OCI's (API error list, apierrors.htm; the delta-volume page for the delta cases; see
// ../shared/reference/oci-and-peers.md §1.3 and §1.10):
//   400 MissingParameter      a required parameter is missing
//   400 InvalidParameter      a parameter is invalid or incorrectly formatted
//   400 CannotParseRequest    the request is incorrectly formatted
//   404 NotAuthorizedOrNotFound  a resource named by the request was not found (or not visible)
//   404 NotFound              no operation at this URI path and method
//   405 MethodNotAllowed      the resource does not support the method
//   409 InvalidatedRetryToken the entity created with the retry token has since been deleted
// and a deleted volume is TERMINATED for a while before it is gone (404).
import * as common from 'oci-common';
import * as core from 'oci-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type FakeOciCredentials,
  generateFakeCredentials,
} from '../../lib/sim/fake-oci/credentials.js';
import { FakeOciApi, type FakeOciApiOptions } from '../../lib/sim/fake-oci/server.js';

interface Sdk {
  bs: core.BlockstorageClient;
  compute: core.ComputeClient;
  creds: FakeOciCredentials;
  close(): void;
}

/** SDK clients pointed at the fake, signing with a fresh trusted key; no retries, no breaker. */
function sdkFor(a: FakeOciApi): Sdk {
  const creds = generateFakeCredentials({ region: a.region });
  a.registerKey(creds);
  const provider = new common.SimpleAuthenticationDetailsProvider(
    creds.tenancyId,
    creds.userId,
    creds.fingerprint,
    creds.privateKeyPem,
    null,
    common.Region.fromRegionId(a.region),
  );
  const conf = () => ({
    retryConfiguration: common.NoRetryConfigurationDetails,
    circuitBreaker: new common.CircuitBreaker({ enabled: false }),
  });
  const bs = new core.BlockstorageClient({ authenticationDetailsProvider: provider }, conf());
  const compute = new core.ComputeClient({ authenticationDetailsProvider: provider }, conf());
  bs.endpoint = a.endpoint;
  compute.endpoint = a.endpoint;
  return {
    bs,
    compute,
    creds,
    close() {
      bs.close();
      compute.close();
    },
  };
}

/** A raw request signed by the SDK's own signer (for what the SDK will not send). */
async function signedFetch(
  a: FakeOciApi,
  creds: FakeOciCredentials,
  method: string,
  path: string,
  body?: string,
): Promise<{ status: number; json: Record<string, unknown>; requestId: string | null }> {
  const provider = new common.SimpleAuthenticationDetailsProvider(
    creds.tenancyId,
    creds.userId,
    creds.fingerprint,
    creds.privateKeyPem,
    null,
  );
  const headers = new Headers();
  const uri = `${a.endpoint}/20160918${path}`;
  await new common.DefaultRequestSigner(provider).signHttpRequest({
    method,
    headers,
    uri,
    ...(body === undefined ? {} : { body }),
  } as never);
  const res = await fetch(uri, { method, headers, ...(body === undefined ? {} : { body }) });
  const text = await res.text();
  return {
    status: res.status,
    json: text ? (JSON.parse(text) as Record<string, unknown>) : {},
    requestId: res.headers.get('opc-request-id'),
  };
}

const oci = (statusCode: number, serviceCode: string) => ({ statusCode, serviceCode });

describe('fake OCI API fidelity (through the oci-core SDK)', () => {
  let api: FakeOciApi;
  let sdk: Sdk;
  const opened: Array<{ close(): void; api?: FakeOciApi }> = [];

  beforeAll(async () => {
    api = await new FakeOciApi({
      delays: { provisionMs: 10, attachMs: 10, detachMs: 10, terminateMs: 20 },
    }).start();
    sdk = sdkFor(api);
  });
  afterAll(async () => {
    sdk.close();
    for (const o of opened) {
      o.close();
      await o.api?.close();
    }
    await api.close();
  });

  const delta = (first: string, second: string, extra: Record<string, unknown> = {}) => ({
    type: 'volumeBackupDelta',
    firstBackupId: first,
    secondBackupId: second,
    ...extra,
  });
  const create = (details: Record<string, unknown>, opcRetryToken?: string) =>
    sdk.bs.createVolume({
      createVolumeDetails: details as never,
      ...(opcRetryToken ? { opcRetryToken } : {}),
    });
  const valid = () => {
    const { first, second } = api.seedBackupPair();
    return {
      compartmentId: api.compartmentId,
      availabilityDomain: api.availabilityDomain,
      sourceDetails: delta(first.id, second.id),
    };
  };

  describe('unknown availability domain or compartment: 404 NotAuthorizedOrNotFound', () => {
    it('createVolume in an availability domain that does not exist', async () => {
      await expect(
        create({ ...valid(), availabilityDomain: 'Uocm:US-ASHBURN-AD-9' }),
      ).rejects.toMatchObject(oci(404, 'NotAuthorizedOrNotFound'));
    });

    it('createVolume in a compartment that does not exist', async () => {
      await expect(
        create({ ...valid(), compartmentId: 'ocid1.compartment.oc1..nosuchcompartment' }),
      ).rejects.toMatchObject(oci(404, 'NotAuthorizedOrNotFound'));
    });

    it('listing volumes, backups and attachments of a compartment that does not exist', async () => {
      const compartmentId = 'ocid1.compartment.oc1..nosuchcompartment';
      await expect(sdk.bs.listVolumes({ compartmentId })).rejects.toMatchObject(
        oci(404, 'NotAuthorizedOrNotFound'),
      );
      await expect(sdk.bs.listVolumeBackups({ compartmentId })).rejects.toMatchObject(
        oci(404, 'NotAuthorizedOrNotFound'),
      );
      await expect(sdk.compute.listVolumeAttachments({ compartmentId })).rejects.toMatchObject(
        oci(404, 'NotAuthorizedOrNotFound'),
      );
    });

    it('the tenancy is the root compartment: listing it works', async () => {
      const r = await sdk.bs.listVolumes({ compartmentId: sdk.creds.tenancyId });
      expect(r.items).toEqual([]);
    });
  });

  describe('invalid parameters: 400 InvalidParameter', () => {
    it.each([
      ['vpusPerGB 5 (not a performance level)', { vpusPerGB: 5 }],
      ['vpusPerGB 25 (not a multiple of 10)', { vpusPerGB: 25 }],
      ['vpusPerGB 130 (above Ultra High Performance)', { vpusPerGB: 130 }],
      ['vpusPerGB -10', { vpusPerGB: -10 }],
      ['displayName not a string', { displayName: 42 }],
      ['freeformTags with a non-string value', { freeformTags: { a: 1 } }],
    ])('createVolume with %s', async (_what, extra) => {
      await expect(create({ ...valid(), ...extra })).rejects.toMatchObject(
        oci(400, 'InvalidParameter'),
      );
    });

    it('createVolume with a change block size that is not a power of two in 4096..1048576', async () => {
      const v = valid();
      await expect(
        create({
          ...v,
          sourceDetails: { ...v.sourceDetails, changeBlockSizeInBytes: 3000 },
        }),
      ).rejects.toMatchObject(oci(400, 'InvalidParameter'));
    });

    it('the performance levels OCI lists are accepted (10, 20, 30..120 in steps of 10)', async () => {
      for (const vpusPerGB of [10, 20, 30, 120]) {
        const r = await create({ ...valid(), vpusPerGB });
        expect(r.volume.vpusPerGB).toBe(vpusPerGB);
      }
    });

    it('vpusPerGB 0 (Lower Cost) is the 404 the delta-volume page documents, not a 400', async () => {
      // OCI's delta-volume page: "404 … Lower Cost performance requested" (reference §1.3).
      await expect(create({ ...valid(), vpusPerGB: 0 })).rejects.toMatchObject(
        oci(404, 'NotAuthorizedOrNotFound'),
      );
    });

    it('list limits outside 1..1000 and page tokens the API never handed out', async () => {
      const compartmentId = api.compartmentId;
      for (const limit of [0, 1001]) {
        await expect(sdk.bs.listVolumes({ compartmentId, limit })).rejects.toMatchObject(
          oci(400, 'InvalidParameter'),
        );
      }
      await expect(
        sdk.bs.listVolumes({ compartmentId, page: 'not-a-page-token' }),
      ).rejects.toMatchObject(oci(400, 'InvalidParameter'));
    });

    it('attachVolume with isReadOnly not a boolean, or a type other than iscsi', async () => {
      const { volume } = await create(valid());
      await expect
        .poll(async () => (await sdk.bs.getVolume({ volumeId: volume.id })).volume.lifecycleState)
        .toBe('AVAILABLE');
      await expect(
        sdk.compute.attachVolume({
          attachVolumeDetails: {
            type: 'iscsi',
            instanceId: api.instance.id,
            volumeId: volume.id,
            isReadOnly: 'yes',
          } as never,
        }),
      ).rejects.toMatchObject(oci(400, 'InvalidParameter'));
      await expect(
        sdk.compute.attachVolume({
          attachVolumeDetails: {
            type: 'paravirtualized',
            instanceId: api.instance.id,
            volumeId: volume.id,
          } as never,
        }),
      ).rejects.toMatchObject(oci(400, 'InvalidParameter'));
    });
  });

  describe('missing required parameters: 400 MissingParameter', () => {
    it('createVolume without sourceDetails.secondBackupId names it (not "malformed … undefined")', async () => {
      const { first } = api.seedBackupPair();
      const err = await create({
        compartmentId: api.compartmentId,
        availabilityDomain: api.availabilityDomain,
        sourceDetails: { type: 'volumeBackupDelta', firstBackupId: first.id },
      }).catch((e: unknown) => e as common.OciError);
      expect(err).toMatchObject(oci(400, 'MissingParameter'));
      expect((err as common.OciError).message).toMatch(/secondBackupId/);
      expect((err as common.OciError).message).not.toMatch(/undefined/);
    });

    it.each([
      [
        'sourceDetails.firstBackupId',
        (v: Record<string, unknown>) => {
          const s = { ...(v.sourceDetails as Record<string, unknown>) };
          delete s.firstBackupId;
          return { ...v, sourceDetails: s };
        },
      ],
      ['sourceDetails', (v: Record<string, unknown>) => ({ ...v, sourceDetails: undefined })],
      ['compartmentId', (v: Record<string, unknown>) => ({ ...v, compartmentId: undefined })],
      [
        'availabilityDomain',
        (v: Record<string, unknown>) => ({ ...v, availabilityDomain: undefined }),
      ],
    ])('createVolume without %s', async (name, strip) => {
      const err = await create(strip(valid())).catch((e: unknown) => e as common.OciError);
      expect(err).toMatchObject(oci(400, 'MissingParameter'));
      expect((err as common.OciError).message).toContain(name.split('.').at(-1) as string);
    });

    it('createVolume whose sourceDetails has no type (raw: the SDK always sends one)', async () => {
      const { first, second } = api.seedBackupPair();
      const r = await signedFetch(
        api,
        sdk.creds,
        'POST',
        '/volumes',
        JSON.stringify({
          compartmentId: api.compartmentId,
          availabilityDomain: api.availabilityDomain,
          sourceDetails: { firstBackupId: first.id, secondBackupId: second.id },
        }),
      );
      expect(r.status).toBe(400);
      expect(r.json.code).toBe('MissingParameter');
      expect(r.requestId).toBeTruthy();
    });

    it('attachVolume without instanceId or volumeId', async () => {
      await expect(
        sdk.compute.attachVolume({
          attachVolumeDetails: { type: 'iscsi', volumeId: 'ocid1.volume.oc1..x' } as never,
        }),
      ).rejects.toMatchObject(oci(400, 'MissingParameter'));
      await expect(
        sdk.compute.attachVolume({
          attachVolumeDetails: { type: 'iscsi', instanceId: api.instance.id } as never,
        }),
      ).rejects.toMatchObject(oci(400, 'MissingParameter'));
    });

    it('listing volume backups without compartmentId (raw: the SDK requires it)', async () => {
      const r = await signedFetch(api, sdk.creds, 'GET', '/volumeBackups');
      expect(r.status).toBe(400);
      expect(r.json.code).toBe('MissingParameter');
    });
  });

  describe('a deleted volume is TERMINATED for a while, then gone', () => {
    const createAvailable = async (a: FakeOciApi, s: Sdk, token?: string) => {
      const { first, second } = a.seedBackupPair();
      const details = {
        compartmentId: a.compartmentId,
        availabilityDomain: a.availabilityDomain,
        sourceDetails: delta(first.id, second.id),
      };
      const { volume } = await s.bs.createVolume({
        createVolumeDetails: details as never,
        ...(token ? { opcRetryToken: token } : {}),
      });
      await expect
        .poll(async () => (await s.bs.getVolume({ volumeId: volume.id })).volume.lifecycleState)
        .toBe('AVAILABLE');
      return { volume, details };
    };

    it('with the default delays it is still TERMINATED (GET and list) 2 s after the delete', async () => {
      const { volume } = await createAvailable(api, sdk);
      await sdk.bs.deleteVolume({ volumeId: volume.id });
      await expect
        .poll(async () => (await sdk.bs.getVolume({ volumeId: volume.id })).volume.lifecycleState)
        .toBe('TERMINATED');
      await new Promise((r) => setTimeout(r, 2000));
      const again = await sdk.bs.getVolume({ volumeId: volume.id });
      expect(again.volume.lifecycleState).toBe('TERMINATED');
      const listed = await sdk.bs.listVolumes({ compartmentId: api.compartmentId });
      expect(listed.items.find((v) => v.id === volume.id)?.lifecycleState).toBe('TERMINATED');
    });

    it('after forgetMs it answers 404 NotAuthorizedOrNotFound and is no longer listed', async () => {
      const options: FakeOciApiOptions = {
        delays: { provisionMs: 10, terminateMs: 20, forgetMs: 600 },
      };
      const short = await new FakeOciApi(options).start();
      const s = sdkFor(short);
      opened.push({ close: () => s.close(), api: short });
      const { volume } = await createAvailable(short, s);
      await s.bs.deleteVolume({ volumeId: volume.id });
      await expect
        .poll(async () => (await s.bs.getVolume({ volumeId: volume.id })).volume.lifecycleState)
        .toBe('TERMINATED');
      await expect
        .poll(
          async () =>
            s.bs.getVolume({ volumeId: volume.id }).then(
              () => 'still there',
              (e: common.OciError) => `${e.statusCode} ${e.serviceCode}`,
            ),
          { timeout: 3000 },
        )
        .toBe('404 NotAuthorizedOrNotFound');
      const listed = await s.bs.listVolumes({ compartmentId: short.compartmentId });
      expect(listed.items.map((v) => v.id)).not.toContain(volume.id);
    });

    it('retrying its create with the same opc-retry-token: 409 InvalidatedRetryToken', async () => {
      const { volume, details } = await createAvailable(api, sdk, 'fidelity-token-1');
      await sdk.bs.deleteVolume({ volumeId: volume.id });
      await expect(
        sdk.bs.createVolume({
          createVolumeDetails: details as never,
          opcRetryToken: 'fidelity-token-1',
        }),
      ).rejects.toMatchObject(oci(409, 'InvalidatedRetryToken'));
    });
  });

  describe('requests that are not operations', () => {
    it('an unknown path: 404 NotFound; a known path with another method: 405 MethodNotAllowed', async () => {
      const a = await signedFetch(api, sdk.creds, 'GET', '/noSuchThings');
      expect([a.status, a.json.code]).toEqual([404, 'NotFound']);
      const b = await signedFetch(
        api,
        sdk.creds,
        'DELETE',
        '/volumeBackups/ocid1.volumebackup.oc1..x',
      );
      expect([b.status, b.json.code]).toEqual([405, 'MethodNotAllowed']);
    });

    it('a body that is not JSON: 400 CannotParseRequest', async () => {
      const r = await signedFetch(api, sdk.creds, 'POST', '/volumes', '{"compartmentId":');
      expect([r.status, r.json.code]).toEqual([400, 'CannotParseRequest']);
      expect(typeof r.json.message).toBe('string');
    });
  });
});
