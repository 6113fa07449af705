// sweep({ instanceId }): a fleet worker sweeps only its own instance's leftovers at start — the
// volumes that other instances' running jobs hold are left alone, whatever their age.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sweep } from '../../lib/oci/sweep.js';
import { type Harness, makeHarness } from '../oci/harness.js';

const tags = (instanceId: string, job: string) => ({
  'lba-status': 'delta',
  'lba-status-job': job,
  'lba-status-created': new Date(Date.now() - 60_000).toISOString(),
  'lba-status-host': 'h',
  'lba-status-instance': instanceId,
  'lba-status-attach': 'userspace',
});

describe('sweep of one instance', () => {
  let h: Harness;
  beforeEach(async () => {
    h = await makeHarness({ delays: { provisionMs: 0, attachMs: 0, detachMs: 0, terminateMs: 0 } });
  });
  afterEach(async () => {
    await h.close();
  });

  it('removes the volumes (and attachments) tagged with this instance, not the others', async () => {
    const me = h.api.instance.id;
    const other = h.api.addInstance().id;
    const mine = await h.api.plantOrphan({ tags: tags(me, 'a'), attach: true, instanceId: me });
    const mineLoose = await h.api.plantOrphan({ tags: tags(me, 'b') });
    const theirs = await h.api.plantOrphan({
      tags: tags(other, 'c'),
      attach: true,
      instanceId: other,
    });
    const r = await sweep(h.provisioner, { olderThanMs: 0, instanceId: me });
    expect(r.errors).toEqual([]);
    expect(r.volumes.sort()).toEqual([mine.volumeId, mineLoose.volumeId].sort());
    expect(r.attachments).toEqual([mine.attachmentId]);
    const left = h.api.leftovers().join('\n');
    expect(left).toContain(theirs.volumeId);
    expect(left).toContain(theirs.attachmentId);
    expect(left).not.toContain(mine.volumeId);
    // Without the filter, everything of ours goes.
    const all = await sweep(h.provisioner, { olderThanMs: 0 });
    expect(all.volumes).toEqual([theirs.volumeId]);
  });
});
