/**
 * The fake OCI API wired to simulator targets. The two fake backups (block or boot) differ by one
 * set of changed byte ranges — `changed`, or the seeded random draw, made once here in bytes —
 * stored with the second backup. Every iSCSI attachment of a delta volume starts a simulator
 * (lib/sim) that serves that byte set widened to the delta's changeBlockSizeInBytes and merged,
 * so deltas at any two change block sizes describe the same changes; detaching stops it. This is what `lba-status sim serve --oci-api` runs, so that
 * `lba-status oci delta` works end to end on one machine.
 *
 * A fleet: `instances` instances (each with its own attachment limit, `maxAttachmentsPerInstance`),
 * and `volumeThroughputBytesPerSec` caps each delta volume's read bandwidth like a volume
 * performance level, so that adding workers measurably adds throughput on a small machine.
 */
import { join } from 'node:path';
import { type BlockExtent, type ByteExtent, ChangedMap } from '../changed-map.js';
import {
  changedByteExtents,
  type Simulator,
  type SimulatorOptions,
  startSimulator,
} from '../simulator.js';
import type { FakeOciCredentials } from './credentials.js';
import { type AttachTargetContext, FakeOciApi, type FakeOciDelays } from './server.js';

export interface OciSimulationOptions {
  /** Directory for the OCI config file and private key (created, mode 0700). */
  dir: string;
  /** Port of the fake API (default 0: any free port). */
  apiPort?: number;
  /** Size of the source volume in bytes, a multiple of 1 MiB (default 1 GiB). */
  sizeBytes?: number;
  blockSize?: 512 | 4096;
  /**
   * What changed between the two fake backups: byte ranges, or a random draw (made once, in
   * bytes). A delta at change block size C serves it widened to C.
   */
  changed?: SimulatorOptions['changed'];
  dataSeed?: number;
  /** Address the simulator targets listen on and the attachments advertise (default 127.0.0.1). */
  targetHost?: string;
  /** Attachments require CHAP with a generated secret (default false, like useChap: false). */
  chap?: boolean;
  delays?: FakeOciDelays;
  /** Faults every simulator target starts with (e.g. latency to catch a scan mid-way). */
  faults?: SimulatorOptions['faults'];
  /** Boot volume backups instead of block volume backups. */
  boot?: boolean;
  /** Instances in the tenancy (default 1): workers of a fleet attach to their own. */
  instances?: number;
  /** Attachments one instance may hold (default 32); one more gets 400 LimitExceeded. */
  maxAttachmentsPerInstance?: number;
  /**
   * Read bandwidth of each delta volume in bytes per second, shared by the connections to it
   * (default unlimited), like a volume performance level.
   */
  volumeThroughputBytesPerSec?: number;
  log?: (line: string) => void;
}

export interface OciSimulationInfo {
  endpoint: string;
  configFile: string;
  profile: string;
  /** The first instance. */
  instanceId: string;
  /** Every instance, the first one first. */
  instanceIds: string[];
  compartmentId: string;
  availabilityDomain: string;
  firstBackupId: string;
  secondBackupId: string;
}

export interface OciSimulation extends AsyncDisposable {
  api: FakeOciApi;
  credentials: FakeOciCredentials;
  /** The object for sim serve's ready line (`"oci":{…}`). */
  info: OciSimulationInfo;
  /** Running simulator targets by attachment id. */
  simulators: ReadonlyMap<string, Simulator>;
  /** The byte ranges the two backups differ by (before widening to a change block size). */
  changedBytes: ByteExtent[];
  /**
   * The extents a delta at this change block size serves (report type 1): changedBytes widened
   * to it and merged.
   */
  expectedChangedExtents(changeBlockSize?: number): BlockExtent[];
  close(): Promise<void>;
}

/** What the second fake backup carries: the byte ranges written since the first. */
interface Payload {
  changed?: ByteExtent[];
  dataSeed?: number;
  blockSize?: 512 | 4096;
}

export async function startOciSimulation(options: OciSimulationOptions): Promise<OciSimulation> {
  const sizeBytes = options.sizeBytes ?? 2 ** 30;
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % 2 ** 20 !== 0) {
    throw new RangeError(`sizeBytes must be a positive multiple of 1 MiB; got ${sizeBytes}`);
  }
  const blockSize = options.blockSize ?? 512;
  // The one set of changed bytes both backups differ by, drawn once (validated here, against
  // the source volume, so that a bad range fails at start and not at the first attachment).
  const changedBytes = changedByteExtents({
    sizeBytes,
    blockSize,
    ...(options.changed === undefined ? {} : { changed: options.changed }),
  });
  ChangedMap.fromByteExtents({ sizeBytes, blockSize, changeBlockSize: blockSize }, changedBytes);
  // As startSimulator: block data from the random draw's seed unless dataSeed says otherwise.
  const changed = options.changed;
  const dataSeed =
    options.dataSeed ??
    (changed && !Array.isArray(changed) ? (changed as { seed: number }).seed : undefined);
  const simulators = new Map<string, Simulator>();
  const host = options.targetHost ?? '127.0.0.1';
  const log = options.log;
  const instanceCount = options.instances ?? 1;
  if (!Number.isSafeInteger(instanceCount) || instanceCount < 1 || instanceCount > 1000)
    throw new RangeError(`instances must be an integer in 1..1000; got ${String(instanceCount)}`);
  const throughput = options.volumeThroughputBytesPerSec;
  if (throughput !== undefined && !(Number.isFinite(throughput) && throughput > 0))
    throw new RangeError(
      `volumeThroughputBytesPerSec must be a positive number; got ${String(throughput)}`,
    );
  const api = new FakeOciApi({
    ...(options.maxAttachmentsPerInstance === undefined
      ? {}
      : { maxAttachmentsPerInstance: options.maxAttachmentsPerInstance }),
    ...(options.apiPort === undefined ? {} : { port: options.apiPort }),
    ...(options.delays ? { delays: options.delays } : {}),
    attachTarget: async (ctx: AttachTargetContext) => {
      const p = (ctx.secondBackup.payload ?? {}) as Payload;
      const suffix = ctx.attachmentId.slice(-12);
      const simOptions: SimulatorOptions = {
        sizeBytes: ctx.volume.sizeInMBs * 2 ** 20,
        changeBlockSize: ctx.changeBlockSize,
        host,
        port: 0,
        iqn: `iqn.2015-12.com.oracleiaas:${suffix}`,
        ...(p.blockSize ? { blockSize: p.blockSize } : {}),
        ...(p.changed === undefined ? {} : { changed: p.changed.map((e) => ({ ...e })) }),
        ...(p.dataSeed === undefined ? {} : { dataSeed: p.dataSeed }),
        ...(options.chap
          ? {
              chap: {
                username: ctx.volume.id,
                secret: `chap-${suffix}-${Math.random().toString(36).slice(2)}`,
              },
            }
          : {}),
        ...(options.faults ? { faults: options.faults } : {}),
        ...(throughput === undefined ? {} : { readBytesPerSecond: throughput }),
        ...(log ? { log } : {}),
      };
      const sim = await startSimulator(simOptions);
      simulators.set(ctx.attachmentId, sim);
      log?.(`fake-oci: attachment ${ctx.attachmentId} → simulator ${sim.iqn} at ${sim.portal}`);
      return {
        ipv4: host,
        port: sim.port,
        iqn: sim.iqn,
        ...(simOptions.chap ? { chap: simOptions.chap } : {}),
      };
    },
    detachTarget: async (ctx) => {
      const sim = simulators.get(ctx.attachmentId);
      simulators.delete(ctx.attachmentId);
      if (sim) {
        log?.(`fake-oci: attachment ${ctx.attachmentId} detached, simulator ${sim.iqn} stopped`);
        await sim.close();
      }
    },
  });
  for (let i = 1; i < instanceCount; i++)
    api.addInstance({ displayName: `fake-instance-${i + 1}` });
  await api.start();
  try {
    const credentials = await api.createCredentials(join(options.dir, 'oci'));
    const payload: Payload = {
      changed: changedBytes,
      ...(dataSeed === undefined ? {} : { dataSeed }),
      ...(options.blockSize ? { blockSize: options.blockSize } : {}),
    };
    const t = Date.now() - 2 * 3_600_000;
    const kind = options.boot ? 'boot' : 'block';
    const sizeInMBs = sizeBytes / 2 ** 20;
    const sizeInGBs = Math.max(1, Math.ceil(sizeBytes / 2 ** 30));
    const first = api.addBackup({
      kind,
      type: 'FULL',
      sizeInGBs,
      sizeInMBs,
      timeCreated: new Date(t).toISOString(),
      displayName: 'sim-first',
    });
    const second = api.addBackup({
      kind,
      volumeId: first.volumeId,
      type: 'INCREMENTAL',
      sizeInGBs,
      sizeInMBs,
      timeCreated: new Date(t + 3_600_000).toISOString(),
      displayName: 'sim-second',
      payload,
    });
    const info: OciSimulationInfo = {
      endpoint: api.endpoint,
      configFile: credentials.configFile as string,
      profile: credentials.profile ?? 'DEFAULT',
      instanceId: api.instance.id,
      instanceIds: api.instances().map((i) => i.id),
      compartmentId: api.compartmentId,
      availabilityDomain: api.availabilityDomain,
      firstBackupId: first.id,
      secondBackupId: second.id,
    };
    const close = async () => {
      for (const sim of simulators.values()) await sim.close().catch(() => undefined);
      simulators.clear();
      await api.close();
    };
    return {
      api,
      credentials,
      info,
      simulators,
      changedBytes: changedBytes.map((e) => ({ ...e })),
      expectedChangedExtents: (changeBlockSize = 4096) =>
        ChangedMap.fromByteExtents(
          { sizeBytes, blockSize, changeBlockSize },
          changedBytes,
        ).extents(),
      close,
      [Symbol.asyncDispose]: close,
    };
  } catch (err) {
    await api.close();
    throw err;
  }
}
