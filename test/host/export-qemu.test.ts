// Changed data over the userspace initiator, checked against a second, independent iSCSI
// client: `lba-status export iscsi://… --dir D` then `lba-status apply --delta D --target
// zero.img` (a zero image of the volume's size; the simulated first backup reads as zeros
// where nothing changed) must be byte-identical to what `qemu-img convert -O raw iscsi://…`
// (libiscsi, reading every block) reads from the same target. Everything runs as the
// unprivileged client user.
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  clientDir,
  cliReason,
  describeIf,
  qemuImgReason,
  randomByteRanges,
  runAsClient,
  runCli,
  type SimServer,
  startSimServe,
} from './support.js';

const MiB = 2 ** 20;

function sha256(file: string): Promise<string> {
  return new Promise((done, fail) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (c) => h.update(c))
      .on('error', fail)
      .on('end', () => done(h.digest('hex')));
  });
}

const CASES = [
  { blockSize: 512, sizeBytes: 64 * MiB, changeBlockSize: 4096, ranges: 60, seed: 7 },
  { blockSize: 4096, sizeBytes: 96 * MiB, changeBlockSize: 65536, ranges: 40, seed: 8 },
] as const;

describeIf(
  'export + apply over iscsi:// equals qemu-img (libiscsi) reading the same target',
  cliReason() ?? qemuImgReason(),
  () => {
    for (const c of CASES) {
      describeIf(`${c.blockSize}-byte blocks, ${c.sizeBytes / MiB} MiB`, undefined, () => {
        let sim: SimServer;
        let dir: ReturnType<typeof clientDir>;
        beforeAll(async () => {
          dir = clientDir('export');
          const file = join(dir.path, 'changed.json');
          writeFileSync(
            file,
            JSON.stringify(randomByteRanges(c.seed, c.sizeBytes, c.ranges, 500_000)),
          );
          sim = await startSimServe([
            '--size',
            String(c.sizeBytes),
            '--block-size',
            String(c.blockSize),
            '--change-block-size',
            String(c.changeBlockSize),
            '--changed',
            file,
            '--seed',
            String(c.seed),
          ]);
        });
        afterAll(async () => {
          await sim?.stop();
          dir?.remove();
        });

        it('sha256(apply(export) onto zeros) == sha256(qemu-img convert)', async () => {
          const exp = join(dir.path, 'delta');
          const restored = join(dir.path, 'restored.img');
          const viaQemu = join(dir.path, 'qemu.img');

          const e = await runCli([
            'export',
            sim.url(),
            '--dir',
            exp,
            '--change-block-size',
            String(c.changeBlockSize),
            '--no-progress',
          ]);
          expect(e.code, e.stderr).toBe(0);
          const manifest = JSON.parse(readFileSync(join(exp, 'manifest.json'), 'utf8')) as {
            complete: boolean;
          };
          expect(manifest.complete).toBe(true);

          const t = await runAsClient('truncate', ['-s', String(c.sizeBytes), restored]);
          expect(t.code, t.stderr).toBe(0);
          const a = await runCli(['apply', '--delta', exp, '--target', restored]);
          expect(a.code, a.stderr).toBe(0);

          const q = await runAsClient('qemu-img', ['convert', '-O', 'raw', sim.url(), viaQemu]);
          expect(q.code, q.stderr).toBe(0);

          const [ours, theirs] = await Promise.all([sha256(restored), sha256(viaQemu)]);
          expect(ours).toBe(theirs);
          // and the image is not trivially all zeros
          expect(theirs).not.toBe(
            createHash('sha256').update(Buffer.alloc(c.sizeBytes)).digest('hex'),
          );
        });
      });
    }
  },
);
