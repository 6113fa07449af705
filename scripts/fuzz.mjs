#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// `npm run fuzz -- [--seconds N] [--only native,pdu,target,asan]`: every fuzzer and sanitizer run
// of the project, each for N seconds (default 60), then one summary: inputs run and crashes per
// fuzzer (0 expected). Exit 1 on any crash or sanitizer report, with the crash file and the
// command that reproduces it; exit 2 when a fuzzer could not run at all.
//
//   native  libFuzzer (clang -fsanitize=fuzzer,address,undefined) over native/lba_status.cc: the
//           GET LBA STATUS parser's invariants and the CDB builders' round trip
//           (fuzz/native/lba_status_fuzzer.cc; seeds in fuzz/native/corpus, the grown corpus in
//           build/fuzz/corpus-native)
//   pdu     fast-check, structure-aware, over lib/iscsi/pdu.ts and PduReader
//           (scripts/fuzz/pdu-fuzz.ts)
//   target  random and mutated PDUs against `lba-status sim serve` over TCP: stays up, answers a
//           fresh client, releases closed connections, VmHWM <= 300 MB (scripts/fuzz/target-fuzz.ts)
//   asan    the native test suite (test/native) against an ASan/UBSan build of the whole addon
//           (build/asan/lba_status.node), repeated until N seconds have passed (at least once)
//
// Replaying a crash (each crash prints its own line):
//   npm run fuzz -- --only native --replay build/fuzz/crashes/crash-…
//   npm run fuzz -- --only pdu --property NAME --seed S --path P
//   npm run fuzz -- --only target --replay build/fuzz/crashes/target-….json
//
// Needs clang with its sanitizer runtimes (clang-14, libclang-rt-14-dev, llvm-14 on Debian 12:
// scripts/setup-system.sh) for native and asan, and dist/cli.js (built here when missing) for
// target. Nothing here touches build/Release.
import { spawn, spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const ALL = ['native', 'pdu', 'target', 'asan'];

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '60' },
    only: { type: 'string', default: ALL.join(',') },
    seed: { type: 'string' },
    property: { type: 'string' },
    path: { type: 'string' },
    replay: { type: 'string' },
    'crash-dir': { type: 'string', default: join(root, 'build', 'fuzz', 'crashes') },
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
const seconds = Number(values.seconds);
if (!(seconds > 0)) {
  console.error(`fuzz: --seconds must be a positive number; got ${values.seconds}`);
  process.exit(2);
}
const only = values.only.split(',').map((s) => s.trim());
for (const o of only) {
  if (!ALL.includes(o)) {
    console.error(`fuzz: --only takes ${ALL.join(', ')}; got ${o}`);
    process.exit(2);
  }
}
const crashDir = values['crash-dir'];
mkdirSync(crashDir, { recursive: true });
const rel = (p) => relative(process.cwd(), p) || '.';
const say = (line) => console.log(`fuzz: ${line}`);

/** Runs a command, streaming its output; resolves with its exit code and stdout. */
function run(cmd, args, options = {}) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], ...options });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (s) => {
      out += s;
      if (!options.quiet) process.stdout.write(s.replace(/^FUZZ-RESULT .*\n?/gm, ''));
    });
    child.on('close', (code, signal) => resolve({ code: code ?? 128, signal, out }));
  });
}

/** fuzz/build.sh's KEY=VALUE lines. */
function buildNative(what) {
  const r = spawnSync('bash', [join(root, 'fuzz', 'build.sh'), what], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status !== 0) throw new Error(`fuzz/build.sh ${what} failed (exit ${r.status})`);
  return Object.fromEntries(
    r.stdout
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

/** Bundles a TS fuzzer (it imports lib/ directly) into build/fuzz/NAME.mjs. */
async function bundle(name) {
  const { build } = await import('esbuild');
  const outfile = join(root, 'build', 'fuzz', `${name}.mjs`);
  await build({
    entryPoints: [join(root, 'scripts', 'fuzz', `${name}.ts`)],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    sourcemap: 'inline',
    logLevel: 'warning',
  });
  return outfile;
}

// ---------------------------------------------------------------------------------------------

async function fuzzNative() {
  const env = buildNative('fuzzer');
  const corpus = join(root, 'build', 'fuzz', 'corpus-native');
  mkdirSync(corpus, { recursive: true });
  const before = new Set(readdirSync(crashDir));
  const asan = { ...process.env, ASAN_OPTIONS: 'quarantine_size_mb=32:detect_leaks=1' };
  if (env.SYMBOLIZER) asan.ASAN_SYMBOLIZER_PATH = env.SYMBOLIZER;
  const prefix = `${crashDir}/`;
  if (values.replay) {
    // libFuzzer runs a file argument once, as a regression input.
    const r = await run(env.FUZZER, [values.replay], { env: asan });
    const crashes = r.code === 0 ? 0 : 1;
    return { name: 'native', inputs: 1, crashes, crashFiles: [], reproduce: [] };
  }
  const args = [
    `-max_total_time=${Math.round(seconds)}`,
    '-print_final_stats=1',
    `-artifact_prefix=${prefix}`,
    '-rss_limit_mb=1024',
    corpus,
    join(root, 'fuzz', 'native', 'corpus'),
  ];
  if (values.seed) args.unshift(`-seed=${values.seed}`);
  // libFuzzer logs to stderr; keep the stats for the summary.
  const r = await new Promise((resolve) => {
    const child = spawn(env.FUZZER, args, {
      cwd: root,
      env: asan,
      stdio: ['ignore', 'inherit', 'pipe'],
    });
    let err = '';
    let partial = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s) => {
      err += s;
      const lines = (partial + s).split('\n');
      partial = lines.pop();
      for (const line of lines) {
        // Progress lines are noise in CI logs; findings and stats are not.
        if (/^#\d+\s+(pulse|NEW|REDUCE|INITED|DONE)/.test(line) || line.trim() === '') continue;
        process.stderr.write(`${line}\n`);
      }
    });
    child.on('close', (code) => resolve({ code: code ?? 128, err }));
  });
  const executed = Number(/stat::number_of_executed_units:\s*(\d+)/.exec(r.err)?.[1] ?? 0);
  const crashFiles = readdirSync(crashDir)
    .filter((f) => !before.has(f) && /^(crash|leak|timeout|oom|slow-unit)-/.test(f))
    .map((f) => join(crashDir, f));
  const crashes = r.code === 0 ? 0 : Math.max(1, crashFiles.length);
  return {
    name: 'native',
    inputs: executed,
    crashes,
    crashFiles,
    reproduce: crashFiles.map((f) => `npm run fuzz -- --only native --replay ${rel(f)}`),
    notes: { corpus: readdirSync(corpus).length },
    failedToRun: r.code !== 0 && crashFiles.length === 0 && executed === 0,
  };
}

async function fuzzJs(name, extra) {
  const bundleFile = await bundle(`${name}-fuzz`);
  const args = [bundleFile, '--seconds', String(seconds), '--crash-dir', crashDir, ...extra];
  if (values.seed) args.push('--seed', values.seed);
  const r = await run(process.execPath, ['--enable-source-maps', ...args]);
  const line = r.out.split('\n').find((l) => l.startsWith('FUZZ-RESULT '));
  if (!line) {
    return { name, inputs: 0, crashes: 0, crashFiles: [], reproduce: [], failedToRun: true };
  }
  return JSON.parse(line.slice('FUZZ-RESULT '.length));
}

async function fuzzPdu() {
  const extra = [];
  if (values.property) extra.push('--property', values.property);
  if (values.path) extra.push('--path', values.path);
  return fuzzJs('pdu', extra);
}

async function fuzzTarget() {
  if (!process.env.LBA_STATUS_FUZZ_CLI && !existsSync(join(root, 'dist', 'cli.js'))) {
    say('dist/cli.js is missing: npm run build:ts');
    const b = spawnSync('npm', ['run', 'build:ts'], { cwd: root, stdio: 'inherit' });
    if (b.status !== 0) throw new Error('npm run build:ts failed');
  }
  return fuzzJs('target', values.replay ? ['--replay', values.replay] : []);
}

/**
 * The native test suite against the ASan/UBSan addon. The tests run from a shadow package root,
 * build/asan/root: test/native copied (so helpers.ts's packageRoot, which the lifecycle tests'
 * child processes and workers load the addon from with node-gyp-build, is the shadow root), its
 * build/Release/lba_status.node being the ASan build; lib/ and node_modules/ are symlinks, and
 * LBA_STATUS_NATIVE_PATH points lib/binding.ts at the same file. A setup file fails the run if
 * the uninstrumented build/Release addon is ever mapped into a test process.
 */
async function asanSuite() {
  const env = buildNative('addon');
  const asanDir = join(root, 'build', 'asan');
  const shadow = join(asanDir, 'root');
  const reports = join(asanDir, 'reports');
  rmSync(shadow, { recursive: true, force: true });
  rmSync(reports, { recursive: true, force: true });
  mkdirSync(join(shadow, 'test'), { recursive: true });
  mkdirSync(join(shadow, 'build', 'Release'), { recursive: true });
  mkdirSync(reports, { recursive: true });
  cpSync(join(root, 'test', 'native'), join(shadow, 'test', 'native'), { recursive: true });
  cpSync(env.ADDON, join(shadow, 'build', 'Release', 'lba_status.node'));
  for (const link of ['lib', 'node_modules', 'package.json', 'tsconfig.json']) {
    symlinkSync(join(root, link), join(shadow, link));
  }
  writeFileSync(
    join(shadow, 'asan-setup.mjs'),
    `import { readFileSync } from 'node:fs';
import { afterAll } from 'vitest';
afterAll(() => {
  const maps = readFileSync('/proc/self/maps', 'utf8');
  if (maps.includes(${JSON.stringify(join(root, 'build', 'Release'))})) {
    throw new Error('the uninstrumented build/Release addon was loaded under the ASan run');
  }
  if (!maps.includes('libclang_rt.asan')) throw new Error('the ASan runtime is not loaded');
});
`,
  );
  writeFileSync(
    join(shadow, 'vitest.config.mjs'),
    `export default {
  test: {
    include: ['test/native/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 120000,
    setupFiles: ['./asan-setup.mjs'],
  },
};
`,
  );
  // detect_leaks=0: LeakSanitizer reports what node itself never frees at exit — V8 heap slot
  // sets, the function templates behind napi_define_class, the napi deferred of a promise still
  // pending at process.exit() (which test/native/lifecycle.test.ts does on purpose) — and every
  // non-node process that inherits LD_PRELOAD (vitest's workers spawn `sort`); its exit code 23
  // then flips the lifecycle tests' exit-status assertions (tried: 18 reports, 2 failed tests,
  // none about the addon's own allocations). Use-after-free, overflows, double free and UB stay
  // fatal. Reports also go to build/asan/reports/, so a crash in a child process that a test
  // only sees as "exited with 1" still counts.
  const sanEnv = {
    ...process.env,
    LD_PRELOAD: [env.ASAN_RUNTIME, process.env.LD_PRELOAD].filter(Boolean).join(' '),
    ASAN_OPTIONS: `detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=${reports}/asan:log_exe_name=1`,
    UBSAN_OPTIONS: `print_stacktrace=1:halt_on_error=1:log_path=${reports}/ubsan`,
    LBA_STATUS_NATIVE_PATH: join(shadow, 'build', 'Release', 'lba_status.node'),
  };
  if (env.SYMBOLIZER) sanEnv.ASAN_SYMBOLIZER_PATH = env.SYMBOLIZER;
  const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
  const deadline = Date.now() + seconds * 1000;
  let inputs = 0;
  let runs = 0;
  let failed = 0;
  do {
    runs++;
    const json = join(asanDir, `vitest-${runs}.json`);
    const r = await run(
      process.execPath,
      [
        vitest,
        'run',
        '--root',
        shadow,
        '--config',
        join(shadow, 'vitest.config.mjs'),
        '--reporter=dot',
        '--reporter=json',
        `--outputFile.json=${json}`,
      ],
      { cwd: shadow, env: sanEnv },
    );
    let tests = 0;
    try {
      const j = JSON.parse(readFileSync(json, 'utf8'));
      tests = j.numTotalTests;
      failed += j.numFailedTests;
    } catch {}
    inputs += tests;
    if (r.code !== 0) {
      failed = Math.max(failed, 1);
      break;
    }
  } while (Date.now() < deadline);
  const found = readdirSync(reports).map((f) => join(reports, f));
  const crashes = found.length + (found.length === 0 ? failed : 0);
  return {
    name: 'asan',
    inputs,
    crashes,
    crashFiles: found,
    reproduce: crashes
      ? [
          `LD_PRELOAD=${env.ASAN_RUNTIME} ASAN_OPTIONS=detect_leaks=0 LBA_STATUS_NATIVE_PATH=${rel(sanEnv.LBA_STATUS_NATIVE_PATH)} ` +
            `node node_modules/vitest/vitest.mjs run --root ${rel(shadow)} --config ${rel(join(shadow, 'vitest.config.mjs'))}` +
            '   (after npm run fuzz -- --only asan has built it)',
        ]
      : [],
    notes: { suiteRuns: runs, testsPerRun: runs ? Math.round(inputs / runs) : 0 },
  };
}

// ---------------------------------------------------------------------------------------------

const jobs = { native: fuzzNative, pdu: fuzzPdu, target: fuzzTarget, asan: asanSuite };
const results = [];
for (const name of ALL.filter((n) => only.includes(n))) {
  say(`${name}: ${values.replay ? `replaying ${values.replay}` : `${seconds} s`}`);
  const started = Date.now();
  try {
    const r = await jobs[name]();
    r.elapsed = (Date.now() - started) / 1000;
    results.push(r);
  } catch (err) {
    console.error(`fuzz: ${name} could not run: ${err.message}`);
    results.push({ name, inputs: 0, crashes: 0, crashFiles: [], reproduce: [], failedToRun: true });
  }
}

console.log('\nfuzz: summary');
console.log('  fuzzer   inputs run   crashes   time    notes');
for (const r of results) {
  const notes = Object.entries(r.notes ?? {})
    .filter(([k]) => k !== 'elapsedMs')
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  console.log(
    `  ${r.name.padEnd(8)} ${String(r.inputs).padStart(10)}   ${String(r.crashes).padStart(7)}   ${`${Math.round(r.elapsed ?? 0)} s`.padStart(5)}   ${r.failedToRun ? 'DID NOT RUN ' : ''}${notes}`,
  );
}
const crashes = results.reduce((n, r) => n + r.crashes, 0);
for (const r of results) {
  for (const f of r.crashFiles ?? []) console.log(`  ${r.name}: crash file ${rel(f)}`);
  for (const c of r.reproduce ?? []) console.log(`  ${r.name}: reproduce with: ${c}`);
}
if (crashes > 0) {
  console.log(`fuzz: ${crashes} crash(es)`);
  process.exit(1);
}
if (results.some((r) => r.failedToRun)) {
  console.log('fuzz: a fuzzer could not run (see above)');
  process.exit(2);
}
console.log(`fuzz: ${results.reduce((n, r) => n + r.inputs, 0)} inputs, 0 crashes`);
