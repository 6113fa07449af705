import { abortError } from '../abort.js';
import type { ProvisionedVolume, ProvisionOptions, VolumeProvisioner } from './types.js';

/**
 * Provisions a volume, runs `fn` with it and releases it whatever happens (success, error, abort).
 * When both `fn` and the release fail, rejects with an AggregateError holding both (the work error
 * first); a release failure alone rejects with that error.
 */
export async function withProvisionedVolume<O extends ProvisionOptions, T>(
  provisioner: VolumeProvisioner<O>,
  options: O,
  fn: (volume: ProvisionedVolume, signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const volume = await provisioner.provision(options);
  const controller = new AbortController();
  const outer = options.signal;
  const onAbort = () => controller.abort(outer?.reason ?? abortError(outer));
  outer?.addEventListener('abort', onAbort, { once: true });
  if (outer?.aborted) onAbort();
  let result: T;
  try {
    result = await fn(volume, controller.signal);
  } catch (workError) {
    try {
      await volume.release();
    } catch (releaseError) {
      throw new AggregateError(
        [workError, releaseError],
        `${errorMessage(workError)}; releasing ${volume.description} also failed: ${errorMessage(releaseError)}`,
      );
    }
    throw workError;
  } finally {
    outer?.removeEventListener('abort', onAbort);
  }
  await volume.release();
  return result;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export type { ProvisionedVolume };
