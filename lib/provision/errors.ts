/**
 * Abort helpers of the provisioners: lib/abort.ts is the one abort module; this file only
 * re-exports it for the provision and oci layers.
 */
import { LbaStatusError } from '../errors.js';

export { AbortError, abortError, isAbortError, sleep, throwIfAborted } from '../abort.js';

/** A path given as a volume's device is not a block or character device node. */
export class NotADeviceError extends LbaStatusError {
  override name = 'NotADeviceError';
  readonly code = 'ERR_NOT_A_DEVICE';
  readonly path: string;
  constructor(path: string) {
    super(`${path} is not a device node; pass the block device (e.g. /dev/sdc) or its /dev/sgN`);
    this.path = path;
  }
}
