// The demo's delta volume, shared by scripts/demo.mjs (userspace iSCSI on the host) and
// scripts/demo-guest.mjs (the kernel initiator in a User-Mode Linux guest): the byte ranges that
// changed between the two "backups" of a 1 GiB volume with 64 KiB change blocks.
const MiB = 2 ** 20;
export const DEMO_VOLUME = {
  size: '1G',
  changeBlockSize: 65536,
  changes: [
    { offset: 1 * MiB, length: 65536 },
    { offset: 100 * MiB, length: MiB },
    { offset: 512 * MiB + 65536, length: 3 * 65536 },
    { offset: 1024 * MiB - 65536, length: 65536 },
  ],
};

/** "64 KiB at 1 MiB, …" */
export function describeChanges(changes) {
  return changes.map((c) => `${c.length / 1024} KiB at ${c.offset / MiB} MiB`).join(', ');
}
