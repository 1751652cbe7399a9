import assert from 'node:assert/strict';
import { test } from 'node:test';
import { invalidArgument, notFound, unavailable } from '../../errors.ts';
import type { DaemonApi } from '../daemon-api.ts';
import { resolveSnapshotter } from './pull.ts';

const withLabels = (namespaceLabels: DaemonApi['namespaceLabels']) => ({ namespaceLabels }) as DaemonApi;

test("the snapshotter: the one asked for, else the namespace's default, else overlayfs for a new namespace", async () => {
  // The one asked for is checked with a Stat (a key that is not there is no error), not the namespace.
  const statted: string[] = [];
  const asked = {
    namespaceLabels: () => assert.fail('not asked'),
    statSnapshot: async (snapshotter: string) => {
      statted.push(snapshotter);
      return undefined;
    },
  } as unknown as DaemonApi;
  assert.equal(await resolveSnapshotter(asked, 'native'), 'native');
  assert.deepEqual(statted, ['native']);
  const unloaded = {
    statSnapshot: async () =>
      Promise.reject(invalidArgument('snapshotter not loaded: nope: invalid argument')),
  } as unknown as DaemonApi;
  await assert.rejects(resolveSnapshotter(unloaded, 'nope'), /snapshotter not loaded: nope/);
  const labelled = withLabels(async () => ({ 'containerd.io/defaults/snapshotter': 'native' }));
  assert.equal(await resolveSnapshotter(labelled, undefined), 'native');
  assert.equal(
    await resolveSnapshotter(
      withLabels(async () => ({})),
      undefined,
    ),
    'overlayfs',
  );
  const missing = withLabels(async () => Promise.reject(notFound('namespace x: not found')));
  assert.equal(await resolveSnapshotter(missing, undefined), 'overlayfs');
});

test('a daemon that cannot be asked for the namespace fails the command there, not one call later', async () => {
  const down = withLabels(async () =>
    Promise.reject(unavailable('daemon at /run/strata/strata.sock: deadline exceeded')),
  );
  await assert.rejects(resolveSnapshotter(down, undefined), /deadline exceeded/);
});
