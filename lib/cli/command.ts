/**
 * The shape every `lba-status` subcommand implements. The CLI only composes the library: a
 * command parses its arguments (node:util parseArgs), calls library functions and formats output.
 */
import type { Writable } from 'node:stream';

/** Streams and signals a command runs with (injectable for tests). */
export interface CliIo {
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable & { isTTY?: boolean };
  /** Aborted on SIGINT/SIGTERM; commands stop and clean up, then return. */
  signal: AbortSignal;
  env: NodeJS.ProcessEnv;
}

/** One subcommand, e.g. `scan` or `sim serve`. */
export interface CliCommand {
  /** Words after `lba-status`, e.g. `['sim', 'serve']`. */
  path: string[];
  /** One line for the top-level help. */
  summary: string;
  /** Full `--help` text: usage, options, examples. */
  help: string;
  /** Runs the command; resolves with the process exit code. Throws only for bugs. */
  run(args: string[], io: CliIo): Promise<number>;
}

/** A usage mistake: printed as one line plus "see --help", exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
  readonly code = 'ERR_LBA_STATUS_USAGE';
}
