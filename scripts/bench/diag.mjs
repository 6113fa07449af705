// Diagnostics behind figures 2 and 7 (README "Performance"), run by hand in the tgt guest:
//   flock /tmp/guest.lock env EXTRA_MODS=iscsi_tcp SCSI_DEBUG= LBA_STATUS_TGT_SIZE=64G \
//     scripts/guest/uml-run.sh /tmp/diag 'sh scripts/bench/diag-run.sh'
// Figure 7: O_DIRECT reads of 1 MiB from the tgt block node into a fresh aligned buffer per read
// (what readChanged does) vs one reused buffer (what dd does), 1 and 4 in flight, same bytes.
// Figure 2: per-command cost against `sim serve` in its own process: C, the library at
// queueDepth 1 and 8, concurrency 1 and 4, interleaved with the C program.
import { execFile, spawn } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import { constants, open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const dist = new URL('../../dist/', import.meta.url);
const { openDevice } = await import(new URL('index.js', dist).href);
const binding = (await import('node:module')).createRequire(import.meta.url)(
  process.env.LBA_STATUS_NATIVE_PATH ?? '../../build/Release/lba_status.node',
);
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const r1 = (x) => Math.round(x * 10) / 10;
const run = (cmd, args) =>
  new Promise((res, rej) =>
    execFile(cmd, args, { maxBuffer: 64 << 20 }, (e, so, se) =>
      e ? rej(new Error(`${cmd}: ${e.message}\n${se}`)) : res({ stdout: so, stderr: se }),
    ),
  );
const out = {};

// ---- figure 7: buffer per read vs reused
const block = process.env.LBA_STATUS_TEST_BLOCK;
const backing = process.env.LBA_STATUS_TEST_BACKING;
const size = Number(process.env.LBA_STATUS_TEST_CAPACITY_BLOCKS) * 512;
const region = size - 4 * 2 ** 30;
const total = 128 << 20;
{
  const fd = openSync(backing, 'r+');
  const data = Buffer.alloc(1 << 20, 0x5a);
  for (let o = 0; o < total; o += 1 << 20) writeSync(fd, data, 0, data.length, region + o);
  closeSync(fd);
}
const chunk = 1 << 20;
async function readAll(fresh, inFlight) {
  const h = await open(block, constants.O_RDONLY | constants.O_DIRECT);
  const pool = Array.from({ length: inFlight }, () =>
    Buffer.from(binding.allocateAligned(chunk, 4096)),
  );
  const t0 = performance.now();
  let next = 0;
  const worker = async (k) => {
    for (;;) {
      const o = next;
      next += chunk;
      if (o >= total) return;
      const b = fresh ? Buffer.from(binding.allocateAligned(chunk, 4096)) : pool[k];
      const { bytesRead } = await h.read(b, 0, chunk, region + o);
      if (bytesRead !== chunk) throw new Error('short');
    }
  };
  await Promise.all(Array.from({ length: inFlight }, (_, k) => worker(k)));
  const ms = performance.now() - t0;
  await h.close();
  return ms;
}
const ddOnce = async () => {
  const t0 = performance.now();
  await run('dd', [
    `if=${block}`,
    'of=/dev/null',
    'bs=1M',
    'iflag=direct,skip_bytes,count_bytes',
    `skip=${region}`,
    `count=${total}`,
    'status=none',
  ]);
  return performance.now() - t0;
};
const variants = {
  fresh1: () => readAll(true, 1),
  reused1: () => readAll(false, 1),
  fresh4: () => readAll(true, 4),
  reused4: () => readAll(false, 4),
  dd: ddOnce,
};
const times = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
for (const f of Object.values(variants)) await f();
for (let r = 0; r < 5; r++) for (const [k, f] of Object.entries(variants)) times[k].push(await f());
out.read128MiB = Object.fromEntries(
  Object.entries(times).map(([k, v]) => [
    k,
    { MiBps: r1(128 / (median(v) / 1000)), ms: v.map(r1) },
  ]),
);
out.maxSectorsKb = (
  await readFile(`/sys/block/${block.split('/').pop()}/queue/max_sectors_kb`, 'utf8')
).trim();
console.error(JSON.stringify(out));

// ---- figure 2: per command against sim serve in its own process
const sim = spawn(
  process.execPath,
  [
    new URL('cli.js', dist).pathname,
    'sim',
    'serve',
    '--size',
    '256G',
    '--random-changes',
    '5000',
    '--seed',
    '7',
    '--max-extent',
    '4',
    '--port',
    '3261',
    '--iqn',
    'iqn.2024-01.dev.lba-status:diag',
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
await new Promise((res) => sim.stdout.once('data', res));
const iqn = 'iqn.2024-01.dev.lba-status:diag';
const node = ['-m', 'node', '-T', iqn, '-p', '127.0.0.1:3261'];
await run('iscsiadm', [...node, '-o', 'new']);
await run('iscsiadm', [...node, '--login']);
let sg;
for (let i = 0; i < 200 && !sg; i++) {
  for (const s of await readdir('/sys/class/iscsi_session')) {
    const dir = join('/sys/class/iscsi_session', s);
    if ((await readFile(join(dir, 'targetname'), 'utf8')).trim() !== iqn) continue;
    for (const t of (await readdir(join(dir, 'device'))).filter((n) => n.startsWith('target')))
      for (const l of (await readdir(join(dir, 'device', t))).filter((n) => n.endsWith(':1'))) {
        const g = await readdir(join(dir, 'device', t, l, 'scsi_generic')).catch(() => []);
        if (g[0]) sg = `/dev/${g[0]}`;
      }
  }
  if (!sg) await sleep(50);
}
await run('sg_turs', [sg]).catch(() => {});
const baseline = process.env.BASELINE;
const cRun = async (n) =>
  (await run(baseline, [sg, '32', '1', '32768', '2097152', String(n)])).stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l).ns / 1e6);
const scan2 = {};
for (const [qd, conc] of [
  [1, 1],
  [8, 1],
  [8, 4],
]) {
  const dev = await openDevice(sg, { queueDepth: qd });
  const opts = { cdb: 32, reportType: 'nonzero', allocationLength: 32768, concurrency: conc };
  const once = async () => {
    const t0 = performance.now();
    let n = 0;
    for await (const _b of dev.batches(opts)) n++;
    return [performance.now() - t0, n];
  };
  for (let i = 0; i < 3; i++) await once();
  const lib = [];
  const c = [];
  let cmds = 0;
  for (let r = 0; r < 9; r++) {
    const [ms, n] = await once();
    lib.push(ms);
    cmds = n;
    c.push(...(await cRun(1)));
  }
  scan2[`qd${qd}c${conc}`] = {
    libUsPerCmd: r1((median(lib) * 1000) / cmds),
    cUsPerCmd: r1((median(c) * 1000) / cmds),
    commands: cmds,
    lib: lib.map(r1),
    c: c.map(r1),
  };
  await dev.close();
}
out.scan = scan2;
console.error(JSON.stringify(scan2));
await run('iscsiadm', [...node, '--logout']).catch(() => {});
sim.kill('SIGTERM');
console.log(JSON.stringify(out));
