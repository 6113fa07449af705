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
import { type FileHandle, mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { ScsiDevice } from '../device/device.js';
import { type ExportErrorCode, LbaStatusError } from '../errors.js';
import { changedExtents } from '../scan/changed.js';
import type { ScanOptions } from '../scan/scanner.js';
import { read16Cdb } from '../scsi/commands.js';
import {
  type ChangedChunk,
  type ReadChangedOptions,
  type ReadProgress,
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
  /**
   * Start over even when `dir` holds an interrupted (or complete) export (default false: resume
   * it when it is the same delta, refuse with {@link ExportMismatchError} when it is not).
   */
  restart?: boolean;
  /** The manifest's `createdAt` (default: when the export — its first attempt — started). */
  createdAt?: Date | string;
  /**
   * How often synced chunks are recorded in the journal: after this many bytes (default 32 MiB)
   * or this many ms (default 1000), whichever comes first. Each record follows an fsync of the
   * data files, so a resume never trusts a byte that was not on disk.
   */
  journalEveryBytes?: number;
  journalEveryMs?: number;
  /** Called once before reading when an earlier attempt's synced chunks are kept. */
  onResume?: (resumed: { chunks: number; bytes: number; totalBytes: number }) => void;
}

/** The directory holds an export of another delta (device, geometry, change block size, backups). */
export class ExportMismatchError extends LbaStatusError {
  override name = 'ExportMismatchError';
  readonly code = 'ERR_LBA_STATUS_EXPORT_MISMATCH';
  constructor(
    /** What differs, e.g. `changeBlockSize`, `device.path`, `source.secondBackupId`. */
    readonly field: string,
    /** The value the export in the directory was made with. */
    readonly expected: unknown,
    /** The value of this run. */
    readonly actual: unknown,
    readonly dir: string,
  ) {
    super(
      `${dir} holds an export of another delta: its ${field} is ${JSON.stringify(expected)}, this run's is ${JSON.stringify(actual)}; use another directory, or restart to overwrite it (--restart)`,
    );
  }
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

/** Writes a file durably: tmp, fsync, rename (never a half-written file), fsync the directory. */
async function writeDurably(path: string, text: string): Promise<void> {
  const handle = await open(`${path}.tmp`, 'w');
  try {
    await writeAll(handle, Buffer.from(text), 0);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(`${path}.tmp`, path);
  await syncDirectory(dirname(path));
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r').catch(() => undefined);
  if (!handle) return;
  try {
    await handle.sync();
  } catch {
    // some file systems refuse fsync on a directory: the rename is still atomic
  } finally {
    await handle.close();
  }
}

async function writeManifest(dir: string, manifest: ExportManifest): Promise<void> {
  await writeDurably(join(dir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
}

const JOURNAL = 'journal.ndjson';

/** The journal's first record: what the export is of, and its manifest header. */
interface JournalStart {
  type: 'start';
  version: 1;
  manifest: Omit<ExportManifest, 'extents' | 'changedBytes' | 'complete'>;
}

/** What a journal says: the header, the delta's extents (once scanned), the synced chunks. */
interface JournalState {
  start: JournalStart;
  extents: Array<[number, number]> | undefined;
  synced: Array<[number, number, string]>;
}

/** Reads the journal; a torn last line (killed while appending) is ignored. */
async function loadJournal(dir: string): Promise<JournalState | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, JOURNAL), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const lines = text.split('\n');
  let state: JournalState | undefined;
  for (const [i, line] of lines.entries()) {
    if (line === '') continue;
    let record: { type?: string; [key: string]: unknown };
    try {
      record = JSON.parse(line);
    } catch (error) {
      if (i >= lines.length - 2) break; // the torn tail of an interrupted append
      throw new ExportError(
        'ERR_LBA_STATUS_EXPORT_CORRUPT',
        `${dir}/${JOURNAL} is damaged at line ${i + 1} (${(error as Error).message}); restart the export`,
      );
    }
    if (record.type === 'start' && record.version === 1 && !state) {
      state = { start: record as unknown as JournalStart, extents: undefined, synced: [] };
    } else if (state && record.type === 'extents') {
      state.extents = record.extents as Array<[number, number]>;
    } else if (state && record.type === 'synced') {
      state.synced.push(...(record.chunks as Array<[number, number, string]>));
    } else {
      throw new ExportError(
        'ERR_LBA_STATUS_EXPORT_CORRUPT',
        `${dir}/${JOURNAL} line ${i + 1} is not a journal record this version writes; restart the export`,
      );
    }
  }
  return state;
}

/** Appends records to the journal, each batch fsync'd. */
class Journal {
  #handle: FileHandle | undefined;
  constructor(readonly path: string) {}

  static async create(path: string, start: JournalStart): Promise<Journal> {
    const journal = new Journal(path);
    journal.#handle = await open(path, 'w');
    await journal.append([start]);
    await syncDirectory(dirname(path));
    return journal;
  }

  static async reopen(path: string): Promise<Journal> {
    const journal = new Journal(path);
    const handle = await open(path, 'r+');
    // Drop a torn last line, so that appended records start on a line of their own.
    const text = await handle.readFile('utf8');
    const end = text.lastIndexOf('\n') + 1;
    if (end !== text.length) await handle.truncate(end);
    await handle.close();
    journal.#handle = await open(path, 'a');
    return journal;
  }

  async append(records: unknown[]): Promise<void> {
    const text = records.map((r) => `${JSON.stringify(r)}\n`).join('');
    await writeAll(this.#handle!, Buffer.from(text), null);
    await this.#handle!.sync();
  }

  async close(): Promise<void> {
    await this.#handle?.close();
    this.#handle = undefined;
  }
}

/** A data file of an export, written at explicit positions (so it can be resumed). */
interface ExportFile {
  write(chunk: ChangedChunk): Promise<void>;
  sync(): Promise<void>;
  /** Finishes (end record), fsyncs and closes. */
  finish(): Promise<void>;
  close(): Promise<void>;
}

/** Bytes of an rbd diff v1 stream before the first `w` record. */
const RBD_PREFIX = RBD_HEADER.length + 9;
const RBD_RECORD_HEADER = 17;

async function openExportFile(
  format: ExportFormat,
  path: string,
  capacityBytes: number,
  resumeAt: { rbdOffset: number } | undefined,
): Promise<ExportFile> {
  let handle: FileHandle;
  if (resumeAt) {
    try {
      handle = await open(path, 'r+');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      throw new ExportError(
        'ERR_LBA_STATUS_EXPORT_CORRUPT',
        `${path} is missing although the export's journal lists synced data in it; restart the export`,
      );
    }
  } else handle = await open(path, 'w');
  try {
    const size = (await handle.stat()).size;
    if (format === 'raw') {
      if (resumeAt && size !== capacityBytes)
        throw new ExportError(
          'ERR_LBA_STATUS_EXPORT_CORRUPT',
          `${path} has ${size} bytes, not the volume's ${capacityBytes}; restart the export`,
        );
      if (!resumeAt) await handle.truncate(capacityBytes);
      return {
        write: (chunk) => writeAll(handle, chunk.data, chunk.offset),
        sync: () => handle.sync(),
        async finish() {
          await handle.sync();
          await handle.close();
        },
        close: () => handle.close(),
      };
    }
    let position = resumeAt?.rbdOffset ?? 0;
    if (resumeAt) {
      if (size < position)
        throw new ExportError(
          'ERR_LBA_STATUS_EXPORT_CORRUPT',
          `${path} has ${size} bytes, fewer than the ${position} its journal lists as synced; restart the export`,
        );
      await handle.truncate(position);
    }
    if (position === 0) {
      const head = Buffer.alloc(RBD_PREFIX);
      RBD_HEADER.copy(head);
      head[RBD_HEADER.length] = 0x73; // 's'
      head.writeBigUInt64LE(BigInt(capacityBytes), RBD_HEADER.length + 1);
      await writeAll(handle, head, 0);
      position = RBD_PREFIX;
    }
    return {
      async write(chunk) {
        const header = Buffer.alloc(RBD_RECORD_HEADER);
        header[0] = 0x77; // 'w'
        header.writeBigUInt64LE(BigInt(chunk.offset), 1);
        header.writeBigUInt64LE(BigInt(chunk.length), 9);
        await writeAll(handle, header, position);
        await writeAll(handle, chunk.data, position + RBD_RECORD_HEADER);
        position += RBD_RECORD_HEADER + chunk.length;
      },
      sync: () => handle.sync(),
      async finish() {
        await writeAll(handle, Buffer.from('e', 'latin1'), position);
        await handle.truncate(position + 1);
        await handle.sync();
        await handle.close();
      },
      close: () => handle.close(),
    };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** The manifest fields that say which delta an export is of, checked before resuming. */
function compareIdentity(
  dir: string,
  was: Omit<ExportManifest, 'extents' | 'changedBytes' | 'complete'>,
  now: Omit<ExportManifest, 'extents' | 'changedBytes' | 'complete'>,
): void {
  const check = (field: string, a: unknown, b: unknown) => {
    if (JSON.stringify(a) !== JSON.stringify(b)) throw new ExportMismatchError(field, a, b, dir);
  };
  // Two backups define the delta whatever volume serves it: compare the backups, not the device.
  const backups = (m: typeof was) =>
    m.source?.firstBackupId !== undefined && m.source?.secondBackupId !== undefined;
  if (backups(was) || backups(now)) {
    check('source.firstBackupId', was.source?.firstBackupId, now.source?.firstBackupId);
    check('source.secondBackupId', was.source?.secondBackupId, now.source?.secondBackupId);
  } else {
    check('device.path', was.device.path, now.device.path);
    check('device.vendor', was.device.vendor, now.device.vendor);
    check('device.product', was.device.product, now.device.product);
    // Exports made before serial numbers were recorded have none: compare when both do.
    if (was.device.serialNumber !== undefined && now.device.serialNumber !== undefined)
      check('device.serialNumber', was.device.serialNumber, now.device.serialNumber);
  }
  check('blockSize', was.blockSize, now.blockSize);
  check('capacityBytes', was.capacityBytes, now.capacityBytes);
  check('changeBlockSize', was.changeBlockSize, now.changeBlockSize);
  check('files', was.files, now.files);
}

/** Chunks merged into extents ([offset, length]), as the scan reports them. */
function mergeChunks(
  chunks: Iterable<{ offset: number; length: number }>,
): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const c of chunks) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === c.offset) last[1] += c.length;
    else out.push([c.offset, c.length]);
  }
  return out;
}

/** The extents from `from` on: the one containing `from` cut to start there. */
function extentsFrom(extents: Array<[number, number]>, from: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const [offset, length] of extents) {
    if (offset + length <= from) continue;
    const start = Math.max(offset, from);
    out.push([start, offset + length - start]);
  }
  return out;
}

async function readManifestIfAny(dir: string): Promise<ExportManifest | undefined> {
  try {
    const m = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as ExportManifest;
    return m.format === 'lba-status-export' && m.version === 1 ? m : undefined;
  } catch {
    return undefined; // none, or not ours / torn: nothing to resume from
  }
}

function headerOf(
  m: ExportManifest,
): Omit<ExportManifest, 'extents' | 'changedBytes' | 'complete'> {
  const { extents: _e, changedBytes: _c, complete: _d, ...header } = m;
  return header;
}

/**
 * Checks, before any device is opened (or any delta volume is paid for), that `dir` can take an
 * export of this delta: it holds none, or one (complete or interrupted) with the same backups,
 * change block size and formats. Throws {@link ExportMismatchError} otherwise; device identity
 * and geometry are checked by {@link exportChanged} itself.
 */
export async function checkExportDir(
  dir: string,
  expected: {
    source?: ExportManifest['source'];
    changeBlockSize?: number;
    formats?: ExportFormat[];
  },
): Promise<void> {
  const header =
    (await loadJournal(dir).catch(() => undefined))?.start.manifest ??
    (await readManifestIfAny(dir).then((m) => (m ? headerOf(m) : undefined)));
  if (!header) return;
  const check = (field: string, a: unknown, b: unknown) => {
    if (JSON.stringify(a) !== JSON.stringify(b)) throw new ExportMismatchError(field, a, b, dir);
  };
  if (expected.source) {
    check('source.firstBackupId', header.source?.firstBackupId, expected.source.firstBackupId);
    check('source.secondBackupId', header.source?.secondBackupId, expected.source.secondBackupId);
  }
  if (expected.changeBlockSize !== undefined)
    check('changeBlockSize', header.changeBlockSize, expected.changeBlockSize);
  const formats = expected.formats ?? ['raw', 'rbd-diff'];
  check('files', header.files, Object.fromEntries(formats.map((f) => [f, FILE_NAMES[f]])));
}

/**
 * Reads the changed data of `device` into `dir` (created if needed): manifest plus data files.
 *
 * Resumable: the directory keeps a journal (`journal.ndjson`) of the chunks whose bytes are
 * synced to disk, recorded in batches after an fsync of the data files. Run it again with the
 * same directory after a crash, kill or error and it checks that this is the same delta (device
 * identity and geometry, or both backup OCIDs when `source` names them — then any delta volume
 * of the two backups will do — plus change block size and formats; else
 * {@link ExportMismatchError}), keeps what was synced and reads the rest. The result — manifest,
 * delta.img, delta.rbd-diff — is byte-identical to an uninterrupted export (with the same
 * `createdAt` and read chunk size). The manifest stays `complete: false` until every byte is
 * synced; the journal is removed once it is complete. A complete export in `dir` is returned as
 * it is after checking identity and the device's changed extents. `restart: true` starts over.
 */
export async function exportChanged(
  device: ScsiDevice,
  dir: string,
  options: ExportOptions = {},
): Promise<ExportManifest> {
  const {
    formats = ['raw', 'rbd-diff'],
    source,
    restart,
    createdAt,
    journalEveryBytes = 32 << 20,
    journalEveryMs = 1000,
    onResume,
    onProgress,
    ...readOptions
  } = options;
  await ensureDirectory(dir);
  const signal = options.signal;
  const { blockSize, blocks } = await device.capacity({ signal });
  const capacityBytes = blocks * blockSize;
  const inquiry = device.inquiry;
  const serialNumber = (await device.info().catch(() => undefined))?.serialNumber?.trim();
  const changeBlockSize = options.changeBlockSize ?? blockSize;
  const current: Omit<ExportManifest, 'extents' | 'changedBytes' | 'complete'> = {
    format: 'lba-status-export',
    version: 1,
    createdAt: new Date(createdAt ?? Date.now()).toISOString(),
    device: {
      path: device.requestedPath,
      vendor: inquiry.vendor,
      product: inquiry.product,
      ...(serialNumber ? { serialNumber } : {}),
    },
    blockSize,
    capacityBytes,
    changeBlockSize,
    ...(source ? { source } : {}),
    files: Object.fromEntries(formats.map((f) => [f, FILE_NAMES[f]])),
  };
  const journalPath = join(dir, JOURNAL);

  let state: JournalState | undefined;
  if (restart) {
    await rm(journalPath, { force: true });
  } else {
    state = await loadJournal(dir);
    const existing = await readManifestIfAny(dir);
    if (existing?.complete) {
      // Done before (perhaps killed before the journal was removed): the same delta is kept.
      compareIdentity(dir, headerOf(existing), current);
      const scanned: Array<[number, number]> = [];
      for await (const e of changedExtents(device, {
        changeBlockSize,
        ...pickScanOptions(readOptions),
      }))
        scanned.push([e.offset, e.length]);
      const listed = mergeChunks(existing.extents);
      if (JSON.stringify(scanned) !== JSON.stringify(listed))
        throw new ExportMismatchError(
          'extents',
          `${listed.length} extent(s)`,
          `${scanned.length} extent(s) that differ`,
          dir,
        );
      await rm(journalPath, { force: true });
      return existing;
    }
    if (state) compareIdentity(dir, state.start.manifest, current);
    else if (existing) compareIdentity(dir, headerOf(existing), current);
  }

  // What to keep: a prefix of the synced chunks that ends where a scan can start again and
  // split the rest exactly as an uninterrupted export would (a change block boundary).
  const kept: Array<[number, number, string]> = state?.extents ? [...state.synced] : [];
  while (kept.length > 0) {
    const [offset, length] = kept[kept.length - 1]!;
    const end = offset + length;
    if (end % changeBlockSize === 0 || end === capacityBytes) break;
    kept.pop();
  }
  const header = state?.extents ? state.start.manifest : current;
  if (createdAt !== undefined) header.createdAt = current.createdAt;
  const manifest: ExportManifest = {
    ...header,
    complete: false,
    extents: kept.map(([offset, length, sha256]) => ({ offset, length, sha256 })),
    changedBytes: kept.reduce((sum, [, length]) => sum + length, 0),
  };
  const resumeFrom = kept.length > 0 ? kept[kept.length - 1]![0] + kept[kept.length - 1]![1] : 0;
  const resumed = kept.length > 0;
  const rbdOffset = RBD_PREFIX + kept.reduce((sum, [, l]) => sum + RBD_RECORD_HEADER + l, 0);
  // Resuming: the rest of the scan must match the first attempt's extents (same delta).
  const originalExtents = resumed ? state?.extents : undefined;

  await writeManifest(dir, manifest);
  let journal: Journal | undefined;
  const files: ExportFile[] = [];
  const pending: Array<[number, number, string]> = [];
  let pendingBytes = 0;
  let lastFlush = performance.now();
  let extentsRecord: Array<[number, number]> | undefined;
  const flush = async (): Promise<void> => {
    if (pending.length === 0 && !extentsRecord) return;
    for (const file of files) await file.sync();
    const records: unknown[] = [];
    if (extentsRecord) records.push({ type: 'extents', extents: extentsRecord });
    if (pending.length > 0) records.push({ type: 'synced', chunks: pending.splice(0) });
    await journal!.append(records);
    extentsRecord = undefined;
    pendingBytes = 0;
    lastFlush = performance.now();
  };
  try {
    if (resumed) {
      journal = await Journal.reopen(journalPath);
      onResume?.({
        chunks: kept.length,
        bytes: manifest.changedBytes,
        totalBytes: (originalExtents ?? []).reduce((sum, [, l]) => sum + l, 0),
      });
    } else {
      journal = await Journal.create(journalPath, { type: 'start', version: 1, manifest: header });
    }
    for (const format of formats) {
      files.push(
        await openExportFile(
          format,
          join(dir, FILE_NAMES[format]),
          capacityBytes,
          resumed ? { rbdOffset } : undefined,
        ),
      );
    }
    let mismatch: ExportMismatchError | undefined;
    const doneBefore = manifest.changedBytes;
    let totalBytes = 0;
    // Each chunk is written before the next is asked for, so its buffer can be recycled.
    // Synced up to the volume's end (killed just before finishing): nothing is left to read.
    const chunks =
      resumeFrom >= capacityBytes
        ? nothing()
        : readChanged(device, {
            ...readOptions,
            ...(resumeFrom > 0 ? { startLba: resumeFrom / blockSize } : {}),
            checksum: 'sha256',
            reuseBuffers: true,
            onExtents: (extents) => {
              const found = extents.map((e): [number, number] => [e.offset, e.length]);
              if (originalExtents) {
                const want = extentsFrom(originalExtents, resumeFrom);
                if (JSON.stringify(want) !== JSON.stringify(found))
                  mismatch = new ExportMismatchError(
                    'extents',
                    `${want.length} changed extent(s) from byte ${resumeFrom}`,
                    `${found.length} that differ`,
                    dir,
                  );
                totalBytes = originalExtents.reduce((sum, [, l]) => sum + l, 0);
              } else {
                extentsRecord = found;
                totalBytes = found.reduce((sum, [, l]) => sum + l, 0);
              }
            },
            ...(onProgress
              ? {
                  onProgress: (p: ReadProgress) => {
                    const bytesRead = doneBefore + p.bytesRead;
                    onProgress({
                      ...p,
                      bytesRead,
                      totalBytes,
                      etaMs:
                        p.bytesPerSecond > 0
                          ? ((totalBytes - bytesRead) / p.bytesPerSecond) * 1000
                          : undefined,
                    });
                  },
                }
              : {}),
          });
    for await (const chunk of chunks) {
      if (mismatch) throw mismatch;
      for (const file of files) await file.write(chunk);
      manifest.extents.push({ offset: chunk.offset, length: chunk.length, sha256: chunk.sha256! });
      manifest.changedBytes += chunk.length;
      pending.push([chunk.offset, chunk.length, chunk.sha256!]);
      pendingBytes += chunk.length;
      if (pendingBytes >= journalEveryBytes || performance.now() - lastFlush >= journalEveryMs)
        await flush();
    }
    if (mismatch) throw mismatch;
    while (files.length > 0) {
      await files[0]!.finish();
      files.shift();
    }
    manifest.complete = true;
    await writeManifest(dir, manifest);
    await journal.close();
    journal = undefined;
    await rm(journalPath, { force: true });
    return manifest;
  } catch (error) {
    if (!(error instanceof ExportMismatchError)) await flush().catch(() => {});
    await Promise.allSettled(files.map((f) => f.close()));
    await journal?.close().catch(() => {});
    if (!(error instanceof ExportMismatchError)) await writeManifest(dir, manifest).catch(() => {}); // complete: false, with what was read
    throw error;
  }
}

async function* nothing(): AsyncGenerator<ChangedChunk> {}

/** The scan options among an export's read options. */
function pickScanOptions(o: Omit<ExportOptions, 'formats' | 'source'>): ScanOptions {
  const out: ScanOptions = {};
  for (const key of [
    'reportType',
    'cdb',
    'windowBlocks',
    'allocationLength',
    'signal',
    'timeoutMs',
  ] as const) {
    if (o[key] !== undefined) (out as Record<string, unknown>)[key] = o[key];
  }
  return out;
}

/** The export is not usable (incomplete, damaged or inconsistent). */
export class ExportError extends LbaStatusError {
  override name = 'ExportError';
  constructor(
    readonly code: ExportErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** Verification found a difference. */
export class VerifyMismatchError extends LbaStatusError {
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
