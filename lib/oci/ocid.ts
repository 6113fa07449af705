/** OCID parsing: `ocid1.<resource type>.<realm>.[region][.future use].<unique id>`. */
import { OciDeltaError } from './errors.js';

export interface ParsedOcid {
  resourceType: string;
  realm: string;
  region: string;
  unique: string;
}

const PART = /^[a-z0-9-]*$/;

/** Parses an OCID; returns undefined when it is malformed. */
export function parseOcid(value: unknown): ParsedOcid | undefined {
  if (typeof value !== 'string' || value.length > 255) return undefined;
  const parts = value.split('.');
  if (parts.length < 5 || parts.length > 6 || parts[0] !== 'ocid1') return undefined;
  const [, resourceType, realm, region] = parts as [string, string, string, string];
  const unique = parts[parts.length - 1] as string;
  if (!/^[a-z][a-z0-9]*$/.test(resourceType) || !/^[a-z0-9]+$/.test(realm)) return undefined;
  if (!parts.every((p) => PART.test(p)) || !/^[a-z0-9]+$/.test(unique)) return undefined;
  return { resourceType, realm, region, unique };
}

/** The kind of volume a delta is built from, decided by the backup OCIDs' resource type. */
export type DeltaVolumeKind = 'block' | 'boot';

/** Validates a backup OCID and returns its kind, or throws ERR_OCI_BAD_OCID (OCI answers 400). */
export function backupKind(ocid: unknown, which: string): DeltaVolumeKind {
  const parsed = parseOcid(ocid);
  if (parsed?.resourceType === 'volumebackup') return 'block';
  if (parsed?.resourceType === 'bootvolumebackup') return 'boot';
  throw new OciDeltaError(
    'ERR_OCI_BAD_OCID',
    `${which} backup id ${JSON.stringify(ocid)} is not a volume backup OCID ` +
      '(expected ocid1.volumebackup.<realm>.<region>.<id> or ocid1.bootvolumebackup.…)',
    { httpStatus: 400 },
  );
}

/** Validates an OCID of the given resource type (e.g. `instance`, `compartment`). */
export function requireOcid(value: unknown, types: readonly string[], what: string): string {
  const parsed = parseOcid(value);
  if (!parsed || !types.includes(parsed.resourceType)) {
    throw new OciDeltaError(
      'ERR_OCI_BAD_OCID',
      `${what} ${JSON.stringify(value)} is not an OCID of type ${types.join(' or ')}`,
      { httpStatus: 400 },
    );
  }
  return value as string;
}
