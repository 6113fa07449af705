/**
 * readChanged, export, apply and verify on the memory transport and over iscsi:// (the cases:
 * test/support/read-export-suite.ts).
 */
import { readExportSuite } from '../support/read-export-suite.js';
import { iscsiTarget, memoryTarget } from '../support/targets.js';

readExportSuite(memoryTarget);
readExportSuite(iscsiTarget);
