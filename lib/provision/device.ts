/**
 * How a provisioned volume is opened: `openDevice(volume.device, { ...volume.deviceOptions, … })`.
 * `device` is a device node or an `iscsi://` URL (never with a secret); `deviceOptions` carries
 * what opening it needs that is not an address — the CHAP credentials a target demands. It is a
 * non-enumerable property, so logging or JSON-serialising a volume cannot print the secret.
 *
 * Provisioners never open the device themselves (they must not reach the native binding): the
 * caller does, and owns the session or file descriptor until it closes the device.
 */

/** CHAP credentials for an `iscsi://` device (the shape of `openDevice`'s `chap` option). */
export interface VolumeChap {
  username: string;
  secret: string;
  /** Mutual CHAP: what the target must answer with. */
  target?: { username: string; secret: string };
}

/** Options to pass to `openDevice` together with `volume.device`. */
export interface VolumeDeviceOptions {
  /** `iscsi://` devices whose target demands CHAP. */
  readonly chap?: VolumeChap;
}

/** The logical unit OCI exposes a volume attachment as (the attachment has no LUN field). */
export const OCI_VOLUME_LUN = 1;

/** `iscsi://HOST:PORT/IQN/LUN` (libiscsi's syntax; IPv6 in brackets; never a user or secret). */
export function iscsiUrl(
  target: { address: string; port: number; iqn: string },
  lun: number,
): string {
  const host = target.address.includes(':') ? `[${target.address}]` : target.address;
  return `iscsi://${host}:${target.port}/${target.iqn}/${lun}`;
}

/**
 * Returns `volume` with `deviceOptions` (CHAP when given) as a read-only, non-enumerable
 * property: `JSON.stringify`, `console.log` and object spread leave it out.
 */
export function withDeviceOptions<T extends object>(
  volume: T,
  chap?: VolumeChap,
): T & { readonly deviceOptions: VolumeDeviceOptions } {
  const options: VolumeDeviceOptions = chap ? { chap: { ...chap } } : {};
  return Object.defineProperty(volume, 'deviceOptions', {
    value: Object.freeze(options),
    enumerable: false,
    writable: false,
    configurable: false,
  }) as T & { readonly deviceOptions: VolumeDeviceOptions };
}
