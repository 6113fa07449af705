/**
 * The DEVICE argument every command that opens a device takes (`info`, `scan`, `read`, `export`,
 * `verify --device`): a device node, or an `iscsi://[USER@]HOST[:PORT]/IQN/LUN` URL reached by the
 * userspace initiator, with its CHAP options. One place parses them, so every command accepts
 * and refuses the same things.
 *
 * Secrets never come from the command line (argv is world-readable in /proc): the CHAP secret is
 * read from `LBA_STATUS_CHAP_SECRET` or `--chap-secret-file FILE` (refused when group or others
 * can read it, like ssh), the mutual-CHAP secret from `LBA_STATUS_TARGET_CHAP_SECRET` or
 * `--target-chap-secret-file FILE`. Every secret read is registered for redaction from the
 * command's error output.
 */
import { open } from 'node:fs/promises';
import type { OpenOptions } from '../device/device.js';
import { type CliIo, UsageError } from './command.js';
import { parseEngine, registerSecret } from './util.js';

/** parseArgs options of the device/CHAP flags (spread into a command's own options). */
export const DEVICE_OPTIONS = {
  'chap-user': { type: 'string' },
  'chap-secret-file': { type: 'string' },
  'target-chap-user': { type: 'string' },
  'target-chap-secret-file': { type: 'string' },
  'initiator-name': { type: 'string' },
} as const;

/** Environment variables the secrets come from when no file is given. */
export const CHAP_SECRET_ENV = 'LBA_STATUS_CHAP_SECRET';
export const TARGET_CHAP_SECRET_ENV = 'LBA_STATUS_TARGET_CHAP_SECRET';

/** `--help` lines of the device/CHAP flags (the same in every command). */
export const DEVICE_OPTIONS_HELP = `iSCSI devices (iscsi://[USER@]HOST[:PORT]/TARGET-IQN/LUN, port 3260 by default; reached by
lba-status's own userspace initiator: no root, no iscsid, no kernel modules):
  --chap-user NAME                CHAP user (or USER@ in the URL)
  --chap-secret-file FILE         CHAP secret: the file's content (one trailing newline is
                                  dropped; refused unless only its owner can read it: chmod 600),
                                  else $${CHAP_SECRET_ENV}. Never on the command line.
  --target-chap-user NAME         mutual CHAP: the name the target must answer with
  --target-chap-secret-file FILE  its secret (same rules), else $${TARGET_CHAP_SECRET_ENV}
  --initiator-name IQN            this initiator's name (default iqn.2024-01.lba-status:initiator)`;

/** What `openDevice` needs beyond the command's own options (queue depth, timeout). */
export interface DeviceArgs {
  /** The device node or the `iscsi://` URL, as given (a URL never carries a secret). */
  address: string;
  /** `engine` for a device node; `chap`, `initiatorName` for a URL. */
  options: Pick<OpenOptions, 'engine' | 'chap' | 'initiatorName'>;
}

type Values = Readonly<Record<string, string | boolean | (string | boolean)[] | undefined>>;

/** The one DEVICE positional of `info`, `scan`, `read`, `export`. */
export function takeDevice(positionals: string[]): string {
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0
        ? 'missing DEVICE (e.g. /dev/sdb or iscsi://HOST/TARGET-IQN/1)'
        : `unexpected argument '${positionals[1]}'`,
    );
  }
  return positionals[0]!;
}

/** True for an `iscsi://` address (any case, like openDevice). */
export function isIscsiUrl(address: string): boolean {
  return /^iscsi:/i.test(address);
}

/**
 * Flags that only mean something for a device node, with the value that makes them so
 * (`undefined`: any value). Given with a URL they are a usage error naming the flag.
 */
const PATH_ONLY: ReadonlyArray<[flag: string, value?: string]> = [['engine'], ['method', 'direct']];

/**
 * Checks the DEVICE argument and the device/CHAP flags of `values` (parsed with
 * {@link DEVICE_OPTIONS}) and reads the secrets. Throws {@link UsageError} (exit 2) naming the
 * flag to fix; never puts a secret into a message.
 */
export async function deviceArgs(
  address: string,
  values: Values,
  io: CliIo,
  what = 'DEVICE',
): Promise<DeviceArgs> {
  const str = (name: string): string | undefined => {
    const v = values[name];
    return typeof v === 'string' ? v : undefined;
  };
  if (!isIscsiUrl(address)) {
    for (const name of Object.keys(DEVICE_OPTIONS)) {
      if (str(name) !== undefined)
        throw new UsageError(
          `--${name} applies only to iscsi:// devices; ${what} '${address}' is a device node`,
        );
    }
    const engine = parseEngine(str('engine'));
    return { address, options: engine ? { engine } : {} };
  }
  for (const [flag, value] of PATH_ONLY) {
    const given = str(flag);
    if (given !== undefined && (value === undefined || given === value))
      throw new UsageError(
        `--${flag}${value ? ` ${value}` : ''} applies only to device nodes (/dev/…), not to iscsi:// devices`,
      );
  }
  const urlUser = urlUsername(address);
  const { parseIscsiUrl } = await import('../transport/iscsi-url.js');
  parseIscsiUrl(address); // malformed: InvalidArgValueError naming what to fix (exit 2)

  const flagUser = str('chap-user');
  if (flagUser !== undefined && flagUser.length === 0)
    throw new UsageError('--chap-user must not be empty');
  if (flagUser !== undefined && urlUser !== undefined && flagUser !== urlUser)
    throw new UsageError(
      `--chap-user '${flagUser}' differs from the user in the URL ('${urlUser}'); give one of them`,
    );
  const username = flagUser ?? urlUser;
  const secret = await secretFrom(io, str('chap-secret-file'), CHAP_SECRET_ENV, 'chap-secret-file');
  if (username !== undefined && secret === undefined)
    throw new UsageError(
      `CHAP user '${username}' has no secret: set ${CHAP_SECRET_ENV} or give --chap-secret-file FILE`,
    );
  if (username === undefined && secret !== undefined)
    throw new UsageError(
      `a CHAP secret was given (${secret.source}) but no CHAP user: put USER@ in the URL or give --chap-user NAME`,
    );

  const targetUser = str('target-chap-user');
  if (targetUser !== undefined && targetUser.length === 0)
    throw new UsageError('--target-chap-user must not be empty');
  const targetSecret = await secretFrom(
    io,
    str('target-chap-secret-file'),
    TARGET_CHAP_SECRET_ENV,
    'target-chap-secret-file',
  );
  if (targetUser !== undefined && targetSecret === undefined)
    throw new UsageError(
      `--target-chap-user '${targetUser}' has no secret: set ${TARGET_CHAP_SECRET_ENV} or give --target-chap-secret-file FILE`,
    );
  if (targetUser === undefined && targetSecret !== undefined)
    throw new UsageError(
      `a target CHAP secret was given (${targetSecret.source}) but no --target-chap-user NAME`,
    );
  if (targetUser !== undefined && username === undefined)
    throw new UsageError(
      '--target-chap-user needs CHAP for the initiator too (mutual CHAP): give the CHAP user and secret',
    );

  const initiatorName = str('initiator-name');
  if (initiatorName !== undefined && !isIscsiName(initiatorName))
    throw new UsageError(
      `--initiator-name must be an iSCSI name such as iqn.2024-01.com.example:backup-host (iqn., eui. or naa.), got '${initiatorName}'`,
    );

  const options: DeviceArgs['options'] = {};
  if (username !== undefined && secret !== undefined) {
    options.chap = {
      username,
      secret: secret.value,
      ...(targetUser !== undefined && targetSecret !== undefined
        ? { target: { username: targetUser, secret: targetSecret.value } }
        : {}),
    };
  }
  if (initiatorName !== undefined) options.initiatorName = initiatorName;
  return { address, options };
}

/**
 * The user part of an `iscsi://USER@HOST/…` URL, refusing anything that looks like a password
 * in it (libiscsi's `USER%PASSWORD@` or `USER:PASSWORD@`) without echoing it.
 */
function urlUsername(address: string): string | undefined {
  const authority = /^iscsi:\/\/([^/]*)/i.exec(address)?.[1] ?? '';
  const at = authority.lastIndexOf('@');
  if (at < 0) return undefined;
  const user = authority.slice(0, at);
  if (/[%:]/.test(user))
    throw new UsageError(
      `the iscsi:// URL must not carry a CHAP secret (USER%SECRET@ or USER:SECRET@ is visible to every user in 'ps'): use iscsi://USER@HOST/… with ${CHAP_SECRET_ENV} or --chap-secret-file FILE`,
    );
  if (user.length === 0) throw new UsageError('the iscsi:// URL has an empty user before @');
  return user;
}

function isIscsiName(name: string): boolean {
  return /^(iqn\.\d{4}-\d{2}\.[^\s]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$/.test(name);
}

interface Secret {
  value: string;
  /** Where it came from, for messages: `--chap-secret-file FILE` or `$LBA_STATUS_CHAP_SECRET`. */
  source: string;
}

/** The secret from `--FLAG FILE` when given, else from `$ENV` when set; registered for redaction. */
async function secretFrom(
  io: CliIo,
  file: string | undefined,
  env: string,
  flag: string,
): Promise<Secret | undefined> {
  let value: string;
  let source: string;
  if (file !== undefined) {
    value = await readSecretFile(file, flag);
    source = `--${flag} ${file}`;
  } else {
    const fromEnv = io.env[env];
    if (fromEnv === undefined || fromEnv === '') return undefined;
    value = fromEnv;
    source = `$${env}`;
  }
  registerSecret(io, value);
  return { value, source };
}

/**
 * Reads a secret file like ssh reads a private key: refused (usage error) when group or others
 * have any access to it, or when it is empty; one trailing newline (`\n` or `\r\n`) is dropped.
 */
export async function readSecretFile(file: string, flag: string): Promise<string> {
  if (file.length === 0) throw new UsageError(`--${flag} needs a file name`);
  let text: string;
  try {
    // One open for the check and the read: the file cannot be swapped in between.
    const handle = await open(file, 'r');
    try {
      const st = await handle.stat();
      if (st.isDirectory()) throw new UsageError(`--${flag} ${file}: is a directory`);
      if ((st.mode & 0o077) !== 0)
        throw new UsageError(
          `--${flag} ${file}: permissions ${(st.mode & 0o777).toString(8).padStart(4, '0')} are too open (group or others can access it); run: chmod 600 ${file}`,
        );
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (error) {
    if (error instanceof UsageError) throw error;
    const e = error as NodeJS.ErrnoException;
    throw new UsageError(`--${flag} ${file}: cannot read it (${e.code ?? e.message})`);
  }
  const secret = text.replace(/\r?\n$/, '');
  if (secret.length === 0) throw new UsageError(`--${flag} ${file}: the file is empty`);
  return secret;
}
