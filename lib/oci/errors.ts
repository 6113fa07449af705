import { LbaStatusError, type OciDeltaErrorCode } from '../errors.js';

/**
 * Typed errors of the OCI delta workflow. Every error has a stable `code`; errors that match a
 * response OCI documents for delta volumes carry that `httpStatus` and its documented meaning, so a
 * pre-flight failure reads the same as the one OCI would have returned after a billed request.
 */

/** Stable error codes (the registry is lib/errors.ts). */
export type { OciDeltaErrorCode };

/** What OCI documents for each status of a delta-volume create ([OCI-CBT] "Response codes"). */
export const DOCUMENTED_DELTA_STATUS: Readonly<Record<number, string>> = {
  400: 'bad or malformed OCID, the same OCID twice, first backup newer than the second, or a bad type value',
  403: 'the backups belong to different volumes, or the volume was resized between them',
  404: 'the feature is not enabled for the tenancy, a backup was not found, or the Lower Cost performance level was requested',
  409: 'one of the backups is not AVAILABLE',
  500: 'internal error at OCI',
};

export interface OciDeltaErrorDetails {
  /** HTTP status OCI documents (or returned) for this condition. */
  httpStatus?: number;
  /** OCI service error code (`serviceCode`), when the error came from the API. */
  serviceCode?: string;
  /** `opc-request-id` of the failed call: quote it to Oracle support. */
  opcRequestId?: string;
  /** SDK operation name, e.g. `createVolume`. */
  operation?: string;
  /** OCIDs involved. */
  resourceId?: string;
  cause?: unknown;
}

export class OciDeltaError extends LbaStatusError {
  override name = 'OciDeltaError';
  readonly code: OciDeltaErrorCode;
  readonly httpStatus?: number;
  readonly serviceCode?: string;
  readonly opcRequestId?: string;
  readonly operation?: string;
  readonly resourceId?: string;
  /** Documented meaning of `httpStatus` for delta volumes, when there is one. */
  readonly documentedMeaning?: string;

  constructor(code: OciDeltaErrorCode, message: string, details: OciDeltaErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    if (details.httpStatus !== undefined) {
      this.httpStatus = details.httpStatus;
      const meaning = DOCUMENTED_DELTA_STATUS[details.httpStatus];
      if (meaning !== undefined) this.documentedMeaning = meaning;
    }
    if (details.serviceCode !== undefined) this.serviceCode = details.serviceCode;
    if (details.opcRequestId !== undefined) this.opcRequestId = details.opcRequestId;
    if (details.operation !== undefined) this.operation = details.operation;
    if (details.resourceId !== undefined) this.resourceId = details.resourceId;
    Error.captureStackTrace?.(this, new.target);
  }
}

/** Codes of iscsiadm exit statuses (open-iscsi `iscsi_err.h`, as carried by Oracle's oci-utils). */
export const ISCSIADM_EXIT: Readonly<Record<number, string>> = {
  1: 'generic error',
  2: 'session not found',
  3: 'out of memory',
  4: 'connect failure',
  5: 'login failure',
  6: 'iSCSI database error',
  7: 'invalid argument',
  8: 'connection timer expired',
  9: 'iscsid or kernel failure',
  10: 'logout failed',
  11: 'PDU timeout',
  12: 'iSCSI transport module not loaded (modprobe iscsi_tcp)',
  13: 'no OS permission (run as root)',
  15: 'session already logged in',
  19: 'fatal login error',
  20: 'cannot connect to iscsid (start the iscsid service)',
  21: 'no records, targets or sessions found',
  22: 'sysfs lookup failed',
  24: 'authentication failure (CHAP user or secret rejected)',
  127: 'iscsiadm not found (install open-iscsi)',
};

/** iscsiadm failed. Carries the exit status, its meaning and the argv with secrets redacted. */
export class IscsiadmError extends LbaStatusError {
  override name = 'IscsiadmError';
  readonly code = 'ERR_ISCSIADM' as const;
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly meaning: string;
  /** argv with CHAP secrets replaced by `***`. */
  readonly args: readonly string[];
  readonly stderr: string;

  constructor(
    exitCode: number | null,
    signal: string | null,
    args: readonly string[],
    stderr: string,
    cause?: unknown,
  ) {
    const meaning =
      exitCode === null
        ? `killed by ${signal ?? 'a signal'} (timeout?)`
        : (ISCSIADM_EXIT[exitCode] ?? 'unknown error');
    const tail = stderr.trim().split('\n').slice(-1)[0] ?? '';
    super(
      `iscsiadm ${args.join(' ')} failed: exit ${exitCode ?? signal} (${meaning})${tail ? `: ${tail}` : ''}`,
      cause === undefined ? undefined : { cause },
    );
    this.exitCode = exitCode;
    this.signal = signal;
    this.meaning = meaning;
    this.args = args;
    this.stderr = stderr;
  }
}
