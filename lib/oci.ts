/**
 * `lba-status/oci`: the OCI delta-volume provisioner (oci-core + oci-common are optional peer
 * dependencies, loaded on first use) and the generic provisioner API.
 */
export { LbaStatusError } from './errors.js';
export {
  DOCUMENTED_DELTA_STATUS,
  ISCSIADM_EXIT,
  IscsiadmError,
  OciDeltaError,
  type OciDeltaErrorCode,
  type OciDeltaErrorDetails,
} from './oci/errors.js';
export type { InstanceIdentity } from './oci/imds.js';
export {
  Iscsiadm,
  type IscsiadmChap,
  type IscsiadmOptions,
  type IscsiPortalTarget,
} from './oci/iscsiadm.js';
export { type DeltaVolumeKind, type ParsedOcid, parseOcid } from './oci/ocid.js';
export type { PollTiming } from './oci/poll.js';
export {
  checkBackupPair,
  MAX_CHANGE_BLOCK_SIZE,
  MIN_CHANGE_BLOCK_SIZE,
  type OciAttachMode,
  type OciDeltaOptions,
  type OciDeltaProvisionerConfig,
  type OciDeltaVolume,
  OciDeltaVolumeProvisioner,
  validateDeltaRequest,
} from './oci/provisioner.js';
export {
  type BreakerPolicy,
  createOciClients,
  type OciClientOptions,
  type OciClients,
  type OciSdk,
  /** Retry policy of the OCI SDK calls (lba-status's `RetryPolicy` is the SCSI one). */
  type RetryPolicy as OciRetryPolicy,
} from './oci/sdk.js';
export { type SweepOptions, type SweepResult, sweep } from './oci/sweep.js';
export { type AttachedDeviceOptions, AttachedDeviceProvisioner } from './provision/attached.js';
export type { VolumeChap, VolumeDeviceOptions } from './provision/device.js';
export { NotADeviceError } from './provision/errors.js';
export type {
  ProvisionedVolume,
  ProvisionOptions,
  ProvisionProgress,
  VolumeProvisioner,
} from './provision/types.js';
export { withProvisionedVolume } from './provision/with-volume.js';
