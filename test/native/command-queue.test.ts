// SPDX-License-Identifier: Apache-2.0
// The SG_IO command queue on the real addon. The host has no SCSI devices, so these tests drive
// the kernel's non-SCSI answers (ENOTTY, EBADF) through the whole path: argument checks and
// pinning on the JS thread, the ioctl on a dedicated thread, completion back on the JS thread.
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  DataDirection,
  getBinding,
  type NativeCommandQueue,
  type RawSgResult,
} from '../../lib/binding.js';

const binding = getBinding();
const ENOTTY = 25;
const EBADF = 9;
const TUR = new Uint8Array(6); // TEST UNIT READY
/** An fd number no process can have open (above any RLIMIT_NOFILE). */
const NEVER_OPEN_FD = 0x7ffffffe;

function failedWith(errno: number): RawSgResult {
  return {
    errno,
    status: 0,
    hostStatus: 0,
    driverStatus: 0,
    senseLength: 0,
    resid: 0,
    durationMs: 0,
    info: 0,
  };
}

let devNull: number;
let tempDir: string;
let regularFile: number;
const queues: NativeCommandQueue[] = [];

function queue(threads: number): NativeCommandQueue {
  const q = binding.createCommandQueue(threads);
  queues.push(q);
  return q;
}

beforeAll(() => {
  devNull = openSync('/dev/null', 'r+');
  tempDir = mkdtempSync(join(tmpdir(), 'lba-status-native-'));
  const path = join(tempDir, 'not-a-device');
  writeFileSync(path, new Uint8Array(4096));
  regularFile = openSync(path, 'r+');
});

afterEach(() => {
  // Tests await every command they start, so closing here never races a pending one.
  for (const q of queues.splice(0)) q.close();
});

afterAll(() => {
  closeSync(devNull);
  closeSync(regularFile);
  rmSync(tempDir, { recursive: true, force: true });
});

describe('createCommandQueue', () => {
  it('starts the requested number of threads', () => {
    expect(queue(1).depth).toBe(1);
    expect(queue(4).depth).toBe(4);
    expect(queue(64).depth).toBe(64);
  });

  it('rejects thread counts outside 1..64 and non-numbers', () => {
    const create = binding.createCommandQueue as (threads: unknown) => NativeCommandQueue;
    for (const bad of [0, 65, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => create(bad)).toThrow(RangeError);
    }
    for (const bad of ['4', null, undefined, 4n, {}]) {
      expect(() => create(bad)).toThrow(TypeError);
    }
  });
});

describe('CommandQueue.execute', () => {
  it('resolves with errno ENOTTY for /dev/null (no data phase)', async () => {
    const q = queue(1);
    const sense = new Uint8Array(64);
    await expect(q.execute(devNull, TUR, DataDirection.None, null, sense, 1000)).resolves.toEqual(
      failedWith(ENOTTY),
    );
  });

  it('resolves with errno ENOTTY for /dev/null with a data-in buffer', async () => {
    const q = queue(1);
    const cdb = binding.getLbaStatus16Cdb(0n, 32, 1);
    const data = new Uint8Array(32).fill(0xaa);
    const result = await q.execute(
      devNull,
      cdb,
      DataDirection.FromDevice,
      data,
      new Uint8Array(96),
      60000,
    );
    expect(result).toEqual(failedWith(ENOTTY));
    expect(data.every((b) => b === 0xaa)).toBe(true);
  });

  it('resolves with errno ENOTTY for a regular file (data-out)', async () => {
    const q = queue(2);
    const write10 = Uint8Array.from([0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    const result = await q.execute(
      regularFile,
      write10,
      DataDirection.ToDevice,
      new Uint8Array(512),
      new Uint8Array(32),
      5000,
    );
    expect(result).toEqual(failedWith(ENOTTY));
  });

  it('resolves with errno EBADF for an fd that is not open', async () => {
    const q = queue(1);
    const result = await q.execute(
      NEVER_OPEN_FD,
      TUR,
      DataDirection.None,
      null,
      new Uint8Array(18),
      0,
    );
    expect(result).toEqual(failedWith(EBADF));
  });

  it('resolves with errno EBADF for an fd closed before the call', async () => {
    const q = queue(1);
    const fd = openSync('/dev/null', 'r');
    closeSync(fd);
    // The number may be reused by a concurrent open elsewhere in this process; then the
    // kernel still answers ENOTTY (no SCSI here), never success.
    const result = await q.execute(fd, TUR, DataDirection.None, null, new Uint8Array(18), 0);
    expect([failedWith(EBADF), failedWith(ENOTTY)]).toContainEqual(result);
  });

  it('accepts Buffer, subarray and DataView arguments', async () => {
    const q = queue(1);
    const backing = new Uint8Array(256);
    const result = await q.execute(
      devNull,
      Buffer.from(binding.getLbaStatus32Cdb(0n, 2097152, 0, 32768, 1)),
      DataDirection.FromDevice,
      backing.subarray(64, 128),
      new DataView(backing.buffer, 128, 64) as unknown as Uint8Array,
      60000,
    );
    expect(result.errno).toBe(ENOTTY);
  });

  it('runs many commands in flight on a 4-thread queue; all resolve', async () => {
    const q = queue(4);
    const count = 200;
    const results = await Promise.all(
      Array.from({ length: count }, (_, i) =>
        q.execute(
          i % 2 === 0 ? devNull : regularFile,
          binding.getLbaStatus16Cdb(BigInt(i), 24, 1),
          DataDirection.FromDevice,
          new Uint8Array(24),
          new Uint8Array(64),
          1000,
        ),
      ),
    );
    expect(results).toHaveLength(count);
    for (const r of results) expect(r).toEqual(failedWith(ENOTTY));
  });

  it('runs several queues side by side', async () => {
    const a = queue(2);
    const b = queue(3);
    const all = await Promise.all([
      a.execute(devNull, TUR, DataDirection.None, null, new Uint8Array(18), 0),
      b.execute(devNull, TUR, DataDirection.None, null, new Uint8Array(18), 0),
      a.execute(NEVER_OPEN_FD, TUR, DataDirection.None, null, new Uint8Array(18), 0),
      b.execute(NEVER_OPEN_FD, TUR, DataDirection.None, null, new Uint8Array(18), 0),
    ]);
    expect(all.map((r) => r.errno)).toEqual([ENOTTY, ENOTTY, EBADF, EBADF]);
  });

  it('rejects after close() with ERR_LBA_STATUS_QUEUE_CLOSED; close() is idempotent', async () => {
    const q = queue(2);
    await q.execute(devNull, TUR, DataDirection.None, null, new Uint8Array(18), 0);
    q.close();
    q.close();
    const rejection = q.execute(devNull, TUR, DataDirection.None, null, new Uint8Array(18), 0);
    await expect(rejection).rejects.toThrow(/closed/);
    await expect(rejection).rejects.toMatchObject({ code: 'ERR_LBA_STATUS_QUEUE_CLOSED' });
    expect(q.depth).toBe(2);
  });

  it('settles every command when closed with commands still queued', async () => {
    const q = queue(1);
    const promises = Array.from({ length: 50 }, () =>
      q.execute(devNull, TUR, DataDirection.None, null, new Uint8Array(18), 0),
    );
    q.close();
    const settled = await Promise.allSettled(promises);
    for (const s of settled) {
      if (s.status === 'fulfilled') expect(s.value).toEqual(failedWith(ENOTTY));
      else expect(s.reason).toMatchObject({ code: 'ERR_LBA_STATUS_QUEUE_CLOSED' });
    }
  });

  describe('misuse rejects with TypeError/RangeError and never reaches the kernel', () => {
    const sense = () => new Uint8Array(64);
    type Args = [unknown, unknown, unknown, unknown, unknown, unknown];
    const cases: Array<[string, () => Args, ErrorConstructor, RegExp]> = [
      ['string cdb', () => [devNull, 'abc', 0, null, sense(), 0], TypeError, /"cdb"/],
      ['array cdb', () => [devNull, [0, 0, 0, 0, 0, 0], 0, null, sense(), 0], TypeError, /"cdb"/],
      [
        '40-byte cdb',
        () => [devNull, new Uint8Array(40), 0, null, sense(), 0],
        RangeError,
        /6 to 32/,
      ],
      [
        '5-byte cdb',
        () => [devNull, new Uint8Array(5), 0, null, sense(), 0],
        RangeError,
        /6 to 32/,
      ],
      ['negative fd', () => [-1, TUR, 0, null, sense(), 0], RangeError, /"fd"/],
      ['fractional fd', () => [1.5, TUR, 0, null, sense(), 0], RangeError, /"fd"/],
      ['string fd', () => ['3', TUR, 0, null, sense(), 0], TypeError, /"fd"/],
      ['direction 3', () => [devNull, TUR, 3, null, sense(), 0], RangeError, /"direction"/],
      [
        'data with direction None',
        () => [devNull, TUR, 0, new Uint8Array(8), sense(), 0],
        TypeError,
        /"data"/,
      ],
      ['null data with FromDevice', () => [devNull, TUR, 1, null, sense(), 0], TypeError, /"data"/],
      ['string data', () => [devNull, TUR, 1, 'x', sense(), 0], TypeError, /"data"/],
      [
        '17-byte sense',
        () => [devNull, TUR, 0, null, new Uint8Array(17), 0],
        RangeError,
        /"sense"/,
      ],
      ['missing sense', () => [devNull, TUR, 0, null, undefined, 0], TypeError, /"sense"/],
      ['negative timeout', () => [devNull, TUR, 0, null, sense(), -1], RangeError, /"timeoutMs"/],
      [
        'timeout above 2^32-1',
        () => [devNull, TUR, 0, null, sense(), 2 ** 32],
        RangeError,
        /"timeoutMs"/,
      ],
      ['bigint timeout', () => [devNull, TUR, 0, null, sense(), 10n], TypeError, /"timeoutMs"/],
    ];
    for (const [name, args, type, message] of cases) {
      it(name, async () => {
        const q = queue(1);
        const execute = q.execute.bind(q) as (...a: Args) => Promise<RawSgResult>;
        const promise = execute(...args());
        await expect(promise).rejects.toThrow(type);
        await expect(promise).rejects.toThrow(message);
        await expect(promise).rejects.toHaveProperty('code');
        // The queue is still usable afterwards.
        await expect(
          q.execute(devNull, TUR, DataDirection.None, null, new Uint8Array(18), 0),
        ).resolves.toEqual(failedWith(ENOTTY));
      });
    }

    it('calling execute on a foreign receiver throws a TypeError', () => {
      const q = queue(1);
      expect(() =>
        (q.execute as (...a: unknown[]) => unknown).call({}, devNull, TUR, 0, null, sense(), 0),
      ).toThrow(TypeError);
    });
  });
});
