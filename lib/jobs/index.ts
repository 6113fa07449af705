export { AbortError } from '../errors.js';
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
