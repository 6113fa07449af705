/**
 * The provisioner contract: something that makes a block device reachable from this host (an OCI
 * delta volume attached over iSCSI, a simulator target, a disk you already have) and takes it
 * away again. Provisioners never touch the native binding: they hand back a device — a device
 * node, or an `iscsi://` URL for lba-status's userspace initiator — and the options to open it
 * with: `openDevice(volume.device, { ...volume.deviceOptions, queueDepth: 4 })`.
 */
import type { VolumeDeviceOptions } from './device.js';

/** Options every provisioner accepts. */
export interface ProvisionOptions {
  /**
   * Aborts provisioning. Whatever was created before the abort is released before `provision()`
   * rejects with an `AbortError`. It does not release an already returned volume: the caller's
   * `await using` / `finally` (or {@link withProvisionedVolume}) does that.
   */
  signal?: AbortSignal;
  /** Progress of the steps, for humans (stderr). Never carries secrets. */
  onProgress?: (event: ProvisionProgress) => void;
}

/** One step of provisioning or release, for progress output. */
export interface ProvisionProgress {
  /** Stable step name, e.g. `create`, `wait-available`, `attach`, `login`, `device`, `logout`. */
  step: string;
  /** `start`, `done`, or `skip` (nothing to do). */
  phase: 'start' | 'done' | 'skip';
  /** Human-readable detail (resource id, device path). */
  detail?: string;
}

/** A device made available by a provisioner. Release it exactly once (further calls are no-ops). */
export interface ProvisionedVolume extends AsyncDisposable {
  /**
   * What to open: the sg node when known, else the block node, or an `iscsi://HOST:PORT/IQN/LUN`
   * URL when the volume is reached by the userspace initiator. Never contains a secret.
   */
  readonly device: string;
  /**
   * What `openDevice(device, …)` needs besides your own options: CHAP credentials when the
   * target demands them (else empty). Non-enumerable, so logging or serialising the volume
   * leaves the secret out; do not log it yourself. For an `iscsi://` device the session belongs
   * to whoever opens it: close the device before `release()`.
   */
  readonly deviceOptions: VolumeDeviceOptions;
  /** Block device node, e.g. `/dev/sdc`; for an `iscsi://` device the same URL as `device`. */
  readonly devicePath: string;
  /** Matching SCSI generic node, e.g. `/dev/sg2`, when known. */
  readonly sgPath?: string;
  /** Logical block size in bytes, when known before opening the device. */
  readonly blockSize?: number;
  /** One line saying what this is (for logs), e.g. `OCI delta volume ocid1.volume… on /dev/sdc`. */
  readonly description: string;
  /**
   * Undo everything provisioning did, in reverse order. Idempotent and safe to call concurrently:
   * every call returns the same settled outcome once cleanup finished; after a failed release a
   * new call retries only the steps that did not complete. Not abortable (cleanup must finish).
   */
  release(): Promise<void>;
  /** Same as {@link release}; lets callers write `await using vol = await p.provision(...)`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Makes a device available. `O` carries the provisioner-specific options. */
export interface VolumeProvisioner<O extends ProvisionOptions = ProvisionOptions> {
  /** Short name for logs, e.g. `oci-delta`, `attached`. */
  readonly kind: string;
  provision(options: O): Promise<ProvisionedVolume>;
}
