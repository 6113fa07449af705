/**
 * `lba-status/sim`: a local stand-in for an OCI delta volume. A userspace iSCSI target (TypeScript,
 * no kernel module) serving a volume whose changed blocks you choose, answering GET LBA STATUS(32)
 * the way OCI documents it, with faults on demand. Log in with the kernel initiator
 * (`iscsiadm -m node -o new -T IQN -p HOST:PORT` then `--login`) or with the userspace initiator
 * exported here.
 *
 * @example
 * ```ts
 * import { startSimulator } from 'lba-status/sim';
 * await using sim = await startSimulator({
 *   sizeBytes: 1 << 30,
 *   changed: [{ offset: 1 << 20, length: 65536 }],
 * });
 * console.log(sim.portal, sim.iqn, sim.changedExtents);
 * ```
 */

export { type IscsiInitiatorErrorCode, LbaStatusError } from './errors.js';
export {
  type CommandOptions,
  /** The outcome of one command sent by {@link IscsiInitiator} (lba-status's is `CommandResult`). */
  type CommandResult as IscsiCommandResult,
  type ExecuteOptions as IscsiExecuteOptions,
  type ExecuteResult as IscsiExecuteResult,
  type InitiatorChap,
  type InitiatorOptions,
  IscsiInitiator,
  IscsiInitiatorError,
} from './iscsi/initiator.js';
export { blockData, fillBlockData } from './sim/block-data.js';
export {
  type BlockExtent,
  type ByteExtent,
  ChangedMap,
  type ExtentState,
  RANDOM_MAX_GAP_BYTES,
  type RandomChangesOptions,
  type RandomMapOptions,
  randomByteExtents,
  type VolumeGeometry,
} from './sim/changed-map.js';
export {
  DEVICE_PROFILES,
  type DeviceProfile,
  DeviceServer,
  type DeviceServerOptions,
  type FaultAction,
  type GlsMalformation,
  type GlsQuirks,
  NexusState,
  type ScsiRequest,
  type ScsiResult,
  VOLUME_LUN,
} from './sim/device-server.js';
export { type FakeOciCredentials, fakeOcid } from './sim/fake-oci/credentials.js';
export {
  type OciSimulation,
  type OciSimulationInfo,
  type OciSimulationOptions,
  startOciSimulation,
} from './sim/fake-oci/oci-simulation.js';
export {
  type AttachTarget,
  type AttachTargetContext,
  DEFAULT_MAX_ATTACHMENTS_PER_INSTANCE,
  FAKE_OCI_LIMITS,
  type FakeBackup,
  type FakeInstance,
  FakeOciApi,
  type FakeOciApiOptions,
  type FakeOciDelays,
  type FakeOciLimits,
  type FakeOperation,
  type FakeRequestLog,
  type OciFaultSpec,
  startFakeOciApi,
} from './sim/fake-oci/server.js';
export {
  FAULT_KINDS,
  FAULT_TARGETS,
  type FaultDecision,
  FaultInjector,
  type FaultKind,
  type FaultSpec,
  type FaultTarget,
  parseFault,
} from './sim/faults.js';
export {
  buildChangedMap,
  changedByteExtents,
  DEFAULT_CHANGE_BLOCK_SIZE,
  DEFAULT_IQN,
  expectedChangedExtents,
  type RandomChanges,
  type Simulator,
  type SimulatorOptions,
  startSimulator,
} from './sim/simulator.js';
export {
  IscsiTarget,
  type TargetLimits,
  type TargetOptions,
  type TargetStats,
} from './sim/target.js';
export {
  createMemoryTransport,
  type MemoryTestHook,
  type MemoryTestOutcome,
  type MemoryTransport,
  type MemoryTransportOptions,
  type MemoryTransportStats,
} from './transport/memory.js';
