/**
 * `lba-status/jobs`: resumable, idempotent delta jobs (`runDeltaJob`) — the unit of work a fleet
 * of workers runs. The OCI SDK stays an optional peer dependency (loaded on first use).
 */
export { AbortError } from './abort.js';
export { LbaStatusError } from './errors.js';
export {
  type DeltaJobOptions,
  type DeltaJobPhase,
  type DeltaJobProgress,
  type DeltaJobProvisioner,
  type DeltaJobProvisionOptions,
  type DeltaJobResult,
  type DeltaJobSpec,
  type JobSweepResult,
  runDeltaJob,
} from './jobs/delta-job.js';
export {
  checkDeltaJobSpec,
  DELTA_JOB_NAME,
  type DeltaJobStatus,
  type EnqueueOptions,
  type EnqueueResult,
  enqueueDeltaJob,
  JobQueueError,
  type JobQueueErrorCode,
  listDeltaJobs,
  type QueueConnectionOptions,
} from './jobs/queue.js';
export {
  createDeltaWorker,
  type DeltaJobRunner,
  type DeltaWorker,
  type DeltaWorkerEvent,
  type DeltaWorkerOptions,
} from './jobs/worker.js';
export { ExportMismatchError } from './read/export.js';
