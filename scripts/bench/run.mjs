#!/usr/bin/env node
// `npm run bench`: the nine figures of the benchmark (README "Performance").
//
//   npm run bench [-- --quick] [-- --json FILE] [-- --device PATH]
//
// With --device PATH, figures 1-3, 6 and 7 are measured on that device on this host instead (no
// guest; read-only). On the host: snapshots the build (dist/ and the addon, so a rebuild meanwhile cannot disturb
// the run), compiles the C baseline (sgio-baseline.c) with cc, measures parsing and memory
// (host-bench.mjs), the userspace iSCSI figures 8-9 against `lba-status sim serve` on the host
// (iscsi-bench.mjs; qemu-img with libiscsi as the C baseline), then boots one User-Mode Linux
// guest per scenario (scripts/guest/uml-run.sh)
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
const deviceIndex = args.indexOf('--device');
const device = deviceIndex >= 0 ? args[deviceIndex + 1] : undefined;
const usageError = (jsonIndex >= 0 && !jsonFile) || (deviceIndex >= 0 && !device);
if (args.includes('--help') || usageError) {
  console.log(`usage: npm run bench -- [--quick] [--json FILE] [--device PATH] [--keep]

  --quick        fewer repetitions and smaller volumes (CI; under 5 minutes)
  --json FILE    write every figure, repetition and diagnostic as JSON
  --device PATH  measure a real device on this host instead of the test guests
                 (/dev/sdX, /dev/sgN or a symlink; read-only; needs root or the sg node's
                 permissions, sg3-utils and a C compiler). Use a delta volume attached over
                 iSCSI to measure what your backups will see.
  --keep         keep the work directory (snapshots, raw JSON of each scenario)`);
  process.exit(usageError ? 2 : 0);
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
      iscsi: {
        read: { sizeMiB: 64, reps: 5 }, // short runs: more pairs
        // 1 TiB with the full run's extent density: ~1 000 commands
        scan: { size: '1T', extents: 6250, reps: 3 },
      },
    }
  : {
      reps: 7,
      eventLoopSeconds: 10,
      tgt: { scanExtents: 5000, readExtents: 8, readExtentBytes: 32 << 20 },
      sim: { sizeGiB: 256, extents: 5000, latencyWindows: 128 },
      parseSeconds: 1,
      memoryExtents: 1_000_000,
      iscsi: {
        read: { sizeMiB: 256 },
        scan: { size: '16T', extents: 100_000, reps: 3 },
      },
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
log('figure 2 units: event-loop turn, command round trip');
const roundTrip = JSON.parse(
  await child('node', [hostBench, 'roundtrip', quick ? '500' : '2000'], { env: childEnv }),
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
// 3. userspace iSCSI on the host: figures 8 (readChanged vs qemu-img) and 9 (scan vs the floor)

log('figures 8-9: userspace iSCSI (sim serve in its own process, qemu-img/libiscsi)');
const iscsiOut = join(work, 'iscsi.json');
const iscsiCfg = join(work, 'iscsi-config.json');
writeFileSync(
  iscsiCfg,
  JSON.stringify({
    out: iscsiOut,
    dist: join(pkg, 'dist'),
    quick,
    reps: sizes.reps,
    read: { ...sizes.iscsi.read, tuned: { concurrency: 8, chunkSize: 256 << 10 } },
    scan: { ...sizes.iscsi.scan, latencyMs: 2, levels: [1, 4, 8] },
  }),
);
await child('node', [join(root, 'scripts/bench/iscsi-bench.mjs'), iscsiCfg], {
  env: childEnv,
  prefix: '[iscsi] ',
});
const iscsi = JSON.parse(readFileSync(iscsiOut, 'utf8')).figures;

// ---------------------------------------------------------------------------------------------
// 4. guests

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
async function onDevice(path) {
  const out = join(work, 'device.json');
  const cfg = join(work, 'device-config.json');
  writeFileSync(
    cfg,
    JSON.stringify({
      scenario: 'device',
      device: path,
      out,
      baseline,
      dist: join(pkg, 'dist'),
      quick,
      reps: sizes.reps,
      scanReps: quick ? 3 : 7,
      eventLoopSeconds: sizes.eventLoopSeconds,
    }),
  );
  log(`device ${path} (read-only)`);
  await child('node', [join(root, 'scripts/bench/guest-bench.mjs'), cfg], {
    env: childEnv,
    prefix: '[device] ',
  });
  return JSON.parse(readFileSync(out, 'utf8'));
}

const results = device ? { device: await onDevice(device) } : { tgt: await guest('tgt') };
if (!device) results.sim = await guest('sim');

// ---------------------------------------------------------------------------------------------
// 5. figures, table, JSON

/** figure key -> { scenario -> that scenario's numbers }, over every scenario that measured it. */
const measured = {};
for (const r of Object.values(results)) {
  for (const [key, byScenario] of Object.entries(r.figures)) {
    for (const [name, value] of Object.entries(byScenario)) {
      if (value?.skipped) {
        log(`figure ${key} on ${name} skipped: ${value.skipped}`);
        continue;
      }
      measured[key] ??= {};
      measured[key][name] = value;
    }
  }
}
const f = (x, d = 1) => (x === undefined ? '–' : Number(x).toFixed(d));
/** One figure: its scenarios' numbers, the headline number of each, met when every one is. */
function figure(number, target, key, pickHeadline, meets, extra = {}) {
  const byScenario = measured[key] ?? {};
  const headline = Object.fromEntries(
    Object.entries(byScenario).map(([name, v]) => [name, pickHeadline(v)]),
  );
  const values = Object.values(headline);
  return {
    figure: number,
    target,
    headline,
    met: values.length > 0 && values.every(meets),
    ...extra,
    ...byScenario,
  };
}
const figures = {
  scanVsSgUtils: figure(
    1,
    '>= 20x faster',
    'vsSgUtils',
    (v) => v.speedup,
    (x) => x >= 20,
  ),
  scanVsC: figure(
    2,
    '<= 10% overhead',
    'vsC',
    (v) => v.overheadPercent,
    (x) => x <= 10,
  ),
  concurrency: figure(
    3,
    device
      ? '>= 3x at 4 windows in flight (the device as it is, no added latency)'
      : '>= 3x at 4 windows in flight (2 ms added per command)',
    'concurrency',
    (v) => v.speedupAt4,
    (x) => x >= 3,
  ),
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
  eventLoop: figure(
    6,
    'p99 < 10 ms',
    'eventLoop',
    (v) => v.p99Ms,
    (x) => x < 10,
  ),
  readChanged: figure(
    7,
    '>= 90% of dd iflag=direct',
    'readChanged',
    (v) => v.percentOfDd,
    (x) => x >= 90,
  ),
  iscsiRead: {
    figure: 8,
    target: '>= 100% of qemu-img convert -O raw iscsi:// (libiscsi), at the default settings',
    headline: {
      default: iscsi.iscsiRead.percentOfQemuImg,
      tuned: iscsi.iscsiRead.percentOfQemuImgTuned,
    },
    met: iscsi.iscsiRead.percentOfQemuImg >= 100,
    metTuned: iscsi.iscsiRead.percentOfQemuImgTuned >= 100,
    host: iscsi.iscsiRead,
  },
  iscsiScan: {
    figure: 9,
    target: `<= 20% over the latency floor (commands x ${iscsi.iscsiScan.latencyMs} ms / windows in flight) at 1, 4 and 8 in flight`,
    headline: Object.fromEntries(
      Object.entries(iscsi.iscsiScan.byConcurrency).map(([c, v]) => [c, v.percentOverFloor]),
    ),
    met: iscsi.iscsiScan.worstPercentOverFloor <= 20,
    cpuUsPerCommand: {
      userspace: iscsi.iscsiScan.cpuUsPerCommand,
      // the kernel path's CPU per command, from figure 2 in the simulator guest (UML: not 1:1)
      kernelInUmlGuest: results.sim?.figures.vsC?.sim?.libraryCpuUsPerCommand,
      note: 'userspace: this host, process.cpuUsage() of the scanning process (1 in flight, 2 ms per command) / commands, simulator in another process; kernel: the same measure in the UML guest during figure 2 (threads engine, default concurrency, no added latency; the kernel initiator work done outside the process is not in it), at UML system-call prices',
    },
    host: iscsi.iscsiScan,
  },
};
const first = Object.values(results)[0];
const report = {
  version: 1,
  date: new Date().toISOString(),
  quick,
  durationSeconds: Math.round((Date.now() - started) / 1000),
  machine: {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    hostKernel: release(),
    guestKernel: device ? undefined : first.environment.kernel,
    node: process.version,
    guest: device
      ? undefined
      : 'User-Mode Linux (1 guest CPU), target (its own process) and initiator in the same guest',
    device,
    syscallCost: {
      host: JSON.parse(execFileSync(baseline, ['--syscall-cost'], { encoding: 'utf8' })),
      ...(device ? {} : { guest: first.environment.syscallCost }),
    },
    roundTrip: { host: roundTrip, ...(device ? {} : { guest: first.environment.roundTrip }) },
  },
  figures,
  diagnostics: Object.fromEntries(
    Object.entries(results).map(([name, r]) => [name, r.diagnostics[name]]),
  ),
};

const each = (fig, fmt) =>
  Object.entries(fig)
    .filter(([k]) => k in results)
    .map(([name, v]) => `${name} ${fmt(v)}`)
    .join(', ') || 'skipped';
const rows = [
  [
    '1 scan vs sg_get_lba_status loop',
    '≥ 20×',
    each(figures.scanVsSgUtils, (v) => `${f(v.speedup)}×`),
    figures.scanVsSgUtils.met,
  ],
  [
    '2 overhead vs C SG_IO loop',
    '≤ 10 %',
    each(
      figures.scanVsC,
      (v) =>
        `${f(v.overheadPercent)} % (1 in flight: ${f(v.overheadPercentOneInFlight)} %${v.overheadPercentSgAsyncEngine === undefined ? '' : `; sg-async engine: ${f(v.overheadPercentSgAsyncEngine)} %`})`,
    ),
    figures.scanVsC.met,
  ],
  [
    '3 speedup, 4 windows in flight',
    '≥ 3×',
    each(
      figures.concurrency,
      (v) => `${f(v.speedupAt4, 2)}× (best default: ${v.recommendedDefault})`,
    ),
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
    each(
      figures.eventLoop,
      (v) =>
        `${f(v.p99Ms)} ms (idle process beside C scan ${f(v.control?.idleWhileCScans.p99Ms)}, alone ${f(v.control?.idleNoLoad.p99Ms)})`,
    ),
    figures.eventLoop.met,
  ],
  [
    '7 readChanged vs dd',
    '≥ 90 %',
    each(
      figures.readChanged,
      (v) =>
        `${f(v.percentOfDd)} % at 4 in flight, ${f(v.percentOfDdOneInFlight)} % at 1 (${f(v.readChangedMiBps)}/${f(v.readChangedOneInFlightMiBps)} vs ${f(v.ddMiBps)} MiB/s)`,
    ),
    figures.readChanged.met,
  ],
  [
    '8 readChanged iscsi:// vs qemu-img',
    '≥ 100 %',
    (() => {
      const v = iscsi.iscsiRead;
      return `${f(v.percentOfQemuImg)} % default, ${f(v.percentOfQemuImgTuned)} % tuned (${f(v.readChangedMiBps)}/${f(v.readChangedTunedMiBps)} vs ${f(v.qemuImgMiBps)} MiB/s; qemu-img to null ${f(v.qemuImgNullTargetMiBps)}; CPU ${f(v.readChangedCpuMsPerMiB, 2)} vs ${f(v.qemuImgCpuMsPerMiB, 2)} ms/MiB)`;
    })(),
    figures.iscsiRead.met,
  ],
  [
    `9 scan ${iscsi.iscsiScan.size}, ${iscsi.iscsiScan.latencyMs} ms/cmd, over floor`,
    '≤ 20 %',
    (() => {
      const v = iscsi.iscsiScan;
      const levels = Object.entries(v.byConcurrency)
        .map(([c, x]) => `${c}: +${f(x.percentOverFloor)} %`)
        .join(', ');
      const kernel = figures.iscsiScan.cpuUsPerCommand.kernelInUmlGuest;
      return `${levels} (${v.commands} commands; CPU ${f(v.cpuUsPerCommand)} µs/cmd${kernel === undefined ? '' : `, kernel path in UML ${f(kernel)}`})`;
    })(),
    figures.iscsiScan.met,
  ],
];
const w = [0, 1, 2].map((i) => Math.max(...rows.map((r) => String(r[i]).length), 6));
console.log(
  `\nlba-status benchmark${quick ? ' (quick)' : ''}, ${report.date}, ${report.machine.cpus} CPUs, Node ${process.version}, ${device ? `device ${device}, kernel ${release()}` : `UML guest ${report.machine.guestKernel}`}`,
);
const cost = report.machine.syscallCost;
console.log(
  `system call cost: host getppid ${cost.host.getppidNs} ns, clock_gettime ${cost.host.clockGettimeNs} ns${cost.guest ? `; guest getppid ${cost.guest.getppidNs} ns, clock_gettime ${cost.guest.clockGettimeNs} ns` : ''}`,
);
const trip = report.machine.roundTrip;
console.log(
  `event-loop turn / command round trip (no device): host ${trip.host.eventLoopTurnUs} / ${trip.host.threadsEngineRoundTripUs} µs${trip.guest ? `; guest ${trip.guest.eventLoopTurnUs} / ${trip.guest.threadsEngineRoundTripUs} µs` : ''}`,
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
