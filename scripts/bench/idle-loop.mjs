// Control for figure 6: an idle Node process that only measures its own event-loop delay for
// SECONDS (perf_hooks.monitorEventLoopDelay, 1 ms resolution) and prints one JSON line. Run by
// guest-bench.mjs beside the C baseline scanning the same target, and with nothing else
// running, so a scan's p99 can be split into what the machine does to any process and what the
// scanner adds.
//
//   node scripts/bench/idle-loop.mjs SECONDS
import { monitorEventLoopDelay } from 'node:perf_hooks';

const seconds = Number(process.argv[2] ?? 5);
const h = monitorEventLoopDelay({ resolution: 1 });
h.enable();
const t0 = performance.now();
// keep the loop alive without work of its own
const timer = setInterval(() => {}, 1000);
setTimeout(() => {
  h.disable();
  clearInterval(timer);
  const ms = (ns) => Math.round((ns / 1e6) * 1000) / 1000;
  process.stdout.write(
    `${JSON.stringify({
      p99Ms: ms(h.percentile(99)),
      p50Ms: ms(h.percentile(50)),
      maxMs: ms(h.max),
      meanMs: ms(h.mean),
      seconds: Math.round(performance.now() - t0) / 1000,
    })}\n`,
  );
}, seconds * 1000);
