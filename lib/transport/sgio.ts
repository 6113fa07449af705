/**
 * The kernel transport: SG_IO through the native addon, on a /dev/sgN or /dev/sdX node (see
 * resolve.ts for which node is used). Commands run on the addon's own threads, or on the sg
 * driver's asynchronous interface (`engine: 'sg-async'`).
 */
import { constants } from 'node:fs';
import { type FileHandle, open, readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { debuglog } from 'node:util';
import {
  type CommandEngine,
  getBinding,
  type NativeBinding,
  type NativeCommandQueue,
} from '../binding.js';
import { DeviceSystemError } from '../errors.js';
import { InvalidArgValueError } from '../validate.js';
import {
  type ResolvedDevice,
  type ResolveOptions,
  resolveDevice,
  SG_MAJOR,
  splitDev,
} from './resolve.js';
import type { CommandOutcome, ScsiTransport, TransportCommand } from './types.js';

const debug = debuglog('lba-status');

/** Page alignment satisfies O_DIRECT on every block size up to 4096 and every kernel path. */
const DIRECT_IO_ALIGNMENT = 4096;

/** Options of {@link openSgioTransport} (validated by the caller). */
export interface SgioTransportOptions extends ResolveOptions {
  queueDepth: number;
  engine: CommandEngine;
}

/** An open device node with its native command queue. */
export class SgioTransport implements ScsiTransport {
  readonly kind = 'sgio';
  readonly address: string;
  readonly requestedPath: string;
  readonly sgPath: string | undefined;
  readonly blockPath: string | undefined;
  readonly #handle: FileHandle;
  readonly #queue: NativeCommandQueue;
  readonly #binding: NativeBinding;
  #closed: Promise<void> | undefined;

  constructor(
    resolved: ResolvedDevice,
    handle: FileHandle,
    queue: NativeCommandQueue,
    binding: NativeBinding,
  ) {
    this.address = resolved.path;
    this.requestedPath = resolved.requested;
    this.sgPath = resolved.sgPath;
    this.blockPath = resolved.blockPath;
    this.#handle = handle;
    this.#queue = queue;
    this.#binding = binding;
  }

  get queueDepth(): number {
    return this.#queue.depth;
  }

  /** How commands reach the kernel. */
  get engine(): CommandEngine {
    return this.#queue.engine;
  }

  execute(command: TransportCommand): Promise<CommandOutcome> {
    return this.#queue.execute(
      this.#handle.fd,
      command.cdb,
      command.direction,
      command.data,
      command.sense,
      command.timeoutMs,
    );
  }

  allocate(length: number, alignment = DIRECT_IO_ALIGNMENT): Uint8Array {
    return new Uint8Array(this.#binding.allocateAligned(length, alignment));
  }

  /**
   * The largest transfer the kernel queue takes in one SG_IO command: the block node's
   * `max_sectors_kb`; without a block node it is unknown, so stay modest (512 KiB).
   */
  async maxTransferBytes(): Promise<number> {
    if (!this.blockPath) return 512 * 1024;
    const path = join('/sys/block', basename(this.blockPath), 'queue/max_sectors_kb');
    try {
      const kb = Number.parseInt((await readFile(path, 'utf8')).trim(), 10);
      return Number.isFinite(kb) && kb > 0 ? kb * 1024 : 512 * 1024;
    } catch {
      return 512 * 1024;
    }
  }

  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#queue.close();
      await this.#handle.close();
    })();
    return this.#closed;
  }
}

/**
 * Resolves and opens a device node, and starts its command queue. Nothing is left open when
 * it fails.
 */
export async function openSgioTransport(
  path: string,
  options: SgioTransportOptions,
): Promise<SgioTransport> {
  const resolved = await resolveDevice(path, options);
  const binding = getBinding();
  const handle = await openNode(resolved);
  try {
    const queue = await createQueue(binding, handle, resolved.path, options);
    return new SgioTransport(resolved, handle, queue, binding);
  } catch (error) {
    await handle.close();
    throw error;
  }
}

async function createQueue(
  binding: NativeBinding,
  handle: FileHandle,
  path: string,
  { engine, queueDepth }: SgioTransportOptions,
): Promise<NativeCommandQueue> {
  if (engine === 'threads') return binding.createCommandQueue(queueDepth);
  const stats = await handle.stat();
  if (!stats.isCharacterDevice() || splitDev(stats.rdev).major !== SG_MAJOR) {
    throw new InvalidArgValueError(
      'options.engine',
      `needs an sg node (/dev/sgN), and ${path} is not one; use 'threads'`,
      engine,
    );
  }
  return binding.createSgAsyncQueue(handle.fd, queueDepth);
}

async function openNode(resolved: ResolvedDevice): Promise<FileHandle> {
  const flags = constants.O_RDWR | constants.O_NONBLOCK;
  try {
    return await open(resolved.path, flags);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // A write-protected disk refuses O_RDWR on its block node; SG_IO works on a read-only open.
    if (code === 'EROFS' && resolved.path === resolved.blockPath) {
      try {
        return await open(resolved.path, constants.O_RDONLY | constants.O_NONBLOCK);
      } catch (retryError) {
        throw DeviceSystemError.fromNode(retryError as NodeJS.ErrnoException, resolved.path);
      }
    }
    // The sg node may be missing or unwritable where the block node works (e.g. root without udev).
    if (
      resolved.path === resolved.sgPath &&
      resolved.blockPath &&
      (code === 'ENOENT' || code === 'EACCES')
    ) {
      debug('cannot open %s (%s), using %s', resolved.sgPath, code, resolved.blockPath);
      resolved.path = resolved.blockPath;
      return openNode(resolved);
    }
    throw DeviceSystemError.fromNode(error as NodeJS.ErrnoException, resolved.path);
  }
}
