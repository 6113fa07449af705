/**
 * The SCSI device server of a simulated OCI delta volume. Pure: a CDB (and data-out) in, a status,
 * sense data and data-in out. No sockets, no timers.
 *
 * LUN 1 is the volume (OCI attaches volumes at LUN 1); every other LUN answers INQUIRY with
 * peripheral qualifier 3 so that the Linux scanner creates exactly one disk, and REPORT LUNS
 * (on any LUN) lists LUN 1 only.
 *
 * Profiles: the default, `oci`, is an OCI delta volume as documented. `scsi_debug` and `tgt`
 * answer GET LBA STATUS the way those targets were observed to (see
 * ../shared/reference/test-targets.md §2.4 and §4), so that the one emulator serves the tests of
 * the 32 → 16 fallback and of their replies too. Quirks (oci only) produce replies SBC-4 allows
 * and the scanner must handle: descriptors that start before the requested LBA or run past the
 * scan window, and RTP = 0.
 */
import { createHash } from 'node:crypto';
import { fillBlockData } from './block-data.js';
import { type ChangedMap, STATUS_DEALLOCATED, STATUS_MAPPED } from './changed-map.js';
import type { FaultKind } from './faults.js';
import {
  descriptorSense,
  fixedSense,
  ScsiStatus,
  Sense,
  SenseKey,
  type SenseSpec,
} from './sense.js';

export const VOLUME_LUN = 1;

/** Result of one command. */
export interface ScsiResult {
  status: number;
  /** Sense data (fixed format) with CHECK CONDITION. */
  sense?: Buffer;
  /** Data-in, already cut to the allocation length. */
  data?: Buffer;
}

/** A malformed GET LBA STATUS reply to produce instead of the correct one (fault injection). */
export type GlsMalformation = 'bad-length' | 'overlap';

export interface ScsiRequest {
  lun: number;
  cdb: Buffer;
  dataOut?: Buffer;
  /** Per I_T nexus state (pending unit attention); optional for one-off calls. */
  nexus?: NexusState;
  /** Fault injection: corrupt this GET LBA STATUS reply. */
  malform?: GlsMalformation;
}

/** State kept per I_T nexus (initiator port × target port). */
export class NexusState {
  /** Pending unit attention conditions per LUN, oldest first. */
  readonly pendingUa = new Map<number, SenseSpec[]>();
  /** Queues a unit attention for a LUN (e.g. 29h/00h after login). */
  addUnitAttention(lun: number, sense: SenseSpec = Sense.powerOnReset): void {
    const list = this.pendingUa.get(lun) ?? [];
    list.push(sense);
    this.pendingUa.set(lun, list);
  }
}

/**
 * Whose GET LBA STATUS the device server imitates:
 * - `oci` (default): GET LBA STATUS(32) only (16 on request, `gls16`), report types 0–4, RTP = 1,
 *   completion conditions 1/2/3; (16) refused with ILLEGAL REQUEST 20h/00h.
 * - `scsi_debug` (Linux 6.1): (16) only, exactly one descriptor per reply (the run of equal state
 *   at the requested LBA), statuses 0 (mapped or unknown) and 1, RTP = 0, completion condition 0,
 *   report type ignored; an allocation length below 24 gets GOOD with no data; (32) refused with
 *   24h/00h, field pointer CDB byte 8 bit 7.
 * - `tgt` (1.0.85): (16) only, one descriptor per run to the end of the LUN (statuses 0/1, RTP = 0,
 *   condition 0, report type ignored), PARAMETER DATA LENGTH counting all of them while the data
 *   is cut at the allocation length (the last descriptor may arrive cut); (32) refused with
 *   20h/00h.
 *
 * In the `scsi_debug` and `tgt` profiles, mapped extents of the map are mapped; everything else
 * is deallocated (they have no "never written" state).
 */
export type DeviceProfile = 'oci' | 'scsi_debug' | 'tgt';
export const DEVICE_PROFILES: readonly DeviceProfile[] = ['oci', 'scsi_debug', 'tgt'];

/**
 * GET LBA STATUS replies of the `oci` profile that SBC-4 allows and a scanner must handle (for
 * tests; each costs a walk of the map from LBA 0 per command).
 */
export interface GlsQuirks {
  /** The first descriptor starts where its extent starts, even before the requested LBA. */
  unclippedStart?: boolean;
  /** Descriptors run past the end of the scan window to the end of their extent. */
  overrunWindow?: boolean;
  /**
   * RTP = 0: the report type is ignored and every LBA is listed as under report type 0 (mapped
   * extents with status 0, "mapped or unknown").
   */
  ignoreReportType?: boolean;
}

export interface DeviceServerOptions {
  map: ChangedMap;
  /** Whose GET LBA STATUS behaviour (and INQUIRY identity) to imitate (default `oci`). */
  profile?: DeviceProfile;
  /** Deviations of the `oci` profile's GET LBA STATUS replies (tests). */
  quirks?: GlsQuirks;
  /**
   * Writes the content of one mapped block at `offset` of `out` (`blockSize` bytes). Default:
   * block-data.ts's deterministic pattern from `dataSeed`. Tests pass their own pattern so that
   * expected data never comes from the simulator.
   */
  fillBlock?: (out: Buffer, offset: number, lba: number) => void;
  /** Seed of the deterministic data of changed blocks (see block-data.ts). */
  dataSeed: number;
  /**
   * `oci` profile: answer GET LBA STATUS(16) too (default false: ILLEGAL REQUEST 20h/00h, like
   * OCI). The `scsi_debug` and `tgt` profiles always answer it.
   */
  gls16?: boolean;
  /** Unit serial number (VPD 80h). Default: derived from `identity`. */
  serial?: string;
  /** A string the NAA identifier and default serial derive from (e.g. the target IQN). */
  identity?: string;
  /** Target name for the SCSI name string designator (VPD 83h). */
  targetName?: string;
  /** MAXIMUM TRANSFER LENGTH in bytes (VPD B0h; READs above it are refused). Default 4 MiB. */
  maxTransferBytes?: number;
  /** Largest SCAN LENGTH in bytes (default 1 GiB, OCI's documented limit). */
  maxScanBytes?: number;
}

interface OpInfo {
  opcode: number;
  sa?: number;
  usage: number[];
}

/** A fault decision's action (lib/sim/faults.ts) other than latency. */
export type FaultAction = Exclude<FaultKind, 'latency'>;

/** INQUIRY identity per profile: vendor (8), product (16), revision (4), as the targets report. */
const IDENTITY: Record<DeviceProfile, [string, string, string]> = {
  oci: ['ORACLE', 'BlockVolume', '1.0'],
  scsi_debug: ['Linux', 'scsi_debug', '0191'],
  tgt: ['IET', 'VIRTUAL-DISK', '0001'],
};

function ascii(s: string, len: number): Buffer {
  return Buffer.from(s.padEnd(len, ' ').slice(0, len), 'ascii');
}

function ff(n: number): number[] {
  return new Array<number>(n).fill(0xff);
}

function good(data?: Buffer): ScsiResult {
  return data ? { status: ScsiStatus.GOOD, data } : { status: ScsiStatus.GOOD };
}

function check(s: SenseSpec): ScsiResult {
  return { status: ScsiStatus.CHECK_CONDITION, sense: fixedSense(s) };
}

/** Descriptors an allocation length has room for, counting a partial one. */
function descriptorsWanted(alloc: number): number {
  return alloc >= 8 ? Math.ceil((alloc - 8) / 16) : 0;
}

function cut(buf: Buffer, allocationLength: number): Buffer {
  return buf.length > allocationLength ? buf.subarray(0, allocationLength) : buf;
}

/** True for the opcodes that modify the medium (refused with DATA PROTECT). */
function isWrite(cdb: Buffer): boolean {
  const op = cdb[0]!;
  if ([0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e, 0x41, 0x93, 0x42, 0x89, 0x8b, 0x9c].includes(op)) {
    return true;
  }
  if (op === 0x7f && cdb.length >= 10) {
    const sa = cdb.readUInt16BE(8);
    return sa === 0x000b || sa === 0x000c || sa === 0x000d || sa === 0x0010 || sa === 0x0011;
  }
  return false;
}

/**
 * One simulated logical unit. `execute` never throws for anything an initiator can send; it
 * answers CHECK CONDITION instead.
 */
export class DeviceServer {
  readonly map: ChangedMap;
  readonly blockSize: number;
  readonly capacity: number;
  readonly gls16: boolean;
  readonly maxTransferBlocks: number;
  readonly maxScanBlocks: number;
  readonly dataSeed: number;
  readonly serial: string;
  readonly profile: DeviceProfile;
  readonly quirks: Readonly<GlsQuirks>;
  #naa: Buffer;
  #targetName: string | undefined;
  #ops: OpInfo[];
  #fillBlock: (out: Buffer, offset: number, lba: number) => void;

  constructor(opts: DeviceServerOptions) {
    const profile = opts.profile ?? 'oci';
    if (!DEVICE_PROFILES.includes(profile)) {
      throw new RangeError(`profile must be one of ${DEVICE_PROFILES.join(', ')}; got ${profile}`);
    }
    const quirks = { ...opts.quirks };
    for (const key of Object.keys(quirks)) {
      if (!['unclippedStart', 'overrunWindow', 'ignoreReportType'].includes(key)) {
        throw new RangeError(
          `unknown quirk ${key} (use unclippedStart, overrunWindow, ignoreReportType)`,
        );
      }
    }
    if (profile !== 'oci' && Object.values(quirks).some(Boolean)) {
      throw new RangeError(`quirks apply to the oci profile only (${profile} has its own replies)`);
    }
    this.profile = profile;
    this.quirks = quirks;
    this.map = opts.map;
    this.blockSize = opts.map.blockSize;
    this.capacity = opts.map.capacityBlocks;
    this.gls16 = profile !== 'oci' || (opts.gls16 ?? false);
    this.dataSeed = opts.dataSeed;
    const seed = opts.dataSeed;
    const bs = this.blockSize;
    this.#fillBlock =
      opts.fillBlock ?? ((out, offset, lba) => fillBlockData(out, offset, lba, bs, seed));
    this.maxTransferBlocks = Math.max(
      1,
      Math.floor((opts.maxTransferBytes ?? 4 * 1024 * 1024) / this.blockSize),
    );
    this.maxScanBlocks = Math.floor((opts.maxScanBytes ?? 1024 * 1024 * 1024) / this.blockSize);
    const digest = createHash('sha256')
      .update(opts.identity ?? 'lba-status-sim')
      .digest();
    this.serial = opts.serial ?? digest.subarray(0, 16).toString('hex');
    // NAA 6 (IEEE Registered Extended) with a locally made-up value: 6, 24-bit OUI, vendor bits.
    this.#naa = Buffer.concat([Buffer.from([0x60]), digest.subarray(16, 31)]);
    this.#targetName = opts.targetName;
    this.#ops = this.#operationTable();
  }

  /** Executes one command. */
  execute(req: ScsiRequest): ScsiResult {
    const { cdb, lun } = req;
    if (cdb.length < 6) return check(Sense.invalidOpcode);
    const op = cdb[0]!;

    // REPORT LUNS and INQUIRY are served on every LUN and do not consume a unit attention.
    if (op === 0xa0) return this.#reportLuns(cdb);
    if (op === 0x12) return this.#inquiry(cdb, lun);
    if (lun !== VOLUME_LUN) {
      if (op === 0x03) return this.#requestSense(cdb, Sense.lunNotSupported);
      return check(Sense.lunNotSupported);
    }
    const ua = req.nexus?.pendingUa.get(lun);
    if (ua && ua.length > 0) {
      const sense = ua.shift()!;
      if (ua.length === 0) req.nexus!.pendingUa.delete(lun);
      if (op === 0x03) return this.#requestSense(cdb, sense);
      return check(sense);
    }
    if (isWrite(cdb)) return check(Sense.writeProtected);
    switch (op) {
      case 0x00: // TEST UNIT READY
        return good();
      case 0x03:
        return this.#requestSense(cdb, Sense.noSense);
      case 0x1a:
        return this.#modeSense(cdb, false);
      case 0x5a:
        return cdb.length >= 10 ? this.#modeSense(cdb, true) : check(Sense.invalidOpcode);
      case 0x25:
        return cdb.length >= 10 ? this.#readCapacity10(cdb) : check(Sense.invalidOpcode);
      case 0x08:
        return this.#read(cdb.readUIntBE(1, 3) & 0x1fffff, cdb[4] === 0 ? 256 : cdb[4]!, 4);
      case 0x28:
        if (cdb.length < 10) return check(Sense.invalidOpcode);
        if (cdb[1]! & 0xe0) return check(Sense.invalidField(1, 7));
        return this.#read(cdb.readUInt32BE(2), cdb.readUInt16BE(7), 7);
      case 0xa8:
        if (cdb.length < 12) return check(Sense.invalidOpcode);
        if (cdb[1]! & 0xe0) return check(Sense.invalidField(1, 7));
        return this.#read(cdb.readUInt32BE(2), cdb.readUInt32BE(6), 6);
      case 0x88:
        if (cdb.length < 16) return check(Sense.invalidOpcode);
        if (cdb[1]! & 0xe0) return check(Sense.invalidField(1, 7));
        return this.#read(Number(cdb.readBigUInt64BE(2)), cdb.readUInt32BE(10), 10);
      case 0x35: // SYNCHRONIZE CACHE(10): nothing is cached
      case 0x91:
        return good();
      case 0x9e: {
        if (cdb.length < 16) return check(Sense.invalidOpcode);
        const sa = cdb[1]! & 0x1f;
        if (sa === 0x10) return this.#readCapacity16(cdb);
        if (sa === 0x12 && this.gls16) return this.#getLbaStatus16(cdb, req.malform);
        return check(Sense.invalidOpcode);
      }
      case 0x7f: {
        if (cdb.length < 10) return check(Sense.invalidOpcode);
        if (cdb.readUInt16BE(8) === 0x0012 && cdb.length === 32) {
          // scsi_debug: an unknown service action of a known opcode (field pointer byte 8 bit 7);
          // tgt: opcodes 60h–7Fh are not implemented at all.
          if (this.profile === 'scsi_debug') return check(Sense.invalidField(8, 7));
          if (this.profile === 'tgt') return check(Sense.invalidOpcode);
          return this.#getLbaStatus32(cdb, req.malform);
        }
        return check(Sense.invalidOpcode);
      }
      case 0xa3:
        if (cdb.length >= 12 && (cdb[1]! & 0x1f) === 0x0c) return this.#reportOpcodes(cdb);
        return check(Sense.invalidOpcode);
      default:
        return check(Sense.invalidOpcode);
    }
  }

  /**
   * Executes one command under a fault decision (lib/sim/faults.ts): BUSY, TASK SET FULL, UNIT
   * ATTENTION and NOT READY replace the command's result, gls-* malform its GET LBA STATUS reply.
   * Returns undefined for `drop-connection`, which is the transport's to carry out.
   */
  executeWithFault(req: ScsiRequest, action: FaultAction | undefined): ScsiResult | undefined {
    switch (action) {
      case 'drop-connection':
        return undefined;
      case 'busy':
        return { status: ScsiStatus.BUSY };
      case 'task-set-full':
        return { status: ScsiStatus.TASK_SET_FULL };
      case 'unit-attention':
        return check(Sense.powerOnReset);
      case 'not-ready':
        return check(Sense.becomingReady);
      case 'gls-bad-length':
        return this.execute({ ...req, malform: 'bad-length' });
      case 'gls-overlap':
        return this.execute({ ...req, malform: 'overlap' });
      default:
        return this.execute(req);
    }
  }

  // -------------------------------------------------------------------------------------------

  #requestSense(cdb: Buffer, s: SenseSpec): ScsiResult {
    const desc = (cdb[1]! & 1) !== 0;
    const data = desc ? descriptorSense(s) : fixedSense(s);
    return good(cut(data, cdb[4]!));
  }

  #inquiry(cdb: Buffer, lun: number): ScsiResult {
    const evpd = (cdb[1]! & 1) !== 0;
    if (cdb[1]! & 0x02) return check(Sense.invalidField(1, 1)); // CMDDT (obsolete)
    const page = cdb[2]!;
    const alloc = cdb.readUInt16BE(3);
    const pqPdt = lun === VOLUME_LUN ? 0x00 : 0x7f; // PQ 3, type 1Fh: no LU here
    if (!evpd) {
      if (page !== 0) return check(Sense.invalidField(2));
      const b = Buffer.alloc(96);
      b[0] = pqPdt;
      b[2] = 0x06; // SPC-4
      b[3] = 0x12; // HISUP, response data format 2
      b[4] = b.length - 5;
      b[7] = 0x02; // CMDQUE
      const [vendor, product, revision] = IDENTITY[this.profile];
      ascii(vendor, 8).copy(b, 8);
      ascii(product, 16).copy(b, 16);
      ascii(revision, 4).copy(b, 32);
      // Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
      [0x00a0, 0x0960, 0x0460, 0x04c0].forEach((v, i) => {
        b.writeUInt16BE(v, 58 + i * 2);
      });
      return good(cut(b, alloc));
    }
    if (lun !== VOLUME_LUN) {
      return good(cut(Buffer.from([pqPdt, page, 0, 0]), alloc));
    }
    let body: Buffer;
    switch (page) {
      case 0x00:
        body = Buffer.from([0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
        break;
      case 0x80:
        body = Buffer.from(this.serial, 'ascii');
        break;
      case 0x83:
        body = this.#deviceIdentification();
        break;
      case 0xb0:
        body = this.#blockLimits();
        break;
      case 0xb1:
        // Block Device Characteristics: MEDIUM ROTATION RATE 1 (non-rotating medium).
        body = Buffer.alloc(0x3c);
        body[1] = 0x01;
        break;
      case 0xb2:
        // LBPRZ = 001b (unmapped blocks read as zeros); no UNMAP/WRITE SAME; thin provisioned.
        body = Buffer.from([0x00, 0x04, 0x02, 0x00]);
        break;
      default:
        return check(Sense.invalidField(2));
    }
    const head = Buffer.from([pqPdt, page, 0, 0]);
    head.writeUInt16BE(body.length, 2);
    return good(cut(Buffer.concat([head, body]), alloc));
  }

  #deviceIdentification(): Buffer {
    const parts: Buffer[] = [];
    // NAA, binary, associated with the LU.
    parts.push(Buffer.concat([Buffer.from([0x01, 0x03, 0x00, 0x10]), this.#naa]));
    // T10 vendor ID, ASCII.
    const [vendor, product] = IDENTITY[this.profile];
    const t10 = Buffer.from(`${vendor.padEnd(8, ' ')}${product}:${this.serial}`, 'ascii');
    parts.push(Buffer.concat([Buffer.from([0x02, 0x01, 0x00, t10.length]), t10]));
    // Relative target port 1 (iSCSI, PIV, associated with the target port).
    parts.push(Buffer.from([0x51, 0x94, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01]));
    if (this.#targetName) {
      // SCSI name string of the target device, UTF-8, NUL-terminated, padded to 4.
      const name = Buffer.from(this.#targetName, 'utf8');
      const len = (name.length + 1 + 3) & ~3;
      const v = Buffer.alloc(len);
      name.copy(v);
      parts.push(Buffer.concat([Buffer.from([0x53, 0xa8, 0x00, len]), v]));
    }
    return Buffer.concat(parts);
  }

  #blockLimits(): Buffer {
    const b = Buffer.alloc(0x3c);
    const gran = Math.min(0xffff, this.map.changeBlockSize / this.blockSize);
    b.writeUInt16BE(gran, 2); // OPTIMAL TRANSFER LENGTH GRANULARITY (page offset 6)
    b.writeUInt32BE(this.maxTransferBlocks, 4); // MAXIMUM TRANSFER LENGTH (offset 8)
    b.writeUInt32BE(this.maxTransferBlocks, 8); // OPTIMAL TRANSFER LENGTH (offset 12)
    // MAXIMUM UNMAP LBA COUNT, MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT, WRITE SAME length: 0.
    return b;
  }

  #reportLuns(cdb: Buffer): ScsiResult {
    if (cdb.length < 12) return check(Sense.invalidOpcode);
    const select = cdb[2]!;
    const alloc = cdb.readUInt32BE(6);
    if (alloc < 16) return check(Sense.invalidField(6));
    if (![0x00, 0x01, 0x02, 0x10, 0x11, 0x12].includes(select)) return check(Sense.invalidField(2));
    const luns = select === 0x01 || select === 0x11 ? [] : [VOLUME_LUN];
    const b = Buffer.alloc(8 + 8 * luns.length);
    b.writeUInt32BE(8 * luns.length, 0);
    luns.forEach((l, i) => {
      b[8 + i * 8 + 1] = l;
    });
    return good(cut(b, alloc));
  }

  #modeSense(cdb: Buffer, ten: boolean): ScsiResult {
    const dbd = (cdb[1]! & 0x08) !== 0;
    const llbaa = ten && (cdb[1]! & 0x10) !== 0;
    const pc = cdb[2]! >> 6;
    const page = cdb[2]! & 0x3f;
    const subpage = cdb[3]!;
    const alloc = ten ? cdb.readUInt16BE(7) : cdb[4]!;
    if (pc === 3) return check(Sense.savingNotSupported);
    if (subpage !== 0 && !(page === 0x3f && subpage === 0xff)) return check(Sense.invalidField(3));
    const changeable = pc === 1;
    const caching = Buffer.alloc(20);
    caching[0] = 0x08;
    caching[1] = 0x12; // WCE = 0, RCD = 0: nothing to flush
    const control = Buffer.alloc(12);
    control[0] = 0x0a;
    control[1] = 0x0a;
    if (!changeable) control.writeUInt16BE(0xffff, 8); // BUSY TIMEOUT PERIOD: unlimited
    let pages: Buffer[];
    if (page === 0x08) pages = [caching];
    else if (page === 0x0a) pages = [control];
    else if (page === 0x3f) pages = [caching, control];
    else return check(Sense.invalidField(2, 5));

    let bd = Buffer.alloc(0);
    if (!dbd) {
      if (llbaa) {
        bd = Buffer.alloc(16);
        bd.writeBigUInt64BE(BigInt(this.capacity), 0);
        bd.writeUInt32BE(this.blockSize, 12);
      } else {
        bd = Buffer.alloc(8);
        bd.writeUIntBE(Math.min(this.capacity, 0xffffff), 1, 3);
        bd.writeUIntBE(this.blockSize, 5, 3);
      }
    }
    const body = Buffer.concat([bd, ...pages]);
    let head: Buffer;
    if (ten) {
      head = Buffer.alloc(8);
      head.writeUInt16BE(6 + body.length, 0);
      head[3] = 0x90; // WP (the medium is write-protected), DPOFUA (accepted, nothing cached)
      head[4] = llbaa && !dbd ? 1 : 0;
      head.writeUInt16BE(bd.length, 6);
    } else {
      head = Buffer.alloc(4);
      head[0] = Math.min(255, 3 + body.length);
      head[2] = 0x90;
      head[3] = bd.length;
    }
    return good(cut(Buffer.concat([head, body]), alloc));
  }

  #readCapacity10(_cdb: Buffer): ScsiResult {
    const b = Buffer.alloc(8);
    b.writeUInt32BE(Math.min(this.capacity - 1, 0xffffffff), 0);
    b.writeUInt32BE(this.blockSize, 4);
    return good(b);
  }

  #readCapacity16(cdb: Buffer): ScsiResult {
    const alloc = cdb.readUInt32BE(10);
    const b = Buffer.alloc(32);
    b.writeBigUInt64BE(BigInt(this.capacity - 1), 0);
    b.writeUInt32BE(this.blockSize, 8);
    b[14] = 0xc0; // LBPME = 1, LBPRZ = 1
    return good(cut(b, alloc));
  }

  #read(lba: number, blocks: number, lengthField: number): ScsiResult {
    if (lba >= this.capacity || lba + blocks > this.capacity) return check(Sense.lbaOutOfRange);
    if (blocks === 0) return good();
    if (blocks > this.maxTransferBlocks) return check(Sense.invalidField(lengthField));
    const bs = this.blockSize;
    const out = Buffer.alloc(blocks * bs);
    const map = this.map;
    let i = map.firstEndingAfter(lba);
    const end = lba + blocks;
    while (i < map.count && map.starts[i]! < end) {
      if (map.statuses[i] === STATUS_MAPPED) {
        const s = Math.max(lba, map.starts[i]!);
        const e = Math.min(end, map.ends[i]!);
        for (let b = s; b < e; b++) this.#fillBlock(out, (b - lba) * bs, b);
      }
      i++;
    }
    return good(out);
  }

  // ------------------------------------------------------------------------------------------
  // GET LBA STATUS

  #getLbaStatus32(cdb: Buffer, malform?: GlsMalformation): ScsiResult {
    if (cdb[7] !== 0x18) return check(Sense.invalidField(7));
    const rt = cdb[10]!;
    if (rt > 4) return check(Sense.invalidField(10));
    const lba = cdb.readBigUInt64BE(12);
    const scan = cdb.readUInt32BE(20);
    const element = cdb.readUInt32BE(24);
    const alloc = cdb.readUInt32BE(28);
    // OCI: a scan length of 0 means "the entire volume, subject to the same 1 GB limit" (SBC-4:
    // no limit), so 0 scans up to 1 GiB of blocks from the starting LBA and ends with condition
    // 2 (or 3 at the end of the medium) like an explicit 1 GiB scan length. Above 1 GiB of
    // blocks OCI's output is undefined: refused explicitly.
    if (scan > this.maxScanBlocks) return check(Sense.invalidField(20));
    if (element !== 0) return check(Sense.invalidField(24));
    if (lba >= BigInt(this.capacity)) return check(Sense.lbaOutOfRange);
    const start = Number(lba);
    const length = scan === 0 ? this.maxScanBlocks : scan;
    return good(
      this.#ociReply(start, Math.min(start + length, this.capacity), rt, alloc, true, malform),
    );
  }

  #getLbaStatus16(cdb: Buffer, malform?: GlsMalformation): ScsiResult {
    const lba = cdb.readBigUInt64BE(2);
    const alloc = cdb.readUInt32BE(10);
    const rt = cdb[14]!;
    // scsi_debug and tgt ignore the report type byte altogether.
    if (this.profile === 'oci' && rt > 4) return check(Sense.invalidField(14));
    if (lba >= BigInt(this.capacity)) return check(Sense.lbaOutOfRange);
    const start = Number(lba);
    if (this.profile === 'oci') {
      return good(this.#ociReply(start, this.capacity, rt, alloc, false, malform));
    }
    // scsi_debug: `if (alloc_len < 24) return 0;` — GOOD, nothing transferred.
    if (this.profile === 'scsi_debug' && alloc < 24) return good();
    const descs: number[] = [];
    let total = 0;
    const want = this.profile === 'scsi_debug' ? 1 : descriptorsWanted(alloc);
    glsDescriptors(this.map, start, this.capacity, 0, (l, n, st) => {
      if (this.profile === 'scsi_debug' && total > 0) return;
      if (total < want) descs.push(l, n, st);
      total++;
    });
    return good(this.#encode(start, descs, total, 0, 0, alloc, malform));
  }

  /**
   * The oci profile's parameter data for the window [start, end). PARAMETER DATA LENGTH always
   * describes every descriptor of the window; the transfer is cut at the allocation length.
   */
  #ociReply(
    start: number,
    end: number,
    reportType: number,
    alloc: number,
    hasScanLength: boolean,
    malform?: GlsMalformation,
  ): Buffer {
    const { unclippedStart, overrunWindow, ignoreReportType } = this.quirks;
    const rt = ignoreReportType ? 0 : reportType;
    const want = descriptorsWanted(alloc);
    const descs: number[] = []; // lba, blocks, status triples
    let total = 0;
    const add = (l: number, n: number, st: number): void => {
      if (total < want) descs.push(l, n, st);
      total++;
    };
    if (unclippedStart || overrunWindow) {
      // Whole extents from the start of the medium, kept where they meet the window.
      glsDescriptors(this.map, 0, this.capacity, rt, (l, n, st) => {
        if (l + n <= start || l >= end) return;
        const s = unclippedStart ? l : Math.max(l, start);
        const e = overrunWindow ? l + n : Math.min(l + n, end);
        add(s, e - s, st);
      });
    } else {
      glsDescriptors(this.map, start, end, rt, add);
    }
    const ccDone = end >= this.capacity ? 3 : hasScanLength ? 2 : 3;
    return this.#encode(start, descs, total, ccDone, ignoreReportType ? 0 : 1, alloc, malform);
  }

  /**
   * Encodes a reply to a request at `start` of `total` descriptors of which `descs` (lba,
   * blocks, status triples) are the first ones, cut at the allocation length. `ccDone` is the completion condition when
   * every descriptor fits (0 for targets that never report one; else 1 when some did not fit).
   */
  #encode(
    start: number,
    descs: number[],
    total: number,
    ccDone: number,
    rtp: 0 | 1,
    alloc: number,
    malform?: GlsMalformation,
  ): Buffer {
    if (malform === 'overlap') {
      // A second descriptor that starts inside the first one.
      const l0 = descs.length >= 3 ? descs[0]! : start;
      const n0 = descs.length >= 3 ? descs[1]! : 2;
      if (descs.length < 3) descs.push(l0, n0, STATUS_MAPPED);
      descs.splice(3, 0, l0 + Math.floor(n0 / 2), n0, descs[2]!);
      total = Math.max(total, 1) + 1;
    }
    const allFit = 8 + 16 * total <= alloc;
    const cc = allFit || malform || ccDone === 0 ? ccDone : 1;
    const n = descs.length / 3;
    let buf = Buffer.alloc(8 + 16 * n);
    buf.writeUInt32BE(Math.min(0xffffffff, 4 + 16 * total), 0);
    buf[7] = (cc << 1) | rtp;
    for (let i = 0; i < n; i++) {
      const o = 8 + i * 16;
      buf.writeBigUInt64BE(BigInt(descs[i * 3]!), o);
      buf.writeUInt32BE(descs[i * 3 + 1]!, o + 8);
      buf[o + 12] = descs[i * 3 + 2]!;
    }
    if (malform === 'bad-length') {
      // A length that is not 4 + 16k, with every announced byte delivered (nothing was cut).
      let k = Math.min(n, Math.max(0, Math.floor((alloc - 12) / 16)));
      if (alloc < 12) k = 0;
      buf = Buffer.concat([buf.subarray(0, 8 + 16 * k), Buffer.from([0xde, 0xad, 0xbe, 0xef])]);
      buf.writeUInt32BE(4 + 16 * k + 4, 0);
      buf[7] = (ccDone << 1) | rtp;
    }
    return cut(buf, alloc);
  }

  // ------------------------------------------------------------------------------------------
  // REPORT SUPPORTED OPERATION CODES

  #operationTable(): OpInfo[] {
    const ops: OpInfo[] = [
      { opcode: 0x00, usage: [0x00, 0, 0, 0, 0, 0] },
      { opcode: 0x03, usage: [0x03, 0x01, 0, 0, 0xff, 0] },
      { opcode: 0x08, usage: [0x08, 0x1f, 0xff, 0xff, 0xff, 0] },
      { opcode: 0x0a, usage: [0x0a, 0x1f, 0xff, 0xff, 0xff, 0] },
      { opcode: 0x12, usage: [0x12, 0x01, 0xff, 0xff, 0xff, 0] },
      { opcode: 0x1a, usage: [0x1a, 0x08, 0xff, 0xff, 0xff, 0] },
      { opcode: 0x25, usage: [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0] },
      { opcode: 0x28, usage: [0x28, 0x18, ...ff(4), 0, 0xff, 0xff, 0] },
      { opcode: 0x2a, usage: [0x2a, 0x18, ...ff(4), 0, 0xff, 0xff, 0] },
      { opcode: 0x35, usage: [0x35, 0, ...ff(4), 0, 0xff, 0xff, 0] },
      { opcode: 0x5a, usage: [0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0] },
      {
        opcode: 0x7f,
        sa: 0x0012,
        usage: [0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0x00, 0x12, 0xff, 0, ...ff(20)],
      },
      { opcode: 0x88, usage: [0x88, 0x18, ...ff(12), 0, 0] },
      { opcode: 0x8a, usage: [0x8a, 0x18, ...ff(12), 0, 0] },
      { opcode: 0x91, usage: [0x91, 0, ...ff(12), 0, 0] },
      { opcode: 0x9e, sa: 0x10, usage: [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, ...ff(4), 0, 0] },
      { opcode: 0xa0, usage: [0xa0, 0, 0xff, 0, 0, 0, ...ff(4), 0, 0] },
      { opcode: 0xa3, sa: 0x0c, usage: [0xa3, 0x0c, 0x87, 0xff, 0xff, 0xff, ...ff(4), 0, 0] },
      { opcode: 0xa8, usage: [0xa8, 0x18, ...ff(8), 0, 0] },
      { opcode: 0xaa, usage: [0xaa, 0x18, ...ff(8), 0, 0] },
    ];
    if (this.profile !== 'oci')
      ops.splice(
        ops.findIndex((o) => o.opcode === 0x7f),
        1,
      );
    if (this.gls16) {
      ops.push({ opcode: 0x9e, sa: 0x12, usage: [0x9e, 0x12, ...ff(12), 0xff, 0] });
    }
    return ops.sort((a, b) => a.opcode - b.opcode || (a.sa ?? 0) - (b.sa ?? 0));
  }

  #reportOpcodes(cdb: Buffer): ScsiResult {
    const rctd = (cdb[2]! & 0x80) !== 0;
    const options = cdb[2]! & 0x07;
    const reqOp = cdb[3]!;
    const reqSa = cdb.readUInt16BE(4);
    const alloc = cdb.readUInt32BE(6);
    const timeouts = (): Buffer => {
      const t = Buffer.alloc(12);
      t.writeUInt16BE(10, 0);
      t.writeUInt32BE(30, 4); // nominal 30 s
      t.writeUInt32BE(60, 8); // recommended 60 s
      return t;
    };
    if (options === 0) {
      const descs: Buffer[] = [];
      for (const op of this.#ops) {
        const d = Buffer.alloc(8);
        d[0] = op.opcode;
        if (op.sa !== undefined) d.writeUInt16BE(op.sa, 2);
        d[5] = (op.sa !== undefined ? 0x01 : 0) | (rctd ? 0x02 : 0);
        d.writeUInt16BE(op.usage.length, 6);
        descs.push(d);
        if (rctd) descs.push(timeouts());
      }
      const body = Buffer.concat(descs);
      const head = Buffer.alloc(4);
      head.writeUInt32BE(body.length, 0);
      return good(cut(Buffer.concat([head, body]), alloc));
    }
    if (options > 3) return check(Sense.invalidField(2, 2));
    const hasSa = (op: number): boolean =>
      this.#ops.some((o) => o.opcode === op && o.sa !== undefined);
    let found: OpInfo | undefined;
    if (options === 1) {
      if (hasSa(reqOp)) return check(Sense.invalidField(3));
      found = this.#ops.find((o) => o.opcode === reqOp && o.sa === undefined);
    } else if (options === 2) {
      if (!hasSa(reqOp) && this.#ops.some((o) => o.opcode === reqOp)) {
        return check(Sense.invalidField(3));
      }
      found = this.#ops.find((o) => o.opcode === reqOp && o.sa === reqSa);
    } else {
      found = this.#ops.find((o) => o.opcode === reqOp && (o.sa === undefined || o.sa === reqSa));
    }
    const head = Buffer.alloc(4);
    if (!found) {
      head[1] = 0x01; // SUPPORT = 001b: not supported
      return good(cut(head, alloc));
    }
    head[1] = 0x03 | (rctd ? 0x80 : 0); // supported, conforming to a standard
    head.writeUInt16BE(found.usage.length, 2);
    const parts: Buffer[] = [head, Buffer.from(found.usage)];
    if (rctd) parts.push(timeouts());
    return good(cut(Buffer.concat(parts), alloc));
  }
}

/**
 * Emits the LBA status descriptors of [start, end) for a report type, in LBA order, with counts
 * split at 2^32 − 1. One provisioning state per LBA, whatever the report type (SBC-4 §5.6.2,
 * OCI's page): changed data is mapped, changed-to-zeros is deallocated, and the unchanged rest
 * (never initialised in the delta) is reported as deallocated by report type 0 and omitted by
 * report type 1 (the gaps of OCI's documented example).
 * - 0, all LBAs: mapped → status 0 "mapped or unknown", everything else → 1; equal neighbours
 *   merged, no gaps.
 * - 1, non-zero provisioning status: the changed extents, 3 (mapped) and 1 (deallocated).
 * - 2, mapped: the mapped extents (3).
 * - 3, deallocated: every LBA report type 0 reports deallocated (1) — the changed-to-zeros
 *   extents and the unchanged rest, merged.
 * - 4, anchored: nothing (a delta volume anchors nothing).
 */
export function glsDescriptors(
  map: ChangedMap,
  start: number,
  end: number,
  reportType: number,
  emit: (lba: number, blocks: number, status: number) => void,
): void {
  const put = (l: number, n: number, st: number): void => {
    while (n > 0) {
      const k = Math.min(n, 0xffffffff);
      emit(l, k, st);
      l += k;
      n -= k;
    }
  };
  if (reportType === 4 || start >= end) return;
  let i = map.firstEndingAfter(start);
  if (reportType === 0 || reportType === 3) {
    let runStart = start;
    let runStatus = -1;
    // Type 3 keeps the deallocated runs of type 0 (mapped runs are never emitted).
    const emitRun = (l: number, n: number, st: number): void => {
      if (reportType === 0 || st === STATUS_DEALLOCATED) put(l, n, st);
    };
    const add = (s: number, e: number, st: number): void => {
      if (e <= s) return;
      if (st !== runStatus) {
        if (runStatus >= 0) emitRun(runStart, s - runStart, runStatus);
        runStart = s;
        runStatus = st;
      }
    };
    let cursor = start;
    while (i < map.count && map.starts[i]! < end) {
      const s = Math.max(cursor, map.starts[i]!);
      const e = Math.min(end, map.ends[i]!);
      add(cursor, s, STATUS_DEALLOCATED);
      add(s, e, map.statuses[i] === STATUS_MAPPED ? 0 : STATUS_DEALLOCATED);
      cursor = e;
      i++;
    }
    add(cursor, end, STATUS_DEALLOCATED);
    if (runStatus >= 0) emitRun(runStart, end - runStart, runStatus);
    return;
  }
  for (; i < map.count && map.starts[i]! < end; i++) {
    const st = map.statuses[i]!;
    if (reportType === 2 && st !== STATUS_MAPPED) continue;
    const s = Math.max(start, map.starts[i]!);
    const e = Math.min(end, map.ends[i]!);
    put(s, e - s, st);
  }
}

export { SenseKey };
