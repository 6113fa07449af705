/**
 * The memory transport on its own: SG_IO's delivery rules (data-in from offset 0, at most the
 * buffer, resid, sense + DRIVER_SENSE), asynchronous completion, the queue depth, the
 * simulator's faults and the test hook. Expected bytes are written out here, not computed.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { ChangedMap } from '../../lib/sim/changed-map.js';
import { DeviceServer } from '../../lib/sim/device-server.js';
import { FaultInjector } from '../../lib/sim/faults.js';
import { createMemoryTransport } from '../../lib/transport/memory.js';
import type { CommandOutcome, ScsiTransport } from '../../lib/transport/types.js';

// 1 MiB volume of 512-byte blocks; LBAs 8..15 changed.
const map = ChangedMap.fromByteExtents(
  { sizeBytes: 1 << 20, blockSize: 512, changeBlockSize: 4096 },
  [{ offset: 4096, length: 4096 }],
);
const server = () => new DeviceServer({ map, dataSeed: 1 });

const INQUIRY_96 = Uint8Array.from([0x12, 0, 0, 0, 96, 0]);
const TEST_UNIT_READY = new Uint8Array(6);
/** GET LBA STATUS(32), scan length 1024 (half the volume), allocation length 1024, report type 1. */
function gls32(lba = 0): Uint8Array {
  const c = Buffer.alloc(32);
  c[0] = 0x7f;
  c[7] = 0x18;
  c.writeUInt16BE(0x12, 8);
  c[10] = 1;
  c.writeBigUInt64BE(BigInt(lba), 12);
  c.writeUInt32BE(1024, 20);
  c.writeUInt32BE(1024, 28);
  return c;
}
const READ16_LBA8 = Uint8Array.from([0x88, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0]);

function send(
  transport: ScsiTransport,
  cdb: Uint8Array,
  dataLength = 0,
): Promise<CommandOutcome & { data: Uint8Array; sense: Uint8Array }> {
  const data = dataLength > 0 ? new Uint8Array(dataLength) : null;
  const sense = new Uint8Array(96);
  return transport
    .execute({ cdb, direction: data ? 1 : 0, data, sense, timeoutMs: 1000 })
    .then((o) => ({ ...o, data: data ?? new Uint8Array(0), sense }));
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('memory transport', () => {
  it('describes itself: kind, address, queue depth, zeroed buffers', async () => {
    const t = createMemoryTransport(server(), { name: 'delta' });
    expect(t.kind).toBe('memory');
    expect(t.address).toBe('memory:delta');
    expect(t.queueDepth).toBe(4);
    expect(t.sgPath).toBeUndefined();
    expect(t.blockPath).toBeUndefined();
    const buf = t.allocate(4096);
    expect(buf).toBeInstanceOf(Uint8Array);
    expect(buf.byteLength).toBe(4096);
    expect(buf.every((b) => b === 0)).toBe(true);
    expect(createMemoryTransport(server()).address).toMatch(/^memory:volume-\d+$/);
    await t.close();
    await t.close();
  });

  it('refuses bad options', () => {
    expect(() => createMemoryTransport(server(), { queueDepth: 0 })).toThrow(RangeError);
    expect(() => createMemoryTransport(server(), { queueDepth: 65 })).toThrow(RangeError);
    expect(() => createMemoryTransport(server(), { queueDepth: 1.5 })).toThrow(RangeError);
    expect(() => createMemoryTransport(server(), { depth: 2 } as never)).toThrow(/unknown/);
    expect(() => createMemoryTransport({} as never)).toThrow(TypeError);
  });

  it('completes commands asynchronously, never inside execute', async () => {
    const t = createMemoryTransport(server());
    const data = new Uint8Array(96);
    let settled = false;
    const pending = t
      .execute({ cdb: INQUIRY_96, direction: 1, data, sense: new Uint8Array(96), timeoutMs: 1 })
      .then((o) => {
        settled = true;
        return o;
      });
    expect(data.every((b) => b === 0)).toBe(true);
    for (let i = 0; i < 10; i++) await Promise.resolve();
    expect(settled).toBe(false);
    expect((await pending).status).toBe(0);
    expect(Buffer.from(data.subarray(8, 32)).toString('latin1')).toBe('ORACLE  BlockVolume     ');
  });

  it('copies data-in from offset 0, at most the buffer, and sets resid as SG_IO does', async () => {
    const t = createMemoryTransport(server());
    const short = await send(t, INQUIRY_96, 36);
    expect(short).toMatchObject({ errno: 0, status: 0, hostStatus: 0, resid: 0, senseLength: 0 });
    expect(Buffer.from(short.data.subarray(8, 36)).toString('latin1')).toBe(
      'ORACLE  BlockVolume     1.0 ',
    );
    const long = await send(t, INQUIRY_96, 200);
    expect(long.resid).toBe(104);
    expect(long.data.subarray(96).every((b) => b === 0)).toBe(true);
    // The documented-style reply of this map: one mapped extent [8, 16), condition 2, RTP 1.
    const gls = await send(t, gls32(), 1024);
    expect(gls.resid).toBe(1024 - 24);
    expect(hex(gls.data.subarray(0, 24))).toBe(
      '0000001400000005' + '0000000000000008' + '00000008' + '03000000',
    );
    const read = await send(t, READ16_LBA8, 512);
    expect(read.resid).toBe(0);
    expect(read.data.some((b) => b !== 0)).toBe(true);
    // No data phase: nothing to copy, nothing missing.
    expect(await send(t, TEST_UNIT_READY)).toMatchObject({ status: 0, resid: 0 });
  });

  it('delivers CHECK CONDITION with its sense, DRIVER_SENSE and no data', async () => {
    const t = createMemoryTransport(server());
    const gls16 = Uint8Array.from([0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0]);
    const r = await send(t, gls16, 1024);
    expect(r).toMatchObject({ errno: 0, status: 2, hostStatus: 0, driverStatus: 8 });
    expect(r.senseLength).toBe(18);
    expect(hex(r.sense.subarray(0, 18))).toBe('700005000000000a00000000200000000000');
    expect(r.resid).toBe(1024);
    expect(r.durationMs).toBeGreaterThanOrEqual(0);
  });

  it('serves at most queueDepth commands at once; the rest wait in order', async () => {
    const faults = new FaultInjector([{ kind: 'latency', ms: 5, on: 'any', count: 12 }]);
    const t = createMemoryTransport(server(), { queueDepth: 3, faults });
    const order: number[] = [];
    const all = Array.from({ length: 12 }, (_, i) =>
      send(t, TEST_UNIT_READY).then(() => order.push(i)),
    );
    expect(t.stats.inFlight).toBe(3);
    await Promise.all(all);
    expect(t.stats).toEqual({ commands: 12, inFlight: 0, maxInFlight: 3 });
    expect(order).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  });

  it("applies the simulator's faults", async () => {
    const faults = new FaultInjector();
    const t = createMemoryTransport(server(), { faults });
    faults.add({ kind: 'busy' });
    expect(await send(t, gls32(), 1024)).toMatchObject({ status: 8, senseLength: 0 });
    faults.add({ kind: 'task-set-full' });
    expect((await send(t, gls32(), 1024)).status).toBe(0x28);
    faults.add({ kind: 'unit-attention' });
    const ua = await send(t, gls32(), 1024);
    expect([ua.status, ua.sense[2], ua.sense[12], ua.sense[13]]).toEqual([2, 6, 0x29, 0]);
    faults.add({ kind: 'not-ready', on: 'read' });
    expect((await send(t, gls32(), 1024)).status).toBe(0); // only READs
    const nr = await send(t, READ16_LBA8, 512);
    expect([nr.status, nr.sense[2], nr.sense[12], nr.sense[13]]).toEqual([2, 2, 4, 1]);
    faults.add({ kind: 'drop-connection' });
    expect(await send(t, gls32(), 1024)).toMatchObject({
      errno: 0,
      hostStatus: 0x0f,
      resid: 1024,
      detail: 'connection dropped (fault injection)',
    });
    faults.add({ kind: 'gls-overlap' });
    const overlap = await send(t, gls32(), 1024);
    expect(overlap.status).toBe(0);
    expect(Buffer.from(overlap.data).readUInt32BE(0)).toBe(36); // 2 descriptors, the 2nd inside the 1st
    faults.add({ kind: 'latency', ms: 30 });
    const began = performance.now();
    expect((await send(t, gls32(), 1024)).status).toBe(0);
    expect(performance.now() - began).toBeGreaterThanOrEqual(25);
    expect(faults.active).toEqual([]);
  });

  it('times a command out with DID_TIME_OUT when its latency reaches the timeout', async () => {
    const faults = new FaultInjector([{ kind: 'latency', ms: 10_000 }]);
    const t = createMemoryTransport(server(), { faults });
    const data = new Uint8Array(1024);
    const began = performance.now();
    const r = await t.execute({
      cdb: gls32(),
      direction: 1,
      data,
      sense: new Uint8Array(96),
      timeoutMs: 20,
    });
    expect(performance.now() - began).toBeLessThan(5000);
    expect(r).toMatchObject({
      errno: 0,
      hostStatus: 3,
      resid: 1024,
      detail: 'timed out after 20 ms',
    });
    expect(data.every((b) => b === 0)).toBe(true);
  });

  it('starts with a UNIT ATTENTION when asked, which INQUIRY does not consume', async () => {
    const t = createMemoryTransport(server(), { unitAttention: true });
    expect((await send(t, INQUIRY_96, 96)).status).toBe(0);
    const ua = await send(t, TEST_UNIT_READY);
    expect([ua.status, ua.sense[2], ua.sense[12]]).toEqual([2, 6, 0x29]);
    expect((await send(t, TEST_UNIT_READY)).status).toBe(0);
  });

  it('lets a test hook answer what the device server cannot', async () => {
    const seen: Array<[number, number]> = [];
    const t = createMemoryTransport(server(), {
      testHook: (cdb, sequence) => {
        seen.push([cdb[0]!, sequence]);
        if (sequence === 0) return { errno: 25 };
        if (sequence === 1) return { hostStatus: 0x05, detail: 'aborted' };
        if (sequence === 2) return { reply: Uint8Array.from([0, 0, 0, 12, 0, 0, 0, 7]) };
        if (sequence === 3) return { reply: Uint8Array.from([1, 2, 3]), resid: 0 };
        return undefined;
      },
    });
    expect(await send(t, gls32(), 64)).toMatchObject({ errno: 25, status: 0, hostStatus: 0 });
    expect(await send(t, gls32(), 64)).toMatchObject({
      errno: 0,
      hostStatus: 5,
      detail: 'aborted',
      resid: 64,
    });
    const raw = await send(t, gls32(), 64);
    expect(raw).toMatchObject({ status: 0, resid: 56 });
    expect(hex(raw.data.subarray(0, 8))).toBe('0000000c00000007');
    expect((await send(t, gls32(), 64)).resid).toBe(0);
    expect((await send(t, TEST_UNIT_READY)).status).toBe(0);
    expect(seen).toEqual([
      [0x7f, 0],
      [0x7f, 1],
      [0x7f, 2],
      [0x7f, 3],
      [0x00, 4],
    ]);
  });

  it('passes data-out to the device server (a read-only volume refuses writes)', async () => {
    const t = createMemoryTransport(server());
    const write10 = Uint8Array.from([0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0]);
    const r = await t.execute({
      cdb: write10,
      direction: 2,
      data: new Uint8Array(512).fill(7),
      sense: new Uint8Array(96),
      timeoutMs: 1000,
    });
    expect([r.status, r.resid]).toEqual([2, 0]);
  });

  it('fails commands sent after close with EBADF', async () => {
    const t = createMemoryTransport(server());
    await t.close();
    expect(await send(t, TEST_UNIT_READY)).toMatchObject({ errno: 9 });
  });

  it('is exported from the lba-status/sim entry', async () => {
    const sim = await import('../../lib/sim.js');
    expect(sim.createMemoryTransport).toBe(createMemoryTransport);
    expect(sim.DEVICE_PROFILES).toEqual(['oci', 'scsi_debug', 'tgt']);
  });

  it('never reaches the native binding', () => {
    const lib = resolve(dirname(fileURLToPath(import.meta.url)), '../../lib');
    const seen = new Set<string>();
    const visit = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
      for (const { fileName } of importedFiles) {
        if (!fileName.startsWith('.')) continue;
        visit(join(dirname(file), fileName).replace(/\.js$/, '.ts'));
      }
    };
    visit(join(lib, 'transport/memory.ts'));
    expect(seen.has(join(lib, 'binding.ts'))).toBe(false);
    expect(seen.has(join(lib, 'sim/device-server.ts'))).toBe(true);
  });
});
