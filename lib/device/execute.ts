/**
 * Classification of one command's outcome (every transport reports in SG_IO's terms), in the order sg3_utils uses: ioctl errno → system error;
 * host_status / driver_status (other than DRIVER_SENSE) → transport error, never success;
 * CHECK CONDITION → sense; other non-GOOD status → status error. And the retry policy.
 */

import { DeviceSystemError, ScsiError, TransportError } from '../errors.js';
import { ScsiStatus, SenseKey } from '../scsi/names.js';
import { decodeSense } from '../scsi/sense.js';
import type { CommandOutcome } from '../transport/types.js';

const DRIVER_SENSE = 0x08;

/** Returns the error an outcome stands for, or undefined when the command succeeded. */
export function classifyOutcome(
  raw: CommandOutcome,
  sense: Uint8Array,
  command: string,
  path: string,
): Error | undefined {
  if (raw.errno !== 0) return new DeviceSystemError(raw.errno, 'ioctl', path);
  const context = { command, path };
  if (raw.hostStatus !== 0)
    return new TransportError(context, raw.hostStatus, raw.driverStatus, raw.detail);
  const driver = raw.driverStatus & 0x0f;
  if (driver !== 0 && driver !== DRIVER_SENSE) {
    return new TransportError(context, raw.hostStatus, raw.driverStatus, raw.detail);
  }
  const status = raw.status & 0xfe;
  const senseBytes = sense.subarray(0, Math.min(raw.senseLength, sense.length));
  if (
    status === ScsiStatus.CHECK_CONDITION ||
    status === ScsiStatus.COMMAND_TERMINATED ||
    driver === DRIVER_SENSE
  ) {
    const decoded = decodeSense(senseBytes);
    // As sg3_utils: NO SENSE and RECOVERED ERROR mean the command did its work.
    if (
      decoded &&
      (decoded.senseKey === SenseKey.NO_SENSE || decoded.senseKey === SenseKey.RECOVERED_ERROR)
    ) {
      return undefined;
    }
    return new ScsiError(context, raw.status, senseBytes.slice(), decoded);
  }
  if (status !== ScsiStatus.GOOD && status !== ScsiStatus.CONDITION_MET) {
    return new ScsiError(context, raw.status, new Uint8Array(0), undefined);
  }
  return undefined;
}

/** When and how often transient failures are retried. */
export interface RetryPolicy {
  /** Total tries per command, including the first (default 6; 1 = no retries). */
  attempts?: number;
  /** First back-off delay in ms (default 50), doubled each time up to `maxDelayMs`. */
  delayMs?: number;
  /** Largest back-off delay in ms (default 2000). */
  maxDelayMs?: number;
}

/**
 * The transient conditions: UNIT ATTENTION (retried at once), BUSY, TASK SET FULL and NOT READY
 * while becoming ready or with an operation in progress (retried after a back-off).
 * Returns the delay before the retry, or undefined if `error` is not transient.
 */
export function retryDelay(error: Error, attempt: number, policy: RetryPolicy): number | undefined {
  if (!(error instanceof ScsiError)) return undefined;
  const base = policy.delayMs ?? 50;
  const backoff = Math.min(base * 2 ** (attempt - 1), policy.maxDelayMs ?? 2000);
  if (error.senseKey === SenseKey.UNIT_ATTENTION) return 0;
  if (error.senseKey === SenseKey.NOT_READY && error.asc === 0x04) {
    // 04h/01h becoming ready, 04h/07h operation in progress, 04h/0Ah ALUA transition.
    return [0x01, 0x07, 0x0a].includes(error.ascq ?? -1) ? backoff : undefined;
  }
  if (error.senseKey === undefined) {
    const status = error.status & 0xfe;
    if (status === ScsiStatus.BUSY || status === ScsiStatus.TASK_SET_FULL) return backoff;
  }
  return undefined;
}
