/**
 * A fake NativeBinding that serves a model volume, for unit and property tests of the device and
 * scanner layers without a kernel. CDB builders and the parser are the real native ones (pure
 * functions); only `execute` is simulated, decoding the CDB bytes the real builders produced.
 *
 * Behaviours mirror what the references observed:
 * - 'oci': GET LBA STATUS(32) only, RTP=1, completion conditions 1/2/3, gaps for uninitialised
 *   runs under report type 1; (16) → ILLEGAL REQUEST 20h/00h.
 * - 'scsi_debug': (16) only, one descriptor per reply, statuses 0/1, RTP=0, condition 0;
 *   (32) → ILLEGAL REQUEST 24h/00h with field pointer byte 8 bit 7; < 24 bytes → no data.
 * - 'tgt': (16) only, every run to the end of the LUN, PARAMETER DATA LENGTH counts all of them,
 *   cut to the allocation length; (32) → 20h/00h.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  getBinding,
  type NativeBinding,
  type NativeCommandQueue,
  type RawSgResult,
  setBindingForTesting,
} from '../../lib/binding.js';
import { type OpenOptions, openDevice, type ScsiDevice } from '../../lib/device/device.js';

/** A run of LBAs with one provisioning state; 'uninitialised' runs are not reported under type 1. */
export interface ModelRun {
  lba: number;
  blocks: number;
  state: 'mapped' | 'deallocated' | 'uninitialised';
}

export interface ModelVolume {
  blockSize: number;
  capacity: number;
  /** Sorted, non-overlapping runs; LBAs in no run are deallocated. */
  runs: ModelRun[];
  behaviour: 'oci' | 'scsi_debug' | 'tgt';
  /** oci: descriptors start at the run start even before the requested LBA. */
  unclippedStart?: boolean;
  /** oci: descriptors run past the scan window to the run end. */
  overrunWindow?: boolean;
  /** oci: report RTP=0 and every LBA (a device that ignores the report type). */
  ignoreReportType?: boolean;
}

/** A canned outcome for the next command(s). */
export type Fault =
  | { kind: 'unit-attention' }
  | { kind: 'busy' }
  | { kind: 'task-set-full' }
  | { kind: 'not-ready' }
  | { kind: 'transport'; hostStatus: number }
  | { kind: 'errno'; errno: number }
  | { kind: 'raw'; data: Uint8Array; resid?: number };

const ILLEGAL_REQUEST = 5;

function fixedSense(
  key: number,
  asc: number,
  ascq: number,
  sks?: [number, number, number],
): Uint8Array {
  const sense = new Uint8Array(18);
  sense[0] = 0x70;
  sense[2] = key;
  sense[7] = 10;
  sense[12] = asc;
  sense[13] = ascq;
  if (sks) sense.set(sks, 15);
  return sense;
}

interface Descriptor {
  lba: number;
  blocks: number;
  status: number;
}

/** All runs (including implicit deallocated gaps) covering [0, capacity). */
export function fullRuns(volume: ModelVolume): ModelRun[] {
  const result: ModelRun[] = [];
  let cursor = 0;
  for (const run of volume.runs) {
    if (run.lba > cursor)
      result.push({ lba: cursor, blocks: run.lba - cursor, state: 'deallocated' });
    result.push(run);
    cursor = run.lba + run.blocks;
  }
  if (cursor < volume.capacity)
    result.push({ lba: cursor, blocks: volume.capacity - cursor, state: 'deallocated' });
  return result;
}

/** The changed LBAs of the model in [start, end), as merged [lba, end) ranges. */
export function modelChanged(
  volume: ModelVolume,
  start = 0,
  end = volume.capacity,
): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  for (const run of volume.runs) {
    if (run.state !== 'mapped') continue;
    const s = Math.max(start, run.lba);
    const e = Math.min(end, run.lba + run.blocks);
    if (s >= e) continue;
    const last = ranges[ranges.length - 1];
    if (last && last[1] === s) last[1] = e;
    else ranges.push([s, e]);
  }
  return ranges;
}

/** One block's content in the model: mapped blocks hold their LBA pattern, others zeros. */
export function modelBlock(volume: ModelVolume, lba: number): Uint8Array {
  const block = new Uint8Array(volume.blockSize);
  const mapped = volume.runs.some(
    (r) => r.state === 'mapped' && lba >= r.lba && lba < r.lba + r.blocks,
  );
  if (mapped) for (let i = 0; i < block.length; i++) block[i] = (lba * 31 + i * 7 + 1) & 0xff;
  return block;
}

/** The model's bytes for [lba, lba + blocks). */
export function modelData(volume: ModelVolume, lba: number, blocks: number): Uint8Array {
  const data = new Uint8Array(blocks * volume.blockSize);
  for (let i = 0; i < blocks; i++) data.set(modelBlock(volume, lba + i), i * volume.blockSize);
  return data;
}

function encodeReply(
  descriptors: Descriptor[],
  cc: number,
  rtp: number,
  total = descriptors.length,
): Uint8Array {
  const bytes = new Uint8Array(8 + 16 * descriptors.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 4 + 16 * total);
  bytes[7] = (cc << 1) | rtp;
  descriptors.forEach((d, i) => {
    view.setBigUint64(8 + 16 * i, BigInt(d.lba));
    view.setUint32(16 + 16 * i, d.blocks);
    bytes[20 + 16 * i] = d.status;
  });
  return bytes;
}

export interface FakeCall {
  cdb: Uint8Array;
  fd: number;
}

/** The fake device: the model plus a log of commands and a fault queue. */
export class FakeDevice {
  readonly calls: FakeCall[] = [];
  readonly faults: Fault[] = [];
  inFlight = 0;
  maxInFlight = 0;
  /** Inject `fault` when the command log reaches `call` commands. */
  faultAtCall: { call: number; fault: Fault } | undefined;
  /** Delay each command by this many ms (to exercise concurrency). */
  latencyMs = 0;
  constructor(public volume: ModelVolume) {}

  /** Serves one command: [status, sense, data-in bytes] or an errno/transport fault. */
  serve(
    cdb: Uint8Array,
    allocation: number,
  ): { raw: Partial<RawSgResult>; sense?: Uint8Array; data?: Uint8Array } {
    if (this.faultAtCall && this.calls.length >= this.faultAtCall.call) {
      this.faults.unshift(this.faultAtCall.fault);
      this.faultAtCall = undefined;
    }
    const fault = this.faults.shift();
    if (fault) {
      switch (fault.kind) {
        case 'unit-attention':
          return { raw: { status: 2, driverStatus: 8 }, sense: fixedSense(6, 0x29, 0) };
        case 'not-ready':
          return { raw: { status: 2, driverStatus: 8 }, sense: fixedSense(2, 0x04, 0x01) };
        case 'busy':
          return { raw: { status: 0x08 } };
        case 'task-set-full':
          return { raw: { status: 0x28 } };
        case 'transport':
          return { raw: { hostStatus: fault.hostStatus } };
        case 'errno':
          return { raw: { errno: fault.errno } };
        case 'raw':
          return {
            raw: { resid: fault.resid ?? Math.max(0, allocation - fault.data.length) },
            data: fault.data,
          };
      }
    }
    const view = new DataView(cdb.buffer, cdb.byteOffset, cdb.byteLength);
    const { volume } = this;
    const illegal = (asc: number, sks?: [number, number, number]) => ({
      raw: { status: 2, driverStatus: 8 },
      sense: fixedSense(ILLEGAL_REQUEST, asc, 0, sks),
    });
    switch (cdb[0]) {
      case 0x12: {
        if (cdb[1]! & 1) return illegal(0x24, [0xc0, 0, 2]);
        const data = new Uint8Array(36);
        data[2] = 6;
        data[4] = 31;
        data.set(Buffer.from('FAKE    ModelVolume     0001', 'latin1'), 8);
        return { raw: {}, data };
      }
      case 0x9e: {
        if ((cdb[1]! & 0x1f) === 0x10) {
          const data = new Uint8Array(32);
          const v = new DataView(data.buffer);
          v.setBigUint64(0, BigInt(volume.capacity - 1));
          v.setUint32(8, volume.blockSize);
          data[14] = 0xc0;
          return { raw: {}, data };
        }
        if ((cdb[1]! & 0x1f) !== 0x12) return illegal(0x24, [0xcf, 0, 1]);
        if (volume.behaviour === 'oci') return illegal(0x20, [0xc0, 0, 0]);
        const lba = Number(view.getBigUint64(2));
        const alloc = view.getUint32(10);
        if (lba >= volume.capacity) return illegal(0x21);
        return this.#gls16(lba, alloc);
      }
      case 0x88: {
        const lba = Number(view.getBigUint64(2));
        const blocks = view.getUint32(10);
        if (lba + blocks > volume.capacity) return illegal(0x21);
        return { raw: {}, data: modelData(volume, lba, blocks) };
      }
      case 0x7f: {
        if (view.getUint16(8) !== 0x12) return illegal(0x24, [0xcf, 0, 8]);
        if (volume.behaviour === 'scsi_debug') return illegal(0x24, [0xcf, 0, 8]);
        if (volume.behaviour === 'tgt') return illegal(0x20);
        return this.#gls32(
          Number(view.getBigUint64(12)),
          view.getUint32(20),
          view.getUint32(28),
          cdb[10]!,
        );
      }
      default:
        return illegal(0x20);
    }
  }

  #gls16(lba: number, alloc: number) {
    const { volume } = this;
    const runs = fullRuns(volume).filter((r) => r.lba + r.blocks > lba);
    const status = (r: ModelRun): number => (r.state === 'mapped' ? 0 : 1);
    if (volume.behaviour === 'scsi_debug') {
      if (alloc < 24) return { raw: { resid: alloc }, data: new Uint8Array(0) };
      // One descriptor: the run of equal state starting at lba (merging neighbours like a bitmap).
      let end = lba;
      const state = status(runs[0]!);
      for (const r of runs) {
        if (status(r) !== state) break;
        end = r.lba + r.blocks;
      }
      return { raw: {}, data: encodeReply([{ lba, blocks: end - lba, status: state }], 0, 0) };
    }
    const descriptors: Descriptor[] = runs.map((r, i) => ({
      lba: i === 0 ? lba : r.lba,
      blocks: i === 0 ? r.lba + r.blocks - lba : r.blocks,
      status: status(r),
    }));
    const full = encodeReply(descriptors, 0, 0);
    return { raw: {}, data: full.subarray(0, Math.min(alloc, full.length)) };
  }

  #gls32(lba: number, scanLength: number, alloc: number, reportType: number) {
    const { volume } = this;
    const maxWindow = Math.floor(2 ** 30 / volume.blockSize);
    if (lba >= volume.capacity)
      return { raw: { status: 2, driverStatus: 8 }, sense: fixedSense(5, 0x21, 0) };
    if (scanLength === 0 || scanLength > maxWindow) {
      return { raw: { status: 2, driverStatus: 8 }, sense: fixedSense(5, 0x24, 0, [0xc0, 0, 20]) };
    }
    const end = Math.min(volume.capacity, lba + scanLength);
    const ignore = volume.ignoreReportType === true;
    const all: Descriptor[] = [];
    for (const run of fullRuns(volume)) {
      if (run.lba + run.blocks <= lba || run.lba >= end) continue;
      let status: number;
      if (ignore || reportType === 0) status = run.state === 'mapped' ? (ignore ? 0 : 3) : 1;
      else if (run.state === 'uninitialised') continue;
      else status = run.state === 'mapped' ? 3 : 1;
      if (!ignore && reportType === 2 && status !== 3) continue;
      if (!ignore && reportType === 3 && status !== 1) continue;
      const start = volume.unclippedStart ? run.lba : Math.max(run.lba, lba);
      const stop = volume.overrunWindow
        ? run.lba + run.blocks
        : Math.min(run.lba + run.blocks, end);
      all.push({ lba: start, blocks: stop - start, status });
    }
    const fit = Math.max(0, Math.floor((alloc - 8) / 16));
    const rtp = ignore ? 0 : 1;
    if (all.length > fit) {
      const full = encodeReply(all.slice(0, fit + 1), 1, rtp, all.length);
      return { raw: {}, data: full.subarray(0, Math.min(alloc, full.length)) };
    }
    const cc = end === volume.capacity ? 3 : 2;
    return { raw: {}, data: encodeReply(all, cc, rtp) };
  }
}

/**
 * Builds a binding whose queues execute against `device`. Pure functions come from the real
 * addon.
 */
export function createFakeBinding(device: FakeDevice): NativeBinding {
  const real = getBinding();
  return {
    getLbaStatus16Cdb: real.getLbaStatus16Cdb.bind(real),
    getLbaStatus32Cdb: real.getLbaStatus32Cdb.bind(real),
    parseLbaStatus: real.parseLbaStatus.bind(real),
    allocateAligned: real.allocateAligned.bind(real),
    createSgAsyncQueue(_fd: number, depth: number): NativeCommandQueue {
      return { ...this.createCommandQueue(depth), engine: 'sg-async' };
    },
    createCommandQueue(threads: number): NativeCommandQueue {
      let closed = false;
      return {
        depth: threads,
        engine: 'threads',
        close() {
          closed = true;
        },
        async execute(fd, cdb, _direction, data, sense) {
          if (closed) throw new Error('queue closed');
          device.calls.push({ cdb: cdb.slice(), fd });
          device.inFlight++;
          device.maxInFlight = Math.max(device.maxInFlight, device.inFlight);
          try {
            await new Promise((resolve) => setTimeout(resolve, device.latencyMs));
            const length = data?.byteLength ?? 0;
            const outcome = device.serve(cdb, length);
            const bytes = outcome.data ?? new Uint8Array(0);
            if (data) data.set(bytes.subarray(0, length));
            if (outcome.sense) sense.set(outcome.sense.subarray(0, sense.length));
            return {
              errno: 0,
              status: 0,
              hostStatus: 0,
              driverStatus: 0,
              senseLength: outcome.sense?.length ?? 0,
              resid: Math.max(0, length - bytes.length),
              durationMs: 0,
              info: 0,
              ...outcome.raw,
            };
          } finally {
            device.inFlight--;
          }
        },
      };
    },
  };
}

let nodePath: string | undefined;

/** A regular file that openDevice can open read-write; the fake binding answers its SG_IO. */
export function fakeNodePath(): string {
  if (!nodePath) {
    nodePath = join(mkdtempSync(join(tmpdir(), 'lba-status-fake-')), 'fake-node');
    writeFileSync(nodePath, '');
  }
  return nodePath as string;
}

/** Installs a fake binding serving `model` (restore with setBindingForTesting(undefined)). */
export function useFakeDevice(model: ModelVolume): FakeDevice {
  const fake = new FakeDevice(model);
  setBindingForTesting(createFakeBinding(fake));
  return fake;
}

/** Installs a fake binding serving `model` and opens the fake node through it. */
export async function openFake(
  model: ModelVolume,
  options: OpenOptions = {},
): Promise<{ fake: FakeDevice; device: ScsiDevice }> {
  const fake = useFakeDevice(model);
  return { fake, device: await openDevice(fakeNodePath(), options) };
}
