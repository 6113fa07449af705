export { type AttachedDeviceOptions, AttachedDeviceProvisioner } from './attached.js';
export type { VolumeChap, VolumeDeviceOptions } from './device.js';
export { abortError, isAbortError } from './errors.js';
export { releaseOnce } from './release.js';
export type {
  ProvisionedVolume,
  ProvisionOptions,
  ProvisionProgress,
  VolumeProvisioner,
} from './types.js';
export { withProvisionedVolume } from './with-volume.js';
