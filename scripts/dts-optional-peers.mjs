#!/usr/bin/env node
// Run after tsup (npm run build:ts). oci-core and oci-common are optional peer dependencies,
// but the bundled declarations of `lba-status/oci` import their types (OciClientOptions takes
// the SDK's auth provider, OciClients holds its clients). A TypeScript user without the SDK
// then gets TS2307 from dist/oci.d.ts unless skipLibCheck is on. This marks each such import
// `// @ts-ignore` (as Vite does for its optional peers): with the SDK installed the types are
// the SDK's own; without it they are `any`, and the declarations compile under node16,
// nodenext and bundler with skipLibCheck false (scripts/pack-smoke.mjs checks all three).
//
// Fails when an optional peer is imported in a form this does not recognise, so a change in
// the bundler's output cannot quietly bring TS2307 back.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const optional = Object.entries(pkg.peerDependenciesMeta ?? {})
  .filter(([, meta]) => meta.optional)
  .map(([name]) => name);
const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');
const peer = `(?:${optional.map(escapeRegExp).join('|')})(?:/[^'"]*)?`;
const anyMention = new RegExp(`from ['"]${peer}['"]|import\\(['"]${peer}['"]\\)`);
const importLine = new RegExp(`^import (?:type )?[^;\\n]+ from ['"]${peer}['"];$`);
const marker = '// @ts-ignore -- optional peer dependency: without it, its types are `any`';

let marked = 0;
for (const file of readdirSync(dist).filter((f) => /\.d\.c?ts$/.test(f))) {
  const path = join(dist, file);
  const lines = readFileSync(path, 'utf8').split('\n');
  const out = [];
  for (const [i, line] of lines.entries()) {
    if (anyMention.test(line)) {
      if (!importLine.test(line)) {
        console.error(
          `dts-optional-peers: ${file}:${i + 1}: unrecognised use of an optional peer:`,
        );
        console.error(`  ${line}`);
        process.exit(1);
      }
      if (out.at(-1) !== marker) {
        out.push(marker);
        marked++;
      }
    }
    out.push(line);
  }
  writeFileSync(path, out.join('\n'));
}
console.log(`dts-optional-peers: ${marked} import(s) of ${optional.join(', ')} marked in dist/`);
