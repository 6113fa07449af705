/**
 * The device users open: a {@link ScsiDevice} (lib/device) with the scans (lib/scan) and
 * changed-data reads (lib/read) as methods. It sits above all three so that the device layer
 * imports nothing from the layers built on it.
 */
import { type OpenOptions, openWith, ScsiDevice } from '../device/device.js';
import { type ChangedChunk, type ReadChangedOptions, readChanged } from '../read/reader.js';
import { type ChangedExtent, type ChangedExtentsOptions, changedExtents } from '../scan/changed.js';
import {
  type GetLbaStatusReply,
  type GetLbaStatusRequest,
  knownForm,
  sendGetLbaStatus,
  validateGetLbaStatusRequest,
} from '../scan/get-lba-status.js';
import {
  type LbaExtent,
  type LbaStatusBatch,
  type ScanOptions,
  scanBatches,
  scanExtents,
} from '../scan/scanner.js';
import type { ScsiTransport } from '../transport/types.js';

/** An open device with GET LBA STATUS scans and changed-data reads. */
export class LbaStatusDevice extends ScsiDevice {
  /** The GET LBA STATUS form this device answers, once a scan in 'auto' mode found out. */
  get glsForm(): 16 | 32 | undefined {
    return knownForm(this);
  }

  /**
   * Sends exactly one GET LBA STATUS command and returns its parsed reply, unvalidated: the
   * building block of scans, and a way to compare with `sg_get_lba_status` command by command.
   */
  getLbaStatus(request: GetLbaStatusRequest): Promise<GetLbaStatusReply> {
    return sendGetLbaStatus(this, validateGetLbaStatusRequest(request));
  }

  /**
   * Scans for LBA status and yields batches of descriptors as typed-array columns (no object per
   * extent): the fast path for large volumes.
   */
  batches(options?: ScanOptions): AsyncGenerator<LbaStatusBatch> {
    return scanBatches(this, options);
  }

  /** Scans for LBA status and yields one `{ lba, blocks, status, additional }` per extent. */
  extents(options?: ScanOptions): AsyncGenerator<LbaExtent> {
    return scanExtents(this, options);
  }

  /** Yields the changed (mapped) extents, aligned outward to the change block size and merged. */
  changedExtents(options?: ChangedExtentsOptions): AsyncGenerator<ChangedExtent> {
    return changedExtents(this, options);
  }

  /** Yields the changed data in volume order, several reads in flight, bounded memory. */
  readChanged(options?: ReadChangedOptions): AsyncGenerator<ChangedChunk> {
    return readChanged(this, options);
  }
}

/**
 * Opens a SCSI device for GET LBA STATUS and changed-data reads.
 *
 * `address` is one of:
 * - a device node: `/dev/sgN`, `/dev/sdX` or a symlink such as `/dev/oracleoci/oraclevdb`. A
 *   block device is mapped to its sg node when it has one (no CAP_SYS_RAWIO needed for 32-byte
 *   CDBs); commands go through the kernel's SG_IO;
 * - an iSCSI URL, `iscsi://[USER@]HOST[:PORT]/TARGET-IQN/LUN` (libiscsi's syntax): a userspace
 *   iSCSI session, no root, no iscsid, no kernel modules; CHAP secrets in `options.chap`, never
 *   in the URL;
 * - a transport object (e.g. `createMemoryTransport()` from `lba-status/sim`), which the device
 *   then owns and closes.
 *
 * The device is probed with INQUIRY, so what is not a SCSI device fails here (ENOTTY,
 * ECONNREFUSED, a refused login…), and nothing is left open on failure.
 *
 * @example
 * ```ts
 * await using dev = await openDevice('/dev/sdc');
 * console.log(await dev.info());
 * await using remote = await openDevice('iscsi://10.0.0.5/iqn.2015-12.com.oracleiaas:abc/1', {
 *   chap: { username: 'ocid1.volume…', secret: process.env.LBA_STATUS_CHAP_SECRET! },
 * });
 * ```
 */
export function openDevice(
  address: string | ScsiTransport,
  options: OpenOptions = {},
): Promise<LbaStatusDevice> {
  return openWith(
    address,
    options,
    (transport, settings) => new LbaStatusDevice(transport, settings),
  );
}
