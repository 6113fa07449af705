#!/usr/bin/env node
// Exports the changed data of a delta volume (manifest + sparse raw image + rbd diff v1), then
// re-reads the device to check it against the manifest's SHA-256s.
//
//   sudo node examples/export-device.mjs /dev/oracleoci/oraclevdb /backup/2026-11-25 [changeBlockSize]
import { exportChanged, openDevice, verifyDevice } from 'lba-status';

const [path, dir, changeBlockSize = '4096'] = process.argv.slice(2);
if (!path || !dir) {
  console.error('usage: export-device.mjs DEVICE DIR [changeBlockSize]');
  process.exit(2);
}
const device = await openDevice(path);
try {
  const manifest = await exportChanged(device, dir, {
    changeBlockSize: Number(changeBlockSize),
    concurrency: 4,
    onProgress: (p) => process.stderr.write(`\r${p.bytesRead} of ${p.totalBytes} bytes`),
  });
  const checked = await verifyDevice(device, dir);
  console.log(
    JSON.stringify({
      dir,
      complete: manifest.complete,
      chunks: manifest.extents.length,
      bytes: manifest.changedBytes,
      verified: checked.bytes,
    }),
  );
} finally {
  await device.close();
}
