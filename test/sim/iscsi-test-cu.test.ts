// libiscsi's conformance suite against the simulator on loopback (no kernel, no root). The list of
// tests that apply to a read-only thin-provisioned disk, and why the others do not, is in
// iscsi-test-cu.list. Every listed test must run (not skip itself) and pass.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { type Simulator, startSimulator } from '../../lib/sim/simulator.js';
import { describeIf } from '../support/require.js';

const TOOL = '/usr/bin/iscsi-test-cu';
const have = existsSync(TOOL);
// A missing tool skips by hand and fails under CI (test/support/require.ts).
const missing = `${TOOL} not found: install Debian's libiscsi-bin (bash scripts/setup-system.sh)`;

const entries = readFileSync(join(__dirname, 'iscsi-test-cu.list'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'))
  .map((l) =>
    l.startsWith('gls16:') ? { gls16: true, name: l.slice(6).trim() } : { gls16: false, name: l },
  );

/** Outcome per test ("Suite.Test") from iscsi-test-cu's console output. */
function classify(output: string): Map<string, { state: 'pass' | 'skip' | 'fail'; text: string }> {
  const out = new Map<string, { state: 'pass' | 'skip' | 'fail'; text: string }>();
  let suite = '';
  let current: string | undefined;
  let buf: string[] = [];
  const flush = (): void => {
    if (!current) return;
    // A suite's teardown logs this after its last test; it belongs to no test.
    const text = buf
      .join('\n')
      .replaceAll('[SKIPPED] PERSISTENT RESERVE IN is not implemented.', '');
    const state = /FAILED/.test(text) ? 'fail' : /SKIPPED|Skipping/.test(text) ? 'skip' : 'pass';
    out.set(current, { state, text });
  };
  for (const line of output.split('\n')) {
    const s = /^Suite: (\S+)/.exec(line);
    if (s) {
      flush();
      current = undefined;
      suite = s[1]!;
      continue;
    }
    const t = /^ {2}Test: (\S+) \.\.\.(.*)$/.exec(line);
    if (t) {
      flush();
      current = `${suite}.${t[1]}`;
      buf = [t[2]!];
      continue;
    }
    if (current) buf.push(line);
  }
  flush();
  return out;
}

function runSuite(sim: Simulator, names: string[]): Promise<string> {
  const url = `iscsi://${sim.portal}/${sim.iqn}/${sim.lun}`;
  const args = [
    '--dataloss',
    '-i',
    'iqn.2024-01.lba-status:iscsi-test-cu',
    '-t',
    names.join(','),
    url,
  ];
  return new Promise((resolve, reject) => {
    execFile(TOOL, args, { timeout: 120_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') reject(err);
      else resolve(`${stdout}\n${stderr}`);
    });
  });
}

const sims: Simulator[] = [];
afterAll(async () => {
  for (const s of sims) await s.close();
});

describeIf('iscsi-test-cu against the simulator (libiscsi-bin)', have ? undefined : missing, () => {
  for (const gls16 of [false, true]) {
    const names = entries.filter((e) => e.gls16 === gls16).map((e) => e.name);
    it(`passes the ${names.length} applicable tests${gls16 ? ' (GET LBA STATUS(16) enabled)' : ''}`, async () => {
      const sim = await startSimulator({
        sizeBytes: 512 * 1024 * 1024,
        changed: { random: 200, seed: 11 },
        gls16,
      });
      sims.push(sim);
      const output = await runSuite(sim, names);
      const results = classify(output);
      const problems: string[] = [];
      for (const name of names) {
        const key = name.split('.').slice(1).join('.');
        const r = results.get(key);
        if (!r) problems.push(`${name}: did not run`);
        else if (r.state !== 'pass') problems.push(`${name}: ${r.state}\n${r.text.trim()}`);
      }
      expect(problems, output.slice(-3000)).toEqual([]);
      expect(results.size).toBe(names.length);
    }, 180_000);
  }
});
