export {
  DOCUMENTED_DELTA_STATUS,
  ISCSIADM_EXIT,
  IscsiadmError,
  OciDeltaError,
  type OciDeltaErrorCode,
} from './errors.js';
export { DEFAULT_IMDS_URL, fetchInstanceIdentity, type InstanceIdentity } from './imds.js';
export {
  type ChapCredentials,
  DEFAULT_LOCK_PATH,
  Iscsiadm,
  type IscsiadmOptions,
  type IscsiTarget,
  portalOf,
} from './iscsiadm.js';
export { backupKind, type DeltaVolumeKind, parseOcid } from './ocid.js';
export type { PollTiming } from './poll.js';
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
} from './provisioner.js';
export {
  type BreakerPolicy,
  createOciClients,
  JitteredBackoff,
  loadOciSdk,
  type OciClientOptions,
  type OciClients,
  type RetryPolicy,
} from './sdk.js';
export { parseDuration, type SweepOptions, type SweepResult, sweep } from './sweep.js';
export { type FindDeviceOptions, type IscsiDevice, lookupDevice, waitForDevice } from './sysfs.js';
export {
  TAG_ATTACH,
  TAG_CREATED,
  TAG_HOST,
  TAG_INSTANCE,
  TAG_JOB,
  TAG_MARK,
  TAG_MARK_VALUE,
} from './tags.js';
