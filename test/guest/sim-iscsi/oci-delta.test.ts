// The OCI delta workflow end to end through the real kernel: the fake OCI API (signed requests)
// hands out iSCSI attachments that point at simulator targets, the provisioner logs in with the
// guest's real iscsid/iscsiadm, finds the disk through sysfs, the package's scanner reads GET LBA
// STATUS(32) from it, and release/sweep leave no session, node record, attachment or volume.
// Runs in the sim-iscsi scenario (iscsid is up; scripts/guest/scenarios/sim.sh).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDevice, scanBatches } from '../../../lib/index.js';
import { OciDeltaVolumeProvisioner } from '../../../lib/oci/provisioner.js';
import { SimulatorProvisioner } from '../../../lib/provision/sim.js';
import {
  type OciSimulation,
  startOciSimulation,
} from '../../../lib/sim/fake-oci/oci-simulation.js';
import { expectedDelta, randomRanges } from '../../support/oracle.js';
import { ociConnectionArgs } from '../sim/attach.js';
import { scenario } from '../support/index.js';

scenario(); // fails fast outside a guest scenario
const root = fileURLToPath(new URL('../../..', import.meta.url)).replace(/\/$/, '');
const out = process.env.GUEST_OUT ?? mkdtempSync(join(tmpdir(), 'oci-e2e-'));
const CBS = 65536;

type Ext = { lba: number; blocks: number; status: number };
function merge(list: Ext[]): Ext[] {
  const res: Ext[] = [];
  for (const d of list) {
    const last = res[res.length - 1];
    if (last && last.lba + last.blocks === d.lba && last.status === d.status)
      last.blocks += d.blocks;
    else res.push({ ...d });
  }
  return res;
}

/** Every extent of a 32-byte report-type-1 scan of `path`, adjacent equal ones merged. */
async function scanMerged(path: string): Promise<Ext[]> {
  const got: Ext[] = [];
  const dev = await openDevice(path);
  try {
    for await (const b of scanBatches(dev, { reportType: 'nonzero', cdb: 32 })) {
      for (let i = 0; i < b.count; i++)
        got.push({ lba: b.lba[i]!, blocks: b.blocks[i]!, status: b.status[i]! });
    }
  } finally {
    await dev.close();
  }
  return merge(got);
}

/** iSCSI sessions, node records and sysfs sessions that mention `iqn`. */
function hostTraces(iqn: string): string[] {
  const traces: string[] = [];
  const session = spawnSync('iscsiadm', ['-m', 'session'], { encoding: 'utf8' });
  if (session.stdout.includes(iqn)) traces.push(`session ${iqn}`);
  const node = spawnSync('iscsiadm', ['-m', 'node'], { encoding: 'utf8' });
  if (node.stdout.includes(iqn)) traces.push(`node record ${iqn}`);
  for (const d of readdirSync('/sys/class/iscsi_session')) {
    if (readFileSync(`/sys/class/iscsi_session/${d}/targetname`, 'utf8').trim() === iqn)
      traces.push(`sysfs ${d}`);
  }
  return traces;
}

describe('oci delta end to end (fake OCI API + simulator + kernel initiator)', () => {
  let sim: OciSimulation;
  // The test's own changed bytes (any offset, some changed to zeros); expectations come from
  // test/support/oracle.ts's change-block bitmap, never from lib/sim.
  const changed = randomRanges(424242, 40, 64 << 20, 3 * 4096, 0.25);
  const geometry = { sizeBytes: 64 << 20, blockSize: 512, changeBlockSize: CBS };
  beforeAll(async () => {
    sim = await startOciSimulation({
      dir: mkdtempSync(join(out, 'oci-')),
      sizeBytes: 64 << 20,
      changed,
      delays: { provisionMs: 200, attachMs: 200, detachMs: 100, terminateMs: 100 },
    });
  });
  afterAll(async () => {
    await sim?.close();
  });

  it('provision → scan → release returns exactly the changed set and leaves nothing', async () => {
    const p = new OciDeltaVolumeProvisioner({
      configFile: sim.info.configFile,
      endpoint: sim.info.endpoint,
      instanceId: sim.info.instanceId,
      poll: { intervalMs: 50, maxIntervalMs: 200, timeoutMs: 30_000 },
    });
    let iqn = '';
    let vol: Awaited<ReturnType<typeof p.provision>> | undefined;
    try {
      vol = await p.provision({
        firstBackupId: sim.info.firstBackupId,
        secondBackupId: sim.info.secondBackupId,
        changeBlockSize: CBS,
      });
      iqn = vol.target.iqn;
      expect(vol.devicePath).toMatch(/^\/dev\/sd[a-z]+$/);
      expect(vol.sgPath).toMatch(/^\/dev\/sg\d+$/);
      expect(vol.blockSize).toBe(512);
      expect(hostTraces(iqn).length).toBeGreaterThan(0);
      const got = await scanMerged(vol.sgPath ?? vol.devicePath);
      const expected = expectedDelta(changed, geometry);
      expect(expected.length).toBeGreaterThan(0);
      expect(got).toEqual(expected);
      await vol.release();
      expect(hostTraces(iqn)).toEqual([]);
      expect(sim.api.leftovers()).toEqual([]);
      expect(sim.simulators.size).toBe(0);
    } finally {
      // A failed expectation must not leave the session behind for the next tests (idempotent).
      await vol?.release();
      await p.close();
    }
  });

  it('SimulatorProvisioner: the same host path without the cloud', async () => {
    const p = new SimulatorProvisioner();
    const own = randomRanges(99, 20, 32 << 20, 20_000);
    const vol = await p.provision({
      simulator: { sizeBytes: 32 << 20, changeBlockSize: 4096, changed: own },
    });
    try {
      expect(vol.devicePath).toMatch(/^\/dev\/sd[a-z]+$/);
      const got = await scanMerged(vol.sgPath ?? vol.devicePath);
      expect(got).toEqual(
        expectedDelta(own, { sizeBytes: 32 << 20, blockSize: 512, changeBlockSize: 4096 }),
      );
    } finally {
      await vol.release();
    }
    expect(hostTraces(vol.target.iqn)).toEqual([]);
  });

  it('the oci delta command prints the changed extents; kill -9 mid-scan, then oci sweep leaves nothing', async () => {
    // A bundle of the two commands (the guest has no TypeScript loader); packages stay external.
    // Inside the repository's node_modules so that the bundle resolves the packages (the SDK
    // peers among them); in the guest this lands in the tmpfs overlay, never on the host.
    const cache = join(root, 'node_modules/.cache/lba-status-guest');
    mkdirSync(cache, { recursive: true });
    const entry = join(cache, 'oci-cli-main.ts');
    writeFileSync(
      entry,
      `import { ociDeltaCommand, ociSweepCommand } from '${root}/lib/cli/oci.ts';
const [which, ...args] = process.argv.slice(2);
const ac = new AbortController();
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => ac.abort(new Error('received ' + sig)));
const cmd = which === 'sweep' ? ociSweepCommand : ociDeltaCommand;
process.exitCode = await cmd.run(args, { stdout: process.stdout, stderr: process.stderr, signal: ac.signal, env: process.env });
`,
    );
    const bundle = join(cache, 'oci-cli.mjs');
    const esb = spawnSync(
      join(root, 'node_modules/.bin/esbuild'),
      [
        entry,
        '--bundle',
        '--platform=node',
        '--format=esm',
        '--packages=external',
        '--log-level=warning',
        `--outfile=${bundle}`,
      ],
      { encoding: 'utf8' },
    );
    expect(esb.status, esb.stderr).toBe(0);
    const env = {
      ...process.env,
      LBA_STATUS_NATIVE_PATH: join(root, 'build/Release/lba_status.node'),
    };
    const common = ociConnectionArgs(sim.info);
    // Asynchronous on purpose: the fake API lives in this process and must keep answering.
    const runCli = (args: string[]) =>
      new Promise<{ status: number | null; stdout: string; stderr: string }>((done) => {
        const c = spawn(process.execPath, [bundle, ...args], {
          env,
          cwd: root,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let so = '';
        let se = '';
        c.stdout.on('data', (d) => {
          so += String(d);
        });
        c.stderr.on('data', (d) => {
          se += String(d);
        });
        const timer = setTimeout(() => c.kill('SIGKILL'), 100_000);
        c.once('close', (status) => {
          clearTimeout(timer);
          done({ status, stdout: so, stderr: se });
        });
      });

    // 1. A full run: ndjson on stdout, the changed (mapped) extents only.
    const r = await runCli([
      'delta',
      ...common,
      '--first-backup',
      sim.info.firstBackupId,
      '--second-backup',
      sim.info.secondBackupId,
      '--change-block-size',
      String(CBS),
      '--format',
      'ndjson',
    ]);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Ext);
    const mapped = expectedDelta(changed, geometry).filter((e) => e.status === 3);
    expect(merge(lines.map(({ lba, blocks, status }) => ({ lba, blocks, status })))).toEqual(
      mapped,
    );
    expect(sim.api.leftovers()).toEqual([]);

    // 2. kill -9 while the scan waits on a slow target (latency fault on GET LBA STATUS).
    await sim.close();
    sim = await startOciSimulation({
      dir: mkdtempSync(join(out, 'oci-')),
      sizeBytes: 64 << 20,
      changed,
      faults: [{ kind: 'latency', ms: 8000, count: 1 }],
      delays: { provisionMs: 100, attachMs: 100, detachMs: 100, terminateMs: 100 },
    });
    const common2 = ociConnectionArgs(sim.info);
    const child: ChildProcess = spawn(
      process.execPath,
      [
        bundle,
        'delta',
        ...common2,
        '--first-backup',
        sim.info.firstBackupId,
        '--second-backup',
        sim.info.secondBackupId,
        '--verbose',
      ],
      { env, cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    await new Promise<void>((resolveScan, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`oci delta never reached the scan: ${stderr}`)),
        60_000,
      );
      child.stderr?.on('data', (d) => {
        stderr += String(d);
        if (/oci: scan start/.test(stderr)) {
          clearTimeout(timer);
          resolveScan();
        }
      });
      child.once('exit', (code) =>
        reject(new Error(`oci delta exited ${code} before the scan: ${stderr}`)),
      );
    });
    const iqn = [...sim.simulators.values()][0]!.iqn;
    child.kill('SIGKILL');
    await new Promise((r2) => child.once('exit', r2));
    expect(hostTraces(iqn).length).toBeGreaterThan(0); // the crash left its session behind…
    expect(sim.api.leftovers().length).toBe(2); // …and its volume and attachment

    const sw = await runCli(['sweep', ...common2, '--older-than', '0', '--format', 'json']);
    expect(sw.status, sw.stderr).toBe(0);
    const report = JSON.parse(sw.stdout) as {
      volumes: string[];
      attachments: string[];
      sessions: string[];
    };
    expect(report.volumes).toHaveLength(1);
    expect(report.attachments).toHaveLength(1);
    expect(report.sessions).toEqual([iqn]);
    expect(hostTraces(iqn)).toEqual([]);
    expect(sim.api.leftovers()).toEqual([]);
  });
});
