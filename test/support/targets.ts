/**
 * Where the scanner and reader suites run: a {@link TestTarget} opens a {@link TestVolume} as a
 * device and says what it can inject. Both serve the volume from the one emulator, the
 * simulator's device server:
 * - `memory`: in process, through the memory transport;
 * - `iscsi`: behind the simulator's iSCSI target on 127.0.0.1, through the userspace initiator
 *   (`iscsi://`), as a user without root reaches a volume.
 * Cases that need the memory transport's test hook check `target.canInject`.
 */
import { type LbaStatusDevice, type OpenOptions, openDevice } from '../../lib/index.js';
import { ChangedMap } from '../../lib/sim/changed-map.js';
import { DeviceServer } from '../../lib/sim/device-server.js';
import { FaultInjector } from '../../lib/sim/faults.js';
import { IscsiTarget } from '../../lib/sim/target.js';
import { openIscsiTransport } from '../../lib/transport/iscsi.js';
import {
  createMemoryTransport,
  type MemoryTestHook,
  type MemoryTestOutcome,
} from '../../lib/transport/memory.js';
import type { ScsiTransport } from '../../lib/transport/types.js';
import { patternByte, type TestVolume } from './volume.js';

/** A volume opened on some target. */
export interface OpenedVolume {
  device: LbaStatusDevice;
  /** Every CDB the device sent, in order (copies). */
  commands: Uint8Array[];
  /** The simulator's faults for this volume (busy, unit-attention, latency, drop-connection…). */
  faults: FaultInjector;
  /** The most commands the target served at once. */
  maxInFlight(): number;
  /** Whether the device closed its transport. */
  transportClosed(): boolean;
  /**
   * Memory target only: answer the next commands with these outcomes (a transport failure, an
   * errno, a raw reply), one each, or from then on decide per command with a hook (which stays);
   * undefined where unsupported.
   */
  inject?: (...outcomes: Array<MemoryTestOutcome | MemoryTestHook>) => void;
}

export interface TestTarget {
  name: string;
  /** Whether `OpenedVolume.inject` works here (the memory transport's test hook). */
  canInject: boolean;
  /** Runs of the scanner's property test (default 300; fewer where opening a volume is slow). */
  propertyRuns?: number;
  /**
   * Whether the transport recovers a dropped connection by itself (the kernel's initiator
   * reconnects and re-issues), so a drop is not an error there.
   */
  recoversDrops?: boolean;
  /**
   * Whether BUSY never reaches the library (the kernel's SCSI midlayer requeues a BUSY
   * command, SG_IO ones included), so a BUSY fault cannot exhaust the library's retries.
   */
  absorbsBusy?: boolean;
  /**
   * Opens `volume`; `beforeOpen` sees the volume's handles before the device's first command
   * (to inject a fault into the INQUIRY probe, say).
   */
  open(
    volume: TestVolume,
    options?: OpenOptions,
    beforeOpen?: (opened: Omit<OpenedVolume, 'device'>) => void,
  ): Promise<OpenedVolume>;
}

/** The device server that serves `volume` (its runs, profile, quirks and data pattern). */
export function serverFor(volume: TestVolume): DeviceServer {
  const bs = volume.blockSize;
  const extents: Array<{ offset: number; length: number; status?: 'deallocated' }> = [];
  let cursor = 0;
  const deallocated = (lba: number, blocks: number): void => {
    if (blocks > 0) extents.push({ offset: lba * bs, length: blocks * bs, status: 'deallocated' });
  };
  for (const run of volume.runs) {
    deallocated(cursor, run.lba - cursor);
    if (run.state === 'mapped') extents.push({ offset: run.lba * bs, length: run.blocks * bs });
    if (run.state === 'deallocated') deallocated(run.lba, run.blocks);
    cursor = run.lba + run.blocks;
  }
  deallocated(cursor, volume.capacity - cursor);
  const map = ChangedMap.fromByteExtents(
    { sizeBytes: volume.capacity * bs, blockSize: bs, changeBlockSize: bs },
    extents,
  );
  return new DeviceServer({
    map,
    dataSeed: 0,
    profile: volume.profile ?? 'oci',
    ...(volume.quirks ? { quirks: volume.quirks } : {}),
    fillBlock: (out, offset, lba) => {
      for (let i = 0; i < bs; i++) out[offset + i] = patternByte(lba, i);
    },
  });
}

/** Wraps a transport to log the CDBs sent through it and whether it was closed. */
export function recording(
  inner: ScsiTransport,
  onClose?: () => Promise<void>,
): {
  transport: ScsiTransport;
  commands: Uint8Array[];
  closed: () => boolean;
  /** The most commands the device had in flight on the transport at once. */
  maxInFlight: () => number;
} {
  const commands: Uint8Array[] = [];
  let closed = false;
  let inFlight = 0;
  let maxInFlight = 0;
  const transport: ScsiTransport = {
    kind: inner.kind,
    address: inner.address,
    queueDepth: inner.queueDepth,
    sgPath: inner.sgPath,
    blockPath: inner.blockPath,
    async execute(command) {
      commands.push(command.cdb.slice());
      maxInFlight = Math.max(maxInFlight, ++inFlight);
      try {
        return await inner.execute(command);
      } finally {
        inFlight--;
      }
    },
    allocate: (length) => inner.allocate(length),
    async close() {
      closed = true;
      await inner.close();
      await onClose?.();
    },
  };
  return { transport, commands, closed: () => closed, maxInFlight: () => maxInFlight };
}

/** The memory transport: the device server in this process. */
export const memoryTarget: TestTarget = {
  name: 'memory',
  canInject: true,
  async open(volume, options = {}, beforeOpen) {
    const faults = new FaultInjector();
    const pending: Array<MemoryTestOutcome | MemoryTestHook> = [];
    const memory = createMemoryTransport(serverFor(volume), {
      faults,
      testHook: (cdb, sequence) => {
        const next = pending[0];
        if (typeof next === 'function') return next(cdb, sequence);
        return pending.shift() as MemoryTestOutcome | undefined;
      },
    });
    const { transport, commands, closed } = recording(memory);
    const opened: Omit<OpenedVolume, 'device'> = {
      commands,
      faults,
      maxInFlight: () => memory.stats.maxInFlight,
      transportClosed: closed,
      inject: (...outcomes) => pending.push(...outcomes),
    };
    beforeOpen?.(opened);
    const device = await openDevice(transport, options);
    return { ...opened, device };
  },
};

/**
 * Serves `volume` from the simulator's iSCSI target on 127.0.0.1 (no UNIT ATTENTION after
 * login), connects a transport to it with `connect(url)`, and opens the device on it, recorded.
 * The target stops when the device closes (after `cleanup`, e.g. a kernel logout).
 */
export async function openBehindSimTarget(
  volume: TestVolume,
  options: OpenOptions,
  beforeOpen: ((opened: Omit<OpenedVolume, 'device'>) => void) | undefined,
  connect: (
    url: string,
    iqn: string,
  ) => Promise<{ transport: ScsiTransport; cleanup?: () => Promise<void> }>,
): Promise<OpenedVolume> {
  const faults = new FaultInjector();
  const iqn = `iqn.2024-01.lba-status:suite-${++suiteTargets}`;
  const target = new IscsiTarget({
    device: serverFor(volume),
    faults,
    iqn,
    host: '127.0.0.1',
    port: 0,
    unitAttentionOnLogin: false,
  });
  const { port } = await target.listen();
  let connected: Awaited<ReturnType<typeof connect>>;
  try {
    connected = await connect(`iscsi://127.0.0.1:${port}/${iqn}/1`, iqn);
  } catch (error) {
    await target.close();
    throw error;
  }
  const { transport, commands, closed, maxInFlight } = recording(connected.transport, async () => {
    await connected.cleanup?.();
    await target.close();
  });
  const opened: Omit<OpenedVolume, 'device'> = {
    commands,
    faults,
    maxInFlight,
    transportClosed: closed,
  };
  beforeOpen?.(opened);
  const device = await openDevice(transport, options);
  return { ...opened, device };
}

let suiteTargets = 0;

/**
 * The simulator's iSCSI target (lib/sim/target.ts) serving the volume's device server on
 * 127.0.0.1, reached with the userspace initiator. One target per volume; it stops when the
 * device closes. No reconnect, so that commands and faults count as on the memory target.
 */
export const iscsiTarget: TestTarget = {
  name: 'iscsi',
  canInject: false,
  open: (volume, options = {}, beforeOpen) =>
    openBehindSimTarget(volume, options, beforeOpen, async (url) => ({
      transport: await openIscsiTransport(url, { reconnect: { attempts: 0 } }),
    })),
};

/** The opcode of a CDB, and the two GET LBA STATUS forms. */
export const isGls32 = (cdb: Uint8Array): boolean => cdb[0] === 0x7f;
export const isGls16 = (cdb: Uint8Array): boolean => cdb[0] === 0x9e && (cdb[1]! & 0x1f) === 0x12;
export const isRead16 = (cdb: Uint8Array): boolean => cdb[0] === 0x88;
