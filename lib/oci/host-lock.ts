/**
 * A per-host lock for iscsiadm: running several iscsiadm commands at once corrupts its node
 * database or races iscsid (oVirt vdsm serialises them for that reason). In-process callers queue
 * on a promise chain; other processes are kept out by an O_EXCL lock file holding our pid, taken
 * over when its owner is dead.
 */
import { mkdir, open, readFile, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { abortError, sleep } from '../abort.js';

const chains = new Map<string, Promise<unknown>>();

export interface HostLockOptions {
  /** Lock file (default /run/lock/lba-status-iscsiadm.lock). */
  path: string;
  /** Give up waiting after this long (default 5 min). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export async function withHostLock<T>(options: HostLockOptions, fn: () => Promise<T>): Promise<T> {
  const prev = chains.get(options.path) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((r) => {
    release = r;
  });
  const tail = prev.then(() => mine);
  chains.set(options.path, tail);
  try {
    await prev;
    const unlock = await lockFile(options);
    try {
      return await fn();
    } finally {
      await unlock();
    }
  } finally {
    release();
    if (chains.get(options.path) === tail) chains.delete(options.path);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function lockFile(options: HostLockOptions): Promise<() => Promise<void>> {
  const { path, signal } = options;
  const deadline = Date.now() + (options.timeoutMs ?? 5 * 60_000);
  await mkdir(dirname(path), { recursive: true });
  for (let delay = 10; ; delay = Math.min(delay * 2, 250)) {
    if (signal?.aborted) throw abortError(signal);
    try {
      const fh = await open(path, 'wx', 0o644);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return async () => {
        await unlink(path).catch(() => undefined);
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
    if (Number.isInteger(owner) && owner > 0 && !pidAlive(owner)) {
      await unlink(path).catch(() => undefined); // stale: its owner died
      continue;
    }
    if (Date.now() > deadline) {
      const e = new Error(
        `timed out waiting for the iscsiadm lock ${path} held by pid ${owner}; if that process is gone, delete the file`,
      ) as NodeJS.ErrnoException;
      e.code = 'ETIMEDOUT';
      e.path = path;
      throw e;
    }
    await sleep(delay, signal);
  }
}
