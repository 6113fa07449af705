/**
 * The scanner on the memory transport and over iscsi:// (the cases: test/support/scanner-suite.ts).
 */
import { scannerSuite } from '../support/scanner-suite.js';
import { iscsiTarget, memoryTarget } from '../support/targets.js';

scannerSuite(memoryTarget);
scannerSuite(iscsiTarget);
