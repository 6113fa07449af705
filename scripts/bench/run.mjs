#!/usr/bin/env node
// `npm run bench`: the seven figures of the benchmark (README "Performance").
//
//   npm run bench [-- --quick] [-- --json FILE]
//
// On the host: snapshots the build (dist/ and the addon, so a rebuild meanwhile cannot disturb
// the run), compiles the C baseline (sgio-baseline.c) with cc, measures parsing and memory
// (host-bench.mjs), then boots one User-Mode Linux guest per scenario (scripts/guest/uml-run.sh)
// and runs guest-bench.mjs there: `tgt` (tgtd, 64 GiB sparse LUN, thousands of changed extents)
// and `sim` (`lba-status sim serve` in its own process in the guest). Prints a table; --json writes
// every number (the contract: see README "Performance"). No threshold fails the run: a missed
// target is reported, not asserted.
//
// Each child runs under `flock $LBA_STATUS_BENCH_LOCK` (default /tmp/guest.lock; empty = none)
// so benchmarks and guests on a shared machine do not disturb each other.
import { execFileSync, spawn } from 'node:child_process';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const jsonIndex = args.indexOf('--json');
const jsonFile = jsonIndex >= 0 ? args[jsonIndex + 1] : undefined;
const keep = args.includes('--keep');
if (args.includes('--help') || (jsonIndex >= 0 && !jsonFile)) {
  console.log('usage: npm run bench [-- --quick] [-- --json FILE] [-- --keep]');
  process.exit(jsonIndex >= 0 && !jsonFile ? 2 : 0);
}
const lock = process.env.LBA_STATUS_BENCH_LOCK ?? '/tmp/guest.lock';
const haveFlock = (() => {
  try {
    execFileSync('flock', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

const started = Date.now();
const log = (m) => console.error(`[bench ${((Date.now() - started) / 1000).toFixed(0)}s] ${m}`);

/** Runs a child under the lock; resolves with stdout, streams stderr with a prefix. */
function child(cmd, argv, { env = {}, prefix = '' } = {}) {
  const [c, a] = lock && haveFlock ? ['flock', [lock, cmd, ...argv]] : [cmd, argv];
  return new Promise((resolvePromise, reject) => {
    const p = spawn(c, a, {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stderr.on('data', (d) => {
      for (const line of String(d).split('\n')) if (line) console.error(`${prefix}${line}`);
    });
    p.on('error', reject);
    p.on('close', (code) =>
      code === 0
        ? resolvePromise(out)
        : reject(new Error(`${cmd} ${argv.join(' ')} exited ${code}\n${out.slice(-4000)}`)),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// 1. snapshot the build, compile the baseline

const work = mkdtempSync(join(tmpdir(), 'lba-bench-'));
const pkg = join(work, 'pkg');
cpSync(join(root, 'dist'), join(pkg, 'dist'), { recursive: true });
writeFileSync(join(pkg, 'package.json'), '{"type":"module"}\n');
symlinkSync(join(root, 'node_modules'), join(pkg, 'node_modules'));
const addon = join(pkg, 'lba_status.node');
copyFileSync(join(root, 'build/Release/lba_status.node'), addon);
const baseline = join(work, 'sgio-baseline');
execFileSync(
  process.env.CC ?? 'cc',
  ['-O2', '-Wall', '-o', baseline, join(root, 'scripts/bench/sgio-baseline.c')],
  {
    stdio: 'inherit',
  },
);
const childEnv = { LBA_STATUS_NATIVE_PATH: addon };
log(`work directory ${work}${quick ? ' (quick)' : ''}`);

const sizes = quick
  ? {
      reps: 3,
      eventLoopSeconds: 3,
      tgt: { scanExtents: 2000, readExtents: 4, readExtentBytes: 16 << 20 },
      sim: { sizeGiB: 64, extents: 2000, latencyWindows: 32 },
      parseSeconds: 0.3,
      memoryExtents: 1_000_000,
    }
  : {
      reps: 7,
      eventLoopSeconds: 10,
      tgt: { scanExtents: 5000, readExtents: 8, readExtentBytes: 32 << 20 },
      sim: { sizeGiB: 256, extents: 5000, latencyWindows: 128 },
      parseSeconds: 1,
      memoryExtents: 1_000_000,
    };

// ---------------------------------------------------------------------------------------------
// 2. host figures: parsing, memory

const hostBench = join(root, 'scripts/bench/host-bench.mjs');
log('figure 4: parsing');
const parse = JSON.parse(
  await child('node', [hostBench, 'parse', String(sizes.parseSeconds), String(sizes.reps)], {
    env: childEnv,
  }),
);
log('figure 5: memory');
const memory = {};
for (const mode of ['batch', 'object']) {
  memory[mode] = JSON.parse(
    await child('node', ['--expose-gc', hostBench, 'memory', mode, String(sizes.memoryExtents)], {
      env: childEnv,
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// 3. guests

async function guest(scenario) {
  const out = join(work, `${scenario}.json`);
  const cfg = join(work, `${scenario}-config.json`);
  writeFileSync(
    cfg,
    JSON.stringify({
      scenario,
      out,
      baseline,
      dist: join(pkg, 'dist'),
      quick,
      reps: sizes.reps,
      scanReps: quick ? 5 : 15,
      eventLoopSeconds: sizes.eventLoopSeconds,
      tgt: sizes.tgt,
      sim: sizes.sim,
    }),
  );
  log(`guest ${scenario}`);
  await child(
    join(root, 'scripts/guest/uml-run.sh'),
    [work, `sh scripts/bench/guest-run.sh ${scenario} ${cfg}`],
    {
      env: {
        ...childEnv,
        EXTRA_MODS: 'iscsi_tcp',
        SCSI_DEBUG: '',
        LBA_STATUS_TGT_SIZE: '64G',
        TIMEOUT: quick ? '240' : '900',
      },
      prefix: `[${scenario}] `,
    },
  );
  return JSON.parse(readFileSync(out, 'utf8'));
}
const tgt = await guest('tgt');
const sim = await guest('sim');

// ---------------------------------------------------------------------------------------------
// 4. figures, table, JSON

const f = (x, d = 1) => (x === undefined ? '–' : Number(x).toFixed(d));
const figures = {
  scanVsSgUtils: {
    figure: 1,
    target: '>= 20x faster',
    headline: { tgt: tgt.figures.vsSgUtils.tgt.speedup, sim: sim.figures.vsSgUtils.sim.speedup },
    met: tgt.figures.vsSgUtils.tgt.speedup >= 20 && sim.figures.vsSgUtils.sim.speedup >= 20,
    tgt: tgt.figures.vsSgUtils.tgt,
    sim: sim.figures.vsSgUtils.sim,
  },
  scanVsC: {
    figure: 2,
    target: '<= 10% overhead',
    headline: {
      tgt: tgt.figures.vsC.tgt.overheadPercent,
      sim: sim.figures.vsC.sim.overheadPercent,
    },
    met: tgt.figures.vsC.tgt.overheadPercent <= 10 && sim.figures.vsC.sim.overheadPercent <= 10,
    tgt: tgt.figures.vsC.tgt,
    sim: sim.figures.vsC.sim,
  },
  concurrency: {
    figure: 3,
    target: '>= 3x at 4 windows in flight (2 ms added per command)',
    headline: { sim: sim.figures.concurrency.sim.speedupAt4 },
    met: sim.figures.concurrency.sim.speedupAt4 >= 3,
    sim: sim.figures.concurrency.sim,
  },
  parsing: {
    figure: 4,
    target: '>= 50 M descriptors/s',
    headline: {
      native: parse.nativeMDescriptorsPerSecond,
      dataView: parse.dataViewMDescriptorsPerSecond,
    },
    met: parse.nativeMDescriptorsPerSecond >= 50,
    host: parse,
  },
  memory: {
    figure: 5,
    target: '<= 32 B per extent in batches',
    headline: { batch: memory.batch.bytesPerExtent, object: memory.object.bytesPerExtent },
    met: memory.batch.bytesPerExtent <= 32,
    host: memory,
  },
  eventLoop: {
    figure: 6,
    target: 'p99 < 10 ms',
    headline: { tgt: tgt.figures.eventLoop.tgt.p99Ms, sim: sim.figures.eventLoop.sim.p99Ms },
    met: tgt.figures.eventLoop.tgt.p99Ms < 10,
    tgt: tgt.figures.eventLoop.tgt,
    sim: sim.figures.eventLoop.sim,
  },
  readChanged: {
    figure: 7,
    target: '>= 90% of dd iflag=direct',
    headline: { tgt: tgt.figures.readChanged.tgt.percentOfDd },
    met: tgt.figures.readChanged.tgt.percentOfDd >= 90,
    tgt: tgt.figures.readChanged.tgt,
  },
};
const report = {
  version: 1,
  date: new Date().toISOString(),
  quick,
  durationSeconds: Math.round((Date.now() - started) / 1000),
  machine: {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    hostKernel: release(),
    guestKernel: tgt.environment.kernel,
    node: process.version,
    guest:
      'User-Mode Linux (1 guest CPU), target (its own process) and initiator in the same guest',
  },
  figures,
  diagnostics: { tgt: tgt.diagnostics.tgt, sim: sim.diagnostics.sim },
};

const rows = [
  [
    '1 scan vs sg_get_lba_status loop',
    '≥ 20×',
    `tgt ${f(figures.scanVsSgUtils.headline.tgt)}×, sim ${f(figures.scanVsSgUtils.headline.sim)}×`,
    figures.scanVsSgUtils.met,
  ],
  [
    '2 overhead vs C SG_IO loop',
    '≤ 10 %',
    `tgt ${f(figures.scanVsC.headline.tgt)} %, sim ${f(figures.scanVsC.headline.sim)} % (1 in flight: ${f(figures.scanVsC.sim.overheadPercentOneInFlight)} %)`,
    figures.scanVsC.met,
  ],
  [
    '3 speedup, 4 windows in flight',
    '≥ 3×',
    `${f(figures.concurrency.headline.sim, 2)}× (best default: ${figures.concurrency.sim.recommendedDefault})`,
    figures.concurrency.met,
  ],
  [
    '4 parse, M descriptors/s',
    '≥ 50',
    `native ${f(parse.nativeMDescriptorsPerSecond)}, DataView ${f(parse.dataViewMDescriptorsPerSecond)}`,
    figures.parsing.met,
  ],
  [
    '5 bytes per extent (1 M)',
    '≤ 32',
    `batch ${f(memory.batch.bytesPerExtent)}, object ${f(memory.object.bytesPerExtent)}`,
    figures.memory.met,
  ],
  [
    '6 p99 event-loop delay',
    '< 10 ms',
    `tgt ${f(figures.eventLoop.headline.tgt)} ms (idle process beside C scan ${f(figures.eventLoop.tgt.control?.idleWhileCScans.p99Ms)}, alone ${f(figures.eventLoop.tgt.control?.idleNoLoad.p99Ms)}), sim ${f(figures.eventLoop.headline.sim)} ms`,
    figures.eventLoop.met,
  ],
  [
    '7 readChanged vs dd',
    '≥ 90 %',
    `${f(figures.readChanged.headline.tgt)} % at 4 in flight, ${f(figures.readChanged.tgt.percentOfDdOneInFlight)} % at 1 (${f(figures.readChanged.tgt.readChangedMiBps)}/${f(figures.readChanged.tgt.readChangedOneInFlightMiBps)} vs ${f(figures.readChanged.tgt.ddMiBps)} MiB/s)`,
    figures.readChanged.met,
  ],
];
const w = [0, 1, 2].map((i) => Math.max(...rows.map((r) => String(r[i]).length), 6));
console.log(
  `\nlba-status benchmark${quick ? ' (quick)' : ''}, ${report.date}, ${report.machine.cpus} CPUs, Node ${process.version}, UML guest ${report.machine.guestKernel}`,
);
console.log(`${'figure'.padEnd(w[0])}  ${'target'.padEnd(w[1])}  ${'measured'.padEnd(w[2])}  met`);
for (const r of rows)
  console.log(
    `${r[0].padEnd(w[0])}  ${r[1].padEnd(w[1])}  ${r[2].padEnd(w[2])}  ${r[3] ? 'yes' : 'no'}`,
  );
if (jsonFile) {
  writeFileSync(resolve(process.cwd(), jsonFile), `${JSON.stringify(report, null, 2)}\n`);
  log(`wrote ${jsonFile}`);
}
if (!keep) rmSync(work, { recursive: true, force: true });
else log(`kept ${work}`);
log(`done in ${report.durationSeconds} s`);
if (!existsSync(root)) process.exit(1);
