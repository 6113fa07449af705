// The host half of `npm run bench` (no device needed): figure 4 (parsing) and figure 5 (memory),
// and figure 2's units (also run in the guest by guest-bench.mjs).
//
//   node scripts/bench/host-bench.mjs parse SECONDS            -> JSON on stdout
//   node --expose-gc scripts/bench/host-bench.mjs memory batch|object EXTENTS  -> JSON on stdout
//   node scripts/bench/host-bench.mjs roundtrip N              -> JSON on stdout
//
// The addon comes from LBA_STATUS_NATIVE_PATH (run.mjs points it at a snapshot of the build),
// else build/Release/lba_status.node.
import { closeSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const binding = require(
  process.env.LBA_STATUS_NATIVE_PATH ??
    new URL('../../build/Release/lba_status.node', import.meta.url).pathname,
);

const DESCRIPTORS = 2047; // what the default allocation length (32 768) holds
const ALLOC = 8 + 16 * DESCRIPTORS + 8; // 32 768

/**
 * A realistic full reply: 2047 descriptors alternating mapped (3) / deallocated (1) runs whose
 * LBAs climb through a 32 TiB volume (2^36 blocks of 512 bytes), so LBAs are above 2^31.
 */
function makeReply(seed, firstLba) {
  const buf = new Uint8Array(ALLOC);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, 4 + 16 * DESCRIPTORS);
  buf[7] = (1 << 1) | 1; // condition 1 (allocation length), RTP = 1
  let lba = firstLba;
  let x = seed >>> 0;
  for (let i = 0; i < DESCRIPTORS; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const blocks = 8 + (x % 4096) * 8;
    const o = 8 + 16 * i;
    dv.setUint32(o, Math.floor(lba / 2 ** 32));
    dv.setUint32(o + 4, lba >>> 0);
    dv.setUint32(o + 8, blocks);
    buf[o + 12] = i % 2 ? 1 : 3;
    lba += blocks;
  }
  return { buf, nextLba: lba };
}

/** The plain TypeScript-style alternative: a DataView loop into the same typed-array columns. */
function parseDataView(data, receivedBytes) {
  const available = Math.min(data.byteLength, receivedBytes);
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const pdl = available >= 4 ? dv.getUint32(0) : 0;
  const described = 4 + pdl;
  const truncated = described > available;
  const validBytes = Math.min(described, available);
  let completionCondition = 0;
  let rtp = 0;
  let count = 0;
  let trailingBytes = 0;
  if (validBytes >= 8) {
    completionCondition = (data[7] >> 1) & 7;
    rtp = data[7] & 1;
    count = Math.floor((validBytes - 8) / 16);
    trailingBytes = (validBytes - 8) % 16;
  }
  const lba = new Float64Array(count);
  const blocks = new Uint32Array(count);
  const status = new Uint8Array(count);
  const additional = new Uint8Array(count);
  let unsafeLbaIndex = -1;
  for (let i = 0, o = 8; i < count; i++, o += 16) {
    const hi = dv.getUint32(o);
    const n = dv.getUint32(o + 8);
    const l = hi * 4294967296 + dv.getUint32(o + 4);
    if (unsafeLbaIndex < 0 && (hi >= 0x200000 || l + n > 2 ** 53)) unsafeLbaIndex = i;
    lba[i] = l;
    blocks[i] = n;
    status[i] = data[o + 12] & 0x0f;
    additional[i] = data[o + 13];
  }
  return {
    parameterDataLength: pdl,
    completionCondition,
    rtp,
    validBytes,
    truncated,
    count,
    trailingBytes,
    unsafeLbaIndex,
    lba,
    blocks,
    status,
    additional,
  };
}

function replies(n) {
  const out = [];
  let lba = 0;
  for (let i = 0; i < n; i++) {
    const r = makeReply(i + 1, lba);
    out.push(r.buf);
    lba = r.nextLba;
  }
  return out;
}

function rate(parse, bufs, seconds) {
  let descriptors = 0;
  let sink = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < seconds * 1000) {
    for (let k = 0; k < 64; k++) {
      const cols = parse(bufs[k % bufs.length], ALLOC);
      descriptors += cols.count;
      sink += cols.lba[cols.count - 1];
    }
    t = performance.now();
  }
  if (sink === 0) throw new Error('impossible');
  return (descriptors / (t - t0)) * 1000;
}

function parseFigure(seconds, reps) {
  const bufs = replies(16);
  // same answers from both parsers
  for (const b of bufs) {
    const a = binding.parseLbaStatus(b, ALLOC);
    const j = parseDataView(b, ALLOC);
    for (const k of [
      'count',
      'completionCondition',
      'rtp',
      'validBytes',
      'truncated',
      'unsafeLbaIndex',
    ]) {
      if (a[k] !== j[k]) throw new Error(`parsers disagree on ${k}: ${a[k]} vs ${j[k]}`);
    }
    for (let i = 0; i < a.count; i++) {
      if (a.lba[i] !== j.lba[i] || a.blocks[i] !== j.blocks[i] || a.status[i] !== j.status[i]) {
        throw new Error(`parsers disagree on descriptor ${i}`);
      }
    }
  }
  rate((b, n) => binding.parseLbaStatus(b, n), bufs, 0.3); // warm-up
  rate(parseDataView, bufs, 0.3);
  const native = [];
  const js = [];
  for (let r = 0; r < reps; r++) {
    native.push(rate((b, n) => binding.parseLbaStatus(b, n), bufs, seconds));
    js.push(rate(parseDataView, bufs, seconds));
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  return {
    descriptorsPerReply: DESCRIPTORS,
    nativeMDescriptorsPerSecond: Math.round(median(native) / 1e4) / 100,
    dataViewMDescriptorsPerSecond: Math.round(median(js) / 1e4) / 100,
    nativeVsDataView: Math.round((median(native) / median(js)) * 100) / 100,
    secondsPerRepetition: seconds,
    repetitions: reps,
  };
}

/**
 * Retains EXTENTS extents the way a consumer that keeps them would: as the scanner's batches
 * (typed-array views from the native parser, one batch object per reply) or as the objects
 * `device.extents()` yields. Reports retained bytes (V8 heap + external/ArrayBuffer memory,
 * measured after forced GCs) per extent.
 */
function memoryFigure(mode, extents) {
  const bufs = replies(8);
  const gc = globalThis.gc;
  if (!gc) throw new Error('run with --expose-gc');
  const measure = () => {
    gc();
    gc();
    const m = process.memoryUsage();
    return m.heapUsed + m.external;
  };
  const before = measure();
  const kept = [];
  let n = 0;
  let lbaBase = 0;
  for (let r = 0; n < extents; r++) {
    const cols = binding.parseLbaStatus(bufs[r % bufs.length], ALLOC);
    const count = Math.min(cols.count, extents - n);
    // as Scan#interpret builds a batch (LBAs moved on so no two batches share values)
    for (let i = 0; i < count; i++) cols.lba[i] += lbaBase;
    lbaBase = cols.lba[count - 1] + cols.blocks[count - 1];
    const batch = {
      count,
      lba: cols.lba.subarray(0, count),
      blocks: cols.blocks.subarray(0, count),
      status: cols.status.subarray(0, count),
      additional: cols.additional.subarray(0, count),
      startLba: cols.lba[0],
      nextLba: lbaBase,
      completionCondition: cols.completionCondition,
      rtp: cols.rtp === 1,
      reportType: 1,
      cdb: 32,
    };
    if (mode === 'batch') kept.push(batch);
    else {
      // as scanExtents yields them
      for (let i = 0; i < count; i++) {
        kept.push({
          lba: batch.lba[i],
          blocks: batch.blocks[i],
          status: batch.status[i],
          additional: batch.additional[i],
        });
      }
    }
    n += count;
  }
  const after = measure();
  const bytes = after - before;
  if (kept.length === 0) throw new Error('nothing kept');
  return {
    mode,
    extents: n,
    retainedBytes: bytes,
    bytesPerExtent: Math.round((bytes / n) * 10) / 10,
  };
}

/**
 * Figure 2's units, without a device: one event-loop turn (a setImmediate round trip) and one
 * command's round trip through the threads engine with no device time in it (SG_IO on /dev/null
 * fails at once with ENOTTY: JS -> native thread -> ioctl -> JS). Medians of 5 runs of N each.
 */
async function roundTrip(n) {
  const fd = openSync('/dev/null', 'r');
  const queue = binding.createCommandQueue(1);
  const cdb = new Uint8Array(6);
  const sense = new Uint8Array(96);
  const loopTurn = [];
  const command = [];
  try {
    for (let r = 0; r < 6; r++) {
      let t0 = performance.now();
      for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
      const turn = ((performance.now() - t0) * 1000) / n;
      t0 = performance.now();
      for (let i = 0; i < n; i++) await queue.execute(fd, cdb, 0, null, sense, 1000);
      const trip = ((performance.now() - t0) * 1000) / n;
      if (r > 0) {
        loopTurn.push(turn); // the first run warms up
        command.push(trip);
      }
    }
  } finally {
    queue.close();
    closeSync(fd);
  }
  const med = (xs) => Math.round([...xs].sort((x, y) => x - y)[xs.length >> 1] * 10) / 10;
  return { eventLoopTurnUs: med(loopTurn), threadsEngineRoundTripUs: med(command), perRun: n };
}

const [what, a, b] = process.argv.slice(2);
let out;
if (what === 'parse') out = parseFigure(Number(a ?? 1), Number(b ?? 5));
else if (what === 'memory') out = memoryFigure(a, Number(b ?? 1_000_000));
else if (what === 'roundtrip') out = await roundTrip(Number(a ?? 2000));
else {
  throw new Error(
    'usage: host-bench.mjs parse SECONDS REPS | memory batch|object EXTENTS | roundtrip N',
  );
}
process.stdout.write(`${JSON.stringify(out)}\n`);
