// SPDX-License-Identifier: Apache-2.0
// Lifetime of the addon and its queues: an idle queue must not keep a process alive, a pending
// command must; the addon must load and tear down cleanly in worker_threads (per-env state,
// env cleanup hooks), including a worker terminated with commands in flight.
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { packageRoot } from './helpers.js';

/** Prelude for child scripts (CommonJS): loads the addon the way lib/binding.ts does. */
const LOAD = `
  const root = ${JSON.stringify(packageRoot)};
  const { createRequire } = require('node:module');
  const binding = createRequire(root + '/package.json')('node-gyp-build')(root);
  const fs = require('node:fs');
`;

/** Runs a script in a fresh node process; a generous time box, no speed assertion. */
function runNode(script: string) {
  return spawnSync(process.execPath, ['-e', LOAD + script], {
    cwd: packageRoot,
    encoding: 'utf8',
    timeout: 20_000,
    killSignal: 'SIGKILL',
  });
}

describe('process lifetime', () => {
  it('a process that creates a queue and does nothing exits on its own', () => {
    const child = runNode(`binding.createCommandQueue(4); console.log('created');`);
    expect(child.error).toBeUndefined();
    expect(child.signal).toBeNull();
    expect(child.status).toBe(0);
    expect(child.stdout).toContain('created');
  });

  it('a process with a closed queue exits on its own', () => {
    const child = runNode(`const q = binding.createCommandQueue(8); q.close(); q.close();`);
    expect(child.signal).toBeNull();
    expect(child.status).toBe(0);
  });

  it('a pending command keeps the process alive until its promise settles', () => {
    const child = runNode(`
      const q = binding.createCommandQueue(2);
      const fd = fs.openSync('/dev/null', 'r');
      // Nothing else keeps the loop alive: the result is printed only if the pending command
      // holds the process open until its completion is delivered.
      q.execute(fd, new Uint8Array(6), 0, null, new Uint8Array(32), 1000)
        .then((r) => { console.log(JSON.stringify(r)); });
    `);
    expect(child.signal).toBeNull();
    expect(child.status).toBe(0);
    expect(JSON.parse(child.stdout.trim())).toMatchObject({ errno: 25 });
  });

  it('exits cleanly when the queue is dropped without close() after commands ran', () => {
    const child = runNode(`
      let q = binding.createCommandQueue(4);
      const fd = fs.openSync('/dev/null', 'r');
      const jobs = [];
      for (let i = 0; i < 100; i++) jobs.push(q.execute(fd, new Uint8Array(6), 0, null, new Uint8Array(32), 1000));
      Promise.all(jobs).then((r) => { q = null; console.log('done', r.length); });
    `);
    expect(child.signal).toBeNull();
    expect(child.status).toBe(0);
    expect(child.stdout).toContain('done 100');
  });

  it('process.exit() with commands in flight does not crash or hang', () => {
    const child = runNode(`
      const q = binding.createCommandQueue(4);
      const fd = fs.openSync('/dev/null', 'r');
      for (let i = 0; i < 1000; i++) q.execute(fd, new Uint8Array(6), 0, null, new Uint8Array(32), 1000);
      process.exit(7);
    `);
    expect(child.signal).toBeNull();
    expect(child.status).toBe(7);
  });
});

describe('worker_threads', () => {
  const WORKER = `
    const { parentPort, workerData } = require('node:worker_threads');
    ${LOAD}
    const q = binding.createCommandQueue(2);
    const fd = fs.openSync('/dev/null', 'r');
    const cdb = binding.getLbaStatus16Cdb(0x60n, 32768, 1);
    const parsed = binding.parseLbaStatus(Uint8Array.from([0, 0, 0, 4, 0, 0, 0, 5]), 8);
    q.execute(fd, cdb, 1, new Uint8Array(32), new Uint8Array(64), 1000).then((r) => {
      parentPort.postMessage({ errno: r.errno, cdb: Array.from(cdb), cc: parsed.completionCondition });
      if (workerData.close) q.close();
    });
  `;

  function runWorker(workerData: { close: boolean }) {
    return new Promise<{ message: unknown; exitCode: number }>((resolve, reject) => {
      const worker = new Worker(WORKER, { eval: true, workerData });
      let message: unknown;
      worker.on('message', (m) => {
        message = m;
      });
      worker.on('error', reject);
      worker.on('exit', (exitCode) => resolve({ message, exitCode }));
    });
  }

  it('loads and runs commands in a worker, which then exits on its own', async () => {
    for (const close of [true, false]) {
      const { message, exitCode } = await runWorker({ close });
      expect(exitCode).toBe(0);
      expect(message).toEqual({
        errno: 25,
        cdb: [0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0x60, 0, 0, 0x80, 0, 1, 0],
        cc: 2,
      });
    }
  });

  it('several workers and the main thread use the addon at once', async () => {
    const results = await Promise.all(Array.from({ length: 4 }, () => runWorker({ close: false })));
    for (const r of results) expect(r.exitCode).toBe(0);
  });

  it('a worker terminated with commands in flight tears down cleanly', () => {
    // In a child process so that a crash in teardown is reported as this test's failure.
    const child = runNode(`
      const { Worker } = require('node:worker_threads');
      const body = ${JSON.stringify(LOAD)} + \`
        const { parentPort } = require('node:worker_threads');
        const q = binding.createCommandQueue(4);
        const idle = binding.createCommandQueue(1);
        const fd = fs.openSync('/dev/null', 'r');
        const submit = () => {
          for (let i = 0; i < 200; i++) q.execute(fd, new Uint8Array(6), 0, null, new Uint8Array(32), 1000);
        };
        submit();
        setInterval(submit, 1);
        parentPort.postMessage('busy');
      \`;
      let rounds = 0;
      const next = () => {
        const w = new Worker(body, { eval: true });
        w.on('message', () => setTimeout(() => w.terminate(), 20));
        w.on('error', (e) => { console.error(e); process.exit(3); });
        w.on('exit', () => { if (++rounds < 5) next(); else console.log('terminated', rounds); });
      };
      next();
    `);
    expect(child.stderr).toBe('');
    expect(child.signal).toBeNull();
    expect(child.status).toBe(0);
    expect(child.stdout).toContain('terminated 5');
  });
});
