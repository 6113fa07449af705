/** A device that is already attached to this host: provisioning checks it exists, release does nothing. */
import { stat } from 'node:fs/promises';
import { throwIfAborted } from './errors.js';
import type { ProvisionedVolume, ProvisionOptions, VolumeProvisioner } from './types.js';

export interface AttachedDeviceOptions extends ProvisionOptions {
  /** Block device (or SCSI generic node) already on this host, e.g. `/dev/sdc`. */
  devicePath: string;
  /** Matching `/dev/sgN`, when known. */
  sgPath?: string;
  /** Logical block size, when known. */
  blockSize?: number;
  /** Check that the path exists and is a block or character device (default true). */
  verify?: boolean;
}

export class AttachedDeviceProvisioner implements VolumeProvisioner<AttachedDeviceOptions> {
  readonly kind = 'attached';

  async provision(options: AttachedDeviceOptions): Promise<ProvisionedVolume> {
    const { devicePath, sgPath, blockSize, verify = true, signal } = options;
    if (typeof devicePath !== 'string' || !devicePath.startsWith('/')) {
      throw new TypeError(
        `devicePath must be an absolute path such as /dev/sdc (got ${JSON.stringify(devicePath)})`,
      );
    }
    if (blockSize !== undefined && (!Number.isInteger(blockSize) || blockSize <= 0)) {
      throw new RangeError(`blockSize must be a positive integer (got ${blockSize})`);
    }
    throwIfAborted(signal);
    if (verify) {
      for (const path of sgPath === undefined ? [devicePath] : [devicePath, sgPath]) {
        const st = await stat(path); // ENOENT/EACCES surface as Node-shaped errors naming the path
        if (!st.isBlockDevice() && !st.isCharacterDevice()) {
          const err = new Error(
            `${path} is not a device node; pass the block device (e.g. /dev/sdc) or its /dev/sgN`,
          ) as Error & { code: string; path: string };
          err.code = 'ERR_NOT_A_DEVICE';
          err.path = path;
          throw err;
        }
      }
    }
    throwIfAborted(signal);
    const release = () => Promise.resolve();
    return {
      devicePath,
      ...(sgPath === undefined ? {} : { sgPath }),
      ...(blockSize === undefined ? {} : { blockSize }),
      description: `attached device ${devicePath}`,
      release,
      [Symbol.asyncDispose]: release,
    };
  }
}
