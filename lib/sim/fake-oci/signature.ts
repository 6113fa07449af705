/**
 * Verification of OCI request signatures (draft-cavage-http-signatures-08 as the OCI SDK sends
 * them): `Authorization: Signature version="1",keyId="tenancy/user/fingerprint",
 * algorithm="rsa-sha256",headers="…",signature="…"`. Requires `(request-target)`, `host` and
 * `date` or `x-date` to be signed; for POST/PUT/PATCH also `x-content-sha256`, `content-length`,
 * `content-type`, and checks them against the body received. Rejects clock skew above 5 minutes.
 */
import { createHash, verify } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

export interface SignedRequest {
  method: string;
  /** Raw path and query as received. */
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export type VerifyResult = { ok: true; keyId: string } | { ok: false; reason: string };

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

export function parseAuthorization(value: string | undefined): Record<string, string> | undefined {
  if (!value?.startsWith('Signature ')) return undefined;
  const params: Record<string, string> = {};
  for (const m of value.slice('Signature '.length).matchAll(/([A-Za-z]+)="([^"]*)"/g)) {
    params[m[1] as string] = m[2] as string;
  }
  return params;
}

export function verifyOciSignature(
  req: SignedRequest,
  publicKeyFor: (keyId: string) => string | undefined,
  now = Date.now(),
  maxSkewMs = 5 * 60_000,
): VerifyResult {
  const p = parseAuthorization(header(req.headers, 'authorization'));
  if (!p) return { ok: false, reason: 'missing or non-Signature Authorization header' };
  const { keyId, algorithm, headers: names, signature } = p;
  if (!keyId || !signature || !names)
    return { ok: false, reason: 'Authorization lacks keyId, headers or signature' };
  if (p.version !== undefined && p.version !== '1')
    return { ok: false, reason: `unsupported signature version ${p.version}` };
  if ((algorithm ?? '').toLowerCase() !== 'rsa-sha256')
    return { ok: false, reason: `unsupported algorithm ${algorithm}` };
  const list = names.toLowerCase().split(/\s+/).filter(Boolean);
  const need = ['(request-target)', 'host'];
  if (BODY_METHODS.has(req.method.toUpperCase()))
    need.push('x-content-sha256', 'content-length', 'content-type');
  for (const n of need)
    if (!list.includes(n)) return { ok: false, reason: `header ${n} is not signed` };
  const dateName = list.includes('x-date') ? 'x-date' : list.includes('date') ? 'date' : undefined;
  if (!dateName) return { ok: false, reason: 'neither date nor x-date is signed' };
  const when = Date.parse(header(req.headers, dateName) ?? '');
  if (!Number.isFinite(when) || Math.abs(now - when) > maxSkewMs) {
    return { ok: false, reason: `${dateName} is missing or more than 5 minutes off` };
  }
  const lines: string[] = [];
  for (const n of list) {
    if (n === '(request-target)') {
      lines.push(`(request-target): ${req.method.toLowerCase()} ${req.url}`);
      continue;
    }
    const v = header(req.headers, n);
    if (v === undefined) return { ok: false, reason: `signed header ${n} is absent` };
    lines.push(`${n}: ${v}`);
  }
  if (list.includes('x-content-sha256')) {
    const sha = createHash('sha256').update(req.body).digest('base64');
    if (header(req.headers, 'x-content-sha256') !== sha)
      return { ok: false, reason: 'x-content-sha256 does not match the body' };
  }
  if (
    list.includes('content-length') &&
    Number(header(req.headers, 'content-length')) !== req.body.length
  ) {
    return { ok: false, reason: 'content-length does not match the body' };
  }
  const pem = publicKeyFor(keyId);
  if (!pem) return { ok: false, reason: `unknown keyId ${keyId}` };
  let good = false;
  try {
    good = verify(
      'RSA-SHA256',
      Buffer.from(lines.join('\n')),
      pem,
      Buffer.from(signature, 'base64'),
    );
  } catch {
    good = false;
  }
  return good ? { ok: true, keyId } : { ok: false, reason: 'signature does not verify' };
}
