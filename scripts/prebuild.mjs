#!/usr/bin/env node
// Builds the N-API prebuilds that ship in the npm tarball: prebuilds/linux-x64/ and, with
// Debian's aarch64 cross toolchain (g++-aarch64-linux-gnu), prebuilds/linux-arm64/, each
// `lba-status.glibc.node` (N-API, so one binary serves every Node >= 20.19 of that platform,
// arch and libc). node-gyp-build picks the file when the package has no build/ directory.
//
// The compile runs in a scratch copy of binding.gyp and native/, never in ./build: tests and
// `npm run build:native` use build/ at the same time, and node-gyp-build prefers build/ over
// prebuilds/, so a cross build left there would break them.
//
// Usage: node scripts/prebuild.mjs [--arch x64,arm64] [--require-all]
//   default: the host's arch, plus arm64 when aarch64-linux-gnu-g++ is on PATH (else a note).
//   --require-all: a missing cross compiler is an error (prepack, CI).
// Each binary is checked after the build: the host's is loaded here (its CDB builders and
// parser answer known bytes); the cross-built one is checked for its ELF machine here, and
// loaded from the installed tarball by an arm64 Node under qemu-user in scripts/pack-smoke.mjs.
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { arch as hostArch, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const requireAll = args.includes('--require-all');
const archArg = args[args.indexOf('--arch') + 1];

const cross = {
  arm64: { prefix: 'aarch64-linux-gnu-', elfMachine: 0xb7, apt: 'g++-aarch64-linux-gnu' },
  x64: { prefix: 'x86_64-linux-gnu-', elfMachine: 0x3e, apt: 'g++-x86-64-linux-gnu' },
};

function onPath(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

if (process.platform !== 'linux') {
  console.error('prebuild: Linux only (the prebuilds are linux-*-glibc)');
  process.exit(1);
}

let arches;
if (args.includes('--arch')) arches = archArg.split(',');
else {
  arches = [hostArch()];
  for (const a of ['x64', 'arm64']) {
    if (a === hostArch()) continue;
    if (onPath(`${cross[a].prefix}g++`)) arches.push(a);
    else if (requireAll) {
      console.error(`prebuild: ${cross[a].prefix}g++ not found (apt-get install ${cross[a].apt})`);
      process.exit(1);
    } else console.error(`prebuild: skipping linux-${a}: no ${cross[a].prefix}g++ on PATH`);
  }
}

// Node's headers: npm's nodedir if set (this machine's npmrc points at /usr), else the running
// Node's own include/ directory. N-API headers do not depend on the target arch.
const nodedir =
  process.env.npm_config_nodedir ||
  (existsSync(join(dirname(process.execPath), '..', 'include', 'node', 'node_api.h'))
    ? resolve(dirname(process.execPath), '..')
    : undefined);

const stage = mkdtempSync(join(tmpdir(), 'lba-status-prebuild-'));
try {
  cpSync(join(root, 'binding.gyp'), join(stage, 'binding.gyp'));
  cpSync(join(root, 'native'), join(stage, 'native'), { recursive: true });
  writeFileSync(
    join(stage, 'package.json'),
    JSON.stringify({ name: 'lba-status', private: true, gypfile: true }),
  );
  // binding.gyp runs `node -p "require('node-addon-api').targets"` from the staging dir.
  symlinkSync(join(root, 'node_modules'), join(stage, 'node_modules'), 'dir');

  for (const arch of arches) {
    const started = Date.now();
    const env = { ...process.env, JOBS: '2' };
    if (nodedir) env.npm_config_nodedir = nodedir;
    if (arch !== hostArch()) {
      const p = cross[arch]?.prefix;
      if (!p) throw new Error(`prebuild: no cross toolchain known for ${arch}`);
      Object.assign(env, { CC: `${p}gcc`, CXX: `${p}g++`, LINK: `${p}g++`, AR: `${p}ar` });
    }
    const strip = arch === hostArch() ? 'strip' : `${cross[arch].prefix}strip`;
    const r = spawnSync(
      process.execPath,
      [
        join(root, 'node_modules', 'prebuildify', 'bin.js'),
        '--napi',
        '--strip',
        `--strip-bin=${strip}`,
        '--tag-libc',
        `--arch=${arch}`,
        `--out=${stage}`,
        stage,
      ],
      { cwd: stage, env, stdio: ['ignore', 'inherit', 'inherit'] },
    );
    if (r.status !== 0) throw new Error(`prebuild: prebuildify for linux-${arch} failed`);
    const dir = join(stage, 'prebuilds', `linux-${arch}`);
    const files = readdirSync(dir).filter((f) => f.endsWith('.node'));
    if (files.length !== 1) throw new Error(`prebuild: expected one .node in ${dir}: ${files}`);
    const file = join(dir, files[0]);
    // ELF e_machine (bytes 18-19, little endian) must be the target's.
    const fd = openSync(file, 'r');
    const head = Buffer.alloc(20);
    readSync(fd, head, 0, 20, 0);
    closeSync(fd);
    const machine = head.readUInt16LE(18);
    if (machine !== cross[arch].elfMachine) {
      throw new Error(`prebuild: ${file} has ELF machine 0x${machine.toString(16)}, not ${arch}`);
    }
    const out = join(root, 'prebuilds', `linux-${arch}`);
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out, { recursive: true });
    cpSync(file, join(out, files[0]));
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    console.log(`prebuild: prebuilds/linux-${arch}/${files[0]} (${seconds} s)`);
    if (arch === hostArch()) {
      const check = spawnSync(
        process.execPath,
        [join(root, 'scripts', 'prebuild-check.mjs'), join(out, files[0])],
        {
          stdio: 'inherit',
        },
      );
      if (check.status !== 0) throw new Error(`prebuild: ${files[0]} failed its load check`);
    }
  }
} finally {
  rmSync(stage, { recursive: true, force: true });
}
