/**
 * startSimulator(): an OCI delta volume served over iSCSI on a local TCP port.
 */
import { validateOptionKeys } from '../validate.js';
import {
  type BlockExtent,
  type ByteExtent,
  ChangedMap,
  type RandomChangesOptions,
  randomByteExtents,
  type VolumeGeometry,
} from './changed-map.js';
import { DeviceServer, VOLUME_LUN } from './device-server.js';
import { FaultInjector, type FaultSpec } from './faults.js';
import { IscsiTarget, resolveTargetLimits, type TargetLimits, type TargetStats } from './target.js';

export const DEFAULT_IQN = 'iqn.2024-01.lba-status:sim';
export const DEFAULT_CHANGE_BLOCK_SIZE = 4096;

/** A reproducible random set of changed byte ranges: `random` ranges, see randomByteExtents. */
export type RandomChanges = { random: number } & Omit<RandomChangesOptions, 'count'>;

export interface SimulatorOptions {
  /** Volume size in bytes (a multiple of blockSize). */
  sizeBytes: number;
  /** Logical block size (default 512, like OCI volumes). */
  blockSize?: 512 | 4096;
  /** Change-tracking granularity in bytes (default 4096; OCI allows 4 KiB – 1 MiB). */
  changeBlockSize?: number;
  /**
   * What changed between the two backups: byte ranges, or a reproducible random set of byte
   * ranges (drawn once, in bytes, whatever the change block size). The volume serves them
   * widened outward to whole change blocks and merged. Default: nothing changed.
   */
  changed?: readonly ByteExtent[] | RandomChanges;
  /** Seed of the data returned for changed blocks (default: the random-map seed, else 0). */
  dataSeed?: number;
  /** Listen address (default 127.0.0.1). */
  host?: string;
  /** TCP port (default 0: any free port; the CLI defaults to 3260). */
  port?: number;
  /** Target IQN (default iqn.2024-01.lba-status:sim). */
  iqn?: string;
  /** Answer GET LBA STATUS(16) too (default false: ILLEGAL REQUEST 20h/00h like OCI). */
  gls16?: boolean;
  /** Require CHAP with these credentials. */
  chap?: { username: string; secret: string };
  /** Faults active from the start (more can be added with `faults.add`). */
  faults?: readonly FaultSpec[];
  /** UNIT ATTENTION 29h/00h on the first command of each new session (default true). */
  unitAttentionOnLogin?: boolean;
  /** MAXIMUM TRANSFER LENGTH in bytes for READ (default 4 MiB). */
  maxTransferBytes?: number;
  /**
   * The iSCSI target's resource limits: connections, sessions, login PDUs, text and time, the
   * MaxRecvDataSegmentLength it declares, reply bytes queued per connection (see TargetLimits).
   */
  limits?: Partial<TargetLimits>;
  /**
   * Read bandwidth of the volume in bytes per second, shared by every connection (like a volume
   * performance level; default unlimited). READ replies wait until their bytes fit.
   */
  readBytesPerSecond?: number;
  /** Diagnostic log sink (one line per event). */
  log?: (line: string) => void;
}

export interface Simulator {
  /** `host:port` to give to `iscsiadm -p`. */
  portal: string;
  host: string;
  port: number;
  iqn: string;
  /** The LUN of the volume (always 1, like OCI). */
  lun: number;
  blockSize: number;
  sizeBytes: number;
  capacityBlocks: number;
  changeBlockSize: number;
  dataSeed: number;
  /** The changed byte ranges (before widening): `changed`, or the random draw. */
  changedBytes: ByteExtent[];
  /** The changed extents served, in blocks (changedBytes widened to the change block size). */
  changedExtents: BlockExtent[];
  map: ChangedMap;
  faults: FaultInjector;
  device: DeviceServer;
  stats: TargetStats;
  /** Sessions currently logged in. */
  readonly sessions: number;
  /** TCP connections open to the target (login phase included). */
  readonly connections: number;
  /** Drops every TCP connection (sessions may come back through recovery). */
  dropConnections(): void;
  /** Stops listening and ends every session. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const optionKeys = [
  'sizeBytes',
  'blockSize',
  'changeBlockSize',
  'changed',
  'dataSeed',
  'host',
  'port',
  'iqn',
  'gls16',
  'chap',
  'faults',
  'unitAttentionOnLogin',
  'maxTransferBytes',
  'log',
  'limits',
  'readBytesPerSecond',
] as const;

/**
 * The changed byte ranges of these options, before widening: `changed` itself, or the random
 * draw (which depends on the size, block size, count and seed, never on the change block size).
 */
export function changedByteExtents(
  opts: Pick<SimulatorOptions, 'sizeBytes' | 'blockSize' | 'changed'>,
): ByteExtent[] {
  const changed = opts.changed ?? [];
  if (Array.isArray(changed)) return changed.map((e: ByteExtent) => ({ ...e }));
  const r = changed as RandomChanges;
  const ro: RandomChangesOptions = { count: r.random, seed: r.seed };
  if (r.maxExtentBlocks !== undefined) ro.maxExtentBlocks = r.maxExtentBlocks;
  if (r.maxExtentChangeBlocks !== undefined) ro.maxExtentChangeBlocks = r.maxExtentChangeBlocks;
  if (r.deallocatedRatio !== undefined) ro.deallocatedRatio = r.deallocatedRatio;
  return randomByteExtents(opts.sizeBytes, opts.blockSize ?? 512, ro);
}

/**
 * Builds the changed map a simulator with these options serves (without starting it): the
 * changed byte ranges widened to the change block size and merged.
 */
export function buildChangedMap(
  opts: Pick<SimulatorOptions, 'sizeBytes' | 'blockSize' | 'changeBlockSize' | 'changed'>,
): ChangedMap {
  const g: VolumeGeometry = {
    sizeBytes: opts.sizeBytes,
    blockSize: opts.blockSize ?? 512,
    changeBlockSize: opts.changeBlockSize ?? DEFAULT_CHANGE_BLOCK_SIZE,
  };
  return ChangedMap.fromByteExtents(g, changedByteExtents(opts));
}

/**
 * The extents a correct scan with report type 1 returns for this map: changed extents in blocks,
 * change-block aligned, with status 3 (mapped) or 1 (deallocated).
 */
export function expectedChangedExtents(
  opts: Pick<SimulatorOptions, 'sizeBytes' | 'blockSize' | 'changeBlockSize' | 'changed'>,
): BlockExtent[] {
  return buildChangedMap(opts).extents();
}

/** Starts a simulator; resolves once it listens. */
export async function startSimulator(options: SimulatorOptions): Promise<Simulator> {
  if (options === null || typeof options !== 'object') {
    throw new TypeError('startSimulator(options): options must be an object');
  }
  validateOptionKeys(options as unknown as Record<string, unknown>, 'options', optionKeys);
  if (options.limits !== undefined) resolveTargetLimits(options.limits); // RangeError early
  const changedBytes = changedByteExtents(options);
  const map = ChangedMap.fromByteExtents(
    {
      sizeBytes: options.sizeBytes,
      blockSize: options.blockSize ?? 512,
      changeBlockSize: options.changeBlockSize ?? DEFAULT_CHANGE_BLOCK_SIZE,
    },
    changedBytes,
  );
  const changed = options.changed;
  const dataSeed =
    options.dataSeed ??
    (changed && !Array.isArray(changed) ? (changed as { seed: number }).seed : 0);
  const iqn = options.iqn ?? DEFAULT_IQN;
  if (!/^(iqn\.\d{4}-\d{2}\.[^\s]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$/.test(iqn)) {
    throw new RangeError(`iqn must be an iSCSI name such as ${DEFAULT_IQN}; got ${iqn}`);
  }
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`port must be 0..65535; got ${port}`);
  }
  const devOpts: ConstructorParameters<typeof DeviceServer>[0] = {
    map,
    dataSeed,
    gls16: options.gls16 ?? false,
    identity: iqn,
    targetName: iqn,
  };
  if (options.maxTransferBytes !== undefined) devOpts.maxTransferBytes = options.maxTransferBytes;
  const device = new DeviceServer(devOpts);
  const faults = new FaultInjector(options.faults ?? []);
  const targetOpts: ConstructorParameters<typeof IscsiTarget>[0] = {
    device,
    faults,
    iqn,
    host,
    port,
    unitAttentionOnLogin: options.unitAttentionOnLogin ?? true,
  };
  if (options.chap) targetOpts.chap = options.chap;
  if (options.log) targetOpts.log = options.log;
  if (options.limits !== undefined) targetOpts.limits = options.limits;
  if (options.readBytesPerSecond !== undefined)
    targetOpts.readBytesPerSecond = options.readBytesPerSecond;
  const target = new IscsiTarget(targetOpts);
  const addr = await target.listen();
  const portalHost = addr.host.includes(':') ? `[${addr.host}]` : addr.host;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= target.close();
    return closing;
  };
  return {
    portal: `${portalHost}:${addr.port}`,
    host: addr.host,
    port: addr.port,
    iqn,
    lun: VOLUME_LUN,
    blockSize: map.blockSize,
    sizeBytes: map.sizeBytes,
    capacityBlocks: map.capacityBlocks,
    changeBlockSize: map.changeBlockSize,
    dataSeed,
    changedBytes,
    changedExtents: map.extents(),
    map,
    faults,
    device,
    stats: target.stats,
    get sessions() {
      return target.sessionCount;
    },
    get connections() {
      return target.connectionCount;
    },
    dropConnections: () => target.dropConnections(),
    close,
    [Symbol.asyncDispose]: close,
  };
}
