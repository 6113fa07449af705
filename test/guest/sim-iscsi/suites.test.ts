// The scanner and read/export suites (test/support/*-suite.ts), which run on the memory
// transport and over iscsi:// on the host, run here on the kernel path: each volume is served by
// the simulator's iSCSI target in this process, the guest kernel's initiator logs in to it
// (iscsiadm), and the device is its sg node through SG_IO. The block node is hidden from the
// library so that reads go through SG_IO READ(16) too (O_DIRECT reads have their own guest tests).

import { openDevice } from '../../../lib/index.js';
import { FaultInjector } from '../../../lib/sim/faults.js';
import { IscsiTarget } from '../../../lib/sim/target.js';
import type { Simulator } from '../../../lib/sim.js';
import { openSgioTransport } from '../../../lib/transport/sgio.js';
import type { ScsiTransport } from '../../../lib/transport/types.js';
import { readExportSuite } from '../../support/read-export-suite.js';
import { scannerSuite } from '../../support/scanner-suite.js';
import { type OpenedVolume, recording, serverFor, type TestTarget } from '../../support/targets.js';
import { attach } from '../sim/attach.js';

let volumes = 0;

const kernelTarget: TestTarget = {
  name: 'kernel',
  canInject: false,
  // Each run is a login and a logout of the guest kernel: a few seconds, not milliseconds.
  propertyRuns: 12,
  recoversDrops: true,
  absorbsBusy: true,
  async open(volume, options = {}, beforeOpen) {
    const faults = new FaultInjector();
    const iqn = `iqn.2024-01.lba-status:suite-${++volumes}`;
    const target = new IscsiTarget({
      device: serverFor(volume),
      faults,
      iqn,
      host: '127.0.0.1',
      port: 0,
      unitAttentionOnLogin: false,
    });
    const { port } = await target.listen();
    let detach = async (): Promise<void> => {};
    let sgio: ScsiTransport;
    try {
      const attached = await attach({ iqn, portal: `127.0.0.1:${port}` } as Simulator);
      detach = attached.detach;
      sgio = await openSgioTransport(attached.sg, { queueDepth: 4, engine: 'threads' });
    } catch (error) {
      await detach();
      await target.close();
      throw error;
    }
    const sgOnly: ScsiTransport = {
      kind: sgio.kind,
      address: sgio.address,
      queueDepth: sgio.queueDepth,
      sgPath: sgio.sgPath,
      blockPath: undefined,
      execute: (command) => sgio.execute(command),
      allocate: (length, alignment) => sgio.allocate(length, alignment),
      close: () => sgio.close(),
    };
    const { transport, commands, closed, maxInFlight } = recording(sgOnly, async () => {
      await detach();
      await target.close();
    });
    const opened: Omit<OpenedVolume, 'device'> = {
      commands,
      faults,
      maxInFlight,
      transportClosed: closed,
    };
    beforeOpen?.(opened);
    const device = await openDevice(transport, options);
    return { ...opened, device };
  },
};

scannerSuite(kernelTarget);
readExportSuite(kernelTarget);
