/**
 * iSCSI text key=value encoding (RFC 7143 §6): each pair is `key=value` followed by a NUL byte.
 * Keys keep their order (a Map), and a key may appear once per negotiation.
 */
import { IscsiProtocolError } from './pdu.js';

/** Encodes pairs as `key=value\0…`. */
export function encodeText(pairs: Iterable<readonly [string, string]>): Buffer {
  const parts: string[] = [];
  for (const [k, v] of pairs) {
    if (k.length === 0 || k.includes('=') || k.includes('\0') || v.includes('\0')) {
      throw new RangeError(`invalid iSCSI text key or value: ${JSON.stringify(k)}`);
    }
    parts.push(`${k}=${v}\0`);
  }
  return Buffer.from(parts.join(''), 'utf8');
}

/**
 * Decodes `key=value\0…` into ordered pairs. A trailing NUL is optional (padding bytes are
 * already excluded by the PDU reader). Repeated keys are kept (SendTargets replies repeat
 * TargetAddress); use textToMap for negotiations.
 */
export function decodeTextPairs(data: Buffer): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const s = data.toString('utf8');
  for (const item of s.split('\0')) {
    if (item.length === 0) continue;
    const eq = item.indexOf('=');
    if (eq <= 0) throw new IscsiProtocolError(`malformed iSCSI text pair ${JSON.stringify(item)}`);
    out.push([item.slice(0, eq), item.slice(eq + 1)]);
  }
  return out;
}

/** Decodes into a Map; a repeated key is a protocol error (RFC 7143 §6.1). */
export function decodeText(data: Buffer): Map<string, string> {
  const map = new Map<string, string>();
  for (const [k, v] of decodeTextPairs(data)) {
    if (map.has(k)) throw new IscsiProtocolError(`iSCSI key ${k} sent twice`);
    map.set(k, v);
  }
  return map;
}
