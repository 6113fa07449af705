/**
 * SimulatorProvisioner: starts a simulator target (lib/sim, an OCI delta volume emulated over
 * iSCSI on 127.0.0.1) and makes it reachable like the OCI provisioner does, without a cloud:
 * - `attach: 'iscsiadm'` (default): logs the kernel initiator in with iscsiadm and finds the disk
 *   through sysfs; release logs out, deletes the node record and stops the target;
 * - `attach: 'userspace'`: hands back `iscsi://127.0.0.1:PORT/IQN/1` for lba-status's own
 *   initiator (no root, no iscsid), with the simulator's CHAP credentials in `deviceOptions`;
 *   release stops the target.
 */

import { throwIfAborted } from '../abort.js';
import { Iscsiadm, type IscsiadmOptions, type IscsiPortalTarget } from '../oci/iscsiadm.js';
import { waitForDevice } from '../oci/sysfs.js';
import type { BlockExtent } from '../sim/changed-map.js';
import { type Simulator, type SimulatorOptions, startSimulator } from '../sim/simulator.js';
import { validateOneOf } from '../validate.js';
import { iscsiUrl, withDeviceOptions } from './device.js';
import { releaseAndRethrow, releaseOnce } from './release.js';
import type { ProvisionedVolume, ProvisionOptions, VolumeProvisioner } from './types.js';

export interface SimulatorProvisionerConfig {
  /** How this host reaches the target (default 'iscsiadm': the kernel initiator). */
  attach?: 'iscsiadm' | 'userspace';
  iscsiadm?: Iscsiadm | IscsiadmOptions;
  sysfsRoot?: string;
  devRoot?: string;
  /** How long to wait for the disk after login (default 30 s). */
  deviceTimeoutMs?: number;
  deviceIntervalMs?: number;
}

export interface SimulatorProvisionOptions extends ProvisionOptions {
  /** The simulated volume (size, changed map, change block size, faults…); host/port are chosen here. */
  simulator: Omit<SimulatorOptions, 'host' | 'port'>;
}

export interface SimulatedVolume extends ProvisionedVolume {
  readonly simulator: Simulator;
  readonly target: IscsiPortalTarget;
  /** What a correct report-type-1 scan returns (the simulator's changed map). */
  readonly expectedChangedExtents: BlockExtent[];
}

export class SimulatorProvisioner implements VolumeProvisioner<SimulatorProvisionOptions> {
  readonly kind = 'simulator';
  readonly iscsiadm: Iscsiadm;
  readonly attach: 'iscsiadm' | 'userspace';
  readonly #config: SimulatorProvisionerConfig;

  constructor(config: SimulatorProvisionerConfig = {}) {
    this.#config = config;
    this.attach = validateOneOf(config.attach ?? 'iscsiadm', 'config.attach', [
      'iscsiadm',
      'userspace',
    ] as const);
    this.iscsiadm =
      config.iscsiadm instanceof Iscsiadm ? config.iscsiadm : new Iscsiadm(config.iscsiadm);
  }

  async provision(options: SimulatorProvisionOptions): Promise<SimulatedVolume> {
    const { signal } = options;
    const progress = (step: string, phase: 'start' | 'done', detail?: string) =>
      options.onProgress?.({ step, phase, ...(detail === undefined ? {} : { detail }) });
    throwIfAborted(signal);
    let sim: Simulator | undefined;
    let target: IscsiPortalTarget | undefined;
    let nodeAttempted = false;
    let loginAttempted = false;
    const done = new Set<string>();
    const release = releaseOnce(async () => {
      const errors: unknown[] = [];
      const step = async (name: string, applies: boolean, fn: () => Promise<void>) => {
        if (done.has(name) || !applies) return;
        progress(name, 'start', target?.iqn);
        try {
          await fn();
          done.add(name);
          progress(name, 'done', target?.iqn);
        } catch (err) {
          errors.push(err);
        }
      };
      await step('logout', loginAttempted, () => this.iscsiadm.logout(target as IscsiPortalTarget));
      await step('node-delete', nodeAttempted, () =>
        this.iscsiadm.deleteNode(target as IscsiPortalTarget),
      );
      await step('stop-target', sim !== undefined, () => (sim as Simulator).close());
      if (errors.length === 1) throw errors[0];
      if (errors.length > 1)
        throw new AggregateError(errors, 'releasing the simulated volume failed');
    });
    try {
      progress('start-target', 'start');
      sim = await startSimulator({ ...options.simulator, host: '127.0.0.1', port: 0 });
      target = { iqn: sim.iqn, address: sim.host, port: sim.port };
      progress('start-target', 'done', sim.portal);
      throwIfAborted(signal);
      const chap = options.simulator.chap;
      if (this.attach === 'userspace') {
        const url = iscsiUrl(target, sim.lun);
        progress('device', 'done', url);
        return withDeviceOptions(
          {
            simulator: sim,
            target,
            expectedChangedExtents: sim.changedExtents,
            device: url,
            devicePath: url,
            blockSize: sim.blockSize,
            description: `simulated OCI delta volume ${sim.iqn} at ${url}`,
            release,
            [Symbol.asyncDispose]: release,
          },
          chap,
        );
      }
      progress('login', 'start', sim.iqn);
      nodeAttempted = true;
      await this.iscsiadm.addNode(target, chap);
      throwIfAborted(signal);
      loginAttempted = true;
      await this.iscsiadm.login(target);
      progress('login', 'done', sim.iqn);
      throwIfAborted(signal);
      progress('device', 'start', sim.iqn);
      const c = this.#config;
      const device = await waitForDevice(target, {
        timeoutMs: c.deviceTimeoutMs ?? 30_000,
        lun: sim.lun,
        ...(c.sysfsRoot ? { sysfsRoot: c.sysfsRoot } : {}),
        ...(c.devRoot ? { devRoot: c.devRoot } : {}),
        ...(c.deviceIntervalMs ? { intervalMs: c.deviceIntervalMs } : {}),
        ...(signal ? { signal } : {}),
      });
      progress('device', 'done', device.devicePath);
      return withDeviceOptions({
        simulator: sim,
        target,
        expectedChangedExtents: sim.changedExtents,
        device: device.sgPath ?? device.devicePath,
        devicePath: device.devicePath,
        ...(device.sgPath ? { sgPath: device.sgPath } : {}),
        blockSize: device.blockSize ?? sim.blockSize,
        description: `simulated OCI delta volume ${sim.iqn} at ${sim.portal} on ${device.devicePath}`,
        release,
        [Symbol.asyncDispose]: release,
      });
    } catch (err) {
      return releaseAndRethrow(err, release, signal);
    }
  }
}
