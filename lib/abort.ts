/**
 * The one abort module: the `AbortError` every cancellable operation of lba-status rejects
 * with, and the helpers that make and recognise it. Node's own aborted operations reject with
 * a DOMException named `AbortError` (`code: 'ABORT_ERR'`); {@link isAbortError} accepts both, so a
 * caller checks one shape: `err.name === 'AbortError'` (or `code === 'ABORT_ERR'`).
 */
import { LbaStatusError } from './errors.js';

/** Rejection for an aborted operation, shaped like Node's AbortError; `cause` is the signal's reason. */
export class AbortError extends LbaStatusError {
  override name = 'AbortError';
  readonly code = 'ABORT_ERR';
  constructor(message = 'The operation was aborted', options?: { cause?: unknown }) {
    super(message, options);
  }
}

/**
 * The error to reject with for `signal`: its reason when that already is an {@link AbortError},
 * else a new one with the reason (Node's DOMException, a TimeoutError, anything) as `cause`.
 */
export function abortError(signal?: AbortSignal): AbortError {
  const reason: unknown = signal?.reason;
  if (reason instanceof AbortError) return reason;
  return new AbortError(undefined, { cause: reason });
}

/** Throws an {@link AbortError} (with the signal's reason as cause) if `signal` has fired. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

/**
 * The one test for "this was aborted": an {@link AbortError}, Node's own AbortError
 * (DOMException, `name === 'AbortError'`), or any lba-status error with `code: 'ABORT_ERR'`
 * (an `IscsiInitiatorError` whose command was aborted).
 */
export function isAbortError(err: unknown): err is Error {
  return (
    err instanceof Error &&
    (err.name === 'AbortError' || (err as { code?: unknown }).code === 'ABORT_ERR')
  );
}

/** Sleeps `ms`, rejecting with an `AbortError` as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(signal));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
