// SPDX-License-Identifier: Apache-2.0
//
// The soak's client: one long-lived process using the built package (dist/) the way a backup
// agent does, over iscsi:// with the library's userspace initiator. Forked by scripts/soak.mjs,
// which talks to it over IPC:
//   parent → {type:'pause'}   finish the current operation (device closed), collect garbage,
//                             answer {type:'paused'}; nothing runs until {type:'resume'}
//   parent → {type:'stop'}    finish and exit
//   child  → {type:'op', op, ok, ms, error?, code?, mismatch?}  after every operation
//
// Operations, chosen at random, each on a freshly opened device (login ... logout):
//   scan     changedExtents at the change block size: must equal sim serve's --dump-changed-at
//   extents  extents() with a random report type: descriptors in order, inside the volume
//   read     readChanged with SHA-256: every block is the documented block data (first time) and
//            the whole read hashes the same as the first read (every time)
//   export   exportChanged into a temp dir, verifyDevice against it, the dir removed
//   info     info()
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    expected: { type: 'string' },
    'change-block-size': { type: 'string' },
    'data-seed': { type: 'string' },
    seed: { type: 'string', default: '1' },
    dist: { type: 'string' },
  },
});
const lib = await import(join(values.dist, 'index.js'));
const sim = await import(join(values.dist, 'sim.js'));
const { readFile } = await import('node:fs/promises');
const expected = JSON.parse(await readFile(values.expected, 'utf8'));
const changeBlockSize = Number(values['change-block-size']);
const dataSeed = Number(values['data-seed']);

let state = 'running'; // running | pausing | paused | stopping
let resume;
process.on('message', (m) => {
  if (m.type === 'pause') state = 'pausing';
  else if (m.type === 'stop') {
    state = 'stopping';
    resume?.();
  } else if (m.type === 'resume' && state === 'paused') {
    state = 'running';
    resume?.();
  }
});

let x = Number(values.seed) >>> 0 || 1;
function rnd(n) {
  x ^= x << 13;
  x >>>= 0;
  x ^= x >>> 17;
  x ^= x << 5;
  x >>>= 0;
  return x % n;
}

let readDigest;
let dataChecked = false;

function same(a, b) {
  return (
    a.length === b.length && a.every((e, i) => e.offset === b[i].offset && e.length === b[i].length)
  );
}

const ops = {
  async info(dev) {
    const info = await dev.info();
    if (!(info.blockSize > 0)) return `info without a block size: ${JSON.stringify(info)}`;
  },
  async scan(dev) {
    const got = [];
    const concurrency = 1 + rnd(4);
    for await (const e of dev.changedExtents({ changeBlockSize, concurrency })) {
      got.push({ offset: e.offset, length: e.length });
    }
    if (!same(got, expected)) {
      return `scan: ${got.length} changed extents, expected ${expected.length} (first differing: ${JSON.stringify(got.find((e, i) => !expected[i] || e.offset !== expected[i].offset || e.length !== expected[i].length))})`;
    }
  },
  async extents(dev) {
    const reportType = ['all', 'nonzero', 'mapped', 'deallocated', 'anchored'][rnd(5)];
    let prevEnd = -1;
    let n = 0;
    for await (const e of dev.extents({ reportType, concurrency: 1 + rnd(4) })) {
      if (e.lba < prevEnd || e.blocks <= 0)
        return `extents(${reportType}): out of order at ${e.lba}`;
      prevEnd = e.lba + e.blocks;
      n++;
    }
    if (reportType === 'all' && n === 0) return 'extents(all): nothing reported';
  },
  async read(dev) {
    const hash = createHash('sha256');
    let bytes = 0;
    const blockSize = (await dev.info()).blockSize;
    for await (const c of dev.readChanged({
      changeBlockSize,
      concurrency: 1 + rnd(4),
      checksum: 'sha256',
    })) {
      hash.update(c.data);
      bytes += c.length;
      if (!dataChecked) {
        const data = Buffer.from(c.data.buffer, c.data.byteOffset, c.data.byteLength);
        for (let i = 0; i < c.blocks; i++) {
          const block = data.subarray(i * blockSize, (i + 1) * blockSize);
          const want = sim.blockData(c.lba + i, blockSize, dataSeed);
          if (!block.equals(want) && block.some((b) => b !== 0)) {
            return `read: LBA ${c.lba + i} is neither the documented block data nor zeros`;
          }
        }
      }
    }
    const digest = `${bytes}:${hash.digest('hex')}`;
    dataChecked = true;
    readDigest ??= digest;
    if (digest !== readDigest)
      return `read: data differs from the first read (${digest} vs ${readDigest})`;
  },
  async export(dev) {
    const dir = await mkdtemp(join(tmpdir(), 'lba-status-soak-'));
    try {
      const manifest = await lib.exportChanged(dev, join(dir, 'delta'), {
        changeBlockSize,
        concurrency: 1 + rnd(4),
        formats: rnd(2) ? ['raw', 'rbd-diff'] : ['rbd-diff'],
      });
      if (!manifest.complete) return 'export: manifest not complete';
      const expectedBytes = expected.reduce((n, e) => n + e.length, 0);
      if (manifest.changedBytes !== expectedBytes) {
        return `export: ${manifest.changedBytes} bytes, expected ${expectedBytes}`;
      }
      await lib.verifyDevice(dev, join(dir, 'delta'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
};
const names = ['scan', 'scan', 'extents', 'read', 'read', 'export', 'info'];

async function one() {
  const op = names[rnd(names.length)];
  const started = performance.now();
  let dev;
  try {
    dev = await lib.openDevice(values.url, { timeoutMs: 20_000 });
    const mismatch = await ops[op](dev);
    return { type: 'op', op, ok: !mismatch, mismatch, ms: performance.now() - started };
  } catch (err) {
    return {
      type: 'op',
      op,
      ok: false,
      error: `${err?.name}: ${err?.message}`,
      code: err?.code,
      ms: performance.now() - started,
    };
  } finally {
    await dev?.close().catch(() => {});
  }
}

while (state !== 'stopping') {
  if (state === 'pausing') {
    state = 'paused';
    globalThis.gc?.();
    process.send({ type: 'paused' });
    await new Promise((r) => {
      resume = r;
    });
    continue;
  }
  process.send(await one());
}
process.disconnect();
