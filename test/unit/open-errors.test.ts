// Bad input to openDevice with the real addon and this machine's kernel (SG_IO on what is not a
// SCSI device fails with the kernel's own errno): typed errors, and no descriptor left open.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DeviceSystemError, openDevice } from '../../lib/index.js';

const dir = mkdtempSync(join(tmpdir(), 'lba-status-open-'));
const regular = join(dir, 'regular-file');
writeFileSync(regular, 'not a disk');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const fdCount = (): number => readdirSync('/proc/self/fd').length;

describe('openDevice on bad input', () => {
  const cases: Array<[string, string, Record<string, unknown>, RegExp]> = [
    ['a missing path', join(dir, 'missing'), { code: 'ENOENT', errno: -2 }, /does not exist/],
    [
      'a regular file',
      regular,
      { code: 'ENOTTY', syscall: 'ioctl', errno: -25 },
      /not a SCSI device/,
    ],
    [
      '/dev/null',
      '/dev/null',
      { code: 'ENOTTY', syscall: 'ioctl', path: '/dev/null' },
      /not a SCSI device/,
    ],
    [
      'a directory',
      dir,
      { code: 'EISDIR', syscall: 'open', path: dir },
      /directory is not a device/,
    ],
  ];
  for (const [name, path, shape, hint] of cases) {
    it(`${name}: ${shape.code} as a DeviceSystemError, nothing leaked`, async () => {
      const before = fdCount();
      const error = await openDevice(path).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DeviceSystemError);
      expect(error).toMatchObject(shape);
      expect((error as Error).message).toMatch(new RegExp(`^${shape.code}: `));
      expect((error as Error).message).toMatch(hint);
      // The stack points at this test, the caller.
      expect((error as Error).stack).toMatch(/open-errors\.test\.ts/);
      expect(fdCount()).toBe(before);
    });
  }

  it('rejects a non-string path and unknown options with Node-style codes', async () => {
    await expect(openDevice(42 as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(openDevice('/dev/null', { queueDepht: 2 } as never)).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
    });
    await expect(openDevice('/dev/null', { queueDepth: 0 })).rejects.toMatchObject({
      code: 'ERR_OUT_OF_RANGE',
    });
  });

  it("checks the engine: unknown names, and 'sg-async' on a node that is not /dev/sgN", async () => {
    await expect(openDevice('/dev/null', { engine: 'uring' as never })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
      message: /"threads", "sg-async"/,
    });
    const before = fdCount();
    // /dev/null is a character device, but not sg's (major 1, not 21): refused before any command.
    const error = await openDevice('/dev/null', { engine: 'sg-async' }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE', message: /needs an sg node/ });
    expect(fdCount()).toBe(before);
  });
});
