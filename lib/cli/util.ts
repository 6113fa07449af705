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

/**
 * Exit codes, documented in `lba-status --help`, the README and every command's help. 1 is only
 * an internal error (a bug): every failure the README lists has its own code.
 */
export const ExitCode = {
  ok: 0,
  /** An internal error (a bug): never for a failure the README lists. */
  failure: 1,
  usage: 2,
  system: 3,
  scsi: 4,
  transport: 5,
  malformed: 6,
  verifyMismatch: 7,
  /** The cloud (OCI) API failed, refused or timed out, or a delta volume could not be released. */
  cloud: 8,
  aborted: 130,
} as const;

/**
 * Exit code by the error's stable `code` (library errors, OCI errors, job errors). Errors the
 * user fixes on the command line are usage (2), whatever layer found them.
 */
export const EXIT_CODE_BY_ERROR_CODE: Readonly<Record<string, number>> = {
  ERR_LBA_STATUS_USAGE: ExitCode.usage,
  ERR_JOB_SPEC: ExitCode.usage,
  ERR_INVALID_ARG_TYPE: ExitCode.usage,
  ERR_INVALID_ARG_VALUE: ExitCode.usage,
  ERR_OUT_OF_RANGE: ExitCode.usage,
  // An export DIR that is another delta's, not an export, or not complete: fix the argument.
  ERR_LBA_STATUS_EXPORT_MISMATCH: ExitCode.usage,
  ERR_LBA_STATUS_EXPORT_INVALID: ExitCode.usage,
  ERR_LBA_STATUS_EXPORT_INCOMPLETE: ExitCode.usage,
  // Its data do not match its own manifest's SHA-256s: a verification failure.
  ERR_LBA_STATUS_EXPORT_CORRUPT: ExitCode.verifyMismatch,
  ERR_LBA_STATUS_VERIFY_MISMATCH: ExitCode.verifyMismatch,
  ERR_LBA_STATUS_NOT_WHOLE_DISK: ExitCode.usage,
  // Facts about this system: the addon or an optional package cannot load, a device went away.
  ERR_LBA_STATUS_BINDING: ExitCode.system,
  ERR_LBA_STATUS_UNSUPPORTED_PLATFORM: ExitCode.system,
  ERR_LBA_STATUS_NO_MEMORY: ExitCode.system,
  ERR_LBA_STATUS_SHORT_READ: ExitCode.system,
  ERR_LBA_STATUS_DEVICE_CLOSED: ExitCode.system,
  ERR_NOT_A_DEVICE: ExitCode.system,
  ERR_BULLMQ_MISSING: ExitCode.system,
  ERR_QUEUE_UNREACHABLE: ExitCode.system,
  ERR_OCI_SDK_MISSING: ExitCode.system,
  ERR_OCI_DEVICE_NOT_FOUND: ExitCode.system,
  // OCI: the backups given cannot make a delta (checked before anything is billed): usage.
  ERR_OCI_BAD_OCID: ExitCode.usage,
  ERR_OCI_SAME_BACKUP: ExitCode.usage,
  ERR_OCI_BACKUP_TYPE_MISMATCH: ExitCode.usage,
  ERR_OCI_BAD_CHANGE_BLOCK_SIZE: ExitCode.usage,
  ERR_OCI_BACKUP_NOT_FOUND: ExitCode.usage,
  ERR_OCI_BACKUPS_DIFFERENT_VOLUMES: ExitCode.usage,
  ERR_OCI_BACKUP_ORDER: ExitCode.usage,
  ERR_OCI_SECOND_BACKUP_NOT_INCREMENTAL: ExitCode.usage,
  ERR_OCI_FULL_BACKUP_BETWEEN: ExitCode.usage,
  ERR_OCI_VOLUME_RESIZED: ExitCode.usage,
  // OCI: the service, its API or a lifecycle failed: cloud API error.
  ERR_OCI_BACKUP_NOT_AVAILABLE: ExitCode.cloud,
  ERR_OCI_REQUEST_REJECTED: ExitCode.cloud,
  ERR_OCI_NOT_AUTHENTICATED: ExitCode.cloud,
  ERR_OCI_NOT_FOUND: ExitCode.cloud,
  ERR_OCI_CONFLICT: ExitCode.cloud,
  ERR_OCI_SERVICE: ExitCode.cloud,
  ERR_OCI_NETWORK: ExitCode.cloud,
  ERR_OCI_LIFECYCLE: ExitCode.cloud,
  ERR_OCI_TIMEOUT: ExitCode.cloud,
  ERR_OCI_IMDS: ExitCode.cloud,
  ERR_OCI_ATTACHMENT: ExitCode.cloud,
  ERR_OCI_RELEASE: ExitCode.cloud,
};

/** iscsiadm exit statuses (open-iscsi iscsi_err.h) of a refused connection or login: transport. */
const ISCSIADM_TRANSPORT = new Set([4, 5, 8, 11, 19, 24]);

/**
 * Flags of the CLI by the library option they set, for messages of argument errors
 * (`"options.queueDepth" is out of range` → `--concurrency is out of range`). One table for
 * every command; the library's validators name options, the user typed flags.
 */
export const FLAG_OF_OPTION: Readonly<Record<string, string>> = {
  queueDepth: '--concurrency',
  concurrency: '--concurrency',
  startLba: '--start-lba',
  endLba: '--end-lba',
  windowBlocks: '--window-blocks',
  allocationLength: '--allocation-length',
  reportType: '--report-type',
  cdb: '--cdb',
  timeoutMs: '--timeout-ms',
  changeBlockSize: '--change-block-size',
  chunkSize: '--chunk-size',
  method: '--method',
  engine: '--engine',
  checksum: '--checksum',
  initiatorName: '--initiator-name',
  'chap.username': '--chap-user',
  'chap.secret': '--chap-secret-file',
  'chap.target.username': '--target-chap-user',
  'chap.target.secret': '--target-chap-secret-file',
};

/** Flags an OCI error (by code) is about, when its message names the value, not the flag. */
const FLAGS_OF_OCI_CODE: Readonly<Record<string, string>> = {
  ERR_OCI_SAME_BACKUP: '--first-backup, --second-backup',
  ERR_OCI_BACKUP_TYPE_MISMATCH: '--first-backup, --second-backup',
  ERR_OCI_BACKUP_NOT_FOUND: '--first-backup, --second-backup',
  ERR_OCI_BACKUPS_DIFFERENT_VOLUMES: '--first-backup, --second-backup',
  ERR_OCI_BACKUP_ORDER: '--first-backup, --second-backup',
  ERR_OCI_SECOND_BACKUP_NOT_INCREMENTAL: '--second-backup',
  ERR_OCI_FULL_BACKUP_BETWEEN: '--first-backup, --second-backup',
  ERR_OCI_VOLUME_RESIZED: '--first-backup, --second-backup',
};

/** Library terms in messages of argument errors, and the flag the user typed for each. */
const FLAG_OF_TERM: ReadonlyArray<[RegExp, string]> = [
  [/^first backup (id )?/, '--first-backup '],
  [/^second backup (id )?/, '--second-backup '],
  [/^instance id /, '--instance-id '],
  [/^change block size /, '--change-block-size '],
];

/**
 * The message of an error, in the CLI's words: a library option named in an argument error
 * becomes the flag that sets it (Node's three shapes: `The value of "options.x" is out of range.
 * It must be …. Received …`, `The "options.x" argument must be …`, `The argument 'options.x' …`);
 * an OCI error about the backups names the backup flags.
 */
export function cliMessage(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return message;
  if (code.startsWith('ERR_INVALID_ARG') || code === 'ERR_OUT_OF_RANGE') {
    const flagOf = (name: string): string | undefined =>
      FLAG_OF_OPTION[name.replace(/^options\./, '')];
    const rewrite = (
      re: RegExp,
      make: (flag: string, rest: string) => string,
    ): string | undefined => {
      const m = re.exec(message);
      const flag = m && flagOf(m[1] as string);
      return flag ? make(flag, (m[2] ?? '').replace(/\. Received /, ', got ')) : undefined;
    };
    return (
      rewrite(
        /^The value of "([^"]+)" is out of range\. It must be (.*)$/s,
        (f, r) => `${f} must be ${r}`,
      ) ??
      rewrite(/^The "([^"]+)" argument must be (.*)$/s, (f, r) => `${f} must be ${r}`) ??
      rewrite(/^The argument '([^']+)' (.*)$/s, (f, r) => `${f} ${r}`) ??
      message
    );
  }
  if (code.startsWith('ERR_OCI_')) {
    for (const [re, flag] of FLAG_OF_TERM) if (re.test(message)) return message.replace(re, flag);
    const flags = FLAGS_OF_OCI_CODE[code];
    if (flags) return `${flags}: ${message}`;
  }
  return message;
}

/** The exit code of an error (see {@link ExitCode}); 1 only for what no table knows (a bug). */
export function exitCodeOf(error: unknown): number {
  if (error instanceof UsageError) return ExitCode.usage;
  if (isAbortError(error)) return ExitCode.aborted;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string') {
    const mapped = EXIT_CODE_BY_ERROR_CODE[code];
    if (mapped !== undefined) return mapped;
    if (code.startsWith('ERR_PARSE_ARGS')) return ExitCode.usage;
    if (code === 'ERR_ISCSIADM') {
      const status = (error as { exitCode?: unknown }).exitCode;
      return typeof status === 'number' && ISCSIADM_TRANSPORT.has(status)
        ? ExitCode.transport
        : ExitCode.system;
    }
  }
  if (error instanceof DeviceSystemError) return ExitCode.system;
  if (error instanceof ScsiError) return ExitCode.scsi;
  if (error instanceof TransportError || error instanceof IscsiLoginError)
    return ExitCode.transport;
  if (error instanceof MalformedReplyError) return ExitCode.malformed;
  // Node's errno errors of a system call (a socket's connect, an open).
  if (isSystemCallError(error)) return ExitCode.system;
  return ExitCode.failure;
}

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
  const code = exitCodeOf(error);
  const message = redact(io, cliMessage(error));
  io.stderr.write(
    code === ExitCode.usage && error instanceof UsageError
      ? `lba-status: ${message}\nTry 'lba-status --help'.\n`
      : `lba-status: ${message}\n`,
  );
  return code;
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
