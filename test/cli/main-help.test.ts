// The top-level CLI: -v/--version, command groups (`sim`, `oci`) listing their subcommands.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { main } from '../../lib/cli/main.js';
import { makeIo } from './helpers.js';

const version = (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version;

describe('lba-status (top level)', () => {
  it.each(['-v', '--version', '-V'])('%s prints the version, exit 0', async (flag) => {
    const io = makeIo();
    expect(await main([flag], io)).toBe(0);
    expect(io.out()).toBe(`${version}\n`);
  });

  it.each([
    ['sim', ['sim serve']],
    ['oci', ['oci delta', 'oci sweep']],
  ])('`lba-status %s` lists its subcommands (exit 2), --help too (exit 0)', async (group, subs) => {
    for (const [argv, code] of [
      [[group], 2],
      [[group, '--help'], 0],
      [['help', group], 0],
    ] as const) {
      const io = makeIo();
      expect(await main([...argv], io)).toBe(code);
      expect(io.out()).toContain(`Usage: lba-status ${group} COMMAND`);
      for (const s of subs) expect(io.out()).toContain(`  ${s}`);
      expect(io.err()).toBe('');
    }
  });

  it('an unknown subcommand of a group names it and lists the group (exit 2)', async () => {
    const io = makeIo();
    expect(await main(['oci', 'deltas'], io)).toBe(2);
    expect(io.err()).toMatch(/^lba-status: unknown command 'oci deltas'\n/);
    expect(io.err()).toContain('  oci delta');
    expect(io.out()).toBe('');
  });

  it('an unknown command still says so (exit 2)', async () => {
    const io = makeIo();
    expect(await main(['nope'], io)).toBe(2);
    expect(io.err()).toBe("lba-status: unknown command 'nope'\nTry 'lba-status --help'.\n");
  });
});
