// SPDX-License-Identifier: Apache-2.0
/**
 * Structure-aware fuzzer for the iSCSI PDU codec (lib/iscsi/pdu.ts) and the streaming reader
 * (lib/iscsi/reader.ts), with fast-check: inputs are built from every PDU shape of RFC 7143 §11
 * with random fields, then (for the robustness properties) mutated where it hurts: opcode, flags,
 * TotalAHSLength, DataSegmentLength, AHS headers, truncation, trailing bytes.
 *
 * Properties (each gets a quarter of the time):
 * - roundtrip: decodePdu(splitPdu(encodePdu(p))) gives back every field of p (up to the
 *   documented normalisations), and re-encoding it gives the same bytes.
 * - mutated: splitPdu/decodePdu/decodeText on mutated or random bytes either return a PDU whose
 *   segments match its header, or throw IscsiProtocolError; never a TypeError/RangeError.
 * - reader: a stream of valid PDUs cut into random chunks comes out of PduReader as exactly those
 *   PDUs, in order; the first one whose data segment exceeds the limit is a PduTooLargeError from
 *   its BHS carrying the PDUs completed before it; after every push the reader holds less than
 *   one PDU of at most 48 + 1020 + limit bytes (its documented bound).
 * - stream: random bytes in random chunks: only IscsiProtocolError, and the same bound.
 *
 * Usage (normally through `npm run fuzz`): node build/fuzz/pdu-fuzz.mjs --seconds N (bundled from scripts/fuzz/ by scripts/fuzz.mjs) [--seed S]
 *   [--property NAME --path P]  (the last two replay a failure exactly, as its crash file says)
 */
import fc from 'fast-check';
import {
  BHS_LENGTH,
  decodePdu,
  encodePdu,
  IscsiProtocolError,
  Opcode,
  type Pdu,
  splitPdu,
} from '../../lib/iscsi/pdu.js';
import { PduReader, PduTooLargeError } from '../../lib/iscsi/reader.js';
import { decodeText } from '../../lib/iscsi/text.js';
import { type FuzzResult, fuzzArgs, report, writeCrash } from './common.js';

const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.oneof(
  fc.integer({ min: 0, max: 0xffffffff }),
  fc.constantFrom(0, 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff),
);
const lun = fc.oneof(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 0x3fff }));
const bool = fc.boolean();
const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));
const data = fc.oneof(
  { weight: 3, arbitrary: bytes(64) },
  { weight: 1, arbitrary: bytes(1200) },
  {
    weight: 1,
    arbitrary: fc
      .array(fc.tuple(fc.stringMatching(/^[A-Za-z][A-Za-z0-9_.]{0,20}$/), fc.string()), {
        maxLength: 6,
      })
      .map((pairs) => Buffer.from(pairs.map(([k, v]) => `${k}=${v}\0`).join(''))),
  },
);
const isid = fc.uint8Array({ minLength: 6, maxLength: 6 }).map((a) => Buffer.from(a));

/** Every PDU shape, fields within what the encoding can carry. */
const pduArb: fc.Arbitrary<Pdu> = fc.oneof(
  fc.record({
    opcode: fc.constant(Opcode.NopOut),
    immediate: bool,
    lun,
    itt: u32,
    ttt: u32,
    cmdSN: u32,
    expStatSN: u32,
    data,
  }),
  fc.record(
    {
      opcode: fc.constant(Opcode.ScsiCommand),
      immediate: bool,
      final: bool,
      read: bool,
      write: bool,
      attr: fc.integer({ min: 0, max: 7 }),
      lun,
      itt: u32,
      expectedDataTransferLength: u32,
      cmdSN: u32,
      expStatSN: u32,
      cdb: fc.uint8Array({ minLength: 6, maxLength: 64 }).map((a) => Buffer.from(a)),
      bidiReadLength: u32,
      data,
    },
    { requiredKeys: ['opcode', 'final', 'read', 'write', 'attr', 'lun', 'itt', 'cdb'] },
  ) as fc.Arbitrary<Pdu>,
  fc.record({
    opcode: fc.constant(Opcode.TaskMgmtRequest),
    immediate: bool,
    function: fc.integer({ min: 0, max: 0x7f }),
    lun,
    itt: u32,
    referencedTaskTag: u32,
    cmdSN: u32,
    expStatSN: u32,
    refCmdSN: u32,
    expDataSN: u32,
  }),
  fc.record({
    opcode: fc.constant(Opcode.LoginRequest),
    immediate: fc.constant(true),
    transit: bool,
    continue: bool,
    csg: fc.integer({ min: 0, max: 3 }),
    nsg: fc.integer({ min: 0, max: 3 }),
    versionMax: u8,
    versionMin: u8,
    isid,
    tsih: u16,
    itt: u32,
    cid: u16,
    cmdSN: u32,
    expStatSN: u32,
    data,
  }),
  fc.record({
    opcode: fc.constant(Opcode.TextRequest),
    immediate: bool,
    final: bool,
    continue: bool,
    lun,
    itt: u32,
    ttt: u32,
    cmdSN: u32,
    expStatSN: u32,
    data,
  }),
  fc.record({
    opcode: fc.constant(Opcode.DataOut),
    final: bool,
    lun,
    itt: u32,
    ttt: u32,
    expStatSN: u32,
    dataSN: u32,
    bufferOffset: u32,
    data,
  }),
  fc.record({
    opcode: fc.constant(Opcode.LogoutRequest),
    immediate: bool,
    reason: fc.integer({ min: 0, max: 0x7f }),
    itt: u32,
    cid: u16,
    cmdSN: u32,
    expStatSN: u32,
  }),
  fc.record({
    opcode: fc.constant(Opcode.Snack),
    type: fc.integer({ min: 0, max: 15 }),
    lun,
    itt: u32,
    ttt: u32,
    expStatSN: u32,
    begRun: u32,
    runLength: u32,
  }),
  fc.record({
    opcode: fc.constant(Opcode.NopIn),
    lun,
    itt: u32,
    ttt: u32,
    statSN: u32,
    expCmdSN: u32,
    maxCmdSN: u32,
    data,
  }),
  fc.record({
    opcode: fc.constant(Opcode.ScsiResponse),
    bidiOverflow: bool,
    bidiUnderflow: bool,
    overflow: bool,
    underflow: bool,
    response: u8,
    status: u8,
    itt: u32,
    snackTag: u32,
    statSN: u32,
    expCmdSN: u32,
    maxCmdSN: u32,
    expDataSN: u32,
    bidiResidualCount: u32,
    residualCount: u32,
    data,
  }),
  fc.record({
    opcode: fc.constant(Opcode.TaskMgmtResponse),
    response: u8,
    itt: u32,
    statSN: u32,
    expCmdSN: u32,
    maxCmdSN: u32,
  }),
  fc.record({
    opcode: fc.constant(Opcode.LoginResponse),
    transit: bool,
    continue: bool,
    csg: fc.integer({ min: 0, max: 3 }),
    nsg: fc.integer({ min: 0, max: 3 }),
    versionMax: u8,
    versionActive: u8,
    isid,
    tsih: u16,
    itt: u32,
    statSN: u32,
    expCmdSN: u32,
    maxCmdSN: u32,
    statusClass: u8,
    statusDetail: u8,
    data,
  }),
  fc.record({
    opcode: fc.constant(Opcode.TextResponse),
    final: bool,
    continue: bool,
    lun,
    itt: u32,
    ttt: u32,
    statSN: u32,
    expCmdSN: u32,
    maxCmdSN: u32,
    data,
  }),
  fc.record({
    opcode: fc.constant(Opcode.DataIn),
    final: bool,
    acknowledge: bool,
    overflow: bool,
    underflow: bool,
    hasStatus: bool,
    status: u8,
    lun,
    itt: u32,
    ttt: u32,
    statSN: u32,
    expCmdSN: u32,
    maxCmdSN: u32,
    dataSN: u32,
    bufferOffset: u32,
    residualCount: u32,
    data,
  }),
  fc.record({
    opcode: fc.constant(Opcode.LogoutResponse),
    response: u8,
    itt: u32,
    statSN: u32,
    expCmdSN: u32,
    maxCmdSN: u32,
    time2Wait: u16,
    time2Retain: u16,
  }),
  fc.record({
    opcode: fc.constant(Opcode.R2T),
    lun,
    itt: u32,
    ttt: u32,
    statSN: u32,
    expCmdSN: u32,
    maxCmdSN: u32,
    r2tSN: u32,
    bufferOffset: u32,
    desiredDataTransferLength: u32,
  }),
  fc.record({
    opcode: fc.constant(Opcode.AsyncMessage),
    lun,
    statSN: u32,
    expCmdSN: u32,
    maxCmdSN: u32,
    asyncEvent: u8,
    asyncVCode: u8,
    parameter1: u16,
    parameter2: u16,
    parameter3: u16,
  }),
  fc.record({
    opcode: fc.constant(Opcode.Reject),
    reason: u8,
    statSN: u32,
    expCmdSN: u32,
    maxCmdSN: u32,
    dataSN: u32,
    data,
  }),
) as fc.Arbitrary<Pdu>;

const KNOWN_OPCODES = new Set<number>(Object.values(Opcode));

class Broken extends Error {
  override name = 'InvariantBroken';
}
function check(ok: boolean, what: string): void {
  if (!ok) throw new Broken(what);
}

/** What decodePdu must give for field `key` of p (the encoding's documented normalisations). */
function expectedField(p: Pdu, key: string, value: unknown): unknown {
  if (p.opcode === Opcode.DataIn) {
    if ((key === 'status' || key === 'statSN') && !p.hasStatus) return 0;
    if (key === 'lun' && !p.acknowledge) return 0;
  }
  if (key === 'cdb' && Buffer.isBuffer(value) && value.length < 16) {
    return Buffer.concat([value, Buffer.alloc(16 - value.length)]);
  }
  return value;
}

function roundtrip(p: Pdu): void {
  const wire = encodePdu(p);
  check(wire.length % 4 === 0, 'encoded PDU length is a multiple of 4');
  const q = decodePdu(splitPdu(wire)) as unknown as Record<string, unknown>;
  for (const [key, value] of Object.entries(p)) {
    if (!(key in q)) continue;
    const want = expectedField(p, key, value);
    const got = q[key];
    if (Buffer.isBuffer(want)) {
      check(Buffer.isBuffer(got) && want.equals(got), `field ${key} round-trips`);
    } else {
      check(got === want, `field ${key} round-trips (${String(got)} vs ${String(want)})`);
    }
  }
  if (p.data && p.data.length > 0) check((q.data as Buffer).equals(p.data), 'data round-trips');
  check(encodePdu(q as unknown as Pdu).equals(wire), 're-encoding gives the same bytes');
}

type Edit =
  | { kind: 'set'; at: number; value: number }
  | { kind: 'truncate'; to: number }
  | { kind: 'append'; bytes: Uint8Array }
  | { kind: 'lengths'; ahsWords: number; dataLength: number };

const hotOffsets = fc.constantFrom(0, 1, 2, 3, 4, 5, 6, 7, 48, 49, 50, 51, 52);
const editArb: fc.Arbitrary<Edit> = fc.oneof(
  fc.record({
    kind: fc.constant('set' as const),
    at: fc.oneof(hotOffsets, fc.nat(600)),
    value: u8,
  }),
  fc.record({ kind: fc.constant('truncate' as const), to: fc.nat(600) }),
  fc.record({ kind: fc.constant('append' as const), bytes: fc.uint8Array({ maxLength: 64 }) }),
  fc.record({
    kind: fc.constant('lengths' as const),
    ahsWords: fc.oneof(fc.nat(4), u8),
    dataLength: fc.oneof(fc.nat(600), fc.integer({ min: 0, max: 0xffffff })),
  }),
);

function applyEdits(base: Buffer, edits: Edit[]): Buffer {
  let buf = Buffer.from(base);
  for (const e of edits) {
    if (e.kind === 'set') {
      if (buf.length > 0) buf[e.at % buf.length] = e.value;
    } else if (e.kind === 'truncate') {
      buf = buf.subarray(0, Math.min(buf.length, e.to));
    } else if (e.kind === 'append') {
      buf = Buffer.concat([buf, e.bytes]);
    } else if (buf.length >= BHS_LENGTH) {
      buf[4] = e.ahsWords;
      buf.writeUIntBE(e.dataLength, 5, 3);
    }
  }
  return buf;
}

const mutatedArb = fc.record({
  base: fc.oneof(
    { weight: 4, arbitrary: pduArb.map((p) => encodePdu(p)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)) },
  ),
  edits: fc.array(editArb, { maxLength: 6 }),
});

/** Only IscsiProtocolError may escape the codec; anything else is a bug. */
function expectProtocolErrorOnly(fn: () => void, what: string): void {
  try {
    fn();
  } catch (err) {
    if (err instanceof Broken) throw err;
    if (!(err instanceof IscsiProtocolError)) {
      throw new Broken(`${what} threw ${(err as Error)?.name}: ${(err as Error)?.message}`);
    }
  }
}

function mutated(input: { base: Buffer; edits: Edit[] }): void {
  const buf = applyEdits(input.base, input.edits);
  expectProtocolErrorOnly(() => {
    const raw = splitPdu(buf);
    check(raw.bhs.length === BHS_LENGTH, 'BHS is 48 bytes');
    check(raw.ahs.length === raw.bhs[4]! * 4, 'AHS length matches TotalAHSLength');
    check(raw.data.length === raw.bhs.readUIntBE(5, 3), 'data length matches DataSegmentLength');
    const pdu = decodePdu(raw);
    check(KNOWN_OPCODES.has(pdu.opcode), `decoded opcode 0x${pdu.opcode.toString(16)} is known`);
    if (pdu.opcode === Opcode.ScsiCommand) check(pdu.cdb.length >= 16, 'CDB at least 16 bytes');
    if (pdu.data) check(pdu.data.length === raw.data.length, 'decoded data is the data segment');
  }, 'splitPdu/decodePdu');
  expectProtocolErrorOnly(
    () => void decodeText(buf.subarray(Math.min(buf.length, 48))),
    'decodeText',
  );
}

/** Cuts `total` bytes at the given positions into chunk lengths (all > 0). */
function chunkLengths(total: number, cuts: number[]): number[] {
  const points = [...new Set(cuts.map((c) => (total === 0 ? 0 : c % total)))]
    .filter((c) => c > 0)
    .sort((a, b) => a - b);
  const out: number[] = [];
  let prev = 0;
  for (const c of [...points, total]) {
    if (c > prev) out.push(c - prev);
    prev = c;
  }
  return out;
}

function pad4(n: number): number {
  return (n + 3) & ~3;
}

const readerArb = fc.record({
  pdus: fc.array(pduArb, { minLength: 1, maxLength: 8 }),
  limit: fc.oneof(fc.constantFrom(0, 4, 64, 512, 1024, 8192), fc.nat(2048)),
  cuts: fc.array(fc.nat(20_000), { maxLength: 12 }),
  reuse: bool,
});

function reader(input: { pdus: Pdu[]; limit: number; cuts: number[]; reuse: boolean }): void {
  const wires = input.pdus.map((p) => encodePdu(p));
  const stream = Buffer.concat(wires);
  const bound = BHS_LENGTH + 1020 + pad4(input.limit);
  const firstTooBig = wires.findIndex((w) => w.readUIntBE(5, 3) > input.limit);
  const r = new PduReader({ maxDataSegmentLength: input.limit, reuseDataInBuffer: input.reuse });
  let next = 0;
  const expectNext = (raw: { bhs: Buffer; ahs: Buffer; data: Buffer }) => {
    check(next < wires.length, 'no more PDUs than were sent');
    const want = splitPdu(wires[next]!);
    check(raw.bhs.equals(want.bhs), `PDU ${next}: BHS`);
    check(raw.ahs.equals(want.ahs), `PDU ${next}: AHS`);
    check(raw.data.equals(want.data), `PDU ${next}: data segment`);
    next++;
  };
  let offset = 0;
  for (const len of chunkLengths(stream.length, input.cuts)) {
    // A fresh copy per chunk, as a socket would hand over.
    const chunk = Buffer.from(stream.subarray(offset, offset + len));
    offset += len;
    let out: ReturnType<PduReader['push']>;
    try {
      out = r.push(chunk);
    } catch (err) {
      if (!(err instanceof PduTooLargeError)) throw err;
      for (const raw of err.pdus) expectNext(raw);
      check(next === firstTooBig, `PduTooLargeError at PDU ${next}, expected at ${firstTooBig}`);
      check(err.bhs.equals(wires[next]!.subarray(0, BHS_LENGTH)), 'error carries the BHS');
      check(err.limit === input.limit, 'error carries the limit');
      return;
    }
    for (const raw of out) expectNext(raw);
    check(r.buffered < bound, `reader holds ${r.buffered} bytes, bound ${bound}`);
  }
  check(firstTooBig < 0, `PDU ${firstTooBig} exceeded the limit without an error`);
  check(next === wires.length, `${next} of ${wires.length} PDUs came out`);
  check(r.buffered === 0, 'nothing left buffered');
}

const streamArb = fc.record({
  bytes: fc.oneof(
    fc.uint8Array({ maxLength: 3000 }).map((a) => Buffer.from(a)),
    fc
      .tuple(fc.array(pduArb, { maxLength: 4 }), fc.array(editArb, { maxLength: 8 }))
      .map(([ps, edits]) => applyEdits(Buffer.concat(ps.map((p) => encodePdu(p))), edits)),
  ),
  limit: fc.oneof(fc.constantFrom(512, 8192, 262144), fc.nat(4096)),
  cuts: fc.array(fc.nat(5000), { maxLength: 10 }),
});

function stream(input: { bytes: Buffer; limit: number; cuts: number[] }): void {
  const r = new PduReader({ maxDataSegmentLength: input.limit });
  const bound = BHS_LENGTH + 1020 + pad4(input.limit);
  let offset = 0;
  for (const len of chunkLengths(input.bytes.length, input.cuts)) {
    const chunk = input.bytes.subarray(offset, offset + len);
    offset += len;
    let out: ReturnType<PduReader['push']> = [];
    try {
      out = r.push(chunk);
    } catch (err) {
      if (err instanceof PduTooLargeError) return;
      throw new Broken(`PduReader.push threw ${(err as Error)?.name}: ${(err as Error)?.message}`);
    }
    for (const raw of out) {
      check(raw.data.length <= input.limit, 'no data segment above the limit');
      expectProtocolErrorOnly(() => void decodePdu(raw), 'decodePdu');
    }
    check(r.buffered < bound, `reader holds ${r.buffered} bytes, bound ${bound}`);
  }
}

// ---------------------------------------------------------------------------------------------

let inputs = 0;

type Details = fc.RunDetails<[unknown]>;
type Params = { seed: number; path?: string; numRuns: number; interruptAfterTimeLimit: number };

function checkProperty<T>(arb: fc.Arbitrary<T>, body: (x: T) => void, params: Params): Details {
  const prop = fc.property(arb, (x) => {
    inputs++;
    body(x);
  });
  return fc.check(prop, {
    ...params,
    markInterruptAsFailure: false,
    endOnFailure: false,
  }) as unknown as Details;
}

const properties = {
  roundtrip: (p: Params) => checkProperty(pduArb, roundtrip, p),
  mutated: (p: Params) => checkProperty(mutatedArb, mutated, p),
  reader: (p: Params) => checkProperty(readerArb, reader, p),
  stream: (p: Params) => checkProperty(streamArb, stream, p),
} as const;
type PropertyName = keyof typeof properties;

function hexReplacer(_key: string, value: unknown): unknown {
  if (value && typeof value === 'object' && (value as { type?: string }).type === 'Buffer') {
    return `<hex ${Buffer.from((value as { data: number[] }).data).toString('hex')}>`;
  }
  if (value instanceof Uint8Array) return `<hex ${Buffer.from(value).toString('hex')}>`;
  return value;
}

function main(): void {
  const args = fuzzArgs();
  const names = Object.keys(properties) as PropertyName[];
  const only = args.property as PropertyName | undefined;
  if (only !== undefined && !names.includes(only)) {
    throw new RangeError(`--property must be one of ${names.join(', ')}; got ${only}`);
  }
  const run = only ? [only] : names;
  const result: FuzzResult = {
    name: 'pdu',
    inputs: 0,
    crashes: 0,
    seconds: args.seconds,
    seed: args.seed,
    crashFiles: [],
    reproduce: [],
  };
  const perProperty = (args.seconds * 1000) / run.length;
  const started = Date.now();
  for (const [i, name] of run.entries()) {
    const seed = (args.seed + i) | 0;
    const details = properties[name]({
      seed,
      ...(args.path ? { path: args.path } : {}),
      numRuns: args.path ? 1 : 2 ** 31 - 1,
      interruptAfterTimeLimit: perProperty,
    });
    if (args.verbose) console.error(`pdu-fuzz: ${name}: ${details.numRuns} runs`);
    if (details.failed) {
      result.crashes++;
      const repro = `npm run fuzz -- --only pdu --property ${name} --seed ${seed} --path ${details.counterexamplePath}`;
      const err = details.errorInstance as Error | undefined;
      const text = [
        `pdu-fuzz: property ${name} failed (seed ${seed}, path ${details.counterexamplePath})`,
        `reproduce: ${repro}`,
        '',
        `error: ${err?.stack ?? String(err)}`,
        '',
        'counterexample (shrunk):',
        JSON.stringify(details.counterexample, hexReplacer, 2),
      ].join('\n');
      const file = writeCrash(args.crashDir, `pdu-${name}-${seed}.txt`, `${text}\n`);
      console.error(text);
      result.crashFiles.push(file);
      result.reproduce.push(repro);
    }
  }
  result.inputs = inputs;
  result.notes = { elapsedMs: Date.now() - started };
  report(result);
  process.exitCode = result.crashes > 0 ? 1 : 0;
}

main();
