// sim serve --oci-api removes the config/key directory it made when it stops (SIGINT), and
// leaves one given with --oci-dir in place.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../lib/cli/main.js';
import { makeIo } from './helpers.js';

async function serveUntilReady(extra: string[]) {
  const io = makeIo();
  const done = main(
    [
      'sim',
      'serve',
      '--size',
      '64M',
      '--random-changes',
      '2',
      '--port',
      '0',
      '--oci-api',
      ...extra,
    ],
    io,
  );
  while (!io.out().includes('\n')) {
    if (await Promise.race([done.then(() => true), new Promise((r) => setTimeout(r, 20, false))]))
      throw new Error(`sim serve ended early: ${io.err()}`);
  }
  const ready = JSON.parse(io.out().split('\n')[0] as string) as { oci: { configFile: string } };
  return { io, done, ready };
}

describe('sim serve --oci-api: its config and key directory', () => {
  it('is removed after a clean stop when sim serve created it', async () => {
    const { io, done, ready } = await serveUntilReady([]);
    const configDir = dirname(ready.oci.configFile);
    expect(existsSync(join(configDir, 'key.pem'))).toBe(true);
    io.abort();
    expect(await done).toBe(0);
    expect(existsSync(configDir)).toBe(false);
    expect(existsSync(dirname(configDir))).toBe(false);
  });

  it('is kept when given with --oci-dir', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sim-serve-oci-dir-'));
    try {
      const { io, done, ready } = await serveUntilReady(['--oci-dir', dir]);
      expect(ready.oci.configFile.startsWith(dir)).toBe(true);
      io.abort();
      expect(await done).toBe(0);
      expect(existsSync(ready.oci.configFile)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
