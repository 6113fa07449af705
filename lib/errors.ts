/**
 * The error classes of lba-status and the one registry of their codes. Every error the package
 * throws derives from {@link LbaStatusError} (except the Node-style argument errors of
 * validate.ts, which mirror Node's own TypeError/RangeError) and has a stable `code` from
 * {@link ErrorCode}; messages say what to do.
 *
 * | class | code | when |
 * |---|---|---|
 * | {@link DeviceSystemError} | `ENOENT`, `EACCES`, `EPERM`, `ENOTTY`, … | a system call failed (open, ioctl) |
 * | {@link ScsiError} | `ERR_SCSI_<SENSE KEY or STATUS>` | the device answered CHECK CONDITION or another bad status |
 * | {@link TransportError} | `ERR_SCSI_TRANSPORT` | the command did not complete (host/driver status) |
 * | {@link MalformedReplyError} | `ERR_LBA_STATUS_MALFORMED` | the device's reply breaks the standard; never skipped |
 * | {@link DeviceClosedError} | `ERR_LBA_STATUS_DEVICE_CLOSED` | the device handle was closed |
 * | `AbortError` (lib/abort.ts) | `ABORT_ERR` | the AbortSignal fired |
 */
import { getSystemErrorMap } from 'node:util';
import {
  ascName,
  driverStatusName,
  hex2,
  hostStatusHint,
  hostStatusName,
  ScsiStatus,
  type SenseKey,
  scsiStatusName,
  senseKeyName,
} from './scsi/names.js';
import type { DecodedSense, FieldPointer } from './scsi/sense.js';

// ---- The code registry ---------------------------------------------------------------------

/**
 * `code` of a {@link DeviceSystemError}: the errno names Node's `util.getSystemErrorMap()` knows
 * (libuv's, as on Linux), or `E<number>` for an errno it does not.
 */
export type SystemErrorCode =
  | 'E2BIG'
  | 'EACCES'
  | 'EADDRINUSE'
  | 'EADDRNOTAVAIL'
  | 'EAFNOSUPPORT'
  | 'EAGAIN'
  | 'EAI_ADDRFAMILY'
  | 'EAI_AGAIN'
  | 'EAI_BADFLAGS'
  | 'EAI_BADHINTS'
  | 'EAI_CANCELED'
  | 'EAI_FAIL'
  | 'EAI_FAMILY'
  | 'EAI_MEMORY'
  | 'EAI_NODATA'
  | 'EAI_NONAME'
  | 'EAI_OVERFLOW'
  | 'EAI_PROTOCOL'
  | 'EAI_SERVICE'
  | 'EAI_SOCKTYPE'
  | 'EALREADY'
  | 'EBADF'
  | 'EBUSY'
  | 'ECANCELED'
  | 'ECHARSET'
  | 'ECONNABORTED'
  | 'ECONNREFUSED'
  | 'ECONNRESET'
  | 'EDESTADDRREQ'
  | 'EEXIST'
  | 'EFAULT'
  | 'EFBIG'
  | 'EFTYPE'
  | 'EHOSTDOWN'
  | 'EHOSTUNREACH'
  | 'EILSEQ'
  | 'EINTR'
  | 'EINVAL'
  | 'EIO'
  | 'EISCONN'
  | 'EISDIR'
  | 'ELOOP'
  | 'EMFILE'
  | 'EMLINK'
  | 'EMSGSIZE'
  | 'ENAMETOOLONG'
  | 'ENETDOWN'
  | 'ENETUNREACH'
  | 'ENFILE'
  | 'ENOBUFS'
  | 'ENODATA'
  | 'ENODEV'
  | 'ENOENT'
  | 'ENOMEM'
  | 'ENONET'
  | 'ENOPROTOOPT'
  | 'ENOSPC'
  | 'ENOSYS'
  | 'ENOTCONN'
  | 'ENOTDIR'
  | 'ENOTEMPTY'
  | 'ENOTSOCK'
  | 'ENOTSUP'
  | 'ENOTTY'
  | 'ENXIO'
  | 'EOF'
  | 'EOVERFLOW'
  | 'EPERM'
  | 'EPIPE'
  | 'EPROTO'
  | 'EPROTONOSUPPORT'
  | 'EPROTOTYPE'
  | 'ERANGE'
  | 'EREMOTEIO'
  | 'EROFS'
  | 'ESHUTDOWN'
  | 'ESOCKTNOSUPPORT'
  | 'ESPIPE'
  | 'ESRCH'
  | 'ETIMEDOUT'
  | 'ETXTBSY'
  | 'EUNATCH'
  | 'EXDEV'
  | 'UNKNOWN'
  | `E${number}`;

/** `code` of a {@link ScsiError}: `ERR_SCSI_` + the sense key name, or the status name without sense. */
export type ScsiErrorCode =
  | `ERR_SCSI_${keyof typeof SenseKey | keyof typeof ScsiStatus}`
  | `ERR_SCSI_SENSE_KEY_0x${string}`
  | `ERR_SCSI_STATUS_0x${string}`;

/** `code` of an `IscsiInitiatorError` (lba-status/sim's userspace initiator). */
export type IscsiInitiatorErrorCode =
  | 'ERR_ISCSI_INITIATOR'
  | 'ERR_ISCSI_LOGIN'
  | 'ERR_ISCSI_LOGIN_TIMEOUT'
  | 'ERR_ISCSI_LOGIN_PROTOCOL'
  | 'ERR_ISCSI_CHAP_REQUIRED'
  | 'ERR_ISCSI_MUTUAL_CHAP'
  | 'ERR_ISCSI_REJECT'
  | 'ERR_ISCSI_PROTOCOL'
  | 'ERR_ISCSI_TARGET_FAILURE'
  | 'ECONNRESET'
  | 'ETIMEDOUT'
  | 'ABORT_ERR';

/** `code` of an `ExportError`. */
export type ExportErrorCode =
  | 'ERR_LBA_STATUS_EXPORT_INCOMPLETE'
  | 'ERR_LBA_STATUS_EXPORT_CORRUPT'
  | 'ERR_LBA_STATUS_EXPORT_INVALID';

/** `code` of an `OciDeltaError` (lba-status/oci). */
export type OciDeltaErrorCode =
  | 'ERR_OCI_SDK_MISSING'
  | 'ERR_OCI_BAD_OCID'
  | 'ERR_OCI_SAME_BACKUP'
  | 'ERR_OCI_BACKUP_TYPE_MISMATCH'
  | 'ERR_OCI_BAD_CHANGE_BLOCK_SIZE'
  | 'ERR_OCI_BACKUP_NOT_FOUND'
  | 'ERR_OCI_BACKUP_NOT_AVAILABLE'
  | 'ERR_OCI_BACKUPS_DIFFERENT_VOLUMES'
  | 'ERR_OCI_BACKUP_ORDER'
  | 'ERR_OCI_SECOND_BACKUP_NOT_INCREMENTAL'
  | 'ERR_OCI_FULL_BACKUP_BETWEEN'
  | 'ERR_OCI_VOLUME_RESIZED'
  | 'ERR_OCI_REQUEST_REJECTED'
  | 'ERR_OCI_NOT_AUTHENTICATED'
  | 'ERR_OCI_NOT_FOUND'
  | 'ERR_OCI_CONFLICT'
  | 'ERR_OCI_SERVICE'
  | 'ERR_OCI_NETWORK'
  | 'ERR_OCI_LIFECYCLE'
  | 'ERR_OCI_TIMEOUT'
  | 'ERR_OCI_IMDS'
  | 'ERR_OCI_ATTACHMENT'
  | 'ERR_OCI_DEVICE_NOT_FOUND'
  | 'ERR_OCI_RELEASE'
  | 'ERR_ISCSIADM';

/** `code` of a `JobQueueError` (lba-status/jobs). */
export type JobQueueErrorCode =
  /** `bullmq` or `ioredis` is not installed. */
  | 'ERR_BULLMQ_MISSING'
  /** A job spec or queue option is not valid (bad job id, missing backup, …). */
  | 'ERR_JOB_SPEC'
  /** Redis could not be reached (refused, timed out, authentication failed). */
  | 'ERR_QUEUE_UNREACHABLE';

/** Codes of the Node-style argument errors (validate.ts: TypeError/RangeError subclasses). */
export type ArgumentErrorCode =
  | 'ERR_INVALID_ARG_TYPE'
  | 'ERR_INVALID_ARG_VALUE'
  | 'ERR_OUT_OF_RANGE';

/**
 * Codes of errors the native addon throws as plain `Error`s (an unsupported platform, an internal
 * failure, a command queue used after close): they reach a caller only through misuse or a bug.
 */
export type NativeErrorCode =
  | 'ERR_LBA_STATUS_UNSUPPORTED_PLATFORM'
  | 'ERR_LBA_STATUS_NO_MEMORY'
  | 'ERR_LBA_STATUS_QUEUE_CLOSED'
  | 'ERR_LBA_STATUS_INTERNAL';

/** Every `code` an error thrown by lba-status can have: one closed union. */
export type ErrorCode =
  | SystemErrorCode
  | ScsiErrorCode
  | 'ERR_SCSI_TRANSPORT'
  | 'ERR_ISCSI_LOGIN'
  | 'ERR_LBA_STATUS_MALFORMED'
  | 'ERR_LBA_STATUS_DEVICE_CLOSED'
  | 'ERR_LBA_STATUS_BINDING'
  | 'ERR_LBA_STATUS_NOT_WHOLE_DISK'
  | 'ERR_LBA_STATUS_SHORT_READ'
  | 'ERR_LBA_STATUS_EXPORT_MISMATCH'
  | 'ERR_LBA_STATUS_VERIFY_MISMATCH'
  | 'ERR_NOT_A_DEVICE'
  | NativeErrorCode
  | 'ABORT_ERR'
  | ExportErrorCode
  | IscsiInitiatorErrorCode
  | OciDeltaErrorCode
  | JobQueueErrorCode
  | ArgumentErrorCode;

/**
 * The base class of every lba-status error: `err instanceof LbaStatusError` holds for an error
 * from any entry point, imported or required (the ESM entries re-export the one CommonJS build).
 * Narrow by `code` or by the subclass.
 */
export abstract class LbaStatusError extends Error {
  override name = 'LbaStatusError';
  abstract readonly code: ErrorCode;
}

/** What to do about each errno, in the context of opening a device and sending it SG_IO. */
const errnoHints: Record<string, string> = {
  ENOENT: 'the device node does not exist; check the path (ls -l /dev/sg* /dev/sd*)',
  EACCES:
    'no permission to open the node read-write: run as root, or give the user write access to the /dev/sgN node (group disk, or a udev rule)',
  EPERM:
    'the kernel refused this command on this node: a 32-byte CDB through /dev/sdX needs CAP_SYS_RAWIO; run as root, grant CAP_SYS_RAWIO, or use the sg node (/dev/sgN opened read-write needs no capability)',
  ENOTTY: 'not a SCSI device: SG_IO works on /dev/sgN and SCSI disks /dev/sdX only',
  EISDIR: 'a directory is not a device; pass a device node such as /dev/sg1 or /dev/sdb',
  EINVAL: 'the kernel rejected the SG_IO request (CDB longer than 32 bytes or a bad header)',
  EIO: 'the transfer is larger than the device queue allows: use a smaller allocation length',
  ENXIO: 'the device is gone (detached or logged out)',
  ENODEV: 'the device is gone (detached or logged out)',
  EBUSY: 'the device is busy (opened exclusively by someone else)',
  ENOMEM: 'the kernel could not allocate memory for the transfer: use a smaller allocation length',
  EROFS: 'the node is on a read-only file system; open it read-only is not enough for SG_IO',
};

/**
 * A failed system call, shaped like Node's own fs errors: `code`, `errno` (negative), `syscall`,
 * `path`, and a message `CODE: description, syscall 'path'` followed by what to do.
 */
export class DeviceSystemError extends LbaStatusError {
  override name = 'DeviceSystemError';
  readonly code: SystemErrorCode;
  readonly errno: number;
  readonly syscall: string;
  readonly path: string;
  /** What to do about it. */
  readonly hint: string | undefined;

  constructor(errno: number, syscall: string, path: string, options?: { cause?: unknown }) {
    const negative = -Math.abs(errno);
    const [code, description] = (getSystemErrorMap().get(negative) as
      | [SystemErrorCode, string]
      | undefined) ?? [`E${Math.abs(errno)}` as const, 'unknown error'];
    const hint = errnoHints[code];
    super(`${code}: ${description}, ${syscall} '${path}'${hint ? ` (${hint})` : ''}`, options);
    this.code = code;
    this.errno = negative;
    this.syscall = syscall;
    this.path = path;
    this.hint = hint;
  }

  /** Wraps an error thrown by node:fs (already Node-shaped) and adds the hint. */
  static fromNode(error: NodeJS.ErrnoException, path: string): DeviceSystemError | Error {
    if (typeof error.errno !== 'number') return error;
    return new DeviceSystemError(error.errno, error.syscall ?? 'open', error.path ?? path, {
      cause: error,
    });
  }
}

/** What to do about each sense key (appended to messages). */
const senseHints: Record<number, string> = {
  2: 'the device is not ready; retry later',
  3: 'the medium reported an unrecoverable error',
  4: 'the device reported a hardware failure',
  6: 'the device was reset or changed; the command can be retried',
  7: 'the device is write-protected',
  11: 'the device aborted the command; retry',
};

/** Options common to errors raised for one command. */
interface CommandContext {
  /** Command name, e.g. `GET LBA STATUS(32)`. */
  command: string;
  /** Device node the command was sent to. */
  path: string;
}

/**
 * The device completed the command with CHECK CONDITION (sense decoded) or another non-GOOD
 * status (BUSY, TASK SET FULL, RESERVATION CONFLICT…).
 */
export class ScsiError extends LbaStatusError {
  override name = 'ScsiError';
  /** `ERR_SCSI_ILLEGAL_REQUEST`, `ERR_SCSI_UNIT_ATTENTION`, `ERR_SCSI_BUSY`, … */
  readonly code: ScsiErrorCode;
  readonly command: string;
  readonly path: string;
  /** SCSI status byte and its name. */
  readonly status: number;
  readonly statusName: string;
  /** Sense key, ASC and ASCQ (undefined when there was no sense data). */
  readonly senseKey: number | undefined;
  readonly senseKeyName: string | undefined;
  readonly asc: number | undefined;
  readonly ascq: number | undefined;
  /** The ASC/ASCQ's standard description. */
  readonly ascName: string | undefined;
  readonly fieldPointer: FieldPointer | undefined;
  /** Raw sense bytes as written by the device. */
  readonly sense: Uint8Array;

  constructor(
    context: CommandContext,
    status: number,
    sense: Uint8Array,
    decoded: DecodedSense | undefined,
  ) {
    const statusText = scsiStatusName(status);
    let message: string;
    let code: ScsiErrorCode;
    if (decoded) {
      const keyName = senseKeyName(decoded.senseKey);
      const what = ascName(decoded.asc, decoded.ascq);
      const pointer = decoded.fieldPointer
        ? `, error in ${decoded.fieldPointer.inCdb ? 'CDB' : 'parameter data'} byte ${decoded.fieldPointer.byte}${decoded.fieldPointer.bit === undefined ? '' : ` bit ${decoded.fieldPointer.bit}`}`
        : '';
      const hint = senseHints[decoded.senseKey];
      message = `${context.command} on '${context.path}': ${keyName.replaceAll('_', ' ')}, ${what} (sense key 0x${decoded.senseKey.toString(16)}, ASC/ASCQ 0x${hex2(decoded.asc)}/0x${hex2(decoded.ascq)}${pointer})${hint ? `: ${hint}` : ''}`;
      code = `ERR_SCSI_${keyName}` as ScsiErrorCode;
    } else {
      const hint =
        status === ScsiStatus.BUSY || status === ScsiStatus.TASK_SET_FULL
          ? ': the device is overloaded; retry later or lower the concurrency'
          : status === ScsiStatus.RESERVATION_CONFLICT
            ? ': another initiator holds a reservation on the device'
            : '';
      message = `${context.command} on '${context.path}': SCSI status ${statusText} (0x${hex2(status)})${sense.length ? ' with unrecognised sense data' : ''}${hint}`;
      code = `ERR_SCSI_${statusText}` as ScsiErrorCode;
    }
    super(message);
    this.code = code;
    this.command = context.command;
    this.path = context.path;
    this.status = status;
    this.statusName = statusText;
    this.senseKey = decoded?.senseKey;
    this.senseKeyName = decoded ? senseKeyName(decoded.senseKey) : undefined;
    this.asc = decoded?.asc;
    this.ascq = decoded?.ascq;
    this.ascName = decoded ? ascName(decoded.asc, decoded.ascq) : undefined;
    this.fieldPointer = decoded?.fieldPointer;
    this.sense = sense;
  }
}

/**
 * The command did not complete: the host adapter or transport reported a failure (timeout,
 * abort, lost connection). Never a success, whatever the data buffer holds.
 */
export class TransportError extends LbaStatusError {
  override name = 'TransportError';
  readonly code = 'ERR_SCSI_TRANSPORT';
  readonly command: string;
  readonly path: string;
  readonly hostStatus: number;
  readonly hostStatusName: string;
  readonly driverStatus: number;
  readonly driverStatusName: string;

  /** What went wrong below SCSI, in words (userspace transports), if known. */
  readonly detail: string | undefined;

  constructor(context: CommandContext, hostStatus: number, driverStatus: number, detail?: string) {
    const hostName = hostStatusName(hostStatus);
    const driverName = driverStatusName(driverStatus);
    const hint =
      hostStatusHint(hostStatus) ??
      (hostStatus === 0 ? 'the SCSI driver reported an error' : 'check the device and its link');
    super(
      `${context.command} on '${context.path}' did not complete: transport error ${hostName} (host_status 0x${hex2(hostStatus)}, driver_status ${driverName})${detail ? `: ${detail}` : ''}: ${hint}`,
    );
    this.detail = detail;
    this.command = context.command;
    this.path = context.path;
    this.hostStatus = hostStatus;
    this.hostStatusName = hostName;
    this.driverStatus = driverStatus;
    this.driverStatusName = driverName;
  }
}

/**
 * The iSCSI target refused the login (RFC 7143 §11.13.5 status class 2 or 3): wrong target
 * name, CHAP failure, no such LUN path, or the target is out of resources.
 */
export class IscsiLoginError extends LbaStatusError {
  override name = 'IscsiLoginError';
  readonly code = 'ERR_ISCSI_LOGIN';
  /** The `iscsi://` address, without any secret. */
  readonly path: string;
  /** Login response Status-Class and Status-Detail (0 and 0 when the failure was ours). */
  readonly statusClass: number;
  readonly statusDetail: number;

  constructor(path: string, statusClass: number, statusDetail: number, what: string) {
    super(`iSCSI login to '${path}' failed: ${what}`);
    this.path = path;
    this.statusClass = statusClass;
    this.statusDetail = statusDetail;
  }
}

/**
 * The device's reply breaks the standard (short reply, a partial or overlapping descriptor,
 * an extent past the capacity, no progress…). Scanning stops: skipping it could lose changes.
 */
export class MalformedReplyError extends LbaStatusError {
  override name = 'MalformedReplyError';
  readonly code = 'ERR_LBA_STATUS_MALFORMED';
  readonly command: string;
  readonly path: string;
  /** LBA the failing command started at. */
  readonly lba: number;

  constructor(context: CommandContext, lba: number, problem: string) {
    super(
      `${context.command} at LBA ${lba} on '${context.path}' returned a malformed reply: ${problem}. The scan stopped so that no change is lost; report this device's behaviour`,
    );
    this.command = context.command;
    this.path = context.path;
    this.lba = lba;
  }
}

/** The device handle was closed before or while the operation ran. */
export class DeviceClosedError extends LbaStatusError {
  override name = 'DeviceClosedError';
  readonly code = 'ERR_LBA_STATUS_DEVICE_CLOSED';
  constructor(path: string) {
    super(`The device '${path}' is closed; open it again with openDevice()`);
  }
}
