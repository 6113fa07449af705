/**
 * runDeltaJob: one OCI delta, end to end, idempotent by job id and resumable.
 *
 * sweep (volumes tagged with this job: leftovers of a crashed attempt) → provision (the job id in
 * the volume's freeform tags and in the retry tokens; a fresh token per attempt) → export into
 * `spec.export.dir`, resuming what a previous attempt synced (the export's journal; the delta of
 * two backups does not depend on the delta volume, so a new volume continues the old export) →
 * release. Everything the job made is released on every exit path (success, error, abort).
 */
import { join } from 'node:path';
import { AbortError } from '../abort.js';
import { openDevice } from '../api/device.js';
import type { OpenOptions } from '../device/device.js';
import {
  type OciAttachMode,
  type OciDeltaProvisionerConfig,
  OciDeltaVolumeProvisioner,
} from '../oci/provisioner.js';
import type { ProvisionedVolume, ProvisionProgress } from '../provision/types.js';
import {
  checkExportDir,
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
  /** Least interval between two byte-progress reports, in ms (default 200; phases always). */
  progressIntervalMs?: number;
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
  const started = performance.now();
  const { jobId, firstBackupId, secondBackupId } = validateSpec(spec);
  const { dir, formats } = spec.export;
  const signal = options.signal;
  if (signal?.aborted) throw toAbortError(undefined, signal);
  let provisioner = options.provisioner;
  let owned: OciDeltaVolumeProvisioner | undefined;
  if (!provisioner) {
    owned = new OciDeltaVolumeProvisioner({
      ...options.oci,
      attach: options.attach ?? options.oci?.attach ?? 'iscsiadm',
    });
    provisioner = owned;
  } else if (options.attach && provisioner.attach && provisioner.attach !== options.attach) {
    throw new TypeError(
      `options.attach is '${options.attach}' but the provisioner attaches with '${provisioner.attach}'`,
    );
  }

  let phase: DeltaJobPhase = 'sweep';
  let bytesDone = 0;
  let bytesTotal: number | undefined;
  let lastReport = 0;
  const report = (detail?: string, throttle = false): void => {
    if (!options.onProgress) return;
    const now = performance.now();
    if (throttle && now - lastReport < (options.progressIntervalMs ?? 200)) return;
    lastReport = now;
    options.onProgress({
      jobId,
      phase,
      bytesDone,
      bytesTotal,
      ...(detail === undefined ? {} : { detail }),
    });
  };
  const step = (e: ProvisionProgress) =>
    report(`${e.step} ${e.phase}${e.detail ? ` ${e.detail}` : ''}`);

  try {
    report();
    // Before anything is created (and billed): the directory holds nothing or this delta.
    if (!options.restart)
      await checkExportDir(dir, {
        source: { firstBackupId, secondBackupId },
        changeBlockSize: spec.changeBlockSize ?? DEFAULT_CHANGE_BLOCK_SIZE,
        ...(formats ? { formats } : {}),
      });
    const swept = await provisioner.sweepJob(jobId, {
      ...(signal ? { signal } : {}),
      onProgress: step,
    });
    phase = 'provision';
    report();
    const volume = await provisioner.provision({
      firstBackupId,
      secondBackupId,
      ...(spec.changeBlockSize === undefined ? {} : { changeBlockSize: spec.changeBlockSize }),
      jobId,
      ...(signal ? { signal } : {}),
      onProgress: step,
    });
    const volumeId = (volume as { volumeId?: string }).volumeId;
    const changeBlockSize =
      (volume as { changeBlockSize?: number }).changeBlockSize ??
      spec.changeBlockSize ??
      DEFAULT_CHANGE_BLOCK_SIZE;
    let resumed = false;
    let bytesBefore = 0;
    let work: { manifest: ExportManifest } | undefined;
    let workError: unknown;
    try {
      phase = 'export';
      report(volume.description);
      const device = await openDevice(volume.device, {
        queueDepth: 4,
        ...options.device,
        ...volume.deviceOptions,
      });
      try {
        const manifest = await exportChanged(device, dir, {
          changeBlockSize,
          ...(formats ? { formats } : {}),
          source: { firstBackupId, secondBackupId },
          ...options.read,
          ...(signal ? { signal } : {}),
          ...(options.restart ? { restart: true } : {}),
          ...(options.createdAt ? { createdAt: options.createdAt } : {}),
          onResume: (r) => {
            resumed = true;
            bytesBefore = r.bytes;
            bytesDone = r.bytes;
            bytesTotal = r.totalBytes;
            report(`resuming: ${r.chunks} chunk(s), ${r.bytes} bytes already synced`);
          },
          onProgress: (p: ReadProgress) => {
            bytesDone = p.bytesRead;
            bytesTotal = p.totalBytes;
            report(undefined, true);
          },
        });
        work = { manifest };
      } finally {
        await device.close();
      }
    } catch (error) {
      workError = error;
    }
    phase = 'release';
    report(volume.description);
    try {
      await volume.release();
    } catch (releaseError) {
      if (workError === undefined) throw releaseError;
      const primary = signal?.aborted ? toAbortError(workError, signal) : workError;
      throw new AggregateError(
        [primary, releaseError],
        `${(primary as Error)?.message ?? String(primary)}; releasing ${volume.description} also failed: ${(releaseError as Error)?.message ?? String(releaseError)}`,
      );
    }
    if (workError !== undefined || !work) throw workError;
    const { manifest } = work;
    bytesDone = manifest.changedBytes;
    bytesTotal = manifest.changedBytes;
    phase = 'done';
    report();
    return {
      jobId,
      dir,
      extents: manifest.extents.length,
      bytes: manifest.changedBytes,
      bytesRead: manifest.changedBytes - bytesBefore,
      resumed,
      manifestSha256: await sha256File(join(dir, 'manifest.json')),
      swept,
      ...(volumeId ? { volumeId } : {}),
      elapsedMs: Math.round(performance.now() - started),
    };
  } catch (error) {
    if (signal?.aborted && !(error instanceof AggregateError)) throw toAbortError(error, signal);
    throw error;
  } finally {
    await owned?.close();
  }
}

/** OCI's default change block size. */
const DEFAULT_CHANGE_BLOCK_SIZE = 4096;

function validateSpec(spec: DeltaJobSpec): DeltaJobSpec {
  if (typeof spec !== 'object' || spec === null) throw new TypeError('spec must be an object');
  const { jobId, firstBackupId, secondBackupId } = spec;
  if (typeof jobId !== 'string' || jobId.length < 1 || jobId.length > 128)
    throw new TypeError(`spec.jobId must be a string of 1 to 128 characters, got ${String(jobId)}`);
  if (typeof firstBackupId !== 'string' || typeof secondBackupId !== 'string')
    throw new TypeError('spec.firstBackupId and spec.secondBackupId must be backup OCIDs');
  if (typeof spec.export?.dir !== 'string' || spec.export.dir === '')
    throw new TypeError('spec.export.dir must be a directory path');
  return spec;
}

/** The typed AbortError (code ABORT_ERR), whatever the aborted step threw. */
function toAbortError(error: unknown, signal: AbortSignal): Error {
  if (error instanceof AbortError) return error;
  return new AbortError(undefined, { cause: signal.reason ?? error });
}
