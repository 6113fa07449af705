// The device half of `npm run bench`: runs where a SCSI device is (inside the UML guest that
// scripts/bench/run.mjs boots, or on a real host given --device), imports the built package
// (dist/), measures figures 1, 2, 3, 6 and 7 of the benchmark and writes one JSON document.
//
//   node scripts/bench/guest-bench.mjs CONFIG.json
//
// CONFIG: { scenario: 'tgt'|'sim'|'device', out, baseline, quick, reps, ... } (see run.mjs).
// Every ratio is formed from medians of repetitions taken in this one process, back to back.
import { execFile, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
// run.mjs passes a snapshot of dist/ (a rebuild during the run cannot disturb it)
const dist = cfg.dist ? pathToFileURL(`${cfg.dist}/`) : new URL('../../dist/', import.meta.url);
const { openDevice } = await import(new URL('index.js', dist).href);
const log = (...a) => console.error(`[bench ${cfg.scenario}]`, ...a);
const result = { scenario: cfg.scenario, quick: !!cfg.quick, figures: {}, diagnostics: {} };

// ---------------------------------------------------------------------------------------------
// helpers

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const round = (x, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

function run(cmd, args, { allowFail = false } = {}) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      if (error && !allowFail) {
        reject(new Error(`${cmd} ${args.join(' ')}: ${error.message}\n${stderr}`));
      } else resolve({ stdout, stderr, code: error ? (error.code ?? 1) : 0 });
    });
  });
}

/** A small seeded PRNG (mulberry32): the layout is the same on every run. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One full scan with the library's fast path; returns ms and descriptors. */
async function scanOnce(dev, opts) {
  const t0 = performance.now();
  let descriptors = 0;
  let commands = 0;
  for await (const b of dev.batches(opts)) {
    descriptors += b.count;
    commands++;
  }
  return { ms: performance.now() - t0, descriptors, commands };
}

/**
 * `inner` scans back to back, timed as one repetition (short scans are too noisy alone), with
 * this process's CPU time (user + system) over them.
 */
async function scanRep(dev, opts, inner) {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let last;
  for (let i = 0; i < inner; i++) last = await scanOnce(dev, opts);
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return {
    ms,
    cpuUs: cpu.user + cpu.system,
    descriptors: last.descriptors,
    commands: last.commands,
  };
}

// ---------------------------------------------------------------------------------------------
// figure 1: what users do today — one sg_get_lba_status process per command, text parsed

const DESCRIPTOR_LINE = /^\s*\[\d+\]\s+LBA:\s+0x([0-9a-fA-F]+)\s+blocks:\s+(\d+)\s+(.*)$/;

/** Continuation a script can derive from sg_get_lba_status's text (1.46 wording). */
function conditionFromText(text) {
  const m = /Completion condition=(\d)/.exec(text);
  if (m) return Number(m[1]);
  if (/scan length/i.test(text)) return 2;
  if (/capacity|end of medium/i.test(text)) return 3;
  if (/allocation length/i.test(text)) return 1;
  return 0;
}

async function sgLoop(sg, form, capacity, windowBlocks, alloc) {
  let cursor = 0;
  let commands = 0;
  let descriptors = 0;
  const t0 = performance.now();
  while (cursor < capacity) {
    const windowEnd =
      form === 32
        ? Math.min(capacity, (Math.floor(cursor / windowBlocks) + 1) * windowBlocks)
        : capacity;
    const args = ['-t', '1', '-m', String(alloc), '-l', String(cursor)];
    if (form === 32) args.unshift('-T', '-s', String(windowEnd - cursor));
    const { stdout } = await run('sg_get_lba_status', [...args, sg]);
    commands++;
    let lastEnd = -1;
    let kept = 0;
    for (const line of stdout.split('\n')) {
      const m = DESCRIPTOR_LINE.exec(line);
      if (!m) continue;
      const lba = Math.max(cursor, Number.parseInt(m[1], 16));
      const end = Math.min(windowEnd, Number.parseInt(m[1], 16) + Number(m[2]));
      if (lba >= windowEnd) break;
      kept++;
      lastEnd = end;
      if (end === windowEnd) break;
    }
    descriptors += kept;
    const condition = conditionFromText(stdout);
    let next;
    if (condition === 2 || condition === 3) next = windowEnd;
    else if (kept > 0) next = lastEnd;
    else next = form === 16 ? capacity : windowEnd;
    if (next <= cursor) throw new Error(`sg loop: no progress at LBA ${cursor}`);
    cursor = next;
  }
  return { ms: performance.now() - t0, commands, descriptors };
}

// ---------------------------------------------------------------------------------------------
// figure 2: the C floor, same commands

async function baseline(sg, form, windowBlocks, alloc, reps, inner) {
  const { stdout } = await run(cfg.baseline, [
    sg,
    String(form),
    '1',
    String(alloc),
    String(windowBlocks),
    String(reps * inner),
  ]);
  const lines = stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  const out = [];
  for (let r = 0; r < reps; r++) {
    const group = lines.slice(r * inner, (r + 1) * inner);
    out.push({
      ms: group.reduce((s, l) => s + l.ns, 0) / 1e6,
      commands: group[0].commands,
      descriptors: group[0].descriptors,
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// figures 1 + 2 + 6 on one device

async function scanFigures(dev, sg, form, label) {
  // The same scan through the opt-in engine (sg's write()/read() on the event loop, no thread
  // hand-offs), for comparison: what the threads cost per command.
  const asyncDev =
    dev.path === dev.sgPath
      ? await openDevice(sg, { queueDepth: 8, engine: 'sg-async' })
      : undefined;
  try {
    return await scanFiguresWith(dev, asyncDev, sg, form, label);
  } finally {
    await asyncDev?.close();
  }
}

async function scanFiguresWith(dev, asyncDev, sg, form, label) {
  const { blocks: capacity, blockSize } = await dev.capacity();
  const windowBlocks = Math.floor(2 ** 30 / blockSize);
  const alloc = 32768;
  const opts = { cdb: form, reportType: 'nonzero', allocationLength: alloc };
  // The target's own time per command varies several-fold between runs here (UML, a shared
  // host): more repetitions than elsewhere, interleaved, with the minimum kept as well.
  const reps = cfg.scanReps ?? cfg.reps;
  // warm-up: JIT, capacity cache, the form decision, the target's own caches
  for (let i = 0; i < 3; i++) await scanOnce(dev, opts);
  const one = await scanOnce(dev, opts);
  // Repetitions of at least ~40 ms so timer and scheduler noise stays small.
  const inner = Math.max(1, Math.min(200, Math.ceil(40 / Math.max(one.ms, 0.01))));
  log(
    `${label}: ${one.descriptors} descriptors in ${one.commands} commands, ${round(one.ms)} ms per scan; ${inner} scans per repetition`,
  );

  // Interleave library and C repetitions so drift hits both alike; the order rotates per
  // repetition so neither side always runs first. `lib1` is the library with one command in
  // flight, like the C program: per-command cost without the scanner's window concurrency.
  const opts1 = { ...opts, concurrency: 1 };
  const lib = [];
  const lib1 = [];
  const c = [];
  const libAsync = [];
  const steps = [
    async () => lib.push(await scanRep(dev, opts, inner)),
    async () => lib1.push(await scanRep(dev, opts1, inner)),
    async () => c.push(...(await baseline(sg, form, windowBlocks, alloc, 1, inner))),
  ];
  if (asyncDev) {
    await scanOnce(asyncDev, opts);
    steps.push(async () => libAsync.push(await scanRep(asyncDev, opts, inner)));
  }
  for (let r = 0; r < reps; r++) {
    for (let k = 0; k < steps.length; k++) await steps[(r + k) % steps.length]();
  }
  if (c[0].descriptors !== one.descriptors) {
    throw new Error(
      `C baseline found ${c[0].descriptors} descriptors, the library ${one.descriptors}`,
    );
  }
  const libMs = median(lib.map((x) => x.ms)) / inner;
  const cMs = median(c.map((x) => x.ms)) / inner;

  const loops = [];
  const loopReps = Math.max(3, Math.min(reps, cfg.quick ? 3 : 5));
  for (let r = 0; r < loopReps; r++)
    loops.push(await sgLoop(sg, form, capacity, windowBlocks, alloc));
  if (loops[0].descriptors !== one.descriptors) {
    throw new Error(
      `sg_get_lba_status loop found ${loops[0].descriptors} descriptors, the library ${one.descriptors}`,
    );
  }
  const loopMs = median(loops.map((x) => x.ms));
  // The cost of starting any process here (UML: fork/exec are slow), to explain figure 1.
  const spawns = [];
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    await run('true', []);
    spawns.push(performance.now() - t0);
  }
  return {
    device: {
      capacityBlocks: capacity,
      blockSize,
      cdb: form,
      descriptors: one.descriptors,
      commands: one.commands,
    },
    vsSgUtils: {
      libraryMs: round(libMs),
      sgGetLbaStatusLoopMs: round(loopMs),
      speedup: round(loopMs / libMs, 1),
      loopMsPerCommand: round(loopMs / loops[0].commands),
      processSpawnMs: round(median(spawns)),
      repetitions: { library: reps, loop: loopReps },
    },
    vsC: {
      libraryMs: round(libMs),
      cMs: round(cMs),
      overheadPercent: round((libMs / cMs - 1) * 100, 1),
      bestOfLibraryMs: round(Math.min(...lib.map((x) => x.ms)) / inner),
      bestOfCMs: round(Math.min(...c.map((x) => x.ms)) / inner),
      overheadPercentBestOf: round(
        (Math.min(...lib.map((x) => x.ms)) / Math.min(...c.map((x) => x.ms)) - 1) * 100,
        1,
      ),
      pairedOverheadPercentMedian: round((median(lib.map((x, i) => x.ms / c[i].ms)) - 1) * 100, 1),
      libraryUsPerCommand: round((libMs * 1000) / one.commands, 1),
      cUsPerCommand: round((cMs * 1000) / one.commands, 1),
      // CPU time of the scanning process per command (figure 9 compares the userspace iSCSI path)
      libraryCpuUsPerCommand: round(median(lib.map((x) => x.cpuUs)) / inner / one.commands, 1),
      libraryOneInFlightCpuUsPerCommand: round(
        median(lib1.map((x) => x.cpuUs)) / inner / one.commands,
        1,
      ),
      libraryOneInFlightMs: round(median(lib1.map((x) => x.ms)) / inner),
      libraryOneInFlightUsPerCommand: round(
        (median(lib1.map((x) => x.ms)) * 1000) / inner / one.commands,
        1,
      ),
      overheadPercentOneInFlight: round((median(lib1.map((x) => x.ms)) / inner / cMs - 1) * 100, 1),
      pairedOverheadPercentOneInFlightMedian: round(
        (median(lib1.map((x, i) => x.ms / c[i].ms)) - 1) * 100,
        1,
      ),
      engine: dev.engine,
      sgAsyncEngineUsPerCommand: asyncDev
        ? round((median(libAsync.map((x) => x.ms)) * 1000) / inner / one.commands, 1)
        : undefined,
      overheadPercentSgAsyncEngine: asyncDev
        ? round((median(libAsync.map((x) => x.ms)) / inner / cMs - 1) * 100, 1)
        : undefined,
      libraryOptions: `cdb ${form}, allocation ${alloc}, default concurrency (4 windows; 16-byte: 1), queueDepth 8, engine ${dev.engine}`,
      scansPerRepetition: inner,
      repetitions: reps,
      libraryRepsMs: lib.map((x) => round(x.ms / inner)),
      libraryOneInFlightRepsMs: lib1.map((x) => round(x.ms / inner)),
      cRepsMs: c.map((x) => round(x.ms / inner)),
    },
  };
}

/** Files figures 1 and 2 of one scenario, and its device facts under diagnostics. */
function recordScan(name, scan, details) {
  result.figures.vsSgUtils = { [name]: scan.vsSgUtils };
  result.figures.vsC = { [name]: scan.vsC };
  result.diagnostics[name] = { ...scan.device, ...details };
}

/** Figure 6 with its control (an idle process beside the C program scanning the same target). */
async function eventLoopWithControl(dev, sg, form) {
  return {
    ...(await eventLoopFigure(dev, form, cfg.eventLoopSeconds)),
    control: await eventLoopControl(dev, sg, form, cfg.eventLoopSeconds),
  };
}

/** p99 event-loop delay while scanning for `seconds` (object mode: the most JS work per extent). */
async function eventLoopFigure(dev, form, seconds) {
  const h = monitorEventLoopDelay({ resolution: 1 });
  const opts = { cdb: form, reportType: 'nonzero' };
  let scans = 0;
  let extents = 0;
  let commands = 0;
  h.enable();
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    for await (const _e of dev.extents(opts)) extents++;
    scans++;
  }
  const ms = performance.now() - t0;
  h.disable();
  for await (const _b of dev.batches(opts)) commands++;
  return {
    p99Ms: round(h.percentile(99) / 1e6),
    p50Ms: round(h.percentile(50) / 1e6),
    maxMs: round(h.max / 1e6),
    meanMs: round(h.mean / 1e6),
    seconds: round(ms / 1000, 2),
    scans,
    extentsPerSecond: Math.round((extents / ms) * 1000),
    commandsPerScan: commands,
    resolutionMs: 1,
  };
}

/**
 * Figure 6 control: the event-loop delay of an idle Node process (idle-loop.mjs) in this guest,
 * once with nothing else running and once while the C baseline scans the same target back to
 * back. What the idle process suffers is the machine's share of the scanner's p99.
 */
async function eventLoopControl(dev, sg, form, seconds) {
  const { blockSize } = await dev.capacity();
  const windowBlocks = Math.floor(2 ** 30 / blockSize);
  const idleScript = new URL('idle-loop.mjs', import.meta.url).pathname;
  const idle = async () =>
    JSON.parse((await run(process.execPath, [idleScript, String(seconds)])).stdout);
  const quiet = await idle();
  let done = false;
  let cScans = 0;
  const probe = idle().finally(() => {
    done = true;
  });
  while (!done) {
    await baseline(sg, form, windowBlocks, 32768, 1, 1);
    cScans++;
  }
  const underC = await probe;
  return { idleNoLoad: quiet, idleWhileCScans: { ...underC, cScans } };
}

// ---------------------------------------------------------------------------------------------
// tgt: a 64 GiB (or larger) sparse LUN with thousands of changed extents

/** Writes the changed extents straight into tgt's backing file (tgt answers from SEEK_DATA). */
function layoutTgt(backing, capacityBytes) {
  const rand = prng(20240601);
  const MiB = 1 << 20;
  const readRegion = capacityBytes - 4 * 1024 * MiB; // last 4 GiB: the read figure's extents
  const slots = Math.floor(readRegion / MiB);
  const chosen = new Set();
  while (chosen.size < cfg.tgt.scanExtents) chosen.add(Math.floor(rand() * slots));
  const fd = openSync(backing, 'r+');
  const data = Buffer.alloc(cfg.tgt.readExtentBytes);
  for (let i = 0; i < data.length; i += 4)
    data.writeUInt32LE((Math.imul(i, 2654435761) | 1) >>> 0, i);
  let scanBytes = 0;
  for (const slot of [...chosen].sort((a, b) => a - b)) {
    const len = 4096 * (1 + Math.floor(rand() * 4)); // 4..16 KiB
    const off = slot * MiB + 4096 * Math.floor(rand() * 64);
    writeSync(fd, data, 0, len, off);
    scanBytes += len;
  }
  const readExtents = [];
  for (let i = 0; i < cfg.tgt.readExtents; i++) {
    const off = readRegion + i * 2 * cfg.tgt.readExtentBytes;
    writeSync(fd, data, 0, cfg.tgt.readExtentBytes, off);
    readExtents.push({ offset: off, length: cfg.tgt.readExtentBytes });
  }
  closeSync(fd);
  return { readRegion, readExtents, scanBytes };
}

/**
 * Figure 7: readChanged over the read region (it finds the extents itself with GET LBA STATUS,
 * then reads them) vs one `dd iflag=direct bs=1M` per extent over the same extents. Each
 * repetition runs readChanged with 4 reads in flight (the default) and with 1, and the dd loop,
 * in a rotating order; the headline is the median of the per-repetition ratios dd / readChanged.
 * Diagnostics: the scan alone (the extent-finding part of readChanged), the cost of starting a
 * process here (what each dd pays before reading), and one dd over one contiguous span.
 */
async function readFigure(dev, block, { startLba, endLba, form }, readExtents) {
  const { readChanged } = await import(new URL('index.js', dist).href);
  const total = readExtents.reduce((s, e) => s + e.length, 0);
  const libRun = async (concurrency) => {
    const t0 = performance.now();
    let bytes = 0;
    for await (const c of readChanged(dev, {
      startLba,
      endLba,
      method: 'direct',
      cdb: form,
      concurrency,
      reuseBuffers: true,
    }))
      bytes += c.length;
    if (bytes !== total) throw new Error(`readChanged read ${bytes} bytes, expected ${total}`);
    return performance.now() - t0;
  };
  const ddRun = async () => {
    const t0 = performance.now();
    for (const e of readExtents) {
      await run('dd', [
        `if=${block}`,
        'of=/dev/null',
        'bs=1M',
        'iflag=direct,skip_bytes,count_bytes',
        `skip=${e.offset}`,
        `count=${e.length}`,
        'status=none',
      ]);
    }
    return performance.now() - t0;
  };
  // One dd over one contiguous span of the same size: dd without per-extent process cost.
  const ddOneRun = async () => {
    const t0 = performance.now();
    await run('dd', [
      `if=${block}`,
      'of=/dev/null',
      'bs=1M',
      'iflag=direct,skip_bytes,count_bytes',
      `skip=${readExtents[0].offset}`,
      `count=${total}`,
      'status=none',
    ]);
    return performance.now() - t0;
  };
  const scanOnly = async () =>
    (await scanOnce(dev, { cdb: form, reportType: 'nonzero', startLba, endLba })).ms;
  await libRun(4);
  await libRun(1);
  await ddRun();
  const lib4 = [];
  const lib1 = [];
  const dd = [];
  const ddOne = [];
  const scans = [];
  const spawns = [];
  const steps = [
    async () => lib4.push(await libRun(4)),
    async () => lib1.push(await libRun(1)),
    async () => dd.push(await ddRun()),
  ];
  for (let r = 0; r < cfg.reps; r++) {
    for (let k = 0; k < steps.length; k++) await steps[(r + k) % steps.length]();
    ddOne.push(await ddOneRun());
    scans.push(await scanOnly());
    const t0 = performance.now();
    await run('true', []);
    spawns.push(performance.now() - t0);
  }
  const mbps = (ms) => round(total / 2 ** 20 / (ms / 1000), 1);
  const paired = (lib) => round(median(lib.map((ms, i) => dd[i] / ms)) * 100, 1);
  const spawnMs = median(spawns);
  // dd's time with its process starts taken out: the transfer alone
  const ddTransfer = dd.map((ms) => ms - readExtents.length * spawnMs);
  return {
    bytes: total,
    extents: readExtents.length,
    extentBytes: readExtents[0].length,
    percentOfDd: paired(lib4),
    percentOfDdOneInFlight: paired(lib1),
    readChangedMiBps: mbps(median(lib4)),
    readChangedOneInFlightMiBps: mbps(median(lib1)),
    ddMiBps: mbps(median(dd)),
    percentOfDdTransferOnly: round(median(lib4.map((ms, i) => ddTransfer[i] / ms)) * 100, 1),
    percentOfDdTransferOnlyOneInFlight: round(
      median(lib1.map((ms, i) => ddTransfer[i] / ms)) * 100,
      1,
    ),
    ddTransferOnlyMiBps: mbps(median(ddTransfer)),
    ddSingleSpanMiBps: mbps(median(ddOne)),
    scanOnlyMs: round(median(scans), 1),
    processSpawnMs: round(spawnMs, 1),
    readChangedOptions: `method 'direct', 1 MiB chunks (default), reuseBuffers (as read and export use it), concurrency 4 (default) and 1, cdb ${form} over the read region`,
    ddOptions: 'one dd bs=1M iflag=direct per extent',
    repetitions: cfg.reps,
    readChanged4RepsMs: lib4.map((x) => round(x, 1)),
    readChanged1RepsMs: lib1.map((x) => round(x, 1)),
    ddRepsMs: dd.map((x) => round(x, 1)),
  };
}

async function benchTgt() {
  const sg = process.env.LBA_STATUS_TEST_SG;
  const block = process.env.LBA_STATUS_TEST_BLOCK;
  const backing = process.env.LBA_STATUS_TEST_BACKING;
  const capacityBytes =
    Number(process.env.LBA_STATUS_TEST_CAPACITY_BLOCKS) *
    Number(process.env.LBA_STATUS_TEST_BLOCK_SIZE);
  const t0 = performance.now();
  const layout = layoutTgt(backing, capacityBytes);
  log(
    `wrote ${cfg.tgt.scanExtents} + ${cfg.tgt.readExtents} extents in ${round(performance.now() - t0)} ms`,
  );
  const dev = await openDevice(sg, { queueDepth: 8 });
  try {
    await tgtFigures(dev, sg, block, layout, capacityBytes);
  } finally {
    await dev.close();
  }
}

async function tgtFigures(dev, sg, block, layout, capacityBytes) {
  const scan = await scanFigures(dev, sg, 16, 'tgt');
  recordScan('tgt', scan, {
    sizeGiB: capacityBytes / 2 ** 30,
    changedScanExtents: cfg.tgt.scanExtents,
    readExtents: cfg.tgt.readExtents,
  });
  log('event loop');
  result.figures.eventLoop = { tgt: await eventLoopWithControl(dev, sg, 16) };
  log('read');
  result.figures.readChanged = {
    tgt: await readFigure(
      dev,
      block,
      {
        startLba: layout.readRegion / (await dev.capacity()).blockSize,
        endLba: undefined,
        form: 16,
      },
      layout.readExtents,
    ),
  };
}

// ---------------------------------------------------------------------------------------------
// sim: the project's OCI delta-volume simulator in its own process (`lba-status sim serve`,
// from the same dist/), attached to the guest kernel. The library and the C baseline face the
// same out-of-process target, as they would a real volume.

async function findLun(iqn) {
  for (const session of await readdir('/sys/class/iscsi_session').catch(() => [])) {
    const dir = join('/sys/class/iscsi_session', session);
    const name = await readFile(join(dir, 'targetname'), 'utf8').catch(() => '');
    if (name.trim() !== iqn) continue;
    for (const t of (await readdir(join(dir, 'device')).catch(() => [])).filter((n) =>
      n.startsWith('target'),
    )) {
      for (const lun of (await readdir(join(dir, 'device', t)).catch(() => [])).filter((n) =>
        n.endsWith(':1'),
      )) {
        const base = join(dir, 'device', t, lun);
        const sg = (await readdir(join(base, 'scsi_generic')).catch(() => []))[0];
        const blk = (await readdir(join(base, 'block')).catch(() => []))[0];
        if (sg && blk) return { sg: `/dev/${sg}`, block: `/dev/${blk}` };
      }
    }
  }
  return undefined;
}

async function attach(sim) {
  const node = ['-m', 'node', '-T', sim.iqn, '-p', sim.portal];
  await run('iscsiadm', [...node, '-o', 'new']);
  await run('iscsiadm', [...node, '--login']);
  for (let i = 0; i < 200; i++) {
    const found = await findLun(sim.iqn);
    if (found) {
      return {
        ...found,
        detach: async () => {
          await run('iscsiadm', [...node, '--logout'], { allowFail: true });
          await run('iscsiadm', [...node, '-o', 'delete'], { allowFail: true });
        },
      };
    }
    await sleep(50);
  }
  throw new Error(`LUN 1 of ${sim.iqn} did not appear after login`);
}

/** Starts `lba-status sim serve` as a child process; resolves once it prints its ready line. */
function serveSimulator(s, { port, iqn, faults = [] }) {
  const cli = new URL('cli.js', dist).pathname;
  const argv = [
    cli,
    'sim',
    'serve',
    '--size',
    `${s.sizeGiB}G`,
    '--random-changes',
    String(s.extents),
    '--seed',
    '7',
    '--max-extent',
    '4',
    '--port',
    String(port),
    '--iqn',
    iqn,
    ...faults.flatMap((f) => ['--fault', f]),
  ];
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stderr.on('data', (d) => {
      err += d;
    });
    const onExit = (code) =>
      reject(new Error(`sim serve exited ${code} before it was ready\n${err.slice(-2000)}`));
    p.once('exit', onExit);
    p.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      p.off('exit', onExit);
      const ready = JSON.parse(out.slice(0, nl));
      resolve({
        iqn: ready.iscsi.iqn,
        portal: ready.iscsi.portal,
        pid: p.pid,
        close: () =>
          new Promise((done) => {
            if (p.exitCode !== null) return done();
            p.once('exit', () => done());
            p.kill('SIGTERM');
          }),
      });
    });
  });
}

async function benchSim() {
  const s = cfg.sim;
  const sim = await serveSimulator(s, { port: 3261, iqn: 'iqn.2024-01.dev.lba-status:bench' });
  try {
    await simFigures(sim, s);
  } finally {
    await sim.close();
  }
  // Figure 3: a second simulator adding 2 ms to every GET LBA STATUS (a network-attached volume).
  const slow = await serveSimulator(s, {
    port: 3262,
    iqn: 'iqn.2024-01.dev.lba-status:bench-latency',
    faults: ['latency:ms=2,p=1,on=get-lba-status'],
  });
  try {
    await concurrencyFigure(slow, s);
  } finally {
    await slow.close();
  }
}

/** Logs in to a simulator, consumes its UNIT ATTENTION, opens LUN 1; runs fn; cleans up. */
async function withLun(sim, fn) {
  const lun = await attach(sim);
  let dev;
  try {
    await run('sg_turs', [lun.sg], { allowFail: true });
    dev = await openDevice(lun.sg, { queueDepth: 8 });
    return await fn(dev, lun);
  } finally {
    await dev?.close();
    await lun.detach();
  }
}

async function simFigures(sim, s) {
  await withLun(sim, async (dev, lun) => {
    const scan = await scanFigures(dev, lun.sg, 32, 'sim');
    recordScan('sim', scan, {
      sizeGiB: s.sizeGiB,
      changedExtents: s.extents,
      note: 'target: `lba-status sim serve` in its own process, same single guest CPU as the scanner',
    });
    log('event loop (simulator in its own process)');
    result.figures.eventLoop = { sim: await eventLoopWithControl(dev, lun.sg, 32) };
  });
}

async function concurrencyFigure(sim, s) {
  await withLun(sim, async (dev) => {
    result.figures.concurrency = {
      sim: {
        addedLatencyMs: 2,
        windows: s.latencyWindows,
        ...(await measureConcurrency(dev, { cdb: 32, endLba: s.latencyWindows * 2 ** 21 })),
        target:
          '`lba-status sim serve --fault latency:ms=2,p=1,on=get-lba-status` in its own process',
      },
    };
  });
}

/**
 * Full scans with 1, 2, 4 and 8 windows in flight, rotating, `cfg.reps` times; medians, speedups
 * and the default worth having (the smallest level within 10 % of the fastest).
 */
async function measureConcurrency(dev, scanOptions) {
  const levels = [1, 2, 4, 8];
  const times = Object.fromEntries(levels.map((c) => [c, []]));
  const opts = (c) => ({ ...scanOptions, concurrency: c });
  await scanOnce(dev, opts(4));
  for (let r = 0; r < cfg.reps; r++) {
    for (const c of levels) times[c].push((await scanOnce(dev, opts(c))).ms);
  }
  const probe = await scanOnce(dev, opts(1));
  const med = Object.fromEntries(levels.map((c) => [c, median(times[c])]));
  const best = Math.min(...levels.map((c) => med[c]));
  return {
    commands: probe.commands,
    msByConcurrency: Object.fromEntries(levels.map((c) => [c, round(med[c], 1)])),
    speedupByConcurrency: Object.fromEntries(levels.map((c) => [c, round(med[1] / med[c], 2)])),
    speedupAt4: round(med[1] / med[4], 2),
    msPerCommandAt1: round(med[1] / probe.commands, 2),
    recommendedDefault: levels.find((c) => med[c] <= best * 1.1),
    repetitions: cfg.reps,
  };
}

// ---------------------------------------------------------------------------------------------
// device: a real device given with `npm run bench -- --device PATH` (read-only: nothing is
// written). Figures 1, 2, 6 on the whole device, 3 without added latency (the device's own), 7
// over its first changed extents.

async function benchDevice() {
  const dev = await openDevice(cfg.device, { queueDepth: 8 });
  try {
    const { blocks: capacity, blockSize } = await dev.capacity();
    await scanOnce(dev, { cdb: 'auto', reportType: 'nonzero' }); // settles the form
    const form = dev.glsForm;
    const sg = dev.path; // the node SG_IO goes through (the sg node when there is one)
    log(
      `${cfg.device}: ${dev.path}, ${capacity} blocks of ${blockSize} bytes, GET LBA STATUS(${form})`,
    );
    const scan = await scanFigures(dev, sg, form, 'device');
    recordScan('device', scan, {
      path: cfg.device,
      sgPath: dev.sgPath,
      blockPath: dev.blockPath,
      engine: dev.engine,
      inquiry: `${dev.inquiry.vendor} ${dev.inquiry.product} ${dev.inquiry.revision}`,
    });
    log('event loop');
    result.figures.eventLoop = { device: await eventLoopWithControl(dev, sg, form) };
    log('concurrency');
    result.figures.concurrency = {
      device: await deviceConcurrency(dev, form, capacity, blockSize),
    };
    log('read');
    result.figures.readChanged = { device: await deviceRead(dev, form, blockSize) };
  } finally {
    await dev.close();
  }
}

/** Figure 3 on the device as it is (no added latency); the 16-byte form has no windows. */
async function deviceConcurrency(dev, form, capacity, blockSize) {
  if (form !== 32) {
    return { skipped: 'the 16-byte form has no scan length, so windows cannot overlap' };
  }
  const windowBlocks = Math.floor(2 ** 30 / blockSize);
  const endLba = Math.min(capacity, 128 * windowBlocks);
  return {
    addedLatencyMs: 0,
    windows: Math.ceil(endLba / windowBlocks),
    ...(await measureConcurrency(dev, { cdb: 32, reportType: 'nonzero', endLba })),
  };
}

/** Figure 7 over the device's first changed extents, up to a byte and an extent budget. */
async function deviceRead(dev, form, blockSize) {
  if (!dev.blockPath) return { skipped: 'no block node for O_DIRECT reads and dd' };
  const budgetBytes = cfg.deviceReadBytes ?? (cfg.quick ? 64 : 256) * 2 ** 20;
  const maxExtents = 64; // dd is one process per extent
  const extents = [];
  let bytes = 0;
  for await (const e of dev.changedExtents({ cdb: form })) {
    extents.push({
      offset: e.lba * blockSize,
      length: e.blocks * blockSize,
      end: e.lba + e.blocks,
    });
    bytes += e.blocks * blockSize;
    if (bytes >= budgetBytes || extents.length >= maxExtents) break;
  }
  if (extents.length === 0) return { skipped: 'the device reports no changed (mapped) extents' };
  const range = {
    startLba: extents[0].offset / blockSize,
    endLba: extents[extents.length - 1].end,
    form,
  };
  return readFigure(dev, dev.blockPath, range, extents);
}

// ---------------------------------------------------------------------------------------------

result.environment = {
  kernel: (await run('uname', ['-r'])).stdout.trim(),
  node: process.version,
  // what one system call costs here: the unit figure 2's per-command overhead is made of
  syscallCost: JSON.parse((await run(cfg.baseline, ['--syscall-cost'])).stdout),
  roundTrip: JSON.parse(
    (
      await run(process.execPath, [
        new URL('host-bench.mjs', import.meta.url).pathname,
        'roundtrip',
        cfg.quick ? '200' : '1000',
      ])
    ).stdout,
  ),
};
if (cfg.scenario === 'tgt') await benchTgt();
else if (cfg.scenario === 'sim') await benchSim();
else if (cfg.scenario === 'device') await benchDevice();
else throw new Error(`unknown scenario ${cfg.scenario}`);
writeFileSync(cfg.out, `${JSON.stringify(result, null, 2)}\n`);
log(`wrote ${cfg.out}`);
