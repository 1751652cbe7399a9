import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { errorKind } from '../errors.ts';
import type { Descriptor } from './descriptor.ts';
import { digestOf } from './digest.ts';
import { MediaType } from './media-types.ts';
import { handlers, selectPlatform, walk } from './walk.ts';

const d = (
  name: string,
  mediaType: string = MediaType.ociLayerGzip,
  extra: Partial<Descriptor> = {},
): Descriptor => ({
  mediaType,
  digest: digestOf(name),
  size: name.length,
  ...extra,
});

test('visits each digest once, children after parents, never more than `concurrency` at a time', async () => {
  const shared = d('shared');
  const graph = new Map<string, Descriptor[]>([
    [d('root').digest, [d('a'), d('b'), d('c')]],
    [d('a').digest, [shared, d('a1')]],
    [d('b').digest, [shared, d('b1')]],
    [d('c').digest, [shared]],
  ]);
  const visited: string[] = [];
  let running = 0;
  let peak = 0;
  await walk(
    [d('root')],
    async (desc) => {
      running++;
      peak = Math.max(peak, running);
      visited.push(desc.digest);
      await delay(5);
      running--;
      return graph.get(desc.digest) ?? [];
    },
    { concurrency: 2 },
  );
  assert.equal(visited.length, 7);
  assert.equal(new Set(visited).size, 7);
  assert.equal(visited[0], d('root').digest);
  assert.equal(peak, 2);
});

test('the first failure stops the walk after the running handlers settle', async () => {
  let settled = 0;
  let started = 0;
  const children = Array.from({ length: 10 }, (_, i) => d(`child-${i}`));
  const err = new Error('boom');
  await assert.rejects(
    walk(
      [d('root')],
      async (desc, ctx) => {
        if (desc.digest === d('root').digest) return children;
        started++;
        if (desc.digest === children[1]!.digest) throw err;
        try {
          await delay(50, undefined, { signal: ctx.signal });
        } catch {
          // aborted by the failure
        }
        settled++;
        return [];
      },
      { concurrency: 3 },
    ),
    (e) => e === err,
  );
  assert.equal(settled, started - 1);
  assert.ok(started <= 4, `started ${started}`);
});

test('a caller abort ends the walk with Aborted', async () => {
  const ac = new AbortController();
  const p = walk(
    [d('root')],
    async (_desc, ctx) => {
      ac.abort();
      await delay(1000, undefined, { signal: ctx.signal }).catch(() => {});
      return [d('never')];
    },
    { signal: ac.signal },
  );
  await assert.rejects(p, (e) => errorKind(e) === 'Aborted');
});

test('handlers compose: children of each, in order', async () => {
  const h = handlers(
    async () => [d('x')],
    async () => [d('y')],
  );
  const ac = new AbortController();
  assert.deepEqual(await h(d('root'), { signal: ac.signal }), [d('x'), d('y')]);
});

test('platform selection follows one child, as containerd: the best platform, else the first without one', () => {
  const amd = d('amd', MediaType.ociManifest, { platform: { os: 'linux', architecture: 'amd64' } });
  const arm = d('arm', MediaType.ociManifest, { platform: { os: 'linux', architecture: 'arm64' } });
  const att = d('att', MediaType.ociManifest, { platform: { os: 'unknown', architecture: 'unknown' } });
  const nested = d('nested', MediaType.ociIndex);
  const nestedArm = d('nested-arm', MediaType.ociIndex, { platform: { os: 'linux', architecture: 'arm64' } });
  const bare = d('bare', MediaType.ociManifest);
  const arm64 = { os: 'linux', architecture: 'arm64' };
  const amd64 = { os: 'linux', architecture: 'amd64' };
  assert.deepEqual(selectPlatform([amd, arm, att, nested], arm64), [arm]);
  // A child without a platform comes after every match, whatever its place in the index.
  assert.deepEqual(selectPlatform([nested, amd], amd64), [amd]);
  assert.deepEqual(selectPlatform([bare, nested], amd64), [bare]);
  // An index that names a platform is filtered by it like a manifest.
  assert.deepEqual(selectPlatform([nestedArm, arm, nested], amd64), [nested]);
  assert.deepEqual(selectPlatform([nestedArm, arm], amd64), []);
  assert.deepEqual(selectPlatform([amd, arm], undefined), [amd, arm]);
  assert.deepEqual(selectPlatform([amd], { os: 'linux', architecture: 's390x' }), []);
});
