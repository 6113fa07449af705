/**
 * Exports of changed data and their verification.
 *
 * An export directory holds:
 * - `manifest.json`: device identity, geometry, change block size, source backups when known,
 *   and every changed extent with its SHA-256; `complete: false` until the last byte is written,
 *   so an interrupted export never claims completeness;
 * - `delta.img` (format 'raw'): a sparse image of the volume's size with the changed chunks at
 *   their offsets and holes elsewhere;
 * - `delta.rbd-diff` (format 'rbd-diff'): Ceph's "rbd diff v1" stream (`rbd import-diff`
 *   applies it): header `rbd diff v1\n`, `s` (le64 image size), one `w` record (le64 offset,
 *   le64 length, data) per chunk, `e`.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, mkdir, open, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { ScsiDevice } from '../device/device.js';
import { read16Cdb } from '../scsi/commands.js';
import {
  type ChangedChunk,
  type ReadChangedOptions,
  readChanged,
  ShortReadError,
} from './reader.js';

export type ExportFormat = 'raw' | 'rbd-diff';

/** One extent of a manifest. */
export interface ManifestExtent {
  offset: number;
  length: number;
  sha256: string;
}

/** The manifest of an export (`manifest.json`). */
export interface ExportManifest {
  format: 'lba-status-export';
  version: 1;
  /** false until every chunk was written and synced. */
  complete: boolean;
  createdAt: string;
  device: { path: string; vendor: string; product: string; serialNumber?: string };
  blockSize: number;
  capacityBytes: number;
  changeBlockSize: number;
  /** Where the delta came from (OCI backup OCIDs) when the caller knows. */
  source?: { firstBackupId?: string; secondBackupId?: string };
  /** Data files present, relative to the directory. */
  files: Partial<Record<ExportFormat, string>>;
  /** Chunks in volume order. */
  extents: ManifestExtent[];
  changedBytes: number;
}

const FILE_NAMES: Record<ExportFormat, string> = { raw: 'delta.img', 'rbd-diff': 'delta.rbd-diff' };
const RBD_HEADER = Buffer.from('rbd diff v1\n', 'latin1');

/** Writes chunks into one output file in one format. */
export interface DeltaWriter {
  write(chunk: ChangedChunk): Promise<void>;
  /** Finishes the file (end record, fsync) and closes it. */
  finish(): Promise<void>;
  /** Closes without finishing (after an error). */
  abort(): Promise<void>;
}

async function writeAll(
  handle: FileHandle,
  data: Uint8Array,
  position: number | null,
): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(
      data,
      done,
      data.length - done,
      position === null ? null : position + done,
    );
    done += bytesWritten;
  }
}

/** A sparse raw image of `capacityBytes` with chunks written at their offsets. */
export async function createRawWriter(path: string, capacityBytes: number): Promise<DeltaWriter> {
  const handle = await open(path, 'w');
  try {
    await handle.truncate(capacityBytes);
  } catch (error) {
    await handle.close();
    throw error;
  }
  return {
    write: (chunk) => writeAll(handle, chunk.data, chunk.offset),
    async finish() {
      await handle.sync();
      await handle.close();
    },
    abort: () => handle.close(),
  };
}

/** An "rbd diff v1" stream. `path` may be a file or an already open handle (stdout). */
export async function createRbdDiffWriter(
  target: string | FileHandle,
  capacityBytes: number,
): Promise<DeltaWriter> {
  const handle = typeof target === 'string' ? await open(target, 'w') : target;
  const size = Buffer.alloc(9);
  size[0] = 0x73; // 's'
  size.writeBigUInt64LE(BigInt(capacityBytes), 1);
  const close = async (): Promise<void> => {
    if (typeof target === 'string') await handle.close();
  };
  try {
    await writeAll(handle, Buffer.concat([RBD_HEADER, size]), null);
  } catch (error) {
    await close();
    throw error;
  }
  return {
    async write(chunk) {
      const header = Buffer.alloc(17);
      header[0] = 0x77; // 'w'
      header.writeBigUInt64LE(BigInt(chunk.offset), 1);
      header.writeBigUInt64LE(BigInt(chunk.length), 9);
      await writeAll(handle, header, null);
      await writeAll(handle, chunk.data, null);
    },
    async finish() {
      await writeAll(handle, Buffer.from('e', 'latin1'), null);
      if (typeof target === 'string') await handle.sync();
      await close();
    },
    abort: close,
  };
}

/** Options of {@link exportChanged}. */
export interface ExportOptions extends Omit<ReadChangedOptions, 'checksum' | 'onExtents'> {
  /** Data formats to write (default both). */
  formats?: ExportFormat[];
  source?: ExportManifest['source'];
}

/**
 * `mkdir -p` that gives up: Node 20's recursive mkdir loops forever where mkdir fails with
 * ENOENT under an existing parent (procfs, sysfs).
 */
async function ensureDirectory(dir: string): Promise<void> {
  try {
    await mkdir(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    const parent = dirname(dir);
    if (code !== 'ENOENT' || parent === dir) throw error;
    await ensureDirectory(parent);
    try {
      await mkdir(dir);
    } catch (retry) {
      if ((retry as NodeJS.ErrnoException).code !== 'EEXIST') throw retry;
    }
  }
}

async function writeManifest(dir: string, manifest: ExportManifest): Promise<void> {
  const path = join(dir, 'manifest.json');
  await writeFile(`${path}.tmp`, `${JSON.stringify(manifest, null, 2)}\n`);
  await rename(`${path}.tmp`, path); // never a half-written manifest
}

/**
 * Reads the changed data of `device` into `dir` (created if needed): manifest plus data files.
 * On any failure the manifest stays `complete: false` and the error is rethrown.
 */
export async function exportChanged(
  device: ScsiDevice,
  dir: string,
  options: ExportOptions = {},
): Promise<ExportManifest> {
  const { formats = ['raw', 'rbd-diff'], source, ...readOptions } = options;
  await ensureDirectory(dir);
  const { blockSize, blocks } = await device.capacity({ signal: options.signal });
  const capacityBytes = blocks * blockSize;
  const inquiry = device.inquiry;
  const manifest: ExportManifest = {
    format: 'lba-status-export',
    version: 1,
    complete: false,
    createdAt: new Date().toISOString(),
    device: { path: device.requestedPath, vendor: inquiry.vendor, product: inquiry.product },
    blockSize,
    capacityBytes,
    changeBlockSize: options.changeBlockSize ?? blockSize,
    ...(source ? { source } : {}),
    files: Object.fromEntries(formats.map((f) => [f, FILE_NAMES[f]])),
    extents: [],
    changedBytes: 0,
  };
  await writeManifest(dir, manifest);
  const writers: DeltaWriter[] = [];
  try {
    for (const format of formats) {
      const path = join(dir, FILE_NAMES[format]);
      writers.push(
        format === 'raw'
          ? await createRawWriter(path, capacityBytes)
          : await createRbdDiffWriter(path, capacityBytes),
      );
    }
    // Each chunk is written before the next is asked for, so its buffer can be recycled.
    const chunks = readChanged(device, { ...readOptions, checksum: 'sha256', reuseBuffers: true });
    for await (const chunk of chunks) {
      for (const writer of writers) await writer.write(chunk);
      manifest.extents.push({ offset: chunk.offset, length: chunk.length, sha256: chunk.sha256! });
      manifest.changedBytes += chunk.length;
    }
    for (const writer of writers.splice(0)) await writer.finish();
    manifest.complete = true;
    await writeManifest(dir, manifest);
    return manifest;
  } catch (error) {
    await Promise.allSettled(writers.map((w) => w.abort()));
    await writeManifest(dir, manifest).catch(() => {}); // still complete: false, with what was read
    throw error;
  }
}

/** The export is not usable (incomplete, damaged or inconsistent). */
export class ExportError extends Error {
  override name = 'ExportError';
  constructor(
    readonly code:
      | 'ERR_LBA_STATUS_EXPORT_INCOMPLETE'
      | 'ERR_LBA_STATUS_EXPORT_CORRUPT'
      | 'ERR_LBA_STATUS_EXPORT_INVALID',
    message: string,
  ) {
    super(message);
  }
}

/** Verification found a difference. */
export class VerifyMismatchError extends Error {
  override name = 'VerifyMismatchError';
  readonly code = 'ERR_LBA_STATUS_VERIFY_MISMATCH';
  constructor(
    readonly offset: number,
    message: string,
  ) {
    super(message);
  }
}

/** Reads and checks an export's manifest. */
export async function readManifest(dir: string): Promise<ExportManifest> {
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as ExportManifest;
  if (manifest.format !== 'lba-status-export' || manifest.version !== 1) {
    throw new ExportError(
      'ERR_LBA_STATUS_EXPORT_INVALID',
      `${dir}/manifest.json is not an lba-status export (version 1)`,
    );
  }
  if (!manifest.complete) {
    throw new ExportError(
      'ERR_LBA_STATUS_EXPORT_INCOMPLETE',
      `the export in ${dir} is incomplete (interrupted while writing); export again`,
    );
  }
  return manifest;
}

/** Iterates the chunks of an export's raw delta image, checking each SHA-256. */
async function* exportChunks(
  dir: string,
  manifest: ExportManifest,
): AsyncGenerator<ManifestExtent & { data: Buffer }> {
  const file = manifest.files.raw;
  if (!file)
    throw new ExportError(
      'ERR_LBA_STATUS_EXPORT_INVALID',
      `the export in ${dir} has no raw delta image`,
    );
  const handle = await open(join(dir, file), 'r');
  try {
    for (const extent of manifest.extents) {
      const data = Buffer.alloc(extent.length);
      const { bytesRead } = await handle.read(data, 0, extent.length, extent.offset);
      const digest = createHash('sha256').update(data).digest('hex');
      if (bytesRead !== extent.length || digest !== extent.sha256) {
        throw new ExportError(
          'ERR_LBA_STATUS_EXPORT_CORRUPT',
          `the export's data at offset ${extent.offset} does not match its SHA-256 in the manifest`,
        );
      }
      yield { ...extent, data };
    }
  } finally {
    await handle.close();
  }
}

/** Writes an export's changed chunks into `target` (a copy of the base image). */
export async function applyExport(dir: string, target: string): Promise<ExportManifest> {
  const manifest = await readManifest(dir);
  const handle = await open(target, 'r+');
  try {
    for await (const chunk of exportChunks(dir, manifest))
      await writeAll(handle, chunk.data, chunk.offset);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return manifest;
}

function firstDifference(a: Buffer, b: Buffer): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : length;
}

/**
 * Checks that base + export = expected, streaming (no copy is written): every byte of the
 * result is compared with `expected`. Throws {@link VerifyMismatchError} at the first
 * difference. Returns the SHA-256 of the result.
 */
export async function verifyExport(
  base: string,
  dir: string,
  expected: string,
  chunkSize = 1 << 20,
): Promise<{ sha256: string; bytes: number }> {
  const manifest = await readManifest(dir);
  const baseHandle = await open(base, 'r');
  const expectedHandle = await open(expected, 'r').catch(async (error: unknown) => {
    await baseHandle.close();
    throw error;
  });
  const hash = createHash('sha256');
  try {
    const expectedSize = (await expectedHandle.stat()).size;
    if (expectedSize !== manifest.capacityBytes) {
      throw new VerifyMismatchError(
        Math.min(expectedSize, manifest.capacityBytes),
        `the expected image has ${expectedSize} bytes, the export describes ${manifest.capacityBytes}`,
      );
    }
    const chunks = exportChunks(dir, manifest);
    let pending = await chunks.next();
    for (let offset = 0; offset < manifest.capacityBytes; ) {
      let length = Math.min(chunkSize, manifest.capacityBytes - offset);
      let result: Buffer;
      if (!pending.done && pending.value.offset === offset) {
        result = pending.value.data;
        length = result.length;
        pending = await chunks.next();
      } else {
        if (!pending.done) length = Math.min(length, pending.value.offset - offset);
        result = Buffer.alloc(length);
        const { bytesRead } = await baseHandle.read(result, 0, length, offset);
        result.fill(0, bytesRead); // a shorter base reads as zeros, like a sparse volume
      }
      const want = Buffer.alloc(length);
      await expectedHandle.read(want, 0, length, offset);
      const at = firstDifference(result, want);
      if (at >= 0) {
        throw new VerifyMismatchError(
          offset + at,
          `base + delta differs from the expected image at byte offset ${offset + at}`,
        );
      }
      hash.update(result);
      offset += length;
    }
    return { sha256: hash.digest('hex'), bytes: manifest.capacityBytes };
  } finally {
    await baseHandle.close();
    await expectedHandle.close();
  }
}

/** Re-reads the device and compares every extent with the manifest's SHA-256. */
export async function verifyDevice(
  device: ScsiDevice,
  dir: string,
  options: { signal?: AbortSignal } = {},
): Promise<{ extents: number; bytes: number }> {
  const manifest = await readManifest(dir);
  let bytes = 0;
  const { blockSize } = await device.capacity(options);
  for (const extent of manifest.extents) {
    const result = await device.execute(
      read16Cdb(extent.offset / blockSize, extent.length / blockSize),
      {
        command: 'READ(16)',
        dataInLength: extent.length,
        signal: options.signal,
      },
    );
    if (result.transferred !== extent.length)
      throw new ShortReadError(device.path, extent.offset, extent.length, result.transferred);
    const digest = createHash('sha256').update(result.data).digest('hex');
    if (digest !== extent.sha256) {
      throw new VerifyMismatchError(
        extent.offset,
        `the device's data at byte offset ${extent.offset} (${extent.length} bytes) differs from the export's SHA-256`,
      );
    }
    bytes += extent.length;
  }
  return { extents: manifest.extents.length, bytes };
}

/** SHA-256 of a whole file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
