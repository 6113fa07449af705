// Type tests of the public API (vitest --typecheck; `npm run test:types`). They import the entry
// modules, so they check what the package's declarations say: call forms of openDevice, option
// types, the error hierarchy narrowing by `code`, and the shapes of batches and extents.
import { describe, expectTypeOf, it } from 'vitest';
import {
  AbortError,
  type ChangedExtent,
  type ChangedExtentsOptions,
  DeviceClosedError,
  DeviceSystemError,
  type ErrorCode,
  ExportError,
  type ExportErrorCode,
  type LbaExtent,
  type LbaStatusBatch,
  type LbaStatusDevice,
  LbaStatusError,
  MalformedReplyError,
  type OpenOptions,
  openDevice,
  type ReportType,
  type ScanOptions,
  ScsiError,
  type ScsiErrorCode,
  type ScsiTransport,
  SenseKey,
  type SystemErrorCode,
  TransportError,
} from '../../lib/index.js';
import {
  type JobQueueError,
  type LbaStatusError as JobsLbaStatusError,
  runDeltaJob,
} from '../../lib/jobs.js';
import {
  OciDeltaError,
  type OciDeltaErrorCode,
  type LbaStatusError as OciLbaStatusError,
} from '../../lib/oci.js';
import {
  createMemoryTransport,
  type IscsiCommandResult,
  IscsiInitiatorError,
  type IscsiTarget,
} from '../../lib/sim.js';

declare const transport: ScsiTransport;

describe('openDevice', () => {
  it('takes an address or a transport, and options', () => {
    expectTypeOf(openDevice).parameter(0).toEqualTypeOf<string | ScsiTransport>();
    expectTypeOf(openDevice).parameter(1).toEqualTypeOf<OpenOptions | undefined>();
    expectTypeOf(openDevice('/dev/sg1')).resolves.toEqualTypeOf<LbaStatusDevice>();
    expectTypeOf(
      openDevice(transport, { queueDepth: 8 }),
    ).resolves.toEqualTypeOf<LbaStatusDevice>();
    expectTypeOf(createMemoryTransport).returns.toExtend<ScsiTransport>();
    // @ts-expect-error: no number address
    openDevice(3);
  });

  it('has typed options', () => {
    expectTypeOf<OpenOptions['engine']>().toEqualTypeOf<'threads' | 'sg-async' | undefined>();
    expectTypeOf<OpenOptions['chap']>().toExtend<
      { username?: string; secret: string } | undefined
    >();
    expectTypeOf({ engine: 'sg-async', timeoutMs: 1000 } as const).toExtend<OpenOptions>();
    // @ts-expect-error: not an engine
    const bad: OpenOptions = { engine: 'fast' };
    void bad;
  });
});

describe('scan options and results', () => {
  it('types report types, CDB forms and signals', () => {
    expectTypeOf<ScanOptions['reportType']>().toEqualTypeOf<
      keyof typeof ReportType | number | undefined
    >();
    expectTypeOf<ScanOptions['cdb']>().toEqualTypeOf<'auto' | 16 | 32 | undefined>();
    expectTypeOf<ScanOptions['signal']>().toEqualTypeOf<AbortSignal | undefined>();
    expectTypeOf<ChangedExtentsOptions>().toExtend<ScanOptions>();
    expectTypeOf<{ changeBlockSize: number }>().toExtend<ChangedExtentsOptions>();
    // @ts-expect-error: not a CDB form
    const bad: ScanOptions = { cdb: 12 };
    void bad;
  });

  it('yields batches of typed-array columns, extents and changed extents', () => {
    expectTypeOf<LbaStatusDevice['batches']>().returns.toEqualTypeOf<
      AsyncGenerator<LbaStatusBatch>
    >();
    expectTypeOf<LbaStatusDevice['extents']>().returns.toEqualTypeOf<AsyncGenerator<LbaExtent>>();
    expectTypeOf<LbaStatusDevice['changedExtents']>().returns.toEqualTypeOf<
      AsyncGenerator<ChangedExtent>
    >();
    expectTypeOf<LbaStatusBatch>().toMatchTypeOf<{
      count: number;
      lba: Float64Array;
      blocks: Uint32Array;
      status: Uint8Array;
      additional: Uint8Array;
      nextLba: number;
      rtp: boolean;
      cdb: 16 | 32;
    }>();
    expectTypeOf<LbaExtent>().toEqualTypeOf<{
      lba: number;
      blocks: number;
      status: number;
      additional: number;
    }>();
    expectTypeOf<ChangedExtent>().toEqualTypeOf<{
      lba: number;
      blocks: number;
      offset: number;
      length: number;
    }>();
  });
});

describe('errors', () => {
  it('derive from one base class with a code from one closed union', () => {
    for (const C of [
      AbortError,
      DeviceClosedError,
      DeviceSystemError,
      ExportError,
      MalformedReplyError,
      ScsiError,
      TransportError,
      OciDeltaError,
      IscsiInitiatorError,
    ]) {
      expectTypeOf(C.prototype).toExtend<LbaStatusError>();
    }
    expectTypeOf<LbaStatusError['code']>().toEqualTypeOf<ErrorCode>();
    expectTypeOf<JobQueueError>().toExtend<LbaStatusError>();
    // one class, whichever entry names it
    expectTypeOf<OciLbaStatusError>().toEqualTypeOf<LbaStatusError>();
    expectTypeOf<JobsLbaStatusError>().toEqualTypeOf<LbaStatusError>();
    // codes are literal, never plain string
    expectTypeOf<string>().not.toExtend<ErrorCode>();
    expectTypeOf<'ERR_SOMETHING_ELSE'>().not.toExtend<ErrorCode>();
    expectTypeOf<TransportError['code']>().toEqualTypeOf<'ERR_SCSI_TRANSPORT'>();
    expectTypeOf<AbortError['code']>().toEqualTypeOf<'ABORT_ERR'>();
    expectTypeOf<ExportError['code']>().toEqualTypeOf<ExportErrorCode>();
    expectTypeOf<OciDeltaError['code']>().toEqualTypeOf<OciDeltaErrorCode>();
    expectTypeOf<'ERR_SCSI_ILLEGAL_REQUEST'>().toExtend<ScsiErrorCode>();
    expectTypeOf<'ERR_SCSI_BUSY'>().toExtend<ScsiErrorCode>();
    expectTypeOf<'ENOENT'>().toExtend<SystemErrorCode>();
    expectTypeOf<'E1234'>().toExtend<SystemErrorCode>();
    expectTypeOf<'ERR_SCSI_TRANSPORT'>().not.toExtend<SystemErrorCode | ScsiErrorCode>();
    expectTypeOf<ErrorCode>().toExtend<string>();
  });

  it('narrow by code', () => {
    type DeviceError =
      | DeviceSystemError
      | ScsiError
      | TransportError
      | MalformedReplyError
      | DeviceClosedError
      | AbortError;
    const err = {} as DeviceError;
    if (err.code === 'ERR_SCSI_TRANSPORT') expectTypeOf(err).toEqualTypeOf<TransportError>();
    if (err.code === 'ABORT_ERR') expectTypeOf(err).toEqualTypeOf<AbortError>();
    if (err.code === 'ERR_LBA_STATUS_MALFORMED')
      expectTypeOf(err).toEqualTypeOf<MalformedReplyError>();
    if (err.code === 'ENOENT') expectTypeOf(err).toEqualTypeOf<DeviceSystemError>();
    if (err.code === 'ERR_SCSI_UNIT_ATTENTION') expectTypeOf(err).toEqualTypeOf<ScsiError>();
    const e = {} as unknown;
    if (e instanceof LbaStatusError) {
      expectTypeOf(e.code).toEqualTypeOf<ErrorCode>();
      // @ts-expect-error: not a code lba-status throws
      if (e.code === 'ERR_NOT_OURS') throw e;
    }
    if (e instanceof ScsiError) {
      expectTypeOf(e.senseKey).toEqualTypeOf<number | undefined>();
      expectTypeOf(SenseKey.ILLEGAL_REQUEST).toEqualTypeOf<5>();
    }
  });
});

describe('lba-status/sim and lba-status/jobs', () => {
  it('keeps names apart from the main entry', () => {
    expectTypeOf<IscsiTarget>().toHaveProperty('close');
    expectTypeOf<IscsiCommandResult>().toHaveProperty('status');
    expectTypeOf(runDeltaJob).returns.toExtend<Promise<unknown>>();
  });
});
