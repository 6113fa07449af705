#!/usr/bin/env node
// The reviewed public API: one API Extractor report per package entry (api/lba-status*.api.md),
// made from the built declarations (dist/*.d.ts, so run `npm run build:ts` first; the npm
// scripts do). `npm run api:check` fails when an entry's surface differs from its committed
// report; `npm run api:update` rewrites the reports, to be reviewed and committed with the change.
//
// Usage: node scripts/api-report.mjs [--update]
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Extractor, ExtractorConfig } from '@microsoft/api-extractor';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const update = process.argv.includes('--update');
// entry → report name; the subpath of package.json's "exports".
const entries = {
  index: 'lba-status',
  sim: 'lba-status-sim',
  oci: 'lba-status-oci',
  jobs: 'lba-status-jobs',
};
const temp = join(root, 'node_modules/.cache/api-extractor');
mkdirSync(temp, { recursive: true });

let failed = 0;
for (const [entry, reportName] of Object.entries(entries)) {
  const dts = join(root, 'dist', `${entry}.d.ts`);
  if (!existsSync(dts)) {
    console.error(`api-report: ${dts} is missing: run npm run build:ts`);
    process.exit(1);
  }
  const config = ExtractorConfig.prepare({
    configObjectFullPath: join(root, 'api', `${reportName}.json`), // virtual: only its folder counts
    packageJsonFullPath: join(root, 'package.json'),
    configObject: {
      projectFolder: root,
      mainEntryPointFilePath: dts,
      bundledPackages: [],
      compiler: {
        overrideTsconfig: {
          compilerOptions: {
            target: 'es2022',
            lib: ['es2023', 'esnext.disposable'],
            module: 'nodenext',
            moduleResolution: 'nodenext',
            types: ['node'],
            strict: true,
            skipLibCheck: true,
          },
          files: [dts],
        },
      },
      apiReport: {
        enabled: true,
        reportFileName: `${reportName}.api.md`,
        reportFolder: join(root, 'api'),
        reportTempFolder: temp,
      },
      docModel: { enabled: false },
      dtsRollup: { enabled: false },
      tsdocMetadata: { enabled: false },
      messages: {
        compilerMessageReporting: { default: { logLevel: 'warning' } },
        extractorMessageReporting: {
          default: { logLevel: 'warning', addToApiReportFile: true },
          // No @public/@beta tags in this package: everything an entry exports is public.
          'ae-missing-release-tag': { logLevel: 'none', addToApiReportFile: false },
          // A type reachable from the API but not exported by name: listed in the report.
          'ae-forgotten-export': { logLevel: 'none', addToApiReportFile: true },
        },
        tsdocMessageReporting: { default: { logLevel: 'none', addToApiReportFile: false } },
      },
    },
  });
  const result = Extractor.invoke(config, {
    localBuild: update,
    showVerboseMessages: false,
    messageCallback(message) {
      // The bundled compiler is newer than the project's; nothing to act on.
      if (message.messageId === 'console-compiler-version-notice') message.logLevel = 'none';
    },
  });
  const report = `api/${reportName}.api.md`;
  if (result.apiReportChanged && !update) {
    failed++;
    console.error(
      `api-report: the public API of '${entry === 'index' ? 'lba-status' : `lba-status/${entry}`}' changed: ${report} differs (npm run api:update, review and commit it)`,
    );
  } else if (!result.succeeded) {
    failed++;
    console.error(`api-report: ${entry}: ${result.errorCount} error(s)`);
  } else {
    console.log(
      `api-report: ${report} ${update && result.apiReportChanged ? 'updated' : 'up to date'}`,
    );
  }
}
process.exit(failed ? 1 : 0);
