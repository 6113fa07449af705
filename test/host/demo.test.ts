// README's first command without privileges: `node scripts/demo.mjs` (what `npm run demo` runs
// after the build) as the unprivileged client user prints exactly the demo volume's changed
// extents, with the server it started gone afterwards.
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { clientRootDir, cliReason, describeIf, ROOT, runAsClient } from './support.js';

const { DEMO_VOLUME } = (await import(join(ROOT, 'scripts/demo-volume.mjs'))) as {
  DEMO_VOLUME: { changes: Array<{ offset: number; length: number }> };
};

describeIf('npm run demo (host, unprivileged, userspace iSCSI)', cliReason(), () => {
  it('prints the demo volume changed extents (ndjson) and stops its server', async () => {
    const r = await runAsClient(process.execPath, [
      join(clientRootDir(), 'scripts/demo.mjs'),
      '--format',
      'ndjson',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const scanned = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { offset: number; length: number });
    expect(scanned.map((e) => [e.offset, e.length])).toEqual(
      DEMO_VOLUME.changes.map((c) => [c.offset, c.length]),
    );
    expect(r.stdout).toMatch(/ORACLE/);
    expect(r.stderr).toMatch(/demo: done in/);
  });
});
