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
