#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// `npm run soak -- --minutes N`: N minutes of repeated full scans, extent listings, reads and
// exports over `lba-status sim serve` (a child process, random --faults with probabilities), from
// one long-lived client process using the built package over iscsi:// (the library's userspace
// initiator; scripts/soak/client.mjs). Every interval (60 s; 15 s when N < 10) both processes are
// sampled at a quiet point — the client finishes its operation, closes the device and collects
// garbage — for RSS, open fds and open sockets.
//
// Fails (exit 1) when:
//   - RSS grows: the median of the last third of the samples is above the median of the first
//     third by more than max(24 MiB, 25 %), for either process (the first sample, taken while
//     V8 and the caches warm up, is not used; needs at least 6 samples, else only reported);
//   - fds or sockets do not return to the baseline (the first quiet sample) within 5 s of any
//     quiet point: every connection, file and socket an operation opened must be closed;
//   - an operation gives a wrong result (scan ≠ --dump-changed-at, data not the documented block
//     data or not the same as the first read, export not verified), or an error other than a
//     fault outlasting the retries (ScsiError, TransportError), or errors in > 5 % of operations;
//   - either process dies.
//
// Options: --minutes N (default 10), --interval S, --seed S, --json FILE (the samples).
// Needs dist/ (built here when missing).
import { fork, spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    interval: { type: 'string' },
    seed: { type: 'string', default: String(Date.now() % 100000) },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  const text = readFileSync(fileURLToPath(import.meta.url), 'utf8');
  // The header comment after the SPDX line, up to the first line of code.
  const lines = text.split('\n');
  const from = lines.findIndex((l) => l.startsWith('// SPDX')) + 2;
  const to = lines.findIndex((l, i) => i >= from && !l.startsWith('//'));
  console.log(
    lines
      .slice(from, to)
      .map((l) => l.replace(/^\/\/ ?/, ''))
      .join('\n'),
  );
  process.exit(0);
}
const minutes = Number(values.minutes);
if (!(minutes > 0)) {
  console.error(`soak: --minutes must be a positive number; got ${values.minutes}`);
  process.exit(2);
}
const intervalS = values.interval ? Number(values.interval) : minutes < 10 ? 15 : 60;
const seed = Number(values.seed);
const MiB = 1024 * 1024;
const say = (line) => console.log(`soak: ${line}`);

if (!existsSync(join(root, 'dist', 'cli.js')) || !existsSync(join(root, 'dist', 'index.js'))) {
  say('dist/ is missing: npm run build:ts');
  const b = spawnSync('npm', ['run', 'build:ts'], { cwd: root, stdio: 'inherit' });
  if (b.status !== 0) process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// /proc

function procStats(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
  let fds = 0;
  let sockets = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    fds++;
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) sockets++;
    } catch {}
  }
  return { rss, fds, sockets };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const mb = (b) => `${(b / MiB).toFixed(1)} MB`;

// ---------------------------------------------------------------------------------------------
// The two processes

const work = mkdtempSync(join(tmpdir(), 'lba-status-soak-'));
const expectedFile = join(work, 'changed-at-65536.json');
const changeBlockSize = 65536;
const faults = [
  `busy:p=0.05,seed=${seed + 1}`,
  `unit-attention:p=0.02,seed=${seed + 2},on=any`,
  `not-ready:p=0.02,seed=${seed + 3}`,
  `task-set-full:p=0.03,seed=${seed + 4},on=any`,
  `latency:p=0.2,ms=5,seed=${seed + 5},on=any`,
  `drop-connection:p=0.003,seed=${seed + 6},on=any`,
];
const serverArgs = [
  join(root, 'dist', 'cli.js'),
  'sim',
  'serve',
  '--size',
  '2G',
  '--change-block-size',
  String(changeBlockSize),
  '--random-changes',
  '150',
  '--seed',
  String(seed),
  '--port',
  '0',
  '--dump-changed-at',
  String(changeBlockSize),
  expectedFile,
  ...faults.flatMap((f) => ['--fault', f]),
  '--verbose', // one line per login, logout, failed command and dropped connection: counted below
];
const server = spawn(process.execPath, serverArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
let serverExit;
let serverErr = '';
server.stderr.setEncoding('utf8');
/** What the target's --verbose log says happened: logins, faults served, drops. */
const served = { logins: 0, logouts: 0, drops: 0, faultStatus: {} };
let serverPartial = '';
server.stderr.on('data', (s) => {
  serverErr = (serverErr + s).slice(-10_000);
  const lines = (serverPartial + s).split('\n');
  serverPartial = lines.pop();
  for (const line of lines) {
    if (/^sim: login /.test(line)) served.logins++;
    else if (/^sim: logout /.test(line)) served.logouts++;
    else if (/^sim: fault: dropping/.test(line)) served.drops++;
    else {
      const m = /^sim: cmd \S+ lun=\d+ status=(0x[0-9a-f]+)(?: sense=(\w+))?/.exec(line);
      if (m) {
        const name =
          { '0x2': 'CHECK CONDITION', '0x8': 'BUSY', '0x28': 'TASK SET FULL' }[m[1]] ?? m[1];
        // Fixed-format sense in hex: key in byte 2, ASC/ASCQ in bytes 12/13.
        const sense = m[2] && /^[0-9a-f]{28,}$/.test(m[2]) ? Buffer.from(m[2], 'hex') : undefined;
        const hex = (b) => b.toString(16).padStart(2, '0');
        const key = sense ? `${name} ${sense[2] & 0xf}/${hex(sense[12])}/${hex(sense[13])}` : name;
        served.faultStatus[key] = (served.faultStatus[key] ?? 0) + 1;
      }
    }
  }
});
server.on('exit', (code, signal) => {
  serverExit = { code, signal };
});
const ready = await new Promise((resolve, reject) => {
  let buf = '';
  server.stdout.setEncoding('utf8');
  server.stdout.on('data', (s) => {
    buf += s;
    if (buf.includes('\n')) resolve(JSON.parse(buf.slice(0, buf.indexOf('\n'))));
  });
  server.once('exit', () => reject(new Error(`sim serve exited: ${serverErr}`)));
});
const url = `iscsi://${ready.iscsi.portal}/${ready.iscsi.iqn}/${ready.iscsi.lun}`;
say(
  `sim serve pid ${server.pid} at ${url}: 2 GiB, 150 random changes (seed ${seed}), faults ${faults.join(' ')}`,
);

const client = fork(
  join(root, 'scripts', 'soak', 'client.mjs'),
  [
    '--url',
    url,
    '--expected',
    expectedFile,
    '--change-block-size',
    String(changeBlockSize),
    '--data-seed',
    String(seed),
    '--seed',
    String(seed),
    '--dist',
    join(root, 'dist'),
  ],
  { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
);
let clientExit;
client.on('exit', (code, signal) => {
  clientExit = { code, signal };
});
say(`client pid ${client.pid} (dist/ over iscsi://, one device per operation)`);

const counts = {};
const errors = {};
const problems = [];
let opsTotal = 0;
let opsFailed = 0;
let pausedWaiter;
client.on('message', (m) => {
  if (m.type === 'paused') {
    pausedWaiter?.();
    return;
  }
  opsTotal++;
  counts[m.op] ??= { n: 0, ms: 0 };
  const c = counts[m.op];
  c.n++;
  c.ms += m.ms;
  if (m.mismatch) problems.push(`wrong result: ${m.mismatch}`);
  if (m.error) {
    opsFailed++;
    const key = `${m.op}: ${m.code ?? ''} ${m.error}`.slice(0, 200);
    errors[key] = (errors[key] ?? 0) + 1;
    if (!/^(ScsiError|TransportError)\b/.test(m.error))
      problems.push(`unexpected error in ${m.op}: ${m.error}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Sampling

/** Pauses the client at a quiet point and samples both processes once their fds settle. */
async function quietSample(baseline) {
  await new Promise((resolve) => {
    pausedWaiter = resolve;
    client.send({ type: 'pause' });
  });
  pausedWaiter = undefined;
  await new Promise((r) => setTimeout(r, 300));
  let s;
  const deadline = Date.now() + 5000;
  for (;;) {
    s = { t: Date.now(), client: procStats(client.pid), server: procStats(server.pid) };
    if (!baseline) break;
    const settled = ['client', 'server'].every(
      (p) => s[p].fds <= baseline[p].fds && s[p].sockets <= baseline[p].sockets,
    );
    if (settled || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  client.send({ type: 'resume' });
  return s;
}

const samples = [];
const started = Date.now();
const end = started + minutes * 60_000;
let baseline;
let done = false;
const alive = () => !serverExit && !clientExit;
process.on('SIGINT', () => {
  done = true;
});

say(`running ${minutes} min, a sample every ${intervalS} s`);
console.log('soak:   time    ops  errors   client RSS   fds  sockets   server RSS   fds  sockets');
while (!done && alive()) {
  const wait = Math.min(intervalS * 1000, end - Date.now());
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  if (!alive()) break;
  const s = await quietSample(baseline);
  s.ops = opsTotal;
  s.errors = opsFailed;
  samples.push(s);
  baseline ??= s;
  const t = Math.round((s.t - started) / 1000);
  console.log(
    `soak: ${`${t}s`.padStart(6)} ${String(opsTotal).padStart(6)} ${String(opsFailed).padStart(7)}   ${mb(s.client.rss).padStart(10)} ${String(s.client.fds).padStart(5)} ${String(s.client.sockets).padStart(8)}   ${mb(s.server.rss).padStart(10)} ${String(s.server.fds).padStart(5)} ${String(s.server.sockets).padStart(8)}`,
  );
  for (const p of ['client', 'server']) {
    if (s[p].fds > baseline[p].fds || s[p].sockets > baseline[p].sockets) {
      problems.push(
        `${p} fds/sockets did not return to the baseline at ${t}s: ${s[p].fds}/${s[p].sockets}, baseline ${baseline[p].fds}/${baseline[p].sockets}`,
      );
    }
  }
  // No sliver of an interval at the end: the last sample is the last whole interval's.
  if (end - Date.now() < intervalS * 500) break;
}

// ---------------------------------------------------------------------------------------------
// Verdict

if (!clientExit) {
  client.send({ type: 'stop' });
  await new Promise((r) => {
    const t = setTimeout(() => {
      client.kill('SIGKILL');
      r();
    }, 30_000);
    client.once('exit', () => {
      clearTimeout(t);
      r();
    });
  });
} else problems.push(`the client died: ${JSON.stringify(clientExit)}`);
if (serverExit)
  problems.push(`sim serve died: ${JSON.stringify(serverExit)} ${serverErr.slice(-2000)}`);
else server.kill('SIGTERM');

const growth = {};
const used = samples.slice(1);
for (const p of ['client', 'server']) {
  if (used.length < 6) {
    growth[p] = 'not judged (fewer than 6 samples after the first)';
    continue;
  }
  const third = Math.floor(used.length / 3);
  const first = median(used.slice(0, third).map((s) => s[p].rss));
  const last = median(used.slice(-third).map((s) => s[p].rss));
  const allowed = Math.max(24 * MiB, first * 0.25);
  growth[p] =
    `first-third median ${mb(first)}, last-third median ${mb(last)} (${last >= first ? '+' : ''}${mb(last - first)}, allowed +${mb(allowed)})`;
  if (last - first > allowed) problems.push(`${p} RSS grew: ${growth[p]}`);
}
if (opsTotal === 0) problems.push('no operation completed');
else if (opsFailed / opsTotal > 0.05)
  problems.push(`${opsFailed} of ${opsTotal} operations failed (> 5 %)`);

say(
  `${opsTotal} operations in ${((Date.now() - started) / 60000).toFixed(1)} min, ${opsFailed} failed`,
);
for (const [op, c] of Object.entries(counts).sort()) {
  say(
    `  ${op.padEnd(8)} ${String(c.n).padStart(6)}   ${(c.ms / c.n).toFixed(0).padStart(5)} ms average`,
  );
}
for (const [e, n] of Object.entries(errors)) say(`  error ×${n}: ${e}`);
const faulted = Object.values(served.faultStatus).reduce((a, b) => a + b, 0);
say(
  `sim serve: ${served.logins} logins, ${served.logouts} logouts, ${faulted} commands answered with a fault or error status (${
    Object.entries(served.faultStatus)
      .map(([k, n]) => `${k} ×${n}`)
      .join(', ') || 'none'
  }), ${served.drops} connections dropped`,
);
if (opsTotal >= 50 && faulted === 0)
  problems.push('no fault fired: the soak did not exercise the retries');
for (const p of ['client', 'server']) {
  const rss = samples.map((s) => s[p].rss);
  if (rss.length === 0) continue;
  say(
    `${p}: RSS min ${mb(Math.min(...rss))} max ${mb(Math.max(...rss))}; fds ${samples[0][p].fds} → ${samples.at(-1)[p].fds}, sockets ${samples[0][p].sockets} → ${samples.at(-1)[p].sockets}; ${growth[p]}`,
  );
}
if (values.json) {
  writeFileSync(
    values.json,
    `${JSON.stringify({ seed, minutes, intervalS, faults, samples, counts, errors, served, growth, problems }, null, 1)}\n`,
  );
}
rmSync(work, { recursive: true, force: true });
if (problems.length > 0) {
  for (const p of [...new Set(problems)].slice(0, 20)) say(`FAIL: ${p}`);
  say(`reproduce with: npm run soak -- --minutes ${minutes} --seed ${seed}`);
  process.exit(1);
}
say('ok: no growth, fds and sockets back to baseline at every sample, every result right');
