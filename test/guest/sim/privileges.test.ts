// The privilege story of the README, as an unprivileged user (nobody) in the guest: a 32-byte CDB
// through /dev/sgN opened read-write needs only permission on the node, so openDevice's mapping
// of /dev/sdX to its sg node lets a service account scan; through /dev/sdX the kernel refuses it
// without CAP_SYS_RAWIO, and the error says what to do.
import { execFile } from 'node:child_process';
import { chmod, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scenario } from '../support/index.js';

const s = scenario();
const modes = new Map<string, number>();

/** Runs node as nobody (setpriv drops every capability with the uid). */
function asNobody(args: string[]) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      'setpriv',
      [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        '--inh-caps=-all',
        process.execPath,
        ...args,
      ],
      { cwd: process.cwd() },
      (error, stdout, stderr) => {
        resolve({
          code: error ? Number((error as { code?: number }).code ?? 1) : 0,
          stdout,
          stderr,
        });
      },
    );
  });
}

beforeAll(async () => {
  for (const node of [s.sg, s.block]) {
    modes.set(node, (await stat(node)).mode & 0o777);
    await chmod(node, 0o666); // what a udev rule for a backup group would grant
  }
});
afterAll(async () => {
  for (const [node, mode] of modes) await chmod(node, mode);
});

describe(`privileges (${s.name})`, () => {
  it('nobody scans the disk through its sg node with the 32-byte CDB', async () => {
    const result = await asNobody([
      join(process.cwd(), 'dist/cli.js'),
      'scan',
      s.block,
      '--cdb',
      '32',
      '--changed-only',
      '--format',
      'json',
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout).summary).toMatchObject({ device: s.sg, cdb: 32 });
  });

  it('through the block node the kernel refuses GET LBA STATUS(32) without CAP_SYS_RAWIO: EPERM with the fix', async () => {
    const script = `
      const { openDevice } = await import(${JSON.stringify(join(process.cwd(), 'dist/index.js'))});
      const device = await openDevice(${JSON.stringify(s.block)}, { preferSg: false });
      try {
        await device.getLbaStatus({ cdb: 32, lba: 0, scanLength: 8 });
        console.log(JSON.stringify({ ok: true }));
      } catch (e) {
        console.log(JSON.stringify({ name: e.name, code: e.code, syscall: e.syscall, path: e.path, message: e.message }));
      } finally {
        await device.close();
      }`;
    const result = await asNobody(['--input-type=module', '-e', script]);
    expect(result.code, result.stderr).toBe(0);
    const outcome = JSON.parse(result.stdout);
    expect(outcome).toMatchObject({
      name: 'DeviceSystemError',
      code: 'EPERM',
      syscall: 'ioctl',
      path: s.block,
    });
    expect(outcome.message).toMatch(/CAP_SYS_RAWIO.*sg node/);
  });
});
