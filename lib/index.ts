/**
 * lba-status: find and read the blocks that changed between two cloud block-volume backups,
 * through SCSI GET LBA STATUS(16/32) — over Linux SG_IO, or a userspace iSCSI session (no root).
 *
 * @example
 * ```ts
 * import { openDevice } from 'lba-status';
 * await using dev = await openDevice('/dev/sdc');
 * for await (const e of dev.changedExtents({ changeBlockSize: 1 << 20 })) console.log(e);
 * ```
 * @packageDocumentation
 */

export { AbortError } from './abort.js';
export { LbaStatusDevice, openDevice } from './api/device.js';
export type { CommandEngine, LbaStatusColumns } from './binding.js';
export { BindingLoadError, DataDirection } from './binding.js';
export {
  type ChapOptions,
  type CommandResult,
  type DeviceInfo,
  type DeviceSettings,
  type ExecuteOptions,
  type OpenOptions,
  ScsiDevice,
} from './device/device.js';
export type { RetryPolicy } from './device/execute.js';
export {
  type ArgumentErrorCode,
  DeviceClosedError,
  DeviceSystemError,
  type ErrorCode,
  type ExportErrorCode,
  type IscsiInitiatorErrorCode,
  IscsiLoginError,
  type JobQueueErrorCode,
  LbaStatusError,
  MalformedReplyError,
  type NativeErrorCode,
  type OciDeltaErrorCode,
  ScsiError,
  type ScsiErrorCode,
  type SystemErrorCode,
  TransportError,
} from './errors.js';
export {
  applyExport,
  checkExportDir,
  createRawWriter,
  createRbdDiffWriter,
  type DeltaWriter,
  ExportError,
  type ExportFormat,
  type ExportManifest,
  ExportMismatchError,
  type ExportOptions,
  exportChanged,
  type ManifestExtent,
  readManifest,
  sha256File,
  VerifyMismatchError,
  verifyDevice,
  verifyExport,
} from './read/export.js';
export {
  type ChangedChunk,
  type ReadChangedOptions,
  type ReadProgress,
  readChanged,
  ShortReadError,
  splitExtents,
} from './read/reader.js';
export {
  type ChangedExtent,
  type ChangedExtentsOptions,
  changedExtents,
  coalesceChanged,
  isChangedStatus,
} from './scan/changed.js';
export type { GetLbaStatusReply, GetLbaStatusRequest } from './scan/get-lba-status.js';
export {
  type LbaExtent,
  type LbaStatusBatch,
  maxWindowBlocks,
  ProvisioningStatus,
  ReportType,
  type ReportTypeName,
  type ScanOptions,
  type ScanProgress,
  scanBatches,
  scanExtents,
} from './scan/scanner.js';
export type {
  BlockLimits,
  Capacity,
  CommandSupport,
  Designator,
  LogicalBlockProvisioning,
  StandardInquiry,
} from './scsi/commands.js';
export { ScsiStatus, SenseKey } from './scsi/names.js';
export { type DecodedSense, decodeSense, type FieldPointer } from './scsi/sense.js';
export { NotWholeDiskError, type ResolveOptions } from './transport/resolve.js';
export type { CommandOutcome, ScsiTransport, TransportCommand } from './transport/types.js';
