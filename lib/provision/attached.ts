/**
 * A device that is already reachable from this host: a device node, or an `iscsi://` URL that
 * lba-status's userspace initiator logs in to when the volume is opened. Provisioning checks it,
 * release does nothing.
 */
import { stat } from 'node:fs/promises';
import { type VolumeChap, withDeviceOptions } from './device.js';
import { NotADeviceError, throwIfAborted } from './errors.js';
import type { ProvisionedVolume, ProvisionOptions, VolumeProvisioner } from './types.js';

export interface AttachedDeviceOptions extends ProvisionOptions {
  /**
   * Block device (or SCSI generic node) already on this host, e.g. `/dev/sdc`; or an iSCSI URL,
   * `iscsi://[USER@]HOST[:PORT]/TARGET-IQN/LUN` (never with a secret: see `chap`).
   */
  devicePath: string;
  /** Matching `/dev/sgN`, when known (device nodes only). */
  sgPath?: string;
  /** Logical block size, when known. */
  blockSize?: number;
  /** `iscsi://` devices: CHAP credentials the target demands (become `volume.deviceOptions`). */
  chap?: VolumeChap;
  /**
   * Check the device (default true): a node must exist and be a block or character device; a URL
   * must be well formed (nothing is connected to before `open()`).
   */
  verify?: boolean;
}

export class AttachedDeviceProvisioner implements VolumeProvisioner<AttachedDeviceOptions> {
  readonly kind = 'attached';

  async provision(options: AttachedDeviceOptions): Promise<ProvisionedVolume> {
    const { devicePath, sgPath, blockSize, chap, verify = true, signal } = options;
    const url = typeof devicePath === 'string' && /^iscsi:/i.test(devicePath);
    if (typeof devicePath !== 'string' || !(url || devicePath.startsWith('/'))) {
      throw new TypeError(
        `devicePath must be an absolute path such as /dev/sdc or an iscsi://HOST/TARGET-IQN/LUN URL (got ${JSON.stringify(devicePath)})`,
      );
    }
    if (url && sgPath !== undefined)
      throw new TypeError('sgPath applies only to device nodes, not to an iscsi:// devicePath');
    if (!url && chap !== undefined)
      throw new TypeError('chap applies only to an iscsi:// devicePath');
    if (chap !== undefined && (typeof chap !== 'object' || typeof chap.secret !== 'string'))
      throw new TypeError('chap must be { username, secret }');
    if (blockSize !== undefined && (!Number.isInteger(blockSize) || blockSize <= 0)) {
      throw new RangeError(`blockSize must be a positive integer (got ${blockSize})`);
    }
    throwIfAborted(signal);
    if (verify && url) {
      const { parseIscsiUrl } = await import('../transport/iscsi-url.js');
      parseIscsiUrl(devicePath); // InvalidArgValueError naming what to fix
    } else if (verify) {
      for (const path of sgPath === undefined ? [devicePath] : [devicePath, sgPath]) {
        const st = await stat(path); // ENOENT/EACCES surface as Node-shaped errors naming the path
        if (!st.isBlockDevice() && !st.isCharacterDevice()) {
          throw new NotADeviceError(path);
        }
      }
    }
    throwIfAborted(signal);
    const device = sgPath ?? devicePath;
    const release = () => Promise.resolve();
    return withDeviceOptions(
      {
        device,
        devicePath,
        ...(sgPath === undefined ? {} : { sgPath }),
        ...(blockSize === undefined ? {} : { blockSize }),
        description: `attached device ${devicePath}`,
        release,
        [Symbol.asyncDispose]: release,
      },
      chap,
    );
  }
}
