/**
 * Test support for the userspace iSCSI transport: an in-process simulator target whose block data
 * follows a rule this file defines (so expected data never comes from lib/sim), a TCP proxy that
 * can blackhole, rewrite or inject PDUs, socket counting, and waiting on state.
 */
import net from 'node:net';
import { encodePdu, type Pdu, type RawPdu } from '../../lib/iscsi/pdu.js';
import { PduReader } from '../../lib/iscsi/reader.js';
import type { ByteExtent } from '../../lib/sim/changed-map.js';
import { DeviceServer } from '../../lib/sim/device-server.js';
import { FaultInjector } from '../../lib/sim/faults.js';
import { buildChangedMap } from '../../lib/sim/simulator.js';
import { IscsiTarget } from '../../lib/sim/target.js';

export const BLOCK = 512;
export const IQN = 'iqn.2024-01.test:transport';

/** The test's own rule for a changed block's bytes: 32-bit words from the LBA and the index. */
export function expectedBlock(lba: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  for (let i = 0; i < BLOCK / 4; i++) {
    b.writeUInt32BE((Math.imul(lba + 1, 0x9e3779b1) + Math.imul(i + 7, 0x85ebca77)) >>> 0, i * 4);
  }
  return b;
}

/** The bytes a READ of [lba, lba+blocks) must return for `changed` (mapped byte ranges). */
export function expectedRead(changed: readonly ByteExtent[], lba: number, blocks: number): Buffer {
  const out = Buffer.alloc(blocks * BLOCK);
  for (let b = lba; b < lba + blocks; b++) {
    const off = b * BLOCK;
    const hit = changed.some(
      (c) => (c.status ?? 'mapped') === 'mapped' && off >= c.offset && off < c.offset + c.length,
    );
    if (hit) expectedBlock(b).copy(out, (b - lba) * BLOCK);
  }
  return out;
}

export interface TestTarget {
  host: string;
  port: number;
  iqn: string;
  lun: number;
  faults: FaultInjector;
  target: IscsiTarget;
  log: string[];
  url(user?: string): string;
  close(): Promise<void>;
}

export interface TestTargetOptions {
  sizeBytes?: number;
  /** Changed byte ranges, multiples of 4096 (the change block size). */
  changed?: ByteExtent[];
  /** Target command window (MaxCmdSN − ExpCmdSN + 1). */
  queueDepth?: number;
  chap?: { username: string; secret: string };
  mutualChap?: { username: string; secret: string };
  unitAttentionOnLogin?: boolean;
  port?: number;
}

/** The simulator's TCP target around a device server that fills blocks with expectedBlock(). */
export async function startTestTarget(opts: TestTargetOptions = {}): Promise<TestTarget> {
  const map = buildChangedMap({
    sizeBytes: opts.sizeBytes ?? 64 << 20,
    blockSize: BLOCK,
    changeBlockSize: 4096,
    changed: opts.changed ?? [],
  });
  const device = new DeviceServer({
    map,
    dataSeed: 0,
    identity: IQN,
    targetName: IQN,
    fillBlock: (out, offset, lba) => expectedBlock(lba).copy(out, offset),
  });
  const faults = new FaultInjector();
  const log: string[] = [];
  const target = new IscsiTarget({
    device,
    faults,
    iqn: IQN,
    host: '127.0.0.1',
    port: opts.port ?? 0,
    queueDepth: opts.queueDepth ?? 128,
    unitAttentionOnLogin: opts.unitAttentionOnLogin ?? false,
    log: (line) => {
      if (log.length < 10_000) log.push(line);
    },
    ...(opts.chap ? { chap: opts.chap } : {}),
    ...(opts.mutualChap ? { mutualChap: opts.mutualChap } : {}),
  });
  const { host, port } = await target.listen();
  let closing: Promise<void> | undefined;
  return {
    host,
    port,
    iqn: IQN,
    lun: 1,
    faults,
    target,
    log,
    url: (user) => `iscsi://${user ? `${user}@` : ''}${host}:${port}/${IQN}/1`,
    close: () => {
      closing ??= target.close();
      return closing;
    },
  };
}

/** TCP sockets (client and server side) this process holds. */
export function tcpSockets(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap').length;
}

/** Waits until `cond()` holds (checked every turn of the event loop, up to `ms`). */
export async function waitFor(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Re-frames a PDU as it goes on the wire (BHS, AHS, data, padding). */
export function frame(raw: RawPdu): Buffer {
  const pad = (4 - (raw.data.length % 4)) % 4;
  return Buffer.concat([raw.bhs, raw.ahs, raw.data, Buffer.alloc(pad)]);
}

type Hook = (raw: RawPdu) => Buffer | null;

export interface Proxy {
  port: number;
  /** Connections accepted so far. */
  accepted: number;
  /** Rewrites (or drops, with null) PDUs from the target to the initiator. */
  toInitiator: Hook | undefined;
  /** Sees (and may drop) PDUs from the initiator to the target. */
  toTarget: Hook | undefined;
  /** Stops forwarding on the connections open now (a silent network partition). */
  freeze(): void;
  /** Sends a PDU to the initiator on the newest connection. */
  inject(pdu: Pdu): void;
  close(): Promise<void>;
}

/** A PDU-aware TCP proxy in front of `port`. */
export async function startProxy(port: number): Promise<Proxy> {
  const pairs = new Set<{ client: net.Socket; server: net.Socket; frozen: boolean }>();
  let newest: net.Socket | undefined;
  const proxy: Proxy = {
    port: 0,
    accepted: 0,
    toInitiator: undefined,
    toTarget: undefined,
    freeze: () => {
      for (const p of pairs) p.frozen = true;
    },
    inject: (pdu) => newest?.write(encodePdu(pdu)),
    close: async () => {
      const closed = [...pairs].flatMap((p) =>
        [p.client, p.server].map(
          (s) => new Promise<void>((r) => (s.closed ? r() : s.once('close', () => r()))),
        ),
      );
      for (const p of pairs) {
        p.client.destroy();
        p.server.destroy();
      }
      await Promise.all([...closed, new Promise<void>((r) => server.close(() => r()))]);
    },
  };
  const server = net.createServer((client) => {
    proxy.accepted++;
    newest = client;
    const upstream = net.connect({ host: '127.0.0.1', port });
    const pair = { client, server: upstream, frozen: false };
    pairs.add(pair);
    const pipe = (from: net.Socket, to: net.Socket, hook: () => Hook | undefined): void => {
      const reader = new PduReader({ maxDataSegmentLength: 16 << 20 });
      from.on('data', (chunk: Buffer) => {
        if (pair.frozen) return;
        for (const raw of reader.push(chunk)) {
          const h = hook();
          const out = h ? h(raw) : frame(raw);
          if (out && !to.destroyed) to.write(out);
        }
      });
    };
    pipe(upstream, client, () => proxy.toInitiator);
    pipe(client, upstream, () => proxy.toTarget);
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', () => {});
    upstream.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  proxy.port = (server.address() as net.AddressInfo).port;
  return proxy;
}

// CDB builders (written here from SBC-4, not taken from the library).

export function read16(lba: number, blocks: number): Uint8Array {
  const c = Buffer.alloc(16);
  c[0] = 0x88;
  c.writeBigUInt64BE(BigInt(lba), 2);
  c.writeUInt32BE(blocks, 10);
  return c;
}

export function gls32(lba: number, scanLength: number, alloc: number, reportType = 1): Uint8Array {
  const c = Buffer.alloc(32);
  c[0] = 0x7f;
  c[7] = 0x18;
  c.writeUInt16BE(0x0012, 8);
  c[10] = reportType;
  c.writeBigUInt64BE(BigInt(lba), 12);
  c.writeUInt32BE(scanLength, 20);
  c.writeUInt32BE(alloc, 28);
  return c;
}

export function parseDescriptors(
  buf: Uint8Array,
  valid: number,
): Array<{ lba: number; blocks: number; status: number }> {
  const b = Buffer.from(buf.buffer, buf.byteOffset, valid);
  const out = [];
  for (let o = 8; o + 16 <= valid; o += 16) {
    out.push({
      lba: Number(b.readBigUInt64BE(o)),
      blocks: b.readUInt32BE(o + 8),
      status: b[o + 12]! & 0x0f,
    });
  }
  return out;
}

export const TUR = new Uint8Array(6);
