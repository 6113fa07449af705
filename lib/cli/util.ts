/** Small helpers shared by the CLI commands: numbers, exit codes, progress lines. */

import { isAbortError } from '../abort.js';
import {
  DeviceSystemError,
  IscsiLoginError,
  MalformedReplyError,
  ScsiError,
  TransportError,
} from '../errors.js';
import type { CliIo } from './command.js';
import { UsageError } from './command.js';

/** Exit codes, documented in `lba-status --help`. */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  system: 3,
  scsi: 4,
  transport: 5,
  malformed: 6,
  verifyMismatch: 7,
  aborted: 130,
} as const;

/** Parses a non-negative integer option; accepts 0x hex and k/M/G/T binary suffixes for sizes. */
export function parseCount(
  value: string | undefined,
  name: string,
  options: { sizes?: boolean } = {},
): number | undefined {
  if (value === undefined) return undefined;
  const match = /^(0x[0-9a-f]+|\d+)([kmgt]i?b?)?$/i.exec(value.trim());
  const suffix = match?.[2]?.[0]?.toLowerCase();
  if (!match || (suffix && !options.sizes)) {
    throw new UsageError(
      `--${name} must be a non-negative integer${options.sizes ? ' (suffixes K, M, G, T allowed)' : ''}, got '${value}'`,
    );
  }
  const base = Number(match[1]);
  const scale = suffix ? 1024 ** ('kmgt'.indexOf(suffix) + 1) : 1;
  const result = base * scale;
  if (!Number.isSafeInteger(result)) throw new UsageError(`--${name} is too large: '${value}'`);
  return result;
}

/** Secrets a command read (CHAP), per run: never written to stderr in an error line. */
const secrets = new WeakMap<CliIo, Set<string>>();

/** Registers a secret the command holds, so that {@link redact} hides it from its output. */
export function registerSecret(io: CliIo, secret: string): void {
  if (secret.length === 0) return;
  const set = secrets.get(io) ?? new Set<string>();
  set.add(secret);
  secrets.set(io, set);
}

/** `text` with every secret registered for this run replaced by `***`. */
export function redact(io: CliIo, text: string): string {
  let out = text;
  for (const secret of secrets.get(io) ?? []) out = out.split(secret).join('***');
  return out;
}

/** Node's errno errors of a system call (a socket's connect, an open): `code` + `syscall`. */
function isSystemCallError(error: unknown): boolean {
  const e = error as { code?: unknown; syscall?: unknown } | null;
  return (
    typeof e?.code === 'string' && /^E[A-Z0-9]+$/.test(e.code) && typeof e.syscall === 'string'
  );
}

/** Maps an error to its exit code and prints its one-line reason on stderr (secrets redacted). */
export function reportError(error: unknown, io: CliIo): number {
  const message = redact(io, error instanceof Error ? error.message : String(error));
  if (error instanceof UsageError) {
    io.stderr.write(`lba-status: ${message}\nTry 'lba-status --help'.\n`);
    return ExitCode.usage;
  }
  io.stderr.write(`lba-status: ${message}\n`);
  if (isAbortError(error)) return ExitCode.aborted;
  if (error instanceof DeviceSystemError) return ExitCode.system;
  if (error instanceof ScsiError) return ExitCode.scsi;
  if (error instanceof TransportError || error instanceof IscsiLoginError)
    return ExitCode.transport;
  if (error instanceof MalformedReplyError) return ExitCode.malformed;
  const code = (error as { code?: unknown })?.code;
  // The addon could not load: a fact about this system (its build, its libc), like an errno.
  if (isSystemCallError(error) || code === 'ERR_LBA_STATUS_BINDING') return ExitCode.system;
  if (
    (typeof code === 'string' && code.startsWith('ERR_INVALID_ARG')) ||
    code === 'ERR_OUT_OF_RANGE'
  )
    return ExitCode.usage;
  return ExitCode.failure;
}

/** `1536` → `'1.5 KiB'`. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

/** A progress line on stderr, redrawn in place, only when stderr is a terminal. */
export class ProgressLine {
  readonly #io: CliIo;
  #last = 0;
  #shown = false;
  constructor(
    io: CliIo,
    readonly enabled = io.stderr.isTTY === true,
  ) {
    this.#io = io;
  }

  update(text: string, force = false): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!force && now - this.#last < 100) return;
    this.#last = now;
    this.#shown = true;
    this.#io.stderr.write(`\r\x1b[2K${text}`);
  }

  done(): void {
    if (this.#shown) this.#io.stderr.write('\r\x1b[2K');
    this.#shown = false;
  }
}

/** Wraps a command's body: usage and library errors become one line on stderr and an exit code. */
export function guarded(run: (args: string[], io: CliIo) => Promise<number>) {
  return async (args: string[], io: CliIo): Promise<number> => {
    try {
      return await run(args, io);
    } catch (error) {
      if ((error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
        return reportError(new UsageError((error as Error).message), io);
      }
      return reportError(error, io);
    }
  };
}

/** `--engine threads|sg-async`, or undefined when not given. */
export function parseEngine(value: string | undefined): 'threads' | 'sg-async' | undefined {
  if (value === undefined) return undefined;
  if (value !== 'threads' && value !== 'sg-async')
    throw new UsageError(`--engine must be threads or sg-async, got '${value}'`);
  return value;
}
