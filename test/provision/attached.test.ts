import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { AttachedDeviceProvisioner } from '../../lib/provision/attached.js';
import { provisionerContract } from './contract.js';

provisionerContract('AttachedDeviceProvisioner', async () => ({
  provisioner: new AttachedDeviceProvisioner(),
  options: () => ({ devicePath: '/dev/null', blockSize: 512 }),
  leftovers: async () => [],
}));

describe('AttachedDeviceProvisioner', () => {
  const p = new AttachedDeviceProvisioner();
  it('rejects a relative path', async () => {
    await expect(p.provision({ devicePath: 'sdc' })).rejects.toThrow(/absolute path/);
  });
  it('rejects a missing device with a Node-shaped ENOENT', async () => {
    await expect(p.provision({ devicePath: '/dev/does-not-exist-lba' })).rejects.toMatchObject({
      code: 'ENOENT',
      path: '/dev/does-not-exist-lba',
    });
  });
  it('rejects a regular file', async () => {
    await expect(p.provision({ devicePath: '/etc/hostname' })).rejects.toMatchObject({
      code: 'ERR_NOT_A_DEVICE',
    });
  });
  it('skips verification when asked and keeps the given sg path and block size', async () => {
    const v = await p.provision({
      devicePath: '/dev/sdq',
      sgPath: '/dev/sg9',
      verify: false,
      blockSize: 4096,
    });
    expect(v).toMatchObject({ devicePath: '/dev/sdq', sgPath: '/dev/sg9', blockSize: 4096 });
    await v.release();
  });
});

describe('AttachedDeviceProvisioner with an iscsi:// device', () => {
  const p = new AttachedDeviceProvisioner();
  it('accepts a URL, keeps it as device and devicePath, and never shows the CHAP secret', async () => {
    const url = 'iscsi://10.0.0.5:3261/iqn.2024-01.lba-status:sim/1';
    const v = await p.provision({
      devicePath: url,
      chap: { username: 'backup', secret: 'Att4ched-S3cret' },
    });
    expect(v.device).toBe(url);
    expect(v.devicePath).toBe(url);
    expect(v.deviceOptions).toEqual({ chap: { username: 'backup', secret: 'Att4ched-S3cret' } });
    expect(JSON.stringify(v)).not.toContain('Att4ched-S3cret');
    expect(inspect(v)).not.toContain('Att4ched-S3cret');
    await v.release();
  });
  it('refuses a malformed URL, sgPath with a URL and chap with a device node', async () => {
    await expect(p.provision({ devicePath: 'iscsi://10.0.0.5/no-lun' })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
    });
    await expect(
      p.provision({ devicePath: 'iscsi://10.0.0.5/iqn.2024-01.x:y/1', sgPath: '/dev/sg1' }),
    ).rejects.toThrow(/sgPath applies only to device nodes/);
    await expect(
      p.provision({ devicePath: '/dev/null', chap: { username: 'u', secret: 's' } }),
    ).rejects.toThrow(/chap applies only to an iscsi:\/\/ devicePath/);
  });
});
