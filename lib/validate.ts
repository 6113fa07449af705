/**
 * Argument validation at the public boundary, in Node's vocabulary (ERR_INVALID_ARG_TYPE,
 * ERR_OUT_OF_RANGE, ERR_INVALID_ARG_VALUE). Everything below trusts its arguments.
 */

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return `type string ('${value}')`;
  if (typeof value === 'object') return `an instance of ${value.constructor?.name ?? 'Object'}`;
  return `type ${typeof value} (${String(value)})`;
}

/** A TypeError with Node's `ERR_INVALID_ARG_TYPE` code. */
export class InvalidArgTypeError extends TypeError {
  readonly code = 'ERR_INVALID_ARG_TYPE';
  constructor(name: string, expected: string, value: unknown) {
    super(`The "${name}" argument must be ${expected}. Received ${describe(value)}`);
  }
}

/** A RangeError with Node's `ERR_OUT_OF_RANGE` code. */
export class OutOfRangeError extends RangeError {
  readonly code = 'ERR_OUT_OF_RANGE';
  constructor(name: string, range: string, value: unknown) {
    super(`The value of "${name}" is out of range. It must be ${range}. Received ${String(value)}`);
  }
}

/** A TypeError with Node's `ERR_INVALID_ARG_VALUE` code. */
export class InvalidArgValueError extends TypeError {
  readonly code = 'ERR_INVALID_ARG_VALUE';
  constructor(name: string, reason: string, value: unknown) {
    super(`The argument '${name}' ${reason}. Received ${describe(value)}`);
  }
}

/** Validates an integer in [min, max] (inclusive). */
export function validateInteger(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number') throw new InvalidArgTypeError(name, 'of type number', value);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new OutOfRangeError(name, `an integer >= ${min} and <= ${max}`, value);
  }
  return value;
}

/** Validates an optional integer; returns `fallback` when `value` is undefined. */
export function optionalInteger(
  value: unknown,
  name: string,
  min: number,
  max: number,
  fallback: number,
): number {
  return value === undefined ? fallback : validateInteger(value, name, min, max);
}

/** Validates that `value` is one of `choices`. */
export function validateOneOf<T>(value: unknown, name: string, choices: readonly T[]): T {
  if (!choices.includes(value as T)) {
    throw new InvalidArgValueError(
      name,
      `must be one of: ${choices.map((c) => JSON.stringify(c)).join(', ')}`,
      value,
    );
  }
  return value as T;
}

export function validateAbortSignal(value: unknown, name: string): AbortSignal | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof AbortSignal))
    throw new InvalidArgTypeError(name, 'an instance of AbortSignal', value);
  return value;
}

export function validateFunction<T extends (...args: never[]) => unknown>(
  value: unknown,
  name: string,
): T | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'function') throw new InvalidArgTypeError(name, 'of type function', value);
  return value as T;
}

/** Rejects option keys the API does not know (catches misspellings such as `reportype`). */
export function validateOptionKeys(
  options: object | undefined,
  name: string,
  known: readonly string[],
): void {
  if (options === undefined) return;
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgTypeError(name, 'of type object', options);
  }
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new InvalidArgValueError(
        `${name}.${key}`,
        `is not a known option (known: ${known.join(', ')})`,
        (options as Record<string, unknown>)[key],
      );
    }
  }
}
