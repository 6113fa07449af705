/**
 * Verification of OCI request signatures (draft-cavage-http-signatures-08 as the OCI SDK sends
 * them): `Authorization: Signature version="1",keyId="tenancy/user/fingerprint",
 * algorithm="rsa-sha256",headers="…",signature="…"`. Requires `(request-target)`, `host` and
 * `date` or `x-date` to be signed; for POST/PUT/PATCH also `x-content-sha256`, `content-length`,
 * `content-type`, and checks them against the body received. Rejects clock skew above 5 minutes.
 *
 * In two steps, so that a server never reads a body it will refuse: {@link verifyOciSignatureHead}
 * checks everything the headers alone decide (the RSA signature covers only headers), then
 * {@link verifyOciSignatureBody} checks the body against the signed `x-content-sha256` and
 * `content-length`. {@link verifyOciSignature} does both.
 */
import { createHash, verify } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

export interface SignedRequestHead {
  method: string;
  /** Raw path and query as received. */
  url: string;
  headers: IncomingHttpHeaders;
}

export interface SignedRequest extends SignedRequestHead {
  body: Buffer;
}

export type VerifyResult = { ok: true; keyId: string } | { ok: false; reason: string };

/** What the body must match once it has been read (from the signed headers). */
export interface SignedBodyChecks {
  /** base64 SHA-256 of the body, when `x-content-sha256` is signed. */
  sha256?: string;
  /** Byte length of the body, when `content-length` is signed. */
  contentLength?: number;
}

export type HeadVerifyResult =
  | { ok: true; keyId: string; body: SignedBodyChecks }
  | { ok: false; reason: string };

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

/**
 * Everything the request's headers decide: the Authorization parameters, the signed header list,
 * the date, the key and the RSA signature. Reads no body.
 */
export function verifyOciSignatureHead(
  req: SignedRequestHead,
  publicKeyFor: (keyId: string) => string | undefined,
  now = Date.now(),
  maxSkewMs = 5 * 60_000,
): HeadVerifyResult {
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
  const body: SignedBodyChecks = {};
  if (list.includes('x-content-sha256'))
    body.sha256 = header(req.headers, 'x-content-sha256') as string;
  if (list.includes('content-length')) {
    const raw = header(req.headers, 'content-length') as string;
    if (!/^\d{1,15}$/.test(raw)) return { ok: false, reason: 'content-length is not a number' };
    body.contentLength = Number(raw);
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
  return good ? { ok: true, keyId, body } : { ok: false, reason: 'signature does not verify' };
}

/** The body received against what the verified headers promised. */
export function verifyOciSignatureBody(
  head: Extract<HeadVerifyResult, { ok: true }>,
  body: Buffer,
): VerifyResult {
  if (
    head.body.sha256 !== undefined &&
    createHash('sha256').update(body).digest('base64') !== head.body.sha256
  ) {
    return { ok: false, reason: 'x-content-sha256 does not match the body' };
  }
  if (head.body.contentLength !== undefined && head.body.contentLength !== body.length)
    return { ok: false, reason: 'content-length does not match the body' };
  return { ok: true, keyId: head.keyId };
}

/** Both steps, for a request whose body is already at hand. */
export function verifyOciSignature(
  req: SignedRequest,
  publicKeyFor: (keyId: string) => string | undefined,
  now = Date.now(),
  maxSkewMs = 5 * 60_000,
): VerifyResult {
  const head = verifyOciSignatureHead(req, publicKeyFor, now, maxSkewMs);
  return head.ok ? verifyOciSignatureBody(head, req.body) : head;
}
