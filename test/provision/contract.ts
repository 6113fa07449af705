/**
 * Contract every VolumeProvisioner passes. Call `provisionerContract(name, setup)` inside a test
 * file; `setup()` runs before each test and returns a fresh provisioner with its options.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isAbortError } from '../../lib/provision/errors.js';
import type { ProvisionOptions, VolumeProvisioner } from '../../lib/provision/types.js';
import { withProvisionedVolume } from '../../lib/provision/with-volume.js';

export interface ContractFixture<O extends ProvisionOptions> {
  provisioner: VolumeProvisioner<O>;
  /** Options for one provision() call (fresh object each time). */
  options(): O;
  /** What the provisioner left behind (volumes, attachments, sessions…); empty when clean. */
  leftovers(): Promise<string[]>;
  teardown?(): Promise<void>;
}

export function provisionerContract<O extends ProvisionOptions>(
  name: string,
  setup: () => Promise<ContractFixture<O>>,
): void {
  describe(`VolumeProvisioner contract: ${name}`, () => {
    let fx: ContractFixture<O>;
    beforeEach(async () => {
      fx = await setup();
    });
    afterEach(async () => {
      await fx.teardown?.();
    });

    it('provisions a device (node or iscsi:// URL) and releases it, leaving nothing behind', async () => {
      const vol = await fx.provisioner.provision(fx.options());
      expect(vol.device).toMatch(/^(\/|iscsi:\/\/[^@/]+\/[^/]+\/\d+$)/);
      expect(vol.devicePath).toMatch(/^(\/|iscsi:\/\/)/);
      if (vol.device.startsWith('iscsi:')) expect(vol.devicePath).toBe(vol.device);
      else expect([vol.devicePath, vol.sgPath]).toContain(vol.device);
      expect(vol.deviceOptions).toBeTypeOf('object');
      // deviceOptions (CHAP) never shows when a volume is logged or serialised.
      expect(Object.keys(vol)).not.toContain('deviceOptions');
      expect(JSON.stringify(vol)).not.toContain('deviceOptions');
      expect(vol.description.length).toBeGreaterThan(0);
      if (vol.sgPath !== undefined) expect(vol.sgPath).toMatch(/^\//);
      if (vol.blockSize !== undefined) expect(Number.isInteger(vol.blockSize)).toBe(true);
      await vol.release();
      expect(await fx.leftovers()).toEqual([]);
    });

    it('release is idempotent and safe to call concurrently', async () => {
      const vol = await fx.provisioner.provision(fx.options());
      await Promise.all([vol.release(), vol.release()]);
      await vol.release();
      expect(await fx.leftovers()).toEqual([]);
    });

    it('supports await using (Symbol.asyncDispose releases)', async () => {
      {
        await using vol = await fx.provisioner.provision(fx.options());
        expect(typeof vol[Symbol.asyncDispose]).toBe('function');
      }
      expect(await fx.leftovers()).toEqual([]);
    });

    it('rejects with AbortError when the signal is already aborted, leaving nothing', async () => {
      const ac = new AbortController();
      ac.abort();
      const err = await fx.provisioner.provision({ ...fx.options(), signal: ac.signal }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isAbortError(err)).toBe(true);
      expect(await fx.leftovers()).toEqual([]);
    });

    it('withProvisionedVolume releases when the work throws', async () => {
      const boom = new Error('scan failed');
      await expect(
        withProvisionedVolume(fx.provisioner, fx.options(), async () => {
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect(await fx.leftovers()).toEqual([]);
    });
  });
}
