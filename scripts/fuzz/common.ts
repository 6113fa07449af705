// SPDX-License-Identifier: Apache-2.0
/**
 * What the JS fuzzers share: command-line options, where crash files go, and the one result line
 * scripts/fuzz.mjs reads (`FUZZ-RESULT {json}` on stdout).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** Repository root: the bundles run from build/fuzz/, the sources in scripts/fuzz/. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface FuzzArgs {
  seconds: number;
  seed: number;
  /** fast-check replay path (with --seed), or a crash file to replay. */
  path: string | undefined;
  replay: string | undefined;
  /** Runs one property (pdu) only. */
  property: string | undefined;
  crashDir: string;
  verbose: boolean;
}

export function fuzzArgs(): FuzzArgs {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '60' },
      seed: { type: 'string' },
      path: { type: 'string' },
      replay: { type: 'string' },
      property: { type: 'string' },
      'crash-dir': { type: 'string', default: join(repoRoot, 'build', 'fuzz', 'crashes') },
      verbose: { type: 'boolean', default: false },
    },
  });
  const seconds = Number(values.seconds);
  if (!(seconds > 0))
    throw new RangeError(`--seconds must be a positive number; got ${values.seconds}`);
  const seed =
    values.seed === undefined ? (Date.now() ^ (process.pid << 16)) >>> 0 : Number(values.seed);
  if (!Number.isSafeInteger(seed))
    throw new RangeError(`--seed must be an integer; got ${values.seed}`);
  return {
    seconds,
    seed,
    path: values.path,
    replay: values.replay,
    property: values.property,
    crashDir: values['crash-dir'],
    verbose: values.verbose,
  };
}

export interface FuzzResult {
  name: string;
  inputs: number;
  crashes: number;
  seconds: number;
  seed: number;
  /** Crash files written (each says how to replay it). */
  crashFiles: string[];
  /** Command lines that reproduce each crash. */
  reproduce: string[];
  /** Anything else worth printing (e.g. the target's peak memory). */
  notes?: Record<string, number | string>;
}

/** Writes a crash file under the crash directory and returns its path. */
export function writeCrash(dir: string, name: string, content: string | Buffer): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, name);
  writeFileSync(file, content);
  return file;
}

export function report(result: FuzzResult): void {
  process.stdout.write(`FUZZ-RESULT ${JSON.stringify(result)}\n`);
}
