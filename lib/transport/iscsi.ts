/**
 * The userspace iSCSI transport: one logical unit reached through lib/iscsi's initiator over a
 * TCP socket — no root, no iscsid, no kernel modules. A backup agent can scan and read a volume
 * as an ordinary user.
 *
 * Outcomes are SG_IO-shaped (see types.ts): a SCSI status with sense is returned as such (the
 * device layer retries UNIT ATTENTION, BUSY, TASK SET FULL, NOT READY); what the transport itself
 * could not do becomes a host status with a `detail`:
 * - TIME_OUT: no answer within the command's timeout (the command was aborted with ABORT TASK);
 * - ERROR: the target broke the protocol (e.g. Data-In outside the buffer; the connection is
 *   dropped) or answered with an iSCSI target failure;
 * - TRANSPORT_FAILFAST: the connection was lost and the command could not be completed (not
 *   read-only, or reconnect gave up), or the transport was closed.
 */
import { performance } from 'node:perf_hooks';
import { AbortError } from '../abort.js';
import { DeviceSystemError, IscsiLoginError } from '../errors.js';
import { type ExecuteFailure, IscsiInitiator, IscsiInitiatorError } from '../iscsi/initiator.js';
import { describeLoginStatus } from '../iscsi/login.js';
import {
  InvalidArgTypeError,
  InvalidArgValueError,
  optionalInteger,
  validateAbortSignal,
  validateOptionKeys,
} from '../validate.js';
import { parseIscsiUrl } from './iscsi-url.js';
import {
  type CommandOutcome,
  DataDirection,
  HostStatus,
  type ScsiTransport,
  type TransportCommand,
} from './types.js';

/** CHAP credentials; the secrets never appear in a message or a log line. */
export interface IscsiChapOptions {
  /** CHAP name (default: the user part of the URL; this wins when both are given). */
  username?: string;
  secret: string;
  /** Mutual CHAP: the name and secret the target must answer with. */
  target?: { username: string; secret: string };
}

/** Options of {@link openIscsiTransport}. */
export interface IscsiTransportOptions {
  chap?: IscsiChapOptions;
  /** This initiator's iSCSI name (default `iqn.2024-01.lba-status:initiator`). */
  initiatorName?: string;
  /** Most commands in flight, 1..64 (default 4); the target's command window may allow fewer. */
  queueDepth?: number;
  /** Per-command timeout in ms when a command carries none (default 30 000). */
  timeoutMs?: number;
  /** Bound on TCP connect + login, in ms (default 15 000). */
  loginTimeoutMs?: number;
  /** Aborts the connect and login. */
  signal?: AbortSignal;
  /**
   * After a lost connection: log in again up to `attempts` times (default 3; 0 = never),
   * `delayMs` apart (default 1000), and send the read-only commands that were in flight again.
   */
  reconnect?: { attempts?: number; delayMs?: number };
}

const OPTION_KEYS = [
  'chap',
  'initiatorName',
  'queueDepth',
  'timeoutMs',
  'loginTimeoutMs',
  'signal',
  'reconnect',
] as const;
const ISCSI_NAME_RE = /^(iqn\.\d{4}-\d{2}\.[^\s]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$/;
const DEFAULT_INITIATOR_NAME = 'iqn.2024-01.lba-status:initiator';
const DRIVER_SENSE = 0x08;

const hostStatusOf: Record<ExecuteFailure, number> = {
  timeout: HostStatus.TIME_OUT,
  protocol: HostStatus.ERROR,
  target: HostStatus.ERROR,
  connection: HostStatus.TRANSPORT_FAILFAST,
  closed: HostStatus.TRANSPORT_FAILFAST,
};

function validateString(value: unknown, name: string): string {
  if (typeof value !== 'string') throw new InvalidArgTypeError(name, 'of type string', value);
  if (value.length === 0) throw new InvalidArgValueError(name, 'must not be empty', value);
  return value;
}

/** A secret: checked without ever putting its value into the error. */
function validateSecret(value: unknown, name: string): string {
  if (typeof value !== 'string') {
    const e = new InvalidArgTypeError(name, 'of type string', null);
    e.message = `The "${name}" argument must be of type string. Received ${value === null ? 'null' : `type ${typeof value}`}`;
    throw e;
  }
  if (value.length === 0) throw new InvalidArgValueError(name, 'must not be empty', '(empty)');
  return value;
}

function validateChap(
  value: unknown,
  urlUser: string | undefined,
): IscsiInitiator['options']['chap'] | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null) {
    throw new InvalidArgTypeError('options.chap', 'of type object', value);
  }
  validateOptionKeys(value, 'options.chap', ['username', 'secret', 'target']);
  const c = value as IscsiChapOptions;
  const username =
    c.username === undefined ? urlUser : validateString(c.username, 'options.chap.username');
  if (username === undefined) {
    throw new InvalidArgValueError(
      'options.chap.username',
      'is required: give it here or as USER@ in the URL (iscsi://USER@HOST/TARGET-IQN/LUN)',
      undefined,
    );
  }
  const secret = validateSecret(c.secret, 'options.chap.secret');
  if (c.target === undefined) return { username, secret };
  if (typeof c.target !== 'object' || c.target === null) {
    throw new InvalidArgTypeError('options.chap.target', 'of type object', c.target);
  }
  validateOptionKeys(c.target, 'options.chap.target', ['username', 'secret']);
  return {
    username,
    secret,
    target: {
      username: validateString(c.target.username, 'options.chap.target.username'),
      secret: validateSecret(c.target.secret, 'options.chap.target.secret'),
    },
  };
}

/** Turns a failure of connect or login into the library's typed errors. */
function openError(err: unknown, address: string, loginTimeoutMs: number): Error {
  const e = err as NodeJS.ErrnoException & Partial<IscsiInitiatorError>;
  if (e instanceof IscsiInitiatorError) {
    switch (e.code) {
      case 'ABORT_ERR':
        return new AbortError(undefined, { cause: err });
      case 'ERR_ISCSI_LOGIN':
        return new IscsiLoginError(
          address,
          e.statusClass ?? 0,
          e.statusDetail ?? 0,
          describeLoginStatus(e.statusClass ?? 0, e.statusDetail ?? 0),
        );
      case 'ERR_ISCSI_CHAP_REQUIRED':
        return new IscsiLoginError(
          address,
          0,
          0,
          'the target requires CHAP authentication: put the user in the URL (iscsi://USER@HOST/…) or the chap option, and the secret in LBA_STATUS_CHAP_SECRET or --chap-secret-file FILE',
        );
      case 'ERR_ISCSI_MUTUAL_CHAP':
        return new IscsiLoginError(
          address,
          0,
          0,
          `mutual CHAP failed: ${e.message}; check the target's CHAP user and secret (chap.target, --target-chap-user, LBA_STATUS_TARGET_CHAP_SECRET)`,
        );
      case 'ERR_ISCSI_LOGIN_TIMEOUT':
        return new IscsiLoginError(
          address,
          0,
          0,
          `no answer to the login within ${loginTimeoutMs} ms: check that HOST:PORT is an iSCSI portal (port 3260 by default) that is not overloaded, or raise loginTimeoutMs`,
        );
      default:
        return new IscsiLoginError(
          address,
          0,
          0,
          `${e.message}: check that HOST:PORT is an iSCSI portal and that the target is healthy`,
        );
    }
  }
  if (typeof e.errno === 'number') {
    const syscall = e.syscall === 'getaddrinfo' ? 'getaddrinfo' : 'connect';
    return new DeviceSystemError(e.errno, syscall, address, { cause: err });
  }
  if (err instanceof Error) {
    return new IscsiLoginError(address, 0, 0, `${err.message}: check the portal and the target`);
  }
  return new IscsiLoginError(address, 0, 0, String(err));
}

/** The initiator's result as the transport's outcome. */
function outcomeOf(
  r: Awaited<ReturnType<IscsiInitiator['execute']>>,
  requested: number,
  durationMs: number,
): CommandOutcome {
  if (r.failure) {
    return {
      errno: 0,
      status: 0,
      hostStatus: hostStatusOf[r.failure],
      driverStatus: 0,
      senseLength: 0,
      resid: requested,
      durationMs,
      detail: r.detail ?? r.failure,
    };
  }
  return {
    errno: 0,
    status: r.status,
    hostStatus: HostStatus.OK,
    driverStatus: r.senseLength > 0 ? DRIVER_SENSE : 0,
    senseLength: r.senseLength,
    resid: Math.max(0, requested - r.transferred),
    durationMs,
  };
}

/** One logical unit reached through the userspace initiator. */
export class IscsiTransport implements ScsiTransport {
  readonly kind = 'iscsi';
  readonly address: string;
  readonly queueDepth: number;
  /** The LUN commands go to. */
  readonly lun: number;
  readonly #initiator: IscsiInitiator;
  readonly #timeoutMs: number;
  #closing: Promise<void> | undefined;

  /** @internal use {@link openIscsiTransport}. */
  constructor(
    initiator: IscsiInitiator,
    address: string,
    lun: number,
    queueDepth: number,
    timeoutMs: number,
  ) {
    this.#initiator = initiator;
    this.address = address;
    this.lun = lun;
    this.queueDepth = queueDepth;
    this.#timeoutMs = timeoutMs;
  }

  /** The session underneath (statistics, negotiated parameters). */
  get initiator(): IscsiInitiator {
    return this.#initiator;
  }

  execute(command: TransportCommand): Promise<CommandOutcome> {
    const start = performance.now();
    const dataIn = command.direction === DataDirection.FromDevice ? command.data : null;
    const dataOut = command.direction === DataDirection.ToDevice ? command.data : null;
    const requested =
      command.data && command.direction !== DataDirection.None ? command.data.byteLength : 0;
    // A plain .then, not an async function: one promise less per command
    return this.#initiator
      .execute(this.lun, command.cdb, {
        dataIn,
        dataOut,
        sense: command.sense,
        timeoutMs: command.timeoutMs > 0 ? command.timeoutMs : this.#timeoutMs,
      })
      .then((r) => outcomeOf(r, requested, performance.now() - start));
  }
  allocate(length: number): Uint8Array {
    return new Uint8Array(length);
  }

  /** Logs out (at most 5 s), then closes the socket. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#initiator.close(5000);
    return this.#closing;
  }
}

/**
 * Logs in to the target an `iscsi://[USER@]HOST[:PORT]/TARGET-IQN/LUN` URL names and returns a
 * transport for that LUN.
 *
 * Throws `InvalidArgValueError`/`InvalidArgTypeError` for a malformed URL or option (a secret in
 * the URL is refused, never echoed), `DeviceSystemError` when the portal cannot be reached
 * (`ECONNREFUSED`, `ETIMEDOUT`, … with syscall `connect`), `IscsiLoginError` when the target
 * refuses the login or does not answer it in time (the message says what to fix), `AbortError`
 * when `signal` fires. Nothing is left open on failure.
 */
export async function openIscsiTransport(
  url: string,
  options: IscsiTransportOptions = {},
): Promise<ScsiTransport> {
  const parsed = parseIscsiUrl(url);
  validateOptionKeys(options, 'options', OPTION_KEYS);
  const chap = validateChap(options.chap, parsed.username);
  const initiatorName =
    options.initiatorName === undefined
      ? DEFAULT_INITIATOR_NAME
      : validateString(options.initiatorName, 'options.initiatorName');
  if (!ISCSI_NAME_RE.test(initiatorName)) {
    throw new InvalidArgValueError(
      'options.initiatorName',
      'must be an iSCSI name such as iqn.2024-01.com.example:backup-host (iqn., eui. or naa.)',
      initiatorName,
    );
  }
  const queueDepth = optionalInteger(options.queueDepth, 'options.queueDepth', 1, 64, 4);
  const timeoutMs = optionalInteger(options.timeoutMs, 'options.timeoutMs', 1, 2 ** 31 - 1, 30_000);
  const loginTimeoutMs = optionalInteger(
    options.loginTimeoutMs,
    'options.loginTimeoutMs',
    1,
    2 ** 31 - 1,
    15_000,
  );
  const signal = validateAbortSignal(options.signal, 'options.signal');
  let attempts = 3;
  let delayMs = 1000;
  if (options.reconnect !== undefined) {
    if (typeof options.reconnect !== 'object' || options.reconnect === null) {
      throw new InvalidArgTypeError('options.reconnect', 'of type object', options.reconnect);
    }
    validateOptionKeys(options.reconnect, 'options.reconnect', ['attempts', 'delayMs']);
    attempts = optionalInteger(options.reconnect.attempts, 'options.reconnect.attempts', 0, 100, 3);
    delayMs = optionalInteger(
      options.reconnect.delayMs,
      'options.reconnect.delayMs',
      0,
      600_000,
      1000,
    );
  }
  if (signal?.aborted) throw new AbortError(undefined, { cause: signal.reason });

  let initiator: IscsiInitiator;
  try {
    initiator = await IscsiInitiator.connect({
      host: parsed.host,
      port: parsed.port,
      targetName: parsed.targetName,
      initiatorName,
      ...(chap ? { chap } : {}),
      queueDepth,
      timeoutMs,
      loginTimeoutMs,
      reconnect: { attempts, delayMs },
      ...(signal ? { signal } : {}),
    });
  } catch (err) {
    if (signal?.aborted) throw new AbortError(undefined, { cause: signal.reason });
    throw openError(err, parsed.address, loginTimeoutMs);
  }
  return new IscsiTransport(initiator, parsed.address, parsed.lun, queueDepth, timeoutMs);
}
