import { abortError, isAbortError } from '../abort.js';

/**
 * Idempotent release: concurrent calls share one run; after success every call resolves at once;
 * after a failure the next call runs again (the function skips the steps it already finished).
 */
export function releaseOnce(run: () => Promise<void>): () => Promise<void> {
  let inFlight: Promise<void> | undefined;
  let done = false;
  return () => {
    if (done) return Promise.resolve();
    if (inFlight) return inFlight;
    inFlight = (async () => {
      try {
        await run();
        done = true;
      } finally {
        inFlight = undefined;
      }
    })();
    return inFlight;
  };
}

/**
 * Undoes a half-made provision after `error`: runs `release`, then rethrows the error that
 * matters (the abort when the signal fired), joined with the cleanup failure if there is one.
 */
export async function releaseAndRethrow(
  error: unknown,
  release: () => Promise<void>,
  signal?: AbortSignal,
): Promise<never> {
  const primary = signal?.aborted && !isAbortError(error) ? abortError(signal) : error;
  try {
    await release();
  } catch (releaseError) {
    throw new AggregateError(
      [primary, releaseError],
      `${(primary as Error)?.message ?? primary}; cleanup also failed: ${(releaseError as Error)?.message}`,
    );
  }
  throw primary;
}
