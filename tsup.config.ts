import { defineConfig } from 'tsup';

// Entry points are the package's public subpaths plus the CLI. Everything lands in dist/, one
// level below the package root like lib/, so lib/binding.ts finds the addon from both.
export default defineConfig({
  entry: {
    index: 'lib/index.ts',
    sim: 'lib/sim.ts',
    cli: 'lib/cli/main.ts',
  },
  format: ['esm', 'cjs'],
  dts: { entry: { index: 'lib/index.ts', sim: 'lib/sim.ts' } },
  target: 'node20',
  platform: 'node',
  shims: true,
  sourcemap: true,
  clean: true,
  splitting: true,
});
