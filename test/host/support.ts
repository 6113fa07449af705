// Helpers for the host integration tests (test/host/): the built CLI (dist/cli.js) run as an
// unprivileged user against targets the tests start themselves on 127.0.0.1 — `lba-status sim
// serve` and the host's own tgtd — with oracles that never use lib/ code: a naive bitmap of
// change blocks, qemu-img (libiscsi) reading the same target, and tgt's backing file.
//
// Privileges: as root, every client command runs as `nobody` through util-linux `setpriv`
// (no capabilities, no supplementary groups, a clean environment); as any other user it runs
// as that user, which is unprivileged already. Tests that need root themselves (tgtd) or a tool
// that is missing are skipped with the reason — and fail instead under CI (CI=true) or
// LBA_STATUS_REQUIRE_GUEST=1 / LBA_STATUS_REQUIRE_HOST=1, the way the guest tests do.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chownSync,
  cpSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expectedChangedRuns, testPrng } from '../support/oracle.js';
import { describeIf, REQUIRED } from '../support/require.js';

export { describeIf, REQUIRED };

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = join(ROOT, 'dist/cli.js');

const env = process.env;

export const IS_ROOT = process.getuid?.() === 0;

function sh(cmd: string, args: string[]): { status: number | null; stdout: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 });
  return { status: r.error ? null : r.status, stdout: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

function idOf(flag: '-u' | '-g', user: string): number | undefined {
  const r = sh('id', [flag, user]);
  return r.status === 0 ? Number(r.stdout.trim()) : undefined;
}

/** Who runs the client, and how. */
export interface ClientUser {
  /** e.g. `nobody (uid 65534 via setpriv)` or `uid 1000` */
  label: string;
  uid: number;
  gid: number;
  /** The command prefix that drops privileges (empty when not root). */
  prefix: string[];
}

let cachedUser: { user?: ClientUser; reason?: string } | undefined;

function remember(v: { user?: ClientUser; reason?: string }): typeof v {
  cachedUser = v;
  return v;
}

/** The unprivileged client user, or the reason there is none. */
export function clientUser(): { user?: ClientUser; reason?: string } {
  if (cachedUser) return cachedUser;
  if (process.platform !== 'linux') return remember({ reason: 'not Linux' });
  if (!IS_ROOT) {
    const uid = process.getuid?.() ?? -1;
    const gid = process.getgid?.() ?? -1;
    return remember({ user: { label: `uid ${uid} (not root)`, uid, gid, prefix: [] } });
  }
  const uid = idOf('-u', 'nobody');
  const gid = idOf('-g', 'nobody');
  if (uid === undefined || gid === undefined) return remember({ reason: 'no user `nobody`' });
  if (sh('setpriv', ['--version']).status !== 0)
    return remember({
      reason: 'setpriv not found: run `bash scripts/setup-system.sh` (util-linux)',
    });
  const prefix = [
    'setpriv',
    `--reuid=${uid}`,
    `--regid=${gid}`,
    '--clear-groups',
    '--inh-caps=-all',
    '--',
  ];
  const user = { label: `nobody (uid ${uid}, via setpriv)`, uid, gid, prefix };
  // nobody loads the CLI and its dependencies: from the checkout when it can read it, else from
  // a copy of what the built CLI needs at run time (a checkout under a private home directory).
  const readable = (cli: string) =>
    sh(prefix[0]!, [
      ...prefix.slice(1),
      'node',
      '-e',
      `require('fs').accessSync(${JSON.stringify(cli)}, 4)`,
    ]).status === 0;
  if (!readable(CLI)) {
    clientRoot = runtimeCopy();
    if (!readable(join(clientRoot, 'dist/cli.js')))
      return remember({
        reason: `neither ${CLI} nor a copy in ${clientRoot} is readable by nobody`,
      });
  }
  return remember({ user });
}

let clientRoot = ROOT;
/** Where the client user loads the CLI from: the checkout, or a readable copy of its run time. */
export function clientRootDir(): string {
  clientUser();
  return clientRoot;
}

/**
 * dist/, build/ (the addon), package.json, the demo scripts and the production dependencies
 * (package.json `dependencies`, transitively, from node_modules), world-readable, in a temporary
 * directory named after the checkout and the build, shared by the test files (made once, renamed
 * into place; a later build gets a new one).
 */
function runtimeCopy(): string {
  const stamp = createHash('sha256')
    .update(`${ROOT}:${statSync(CLI).mtimeMs}`)
    .digest('hex')
    .slice(0, 12);
  const final = join(tmpdir(), `lba-host-runtime-${stamp}`);
  if (existsSync(join(final, 'dist/cli.js'))) return final;
  const dir = mkdtempSync(`${final}.tmp-`);
  const copy = (rel: string) => {
    if (existsSync(join(ROOT, rel)))
      cpSync(join(ROOT, rel), join(dir, rel), { recursive: true, dereference: true });
  };
  for (const rel of ['package.json', 'dist', 'build', 'prebuilds']) copy(rel);
  for (const f of ['demo.mjs', 'demo-guest.mjs', 'demo-volume.mjs']) copy(join('scripts', f));
  const seen = new Set<string>();
  const visit = (name: string) => {
    if (seen.has(name) || !existsSync(join(ROOT, 'node_modules', name, 'package.json'))) return;
    seen.add(name);
    copy(join('node_modules', name));
    const pkg = JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8'));
    for (const dep of Object.keys(pkg.dependencies ?? {})) visit(dep);
  };
  const own = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  for (const dep of Object.keys(own.dependencies ?? {})) visit(dep);
  sh('chmod', ['-R', 'a+rX', dir]);
  try {
    renameSync(dir, final);
  } catch {
    rmSync(dir, { recursive: true, force: true }); // another test file was first
  }
  return final;
}

/** Inside a test: skip it for `reason` (or fail under CI / LBA_STATUS_REQUIRE_*). */
export function skipUnless(ctx: { skip(note?: string): void }, reason: string | undefined): void {
  if (!reason) return;
  if (REQUIRED) throw new Error(`cannot run: ${reason} (CI: a skipped host test is a failure)`);
  ctx.skip(reason);
}

/** The first missing prerequisite of the CLI tests, or undefined. */
export function cliReason(): string | undefined {
  if (!existsSync(CLI)) return `${CLI} is missing: run \`npm run build:ts\``;
  return clientUser().reason;
}

/** Why qemu-img cannot read iscsi:// here, or undefined. */
export function qemuImgReason(): string | undefined {
  const r = sh('qemu-img', ['--help']);
  if (r.status === null)
    return 'qemu-img not found: run `bash scripts/setup-system.sh` (qemu-utils, qemu-block-extra)';
  const formats = /Supported formats:(.*)/.exec(r.stdout)?.[1] ?? '';
  if (!/\biscsi\b/.test(formats))
    return 'qemu-img has no iscsi driver: install qemu-block-extra (scripts/setup-system.sh)';
  return undefined;
}

/** Why the host's tgtd cannot be started by the test, or undefined. */
export function tgtReason(): string | undefined {
  if (!IS_ROOT) return 'not root (the test starts its own tgtd, which needs root)';
  if (sh('tgtadm', ['--help']).status === null || !existsSync('/usr/sbin/tgtd'))
    return 'tgtd/tgtadm not found: run `bash scripts/setup-system.sh` (tgt)';
  return undefined;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface RunOptions {
  /** Extra environment (the child gets PATH, HOME, TMPDIR, LANG and this only). */
  env?: Record<string, string>;
  cwd?: string;
  timeoutMs?: number;
}

/** Runs `file args` as the unprivileged client user. Never rejects on a non-zero exit. */
export function runAsClient(
  file: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<RunResult> {
  const { user, reason } = clientUser();
  if (!user) throw new Error(`no unprivileged user: ${reason}`);
  const argv = [...user.prefix, file, ...args];
  return runCommand(argv[0]!, argv.slice(1), opts);
}

/** Runs the built CLI (`node dist/cli.js ARGS`) as the unprivileged client user. */
export function runCli(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return runAsClient(process.execPath, [join(clientRootDir(), 'dist/cli.js'), ...args], opts);
}

/** Runs a command as the test's own user. */
export function runCommand(
  file: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<RunResult> {
  const started = Date.now();
  return new Promise((done, fail) => {
    const child = spawn(file, args, {
      cwd: opts.cwd ?? tmpdir(),
      env: {
        PATH: env.PATH ?? '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin',
        HOME: tmpdir(),
        // The test run's TMPDIR (scripts/test.mjs checks that it ends empty), not /tmp.
        TMPDIR: tmpdir(),
        LANG: 'C.UTF-8',
        ...opts.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      fail(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      done({
        code: code ?? (signal === 'SIGKILL' ? 137 : 128),
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        ms: Date.now() - started,
      });
    });
  });
}

/** A temporary directory the client user can write (owned by it), removed by `remove()`. */
export function clientDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `lba-host-${prefix}-`));
  const { user } = clientUser();
  if (IS_ROOT && user) chownSync(path, user.uid, user.gid);
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A TCP port on 127.0.0.1 that was free a moment ago (and is closed now). */
export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

// Every long-running child this module starts, so that a failed test still stops it.
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) if (c.pid !== undefined && c.exitCode === null) c.kill('SIGKILL');
});

/** Sends SIGTERM, then SIGKILL after `graceMs`; resolves when the child has exited. */
async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    children.delete(child);
    return;
  }
  await new Promise<void>((done) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      done();
    });
    child.kill('SIGTERM');
  });
  children.delete(child);
}

export interface SimServer {
  host: string;
  port: number;
  portal: string;
  iqn: string;
  lun: number;
  /** `iscsi://[user@]127.0.0.1:PORT/IQN/LUN` */
  url(user?: string): string;
  /** What the server wrote on stderr so far. */
  log(): string;
  stop(): Promise<void>;
}

/**
 * Starts `lba-status sim serve --port 0 ARGS` (the built CLI) as a child process of the test,
 * as the test's user, and waits for its ready line.
 */
export async function startSimServe(args: readonly string[]): Promise<SimServer> {
  const child = spawn(process.execPath, [CLI, 'sim', 'serve', '--port', '0', ...args], {
    cwd: tmpdir(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const ready = await new Promise<string>((done, fail) => {
    const timer = setTimeout(
      () => fail(new Error(`sim serve did not start in 20 s: ${stderr}`)),
      20_000,
    );
    child.stdout!.on('data', (c: Buffer) => {
      stdout += c.toString();
      const nl = stdout.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        done(stdout.slice(0, nl));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`sim serve exited ${code} before its ready line: ${stderr.trim()}`));
    });
  });
  const info = JSON.parse(ready) as { iscsi: { portal: string; iqn: string; lun: number } };
  const [host, port] = info.iscsi.portal.split(':');
  return {
    host: host!,
    port: Number(port),
    portal: info.iscsi.portal,
    iqn: info.iscsi.iqn,
    lun: info.iscsi.lun,
    url: (user) =>
      `iscsi://${user ? `${user}@` : ''}${info.iscsi.portal}/${info.iscsi.iqn}/${info.iscsi.lun}`,
    log: () => stderr,
    stop: () => stopChild(child),
  };
}

// ---------------------------------------------------------------------------------------------
// Oracles (no lib/ code)

export interface ByteRange {
  offset: number;
  length: number;
}

/** The tests' seeded generator (one definition: test/support/oracle.ts). */
export const prng = testPrng;

/**
 * `count` random byte ranges inside a volume of `sizeBytes` (any offsets and lengths, overlaps
 * allowed), each at most `maxLength` bytes; always includes one range touching the last byte.
 */
export function randomByteRanges(
  seed: number,
  sizeBytes: number,
  count: number,
  maxLength: number,
): ByteRange[] {
  const next = prng(seed);
  const out: ByteRange[] = [];
  for (let i = 0; i < count - 1; i++) {
    const length = 1 + Math.floor(next() * maxLength);
    const offset = Math.floor(next() * (sizeBytes - length));
    out.push({ offset, length });
  }
  out.push({ offset: sizeBytes - 1 - Math.floor(next() * 1000), length: 1 });
  out[out.length - 1]!.length = sizeBytes - out[out.length - 1]!.offset;
  return out;
}

/** Runs of set entries of a 0/1 array as [start, end) pairs. */
export function runsOf(bits: Uint8Array): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let start = -1;
  for (let i = 0; i <= bits.length; i++) {
    const set = i < bits.length && bits[i] === 1;
    if (set && start < 0) start = i;
    else if (!set && start >= 0) {
      out.push([start, i]);
      start = -1;
    }
  }
  return out;
}

/**
 * The changed LBAs the simulator must report for `ranges` as [start, end) runs: the shared
 * naive change-block bitmap of test/support/oracle.ts.
 */
export function expectedChangedLbas(
  ranges: readonly ByteRange[],
  sizeBytes: number,
  changeBlockSize: number,
  blockSize: number,
): Array<[number, number]> {
  return expectedChangedRuns(ranges, { sizeBytes, changeBlockSize, blockSize });
}

export interface ScannedExtent {
  lba: number;
  blocks: number;
  status: number;
  additional: number;
}

/** Parses `scan` ndjson output (strict: every line one extent object with exact integers). */
export function parseNdjson(text: string): ScannedExtent[] {
  const out: ScannedExtent[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const e = JSON.parse(line) as ScannedExtent;
    for (const k of ['lba', 'blocks', 'status', 'additional'] as const) {
      if (!Number.isSafeInteger(e[k])) throw new Error(`bad ndjson line (${k}): ${line}`);
    }
    out.push(e);
  }
  return out;
}

/**
 * The LBAs that extents mark changed (every status but deallocated, 1), as [start, end) runs,
 * from a per-LBA bitmap; throws if an extent overlaps another or passes the capacity.
 */
export function changedLbasOf(
  extents: readonly ScannedExtent[],
  capacity: number,
): Array<[number, number]> {
  const seen = new Uint8Array(capacity);
  const changed = new Uint8Array(capacity);
  for (const e of extents) {
    if (e.blocks <= 0 || e.lba + e.blocks > capacity)
      throw new Error(`extent outside the volume: ${JSON.stringify(e)}`);
    for (let i = e.lba; i < e.lba + e.blocks; i++) {
      if (seen[i]) throw new Error(`LBA ${i} reported twice (${JSON.stringify(e)})`);
      seen[i] = 1;
      if (e.status !== 1) changed[i] = 1;
    }
  }
  return runsOf(changed);
}

// ---------------------------------------------------------------------------------------------
// tgtd on the host

export interface Tgt {
  port: number;
  controlPort: number;
  iqn: string;
  url: string;
  log(): string;
  stop(): Promise<void>;
}

/**
 * Starts the host's tgtd (as root) on its own control port and TCP port (127.0.0.1 only) with
 * LUN 1 backed by `backing` (thin provisioned). `stop()` deletes the target, stops tgtd and
 * removes its control socket files, also after a failed start.
 */
export async function startTgt(backing: string, iqn: string): Promise<Tgt> {
  let controlPort = 0;
  for (let i = 0; i < 100 && controlPort === 0; i++) {
    // tgtd takes control ports up to 32767 ("-C argument value '32768' out of range")
    const candidate = 10_000 + Math.floor(Math.random() * 22_768);
    if (!existsSync(`/var/run/tgtd/socket.${candidate}`)) controlPort = candidate;
  }
  const port = await freePort();
  // tgtd ignores SIGTERM: stop() asks it through tgtadm, then SIGKILL.
  const child = spawn(
    'tgtd',
    ['-f', '-C', String(controlPort), '--iscsi', `portal=127.0.0.1:${port}`],
    { stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  children.add(child);
  let log = '';
  child.stdout!.on('data', (c: Buffer) => {
    log += c.toString();
  });
  child.stderr!.on('data', (c: Buffer) => {
    log += c.toString();
  });
  const tgtadm = (args: string[]) =>
    runCommand('tgtadm', ['-C', String(controlPort), ...args], { timeoutMs: 30_000 });
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      await tgtadm([
        '--lld',
        'iscsi',
        '--op',
        'delete',
        '--force',
        '--mode',
        'target',
        '--tid',
        '1',
      ]);
      await tgtadm(['--op', 'delete', '--mode', 'system']);
      await new Promise<void>((done) => {
        if (child.exitCode !== null || child.signalCode !== null) return done();
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        child.once('exit', () => {
          clearTimeout(timer);
          done();
        });
      });
    }
    children.delete(child);
    for (const f of [`socket.${controlPort}`, `socket.${controlPort}.lock`])
      rmSync(join('/var/run/tgtd', f), { force: true });
  };
  try {
    let up = false;
    for (let i = 0; i < 100 && !up; i++) {
      if (child.exitCode !== null) throw new Error(`tgtd exited ${child.exitCode}: ${log}`);
      up = (await tgtadm(['--op', 'show', '--mode', 'system'])).code === 0;
      if (!up) await new Promise((r) => setTimeout(r, 100));
    }
    if (!up) throw new Error(`tgtd did not answer on control port ${controlPort}: ${log}`);
    const t = ['--lld', 'iscsi'];
    for (const args of [
      [...t, '--op', 'new', '--mode', 'target', '--tid', '1', '-T', iqn],
      [...t, '--op', 'new', '--mode', 'logicalunit', '--tid', '1', '--lun', '1', '-b', backing],
      [...t, '--op', 'update', '--mode', 'logicalunit', '--tid', '1', '--lun', '1'],
      [...t, '--op', 'bind', '--mode', 'target', '--tid', '1', '-I', 'ALL'],
    ]) {
      if (args.includes('update')) args.push('--params', 'thin_provisioning=1');
      const r = await tgtadm(args);
      if (r.code !== 0) throw new Error(`tgtadm ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    port,
    controlPort,
    iqn,
    url: `iscsi://127.0.0.1:${port}/${iqn}/1`,
    log: () => log,
    stop,
  };
}
