import type { Plugin } from 'esbuild';
import { defineConfig } from 'tsup';

// Entry points are the package's public subpaths plus the CLI. Everything lands in dist/, one
// level below the package root like lib/, so lib/binding.ts finds the addon from both.
const publicEntries = {
  index: 'lib/index.ts',
  sim: 'lib/sim.ts',
  oci: 'lib/oci.ts',
  jobs: 'lib/jobs.ts',
};
const entry = { ...publicEntries, cli: 'lib/cli/main.ts' };

/**
 * One implementation for `import` and `require` (no dual-package hazard): the code is built
 * once, as CommonJS (dist/*.cjs and shared chunks), and each ESM entry (dist/*.js) is a facade
 * that re-exports its .cjs file (`export * from './index.cjs'`; Node finds the names through
 * esbuild's export annotations). So an error thrown through `import 'lba-status'` is
 * `instanceof` the class `require('lba-status')` gives, and module state (the loaded addon, the
 * SDK) exists once per process. scripts/pack-smoke.mjs checks both from the packed tarball.
 */
const esmFacades: Plugin = {
  name: 'esm-facades-over-cjs',
  setup(build) {
    // tsup builds CJS with splitting as esbuild ESM and converts it afterwards, so the format
    // to test is tsup's own (its TSUP_FORMAT define), not esbuild's.
    if (build.initialOptions.define?.TSUP_FORMAT !== '"esm"') return;
    const names = new Map(Object.entries(entry).map(([name, path]) => [path, name]));
    build.onResolve({ filter: /.*/ }, (args) => {
      if (args.kind !== 'entry-point') return undefined;
      const name = names.get(args.path.replace(/^\.\//, ''));
      return name ? { path: name, namespace: 'esm-facade' } : undefined;
    });
    build.onResolve({ filter: /\.cjs$/, namespace: 'esm-facade' }, (args) => ({
      path: args.path,
      external: true,
    }));
    build.onLoad({ filter: /.*/, namespace: 'esm-facade' }, (args) => ({
      contents:
        args.path === 'cli'
          ? `#!/usr/bin/env node\nimport './cli.cjs';\n`
          : `export * from './${args.path}.cjs';\n`,
      loader: 'js',
    }));
  },
};

export default defineConfig({
  entry,
  format: ['cjs', 'esm'],
  dts: { entry: publicEntries },
  target: 'node20',
  platform: 'node',
  shims: true,
  sourcemap: true,
  clean: true,
  // CJS chunks shared by the entries: one copy of each class for lba-status, /sim and /oci.
  splitting: true,
  // Class and function names as written (`DeviceSystemError`, not esbuild's `_DeviceSystemError`).
  keepNames: true,
  esbuildPlugins: [esmFacades],
});
