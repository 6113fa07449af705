export { AbortError } from '../abort.js';
export { ExportMismatchError } from '../read/export.js';
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
} from './delta-job.js';
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
  redactRedisUrl,
} from './queue.js';
export {
  createDeltaWorker,
  type DeltaJobRunner,
  type DeltaWorker,
  type DeltaWorkerEvent,
  type DeltaWorkerOptions,
} from './worker.js';
