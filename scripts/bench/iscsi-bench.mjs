// The userspace iSCSI half of `npm run bench` (figures 8 and 9), on the host: no guest, no kernel
// initiator. The target is `lba-status sim serve` in its own process (from the same dist/);
// this process is the initiator (`openDevice('iscsi://…')`).
//
//   node scripts/bench/iscsi-bench.mjs CONFIG.json
//
// CONFIG: { out, dist, quick, reps, read: { sizeMiB, tuned: { concurrency, chunkSize } },
//           scan: { size, extents, latencyMs, levels, reps } } (see run.mjs).
//
// Figure 8: readChanged over iscsi:// vs `qemu-img convert -O raw iscsi://…` (libiscsi, C) on a
// volume whose every block is changed, paired repetitions in a rotating order. The library
// consumes and drops the chunks; qemu-img writes a raw file on tmpfs (/dev/shm; it cannot write
// -O raw to /dev/null), deleted after each repetition. As a diagnostic, qemu-img into its null
// driver (no output at all).
// Figure 9: full scans of a large simulated volume with a fixed latency per GET LBA STATUS, at
// 1, 4 and 8 windows in flight, against the latency floor (commands × latency ÷ in flight), and
// the scanning process's CPU time per command.
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const dist = cfg.dist ? pathToFileURL(`${cfg.dist}/`) : new URL('../../dist/', import.meta.url);
const { openDevice, readChanged } = await import(new URL('index.js', dist).href);
const log = (...a) => console.error('[bench iscsi]', ...a);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const round = (x, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${cmd} ${args.join(' ')}: ${error.message}\n${stderr}`));
      else resolve({ stdout, stderr });
    });
  });
}

/** The CPU time (user + system, ms) of another process, from /proc. */
function processCpuMs(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime + stime, USER_HZ 100
  } catch {
    return Number.NaN;
  }
}

/** CPU time (ms) of this process's reaped children (qemu-img), from /proc: cutime + cstime. */
function childrenCpuMs() {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[13]) + Number(fields[14])) * 1000) / 100;
}

/** Starts `lba-status sim serve` (any free port); resolves once it prints its ready line. */
function serveSimulator(args) {
  const cli = new URL('cli.js', dist).pathname;
  const argv = [cli, 'sim', 'serve', '--port', '0', '--no-unit-attention', ...args];
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
      const { portal, iqn, lun } = ready.iscsi;
      resolve({
        url: `iscsi://${portal}/${iqn}/${lun}`,
        pid: p.pid,
        cpuMs: () => processCpuMs(p.pid),
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

async function withSimulator(args, fn) {
  const sim = await serveSimulator(args);
  try {
    return await fn(sim);
  } finally {
    await sim.close();
  }
}

// ---------------------------------------------------------------------------------------------
// figure 8: readChanged over iscsi:// vs qemu-img convert (libiscsi)

async function readFigure() {
  const bytes = cfg.read.sizeMiB * 2 ** 20;
  const tmp = mkdtempSync(join(tmpdir(), 'lba-bench-iscsi-'));
  const changed = join(tmp, 'changed.json');
  writeFileSync(changed, JSON.stringify([{ offset: 0, length: bytes }]));
  // qemu-img's raw output on tmpfs: memory, not a disk, is what it writes to
  const shm = mkdtempSync(join('/dev/shm', 'lba-bench-iscsi-'));
  const rawOut = join(shm, 'out.raw');
  try {
    // --gls16: qemu-img asks GET LBA STATUS(16) for block status (the simulator refuses it
    // otherwise, which qemu-img survives by reading everything — the same bytes, with an error)
    return await withSimulator(
      ['--size', String(bytes), '--changed', changed, '--gls16'],
      async (sim) => readFigureWith(sim, bytes, rawOut),
    );
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    rmSync(shm, { recursive: true, force: true });
  }
}

async function readFigureWith(sim, bytes, rawOut) {
  const tuned = cfg.read.tuned;
  /** One full read with the library, device opened and closed inside the time (like qemu-img). */
  const lib = async ({ concurrency, chunkSize } = {}) => {
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const sim0 = sim.cpuMs();
    const dev = await openDevice(sim.url, { queueDepth: concurrency ?? 4 });
    let got = 0;
    let chunks = 0;
    try {
      for await (const c of readChanged(dev, {
        reuseBuffers: true, // as `lba-status read` and export: the chunk is consumed before the next
        ...(concurrency ? { concurrency } : {}),
        ...(chunkSize ? { chunkSize } : {}),
      })) {
        // consume and drop; check that the bytes are the volume's (block 0..7 = its LBA)
        const dv = new DataView(c.data.buffer, c.data.byteOffset, 8);
        if (dv.getUint32(4) !== c.lba % 2 ** 32) throw new Error(`wrong data at LBA ${c.lba}`);
        got += c.length;
        chunks++;
      }
    } finally {
      await dev.close();
    }
    if (got !== bytes) throw new Error(`readChanged read ${got} bytes, expected ${bytes}`);
    const cpu = process.cpuUsage(cpu0);
    return {
      ms: performance.now() - t0,
      cpuMs: (cpu.user + cpu.system) / 1000,
      simCpuMs: sim.cpuMs() - sim0,
      chunks,
    };
  };
  const qemu = async (target) => {
    const args =
      target === 'null'
        ? ['convert', '-n', sim.url, '--target-image-opts', `driver=null-co,size=${bytes}`]
        : ['convert', '-O', 'raw', sim.url, rawOut];
    const t0 = performance.now();
    const sim0 = sim.cpuMs();
    const cpu0 = childrenCpuMs();
    await run('qemu-img', args);
    const ms = performance.now() - t0;
    const simCpuMs = sim.cpuMs() - sim0;
    const cpuMs = childrenCpuMs() - cpu0;
    if (target !== 'null') {
      const size = statSync(rawOut).size;
      rmSync(rawOut, { force: true });
      if (size !== bytes) throw new Error(`qemu-img wrote ${size} bytes, expected ${bytes}`);
    }
    return { ms, cpuMs, simCpuMs };
  };
  // qemu-img's fixed cost (process start, login, capacity) without the data
  const qemuInfo = async () => {
    const t0 = performance.now();
    await run('qemu-img', ['info', sim.url]);
    return performance.now() - t0;
  };
  // warm-up (the simulator's JIT, the page cache of qemu-img's libraries, ours)
  await lib();
  await lib(tuned);
  await qemu('raw');
  await qemu('null');

  const libDefault = [];
  const libTuned = [];
  const qemuRaw = [];
  const qemuNull = [];
  const infos = [];
  const steps = [
    async () => libDefault.push(await lib()),
    async () => libTuned.push(await lib(tuned)),
    async () => qemuRaw.push(await qemu('raw')),
  ];
  const reps = cfg.read.reps ?? cfg.reps;
  for (let r = 0; r < reps; r++) {
    for (let k = 0; k < steps.length; k++) await steps[(r + k) % steps.length]();
    qemuNull.push(await qemu('null'));
    infos.push(await qemuInfo());
  }
  const mibps = (ms) => round(bytes / 2 ** 20 / (ms / 1000), 1);
  const paired = (xs, base) => round(median(xs.map((x, i) => base[i].ms / x.ms)) * 100, 1);
  const ms = (xs) => xs.map((x) => round(x.ms, 1));
  return {
    bytes,
    percentOfQemuImg: paired(libDefault, qemuRaw),
    percentOfQemuImgTuned: paired(libTuned, qemuRaw),
    percentOfQemuImgNullTarget: paired(libDefault, qemuNull),
    percentOfQemuImgNullTargetTuned: paired(libTuned, qemuNull),
    readChangedMiBps: mibps(median(ms(libDefault))),
    readChangedTunedMiBps: mibps(median(ms(libTuned))),
    qemuImgMiBps: mibps(median(ms(qemuRaw))),
    qemuImgNullTargetMiBps: mibps(median(ms(qemuNull))),
    qemuImgInfoMs: round(median(infos), 1),
    readChangedCpuMsPerMiB: round(median(libDefault.map((x) => x.cpuMs)) / (bytes / 2 ** 20), 3),
    qemuImgCpuMsPerMiB: round(median(qemuRaw.map((x) => x.cpuMs)) / (bytes / 2 ** 20), 3),
    qemuImgNullTargetCpuMsPerMiB: round(
      median(qemuNull.map((x) => x.cpuMs)) / (bytes / 2 ** 20),
      3,
    ),
    readChangedTunedCpuMsPerMiB: round(median(libTuned.map((x) => x.cpuMs)) / (bytes / 2 ** 20), 3),
    simulatorCpuMsPerMiB: {
      readChanged: round(median(libDefault.map((x) => x.simCpuMs)) / (bytes / 2 ** 20), 3),
      readChangedTuned: round(median(libTuned.map((x) => x.simCpuMs)) / (bytes / 2 ** 20), 3),
      qemuImg: round(median(qemuRaw.map((x) => x.simCpuMs)) / (bytes / 2 ** 20), 3),
    },
    readChangedOptions:
      "default: openDevice(url) (queueDepth 4), readChanged({ reuseBuffers: true }) — concurrency 4, chunkSize 1 MiB, as `lba-status read`; chunks consumed and dropped; the device's open and close inside the time",
    tunedOptions: `openDevice(url, { queueDepth: ${tuned.concurrency} }), readChanged({ reuseBuffers: true, concurrency: ${tuned.concurrency}, chunkSize: ${tuned.chunkSize} })`,
    qemuImgOptions: `qemu-img convert -O raw iscsi://… /dev/shm/…/out.raw (qemu-img's defaults: 8 coroutines; tmpfs file removed after each repetition); null target: qemu-img convert -n iscsi://… --target-image-opts driver=null-co,size=${bytes}`,
    target: '`lba-status sim serve --changed (whole volume) --gls16` in its own process',
    repetitions: reps,
    readChangedRepsMs: ms(libDefault),
    readChangedTunedRepsMs: ms(libTuned),
    qemuImgRepsMs: ms(qemuRaw),
    qemuImgNullTargetRepsMs: ms(qemuNull),
  };
}

// ---------------------------------------------------------------------------------------------
// figure 9: full scan with latency per command, 1/4/8 windows in flight, vs the latency floor

/** One full scan; commands from the scanner's progress, CPU time of this process. */
async function scanOnce(dev, concurrency) {
  let commands = 0;
  let descriptors = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for await (const b of dev.batches({
    cdb: 32,
    concurrency,
    onProgress: (p) => {
      commands = p.commands;
    },
  }))
    descriptors += b.count;
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { ms, commands, descriptors, cpuUs: cpu.user + cpu.system };
}

/** setTimeout(latency) as the simulator's event loop sees it: the delay it really adds. */
async function timerDelay(ms, n) {
  const xs = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, ms));
    xs.push(performance.now() - t0);
  }
  return { medianMs: round(median(xs)), meanMs: round(xs.reduce((a, b) => a + b, 0) / n) };
}

async function scanFigure() {
  const s = cfg.scan;
  const base = ['--size', s.size, '--random-changes', String(s.extents), '--seed', '1'];
  // The floor's unit, measured: per-command time at 1 in flight without the latency
  const noLatency = await withSimulator(base, async (sim) => {
    const dev = await openDevice(sim.url, { queueDepth: 1 });
    try {
      await scanOnce(dev, 1);
      const runs = [];
      for (let r = 0; r < Math.max(1, s.reps); r++) runs.push(await scanOnce(dev, 1));
      const m = median(runs.map((x) => x.ms));
      return {
        msPerCommand: round(m / runs[0].commands, 4),
        cpuUsPerCommand: round(median(runs.map((x) => x.cpuUs)) / runs[0].commands, 1),
      };
    } finally {
      await dev.close();
    }
  });
  const timer = await timerDelay(s.latencyMs, cfg.quick ? 200 : 500);
  return withSimulator(
    [...base, '--fault', `latency:ms=${s.latencyMs},p=1,on=get-lba-status`],
    async (sim) => {
      const devices = {};
      try {
        for (const c of s.levels) devices[c] = await openDevice(sim.url, { queueDepth: c });
        // warm-up: JIT, the simulator's map, the form decision
        await scanOnce(devices[s.levels.at(-1)], s.levels.at(-1));
        const runs = Object.fromEntries(s.levels.map((c) => [c, []]));
        const simCpu = Object.fromEntries(s.levels.map((c) => [c, []]));
        for (let r = 0; r < s.reps; r++) {
          for (let k = 0; k < s.levels.length; k++) {
            const c = s.levels[(r + k) % s.levels.length];
            const sim0 = sim.cpuMs();
            runs[c].push(await scanOnce(devices[c], c));
            simCpu[c].push(sim.cpuMs() - sim0);
          }
        }
        const commands = runs[s.levels[0]][0].commands;
        const byLevel = {};
        for (const c of s.levels) {
          const ms = median(runs[c].map((x) => x.ms));
          const floorMs = (commands * s.latencyMs) / c;
          byLevel[c] = {
            ms: round(ms, 1),
            floorMs: round(floorMs, 1),
            percentOverFloor: round((ms / floorMs - 1) * 100, 1),
            msPerCommandPerWindow: round((ms * c) / commands, 4),
            cpuUsPerCommand: round(median(runs[c].map((x) => x.cpuUs)) / commands, 1),
            simulatorCpuUsPerCommand: round((median(simCpu[c]) * 1000) / commands, 1),
            repsMs: runs[c].map((x) => round(x.ms, 1)),
            commands: runs[c].map((x) => x.commands),
          };
        }
        const worst = Math.max(...s.levels.map((c) => byLevel[c].percentOverFloor));
        return {
          size: s.size,
          extents: s.extents,
          descriptors: runs[s.levels[0]][0].descriptors,
          commands,
          latencyMs: s.latencyMs,
          worstPercentOverFloor: worst,
          byConcurrency: byLevel,
          cpuUsPerCommand: byLevel[s.levels[0]].cpuUsPerCommand,
          noLatency,
          simulatorTimerMs: timer,
          options:
            'openDevice(url, { queueDepth: N }), batches({ cdb: 32, concurrency: N }); commands from onProgress',
          target: `\`lba-status sim serve --size ${s.size} --random-changes ${s.extents} --seed 1 --fault latency:ms=${s.latencyMs},p=1,on=get-lba-status\` in its own process`,
          repetitions: s.reps,
        };
      } finally {
        for (const d of Object.values(devices)) await d.close();
      }
    },
  );
}

// ---------------------------------------------------------------------------------------------

const result = { figures: {} };
const t0 = performance.now();
log(`figure 8: readChanged vs qemu-img, ${cfg.read.sizeMiB} MiB`);
result.figures.iscsiRead = await readFigure();
log(`figure 9: scan ${cfg.scan.size} with ${cfg.scan.latencyMs} ms per command`);
result.figures.iscsiScan = await scanFigure();
result.seconds = round((performance.now() - t0) / 1000, 1);
writeFileSync(cfg.out, `${JSON.stringify(result, null, 2)}\n`);
log(`wrote ${cfg.out} (${result.seconds} s)`);
