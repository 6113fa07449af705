// 66 000 logins whose connections are dropped without a Logout, against `sim serve` with its
// default limits: the TSIH space (65 535) is passed, and a fresh client is still served. Before
// the limits, sessions were kept forever and login 65 536 spun in the TSIH search at 100 % CPU.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  deadline,
  freshClientServed,
  isid,
  PEAK_RSS_BYTES,
  quickLogin,
  RawConn,
  removeCli,
  type Served,
  serve,
} from './abuse-support.js';

const servers: Served[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.stop();
});
afterAll(() => removeCli());

/** Logins number `from` .. `to` - 1, `parallel` at a time; returns how many were refused 3/02. */
async function dropLogins(
  s: Served,
  from: number,
  to: number,
  parallel: number,
): Promise<{ refused: number; tsihs: Set<number> }> {
  let next = from;
  let refused = 0;
  const tsihs = new Set<number>();
  const worker = async (): Promise<void> => {
    while (next < to) {
      const i = next++;
      for (;;) {
        const c = await RawConn.connect(s.host, s.port);
        try {
          const r = await quickLogin(c, { isid: isid(i), initiatorName: 'iqn.2024-01.test:crash' });
          if (r.statusClass === 3 && r.statusDetail === 2) {
            refused++; // more connections than --max-connections at this instant: try again
            continue;
          }
          if (r.statusClass !== 0)
            throw new Error(`login ${i}: status ${r.statusClass}/${r.statusDetail}`);
          tsihs.add(r.tsih);
          break;
        } finally {
          c.socket.resetAndDestroy(); // a crash: no Logout, no FIN
        }
      }
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return { refused, tsihs };
}

describe('sim serve under a login storm', () => {
  it('serves a fresh client after 66 000 logins dropped without a logout (default limits)', async () => {
    const s = await serve();
    servers.push(s);
    const t0 = Date.now();
    // Each batch must finish in time: a target that spins never answers login 65 536.
    let refused = 0;
    const tsihs = new Set<number>();
    for (let from = 0; from < 66_000; from += 6000) {
      const r = await deadline(
        dropLogins(s, from, Math.min(66_000, from + 6000), 16),
        60_000,
        `logins ${from}..${from + 6000}`,
      );
      refused += r.refused;
      for (const t of r.tsihs) tsihs.add(t);
    }
    const ms = Date.now() - t0;
    // Every TSIH was used at least once, and none is 0.
    expect(tsihs.has(0)).toBe(false);
    expect(tsihs.size).toBe(65_535);
    await deadline(freshClientServed(s.host, s.port), 15_000, 'the fresh client');
    const mem = s.memory();
    console.log(
      `66 000 dropped logins in ${ms} ms (${refused} momentary 3/02 refusals); ` +
        `server peak RSS ${(mem.peak / 2 ** 20).toFixed(0)} MiB`,
    );
    expect(mem.peak).toBeLessThan(PEAK_RSS_BYTES);
    expect(s.alive()).toBe(true);
  }, 600_000);
});
