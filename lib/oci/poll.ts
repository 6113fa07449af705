/**
 * Our own lifecycle poller (the SDK waiters are not abortable and mishandle 404 while waiting for
 * TERMINATED): explicit deadline, AbortSignal, backoff, transient errors tolerated until the
 * deadline, 404 mapped to "gone" when asked.
 */
import { abortError, sleep } from '../abort.js';
import { OciDeltaError } from './errors.js';
import { fromOciError, isNotFound, isTransient } from './sdk.js';

export interface PollTiming {
  /** First delay between polls (default 1000 ms); doubles up to maxIntervalMs. */
  intervalMs?: number;
  /** Largest delay between polls (default 10 000 ms). */
  maxIntervalMs?: number;
  /** Give up after this long (default 20 min). */
  timeoutMs?: number;
}

export interface PollOptions<T> extends PollTiming {
  /** What we wait for, for messages: "volume ocid… to become AVAILABLE". */
  what: string;
  operation: string;
  resourceId: string;
  get: () => Promise<T>;
  /** 'done' ends the wait, 'fail' throws ERR_OCI_LIFECYCLE, 'wait' polls again. */
  check: (value: T) => 'done' | 'wait' | 'fail';
  /** Describe a value for the failure message (e.g. its lifecycle state). */
  describe: (value: T) => string;
  /** Return null on 404 (the resource is gone) instead of failing. */
  notFoundIsDone?: boolean;
  signal?: AbortSignal;
}

export async function pollUntil<T>(o: PollOptions<T>): Promise<T | null> {
  const timeoutMs = o.timeoutMs ?? 20 * 60_000;
  const deadline = Date.now() + timeoutMs;
  let interval = o.intervalMs ?? 1000;
  const maxInterval = o.maxIntervalMs ?? 10_000;
  let last = 'no answer yet';
  for (;;) {
    if (o.signal?.aborted) throw abortError(o.signal);
    try {
      const value = await o.get();
      const verdict = o.check(value);
      last = o.describe(value);
      if (verdict === 'done') return value;
      if (verdict === 'fail') {
        throw new OciDeltaError('ERR_OCI_LIFECYCLE', `${o.what}: it is ${last} instead`, {
          operation: o.operation,
          resourceId: o.resourceId,
        });
      }
    } catch (err) {
      if (err instanceof OciDeltaError) throw err;
      if (o.notFoundIsDone && isNotFound(err)) return null;
      if (!isTransient(err)) throw fromOciError(err, o.operation, o.resourceId);
      last = `error ${(err as { statusCode?: number }).statusCode ?? (err as Error).message}`;
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new OciDeltaError(
        'ERR_OCI_TIMEOUT',
        `timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${o.what} (last: ${last})`,
        { operation: o.operation, resourceId: o.resourceId },
      );
    }
    await sleep(Math.min(interval, left), o.signal);
    interval = Math.min(interval * 2, maxInterval);
  }
}
