/**
 * Finds the disk of an iSCSI session through sysfs (no udev, no /dev/disk/by-path):
 *   /sys/class/iscsi_session/sessionN/targetname                  = IQN
 *   /sys/class/iscsi_connection/connectionN:C/persistent_address  = portal address
 *   /sys/class/iscsi_connection/connectionN:C/persistent_port     = portal port
 *   /sys/class/iscsi_session/sessionN/device/targetH:C:T/H:C:T:L/ → block/sdX, scsi_generic/sgN
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { abortError, sleep } from '../abort.js';
import { OciDeltaError } from './errors.js';
import type { IscsiPortalTarget } from './iscsiadm.js';

export interface IscsiDevice {
  devicePath: string;
  sgPath?: string;
  blockSize?: number;
  /** `H:C:T:L` */
  hctl: string;
  session: string;
}

export interface FindDeviceOptions {
  /** sysfs mount point (default /sys); tests point it at a fake tree. */
  sysfsRoot?: string;
  /** /dev directory used to build the returned paths (default /dev). */
  devRoot?: string;
  /** Wait at most this long for the disk to appear (default 60 s). */
  timeoutMs?: number;
  /** Poll interval (default 200 ms). */
  intervalMs?: number;
  /** LUN to pick when the session has several disks (default: the only disk LUN). */
  lun?: number;
  signal?: AbortSignal;
}

async function read(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

async function list(path: string): Promise<string[]> {
  try {
    return await readdir(path);
  } catch {
    return [];
  }
}

function sameAddress(a: string, b: string): boolean {
  const strip = (s: string) => s.replace(/^\[|\]$/g, '').toLowerCase();
  return strip(a) === strip(b);
}

/** Sessions whose target name and portal match. */
export async function findSessions(sysfsRoot: string, t: IscsiPortalTarget): Promise<string[]> {
  const found: string[] = [];
  const sessions = (await list(join(sysfsRoot, 'class/iscsi_session'))).filter((s) =>
    /^session\d+$/.test(s),
  );
  const connections = await list(join(sysfsRoot, 'class/iscsi_connection'));
  for (const s of sessions) {
    if ((await read(join(sysfsRoot, 'class/iscsi_session', s, 'targetname'))) !== t.iqn) continue;
    const sid = s.slice('session'.length);
    for (const c of connections.filter((c) => c.startsWith(`connection${sid}:`))) {
      const dir = join(sysfsRoot, 'class/iscsi_connection', c);
      const addr = await read(join(dir, 'persistent_address'));
      const port = await read(join(dir, 'persistent_port'));
      if (addr !== undefined && sameAddress(addr, t.address) && Number(port) === t.port) {
        found.push(s);
        break;
      }
    }
  }
  return found;
}

/** One look: the disk of the session, or undefined when it is not there (yet). */
export async function lookupDevice(
  t: IscsiPortalTarget,
  options: FindDeviceOptions = {},
): Promise<IscsiDevice | undefined> {
  const root = options.sysfsRoot ?? '/sys';
  const dev = options.devRoot ?? '/dev';
  const disks: IscsiDevice[] = [];
  for (const session of await findSessions(root, t)) {
    const base = join(root, 'class/iscsi_session', session, 'device');
    for (const target of (await list(base)).filter((d) => d.startsWith('target'))) {
      for (const hctl of (await list(join(base, target))).filter((d) =>
        /^\d+:\d+:\d+:\d+$/.test(d),
      )) {
        const dir = join(base, target, hctl);
        const type = await read(join(dir, 'type'));
        if (type !== undefined && type !== '0') continue; // not a disk (e.g. a controller LUN)
        const state = await read(join(dir, 'state'));
        if (state !== undefined && state !== 'running') continue;
        const lun = Number(hctl.split(':')[3]);
        if (options.lun !== undefined && lun !== options.lun) continue;
        const block = (await list(join(dir, 'block')))[0];
        if (block === undefined) continue; // sd not bound yet
        // sd adds the disk before its request queue's attributes: not there yet either (seen in
        // the guest: a lookup in between returned a disk without a block size).
        const lbs = Number(await read(join(dir, 'block', block, 'queue/logical_block_size')));
        if (!Number.isInteger(lbs) || lbs <= 0) continue;
        const sg = (await list(join(dir, 'scsi_generic')))[0];
        disks.push({
          devicePath: join(dev, block),
          ...(sg === undefined ? {} : { sgPath: join(dev, sg) }),
          blockSize: lbs,
          hctl,
          session,
        });
      }
    }
  }
  if (disks.length > 1) {
    throw new OciDeltaError(
      'ERR_OCI_DEVICE_NOT_FOUND',
      `the iSCSI session to ${t.iqn} has ${disks.length} disks (${disks.map((d) => d.hctl).join(', ')}); pass the LUN to use`,
    );
  }
  return disks[0];
}

/** Waits for the disk of the session to appear. */
export async function waitForDevice(
  t: IscsiPortalTarget,
  options: FindDeviceOptions = {},
): Promise<IscsiDevice> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (options.signal?.aborted) throw abortError(options.signal);
    const found = await lookupDevice(t, options);
    if (found) return found;
    if (Date.now() >= deadline) {
      const sessions = await findSessions(options.sysfsRoot ?? '/sys', t);
      throw new OciDeltaError(
        'ERR_OCI_DEVICE_NOT_FOUND',
        `no disk appeared for iSCSI target ${t.iqn} at ${t.address}:${t.port} within ${Math.round(timeoutMs / 1000)} s ` +
          (sessions.length === 0
            ? '(no matching session in /sys/class/iscsi_session: did the login really succeed?)'
            : `(session ${sessions.join(', ')} has no disk LUN with a block device: is sd_mod loaded?)`),
      );
    }
    await sleep(options.intervalMs ?? 200, options.signal);
  }
}
