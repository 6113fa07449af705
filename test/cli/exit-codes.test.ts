// Exit codes as documented (README, `lba-status --help`, every command's help): never 1 for a
// failure the README lists; argument errors found by the library name the flag the user typed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../lib/cli/main.js';
import { cliMessage, EXIT_CODE_BY_ERROR_CODE, ExitCode, exitCodeOf } from '../../lib/cli/util.js';
import { OciDeltaError } from '../../lib/oci/errors.js';
import { type Simulator, startSimulator } from '../../lib/sim/simulator.js';
import { OutOfRangeError } from '../../lib/validate.js';
import { makeIo } from './helpers.js';

const IQN = 'iqn.2024-01.lba-status:exit-codes';

describe('exit codes', () => {
  it('documents 8 for the cloud API and keeps 1 for internal errors only', async () => {
    const io = makeIo();
    expect(await main(['--help'], io)).toBe(0);
    const help = io.out().replace(/\s+/g, ' ');
    expect(help).toMatch(
      /Exit status: 0 ok, 2 usage .* 3 system .* 4 SCSI, 5 transport .* 6 malformed reply, 7 verify mismatch, 8 OCI API error .* 130 interrupted; 1 only for an internal error/,
    );
    for (const path of [['oci', 'delta'], ['oci', 'sweep'], ['scan'], ['export']]) {
      const cmd = makeIo();
      expect(await main([...path, '--help'], cmd)).toBe(0);
      const status = /Exit status:[\s\S]*?\n\n/.exec(cmd.out())?.[0] ?? '';
      expect(status, path.join(' ')).toMatch(/\b2 usage/);
      expect(status.replace(/\s+/g, ' '), path.join(' ')).not.toMatch(/[ :,]1 (?!only)[a-z]/);
    }
  });

  it('maps every OCI error code: what the user fixes is usage (2), the service is 8', () => {
    const usage = [
      'ERR_OCI_BAD_OCID',
      'ERR_OCI_SAME_BACKUP',
      'ERR_OCI_BACKUP_ORDER',
      'ERR_OCI_BACKUPS_DIFFERENT_VOLUMES',
      'ERR_OCI_BAD_CHANGE_BLOCK_SIZE',
    ] as const;
    for (const code of usage) expect(exitCodeOf(new OciDeltaError(code, 'x')), code).toBe(2);
    for (const code of ['ERR_OCI_SERVICE', 'ERR_OCI_TIMEOUT', 'ERR_OCI_RELEASE'] as const)
      expect(exitCodeOf(new OciDeltaError(code, 'x')), code).toBe(ExitCode.cloud);
    expect(exitCodeOf(new OciDeltaError('ERR_OCI_SDK_MISSING', 'x'))).toBe(ExitCode.system);
    // No mapped code is 1, and every ERR_OCI_ code of lib/oci is mapped.
    expect(Object.values(EXIT_CODE_BY_ERROR_CODE)).not.toContain(ExitCode.failure);
    expect(
      exitCodeOf(Object.assign(new Error('iscsiadm'), { code: 'ERR_ISCSIADM', exitCode: 24 })),
    ).toBe(ExitCode.transport);
    expect(
      exitCodeOf(Object.assign(new Error('iscsiadm'), { code: 'ERR_ISCSIADM', exitCode: 127 })),
    ).toBe(ExitCode.system);
    expect(exitCodeOf(new Error('a bug'))).toBe(ExitCode.failure);
  });

  it("rewrites a library option's name into the flag", () => {
    expect(
      cliMessage(new OutOfRangeError('options.queueDepth', 'an integer >= 1 and <= 64', 0)),
    ).toBe('--concurrency must be an integer >= 1 and <= 64, got 0');
    expect(cliMessage(new OutOfRangeError('options.signal', 'x', 0))).toMatch(/"options.signal"/);
    expect(
      cliMessage(
        new OciDeltaError(
          'ERR_OCI_BAD_CHANGE_BLOCK_SIZE',
          'change block size must be a power of two',
        ),
      ),
    ).toBe('--change-block-size must be a power of two');
  });
});

describe('flags in messages, end to end', () => {
  let sim: Simulator;
  beforeAll(async () => {
    sim = await startSimulator({ sizeBytes: 1 << 20, port: 0, iqn: IQN });
  });
  afterAll(async () => {
    await sim.close();
  });

  it('scan --concurrency 0 names --concurrency and exits 2', async () => {
    const io = makeIo();
    const code = await main(
      ['scan', `iscsi://127.0.0.1:${sim.port}/${IQN}/1`, '--concurrency', '0'],
      io,
    );
    expect(io.err()).toBe('lba-status: --concurrency must be an integer >= 1 and <= 64, got 0\n');
    expect(code).toBe(2);
  });

  it('read --concurrency 100 names --concurrency and exits 2', async () => {
    const io = makeIo();
    const code = await main(
      [
        'read',
        `iscsi://127.0.0.1:${sim.port}/${IQN}/1`,
        '--out',
        '/dev/null',
        '--concurrency',
        '100',
      ],
      io,
    );
    expect(io.err()).toMatch(
      /^lba-status: --concurrency must be an integer >= 1 and <= 64, got 100\n$/,
    );
    expect(code).toBe(2);
  });
});
