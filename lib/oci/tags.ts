/** Freeform tags marking the resources lba-status creates, so `sweep()` can find them. */
export const TAG_MARK = 'lba-status';
export const TAG_MARK_VALUE = 'delta';
export const TAG_JOB = 'lba-status-job';
export const TAG_CREATED = 'lba-status-created';
export const TAG_HOST = 'lba-status-host';
export const TAG_INSTANCE = 'lba-status-instance';
/**
 * How the volume was attached: `iscsiadm` (a kernel session, which sweep logs out of) or
 * `userspace` (a session inside the lba-status process, gone with it: sweep has nothing to log
 * out of). Volumes created before this tag existed were attached with iscsiadm.
 */
export const TAG_ATTACH = 'lba-status-attach';

/** True when the freeform tags say the resource is one of our delta volumes. */
export function isOurs(tags: Record<string, string> | undefined | null): boolean {
  return tags?.[TAG_MARK] === TAG_MARK_VALUE;
}
