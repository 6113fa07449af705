#!/usr/bin/env node
// Checks the layering of lib/ (design.md "Layers"): no import cycle among its modules, type
// imports and re-exports included, and no import upward. Every relative import is counted,
// whatever its form (import, import type, export … from, dynamic import()).
//
// Usage: node scripts/lint/check-layers.mjs   (exit 1 with one line per violation)
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const lib = join(root, 'lib');

// What each layer may import besides itself; anything not listed is upward or sideways.
const base = ['scsi', 'errors', 'abort', 'validate'];
const allowed = {
  scsi: [],
  errors: ['scsi'],
  abort: ['errors'],
  validate: [],
  binding: ['scsi', 'errors'],
  iscsi: base,
  sim: [...base, 'iscsi'],
  transport: [...base, 'binding', 'iscsi', 'sim'],
  device: [...base, 'binding', 'transport'],
  scan: [...base, 'binding', 'device', 'transport'],
  read: [...base, 'device', 'scan', 'transport'],
  api: [...base, 'device', 'scan', 'read', 'transport'],
  provision: [...base, 'iscsi', 'sim', 'transport', 'oci'],
  oci: [...base, 'iscsi', 'transport', 'provision'],
  jobs: [...base, 'api', 'read', 'scan', 'device', 'transport', 'provision', 'oci'],
  cli: null, // composes everything
  entry: null, // lib/index.ts, lib/sim.ts, lib/oci.ts, lib/jobs.ts
};
// Layers from which the native binding must not be reachable at all, even indirectly.
const bindingFree = ['sim', 'provision', 'oci', 'iscsi'];
const entries = new Set(['index', 'sim', 'oci', 'jobs']);

function layerOf(file) {
  const rel = relative(lib, file).replace(/\\/g, '/');
  const [head, ...rest] = rel.split('/');
  if (rest.length === 0) {
    const name = head.replace(/\.ts$/, '');
    return entries.has(name) ? 'entry' : name;
  }
  return head;
}

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return walk(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

const files = walk(lib);
const known = new Set(files);
const graph = new Map();
for (const file of files) {
  const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
  const targets = [];
  for (const { fileName } of importedFiles) {
    if (!fileName.startsWith('.')) continue;
    const target = resolve(dirname(file), fileName).replace(/\.js$/, '.ts');
    if (known.has(target)) targets.push(target);
  }
  graph.set(file, targets);
}

const problems = [];
const show = (file) => relative(root, file);
for (const [file, targets] of graph) {
  const from = layerOf(file);
  const may = allowed[from];
  if (may === undefined) problems.push(`${show(file)}: layer '${from}' is not in the layer table`);
  if (!may) continue;
  for (const target of targets) {
    const to = layerOf(target);
    if (to !== from && !may.includes(to)) {
      problems.push(`${show(file)} imports ${show(target)}: '${from}' may not import '${to}'`);
    }
  }
}

// Cycles: Tarjan's strongly connected components.
let index = 0;
const stack = [];
const state = new Map();
function connect(node) {
  const entry = { index, low: index, onStack: true };
  index++;
  state.set(node, entry);
  stack.push(node);
  for (const next of graph.get(node)) {
    const seen = state.get(next);
    if (!seen) {
      connect(next);
      entry.low = Math.min(entry.low, state.get(next).low);
    } else if (seen.onStack) {
      entry.low = Math.min(entry.low, seen.index);
    }
  }
  if (entry.low === entry.index) {
    const component = [];
    let member;
    do {
      member = stack.pop();
      state.get(member).onStack = false;
      component.push(member);
    } while (member !== node);
    if (component.length > 1) problems.push(`import cycle: ${component.map(show).join(' -> ')}`);
  }
}
for (const file of files) if (!state.has(file)) connect(file);

// The binding must stay unreachable from the binding-free layers.
const bindingFile = join(lib, 'binding.ts');
for (const file of files) {
  if (!bindingFree.includes(layerOf(file))) continue;
  const seen = new Set([file]);
  const queue = [[file, [file]]];
  while (queue.length > 0) {
    const [node, path] = queue.shift();
    if (node === bindingFile) {
      problems.push(`${show(file)} reaches the native binding: ${path.map(show).join(' -> ')}`);
      break;
    }
    for (const next of graph.get(node)) {
      if (!seen.has(next)) {
        seen.add(next);
        queue.push([next, [...path, next]]);
      }
    }
  }
}

if (problems.length > 0) {
  for (const line of problems) console.error(`check-layers: ${line}`);
  process.exit(1);
}
console.log(`check-layers: ${files.length} modules in lib/, no cycle, no upward import`);
