/**
 * Names for the numbers SCSI and Linux SG_IO hand back, so errors read as words.
 * Sources of the values: SPC-6 (status, sense keys, ASC/ASCQ), include/scsi/scsi_status.h (DID_*).
 */

/** Direction of the data phase of one SCSI command (the native enum's values, SG_DXFER_*). */
export const DataDirection = {
  /** No data phase (TEST UNIT READY). */
  None: 0,
  /** Device to host (`SG_DXFER_FROM_DEV`): INQUIRY, READ, GET LBA STATUS. */
  FromDevice: 1,
  /** Host to device (`SG_DXFER_TO_DEV`). */
  ToDevice: 2,
} as const;
export type DataDirection = (typeof DataDirection)[keyof typeof DataDirection];

/** Linux host bytes (include/scsi/scsi_status.h, DID_*) that the transports report. */
export const HostStatus = {
  OK: 0x00,
  /** Could not connect before the timeout. */
  NO_CONNECT: 0x01,
  /** The command timed out (and was aborted). */
  TIME_OUT: 0x03,
  /** Internal error, e.g. a protocol violation by the target. */
  ERROR: 0x07,
  /** The transport failed and recovery gave up. */
  TRANSPORT_FAILFAST: 0x0f,
} as const;

/** SCSI status byte values (SAM-6). */
export const ScsiStatus = {
  GOOD: 0x00,
  CHECK_CONDITION: 0x02,
  CONDITION_MET: 0x04,
  BUSY: 0x08,
  RESERVATION_CONFLICT: 0x18,
  COMMAND_TERMINATED: 0x22,
  TASK_SET_FULL: 0x28,
  ACA_ACTIVE: 0x30,
  TASK_ABORTED: 0x40,
} as const;

/** Sense keys (SPC-6 table 51). */
export const SenseKey = {
  NO_SENSE: 0x0,
  RECOVERED_ERROR: 0x1,
  NOT_READY: 0x2,
  MEDIUM_ERROR: 0x3,
  HARDWARE_ERROR: 0x4,
  ILLEGAL_REQUEST: 0x5,
  UNIT_ATTENTION: 0x6,
  DATA_PROTECT: 0x7,
  BLANK_CHECK: 0x8,
  VENDOR_SPECIFIC: 0x9,
  COPY_ABORTED: 0xa,
  ABORTED_COMMAND: 0xb,
  VOLUME_OVERFLOW: 0xd,
  MISCOMPARE: 0xe,
  COMPLETED: 0xf,
} as const;

function invert(table: Record<string, number>): Map<number, string> {
  return new Map(Object.entries(table).map(([name, value]) => [value, name]));
}

const statusNames = invert(ScsiStatus);
const senseKeyNames = invert(SenseKey);

/** `0x02` → `'CHECK_CONDITION'`; unknown values → `'STATUS_0xNN'`. */
export function scsiStatusName(status: number): string {
  return statusNames.get(status) ?? `STATUS_0x${hex2(status)}`;
}

/** `5` → `'ILLEGAL_REQUEST'`. */
export function senseKeyName(key: number): string {
  return senseKeyNames.get(key) ?? `SENSE_KEY_0x${key.toString(16)}`;
}

/** SG_IO host_status values (include/scsi/scsi_status.h). 0x10–0x13 are unused for SG_IO. */
const hostStatusNames = new Map<number, string>([
  [0x00, 'DID_OK'],
  [0x01, 'DID_NO_CONNECT'],
  [0x02, 'DID_BUS_BUSY'],
  [0x03, 'DID_TIME_OUT'],
  [0x04, 'DID_BAD_TARGET'],
  [0x05, 'DID_ABORT'],
  [0x06, 'DID_PARITY'],
  [0x07, 'DID_ERROR'],
  [0x08, 'DID_RESET'],
  [0x09, 'DID_BAD_INTR'],
  [0x0a, 'DID_PASSTHROUGH'],
  [0x0b, 'DID_SOFT_ERROR'],
  [0x0c, 'DID_IMM_RETRY'],
  [0x0d, 'DID_REQUEUE'],
  [0x0e, 'DID_TRANSPORT_DISRUPTED'],
  [0x0f, 'DID_TRANSPORT_FAILFAST'],
  [0x14, 'DID_TRANSPORT_MARGINAL'],
]);

/** What to do about each transport failure, for error messages. */
const hostStatusHints = new Map<number, string>([
  [0x01, 'the target is unreachable: check the iSCSI session (iscsiadm -m session)'],
  [0x03, 'the command timed out: raise timeoutMs or scan smaller windows'],
  [
    0x05,
    'the command was aborted; if it was a 32-byte CDB the host adapter may not accept CDBs that long (max_cmd_len): try cdb: 16',
  ],
  [0x0e, 'the transport was disrupted (session recovery); retry once the session is back'],
  [0x0f, 'the transport failed fast (session down); check the iSCSI session'],
]);

export function hostStatusName(value: number): string {
  return hostStatusNames.get(value) ?? `DID_0x${hex2(value)}`;
}

export function hostStatusHint(value: number): string | undefined {
  return hostStatusHints.get(value);
}

/** driver_status low nibble (include/scsi/sg.h); only 0 and DRIVER_SENSE are non-errors. */
const driverStatusNames = new Map<number, string>([
  [0x00, 'DRIVER_OK'],
  [0x01, 'DRIVER_BUSY'],
  [0x02, 'DRIVER_SOFT'],
  [0x03, 'DRIVER_MEDIA'],
  [0x04, 'DRIVER_ERROR'],
  [0x05, 'DRIVER_INVALID'],
  [0x06, 'DRIVER_TIMEOUT'],
  [0x07, 'DRIVER_HARD'],
  [0x08, 'DRIVER_SENSE'],
]);

export function driverStatusName(value: number): string {
  return driverStatusNames.get(value & 0x0f) ?? `DRIVER_0x${hex2(value)}`;
}

/** The additional sense codes this package meets, from SPC-6 Annex D. Key: asc << 8 | ascq. */
const ascNames = new Map<number, string>([
  [0x0000, 'NO ADDITIONAL SENSE INFORMATION'],
  [0x0400, 'LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE'],
  [0x0401, 'LOGICAL UNIT IS IN PROCESS OF BECOMING READY'],
  [0x0402, 'LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED'],
  [0x0403, 'LOGICAL UNIT NOT READY, MANUAL INTERVENTION REQUIRED'],
  [0x0407, 'LOGICAL UNIT NOT READY, OPERATION IN PROGRESS'],
  [0x040a, 'LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION'],
  [0x0411, 'LOGICAL UNIT NOT READY, NOTIFY (ENABLE SPINUP) REQUIRED'],
  [0x1100, 'UNRECOVERED READ ERROR'],
  [0x1a00, 'PARAMETER LIST LENGTH ERROR'],
  [0x2000, 'INVALID COMMAND OPERATION CODE'],
  [0x2100, 'LOGICAL BLOCK ADDRESS OUT OF RANGE'],
  [0x2400, 'INVALID FIELD IN CDB'],
  [0x2500, 'LOGICAL UNIT NOT SUPPORTED'],
  [0x2600, 'INVALID FIELD IN PARAMETER LIST'],
  [0x2700, 'WRITE PROTECTED'],
  [0x2800, 'NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED'],
  [0x2900, 'POWER ON, RESET, OR BUS DEVICE RESET OCCURRED'],
  [0x2901, 'POWER ON OCCURRED'],
  [0x2902, 'SCSI BUS RESET OCCURRED'],
  [0x2903, 'BUS DEVICE RESET FUNCTION OCCURRED'],
  [0x2904, 'DEVICE INTERNAL RESET'],
  [0x2907, 'I_T NEXUS LOSS OCCURRED'],
  [0x2a01, 'MODE PARAMETERS CHANGED'],
  [0x2a09, 'CAPACITY DATA HAS CHANGED'],
  [0x3a00, 'MEDIUM NOT PRESENT'],
  [0x3f0e, 'REPORTED LUNS DATA HAS CHANGED'],
  [0x4700, 'SCSI PARITY ERROR'],
  [0x4b00, 'DATA PHASE ERROR'],
  [0x4e00, 'OVERLAPPED COMMANDS ATTEMPTED'],
]);

/** `(0x24, 0)` → `'INVALID FIELD IN CDB'`; unknown pairs → `'ASC 0xNN ASCQ 0xNN'`. */
export function ascName(asc: number, ascq: number): string {
  return (
    ascNames.get((asc << 8) | ascq) ??
    (ascNames.has(asc << 8) && ascq !== 0
      ? `${ascNames.get(asc << 8)} (ASCQ 0x${hex2(ascq)})`
      : `ASC 0x${hex2(asc)} ASCQ 0x${hex2(ascq)}`)
  );
}

export function hex2(value: number): string {
  return value.toString(16).padStart(2, '0');
}
