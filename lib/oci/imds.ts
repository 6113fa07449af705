/** Instance metadata service v2: "which instance am I". */
import { OciDeltaError } from './errors.js';

export interface InstanceIdentity {
  id: string;
  compartmentId: string;
  availabilityDomain: string;
  region?: string;
  displayName?: string;
}

export const DEFAULT_IMDS_URL = 'http://169.254.169.254';

export async function fetchInstanceIdentity(
  baseUrl: string = DEFAULT_IMDS_URL,
  options: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<InstanceIdentity> {
  const url = `${baseUrl.replace(/\/+$/, '')}/opc/v2/instance/`;
  const signals = [AbortSignal.timeout(options.timeoutMs ?? 5000)];
  if (options.signal) signals.push(options.signal);
  let body: unknown;
  try {
    const res = await fetch(url, {
      headers: { Authorization: 'Bearer Oracle' },
      signal: AbortSignal.any(signals),
    });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    body = await res.json();
  } catch (cause) {
    if (options.signal?.aborted) throw options.signal.reason;
    throw new OciDeltaError(
      'ERR_OCI_IMDS',
      `cannot read this instance's identity from ${url} (${(cause as Error)?.message ?? cause}); ` +
        'not on an OCI instance? Pass --instance-id (and the compartment and availability domain).',
      { cause },
    );
  }
  const b = body as Partial<InstanceIdentity> | null;
  if (
    !b ||
    typeof b.id !== 'string' ||
    typeof b.compartmentId !== 'string' ||
    typeof b.availabilityDomain !== 'string'
  ) {
    throw new OciDeltaError(
      'ERR_OCI_IMDS',
      `instance metadata from ${url} lacks id/compartmentId/availabilityDomain`,
    );
  }
  return {
    id: b.id,
    compartmentId: b.compartmentId,
    availabilityDomain: b.availabilityDomain,
    ...(typeof b.region === 'string' ? { region: b.region } : {}),
    ...(typeof b.displayName === 'string' ? { displayName: b.displayName } : {}),
  };
}
