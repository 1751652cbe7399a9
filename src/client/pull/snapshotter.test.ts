import assert from 'node:assert/strict';
import { test } from 'node:test';
import { notFound, unavailable } from '../../errors.ts';
import type { DaemonApi } from '../daemon-api.ts';
import { resolveSnapshotter } from './pull.ts';

const withLabels = (namespaceLabels: DaemonApi['namespaceLabels']) => ({ namespaceLabels }) as DaemonApi;

test("the snapshotter: the one asked for, else the namespace's default, else overlayfs for a new namespace", async () => {
  assert.equal(
    await resolveSnapshotter(
      withLabels(() => assert.fail('not asked')),
      'native',
    ),
    'native',
  );
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
