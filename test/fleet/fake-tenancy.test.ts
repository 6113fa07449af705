// The fake tenancy's fleet: several instances, each with its own attachment limit (400
// LimitExceeded past it, as OCI's API error list names the code), instance metadata per
// instance, each delta volume's read bandwidth capped (--volume-throughput), and sim serve's
// flags and ready line for all of it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDevice } from '../../lib/api/device.js';
import { main } from '../../lib/cli/main.js';
import { OciDeltaVolumeProvisioner } from '../../lib/oci/provisioner.js';
import { startOciSimulation } from '../../lib/sim/fake-oci/oci-simulation.js';
import { FakeOciApi } from '../../lib/sim/fake-oci/server.js';
import { startSimulator } from '../../lib/sim/simulator.js';
import { makeIo } from '../cli/helpers.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** POSTs/DELETEs/GETs on an unsigned fake API; resolves with status and JSON body. */
async function call(api: FakeOciApi, method: string, path: string, body?: unknown) {
  const r = await fetch(`${api.endpoint}/20160918${path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await r.text();
  return { status: r.status, json: text ? (JSON.parse(text) as Record<string, string>) : {} };
}

async function deltaVolume(api: FakeOciApi): Promise<string> {
  const { first, second } = api.seedBackupPair();
  const r = await call(api, 'POST', '/volumes', {
    compartmentId: api.compartmentId,
    availabilityDomain: api.availabilityDomain,
    sourceDetails: {
      type: 'volumeBackupDelta',
      firstBackupId: first.id,
      secondBackupId: second.id,
      changeBlockSizeInBytes: 4096,
    },
  });
  expect(r.status).toBe(200);
  return r.json.id as string;
}

const attach = (api: FakeOciApi, volumeId: string, instanceId: string) =>
  call(api, 'POST', '/volumeAttachments', { type: 'iscsi', instanceId, volumeId });

describe('fake OCI API: a fleet of instances', () => {
  it('holds each instance to its attachment limit (400 LimitExceeded), DETACHING counted', async () => {
    await using api = await new FakeOciApi({
      allowUnsigned: true,
      maxAttachmentsPerInstance: 2,
      delays: { provisionMs: 0, attachMs: 0, detachMs: 150, terminateMs: 0 },
    }).start();
    const a = api.instance.id;
    const b = api.addInstance().id;
    expect(api.instances().map((i) => i.id)).toEqual([a, b]);
    const vols = await Promise.all([1, 2, 3, 4].map(() => deltaVolume(api)));
    const [v1, v2, v3, v4] = vols as [string, string, string, string];
    const first = await attach(api, v1, a);
    expect(first.status).toBe(200);
    expect((await attach(api, v2, a)).status).toBe(200);
    const over = await attach(api, v3, a);
    expect(over.status).toBe(400);
    expect(over.json.code).toBe('LimitExceeded');
    expect(over.json.message).toMatch(/limit .*\(2\)/);
    // The limit is per instance: the other one still takes volumes.
    expect((await attach(api, v3, b)).status).toBe(200);
    // A detaching attachment still counts; once DETACHED its slot is free again.
    expect((await call(api, 'DELETE', `/volumeAttachments/${first.json.id}`)).status).toBe(204);
    expect((await attach(api, v4, a)).json.code).toBe('LimitExceeded');
    await new Promise((r) => setTimeout(r, 200));
    expect((await attach(api, v4, a)).status).toBe(200);
  });

  it('answers instance metadata per instance at /imds/<OCID>/opc/v2/instance/', async () => {
    await using api = await new FakeOciApi({ allowUnsigned: true }).start();
    const second = api.addInstance({ displayName: 'second' });
    const get = (url: string) =>
      fetch(`${url}/opc/v2/instance/`, { headers: { authorization: 'Bearer Oracle' } });
    expect(((await (await get(api.endpoint)).json()) as { id: string }).id).toBe(api.instance.id);
    expect(api.imdsUrl()).toBe(`${api.endpoint}/imds/${api.instance.id}`);
    const r = await get(api.imdsUrl(second.id));
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ id: second.id, displayName: 'second' });
    expect((await get(`${api.endpoint}/imds/ocid1.instance.oc1..nope`)).status).toBe(404);
    expect(
      (await fetch(`${api.imdsUrl(second.id)}/opc/v2/instance/`)).status, // no Bearer Oracle
    ).toBe(401);
  });

  it('gives the provisioner of each instance its own identity through --imds-url', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fleet-imds-'));
    dirs.push(dir);
    await using sim = await startOciSimulation({ dir, sizeBytes: 16 << 20, instances: 3 });
    expect(sim.info.instanceIds).toHaveLength(3);
    expect(sim.info.instanceIds[0]).toBe(sim.info.instanceId);
    for (const id of sim.info.instanceIds) {
      await using p = new OciDeltaVolumeProvisioner({
        configFile: sim.info.configFile,
        endpoint: sim.info.endpoint,
        imdsUrl: sim.api.imdsUrl(id),
      });
      expect((await p.instance()).id).toBe(id);
    }
  });

  it('refuses a limit that is not a positive integer', () => {
    expect(() => new FakeOciApi({ maxAttachmentsPerInstance: 0 })).toThrow(RangeError);
  });
});

describe('simulator: a volume read bandwidth cap (readBytesPerSecond)', () => {
  // 8 MiB of changed data read at 16 MiB/s takes ≥ 0.5 s, whatever the concurrency; unthrottled
  // it takes a fraction of that here.
  const changed = [{ offset: 0, length: 8 << 20 }];
  async function readAll(readBytesPerSecond?: number): Promise<number> {
    await using sim = await startSimulator({
      sizeBytes: 64 << 20,
      changed,
      unitAttentionOnLogin: false,
      ...(readBytesPerSecond === undefined ? {} : { readBytesPerSecond }),
    });
    await using dev = await openDevice(`iscsi://${sim.portal}/${sim.iqn}/1`, { queueDepth: 4 });
    const t0 = performance.now();
    let bytes = 0;
    for await (const c of dev.readChanged({ concurrency: 4, chunkSize: 1 << 20 }))
      bytes += c.data.length;
    expect(bytes).toBe(8 << 20);
    return performance.now() - t0;
  }

  it('delays READ replies so the volume serves at most that many bytes per second', async () => {
    const capped = await readAll(16 << 20);
    expect(capped).toBeGreaterThanOrEqual(480);
    expect(capped).toBeLessThan(3000);
    const free = await readAll();
    expect(free).toBeLessThan(capped);
  });

  it('refuses a rate that is not positive', async () => {
    await expect(startSimulator({ sizeBytes: 1 << 20, readBytesPerSecond: 0 })).rejects.toThrow(
      RangeError,
    );
  });
});

describe('sim serve --oci-api --instances / --max-attachments / --volume-throughput', () => {
  it('lists every instance in the ready line, the first as instanceId', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fleet-serve-'));
    dirs.push(dir);
    const io = makeIo();
    const done = main(
      [
        'sim',
        'serve',
        '--size',
        '64M',
        '--random-changes',
        '3',
        '--port',
        '0',
        '--oci-api',
        '--oci-dir',
        dir,
        '--instances',
        '3',
        '--max-attachments',
        '2',
        '--volume-throughput',
        '12.5',
      ],
      io,
    );
    while (!io.out().includes('\n')) {
      if (await Promise.race([done.then(() => true), new Promise((r) => setTimeout(r, 20, false))]))
        throw new Error(`sim serve ended early: ${io.err()}`);
    }
    const line = io.out().split('\n')[0] as string;
    const ready = JSON.parse(line) as { oci: Record<string, unknown> };
    expect(Object.keys(ready.oci)).toEqual([
      'endpoint',
      'configFile',
      'profile',
      'instanceId',
      'instanceIds',
      'firstBackupId',
      'secondBackupId',
    ]);
    const ids = ready.oci.instanceIds as string[];
    expect(ids).toHaveLength(3);
    expect(new Set(ids).size).toBe(3);
    expect(ids[0]).toBe(ready.oci.instanceId);
    for (const id of ids) expect(id).toMatch(/^ocid1\.instance\./);
    io.abort();
    expect(await done).toBe(0);
  });

  it.each([
    [['--instances', '2'], /--instances needs --oci-api/],
    [['--oci-api', '--instances', '0'], /--instances must be 1\.\.1000/],
    [['--oci-api', '--max-attachments', '0'], /--max-attachments must be 1\.\.1024/],
    [['--oci-api', '--volume-throughput', 'fast'], /--volume-throughput must be MiB\/s/],
    [['--volume-throughput', '5'], /--volume-throughput needs --oci-api/],
  ])('%j is a usage error (exit 2)', async (extra, message) => {
    const io = makeIo();
    const code = await main(
      ['sim', 'serve', '--size', '64M', '--random-changes', '1', '--port', '0', ...extra],
      io,
    );
    expect(code).toBe(2);
    expect(io.err()).toMatch(message);
  });
});
