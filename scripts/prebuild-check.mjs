#!/usr/bin/env node
// Loads one built addon (a prebuild, or build/Release/lba_status.node) with the Node running
// this script and checks that it works: the GET LBA STATUS CDB builders against sg3_utils'
// vectors, the parser against OCI's documented reply, argument errors, an aligned buffer, and
// a command queue whose threads run an SG_IO ioctl on a descriptor that is no SCSI device
// (errno, not a crash) and shut down. No test framework and no other native module, so it runs
// as-is under qemu-user with an arm64 Node (scripts/prebuild-arm64-check.sh).
//
// Usage: node scripts/prebuild-check.mjs FILE.node
import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';

const file = resolve(process.argv[2] ?? '');
const b = createRequire(import.meta.url)(file);
const hex = (u8) => Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength).toString('hex');
const bytes = (s) => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
let checks = 0;
const check = (name, fn) => {
  fn();
  checks++;
  return name;
};

check('GET LBA STATUS(16), sg_get_lba_status -S -l 0x60 -m 32768 -t 1', () =>
  assert.equal(hex(b.getLbaStatus16Cdb(0x60n, 32768, 1)), '9e120000000000000060000080000100'),
);
check('GET LBA STATUS(32), OCI scan of 2097152 blocks', () =>
  assert.equal(
    hex(b.getLbaStatus32Cdb(0n, 2097152, 0, 32768, 1)),
    '7f0000000000001800120100000000000000000000200000000000000000' + '8000',
  ),
);
check('big-endian fields', () =>
  assert.equal(
    hex(b.getLbaStatus16Cdb(0x0102030405060708n, 0x090a0b0c, 0x10)),
    '9e120102030405060708090a0b0c1000',
  ),
);
check('a number LBA is a TypeError, an LBA past 2^64-1 a RangeError', () => {
  assert.throws(() => b.getLbaStatus16Cdb(96, 32768, 1), TypeError);
  assert.throws(() => b.getLbaStatus16Cdb(2n ** 64n, 24, 1), RangeError);
});
check("parser: OCI's documented reply (report type 1, 3 descriptors)", () => {
  const reply = bytes(`
    00 00 00 34 00 00 00 07
    00 00 00 00 00 00 00 60  00 00 00 10  03 00 00 00
    00 00 00 00 00 00 00 70  00 00 00 08  01 00 00 00
    00 00 00 00 00 00 00 a0  00 0f ff 60  01 00 00 00`);
  const r = b.parseLbaStatus(reply, reply.byteLength);
  assert.equal(r.count, 3);
  assert.equal(r.parameterDataLength, 0x34);
  assert.equal(r.completionCondition, 3);
  assert.equal(r.rtp, 1);
  assert.equal(r.truncated, false);
  assert.deepEqual(Array.from(r.lba), [0x60, 0x70, 0xa0]);
  assert.deepEqual(Array.from(r.blocks), [0x10, 0x08, 0x0fff60]);
  assert.deepEqual(Array.from(r.status), [3, 1, 1]);
});
check('parser: a reply cut after 36 bytes', () => {
  const cut = bytes(`
    00 00 00 34 00 00 00 03
    00 00 00 00 00 00 00 60  00 00 00 10  03 00 00 00
    00 00 00 00 00 00 00 70  00 00 00 08`);
  const r = b.parseLbaStatus(cut, cut.byteLength);
  assert.equal(r.truncated, true);
  assert.equal(r.count, 1);
  assert.equal(r.trailingBytes, 12);
});
check('allocateAligned(8192, 4096)', () => {
  const buf = b.allocateAligned(8192, 4096);
  assert.ok(buf instanceof ArrayBuffer);
  assert.equal(buf.byteLength, 8192);
  assert.ok(new Uint8Array(buf).every((x) => x === 0));
});

// A queue of 2 native threads: SG_IO on /dev/null fails with an errno (ENOTTY natively;
// qemu-user answers ENOSYS for an ioctl it does not translate) and never crashes the process.
const q = b.createCommandQueue(2);
const fd = openSync('/dev/null', 'r+');
try {
  const cdb = b.getLbaStatus16Cdb(0n, 32, 0);
  const results = await Promise.all(
    [0, 1, 2, 3].map(() => q.execute(fd, cdb, 1, new Uint8Array(32), new Uint8Array(64), 1000)),
  );
  for (const r of results) assert.ok(r.errno > 0, `errno ${r.errno}`);
  checks++;
} finally {
  q.close();
  q.close();
  closeSync(fd);
}
await assert.rejects(async () =>
  q.execute(0, b.getLbaStatus16Cdb(0n, 32, 0), 1, new Uint8Array(32), new Uint8Array(64), 10),
);
checks++;

console.log(
  `prebuild-check: ${file}: ${checks} checks passed on ${process.platform}-${process.arch}, ` +
    `Node ${process.version} (N-API ${process.versions.napi})`,
);
