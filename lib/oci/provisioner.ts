/**
 * OciDeltaVolumeProvisioner: two backup OCIDs in, a local block device out.
 *
 * validate (no money spent) → create the delta volume (tagged, retry token) → wait AVAILABLE →
 * attach to this instance over iSCSI (read-only) → wait ATTACHED → then, with `attach:
 * 'iscsiadm'` (default), iscsiadm node new/update/login → find the disk through sysfs; with
 * `attach: 'userspace'`, nothing on the host: the volume's device is the attachment's
 * `iscsi://IPV4:PORT/IQN/1` URL that lba-status's own initiator logs in to when the caller opens
 * it (`openDevice(volume.device, volume.deviceOptions)`: the attachment's CHAP credentials, in a
 * non-enumerable field, never printed or logged). `release()` undoes it
 * in reverse: logout → node delete (iscsiadm only) → detach → wait DETACHED → delete → wait
 * TERMINATED (404 = gone). A failure or abort during provisioning releases whatever was created
 * before the promise rejects.
 */
import { createHash, randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type * as OciCore from 'oci-core';
import { throwIfAborted } from '../abort.js';
import { iscsiUrl, OCI_VOLUME_LUN, withDeviceOptions } from '../provision/device.js';
import { releaseAndRethrow, releaseOnce } from '../provision/release.js';
import type {
  ProvisionedVolume,
  ProvisionOptions,
  ProvisionProgress,
  VolumeProvisioner,
} from '../provision/types.js';
import { validateOneOf } from '../validate.js';
import { OciDeltaError } from './errors.js';
import { DEFAULT_IMDS_URL, fetchInstanceIdentity, type InstanceIdentity } from './imds.js';
import {
  Iscsiadm,
  type IscsiadmChap,
  type IscsiadmOptions,
  type IscsiPortalTarget,
} from './iscsiadm.js';
import { backupKind, type DeltaVolumeKind, requireOcid } from './ocid.js';
import { type PollTiming, pollUntil } from './poll.js';
import {
  createOciClients,
  fromOciError,
  isNotFound,
  isTransient,
  type OciClientOptions,
  type OciClients,
} from './sdk.js';
import { waitForDevice } from './sysfs.js';
import {
  TAG_ATTACH,
  TAG_CREATED,
  TAG_HOST,
  TAG_INSTANCE,
  TAG_JOB,
  TAG_MARK,
  TAG_MARK_VALUE,
} from './tags.js';

type Models = typeof OciCore.models;
type VolumeBackup = OciCore.models.VolumeBackup;
type BootVolumeBackup = OciCore.models.BootVolumeBackup;
type AnyVolume = OciCore.models.Volume | OciCore.models.BootVolume;
type VolumeAttachment = OciCore.models.VolumeAttachment;
type IScsiVolumeAttachment = OciCore.models.IScsiVolumeAttachment;

/** Smallest and largest change block size OCI accepts. */
export const MIN_CHANGE_BLOCK_SIZE = 4096;
export const MAX_CHANGE_BLOCK_SIZE = 1 << 20;

/** How this host reaches an attached delta volume. */
export type OciAttachMode = 'iscsiadm' | 'userspace';

export interface OciDeltaProvisionerConfig extends OciClientOptions {
  /**
   * `'iscsiadm'` (default): the kernel initiator logs in (root, iscsid) and the volume's device
   * is the disk found through sysfs. `'userspace'`: no root, no iscsid, no iscsiadm, no sysfs —
   * the device is the attachment's `iscsi://` URL, opened by lba-status's own initiator.
   */
  attach?: OciAttachMode;
  /** Pre-built clients (tests, or callers sharing clients); otherwise built from the options. */
  clients?: OciClients;
  /** Instance metadata base URL (default http://169.254.169.254). */
  imdsUrl?: string;
  /** This instance; default from the instance metadata service. */
  instanceId?: string;
  /** Compartment for the delta volume (default: the instance's; else the second backup's). */
  compartmentId?: string;
  /** Availability domain for the delta volume (default: the instance's). */
  availabilityDomain?: string;
  /** iscsiadm runner or its options (binary, lock file, timeout). */
  iscsiadm?: Iscsiadm | IscsiadmOptions;
  /** sysfs root (default /sys) and /dev root (default /dev) for device discovery. */
  sysfsRoot?: string;
  devRoot?: string;
  /** How long to wait for the disk after login (default 60 s). */
  deviceTimeoutMs?: number;
  /** Poll timing for lifecycle waits (default 1 s doubling to 10 s, 20 min deadline). */
  poll?: PollTiming;
  /** Deadline of each cleanup wait (DETACHED, TERMINATED); default: poll.timeoutMs (20 min). */
  releaseTimeoutMs?: number;
  /** Poll interval for the disk (default 200 ms). */
  deviceIntervalMs?: number;
  /** Host name written into the tags (default os.hostname()). */
  hostName?: string;
}

export interface OciDeltaOptions extends ProvisionOptions {
  firstBackupId: string;
  secondBackupId: string;
  /** Delta granularity: a power of two in 4096..1048576 (default 4096, OCI's default). */
  changeBlockSize?: number;
  /** Display name of the delta volume (default lba-status-delta-<job>). */
  displayName?: string;
  /** Performance level; 0 (Lower Cost) is not allowed for delta volumes. */
  vpusPerGB?: number;
  /** Job id written into the tags and retry tokens (default a random UUID). */
  jobId?: string;
}

/** What a provisioned OCI delta volume carries beyond the device path. */
export interface OciDeltaVolume extends ProvisionedVolume {
  readonly kind: DeltaVolumeKind;
  readonly volumeId: string;
  readonly attachmentId: string;
  readonly jobId: string;
  readonly changeBlockSize: number;
  readonly target: IscsiPortalTarget;
  /** How the volume is reached: the kernel initiator or lba-status's userspace initiator. */
  readonly attach: OciAttachMode;
  /** Size of the delta volume in bytes (the source volume's size). */
  readonly sizeInBytes?: number;
}

/** Validation of the request itself (no network). Throws OciDeltaError. */
export function validateDeltaRequest(o: {
  firstBackupId: unknown;
  secondBackupId: unknown;
  changeBlockSize?: unknown;
  vpusPerGB?: unknown;
}): { kind: DeltaVolumeKind; changeBlockSize: number } {
  const k1 = backupKind(o.firstBackupId, 'first');
  const k2 = backupKind(o.secondBackupId, 'second');
  if (o.firstBackupId === o.secondBackupId) {
    throw new OciDeltaError(
      'ERR_OCI_SAME_BACKUP',
      `first and second backup are the same (${o.firstBackupId}); pass the older backup first and the newer second`,
      { httpStatus: 400 },
    );
  }
  if (k1 !== k2) {
    throw new OciDeltaError(
      'ERR_OCI_BACKUP_TYPE_MISMATCH',
      'one backup is a block volume backup and the other a boot volume backup; both must be of the same volume',
      { httpStatus: 400 },
    );
  }
  const cbs = o.changeBlockSize ?? MIN_CHANGE_BLOCK_SIZE;
  if (
    typeof cbs !== 'number' ||
    !Number.isInteger(cbs) ||
    cbs < MIN_CHANGE_BLOCK_SIZE ||
    cbs > MAX_CHANGE_BLOCK_SIZE ||
    (cbs & (cbs - 1)) !== 0
  ) {
    throw new OciDeltaError(
      'ERR_OCI_BAD_CHANGE_BLOCK_SIZE',
      `change block size must be a power of two from 4096 to 1048576 bytes (got ${String(cbs)})`,
      { httpStatus: 400 },
    );
  }
  if (
    o.vpusPerGB !== undefined &&
    (typeof o.vpusPerGB !== 'number' || !Number.isInteger(o.vpusPerGB) || o.vpusPerGB < 10)
  ) {
    throw new OciDeltaError(
      'ERR_OCI_REQUEST_REJECTED',
      `vpusPerGB ${String(o.vpusPerGB)} is not allowed: delta volumes cannot use the Lower Cost level (0); use 10 or more`,
      { httpStatus: 404 },
    );
  }
  if (o.vpusPerGB !== undefined && (o.vpusPerGB > 120 || o.vpusPerGB % 10 !== 0)) {
    throw new OciDeltaError(
      'ERR_OCI_REQUEST_REJECTED',
      `vpusPerGB ${o.vpusPerGB} is not a volume performance level: use 10, 20, or 30 to 120 in steps of 10`,
      { httpStatus: 400 },
    );
  }
  return { kind: k1, changeBlockSize: cbs };
}

interface BackupInfo {
  id: string;
  volumeId: string | undefined;
  type: string | undefined;
  lifecycleState: string;
  timeCreated: Date;
  sizeInMBs: number | undefined;
  compartmentId: string;
}

function backupInfo(b: VolumeBackup | BootVolumeBackup): BackupInfo {
  const volumeId = 'volumeId' in b ? b.volumeId : (b as BootVolumeBackup).bootVolumeId;
  const mbs = 'sizeInMBs' in b && typeof b.sizeInMBs === 'number' ? b.sizeInMBs : undefined;
  return {
    id: b.id,
    volumeId,
    type: b.type,
    lifecycleState: String(b.lifecycleState),
    timeCreated: new Date(b.timeCreated),
    sizeInMBs: mbs ?? (typeof b.sizeInGBs === 'number' ? b.sizeInGBs * 1024 : undefined),
    compartmentId: b.compartmentId,
  };
}

/** Checks OCI's documented restrictions on a pair of backups. Throws OciDeltaError. */
export function checkBackupPair(first: BackupInfo, second: BackupInfo): void {
  for (const b of [first, second]) {
    if (b.lifecycleState !== 'AVAILABLE') {
      throw new OciDeltaError(
        'ERR_OCI_BACKUP_NOT_AVAILABLE',
        `backup ${b.id} is ${b.lifecycleState}, not AVAILABLE; wait for it to finish (or pick another)`,
        { httpStatus: 409, resourceId: b.id },
      );
    }
  }
  if (!first.volumeId || first.volumeId !== second.volumeId) {
    throw new OciDeltaError(
      'ERR_OCI_BACKUPS_DIFFERENT_VOLUMES',
      `the backups belong to different volumes (${first.volumeId ?? '?'} and ${second.volumeId ?? '?'}); both must be backups of the same volume`,
      { httpStatus: 403 },
    );
  }
  if (!(first.timeCreated.getTime() < second.timeCreated.getTime())) {
    throw new OciDeltaError(
      'ERR_OCI_BACKUP_ORDER',
      `the first backup (${first.timeCreated.toISOString()}) is not older than the second (${second.timeCreated.toISOString()}); swap them`,
      { httpStatus: 400 },
    );
  }
  if (second.type !== undefined && second.type !== 'INCREMENTAL') {
    throw new OciDeltaError(
      'ERR_OCI_SECOND_BACKUP_NOT_INCREMENTAL',
      `the second backup ${second.id} is a ${second.type} backup; OCI builds deltas only up to an INCREMENTAL backup`,
      { httpStatus: 400, resourceId: second.id },
    );
  }
  if (
    first.sizeInMBs !== undefined &&
    second.sizeInMBs !== undefined &&
    first.sizeInMBs !== second.sizeInMBs
  ) {
    throw new OciDeltaError(
      'ERR_OCI_VOLUME_RESIZED',
      `the volume was resized between the backups (${first.sizeInMBs} MB → ${second.sizeInMBs} MB); OCI cannot build a delta across a resize`,
      { httpStatus: 403 },
    );
  }
}

interface JobState {
  kind: DeltaVolumeKind;
  jobId: string;
  compartmentId?: string;
  createAttempted: boolean;
  volumeId?: string;
  attachAttempted: boolean;
  attachmentId?: string;
  instanceId?: string;
  target?: IscsiPortalTarget;
  nodeAttempted: boolean;
  loginAttempted: boolean;
  done: Set<string>;
}

export class OciDeltaVolumeProvisioner
  implements VolumeProvisioner<OciDeltaOptions>, AsyncDisposable
{
  readonly kind = 'oci-delta';
  readonly #config: OciDeltaProvisionerConfig;
  #clients: Promise<OciClients> | undefined;
  readonly #ownsClients: boolean;
  readonly iscsiadm: Iscsiadm;
  /** How attached volumes are reached (config.attach). */
  readonly attach: OciAttachMode;
  #identity: Promise<InstanceIdentity> | undefined;

  constructor(config: OciDeltaProvisionerConfig = {}) {
    this.#config = config;
    this.attach = validateOneOf(config.attach ?? 'iscsiadm', 'config.attach', [
      'iscsiadm',
      'userspace',
    ] as const);
    this.#ownsClients = config.clients === undefined;
    if (config.clients) this.#clients = Promise.resolve(config.clients);
    this.iscsiadm =
      config.iscsiadm instanceof Iscsiadm ? config.iscsiadm : new Iscsiadm(config.iscsiadm);
  }

  /** The SDK clients (built on first use). */
  clients(): Promise<OciClients> {
    this.#clients ??= createOciClients(this.#config).catch((e: unknown) => {
      this.#clients = undefined;
      throw e;
    });
    return this.#clients;
  }

  /** Closes the clients this provisioner built (stops the circuit breakers' timers). */
  async close(): Promise<void> {
    if (this.#ownsClients && this.#clients) {
      const c = await this.#clients.catch(() => undefined);
      c?.close();
      this.#clients = undefined;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** This instance (IMDS v2 unless the id, compartment and AD were all given). */
  async instance(signal?: AbortSignal): Promise<InstanceIdentity> {
    const c = this.#config;
    if (c.instanceId) {
      requireOcid(c.instanceId, ['instance'], 'instance id');
      if (c.compartmentId && c.availabilityDomain) {
        return {
          id: c.instanceId,
          compartmentId: c.compartmentId,
          availabilityDomain: c.availabilityDomain,
        };
      }
      const { compute } = await this.clients();
      try {
        const { instance } = await compute.getInstance({ instanceId: c.instanceId });
        return {
          id: instance.id,
          compartmentId: c.compartmentId ?? instance.compartmentId,
          availabilityDomain: c.availabilityDomain ?? instance.availabilityDomain,
          region: instance.region,
        };
      } catch (err) {
        throw fromOciError(err, 'getInstance', c.instanceId);
      }
    }
    this.#identity ??= fetchInstanceIdentity(
      c.imdsUrl ?? DEFAULT_IMDS_URL,
      signal ? { signal } : {},
    ).catch((e: unknown) => {
      this.#identity = undefined;
      throw e;
    });
    const id = await this.#identity;
    return {
      ...id,
      ...(c.compartmentId ? { compartmentId: c.compartmentId } : {}),
      ...(c.availabilityDomain ? { availabilityDomain: c.availabilityDomain } : {}),
    };
  }

  /** Reads both backups and checks every documented restriction before anything is created. */
  async validate(options: OciDeltaOptions): Promise<{
    kind: DeltaVolumeKind;
    changeBlockSize: number;
    first: BackupInfo;
    second: BackupInfo;
  }> {
    const { kind, changeBlockSize } = validateDeltaRequest(options);
    const { blockstorage } = await this.clients();
    const get = async (id: string, which: string): Promise<BackupInfo> => {
      try {
        const b =
          kind === 'block'
            ? (await blockstorage.getVolumeBackup({ volumeBackupId: id })).volumeBackup
            : (await blockstorage.getBootVolumeBackup({ bootVolumeBackupId: id })).bootVolumeBackup;
        return backupInfo(b);
      } catch (err) {
        if (isNotFound(err)) {
          throw new OciDeltaError(
            'ERR_OCI_BACKUP_NOT_FOUND',
            `${which} backup ${id} was not found (or your IAM policy does not allow reading it: ` +
              'allow group … to read volume-backups in compartment …)',
            {
              httpStatus: 404,
              resourceId: id,
              operation: kind === 'block' ? 'getVolumeBackup' : 'getBootVolumeBackup',
              cause: err,
            },
          );
        }
        throw fromOciError(err, kind === 'block' ? 'getVolumeBackup' : 'getBootVolumeBackup', id);
      }
    };
    const [first, second] = await Promise.all([
      get(options.firstBackupId, 'first'),
      get(options.secondBackupId, 'second'),
    ]);
    checkBackupPair(first, second);
    if (first.type === 'INCREMENTAL' && second.volumeId) {
      await this.checkNoFullBackupBetween(kind, first, second);
    }
    return { kind, changeBlockSize, first, second };
  }

  /** OCI: when both backups are incremental, no full backup may exist between them. */
  private async checkNoFullBackupBetween(
    kind: DeltaVolumeKind,
    first: BackupInfo,
    second: BackupInfo,
  ): Promise<void> {
    const { blockstorage } = await this.clients();
    let page: string | undefined;
    do {
      let items: Array<VolumeBackup | BootVolumeBackup>;
      let next: string | undefined;
      try {
        if (kind === 'block') {
          const r = await blockstorage.listVolumeBackups({
            compartmentId: second.compartmentId,
            volumeId: second.volumeId as string,
            ...(page ? { page } : {}),
          });
          items = r.items;
          next = r.opcNextPage;
        } else {
          const r = await blockstorage.listBootVolumeBackups({
            compartmentId: second.compartmentId,
            bootVolumeId: second.volumeId as string,
            ...(page ? { page } : {}),
          });
          items = r.items;
          next = r.opcNextPage;
        }
      } catch (err) {
        // Listing needs a wider policy than reading two backups; skip the check rather than fail.
        if (statusIn(err, [401, 403, 404])) return;
        throw fromOciError(err, 'listVolumeBackups', second.volumeId);
      }
      for (const raw of items) {
        const b = backupInfo(raw);
        if (
          b.type === 'FULL' &&
          b.lifecycleState === 'AVAILABLE' &&
          b.timeCreated > first.timeCreated &&
          b.timeCreated < second.timeCreated
        ) {
          throw new OciDeltaError(
            'ERR_OCI_FULL_BACKUP_BETWEEN',
            `a FULL backup (${b.id}, ${b.timeCreated.toISOString()}) lies between the two incremental backups; ` +
              'OCI requires that none does: use that full backup as the first one',
            { httpStatus: 400, resourceId: b.id },
          );
        }
      }
      page = next || undefined;
    } while (page);
  }

  async provision(options: OciDeltaOptions): Promise<OciDeltaVolume> {
    const { signal } = options;
    const progress = (step: string, phase: ProvisionProgress['phase'], detail?: string) =>
      options.onProgress?.({ step, phase, ...(detail === undefined ? {} : { detail }) });
    throwIfAborted(signal);
    const { kind, changeBlockSize } = validateDeltaRequest(options);
    const jobId = options.jobId ?? randomUUID();
    // One token per provision() call, the same across that call's SDK retries: a re-run of the
    // job (after its volume was deleted) must not reuse a token OCI has invalidated (409).
    const tokenBase = retryTokenBase(jobId);
    const state: JobState = {
      kind,
      jobId,
      createAttempted: false,
      attachAttempted: false,
      nodeAttempted: false,
      loginAttempted: false,
      done: new Set(),
    };
    const release = releaseOnce(() => this.releaseJob(state, options.onProgress));
    try {
      progress('validate', 'start');
      const { first, second } = await this.validate(options);
      throwIfAborted(signal);
      const me = await this.instance(signal);
      throwIfAborted(signal);
      progress('validate', 'done', `${first.id} → ${second.id}`);

      const { blockstorage, compute, sdk } = await this.clients();
      const models: Models = sdk.core.models;
      state.compartmentId = me.compartmentId;
      state.instanceId = me.id;
      const created = new Date().toISOString();
      const details = {
        compartmentId: me.compartmentId,
        availabilityDomain: me.availabilityDomain,
        displayName: options.displayName ?? `lba-status-delta-${jobId.slice(0, 8)}`,
        freeformTags: {
          [TAG_MARK]: TAG_MARK_VALUE,
          [TAG_JOB]: jobId,
          [TAG_CREATED]: created,
          [TAG_HOST]: this.#config.hostName ?? hostname(),
          [TAG_INSTANCE]: me.id,
          [TAG_ATTACH]: this.attach,
        },
        ...(options.vpusPerGB === undefined ? {} : { vpusPerGB: options.vpusPerGB }),
      };
      const source = {
        firstBackupId: options.firstBackupId,
        secondBackupId: options.secondBackupId,
        changeBlockSizeInBytes: changeBlockSize,
      };

      progress('create', 'start', `${kind} delta volume, change block size ${changeBlockSize}`);
      state.createAttempted = true;
      let volume: AnyVolume;
      try {
        volume =
          kind === 'block'
            ? (
                await blockstorage.createVolume({
                  createVolumeDetails: {
                    ...details,
                    sourceDetails: {
                      type: models.VolumeSourceFromVolumeBackupDeltaDetails.type,
                      ...source,
                    } as OciCore.models.VolumeSourceFromVolumeBackupDeltaDetails,
                  },
                  opcRetryToken: `${tokenBase}-create`,
                })
              ).volume
            : (
                await blockstorage.createBootVolume({
                  createBootVolumeDetails: {
                    ...details,
                    sourceDetails: {
                      type: models.BootVolumeSourceFromBootVolumeBackupDeltaDetails.type,
                      ...source,
                    } as OciCore.models.BootVolumeSourceFromBootVolumeBackupDeltaDetails,
                  },
                  opcRetryToken: `${tokenBase}-create`,
                })
              ).bootVolume;
      } catch (err) {
        throw createError(err, kind);
      }
      state.volumeId = volume.id;
      progress('create', 'done', volume.id);
      throwIfAborted(signal);

      progress('wait-available', 'start', volume.id);
      const ready = (await pollUntil<AnyVolume>({
        what: `delta volume ${volume.id} to become AVAILABLE`,
        operation: kind === 'block' ? 'getVolume' : 'getBootVolume',
        resourceId: volume.id,
        get: () => this.getVolume(kind, volume.id),
        check: (v) =>
          v.lifecycleState === 'AVAILABLE'
            ? 'done'
            : v.lifecycleState === 'PROVISIONING' || v.lifecycleState === 'RESTORING'
              ? 'wait'
              : 'fail',
        describe: (v) => String(v.lifecycleState),
        ...this.#config.poll,
        ...(signal ? { signal } : {}),
      })) as AnyVolume;
      progress('wait-available', 'done', volume.id);

      progress('attach', 'start', `${volume.id} to ${me.id}`);
      state.attachAttempted = true;
      let attachment: VolumeAttachment;
      try {
        attachment = (
          await compute.attachVolume({
            attachVolumeDetails: {
              type: 'iscsi',
              instanceId: me.id,
              volumeId: volume.id,
              isReadOnly: true,
              useChap: false,
              displayName: `lba-status-delta-${jobId.slice(0, 8)}`,
            } as OciCore.models.AttachIScsiVolumeDetails,
            opcRetryToken: `${tokenBase}-attach`,
          })
        ).volumeAttachment;
      } catch (err) {
        throw fromOciError(err, 'attachVolume', volume.id);
      }
      state.attachmentId = attachment.id;
      progress('attach', 'done', attachment.id);
      throwIfAborted(signal);

      progress('wait-attached', 'start', attachment.id);
      const attached = (await pollUntil<VolumeAttachment>({
        what: `attachment ${attachment.id} to become ATTACHED`,
        operation: 'getVolumeAttachment',
        resourceId: attachment.id,
        get: async () =>
          (
            await compute.getVolumeAttachment({ volumeAttachmentId: attachment.id })
          ).volumeAttachment,
        check: (a) =>
          a.lifecycleState === 'ATTACHED'
            ? 'done'
            : a.lifecycleState === 'ATTACHING'
              ? 'wait'
              : 'fail',
        describe: (a) => String(a.lifecycleState),
        ...this.#config.poll,
        ...(signal ? { signal } : {}),
      })) as VolumeAttachment;
      progress('wait-attached', 'done', attachment.id);

      const iscsi = attached as IScsiVolumeAttachment;
      if (attached.attachmentType !== 'iscsi' || !iscsi.iqn || !iscsi.ipv4 || !iscsi.port) {
        throw new OciDeltaError(
          'ERR_OCI_ATTACHMENT',
          `attachment ${attached.id} is not an iSCSI attachment with an IQN and portal (type ${attached.attachmentType}); delta volumes need iSCSI`,
          { resourceId: attached.id },
        );
      }
      const target: IscsiPortalTarget = { iqn: iscsi.iqn, address: iscsi.ipv4, port: iscsi.port };
      state.target = target;
      const chap: IscsiadmChap | undefined =
        iscsi.chapUsername && iscsi.chapSecret
          ? { username: iscsi.chapUsername, secret: iscsi.chapSecret }
          : undefined;
      const sizeInBytes =
        typeof ready.sizeInMBs === 'number'
          ? ready.sizeInMBs * 1024 * 1024
          : typeof ready.sizeInGBs === 'number'
            ? ready.sizeInGBs * 2 ** 30
            : undefined;
      const common = {
        kind,
        volumeId: volume.id,
        attachmentId: attachment.id,
        jobId,
        changeBlockSize,
        target,
        attach: this.attach,
        ...(sizeInBytes === undefined ? {} : { sizeInBytes }),
        release,
        [Symbol.asyncDispose]: release,
      };

      if (this.attach === 'userspace') {
        // No session here: whoever opens the device owns it (and closes it before release).
        throwIfAborted(signal);
        const url = iscsiUrl(target, OCI_VOLUME_LUN);
        progress('device', 'done', `${url}${chap ? ' (CHAP)' : ''}`);
        return withDeviceOptions(
          {
            ...common,
            device: url,
            devicePath: url,
            description: `OCI ${kind} delta volume ${volume.id} at ${url}`,
          },
          chap,
        );
      }

      progress(
        'login',
        'start',
        `${target.iqn} at ${target.address}:${target.port}${chap ? ' (CHAP)' : ''}`,
      );
      state.nodeAttempted = true;
      await this.iscsiadm.addNode(target, chap);
      throwIfAborted(signal);
      state.loginAttempted = true;
      await this.iscsiadm.login(target);
      progress('login', 'done', target.iqn);
      throwIfAborted(signal);

      progress('device', 'start', target.iqn);
      const device = await waitForDevice(target, {
        ...(this.#config.sysfsRoot ? { sysfsRoot: this.#config.sysfsRoot } : {}),
        ...(this.#config.devRoot ? { devRoot: this.#config.devRoot } : {}),
        ...(this.#config.deviceTimeoutMs ? { timeoutMs: this.#config.deviceTimeoutMs } : {}),
        ...(this.#config.deviceIntervalMs ? { intervalMs: this.#config.deviceIntervalMs } : {}),
        ...(signal ? { signal } : {}),
      });
      progress('device', 'done', device.devicePath);
      // The kernel session holds the CHAP credentials: opening the node needs none.
      return withDeviceOptions({
        ...common,
        device: device.sgPath ?? device.devicePath,
        devicePath: device.devicePath,
        ...(device.sgPath ? { sgPath: device.sgPath } : {}),
        ...(device.blockSize ? { blockSize: device.blockSize } : {}),
        description: `OCI ${kind} delta volume ${volume.id} on ${device.devicePath}`,
      });
    } catch (err) {
      return releaseAndRethrow(err, release, signal);
    }
  }

  private async getVolume(kind: DeltaVolumeKind, id: string): Promise<AnyVolume> {
    const { blockstorage } = await this.clients();
    return kind === 'block'
      ? (await blockstorage.getVolume({ volumeId: id })).volume
      : (await blockstorage.getBootVolume({ bootVolumeId: id })).bootVolume;
  }

  /** Release timing: never abortable, own deadlines. */
  private releasePoll(): PollTiming {
    const t = this.#config.releaseTimeoutMs;
    return { ...this.#config.poll, ...(t === undefined ? {} : { timeoutMs: t }) };
  }

  private async releaseJob(
    state: JobState,
    onProgress?: (e: ProvisionProgress) => void,
  ): Promise<void> {
    const progress = (step: string, phase: ProvisionProgress['phase'], detail?: string) =>
      onProgress?.({ step, phase, ...(detail === undefined ? {} : { detail }) });
    const errors: unknown[] = [];
    const step = async (
      name: string,
      applies: boolean,
      fn: () => Promise<void>,
      detail?: string,
    ) => {
      if (state.done.has(name)) return;
      if (!applies) {
        if (name !== 'delete' || state.volumeId === undefined) state.done.add(name);
        return;
      }
      progress(name, 'start', detail);
      try {
        await fn();
        state.done.add(name);
        progress(name, 'done', detail);
      } catch (err) {
        errors.push(err);
      }
    };
    const target = state.target;
    await step(
      'logout',
      state.loginAttempted && target !== undefined,
      () => this.iscsiadm.logout(target as IscsiPortalTarget),
      target?.iqn,
    );
    await step(
      'node-delete',
      state.nodeAttempted && target !== undefined,
      () => this.iscsiadm.deleteNode(target as IscsiPortalTarget),
      target?.iqn,
    );
    if (state.createAttempted && state.volumeId === undefined) {
      await step('find-volume', true, () => this.findJobVolume(state));
    }
    if (state.volumeId !== undefined && state.attachAttempted && state.attachmentId === undefined) {
      await step('find-attachment', true, () => this.findJobAttachment(state));
    }
    await step(
      'detach',
      state.attachmentId !== undefined,
      () => this.detachAndWait(state.attachmentId as string),
      state.attachmentId,
    );
    // A volume still attached cannot be deleted (409 until the deadline): try again next release.
    const attachedStill = state.attachmentId !== undefined && !state.done.has('detach');
    await step(
      'delete',
      state.volumeId !== undefined && !attachedStill,
      () => this.deleteAndWait(state.kind, state.volumeId as string),
      state.volumeId,
    );
    if (errors.length > 0) {
      const left = [
        !state.done.has('logout') && target ? `iSCSI session to ${target.iqn}` : '',
        !state.done.has('node-delete') && target ? `iscsiadm node record ${target.iqn}` : '',
        !state.done.has('detach') && state.attachmentId ? `attachment ${state.attachmentId}` : '',
        !state.done.has('delete') && state.volumeId
          ? `volume ${state.volumeId} (billed at full size!)`
          : '',
      ].filter(Boolean);
      throw new OciDeltaError(
        'ERR_OCI_RELEASE',
        `cleanup of delta job ${state.jobId} failed: ${errors.map((e) => (e as Error)?.message ?? String(e)).join('; ')}. ` +
          `Left behind: ${left.join(', ') || 'nothing known'}. Call release() again or run \`lba-status oci sweep\`.`,
        { cause: new AggregateError(errors) },
      );
    }
  }

  /**
   * Removes every volume tagged with this job id (`lba-status-job`), whatever its age — the
   * leftovers of a crashed attempt of the job — with their attachments and, for kernel
   * sessions on this instance, the iSCSI session and node record. Run it before a job's retry
   * provisions again (`runDeltaJob` does). Throws ERR_OCI_RELEASE naming what is left.
   */
  async sweepJob(
    jobId: string,
    options: { signal?: AbortSignal; onProgress?: (e: ProvisionProgress) => void } = {},
  ): Promise<{ volumes: string[]; attachments: string[] }> {
    const progress = (step: string, phase: ProvisionProgress['phase'], detail?: string) =>
      options.onProgress?.({ step, phase, ...(detail === undefined ? {} : { detail }) });
    const me = await this.instance(options.signal);
    const { blockstorage, compute } = await this.clients();
    const found: Array<{ kind: DeltaVolumeKind; volume: AnyVolume }> = [];
    for (const kind of ['block', 'boot'] as const) {
      let page: string | undefined;
      do {
        throwIfAborted(options.signal);
        let r: { items: AnyVolume[]; opcNextPage?: string };
        try {
          r =
            kind === 'block'
              ? await blockstorage.listVolumes({
                  compartmentId: me.compartmentId,
                  ...(page ? { page } : {}),
                })
              : await blockstorage.listBootVolumes({
                  compartmentId: me.compartmentId,
                  ...(page ? { page } : {}),
                });
        } catch (err) {
          throw fromOciError(err, kind === 'block' ? 'listVolumes' : 'listBootVolumes');
        }
        for (const v of r.items)
          if (
            v.freeformTags?.[TAG_MARK] === TAG_MARK_VALUE &&
            v.freeformTags?.[TAG_JOB] === jobId &&
            v.lifecycleState !== 'TERMINATED'
          )
            found.push({ kind, volume: v });
        page = r.opcNextPage || undefined;
      } while (page);
    }
    const result = { volumes: [] as string[], attachments: [] as string[] };
    const errors: unknown[] = [];
    const left: string[] = [];
    for (const { kind, volume } of found) {
      throwIfAborted(options.signal);
      let attachments: VolumeAttachment[];
      try {
        attachments = (
          await compute.listVolumeAttachments({
            compartmentId: me.compartmentId,
            volumeId: volume.id,
          })
        ).items.filter((a) => a.lifecycleState !== 'DETACHED');
      } catch (err) {
        errors.push(fromOciError(err, 'listVolumeAttachments', volume.id));
        left.push(`volume ${volume.id}`);
        continue;
      }
      let detached = true;
      for (const a of attachments) {
        const iscsi = a as IScsiVolumeAttachment;
        if (
          volume.freeformTags?.[TAG_ATTACH] !== 'userspace' &&
          a.instanceId === me.id &&
          iscsi.iqn &&
          iscsi.ipv4 &&
          iscsi.port
        ) {
          const t: IscsiPortalTarget = { iqn: iscsi.iqn, address: iscsi.ipv4, port: iscsi.port };
          progress('logout', 'start', t.iqn);
          try {
            await this.iscsiadm.logout(t);
            await this.iscsiadm.deleteNode(t);
            progress('logout', 'done', t.iqn);
          } catch (err) {
            errors.push(err); // the detach below still ends the session from the other side
          }
        }
        progress('detach', 'start', a.id);
        try {
          await this.detachAndWait(a.id);
          result.attachments.push(a.id);
          progress('detach', 'done', a.id);
        } catch (err) {
          detached = false;
          errors.push(err);
          left.push(`attachment ${a.id}`);
        }
      }
      if (!detached) {
        left.push(`volume ${volume.id} (billed at full size!)`);
        continue;
      }
      progress('delete', 'start', volume.id);
      try {
        await this.deleteAndWait(kind, volume.id);
        result.volumes.push(volume.id);
        progress('delete', 'done', volume.id);
      } catch (err) {
        errors.push(err);
        left.push(`volume ${volume.id} (billed at full size!)`);
      }
    }
    if (left.length > 0) {
      throw new OciDeltaError(
        'ERR_OCI_RELEASE',
        `sweeping the leftovers of job ${jobId} failed: ${errors.map((e) => (e as Error)?.message ?? String(e)).join('; ')}. ` +
          `Left behind: ${left.join(', ')}. Run \`lba-status oci sweep\`.`,
        { cause: new AggregateError(errors) },
      );
    }
    return result;
  }

  /** The create call failed without an answer: find the volume our retry token may have made. */
  private async findJobVolume(state: JobState): Promise<void> {
    if (!state.compartmentId) return;
    const { blockstorage } = await this.clients();
    try {
      const items: AnyVolume[] =
        state.kind === 'block'
          ? (await blockstorage.listVolumes({ compartmentId: state.compartmentId })).items
          : (await blockstorage.listBootVolumes({ compartmentId: state.compartmentId })).items;
      const mine = items.find(
        (v) => v.freeformTags?.[TAG_JOB] === state.jobId && v.lifecycleState !== 'TERMINATED',
      );
      if (mine) state.volumeId = mine.id;
    } catch (err) {
      throw fromOciError(
        err,
        state.kind === 'block' ? 'listVolumes' : 'listBootVolumes',
        state.compartmentId,
      );
    }
  }

  private async findJobAttachment(state: JobState): Promise<void> {
    if (!state.compartmentId || !state.volumeId) return;
    const { compute } = await this.clients();
    try {
      const { items } = await compute.listVolumeAttachments({
        compartmentId: state.compartmentId,
        volumeId: state.volumeId,
      });
      const live = items.find((a) => a.lifecycleState !== 'DETACHED');
      if (live) state.attachmentId = live.id;
    } catch (err) {
      throw fromOciError(err, 'listVolumeAttachments', state.volumeId);
    }
  }

  /** Detach (404 or already DETACHED = done) and wait for DETACHED. */
  async detachAndWait(attachmentId: string): Promise<void> {
    const { compute } = await this.clients();
    await retryTransient(this.releasePoll(), 'detachVolume', attachmentId, async () => {
      try {
        await compute.detachVolume({ volumeAttachmentId: attachmentId });
      } catch (err) {
        if (isNotFound(err)) return;
        // Already detaching/detached: 409 Conflict is fine, the wait below settles it.
        if (
          statusIn(err, [409]) &&
          (err as { serviceCode?: string }).serviceCode !== 'IncorrectState'
        )
          return;
        throw err;
      }
    });
    await pollUntil<VolumeAttachment>({
      what: `attachment ${attachmentId} to become DETACHED`,
      operation: 'getVolumeAttachment',
      resourceId: attachmentId,
      get: async () =>
        (await compute.getVolumeAttachment({ volumeAttachmentId: attachmentId })).volumeAttachment,
      check: (a) => (a.lifecycleState === 'DETACHED' ? 'done' : 'wait'),
      describe: (a) => String(a.lifecycleState),
      notFoundIsDone: true,
      ...this.releasePoll(),
    });
  }

  /** Delete (404 = gone) and wait for TERMINATED or 404. */
  async deleteAndWait(kind: DeltaVolumeKind, volumeId: string): Promise<void> {
    const { blockstorage } = await this.clients();
    // OCI refuses to delete a volume that is still PROVISIONING or RESTORING (409
    // IncorrectState, which the SDK retries and its circuit breaker counts as failures: a
    // delete loop would open the breaker). Poll with GETs until it has left those states.
    await pollUntil<AnyVolume>({
      what: `volume ${volumeId} to finish provisioning before its deletion`,
      operation: kind === 'block' ? 'getVolume' : 'getBootVolume',
      resourceId: volumeId,
      get: () => this.getVolume(kind, volumeId),
      check: (v) =>
        v.lifecycleState === 'PROVISIONING' || v.lifecycleState === 'RESTORING' ? 'wait' : 'done',
      describe: (v) => String(v.lifecycleState),
      notFoundIsDone: true,
      ...this.releasePoll(),
    });
    await retryTransient(
      this.releasePoll(),
      kind === 'block' ? 'deleteVolume' : 'deleteBootVolume',
      volumeId,
      async () => {
        try {
          if (kind === 'block') await blockstorage.deleteVolume({ volumeId });
          else await blockstorage.deleteBootVolume({ bootVolumeId: volumeId });
        } catch (err) {
          if (isNotFound(err)) return;
          throw err;
        }
      },
    );
    await pollUntil<AnyVolume>({
      what: `volume ${volumeId} to become TERMINATED`,
      operation: kind === 'block' ? 'getVolume' : 'getBootVolume',
      resourceId: volumeId,
      get: () => this.getVolume(kind, volumeId),
      check: (v) =>
        v.lifecycleState === 'TERMINATED'
          ? 'done'
          : v.lifecycleState === 'TERMINATING'
            ? 'wait'
            : 'fail',
      describe: (v) => String(v.lifecycleState),
      notFoundIsDone: true,
      ...this.releasePoll(),
    });
  }
}

/**
 * `lba-status-<job>-<attempt>` (≤ 56 characters + `-create`/`-attach`, within OCI's 64 for a
 * retry token): the job id
 * itself when it is short and plain, else a hash of it; the attempt part is new per call.
 */
function retryTokenBase(jobId: string): string {
  const job = /^[A-Za-z0-9._-]{1,36}$/.test(jobId)
    ? jobId
    : `h${createHash('sha256').update(jobId).digest('hex').slice(0, 24)}`;
  return `lba-status-${job}-${randomUUID().slice(0, 8)}`;
}

function statusIn(err: unknown, statuses: number[]): boolean {
  const s = (err as { statusCode?: number } | undefined)?.statusCode;
  return typeof s === 'number' && statuses.includes(s);
}

/** Calls `fn` until it succeeds or fails with a non-transient error or the deadline passes. */
async function retryTransient(
  timing: PollTiming,
  operation: string,
  resourceId: string,
  fn: () => Promise<void>,
): Promise<void> {
  await pollUntil<true>({
    what: `${operation} ${resourceId} to be accepted`,
    operation,
    resourceId,
    get: async () => {
      await fn();
      return true;
    },
    check: () => 'done',
    describe: () => 'accepted',
    ...timing,
  });
}

/** Maps a create failure to the documented delta-volume meaning of its status. */
function createError(err: unknown, kind: DeltaVolumeKind): OciDeltaError {
  const e = fromOciError(err, kind === 'block' ? 'createVolume' : 'createBootVolume');
  if (e.httpStatus !== undefined && e.documentedMeaning && e.httpStatus < 500) {
    return new OciDeltaError(
      e.code,
      `${e.message} For delta volumes OCI documents ${e.httpStatus} as: ${e.documentedMeaning}.`,
      {
        httpStatus: e.httpStatus,
        ...(e.serviceCode ? { serviceCode: e.serviceCode } : {}),
        ...(e.opcRequestId ? { opcRequestId: e.opcRequestId } : {}),
        ...(e.operation ? { operation: e.operation } : {}),
        cause: err,
      },
    );
  }
  return e;
}

export { isTransient };
