// SPDX-License-Identifier: Apache-2.0
// The sg-async engine on the real addon, as far as a host without SCSI can drive it: a pipe is
// pollable like an sg node, so creation, depth, the event-loop reference, write() failures and
// close() with commands in flight run for real here. Completions read from a real sg node are
// proved in the guest (test/guest/scsi-debug/engines.test.ts).
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataDirection, getBinding, type NativeCommandQueue } from '../../lib/binding.js';

const binding = getBinding();
const TUR = new Uint8Array(6);
const EPIPE = 32;
const nativePath = join(__dirname, '../../build/Release/lba_status.node');

/** Runs a script in a fresh node with the addon as `binding` and a pipe as [readFd, writeFd]. */
function runNode(body: string) {
  const script = `
    const binding = require(${JSON.stringify(nativePath)});
    ${body}`;
  return spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20_000 });
}

let tempDir: string;
let regularFile: number;

beforeAll(() => {
  tempDir = mkdtempSync(join(tmpdir(), 'lba-status-sg-async-'));
  const path = join(tempDir, 'not-a-device');
  writeFileSync(path, new Uint8Array(4096));
  regularFile = openSync(path, 'r+');
});

afterAll(() => {
  closeSync(regularFile);
  rmSync(tempDir, { recursive: true, force: true });
});

/** Both ends of a new FIFO, opened in this process; the caller closes them. */
function pipeFds(): [number, number] {
  // Node has no pipe(2) binding; a FIFO opened twice is the same kind of pollable pipe.
  const fifo = join(tempDir, `fifo-${Math.random().toString(36).slice(2)}`);
  const made = spawnSync('mkfifo', [fifo]);
  if (made.status !== 0) throw new Error('mkfifo failed');
  const read = openSync(fifo, 'r+'); // r+ on a FIFO does not block
  const write = openSync(fifo, 'w');
  return [read, write];
}

describe('createSgAsyncQueue', () => {
  it('refuses a descriptor that cannot be polled (a regular file) with a Node-style error', () => {
    let caught: unknown;
    try {
      binding.createSgAsyncQueue(regularFile, 4);
    } catch (error) {
      caught = error;
    }
    expect(caught).toMatchObject({ code: 'EPERM', errno: 1, syscall: 'epoll_ctl' });
    expect((caught as Error).message).toMatch(/Cannot poll the sg node/);
  });

  it('refuses a second queue on a descriptor that already has one (EEXIST)', () => {
    const [read, write] = pipeFds();
    const q = binding.createSgAsyncQueue(read, 1);
    try {
      expect(() => binding.createSgAsyncQueue(read, 1)).toThrow(
        expect.objectContaining({ code: 'EEXIST' }),
      );
    } finally {
      q.close();
      closeSync(read);
      closeSync(write);
    }
  });

  it('checks its arguments', () => {
    const create = binding.createSgAsyncQueue as (fd: unknown, depth: unknown) => unknown;
    const [read, write] = pipeFds();
    try {
      expect(() => create(read, 0)).toThrow(RangeError);
      expect(() => create(read, 65)).toThrow(RangeError);
      expect(() => create(-1, 4)).toThrow(RangeError);
      expect(() => create('3', 4)).toThrow(TypeError);
    } finally {
      closeSync(read);
      closeSync(write);
    }
  });

  it('reports its depth and engine; close() rejects commands in flight and is idempotent', async () => {
    const [read, write] = pipeFds();
    let q: NativeCommandQueue | undefined;
    try {
      q = binding.createSgAsyncQueue(write, 3);
      expect(q.depth).toBe(3);
      expect(q.engine).toBe('sg-async');
      // write() of the header into a pipe succeeds and nothing ever completes: "in flight".
      const data = new Uint8Array(512);
      const inFlight = q.execute(write, TUR, DataDirection.FromDevice, data, new Uint8Array(32), 0);
      q.close();
      q.close();
      await expect(inFlight).rejects.toMatchObject({ code: 'ERR_LBA_STATUS_QUEUE_CLOSED' });
      await expect(
        q.execute(write, TUR, DataDirection.None, null, new Uint8Array(32), 0),
      ).rejects.toMatchObject({ code: 'ERR_LBA_STATUS_QUEUE_CLOSED' });
    } finally {
      q?.close();
      closeSync(read);
      closeSync(write);
    }
  });

  it('answers a failed write() with its errno, as the ioctl engine answers a failed ioctl', async () => {
    const [read, write] = pipeFds();
    closeSync(read); // writing to a pipe without a reader: EPIPE (Node ignores SIGPIPE)
    const q = binding.createSgAsyncQueue(write, 1);
    try {
      const result = await q.execute(write, TUR, DataDirection.None, null, new Uint8Array(32), 0);
      expect(result.errno).toBe(EPIPE);
    } finally {
      q.close();
      closeSync(write);
    }
  });

  it('does not keep an idle process alive, and does keep one with a command pending', () => {
    spawnSync('mkfifo', [join(tempDir, 'idle-fifo'), join(tempDir, 'busy-fifo')]);
    const idle = runNode(`
      const fs = require('node:fs');
      const fd = fs.openSync(${JSON.stringify(join(tempDir, 'idle-fifo'))}, 'r+');
      binding.createSgAsyncQueue(fd, 2);
      console.log('created');`);
    expect(idle.stdout).toContain('created');
    expect(idle.status).toBe(0); // exits although the queue was never closed

    const busy = runNode(`
      const fs = require('node:fs');
      const fd = fs.openSync(${JSON.stringify(join(tempDir, 'busy-fifo'))}, 'r+');
      const q = binding.createSgAsyncQueue(fd, 2);
      q.execute(fd, new Uint8Array(6), 0, null, new Uint8Array(32), 0);
      setTimeout(() => { console.log('still alive'); q.close(); }, 300);`);
    expect(busy.stdout).toContain('still alive');
    expect(busy.status).toBe(0);
  });

  it('tears down with a worker_thread that is terminated with a command in flight', () => {
    const fifo = join(tempDir, 'worker-fifo');
    spawnSync('mkfifo', [fifo]);
    const child = runNode(`
      const { Worker } = require('node:worker_threads');
      const worker = new Worker(\`
        const { parentPort } = require('node:worker_threads');
        const binding = require(\${JSON.stringify(${JSON.stringify(nativePath)})});
        const fd = require('node:fs').openSync(${JSON.stringify(fifo)}, 'r+');
        const q = binding.createSgAsyncQueue(fd, 2);
        const idle = binding.createSgAsyncQueue(require('node:fs').openSync(${JSON.stringify(fifo)}, 'r+'), 1);
        q.execute(fd, new Uint8Array(6), 0, null, new Uint8Array(32), 0);
        parentPort.postMessage('in flight');
      \`, { eval: true });
      worker.on('message', async (m) => { console.log(m); await worker.terminate(); console.log('terminated'); });`);
    expect(child.stderr).toBe('');
    expect(child.stdout).toContain('in flight');
    expect(child.stdout).toContain('terminated');
    expect(child.status).toBe(0);
  });
});
