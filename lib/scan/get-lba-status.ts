/**
 * One GET LBA STATUS command (16- or 32-byte form): its CDB and its parsed reply. The scanner
 * owns this command, and the one piece of state about it: which form a device answers (the
 * 'auto' fallback from 32 to 16 happens once per device).
 */
import { getBinding, type LbaStatusColumns } from '../binding.js';
import type { ScsiDevice } from '../device/device.js';
import {
  optionalInteger,
  validateAbortSignal,
  validateOneOf,
  validateOptionKeys,
} from '../validate.js';

/** One GET LBA STATUS command's request. */
export interface GetLbaStatusRequest {
  cdb: 16 | 32;
  lba: number;
  /** Allocation length in bytes (default 32 768; prefer 8 + 16·k). */
  allocationLength?: number;
  /** SCAN LENGTH in logical blocks (32-byte form only; 0 = no limit). */
  scanLength?: number;
  /** REPORT TYPE (0..255). */
  reportType?: number;
  /** ELEMENT IDENTIFIER (32-byte form only). */
  elementId?: number;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** One GET LBA STATUS reply, parsed into columns. */
export interface GetLbaStatusReply extends LbaStatusColumns {
  /** Bytes the device transferred. */
  transferred: number;
  allocationLength: number;
  durationMs: number;
}

/** A validated request; `replyBuffer` (of `allocationLength` bytes) is reused when given. */
export type GetLbaStatusCommand = Required<Omit<GetLbaStatusRequest, 'signal' | 'timeoutMs'>> &
  Pick<GetLbaStatusRequest, 'signal' | 'timeoutMs'> & { replyBuffer?: Uint8Array };

/** The form each device answers, once a scan in 'auto' mode found out. */
const knownForms = new WeakMap<ScsiDevice, 16 | 32>();

/** The GET LBA STATUS form `device` answers, if a scan has found out. */
export function knownForm(device: ScsiDevice): 16 | 32 | undefined {
  return knownForms.get(device);
}

/** Records the form `device` answers. */
export function rememberForm(device: ScsiDevice, form: 16 | 32): void {
  knownForms.set(device, form);
}

/** Validates a public {@link GetLbaStatusRequest}. */
export function validateGetLbaStatusRequest(request: GetLbaStatusRequest): GetLbaStatusCommand {
  validateOptionKeys(request, 'request', [
    'cdb',
    'lba',
    'allocationLength',
    'scanLength',
    'reportType',
    'elementId',
    'signal',
    'timeoutMs',
  ]);
  return {
    cdb: validateOneOf(request.cdb, 'request.cdb', [16, 32] as const),
    lba: optionalInteger(request.lba, 'request.lba', 0, Number.MAX_SAFE_INTEGER, 0),
    allocationLength: optionalInteger(
      request.allocationLength,
      'request.allocationLength',
      8,
      1 << 24,
      32768,
    ),
    scanLength: optionalInteger(request.scanLength, 'request.scanLength', 0, 0xffffffff, 0),
    reportType: optionalInteger(request.reportType, 'request.reportType', 0, 255, 0),
    elementId: optionalInteger(request.elementId, 'request.elementId', 0, 0xffffffff, 0),
    signal: validateAbortSignal(request.signal, 'request.signal'),
    timeoutMs:
      optionalInteger(request.timeoutMs, 'request.timeoutMs', 1, 2 ** 31 - 1, 0) || undefined,
  };
}

/** Sends one validated GET LBA STATUS command and parses the reply (unvalidated). */
export async function sendGetLbaStatus(
  device: ScsiDevice,
  command: GetLbaStatusCommand,
): Promise<GetLbaStatusReply> {
  const binding = getBinding();
  const { cdb: form, lba, allocationLength, scanLength, reportType, elementId } = command;
  const cdb =
    form === 32
      ? binding.getLbaStatus32Cdb(BigInt(lba), scanLength, elementId, allocationLength, reportType)
      : binding.getLbaStatus16Cdb(BigInt(lba), allocationLength, reportType);
  const result = await device.execute(cdb, {
    command: `GET LBA STATUS(${form})`,
    ...(command.replyBuffer?.byteLength === allocationLength
      ? { dataIn: command.replyBuffer }
      : { dataInLength: allocationLength }),
    signal: command.signal,
    timeoutMs: command.timeoutMs,
  });
  const columns = binding.parseLbaStatus(result.data, result.transferred);
  return {
    ...columns,
    transferred: result.transferred,
    allocationLength,
    durationMs: result.durationMs,
  };
}
