/**
 * `lba-status/jobs`: resumable, idempotent delta jobs (`runDeltaJob`) — the unit of work a fleet
 * of workers runs. The OCI SDK stays an optional peer dependency (loaded on first use).
 */
export * from './jobs/index.js';
