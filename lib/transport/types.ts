/**
 * The transport seam: how one SCSI command reaches a logical unit. The device layer
 * (lib/device) classifies outcomes, retries and decodes replies; a transport only moves a CDB,
 * its data and its sense, and says how the command ended.
 *
 * Three implementations: `sgio` (the kernel's SG_IO through the native addon), `iscsi` (the
 * userspace initiator in lib/iscsi, no root) and `memory` (the simulator's device server in
 * process, for tests and demos). Nothing above lib/device knows which one it has.
 */

import type { DataDirection } from '../scsi/names.js';

export { DataDirection, HostStatus } from '../scsi/names.js';

/** One command as the device layer hands it to a transport. */
export interface TransportCommand {
  /** 6..32 bytes (> 16: iSCSI sends the rest in an Extended CDB AHS). */
  cdb: Uint8Array;
  direction: DataDirection;
  /**
   * Data-in buffer (the transport writes at most `byteLength` bytes into it, from offset 0) or
   * data-out bytes; null when there is no data phase. Owned by the caller and pinned until the
   * promise settles.
   */
  data: Uint8Array | null;
  /** Sense buffer (at least 64 bytes); the transport writes the sense data it received here. */
  sense: Uint8Array;
  /** Per-command timeout in ms. */
  timeoutMs: number;
}

/**
 * How one command ended, in SG_IO's terms (every transport maps onto them, so one classifier in
 * lib/device/execute.ts serves all): a system errno, a host status (the transport did not
 * complete the command), or a SCSI status with sense.
 */
export interface CommandOutcome {
  /** errno of a system call that failed (e.g. the SG_IO ioctl), else 0; other fields then 0. */
  errno: number;
  /** SCSI status byte: 0 GOOD, 2 CHECK CONDITION, 8 BUSY, 0x28 TASK SET FULL… */
  status: number;
  /** Linux host byte (DID_*): non-zero means the command did not complete — never success. */
  hostStatus: number;
  /** Linux driver byte (0, or 8 = DRIVER_SENSE). */
  driverStatus: number;
  /** Bytes of sense data written into the sense buffer. */
  senseLength: number;
  /** Data bytes requested but not transferred. */
  resid: number;
  /** How long the command took, in ms. */
  durationMs: number;
  /** What went wrong below SCSI, in words (a userspace transport's reason for `hostStatus`). */
  detail?: string;
}

/** One logical unit reached over some transport. */
export interface ScsiTransport {
  /** Which transport this is. */
  readonly kind: 'sgio' | 'iscsi' | 'memory';
  /**
   * The address commands go to, for messages: a device node, an `iscsi://` URL (never with a
   * secret) or `memory:…`.
   */
  readonly address: string;
  /** The most commands this transport keeps in flight at once (more just wait their turn). */
  readonly queueDepth: number;
  /** The sg node (sgio only). */
  readonly sgPath?: string | undefined;
  /** The block node, which O_DIRECT reads use (sgio only). */
  readonly blockPath?: string | undefined;
  /** Sends one command. Never rejects for SCSI or transport failures: they are the outcome. */
  execute(command: TransportCommand): Promise<CommandOutcome>;
  /**
   * A zero-filled buffer for data-in, suitably aligned for this transport (native memory
   * aligned to `alignment`, default 4096, on sgio, so that O_DIRECT reads of the block node can
   * use it).
   */
  allocate(length: number, alignment?: number): Uint8Array;
  /** Releases the transport (commands in flight are settled first by the device). Idempotent. */
  close(): Promise<void>;
}
