/**
 * sweep(): finds delta volumes lba-status created (freeform tag `lba-status: delta`) that are older
 * than a threshold — left by crashed or killed runs — and removes them with their attachments.
 * For attachments to this instance made with iscsiadm it also logs out of the iSCSI session and
 * deletes the node record (a userspace session died with its process). Never touches volumes
 * without our tag.
 */
import type * as OciCore from 'oci-core';
import { throwIfAborted } from '../abort.js';
import type { ProvisionProgress } from '../provision/types.js';
import { OciDeltaError } from './errors.js';
import type { IscsiPortalTarget } from './iscsiadm.js';
import type { OciDeltaVolumeProvisioner } from './provisioner.js';
import { fromOciError } from './sdk.js';
import { isOurs, TAG_ATTACH, TAG_CREATED, TAG_INSTANCE } from './tags.js';

export interface SweepOptions {
  /** Only volumes created longer ago than this (ms; default 1 h) — never a running job's volume. */
  olderThanMs?: number;
  /** Compartment to search (default: this instance's). */
  compartmentId?: string;
  /**
   * Only volumes made from this instance (tag lba-status-instance). A fleet's worker sweeps its
   * own instance at start without touching the volumes other instances' running jobs hold.
   */
  instanceId?: string;
  /** Report what would be removed without removing anything. */
  dryRun?: boolean;
  signal?: AbortSignal;
  onProgress?: (e: ProvisionProgress) => void;
}

export interface SweepResult {
  /** Volumes removed (or that would be, with dryRun). */
  volumes: string[];
  /** Attachments detached (or that would be). */
  attachments: string[];
  /** iSCSI targets logged out of on this host. */
  sessions: string[];
  /** Failures; the sweep goes on after each. */
  errors: OciDeltaError[];
}

type AnyVolume = OciCore.models.Volume | OciCore.models.BootVolume;

/** Parses `90s`, `15m`, `1h`, `2d` or a number of milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) throw new RangeError(`bad duration ${JSON.stringify(text)}: use e.g. 30m, 1h, 2d`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 'ms') as 'ms'];
  return n * unit;
}

export async function sweep(
  p: OciDeltaVolumeProvisioner,
  options: SweepOptions = {},
): Promise<SweepResult> {
  const olderThanMs = options.olderThanMs ?? 3_600_000;
  const cutoff = Date.now() - olderThanMs;
  const progress = (step: string, phase: ProvisionProgress['phase'], detail?: string) =>
    options.onProgress?.({ step, phase, ...(detail === undefined ? {} : { detail }) });
  const result: SweepResult = { volumes: [], attachments: [], sessions: [], errors: [] };
  const { blockstorage, compute } = await p.clients();
  let instanceId: string | undefined;
  let compartmentId = options.compartmentId;
  try {
    const me = await p.instance(options.signal);
    instanceId = me.id;
    compartmentId ??= me.compartmentId;
  } catch (err) {
    if (!compartmentId) throw err;
  }
  const cid = compartmentId as string;

  const candidates: Array<{ kind: 'block' | 'boot'; volume: AnyVolume }> = [];
  for (const kind of ['block', 'boot'] as const) {
    let page: string | undefined;
    do {
      throwIfAborted(options.signal);
      try {
        const r =
          kind === 'block'
            ? await blockstorage.listVolumes({ compartmentId: cid, ...(page ? { page } : {}) })
            : await blockstorage.listBootVolumes({ compartmentId: cid, ...(page ? { page } : {}) });
        for (const v of r.items as AnyVolume[]) {
          if (!isOurs(v.freeformTags) || v.lifecycleState === 'TERMINATED') continue;
          if (options.instanceId && v.freeformTags?.[TAG_INSTANCE] !== options.instanceId) continue;
          const created =
            Date.parse(v.freeformTags?.[TAG_CREATED] ?? '') || new Date(v.timeCreated).getTime();
          if (created <= cutoff) candidates.push({ kind, volume: v });
        }
        page = r.opcNextPage || undefined;
      } catch (err) {
        result.errors.push(
          fromOciError(err, kind === 'block' ? 'listVolumes' : 'listBootVolumes', cid),
        );
        page = undefined;
      }
    } while (page);
  }

  for (const { kind, volume } of candidates) {
    throwIfAborted(options.signal);
    let attachments: OciCore.models.VolumeAttachment[] = [];
    try {
      attachments = (
        await compute.listVolumeAttachments({ compartmentId: cid, volumeId: volume.id })
      ).items.filter((a) => a.lifecycleState !== 'DETACHED');
    } catch (err) {
      result.errors.push(fromOciError(err, 'listVolumeAttachments', volume.id));
      continue;
    }
    let attachmentsGone = true;
    for (const a of attachments) {
      result.attachments.push(a.id);
      if (options.dryRun) continue;
      const iscsi = a as OciCore.models.IScsiVolumeAttachment;
      // A userspace session lived in the lba-status process that made it: nothing on the host.
      const kernelSession = volume.freeformTags?.[TAG_ATTACH] !== 'userspace';
      if (
        kernelSession &&
        instanceId &&
        a.instanceId === instanceId &&
        iscsi.iqn &&
        iscsi.ipv4 &&
        iscsi.port
      ) {
        const t: IscsiPortalTarget = { iqn: iscsi.iqn, address: iscsi.ipv4, port: iscsi.port };
        progress('logout', 'start', t.iqn);
        try {
          await p.iscsiadm.logout(t);
          await p.iscsiadm.deleteNode(t);
          result.sessions.push(t.iqn);
          progress('logout', 'done', t.iqn);
        } catch (err) {
          result.errors.push(
            new OciDeltaError(
              'ERR_ISCSIADM',
              `cannot log out of ${t.iqn}: ${(err as Error).message}`,
              { cause: err },
            ),
          );
        }
      }
      progress('detach', 'start', a.id);
      try {
        await p.detachAndWait(a.id);
        progress('detach', 'done', a.id);
      } catch (err) {
        attachmentsGone = false;
        result.errors.push(fromOciError(err, 'detachVolume', a.id));
      }
    }
    result.volumes.push(volume.id);
    if (options.dryRun || !attachmentsGone) continue;
    progress('delete', 'start', volume.id);
    try {
      await p.deleteAndWait(kind, volume.id);
      progress('delete', 'done', volume.id);
    } catch (err) {
      result.errors.push(
        fromOciError(err, kind === 'block' ? 'deleteVolume' : 'deleteBootVolume', volume.id),
      );
    }
  }
  return result;
}
