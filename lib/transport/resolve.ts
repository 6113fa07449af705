/**
 * Turns what the user passed (/dev/sdX, /dev/sgN, a /dev/disk/by-path/… or /dev/oracleoci/…
 * symlink) into the node to send SG_IO through. A block device is mapped to its sg node through
 * sysfs when one exists: a 32-byte CDB through /dev/sdX needs CAP_SYS_RAWIO, /dev/sgN opened
 * read-write does not.
 */
import { constants } from 'node:fs';
import { readdir, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DeviceSystemError, LbaStatusError } from '../errors.js';

/** Linux major number of the sg driver's character devices. */
export const SG_MAJOR = 21;

/** The nodes that belong to one SCSI logical unit. */
export interface ResolvedDevice {
  /** The path the caller gave. */
  requested: string;
  /** The node SG_IO goes through. */
  path: string;
  /** The sg node (/dev/sgN), when known. */
  sgPath: string | undefined;
  /** The block node (/dev/sdX), when known. */
  blockPath: string | undefined;
}

export interface ResolveOptions {
  /** Use the sg node of a block device when it has one (default true). */
  preferSg?: boolean;
  /** Where sysfs is mounted (tests). */
  sysfsRoot?: string;
  /** Where device nodes live (tests). */
  devRoot?: string;
}

/** Error for a block device that is a partition: LBAs would not be the disk's. */
export class NotWholeDiskError extends LbaStatusError {
  override name = 'NotWholeDiskError';
  readonly code = 'ERR_LBA_STATUS_NOT_WHOLE_DISK';
  readonly path: string;
  constructor(path: string) {
    super(
      `'${path}' is a partition; GET LBA STATUS addresses the whole disk: pass the disk (e.g. /dev/sdb) or its sg node`,
    );
    this.path = path;
  }
}

export function splitDev(rdev: number): { major: number; minor: number } {
  // glibc's gnu_dev_major/minor encoding of a 64-bit dev_t.
  const high = Math.floor(rdev / 2 ** 32);
  const low = rdev >>> 0;
  const major = ((low >>> 8) & 0xfff) | (high & ~0xfff);
  const minor = (low & 0xff) | ((low >>> 12) & 0xfff00);
  return { major, minor };
}

async function firstEntry(dir: string): Promise<string | undefined> {
  try {
    return (await readdir(dir)).sort()[0];
  } catch {
    return undefined;
  }
}

/**
 * Resolves `path`. Missing paths reject with ENOENT here; what is not a SCSI device is found out
 * by the first SG_IO (ENOTTY), so that the error is the kernel's own.
 */
export async function resolveDevice(
  path: string,
  options: ResolveOptions = {},
): Promise<ResolvedDevice> {
  const sysfs = options.sysfsRoot ?? '/sys';
  const dev = options.devRoot ?? '/dev';
  let target: string;
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    target = await realpath(path);
    info = await stat(target);
  } catch (error) {
    throw DeviceSystemError.fromNode(error as NodeJS.ErrnoException, path);
  }
  const { major, minor } = splitDev(info.rdev);
  if ((info.mode & constants.S_IFMT) === constants.S_IFCHR && major === SG_MAJOR) {
    const blockName = await firstEntry(
      join(sysfs, 'class/scsi_generic', `sg${minor}`, 'device/block'),
    );
    return {
      requested: path,
      path: target,
      sgPath: target,
      blockPath: blockName ? join(dev, blockName) : undefined,
    };
  }
  if (info.isBlockDevice()) {
    const sysDir = join(sysfs, 'dev/block', `${major}:${minor}`);
    try {
      await stat(join(sysDir, 'partition'));
      throw new NotWholeDiskError(path);
    } catch (error) {
      if (error instanceof NotWholeDiskError) throw error;
    }
    const sgName = await firstEntry(join(sysDir, 'device/scsi_generic'));
    const sgPath = sgName ? join(dev, sgName) : undefined;
    const useSg = sgPath !== undefined && options.preferSg !== false;
    return { requested: path, path: useSg ? sgPath : target, sgPath, blockPath: target };
  }
  return { requested: path, path: target, sgPath: undefined, blockPath: undefined };
}
