/**
 * runDeltaJob: one OCI delta, end to end, idempotent by job id and resumable.
 *
 * sweep (volumes tagged with this job: leftovers of a crashed attempt) → provision (the job id in
 * the volume's freeform tags and in the retry tokens; a fresh token per attempt) → export into
 * `spec.export.dir`, resuming what a previous attempt synced (the export's journal; the delta of
 * two backups does not depend on the delta volume, so a new volume continues the old export) →
 * release. Everything the job made is released on every exit path (success, error, abort).
 */
import { openDevice } from '../api/device.js';
import type { OpenOptions } from '../device/device.js';
import {
  type OciAttachMode,
  type OciDeltaProvisionerConfig,
  OciDeltaVolumeProvisioner,
} from '../oci/provisioner.js';
import { abortError, isAbortError } from '../provision/errors.js';
import type { ProvisionedVolume, ProvisionProgress } from '../provision/types.js';
import {
  type ExportFormat,
  type ExportManifest,
  exportChanged,
  sha256File,
} from '../read/export.js';
import type { ReadProgress } from '../read/reader.js';

/** What to do: the two backups, the granularity and where the export goes. */
export interface DeltaJobSpec {
  /** Stable id of the job (e.g. the queue's job id): 1-128 characters. */
  jobId: string;
  firstBackupId: string;
  secondBackupId: string;
  /** The delta's change block size: a power of two in 4096..1048576 (default 4096). */
  changeBlockSize?: number;
  export: {
    /** The export directory; a previous attempt's directory is resumed. */
    dir: string;
    /** Data files (default both: delta.img and delta.rbd-diff). */
    formats?: ExportFormat[];
  };
}

/** Result of {@link DeltaJobProvisioner.sweepJob}. */
export interface JobSweepResult {
  /** Volumes tagged with the job that were removed. */
  volumes: string[];
  /** Their attachments that were detached. */
  attachments: string[];
}

/** Options of a provision() call by a job. */
export interface DeltaJobProvisionOptions {
  firstBackupId: string;
  secondBackupId: string;
  changeBlockSize?: number;
  jobId: string;
  signal?: AbortSignal;
  onProgress?: (event: ProvisionProgress) => void;
}

/**
 * What a job needs from a provisioner: {@link OciDeltaVolumeProvisioner} implements it, and any
 * VolumeProvisioner with `sweepJob` (tests, a fleet's own) can stand in.
 */
export interface DeltaJobProvisioner {
  /** How volumes are reached, when the provisioner knows. */
  readonly attach?: OciAttachMode;
  provision(options: DeltaJobProvisionOptions): Promise<ProvisionedVolume>;
  /** Removes every volume (and attachment, session) tagged with `jobId`, whatever its age. */
  sweepJob(
    jobId: string,
    options?: { signal?: AbortSignal; onProgress?: (event: ProvisionProgress) => void },
  ): Promise<JobSweepResult>;
}

/** Phases of a job, in order. */
export type DeltaJobPhase = 'sweep' | 'provision' | 'export' | 'release' | 'done';

/** Progress of a job (for humans and for a queue's job progress). */
export interface DeltaJobProgress {
  jobId: string;
  phase: DeltaJobPhase;
  /** Changed bytes synced into the export so far (resumed bytes included). */
  bytesDone: number;
  /** Changed bytes of the whole delta, once the scan knows (else undefined). */
  bytesTotal: number | undefined;
  /** A provisioning step, e.g. `create start ocid1.volume…`, or another human detail. */
  detail?: string;
}

/** Options of {@link runDeltaJob}. */
export interface DeltaJobOptions {
  /** The provisioner (shared across jobs); default: a new OciDeltaVolumeProvisioner from `oci`. */
  provisioner?: DeltaJobProvisioner;
  /** Configuration of the provisioner made when `provisioner` is not given. */
  oci?: OciDeltaProvisionerConfig;
  /**
   * How the volume is reached (default: the provisioner's, else 'iscsiadm'). With a given
   * provisioner it must agree with the provisioner's own mode.
   */
  attach?: OciAttachMode;
  /** Aborts the job: everything made is released, then the promise rejects with an AbortError. */
  signal?: AbortSignal;
  onProgress?: (progress: DeltaJobProgress) => void;
  /** openDevice options (queueDepth default 4, timeoutMs, retry…); CHAP comes from the volume. */
  device?: Omit<OpenOptions, 'chap'>;
  /** Read tuning for the export. */
  read?: { concurrency?: number; chunkSize?: number; method?: 'auto' | 'direct' | 'sg' };
  /** Start the export over instead of resuming it (default false). */
  restart?: boolean;
  /** The manifest's createdAt (default: the first attempt's start). */
  createdAt?: Date;
}

/** What a finished job returns. */
export interface DeltaJobResult {
  jobId: string;
  /** The export directory (complete). */
  dir: string;
  /** Chunks in the manifest. */
  extents: number;
  /** Changed bytes exported (the manifest's changedBytes). */
  bytes: number;
  /** Bytes this run read (the rest had been synced by earlier attempts). */
  bytesRead: number;
  /** True when an earlier attempt's export was continued. */
  resumed: boolean;
  /** Hex SHA-256 of manifest.json. */
  manifestSha256: string;
  /** Leftovers of earlier attempts removed before provisioning. */
  swept: JobSweepResult;
  /** The delta volume this run used (already deleted). */
  volumeId?: string;
  elapsedMs: number;
}

/**
 * Runs one delta job. Idempotent by `spec.jobId`: run it again after a crash (same spec, same
 * directory) and it sweeps the crashed attempt's volume, provisions a new one and resumes the
 * export. Rejects with an AbortError on abort, an `ExportMismatchError`
 * (ERR_LBA_STATUS_EXPORT_MISMATCH) when the directory holds another delta's export, or the
 * provisioning/device error; in every case after releasing what it made.
 */
export async function runDeltaJob(
  spec: DeltaJobSpec,
  options: DeltaJobOptions = {},
): Promise<DeltaJobResult> {
  void openDevice;
  void exportChanged;
  void sha256File;
  void OciDeltaVolumeProvisioner;
  void abortError;
  void isAbortError;
  void (undefined as unknown as ExportManifest | ReadProgress);
  void spec;
  void options;
  throw new Error('runDeltaJob: not implemented yet');
}
