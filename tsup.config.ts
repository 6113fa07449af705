import { defineConfig } from 'tsup';

// Entry points are the package's public subpaths plus the CLI. Everything lands in dist/, one
// level below the package root like lib/, so lib/binding.ts finds the addon from both.
const publicEntries = { index: 'lib/index.ts', sim: 'lib/sim.ts', oci: 'lib/oci.ts' };

export default defineConfig({
  entry: { ...publicEntries, cli: 'lib/cli/main.ts' },
  format: ['esm', 'cjs'],
  dts: { entry: publicEntries },
  target: 'node20',
  platform: 'node',
  shims: true,
  sourcemap: true,
  clean: true,
  splitting: true,
});
