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
