#!/usr/bin/env node
// Prints the changed extents of a delta volume as ndjson, with progress on stderr, and stops
// cleanly on Ctrl-C or after an hour.
//
//   sudo node examples/scan-device.mjs /dev/oracleoci/oraclevdb [changeBlockSize]
import { openDevice } from 'lba-status';

const [path, changeBlockSize = '4096'] = process.argv.slice(2);
if (!path) {
  console.error('usage: scan-device.mjs DEVICE [changeBlockSize]');
  process.exit(2);
}
const interrupt = new AbortController();
process.once('SIGINT', () => interrupt.abort(new Error('interrupted')));
const signal = AbortSignal.any([interrupt.signal, AbortSignal.timeout(3_600_000)]);

// `await using device = …` does the same where the runtime supports it (TypeScript, Node 24).
const device = await openDevice(path);
try {
  const info = await device.info({ signal });
  console.error(
    `${info.vendor} ${info.product}: ${info.capacityBlocks} blocks of ${info.blockSize} bytes, GET LBA STATUS(32) ${info.getLbaStatus32}`,
  );
  let changedBytes = 0;
  for await (const extent of device.changedExtents({
    changeBlockSize: Number(changeBlockSize),
    signal,
    onProgress: (p) => process.stderr.write(`\r${(p.fraction * 100).toFixed(1)}% scanned`),
  })) {
    changedBytes += extent.length;
    console.log(JSON.stringify(extent));
  }
  console.error(`\n${changedBytes} bytes changed`);
} finally {
  await device.close();
}
