/** Test harness: fake OCI API + credentials + fake iscsiadm/sysfs + a provisioner wired to them. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type OciDeltaProvisionerConfig,
  OciDeltaVolumeProvisioner,
} from '../../lib/oci/provisioner.js';
import type { FakeOciCredentials } from '../../lib/sim/fake-oci/credentials.js';
import { FakeOciApi, type FakeOciApiOptions } from '../../lib/sim/fake-oci/server.js';
import { FakeIscsiadm } from './fake-iscsiadm.js';

export interface Harness {
  dir: string;
  api: FakeOciApi;
  creds: FakeOciCredentials;
  iscsi: FakeIscsiadm;
  provisioner: OciDeltaVolumeProvisioner;
  makeProvisioner(extra?: Partial<OciDeltaProvisionerConfig>): OciDeltaVolumeProvisioner;
  /** Everything left in the tenancy and on the host. */
  leftovers(): Promise<string[]>;
  close(): Promise<void>;
}

export const FAST = { intervalMs: 5, maxIntervalMs: 20, timeoutMs: 5000 };

export async function makeHarness(
  apiOptions: FakeOciApiOptions = {},
  extra: Partial<OciDeltaProvisionerConfig> = {},
): Promise<Harness> {
  const dir = await mkdtemp(join(tmpdir(), 'lba-oci-'));
  const api = await new FakeOciApi(apiOptions).start();
  const creds = await api.createCredentials(join(dir, 'oci'));
  const iscsi = await FakeIscsiadm.create(join(dir, 'iscsi'));
  const made: OciDeltaVolumeProvisioner[] = [];
  const makeProvisioner = (more: Partial<OciDeltaProvisionerConfig> = {}) => {
    const p = new OciDeltaVolumeProvisioner({
      configFile: creds.configFile as string,
      profile: 'DEFAULT',
      endpoint: api.endpoint,
      imdsUrl: api.endpoint,
      retry: { maxAttempts: 4, baseDelayMs: 5, maxDelayMs: 20 },
      iscsiadm: {
        binary: iscsi.binary,
        env: iscsi.env,
        lockPath: join(dir, 'iscsiadm.lock'),
        timeoutMs: 10_000,
      },
      sysfsRoot: iscsi.sysfsRoot,
      deviceTimeoutMs: 400,
      deviceIntervalMs: 10,
      poll: FAST,
      ...extra,
      ...more,
    });
    made.push(p);
    return p;
  };
  const provisioner = makeProvisioner();
  return {
    dir,
    api,
    creds,
    iscsi,
    provisioner,
    makeProvisioner,
    leftovers: async () => [...api.leftovers(), ...(await iscsi.leftovers())],
    close: async () => {
      for (const p of made) await p.close();
      await api.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
