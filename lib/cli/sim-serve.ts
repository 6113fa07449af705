/**
 * `lba-status sim serve`: serve a simulated OCI delta volume over iSCSI until SIGINT/SIGTERM.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type ByteExtent, ChangedMap } from '../sim/changed-map.js';
import { type OciSimulation, startOciSimulation } from '../sim/fake-oci/oci-simulation.js';
import { parseFault } from '../sim/faults.js';
import {
  changedByteExtents,
  DEFAULT_IQN,
  type SimulatorOptions,
  startSimulator,
} from '../sim/simulator.js';
import { resolveTargetLimits } from '../sim/target.js';
import { type CliCommand, type CliIo, UsageError } from './command.js';
import { readSecretFile } from './device-args.js';
import { ExitCode, parseCount, registerSecret, reportError } from './util.js';

const help = `Usage: lba-status sim serve --size BYTES (--changed FILE | --random-changes N --seed S) [options]

Serve a simulated OCI delta volume over iSCSI (a userspace target; no kernel module, no root).
The volume is LUN 1 of the target, read-only, thin provisioned; it answers GET LBA STATUS(32)
like OCI (report types 0-4, RTP=1, completion conditions 1/2/3, scan length at most 1 GiB of
blocks, 0 = 1 GiB of blocks from the starting LBA) and refuses GET LBA STATUS(16) unless
--gls16. Report type 1 lists the changed extents (mapped 3, deallocated 1); 0 lists every LBA,
the unchanged rest as deallocated; 2 the mapped extents; 3 every deallocated LBA (as 0 does).
Changed blocks read back deterministic data (bytes 0-7 = the LBA, 8-15 = --seed, both u64
big-endian, then big-endian u32 words of an xorshift32 stream from (LBA, seed): lba-status/sim
blockData); unchanged blocks read zeros. Every new session gets one UNIT ATTENTION (29h/00h),
as after a real login.

Once listening it prints one JSON line on stdout, then serves until SIGINT/SIGTERM:
  {"iscsi":{"portal":"127.0.0.1:3260","iqn":"...","lun":1},"changed":N}

Options:
  --size BYTES               volume size (suffixes K, M, G, T: 16T = 16 TiB); required
  --block-size 512|4096      logical block size (default 512)
  --change-block-size N      change granularity in bytes, a power of two >= the block size
                             (default 4096; OCI allows 4K to 1M)
  --changed FILE             JSON array of changed byte ranges (what was written between the
                             two backups): [{"offset": BYTES, "length": BYTES}, ...]; an item
                             may add "status": "deallocated" (changed to zeros). "-" reads
                             stdin. Served widened outward to whole change blocks and merged.
  --random-changes N         N random changed byte ranges instead (with --seed), drawn once in
                             whole logical blocks, independently of --change-block-size; kept
                             apart by up to 2 MiB so that, when the volume has room, a delta
                             at any change block size up to 1M has exactly N extents
  --seed S                   seed of the random draw and of the block data (default 0)
  --max-extent N             longest random range in logical blocks (default 64 KiB worth)
  --host ADDR                listen address (default 127.0.0.1)
  --port N                   TCP port (default 3260; 0 = any free port)
  --iqn IQN                  target name (default ${DEFAULT_IQN})
  --gls16                    also answer GET LBA STATUS(16) (OCI does not)
  --chap-user NAME           require CHAP authentication as NAME, with the secret read from
  --chap-secret-file FILE    FILE (one trailing newline dropped; refused unless only its owner
                             can read it: chmod 600)
  --chap USER:SECRET         the same on the command line (visible in 'ps': tests only)
  --no-unit-attention        no UNIT ATTENTION after login
  --fault SPEC               inject a fault; repeatable. SPEC = KIND[:key=value,...]
                             KIND: latency busy unit-attention not-ready task-set-full
                                   drop-connection gls-bad-length gls-overlap
                             keys: count=N (next N commands), p=0.1 (probability),
                                   seed=S, ms=N (latency), on=get-lba-status|read|any
  --dump-changed FILE        write the changed byte ranges, before widening (the format of
                             --changed): what the two backups differ by
  --dump-changed-at C FILE   write them widened to change block size C and merged (the same
                             format): the delta at C, as served; repeatable
  --oci-api                  also serve a fake OCI API (signed requests checked) whose two
                             backups (block volume backups) differ by these byte ranges: a
                             delta volume at any changeBlockSizeInBytes serves them widened to
                             it; adds "oci":{endpoint, configFile, profile, instanceId,
                             instanceIds, firstBackupId, secondBackupId} to the ready line
  --oci-api-chap             its attachments require CHAP, with a fresh secret per attachment
                             handed out as chapUsername/chapSecret (like OCI with useChap)
  --oci-api-port P           its port (default: any free port)
  --oci-dir DIR              where its OCI config file and key go (default: a new temp dir,
                             removed when sim serve stops)
  --instances N              instances in the fake tenancy (default 1, at most 1000), for a
                             fleet of workers: each attaches to its own (--instance-id, or
                             the metadata of one at ENDPOINT/imds/INSTANCE-OCID as --imds-url);
                             instanceId is the first, instanceIds lists them all
  --max-attachments N        volume attachments one instance may hold, not DETACHED (default
                             32, as most OCI shapes); one more: 400 LimitExceeded
  --volume-throughput MIB_S  read bandwidth of each delta volume in MiB/s, shared by its
                             connections, like a volume performance level (default unlimited)
  --max-connections N        iSCSI connections at once; more get login status 3/02 (default 32)
  --max-sessions N           sessions kept; the oldest one without a connection goes (default 1024)
  --session-retain S         seconds a session waits for a reconnect with its TSIH (default 20)
  --login-timeout S          seconds to complete login, else the connection closes (default 15)
  --max-login-pdus N         Login Requests per connection, C-bit ones included (default 32)
  --max-text-bytes N         bytes of one key=value set over continued PDUs (default 64K)
  --max-recv-data-segment N  MaxRecvDataSegmentLength declared; longer PDUs: Reject (default 256K)
  --reply-high-water N       queued reply bytes per connection that pause its reads (default 1M)
  --verbose                  log logins, faults and failed commands on stderr
  -h, --help                 show this help

Examples:
  # 1 GiB volume, 100 random changed extents, on the standard iSCSI port
  lba-status sim serve --size 1G --random-changes 100 --seed 7 --dump-changed map.json

  # 16 TiB volume with 4 KiB blocks and 1 MiB change blocks, any free port
  lba-status sim serve --size 16T --block-size 4096 --change-block-size 1M \\
    --random-changes 100000 --seed 1 --port 0

  # A given map; every third GET LBA STATUS is BUSY
  lba-status sim serve --size 64M --changed changed.json --fault busy:p=0.33,seed=1

  # CHAP; then scan with lba-status's own initiator (no root)
  lba-status sim serve --size 1G --random-changes 100 --port 3261 \
    --chap-user backup --chap-secret-file ./chap.secret
  lba-status scan iscsi://backup@127.0.0.1:3261/${DEFAULT_IQN}/1 --chap-secret-file ./chap.secret

  # A fake OCI tenancy; then oci delta without root, iscsiadm or iscsid
  lba-status sim serve --size 1G --random-changes 100 --seed 7 --port 0 --oci-api
  lba-status oci delta --attach userspace --endpoint URL --config-file F --instance-id I \
    --first-backup A --second-backup B

  # A fleet's tenancy: 3 instances of 2 attachments each, volumes read at 20 MiB/s
  lba-status sim serve --size 1G --random-changes 100 --seed 7 --port 0 --oci-api \
    --instances 3 --max-attachments 2 --volume-throughput 20

  # Then, as root, log in with the kernel initiator (OCI's procedure):
  iscsiadm -m node -o new -T ${DEFAULT_IQN} -p 127.0.0.1:3260
  iscsiadm -m node -T ${DEFAULT_IQN} -p 127.0.0.1:3260 --login
  sg_get_lba_status -T -t 1 -m 32768 -s 2097152 -l 0 /dev/sgN
  iscsiadm -m node -T ${DEFAULT_IQN} -p 127.0.0.1:3260 --logout
`;

function parseChangedJson(text: string, file: string): ByteExtent[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`--changed ${file}: not valid JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(value)) {
    throw new UsageError(`--changed ${file}: expected a JSON array of {"offset","length"} objects`);
  }
  return value.map((item, i) => {
    const o = item as Record<string, unknown>;
    if (
      !o ||
      typeof o !== 'object' ||
      typeof o.offset !== 'number' ||
      typeof o.length !== 'number'
    ) {
      throw new UsageError(`--changed ${file}: item ${i} needs numeric "offset" and "length"`);
    }
    const e: ByteExtent = { offset: o.offset, length: o.length };
    if (o.status !== undefined) {
      if (o.status !== 'mapped' && o.status !== 'deallocated') {
        throw new UsageError(`--changed ${file}: item ${i} "status" must be mapped or deallocated`);
      }
      e.status = o.status;
    }
    return e;
  });
}

/** The target's CHAP credentials: --chap USER:SECRET, or --chap-user with --chap-secret-file. */
async function chapOption(
  values: { chap?: string; 'chap-user'?: string; 'chap-secret-file'?: string },
  io: CliIo,
): Promise<SimulatorOptions['chap']> {
  const user = values['chap-user'];
  const file = values['chap-secret-file'];
  if (values.chap !== undefined) {
    if (user !== undefined || file !== undefined)
      throw new UsageError(
        'give --chap USER:SECRET or --chap-user with --chap-secret-file, not both',
      );
    const i = values.chap.indexOf(':');
    if (i <= 0 || i === values.chap.length - 1) throw new UsageError('--chap must be USER:SECRET');
    const secret = values.chap.slice(i + 1);
    registerSecret(io, secret);
    return { username: values.chap.slice(0, i), secret };
  }
  if (user === undefined && file === undefined) return undefined;
  if (user === undefined) throw new UsageError('--chap-secret-file needs --chap-user NAME');
  if (file === undefined)
    throw new UsageError('--chap-user needs --chap-secret-file FILE (the CHAP secret)');
  if (user.length === 0) throw new UsageError('--chap-user must not be empty');
  const secret = await readSecretFile(file, 'chap-secret-file');
  registerSecret(io, secret);
  return { username: user, secret };
}

/** The iSCSI target's limits from --max-connections and the other limit flags. */
function targetLimits(values: Record<string, unknown>): NonNullable<SimulatorOptions['limits']> {
  const n = (name: string, sizes = false): number | undefined =>
    parseCount(values[name] as string | undefined, name, { sizes });
  const timeout = n('login-timeout');
  const limits: NonNullable<SimulatorOptions['limits']> = {
    maxConnections: n('max-connections'),
    maxSessions: n('max-sessions'),
    sessionRetainSeconds: n('session-retain'),
    loginTimeoutMs: timeout === undefined ? undefined : timeout * 1000,
    maxLoginPdus: n('max-login-pdus'),
    maxTextBytes: n('max-text-bytes', true),
    maxRecvDataSegmentLength: n('max-recv-data-segment', true),
    replyHighWaterBytes: n('reply-high-water', true),
  };
  for (const k of Object.keys(limits) as Array<keyof typeof limits>) {
    if (limits[k] === undefined) delete limits[k];
  }
  try {
    resolveTargetLimits(limits);
  } catch (err) {
    const flag: Record<string, string> = {
      maxConnections: 'max-connections',
      maxSessions: 'max-sessions',
      sessionRetainSeconds: 'session-retain',
      loginTimeoutMs: 'login-timeout',
      maxLoginPdus: 'max-login-pdus',
      maxTextBytes: 'max-text-bytes',
      maxRecvDataSegmentLength: 'max-recv-data-segment',
      replyHighWaterBytes: 'reply-high-water',
    };
    const m = /^limits\.(\w+) must be an integer in (\d+)\.\.(\d+)/.exec((err as Error).message);
    if (!m) throw err;
    const scale = m[1] === 'loginTimeoutMs' ? 1000 : 1;
    throw new UsageError(
      `--${flag[m[1]!]} must be ${Math.ceil(Number(m[2]) / scale)}..${Number(m[3]) / scale}`,
    );
  }
  return limits;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Byte ranges as JSON in the --changed format (status only when deallocated). */
function changedJson(extents: readonly ByteExtent[]): string {
  return `${JSON.stringify(
    extents.map((e) =>
      e.status === 'deallocated'
        ? { offset: e.offset, length: e.length, status: e.status }
        : { offset: e.offset, length: e.length },
    ),
  )}\n`;
}

/** Takes every `--dump-changed-at C FILE` (two values) out of args. */
function takeDumpChangedAt(args: string[]): { rest: string[]; at: Array<[string, string]> } {
  const rest: string[] = [];
  const at: Array<[string, string]> = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      rest.push(...args.slice(i));
      break;
    }
    if (a !== '--dump-changed-at') {
      rest.push(a);
      continue;
    }
    const c = args[i + 1];
    const file = args[i + 2];
    if (c === undefined || file === undefined || c.startsWith('--') || file.startsWith('--'))
      throw new UsageError(
        '--dump-changed-at needs a change block size and a file: --dump-changed-at C FILE',
      );
    at.push([c, file]);
    i += 2;
  }
  return { rest, at };
}

async function run(argv: string[], io: CliIo): Promise<number> {
  try {
    const { rest: args, at: dumpAt } = takeDumpChangedAt(argv);
    const { values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        size: { type: 'string' },
        'block-size': { type: 'string' },
        'change-block-size': { type: 'string' },
        changed: { type: 'string' },
        'random-changes': { type: 'string' },
        seed: { type: 'string' },
        'max-extent': { type: 'string' },
        host: { type: 'string' },
        port: { type: 'string' },
        iqn: { type: 'string' },
        gls16: { type: 'boolean' },
        chap: { type: 'string' },
        'chap-user': { type: 'string' },
        'chap-secret-file': { type: 'string' },
        'no-unit-attention': { type: 'boolean' },
        fault: { type: 'string', multiple: true },
        'dump-changed': { type: 'string' },
        'oci-api': { type: 'boolean' },
        'oci-api-port': { type: 'string' },
        'oci-api-chap': { type: 'boolean' },
        'oci-dir': { type: 'string' },
        instances: { type: 'string' },
        'max-attachments': { type: 'string' },
        'volume-throughput': { type: 'string' },
        verbose: { type: 'boolean' },
        'max-connections': { type: 'string' },
        'max-sessions': { type: 'string' },
        'session-retain': { type: 'string' },
        'login-timeout': { type: 'string' },
        'max-login-pdus': { type: 'string' },
        'max-text-bytes': { type: 'string' },
        'max-recv-data-segment': { type: 'string' },
        'reply-high-water': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      io.stdout.write(help);
      return ExitCode.ok;
    }
    const sizeBytes = parseCount(values.size, 'size', { sizes: true });
    if (sizeBytes === undefined) throw new UsageError('--size is required (e.g. --size 1G)');
    const blockSize = parseCount(values['block-size'], 'block-size') ?? 512;
    if (blockSize !== 512 && blockSize !== 4096) {
      throw new UsageError(`--block-size must be 512 or 4096, got ${blockSize}`);
    }
    const changeBlockSize =
      parseCount(values['change-block-size'], 'change-block-size', { sizes: true }) ?? 4096;
    const seed = parseCount(values.seed, 'seed') ?? 0;
    const randomCount = parseCount(values['random-changes'], 'random-changes');
    if (values.changed !== undefined && randomCount !== undefined) {
      throw new UsageError('give either --changed FILE or --random-changes N, not both');
    }
    if (values.changed === undefined && randomCount === undefined) {
      throw new UsageError('give --changed FILE or --random-changes N --seed S');
    }
    let changed: SimulatorOptions['changed'];
    if (values.changed !== undefined) {
      const file = values.changed;
      let text: string;
      try {
        text = file === '-' ? await readStdin() : await readFile(file, 'utf8');
      } catch (err) {
        throw new UsageError(`--changed ${file}: ${(err as Error).message}`);
      }
      changed = parseChangedJson(text, file);
    } else {
      const maxExtent = parseCount(values['max-extent'], 'max-extent');
      changed = {
        random: randomCount!,
        seed,
        ...(maxExtent !== undefined ? { maxExtentBlocks: maxExtent } : {}),
      };
    }
    // The one set of changed bytes, drawn once: the served volume, every delta of the fake OCI
    // API and the dumps all come from it.
    let changedBytes: ByteExtent[];
    try {
      changedBytes = changedByteExtents({ sizeBytes, blockSize, changed });
    } catch (err) {
      if (err instanceof RangeError) throw new UsageError(err.message);
      throw err;
    }
    changed = changedBytes;
    const dumpsAt = dumpAt.map(([c, file]) => {
      const size = parseCount(c, 'dump-changed-at', { sizes: true })!;
      try {
        const map = ChangedMap.fromByteExtents(
          { sizeBytes, blockSize, changeBlockSize: size },
          changedBytes,
        );
        return { file, text: changedJson(map.byteExtents()) };
      } catch (err) {
        if (err instanceof RangeError)
          throw new UsageError(`--dump-changed-at ${c}: ${err.message}`);
        throw err;
      }
    });
    const port = parseCount(values.port, 'port') ?? 3260;
    const faults = (values.fault ?? []).map((f) => {
      try {
        return parseFault(f);
      } catch (err) {
        throw new UsageError(`--fault ${f}: ${(err as Error).message}`);
      }
    });
    const opts: SimulatorOptions = {
      sizeBytes,
      blockSize,
      changeBlockSize,
      changed,
      dataSeed: seed,
      host: values.host ?? '127.0.0.1',
      port,
      gls16: values.gls16 ?? false,
      faults,
      unitAttentionOnLogin: !values['no-unit-attention'],
    };
    if (values.iqn !== undefined) opts.iqn = values.iqn;
    opts.limits = targetLimits(values);
    const chap = await chapOption(values, io);
    if (chap) opts.chap = chap;
    for (const flag of ['oci-api-chap', 'instances', 'max-attachments', 'volume-throughput'])
      if (values[flag as 'instances'] !== undefined && !values['oci-api'])
        throw new UsageError(`--${flag} needs --oci-api`);
    const instances = parseCount(values.instances, 'instances');
    if (instances !== undefined && (instances < 1 || instances > 1000))
      throw new UsageError('--instances must be 1..1000');
    const maxAttachments = parseCount(values['max-attachments'], 'max-attachments');
    if (maxAttachments !== undefined && (maxAttachments < 1 || maxAttachments > 1024))
      throw new UsageError('--max-attachments must be 1..1024');
    let volumeThroughput: number | undefined;
    if (values['volume-throughput'] !== undefined) {
      const t = values['volume-throughput'];
      volumeThroughput = /^\d+(\.\d+)?$/.test(t.trim()) ? Number(t) : Number.NaN;
      if (!(volumeThroughput > 0 && volumeThroughput <= 1_000_000))
        throw new UsageError(`--volume-throughput must be MiB/s, a number > 0; got '${t}'`);
    }
    if (values.verbose) opts.log = (line) => io.stderr.write(`sim: ${line}\n`);
    if (io.signal.aborted) return ExitCode.aborted;

    let sim: Awaited<ReturnType<typeof startSimulator>>;
    try {
      sim = await startSimulator(opts);
    } catch (err) {
      const e = err as Error & { code?: string };
      if (e.code === 'EADDRINUSE' || e.code === 'EACCES') {
        io.stderr.write(
          `lba-status: cannot listen on ${opts.host}:${port}: ${e.code}` +
            (e.code === 'EACCES' ? ' (ports below 1024 need root)' : ' (choose another --port)') +
            '\n',
        );
        return ExitCode.system;
      }
      if (e instanceof RangeError) throw new UsageError(e.message);
      throw err;
    }
    let oci: OciSimulation | undefined;
    // The config/key directory this process made (no --oci-dir): removed when it stops.
    let createdOciDir: string | undefined;
    try {
      if (values['oci-api']) {
        if (sizeBytes % 2 ** 20 !== 0) throw new UsageError('--oci-api needs --size in whole MiB');
        const apiPort = parseCount(values['oci-api-port'], 'oci-api-port');
        let dir = values['oci-dir'];
        if (dir === undefined)
          dir = createdOciDir = await mkdtemp(join(tmpdir(), 'lba-status-oci-'));
        oci = await startOciSimulation({
          dir,
          ...(apiPort === undefined ? {} : { apiPort }),
          sizeBytes,
          blockSize,
          changed,
          dataSeed: seed,
          targetHost: opts.host ?? '127.0.0.1',
          ...(values['oci-api-chap'] ? { chap: true } : {}),
          ...(instances === undefined ? {} : { instances }),
          ...(maxAttachments === undefined ? {} : { maxAttachmentsPerInstance: maxAttachments }),
          ...(volumeThroughput === undefined
            ? {}
            : { volumeThroughputBytesPerSec: volumeThroughput * 2 ** 20 }),
          faults,
          ...(opts.log ? { log: opts.log } : {}),
        });
      }
      if (values['dump-changed'] !== undefined) {
        await writeFile(values['dump-changed'], changedJson(changedBytes), 'utf8');
      }
      for (const d of dumpsAt) await writeFile(d.file, d.text, 'utf8');
      io.stdout.write(
        `${JSON.stringify({
          iscsi: { portal: sim.portal, iqn: sim.iqn, lun: sim.lun },
          changed: sim.changedExtents.length,
          ...(oci
            ? {
                oci: {
                  endpoint: oci.info.endpoint,
                  configFile: oci.info.configFile,
                  profile: oci.info.profile,
                  instanceId: oci.info.instanceId,
                  instanceIds: oci.info.instanceIds,
                  firstBackupId: oci.info.firstBackupId,
                  secondBackupId: oci.info.secondBackupId,
                },
              }
            : {}),
        })}\n`,
      );
      await new Promise<void>((resolve) => {
        if (io.signal.aborted) resolve();
        else io.signal.addEventListener('abort', () => resolve(), { once: true });
      });
    } finally {
      await oci?.close();
      await sim.close();
      if (createdOciDir) await rm(createdOciDir, { recursive: true, force: true });
    }
    return ExitCode.ok;
  } catch (err) {
    if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      return reportError(new UsageError((err as Error).message), io);
    }
    return reportError(err, io);
  }
}

export const simServeCommand: CliCommand = {
  path: ['sim', 'serve'],
  summary: 'serve a simulated OCI delta volume over iSCSI (for tests and CI)',
  help,
  run,
};
