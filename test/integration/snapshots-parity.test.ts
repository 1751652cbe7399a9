// The Snapshots service side by side with a real containerd 1.6: the same raw gRPC calls against each (on
// both snapshotters), and the codes and messages a client gets compared, with what is left behind.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Leases } from '../../src/api/gen/containerd/services/leases/v1/leases_pb.ts';
import { Namespaces } from '../../src/api/gen/containerd/services/namespaces/v1/namespace_pb.ts';
import { Snapshots } from '../../src/api/gen/containerd/services/snapshots/v1/snapshots_pb.ts';
import { callServerStream, callUnary, metadataWith } from '../../src/api/grpc/client.ts';
import { answer, type SideBySide, startSideBySide } from '../helpers/side-by-side.ts';

describe('snapshots side by side with containerd 1.6', () => {
  let both: SideBySide;

  before(async () => {
    both = await startSideBySide('snapshots');
  });
  after(async () => {
    await both?.stop();
  });

  for (const snapshotter of ['native', 'overlayfs']) {
    test(`${snapshotter}: an empty key or name is refused as containerd's database refuses it`, async () => {
      // containerd checks the target, the parent and the lease first and makes the namespace, then its
      // database refuses the empty key: Unknown, nothing stored. Stat, Remove and Mounts find nothing.
      const shown = await both.sameOnBoth(async (side, ns) => {
        const md = (lease?: string) => ({
          metadata: metadataWith({
            'containerd-namespace': ns,
            ...(lease ? { 'containerd-lease': lease } : {}),
          }),
        });
        const call = <T>(p: Promise<T>) => answer(p);
        const sn = snapshotter;
        const out = [
          await call(callUnary(side.client, Snapshots.method.prepare, { snapshotter: sn, key: '' }, md())),
          await call(callUnary(side.client, Snapshots.method.view, { snapshotter: sn, key: '' }, md())),
          await call(
            callUnary(
              side.client,
              Snapshots.method.prepare,
              { snapshotter: sn, key: '', parent: 'nope' },
              md(),
            ),
          ),
          await call(
            callUnary(side.client, Snapshots.method.prepare, { snapshotter: sn, key: '' }, md('none')),
          ),
        ];
        await callUnary(side.client, Leases.method.create, { id: 'held' }, md());
        out.push(
          await call(
            callUnary(side.client, Snapshots.method.prepare, { snapshotter: sn, key: '' }, md('held')),
          ),
          (await callUnary(side.client, Leases.method.listResources, { id: 'held' }, md())).resources.length,
        );
        // Held, or a collection another test's removal set off would take it on either side.
        await callUnary(side.client, Snapshots.method.prepare, { snapshotter: sn, key: 'work' }, md('held'));
        out.push(
          await call(
            callUnary(side.client, Snapshots.method.commit, { snapshotter: sn, key: 'work', name: '' }, md()),
          ),
          await call(
            callUnary(side.client, Snapshots.method.commit, { snapshotter: sn, key: 'nope', name: '' }, md()),
          ),
          await call(callUnary(side.client, Snapshots.method.stat, { snapshotter: sn, key: '' }, md())),
          await call(callUnary(side.client, Snapshots.method.remove, { snapshotter: sn, key: '' }, md())),
          await call(callUnary(side.client, Snapshots.method.mounts, { snapshotter: sn, key: '' }, md())),
        );
        const keys = [];
        for await (const r of callServerStream(
          side.client,
          Snapshots.method.list,
          { snapshotter: sn },
          md(),
        )) {
          keys.push(...r.info.map((i) => i.name));
        }
        return out.concat([keys]);
      });
      const unknown = { code: 'UNKNOWN', details: 'bucket name required' };
      const missing = { code: 'NOT_FOUND', details: 'snapshot  does not exist: not found' };
      assert.deepEqual(shown, [
        unknown,
        unknown,
        { code: 'NOT_FOUND', details: 'parent snapshot nope does not exist: not found' },
        { code: 'NOT_FOUND', details: 'lease does not exist: not found' },
        { code: 'UNKNOWN', details: 'key required' },
        0,
        unknown,
        unknown,
        missing,
        missing,
        missing,
        ['work'],
      ]);
    });
  }

  test('a Prepare refused for its empty key leaves its namespace made, as in containerd', async () => {
    const shown = await both.sameOnBoth(async (side, ns) => {
      const md = { metadata: metadataWith({ 'containerd-namespace': ns }) };
      await answer(callUnary(side.client, Snapshots.method.prepare, { snapshotter: 'native', key: '' }, md));
      const names = (await callUnary(side.client, Namespaces.method.list, {}, md)).namespaces.map(
        (n) => n.name,
      );
      return [names.includes(ns)];
    });
    assert.deepEqual(shown, [true]);
  });
});
