// Helpers for tests that run inside the UML guest (scripts/guest/README.md). They drive the
// device with sg3_utils and dd, independently of the library under test, so they double as the
// oracle: sgGetLbaStatus() is sg_get_lba_status (sg3_utils 1.46) in brief mode, parsed.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type TargetKind = 'scsi_debug' | 'tgt';

/** The device a guest scenario prepared (scripts/guest/scenarios/*.sh), from the environment. */
export interface Scenario {
  /** Scenario name given by the runner, e.g. `scsi-debug`, `scsi-debug-4k`, `tgt-iscsi`. */
  name: string;
  target: TargetKind;
  /** The LUN's sg node, e.g. `/dev/sg0`. */
  sg: string;
  /** The LUN's block device, e.g. `/dev/sda`. */
  block: string;
  blockSize: number;
  capacityBlocks: number;
  /** scsi_debug only: blocks per provisioning granule (1 = every block on its own). */
  unmapGranularity?: number;
  /** tgt only: the sparse backing file on tmpfs, and the target id. */
  backing?: string;
  tgtTid?: number;
}

const env = (name: string): string | undefined => process.env[`LBA_STATUS_TEST_${name}`];

/** True when running inside a guest scenario (the runner exported the device paths). */
export function inGuest(): boolean {
  return env('SG') !== undefined && env('BLOCK') !== undefined;
}

/** The device the current guest scenario prepared; throws outside the guest. */
export function scenario(): Scenario {
  const sg = env('SG');
  const block = env('BLOCK');
  if (!sg || !block) {
    throw new Error(
      'LBA_STATUS_TEST_SG/LBA_STATUS_TEST_BLOCK are not set: guest tests run only inside the UML ' +
        'guest; use `npm run test:guest` (scripts/guest/README.md)',
    );
  }
  const int = (name: string): number | undefined => {
    const v = env(name);
    return v === undefined || v === '' ? undefined : Number.parseInt(v, 10);
  };
  const target = env('TARGET') === 'tgt' ? 'tgt' : 'scsi_debug';
  return {
    name: env('SCENARIO') ?? target,
    target,
    sg,
    block,
    blockSize: int('BLOCK_SIZE') ?? 512,
    capacityBlocks: int('CAPACITY_BLOCKS') ?? 0,
    unmapGranularity: int('UNMAP_GRANULARITY'),
    backing: env('BACKING'),
    tgtTid: int('TGT_TID'),
  };
}

export interface RunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs a program; resolves with its exit code and output (never rejects on a non-zero exit). */
export function run(file: string, args: readonly string[], timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        reject(
          Object.assign(new Error(`${file} ${args.join(' ')}: ${err.message}`), { cause: err }),
        );
        return;
      }
      resolve({ exitCode: err ? Number(err.code) : 0, stdout, stderr });
    });
  });
}

/** Error from a helper command, with its exit code (sg3_utils: 5 illegal request, 9 invalid op). */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number,
    readonly stderr: string,
  ) {
    super(`${command} exited ${exitCode}: ${stderr.trim()}`);
    this.name = 'CommandError';
  }
}

async function check(file: string, args: readonly string[]): Promise<RunResult> {
  const r = await run(file, args);
  if (r.exitCode !== 0) throw new CommandError(`${file} ${args.join(' ')}`, r.exitCode, r.stderr);
  return r;
}

export interface BlockRange {
  lba: number;
  blocks: number;
}

/**
 * The content writePattern() puts in one block: the LBA as a little-endian u64 repeated, XORed
 * with a per-byte counter so that no block is all zeros and blocks differ from one another.
 */
export function patternBlock(lba: number, blockSize: number): Buffer {
  const b = Buffer.alloc(blockSize);
  for (let off = 0; off < blockSize; off += 8) b.writeBigUInt64LE(BigInt(lba), off);
  for (let i = 0; i < blockSize; i++) b[i] = (b[i] ?? 0) ^ ((i * 7 + 1) & 0xff);
  return b;
}

/** The pattern content of a whole range (what writePattern wrote there). */
export function patternRange(range: BlockRange, blockSize: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < range.blocks; i++) parts.push(patternBlock(range.lba + i, blockSize));
  return Buffer.concat(parts);
}

/**
 * Writes patternBlock() data to each range with `dd oflag=direct` (O_DIRECT, so the writes reach
 * the device as WRITE commands and map the blocks, bypassing the page cache).
 */
export async function writePattern(
  blockDevice: string,
  blockSize: number,
  ranges: readonly BlockRange[],
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'lba-pattern-'));
  try {
    for (const range of ranges) {
      const file = join(dir, `${range.lba}.bin`);
      await writeFile(file, patternRange(range, blockSize));
      await check('dd', [
        `if=${file}`,
        `of=${blockDevice}`,
        `bs=${blockSize}`,
        `seek=${range.lba}`,
        `count=${range.blocks}`,
        'oflag=direct',
        'conv=notrunc,fsync',
        'status=none',
      ]);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Deallocates blocks with SCSI UNMAP (sg_unmap). scsi_debug clears only whole aligned granules. */
export async function unmap(device: string, lba: number, blocks: number): Promise<void> {
  await check('sg_unmap', ['--force', `--lba=${lba}`, `--num=${blocks}`, device]);
}

/** TEST UNIT READY, retried once after UNIT ATTENTION (sg_turs exit 6). Returns the exit code. */
export async function testUnitReady(device: string): Promise<number> {
  const first = await run('sg_turs', [device]);
  return first.exitCode === 6 ? (await run('sg_turs', [device])).exitCode : first.exitCode;
}

export interface OracleDescriptor {
  /** Exact: sg3_utils prints 64-bit LBAs. */
  lba: bigint;
  blocks: number;
  status: number;
  additional: number;
}

export interface OracleReply {
  /** Absent when sg_get_lba_status printed no descriptor (it then omits the header too). */
  completionCondition?: number;
  rtp?: number;
  descriptors: OracleDescriptor[];
  /** Raw brief output, for messages. */
  stdout: string;
}

export interface SgGetLbaStatusOptions {
  cdb?: 16 | 32;
  lba?: number | bigint;
  /** Allocation length in bytes (prefer 8 + 16·k); sg3_utils 1.46 defaults to 24. */
  maxlen?: number;
  /** SCAN LENGTH in blocks (32-byte CDB only). */
  scanLen?: number;
  reportType?: number;
}

/** Parses `sg_get_lba_status -b` output of sg3_utils 1.45–1.47 (Debian 12: 1.46). */
export function parseBrief(stdout: string): OracleReply {
  const reply: OracleReply = { descriptors: [], stdout };
  for (const line of stdout.split('\n')) {
    const t = line.trim();
    if (t === '' || t === 'No complete LBA status descriptors available') continue;
    const cc = /^Completion condition=(\d+)$/.exec(t);
    const rtp = /^RTP=(\d+)$/.exec(t);
    const d = /^0x([0-9a-f]{16}) {2}0x([0-9a-f]+) {2}(\d+) {2}(\d+)$/i.exec(t);
    if (cc) reply.completionCondition = Number(cc[1]);
    else if (rtp) reply.rtp = Number(rtp[1]);
    else if (d) {
      reply.descriptors.push({
        lba: BigInt(`0x${d[1]}`),
        blocks: Number.parseInt(d[2] ?? '', 16),
        status: Number(d[3]),
        additional: Number(d[4]),
      });
    } else throw new Error(`unexpected sg_get_lba_status -b line: ${JSON.stringify(line)}`);
  }
  return reply;
}

/**
 * One GET LBA STATUS command through sg3_utils' sg_get_lba_status (the oracle). Rejects with a
 * CommandError carrying sg3_utils' exit code when the command fails (5 = ILLEGAL REQUEST invalid
 * field, as scsi_debug answers the 32-byte form; 9 = invalid opcode, as tgt answers it).
 * Never send LBA 2^64-1 to scsi_debug: it crashes the guest kernel.
 */
export async function sgGetLbaStatus(
  device: string,
  opts: SgGetLbaStatusOptions = {},
): Promise<OracleReply> {
  const args = ['-b', `--maxlen=${opts.maxlen ?? 8 + 16 * 64}`, opts.cdb === 32 ? '--32' : '--16'];
  if (opts.lba !== undefined) args.push(`--lba=${opts.lba}`);
  if (opts.scanLen !== undefined) args.push(`--scan-len=${opts.scanLen}`);
  if (opts.reportType !== undefined) args.push(`--report-type=${opts.reportType}`);
  args.push(device);
  const r = await check('sg_get_lba_status', args);
  // 1.46 reports a transport error on stderr but exits 0 (fixed in 1.47 as exit 35).
  if (/transport/i.test(r.stderr)) {
    throw new CommandError(`sg_get_lba_status ${args.join(' ')}`, 35, r.stderr);
  }
  return parseBrief(r.stdout);
}
