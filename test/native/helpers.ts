// SPDX-License-Identifier: Apache-2.0
/** Shared helpers for the native addon tests (real `.node`, no SCSI device needed). */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Package root (where binding.gyp and build/ live). */
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** `'9e 12 00 ...'` (whitespace, newlines and `#` comments allowed) → bytes. */
export function hex(text: string): Uint8Array {
  const digits = text
    .split('\n')
    .map((line) => line.replace(/#.*/, ''))
    .join(' ')
    .trim()
    .split(/\s+/)
    .filter((s) => s.length > 0);
  return Uint8Array.from(digits.map((d) => Number.parseInt(d, 16)));
}

/** Bytes → `'9e 12 00 ...'` for readable assertion diffs. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');
}

/** Copies `bytes` into a zero-filled buffer of `allocationLength` bytes (a device reply buffer). */
export function replyBuffer(bytes: Uint8Array, allocationLength: number): Uint8Array {
  const out = new Uint8Array(allocationLength);
  out.set(bytes.subarray(0, allocationLength));
  return out;
}
