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
