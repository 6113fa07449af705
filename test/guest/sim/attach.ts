// Logs the guest kernel's iSCSI initiator in to a simulator started by the test itself (the
// scenario's iscsid is running), the way OCI documents it: iscsiadm -m node -o new, --login;
// then finds LUN 1 through sysfs. Detaching logs out and deletes the node record.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { OciSimulationInfo } from '../../../lib/sim/fake-oci/oci-simulation.js';
import type { Simulator } from '../../../lib/sim.js';
import { run } from '../support/index.js';

export interface Attached {
  sg: string;
  block: string;
  detach(): Promise<void>;
}

async function iscsiadm(args: string[]): Promise<void> {
  const r = await run('iscsiadm', args, 120_000);
  if (r.exitCode !== 0)
    throw new Error(`iscsiadm ${args.join(' ')} exited ${r.exitCode}: ${r.stderr.trim()}`);
}

async function readTrim(path: string): Promise<string | undefined> {
  return readFile(path, 'utf8').then(
    (s) => s.trim(),
    () => undefined,
  );
}

async function findLun(iqn: string): Promise<{ sg: string; block: string } | undefined> {
  for (const session of await readdir('/sys/class/iscsi_session').catch(() => [])) {
    const dir = join('/sys/class/iscsi_session', session);
    if ((await readTrim(join(dir, 'targetname'))) !== iqn) continue;
    for (const target of (await readdir(join(dir, 'device')).catch(() => [])).filter((n) =>
      n.startsWith('target'),
    )) {
      for (const lun of (await readdir(join(dir, 'device', target)).catch(() => [])).filter((n) =>
        n.endsWith(':1'),
      )) {
        const base = join(dir, 'device', target, lun);
        const sg = (await readdir(join(base, 'scsi_generic')).catch(() => []))[0];
        const block = (await readdir(join(base, 'block')).catch(() => []))[0];
        if (sg && block) return { sg: `/dev/${sg}`, block: `/dev/${block}` };
      }
    }
  }
  return undefined;
}

/** Attaches `sim` to the guest kernel and waits for its sg and block nodes. */
export async function attach(sim: Simulator): Promise<Attached> {
  const node = ['-m', 'node', '-T', sim.iqn, '-p', sim.portal];
  await iscsiadm([...node, '-o', 'new']);
  let attached = false;
  const detach = async (): Promise<void> => {
    if (attached) await run('iscsiadm', [...node, '--logout'], 120_000);
    await run('iscsiadm', [...node, '-o', 'delete'], 120_000);
    attached = false;
  };
  try {
    await iscsiadm([...node, '--login']);
    attached = true;
    for (let i = 0; i < 200; i++) {
      const found = await findLun(sim.iqn);
      if (found) return { ...found, detach };
      await sleep(50);
    }
    throw new Error(`LUN 1 of ${sim.iqn} did not appear after login`);
  } catch (error) {
    await detach();
    throw error;
  }
}

/** Mapped (status 3) extents of the served map, merged: what changed. */
export function mappedRanges(
  extents: ReadonlyArray<{ lba: number; blocks: number; status: number }>,
): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const e of extents) {
    if (e.status !== 3) continue;
    const last = out[out.length - 1];
    if (last && last[1] === e.lba) last[1] = e.lba + e.blocks;
    else out.push([e.lba, e.lba + e.blocks]);
  }
  return out;
}

/** The `lba-status oci` options that point the CLI at a fake OCI API (config, endpoint, IMDS). */
export function ociConnectionArgs(info: OciSimulationInfo): string[] {
  return [
    '--config-file',
    info.configFile,
    '--endpoint',
    info.endpoint,
    '--instance-id',
    info.instanceId,
  ];
}
