// The scanner and read/export suites (test/support/*-suite.ts), which run on the memory
// transport and over iscsi:// on the host, run here on the kernel path: each volume is served by
// the simulator's iSCSI target in this process, the guest kernel's initiator logs in to it
// (iscsiadm), and the device is its sg node through SG_IO. The block node is hidden from the
// library so that reads go through SG_IO READ(16) too (O_DIRECT reads have their own guest tests).
import type { Simulator } from '../../../lib/sim.js';
import { openSgioTransport } from '../../../lib/transport/sgio.js';
import type { ScsiTransport } from '../../../lib/transport/types.js';
import { readExportSuite } from '../../support/read-export-suite.js';
import { scannerSuite } from '../../support/scanner-suite.js';
import { openBehindSimTarget, type TestTarget } from '../../support/targets.js';
import { attach } from '../sim/attach.js';

const kernelTarget: TestTarget = {
  name: 'kernel',
  canInject: false,
  // Each run is a login and a logout of the guest kernel: a few seconds, not milliseconds.
  propertyRuns: 12,
  recoversDrops: true,
  absorbsBusy: true,
  open: (volume, options = {}, beforeOpen) =>
    openBehindSimTarget(volume, options, beforeOpen, async (url, iqn) => {
      const portal = url.slice('iscsi://'.length, url.indexOf('/', 'iscsi://'.length));
      const attached = await attach({ iqn, portal } as Simulator);
      try {
        const sgio = await openSgioTransport(attached.sg, { queueDepth: 4, engine: 'threads' });
        // The block node hidden: reads go through SG_IO READ(16) like every other command.
        const transport: ScsiTransport = {
          kind: sgio.kind,
          address: sgio.address,
          queueDepth: sgio.queueDepth,
          sgPath: sgio.sgPath,
          blockPath: undefined,
          execute: (command) => sgio.execute(command),
          allocate: (length, alignment) => sgio.allocate(length, alignment),
          close: () => sgio.close(),
        };
        return { transport, cleanup: attached.detach };
      } catch (error) {
        await attached.detach();
        throw error;
      }
    }),
};

scannerSuite(kernelTarget);
readExportSuite(kernelTarget);
