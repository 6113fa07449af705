// Both command engines on a real kernel: 'threads' (SG_IO ioctls on dedicated threads, the
// default) and 'sg-async' (the sg driver's write()/read() interface polled on the event loop). Same answers, more commands in flight than sg's 16 per open file, SCSI errors, and a
// device that disappears with commands in flight.
import { execFile } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { DeviceSystemError, openDevice, ScsiError, TransportError } from '../../../lib/index.js';
import { merged, patternRanges, scannedChanged, useWrittenPattern } from '../scanner-support.js';
import { scenario } from '../support/index.js';

const s = scenario();
const ranges = patternRanges(s.capacityBlocks);
const INQUIRY = Uint8Array.from([0x12, 0, 0, 0, 96, 0]);

useWrittenPattern(s, ranges);

/** Open file descriptors of this process (to prove nothing leaks). */
async function openFds(): Promise<number> {
  return (await readdir('/proc/self/fd')).length;
}

describe(`command engines on scsi_debug (${s.name})`, () => {
  it("uses 'threads' unless told otherwise; 'sg-async' needs the sg node", async () => {
    await using viaSg = await openDevice(s.sg);
    expect(viaSg.engine).toBe('threads');
    await using asyncSg = await openDevice(s.sg, { engine: 'sg-async' });
    expect(asyncSg.engine).toBe('sg-async');
    const fds = await openFds();
    await expect(
      openDevice(s.block, { preferSg: false, engine: 'sg-async' }),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    expect(await openFds()).toBe(fds);
  });

  it('reports exactly the written pattern with either engine', async () => {
    for (const engine of ['sg-async', 'threads'] as const) {
      await using device = await openDevice(s.sg, { engine });
      expect(device.engine).toBe(engine);
      expect(await scannedChanged(device, { cdb: 16 }), engine).toEqual(merged(ranges));
    }
  });

  it('CLI: scan --engine sg-async prints what the default engine prints', async () => {
    const cli = join(process.cwd(), 'dist/cli.js');
    const scan = async (...extra: string[]) =>
      (
        await promisify(execFile)(process.execPath, [
          cli,
          'scan',
          s.sg,
          '--changed-only',
          '--format',
          'ndjson',
          ...extra,
        ])
      ).stdout;
    const viaThreads = await scan();
    expect(viaThreads.trim().split('\n').length).toBeGreaterThan(0);
    expect(await scan('--engine', 'sg-async')).toBe(viaThreads);
  });

  it('runs 64 commands in flight (sg takes 16 per open file; the rest wait natively)', async () => {
    await using device = await openDevice(s.sg, { queueDepth: 64, engine: 'sg-async' });
    const expected = (await device.execute(INQUIRY, { dataInLength: 96 })).data;
    const results = await Promise.all(
      Array.from({ length: 200 }, () => device.execute(INQUIRY, { dataInLength: 96 })),
    );
    for (const r of results) expect(r.data).toEqual(expected);
  });

  it('decodes CHECK CONDITION through the asynchronous interface', async () => {
    await using device = await openDevice(s.sg, { engine: 'sg-async' });
    // Opcode 0xFF does not exist: ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE (20h/00h).
    const error = await device.execute(Uint8Array.from([0xff, 0, 0, 0, 0, 0])).catch((e) => e);
    expect(error).toBeInstanceOf(ScsiError);
    expect(error).toMatchObject({ senseKey: 0x05, asc: 0x20, ascq: 0x00 });
  });

  it('fails typed, without hanging or leaking, when the device goes away mid-scan', async () => {
    // A second scsi_debug host gets its own disk; deleting that one leaves the scenario's alone.
    const before = new Set(await readdir('/sys/class/scsi_generic'));
    await writeFile('/sys/bus/pseudo/drivers/scsi_debug/add_host', '1');
    let sg: string | undefined;
    for (let i = 0; i < 100 && !sg; i++) {
      const added = (await readdir('/sys/class/scsi_generic')).filter((n) => !before.has(n));
      if (added[0]) sg = `/dev/${added[0]}`;
      else await sleep(50);
    }
    expect(sg).toBeDefined();
    const name = sg!.slice('/dev/'.length);
    const deletePath = join('/sys/class/scsi_generic', name, 'device/delete');
    const fds = await openFds();
    const device = await openDevice(sg!, {
      queueDepth: 8,
      retry: { attempts: 1 },
      engine: 'sg-async',
    });
    expect(device.engine).toBe('sg-async');
    // Keep commands in flight continuously, then delete the device under them.
    const hammer = (async () => {
      for (;;) {
        await Promise.all(
          Array.from({ length: 8 }, () => device.execute(INQUIRY, { dataInLength: 96 })),
        );
      }
    })().catch((e) => e); // the deletion below returns only after the commands failed
    await sleep(100);
    await writeFile(deletePath, '1');
    const error = await hammer;
    expect(error).toBeInstanceOf(Error);
    // ENODEV/ENXIO from sg, or the transport error the kernel completes the commands with.
    expect(error instanceof DeviceSystemError || error instanceof TransportError).toBe(true);
    await device.close();
    expect(await openFds()).toBe(fds);
    // The host itself stays; remove it so later tests see the scenario as it was.
    await writeFile('/sys/bus/pseudo/drivers/scsi_debug/add_host', '-1');
    expect(await readFile('/sys/bus/pseudo/drivers/scsi_debug/add_host', 'utf8')).toMatch(/^1\s*$/);
  });
});
