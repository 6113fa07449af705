/** Freeform tags marking the resources lba-status creates, so `sweep()` can find them. */
export const TAG_MARK = 'lba-status';
export const TAG_MARK_VALUE = 'delta';
export const TAG_JOB = 'lba-status-job';
export const TAG_CREATED = 'lba-status-created';
export const TAG_HOST = 'lba-status-host';
export const TAG_INSTANCE = 'lba-status-instance';

/** True when the freeform tags say the resource is one of our delta volumes. */
export function isOurs(tags: Record<string, string> | undefined | null): boolean {
  return tags?.[TAG_MARK] === TAG_MARK_VALUE;
}
