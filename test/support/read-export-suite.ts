/**
 * readChanged, export, apply and verify against the simulator's device server, run on every
 * transport: in process (memory transport) and over iSCSI (userspace initiator;
 * test/unit/read-export.test.ts), and through the guest kernel (test/guest/sim-iscsi/suites.test.ts). The expected image comes from the volume's own runs and byte pattern
 * (test/support/volume.ts), never from the simulator.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  applyExport,
  exportChanged,
  readManifest,
  sha256File,
  TransportError,
  VerifyMismatchError,
  verifyDevice,
  verifyExport,
} from '../../lib/index.js';
import { isRead16, type TestTarget } from './targets.js';
import { expectedData, type TestVolume } from './volume.js';

const model: TestVolume = {
  blockSize: 512,
  capacity: 8192,
  runs: [
    { lba: 8, blocks: 8, state: 'mapped' },
    { lba: 100, blocks: 1, state: 'mapped' },
    { lba: 1000, blocks: 3000, state: 'mapped' },
    { lba: 8000, blocks: 8, state: 'mapped' },
  ],
};

/** The second image: the whole model volume. */
function expectedImage(volume = model): Buffer {
  return Buffer.from(expectedData(volume, 0, volume.capacity));
}

/** The read/export cases, on `target`; their files live in a temporary directory removed after. */
export function readExportSuite(target: TestTarget): void {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'lba-status-read-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const open = async (volume = model) => target.open(volume);

  describe(`readChanged [${target.name}]`, () => {
    it('reads the changed chunks in order, aligned to the change block size, with SHA-256', async () => {
      const { device } = await open();
      const chunks = [];
      for await (const c of device.readChanged({
        changeBlockSize: 4096,
        chunkSize: 65536,
        checksum: 'sha256',
        concurrency: 3,
      }))
        chunks.push(c);
      const image = expectedImage();
      let last = -1;
      for (const c of chunks) {
        expect(c.offset).toBeGreaterThan(last);
        last = c.offset;
        expect(c.offset % 4096).toBe(0);
        expect(c.length).toBeLessThanOrEqual(65536);
        expect(Buffer.from(c.data).equals(image.subarray(c.offset, c.offset + c.length))).toBe(
          true,
        );
        expect(c.sha256).toBe(createHash('sha256').update(c.data).digest('hex'));
      }
      // LBA 8..16 → [4096, 8192); 100 → [49152, 53248); 1000..4000 → [512000, 2048000); 8000.. → 4096 bytes
      expect(chunks.map((c) => c.offset).filter((o) => o < 512000)).toEqual([4096, 49152]);
      const covered = chunks.reduce((n, c) => n + c.length, 0);
      expect(covered).toBe(4096 + 4096 + (2048000 - 512000) + 4096);
    });

    it('recycles concurrency + 1 buffers with reuseBuffers, and the data stays right', async () => {
      const { device } = await open();
      const buffers = new Set<ArrayBufferLike>();
      const image = expectedImage();
      let chunks = 0;
      for await (const c of device.readChanged({
        chunkSize: 8192,
        concurrency: 3,
        reuseBuffers: true,
      })) {
        buffers.add(c.data.buffer);
        expect(Buffer.from(c.data).equals(image.subarray(c.offset, c.offset + c.length))).toBe(
          true,
        );
        chunks++;
      }
      expect(chunks).toBeGreaterThan(100);
      expect(buffers.size).toBeGreaterThanOrEqual(2);
      expect(buffers.size).toBeLessThanOrEqual(4); // concurrency + 1 at most
    });

    it('reads no faster than the consumer takes: at most `concurrency` reads ahead', async () => {
      const { device, commands } = await open();
      let consumed = 0;
      let maxAhead = 0;
      for await (const _ of device.readChanged({ chunkSize: 4096, concurrency: 2 })) {
        consumed++;
        await new Promise((r) => setTimeout(r, 2));
        const reads = commands.filter(isRead16).length;
        maxAhead = Math.max(maxAhead, reads - consumed);
      }
      expect(consumed).toBeGreaterThan(100);
      expect(maxAhead).toBeLessThanOrEqual(2);
    });

    it('stops on an abort and on a transport error, never with a shorter result', async () => {
      const { device, faults } = await open();
      const controller = new AbortController();
      let n = 0;
      await expect(
        (async () => {
          for await (const _ of device.readChanged({ chunkSize: 4096, signal: controller.signal }))
            if (++n === 3) controller.abort();
        })(),
      ).rejects.toMatchObject({ code: 'ABORT_ERR' });
      // A READ whose connection drops after the first chunk came through (where a drop is not
      // recovered below the library).
      if (target.recoversDrops) return;
      const chunks = device.readChanged({ chunkSize: 4096 });
      const first = await chunks.next();
      expect(first.done).toBe(false);
      faults.add({ kind: 'drop-connection', on: 'read' });
      await expect(
        (async () => {
          for await (const _ of chunks);
        })(),
      ).rejects.toBeInstanceOf(TransportError);
      expect(faults.fired.get('drop-connection')).toBe(1);
    });
  });

  describe(`export, apply and verify [${target.name}]`, () => {
    it('writes a complete manifest, a sparse raw image and an rbd diff v1 stream', async () => {
      const { device } = await open();
      const out = join(dir, `export-1-${target.name}`);
      const manifest = await exportChanged(device, out, {
        changeBlockSize: 4096,
        source: { firstBackupId: 'a', secondBackupId: 'b' },
      });
      expect(manifest.complete).toBe(true);
      expect((await readManifest(out)).extents).toEqual(manifest.extents);
      const image = expectedImage();
      const raw = readFileSync(join(out, 'delta.img'));
      expect(raw.length).toBe(model.capacity * 512);
      for (const e of manifest.extents)
        expect(
          raw
            .subarray(e.offset, e.offset + e.length)
            .equals(image.subarray(e.offset, e.offset + e.length)),
        ).toBe(true);

      // Parse the rbd diff back: header, size, one 'w' per chunk, 'e'.
      const diff = readFileSync(join(out, 'delta.rbd-diff'));
      expect(diff.subarray(0, 12).toString('latin1')).toBe('rbd diff v1\n');
      expect(String.fromCharCode(diff[12]!)).toBe('s');
      expect(diff.readBigUInt64LE(13)).toBe(BigInt(model.capacity * 512));
      let at = 21;
      const records: Array<[number, number]> = [];
      while (diff[at] === 0x77) {
        const offset = Number(diff.readBigUInt64LE(at + 1));
        const length = Number(diff.readBigUInt64LE(at + 9));
        expect(
          diff.subarray(at + 17, at + 17 + length).equals(image.subarray(offset, offset + length)),
        ).toBe(true);
        records.push([offset, length]);
        at += 17 + length;
      }
      expect(String.fromCharCode(diff[at]!)).toBe('e');
      expect(at + 1).toBe(diff.length);
      expect(records).toEqual(manifest.extents.map((e) => [e.offset, e.length]));
    });

    it('verify: base + delta = expected; one flipped byte fails at its offset', async () => {
      const { device } = await open();
      const out = join(dir, `export-2-${target.name}`);
      await exportChanged(device, out, { changeBlockSize: 4096, formats: ['raw'] });
      const base = join(dir, 'base.img');
      const expected = join(dir, 'expected.img');
      writeFileSync(base, Buffer.alloc(model.capacity * 512));
      writeFileSync(expected, expectedImage());
      const result = await verifyExport(base, out, expected);
      expect(result.sha256).toBe(await sha256File(expected));

      const flipped = expectedImage();
      flipped[600_001]! ^= 0xff;
      writeFileSync(expected, flipped);
      const error = await verifyExport(base, out, expected).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(VerifyMismatchError);
      expect((error as VerifyMismatchError).offset).toBe(600_001);

      // apply: a copy of the base becomes the second image.
      const copy = join(dir, 'restored.img');
      writeFileSync(copy, Buffer.alloc(model.capacity * 512));
      await applyExport(out, copy);
      expect(await sha256File(copy)).toBe(
        createHash('sha256').update(expectedImage()).digest('hex'),
      );
      // and the device still matches the manifest.
      expect((await verifyDevice(device, out)).extents).toBeGreaterThan(0);
    });

    // Only where the test hook can fail a command midway (the memory transport); elsewhere the
    // case is not registered (it cannot apply, so it is not a skip).
    if (target.canInject)
      it('leaves the manifest incomplete when the export fails midway', async () => {
        const { device, commands, inject } = await open();
        const out = join(dir, `export-3-${target.name}`);
        await device.capacity();
        // Let the scan and a few reads through, then break the transport (DID_NO_CONNECT).
        const breakAt = commands.length + 12;
        inject!((_cdb, sequence) => (sequence >= breakAt ? { hostStatus: 0x01 } : undefined));
        await expect(exportChanged(device, out, { chunkSize: 4096 })).rejects.toBeInstanceOf(
          TransportError,
        );
        expect(commands.filter(isRead16).length).toBeGreaterThan(0);
        const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
        expect(manifest.complete).toBe(false);
        await expect(readManifest(out)).rejects.toMatchObject({
          code: 'ERR_LBA_STATUS_EXPORT_INCOMPLETE',
        });
      });
  });
}
