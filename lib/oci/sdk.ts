/**
 * Loading and configuring the official OCI SDK (oci-core + oci-common, optional peer
 * dependencies): clients with a jittered retry policy for 429/5xx, a tuned circuit breaker, an
 * optional endpoint override, and mapping of `OciError`s to {@link OciDeltaError}s.
 */
import type * as OciCommon from 'oci-common';
import type * as OciCore from 'oci-core';
import { OciDeltaError, type OciDeltaErrorCode } from './errors.js';

export type OciCommonModule = typeof OciCommon;
export type OciCoreModule = typeof OciCore;
export interface OciSdk {
  common: OciCommonModule;
  core: OciCoreModule;
}

let loaded: Promise<OciSdk> | undefined;

/** Imports the SDK on first use; a clear error when the optional peers are not installed. */
export function loadOciSdk(): Promise<OciSdk> {
  loaded ??= (async () => {
    try {
      const [common, core] = await Promise.all([import('oci-common'), import('oci-core')]);
      // CJS packages seen from ESM: the namespace may sit under `default`.
      const c = ((common as { default?: unknown }).default ?? common) as OciCommonModule;
      const k = ((core as { default?: unknown }).default ?? core) as OciCoreModule;
      return { common: c, core: k };
    } catch (cause) {
      loaded = undefined;
      throw new OciDeltaError(
        'ERR_OCI_SDK_MISSING',
        'The OCI SDK is not installed. lba-status keeps it optional; install it next to lba-status: ' +
          'npm install oci-core oci-common',
        { cause },
      );
    }
  })();
  return loaded;
}

/** Retry policy handed to the SDK for every call (the SDK does the retrying). */
export interface RetryPolicy {
  /** Attempts per call including the first (default 8). */
  maxAttempts?: number;
  /** First backoff step (default 1000 ms); doubles each attempt, full jitter. */
  baseDelayMs?: number;
  /** Largest backoff step (default 30 000 ms). */
  maxDelayMs?: number;
}

/**
 * Circuit breaker settings (opossum, as the SDK uses it), or `false` for none. The defaults keep
 * the breaker from turning a short outage into a failed backup: it only counts transport errors
 * and retryable answers (5xx, 429, 409 IncorrectState), never 4xx answers such as the 404s a
 * deletion poll expects; and it half-opens after 5 s, well inside the retry budget (8 attempts,
 * up to 30 s apart), so retried calls get through as soon as the service is back.
 */
export interface BreakerPolicy {
  /** Per-call timeout in ms (default 120 000; the SDK default is one hour). */
  timeout?: number;
  /** Failure percentage that opens the breaker (default 80). */
  errorThresholdPercentage?: number;
  /** Calls in the rolling window before it may open (default 20). */
  volumeThreshold?: number;
  /** Time open before a trial call (default 5000 ms). */
  resetTimeout?: number;
  /** Rolling window in ms (default 60 000). */
  rollingCountTimeout?: number;
}

/** Full-jitter exponential backoff, in the SDK's DelayStrategy shape (seconds). */
export class JitteredBackoff {
  constructor(
    readonly baseDelayMs = 1000,
    readonly maxDelayMs = 30_000,
  ) {}
  /** `maxDelayInSeconds` is read by the SDK's retrier for its log line. */
  get maxDelayInSeconds(): number {
    return this.maxDelayMs / 1000;
  }
  delay(context: { attemptCount: number }): number {
    const cap = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** context.attemptCount);
    // Full jitter with a floor of half the step: spreads clients without retrying at once.
    return (cap / 2 + Math.random() * (cap / 2)) / 1000;
  }
}

/** The SDK's own retry condition (500/502/503/504, 429 TooManyRequests, 409 IncorrectState, network). */
function shouldRetry(sdk: OciSdk, e: OciCommon.OciError): boolean {
  return sdk.common.OciSdkDefaultRetryConfiguration.retryCondition(e);
}

export function retryConfiguration(
  sdk: OciSdk,
  policy: RetryPolicy = {},
): OciCommon.RetryConfiguration {
  const { common } = sdk;
  return {
    terminationStrategy: new common.MaxAttemptsTerminationStrategy(policy.maxAttempts ?? 8),
    delayStrategy: new JitteredBackoff(policy.baseDelayMs ?? 1000, policy.maxDelayMs ?? 30_000),
    retryCondition: (e: OciCommon.OciError) => shouldRetry(sdk, e),
  };
}

/** A breaker error (opossum rejection) counts as a failure only when it is worth retrying. */
function breakerErrorFilter(sdk: OciSdk) {
  return (e: { code?: string; errorObject?: OciCommon.OciError }): boolean => {
    if (e?.code) return false; // transport error: counts
    if (e?.errorObject && shouldRetry(sdk, e.errorObject)) return false;
    return true; // a definite answer (4xx): the service is up, do not count it
  };
}

export function circuitBreaker(
  sdk: OciSdk,
  policy: BreakerPolicy | false = {},
): OciCommon.CircuitBreaker {
  if (policy === false) return new sdk.common.CircuitBreaker({ disableClientCircuitBreaker: true });
  return new sdk.common.CircuitBreaker({
    timeout: policy.timeout ?? 120_000,
    errorThresholdPercentage: policy.errorThresholdPercentage ?? 80,
    volumeThreshold: policy.volumeThreshold ?? 20,
    resetTimeout: policy.resetTimeout ?? 5000,
    rollingCountTimeout: policy.rollingCountTimeout ?? 60_000,
    rollingCountBuckets: 60,
    errorFilter: breakerErrorFilter(sdk),
  });
}

/** How to authenticate and where to send requests. */
export interface OciClientOptions {
  /** An auth provider you built (config file, instance principal, simple). Wins over configFile. */
  authenticationDetailsProvider?: OciCommon.AuthenticationDetailsProvider;
  /** OCI config file (default ~/.oci/config, or $OCI_CONFIG_FILE). */
  configFile?: string;
  /** Profile in the config file (default DEFAULT). */
  profile?: string;
  /** Use instance principals (the instance's own identity) instead of a config file. */
  instancePrincipal?: boolean;
  /** Region id, e.g. `eu-paris-1` (default: the provider's). */
  region?: string;
  /** Endpoint override, e.g. `http://127.0.0.1:8443` for the fake API (the SDK appends /20160918). */
  endpoint?: string;
  retry?: RetryPolicy;
  circuitBreaker?: BreakerPolicy | false;
}

export interface OciClients {
  sdk: OciSdk;
  blockstorage: OciCore.BlockstorageClient;
  compute: OciCore.ComputeClient;
  close(): void;
}

export async function createOciClients(options: OciClientOptions = {}): Promise<OciClients> {
  const sdk = await loadOciSdk();
  const { common, core } = sdk;
  let provider = options.authenticationDetailsProvider;
  if (!provider && options.instancePrincipal) {
    await common.Region.enableInstanceMetadata?.();
    provider = await new common.InstancePrincipalsAuthenticationDetailsProviderBuilder().build();
  }
  if (!provider) {
    try {
      provider = new common.ConfigFileAuthenticationDetailsProvider(
        options.configFile,
        options.profile,
      );
    } catch (cause) {
      throw new OciDeltaError(
        'ERR_OCI_NOT_AUTHENTICATED',
        `cannot read OCI credentials from ${options.configFile ?? '~/.oci/config'} ` +
          `[${options.profile ?? 'DEFAULT'}]: ${(cause as Error)?.message ?? cause}. ` +
          'Create one with `oci setup config`, or pass --config-file/--profile.',
        { cause },
      );
    }
  }
  const configuration = (): OciCommon.ClientConfiguration => ({
    retryConfiguration: retryConfiguration(sdk, options.retry),
    circuitBreaker: circuitBreaker(sdk, options.circuitBreaker ?? {}),
  });
  const blockstorage = new core.BlockstorageClient(
    { authenticationDetailsProvider: provider },
    configuration(),
  );
  const compute = new core.ComputeClient(
    { authenticationDetailsProvider: provider },
    configuration(),
  );
  if (options.region) {
    blockstorage.regionId = options.region;
    compute.regionId = options.region;
  }
  // The endpoint must be set after construction: setting a region rewrites it.
  if (options.endpoint) {
    const base = options.endpoint.replace(/\/+$/, '').replace(/\/20160918$/, '');
    blockstorage.endpoint = base;
    compute.endpoint = base;
  }
  return {
    sdk,
    blockstorage,
    compute,
    close() {
      blockstorage.close();
      compute.close();
    },
  };
}

/** The fields of an OciError (or breaker/network error) we look at. */
export interface OciErrorLike {
  statusCode?: number;
  serviceCode?: string;
  opcRequestId?: string | null;
  message?: string;
  code?: string;
}

export function statusOf(err: unknown): number | undefined {
  const s = (err as OciErrorLike | undefined)?.statusCode;
  return typeof s === 'number' && Number.isFinite(s) && s > 0 ? s : undefined;
}

export function isNotFound(err: unknown): boolean {
  return statusOf(err) === 404;
}

/** 5xx, 429, 409 IncorrectState, or a transport error: worth trying again later. */
export function isTransient(err: unknown): boolean {
  if (err instanceof OciDeltaError) return false;
  const e = err as OciErrorLike | undefined;
  const status = statusOf(err);
  if (status === undefined) return !(err instanceof TypeError || err instanceof RangeError);
  if (status >= 500 || status === 429) return true;
  return status === 409 && e?.serviceCode === 'IncorrectState';
}

/** Wraps an SDK error into an OciDeltaError that names the operation and the request id. */
export function fromOciError(err: unknown, operation: string, resourceId?: string): OciDeltaError {
  if (err instanceof OciDeltaError) return err;
  const e = (err ?? {}) as OciErrorLike;
  const status = statusOf(err);
  let code: OciDeltaErrorCode;
  if (status === undefined) code = 'ERR_OCI_NETWORK';
  else if (status === 401) code = 'ERR_OCI_NOT_AUTHENTICATED';
  else if (status === 404) code = 'ERR_OCI_NOT_FOUND';
  else if (status === 409) code = 'ERR_OCI_CONFLICT';
  else if (status >= 500 || status === 429) code = 'ERR_OCI_SERVICE';
  else code = 'ERR_OCI_REQUEST_REJECTED';
  const hint =
    status === 401
      ? ' Check the key, fingerprint and the clock (more than 5 minutes of skew is rejected).'
      : status === 404
        ? ' The resource does not exist or your IAM policy does not let you see it.'
        : '';
  const rid = e.opcRequestId ? ` (opc-request-id ${e.opcRequestId})` : '';
  const text = (e.message ?? String(err)).split('\n')[0];
  return new OciDeltaError(
    code,
    `${operation}${resourceId ? ` ${resourceId}` : ''} failed: ${status ?? e.code ?? 'network error'} ${e.serviceCode ?? ''} ${text}${rid}.${hint}`.replace(
      /\s+/g,
      ' ',
    ),
    {
      ...(status === undefined ? {} : { httpStatus: status }),
      ...(e.serviceCode ? { serviceCode: e.serviceCode } : {}),
      ...(e.opcRequestId ? { opcRequestId: e.opcRequestId } : {}),
      operation,
      ...(resourceId ? { resourceId } : {}),
      cause: err,
    },
  );
}
