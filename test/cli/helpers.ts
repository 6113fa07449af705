/** Helpers of the CLI tests: captured io, and expected changed sets computed by the test itself. */
import { PassThrough } from 'node:stream';
import type { CliIo } from '../../lib/cli/command.js';

export type TestIo = CliIo & { out(): string; err(): string; abort(): void };

/** A CliIo whose stdout/stderr are captured (not terminals) with the given environment. */
export function makeIo(env: NodeJS.ProcessEnv = {}): TestIo {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => {
    out += String(d);
  });
  stderr.on('data', (d) => {
    err += String(d);
  });
  const ac = new AbortController();
  return {
    stdout,
    stderr,
    signal: ac.signal,
    env,
    out: () => out,
    err: () => err,
    abort: () => ac.abort(new Error('test abort')),
  };
}

/**
 * The changed set the simulator must serve for `ranges` (plain byte ranges), widened to whole
 * change blocks with a naive bitmap, as merged half-open byte runs [offset, end).
 */
export function expectedRuns(
  ranges: ReadonlyArray<{ offset: number; length: number }>,
  sizeBytes: number,
  changeBlockSize: number,
): Array<[number, number]> {
  const bits = new Uint8Array(sizeBytes / changeBlockSize);
  for (const r of ranges) {
    for (
      let b = Math.floor(r.offset / changeBlockSize);
      b * changeBlockSize < r.offset + r.length;
      b++
    )
      bits[b] = 1;
  }
  const runs: Array<[number, number]> = [];
  for (let b = 0; b < bits.length; b++) {
    if (!bits[b]) continue;
    const start = b;
    while (b + 1 < bits.length && bits[b + 1]) b++;
    runs.push([start * changeBlockSize, (b + 1) * changeBlockSize]);
  }
  return runs;
}

/** Byte ranges (any order, may touch or overlap) as merged half-open runs [offset, end). */
export function mergeRuns(
  ranges: Iterable<{ offset: number; length: number }>,
): Array<[number, number]> {
  const sorted = [...ranges]
    .map((r): [number, number] => [r.offset, r.offset + r.length])
    .sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const [s, e] of sorted) {
    const last = out[out.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}
