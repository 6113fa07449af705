/**
 * iscsiadm through execFile (never a shell), serialised per host, exit codes mapped to
 * {@link IscsiadmError}; benign codes (15 on login, 21 on logout/delete) are success.
 *
 * CHAP: iscsiadm takes a node setting only as `-o update -n NAME -v VALUE` on its command line
 * (no stdin or file form), so the secret is in that one short-lived process's argv. We keep it out
 * of everything we control: it is redacted from errors, progress and logs, and the provisioner
 * attaches with `useChap: false`, so a secret only exists when the service demands CHAP.
 */
import { execFile } from 'node:child_process';
import { IscsiadmError } from './errors.js';
import { withHostLock } from './host-lock.js';

export interface IscsiadmOptions {
  /** iscsiadm binary (default `iscsiadm` from PATH). */
  binary?: string;
  /** Lock file serialising iscsiadm on this host. */
  lockPath?: string;
  /** Per-command timeout (default 120 s); the child is killed with SIGKILL after it. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/** An iSCSI target as OCI reports an attachment: IQN and portal (not lba-status/sim's IscsiTarget server). */
export interface IscsiPortalTarget {
  iqn: string;
  /** IPv4 or IPv6 address of the portal. */
  address: string;
  port: number;
}

/** CHAP user and secret for iscsiadm (node.session.auth.*). */
export interface IscsiadmChap {
  username: string;
  secret: string;
}

/** `ip:port`, or `[ipv6]:port`. */
export function portalOf(t: IscsiPortalTarget): string {
  return t.address.includes(':') ? `[${t.address}]:${t.port}` : `${t.address}:${t.port}`;
}

export const DEFAULT_LOCK_PATH = '/run/lock/lba-status-iscsiadm.lock';

export class Iscsiadm {
  readonly binary: string;
  readonly lockPath: string;
  readonly timeoutMs: number;
  readonly #env: NodeJS.ProcessEnv | undefined;

  constructor(options: IscsiadmOptions = {}) {
    this.binary = options.binary ?? 'iscsiadm';
    this.lockPath = options.lockPath ?? DEFAULT_LOCK_PATH;
    this.timeoutMs = options.timeoutMs ?? 120_000;
    this.#env = options.env;
  }

  /** Runs iscsiadm with `args`; `ok` lists extra exit codes that mean success. `secret` is redacted. */
  run(
    args: string[],
    ok: readonly number[] = [],
    secret?: string,
  ): Promise<{ exitCode: number; stdout: string }> {
    const shown = secret === undefined ? args : args.map((a) => (a === secret ? '***' : a));
    return withHostLock(
      { path: this.lockPath },
      () =>
        new Promise((resolve, reject) => {
          execFile(
            this.binary,
            args,
            {
              timeout: this.timeoutMs,
              killSignal: 'SIGKILL',
              env: this.#env ?? process.env,
              maxBuffer: 4 << 20,
            },
            (error, stdout, stderr) => {
              const clean = (s: string) => (secret ? s.split(secret).join('***') : s);
              if (!error) {
                resolve({ exitCode: 0, stdout: clean(String(stdout)) });
                return;
              }
              const e = error as NodeJS.ErrnoException & {
                code?: number | string;
                signal?: string | null;
              };
              if (e.code === 'ENOENT') {
                reject(new IscsiadmError(127, null, shown, `${this.binary}: not found`));
                return;
              }
              const exitCode = typeof e.code === 'number' ? e.code : null;
              if (exitCode !== null && ok.includes(exitCode)) {
                resolve({ exitCode, stdout: clean(String(stdout)) });
                return;
              }
              reject(new IscsiadmError(exitCode, e.signal ?? null, shown, clean(String(stderr))));
            },
          );
        }),
    );
  }

  private nodeArgs(t: IscsiPortalTarget): string[] {
    return ['-m', 'node', '-T', t.iqn, '-p', portalOf(t)];
  }

  /** Creates the node record (no discovery needed), startup manual, CHAP when given. */
  async addNode(t: IscsiPortalTarget, chap?: IscsiadmChap): Promise<void> {
    await this.run([...this.nodeArgs(t), '-o', 'new'], [15]);
    await this.update(t, 'node.startup', 'manual');
    if (chap) {
      await this.update(t, 'node.session.auth.authmethod', 'CHAP');
      await this.update(t, 'node.session.auth.username', chap.username);
      await this.update(t, 'node.session.auth.password', chap.secret, true);
    }
  }

  async update(t: IscsiPortalTarget, name: string, value: string, secret = false): Promise<void> {
    await this.run(
      [...this.nodeArgs(t), '-o', 'update', '-n', name, '-v', value],
      [],
      secret ? value : undefined,
    );
  }

  /** Logs in; "already logged in" (15) is success. */
  async login(t: IscsiPortalTarget): Promise<void> {
    await this.run([...this.nodeArgs(t), '-l'], [15]);
  }

  /** Logs out; "no session" (21) is success, and so is a missing iscsiadm (it made nothing). */
  async logout(t: IscsiPortalTarget): Promise<void> {
    refuseBootTarget(t);
    await this.run([...this.nodeArgs(t), '-u'], [21]).catch(ignoreMissingBinary);
  }

  /** Deletes the node record; "no record" (21) is success, and so is a missing iscsiadm. */
  async deleteNode(t: IscsiPortalTarget): Promise<void> {
    refuseBootTarget(t);
    await this.run([...this.nodeArgs(t), '-o', 'delete'], [21]).catch(ignoreMissingBinary);
  }
}

function ignoreMissingBinary(err: unknown): void {
  if (
    err instanceof IscsiadmError &&
    err.exitCode === 127 &&
    err.signal === null &&
    / not found$/.test(err.stderr)
  )
    return;
  throw err;
}

/** Never log out of or delete an instance's boot target (OCI names them …boot:uefi). */
function refuseBootTarget(t: IscsiPortalTarget): void {
  if (/boot:uefi$/i.test(t.iqn)) {
    throw new IscsiadmError(7, null, ['-T', t.iqn], `refusing to touch the boot target ${t.iqn}`);
  }
}
