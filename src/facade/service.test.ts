import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { type TestContext, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitFor, within } from '../../test/helpers/process.ts';
import { errorKind, notFound, resourceExhausted, unavailable } from '../errors.ts';
import type { Descriptor } from '../oci/descriptor.ts';
import { type Digest, digestOf } from '../oci/digest.ts';
import { parseManifest, serializeJson } from '../oci/manifest.ts';
import { formatReference } from '../oci/reference.ts';
import { registryError } from '../registry/registry-errors.ts';
import { BlobCache } from './blobs/cache.ts';
import { fixtureImage } from './compose/test-fixtures.ts';
import type { ResolvedTag } from './providers/tag-file.ts';
import { FacadeService, type FacadeServiceOptions, type UpstreamRegistry } from './service.ts';
import type { ImageSpec } from './spec.ts';

/** A registry in memory that logs every request the facade makes of it. */
function fakeUpstream(names: string[]): {
  upstream: UpstreamRegistry;
  calls: string[];
  /**
   * `err`: every request fails with it (the registry down); `silent`: every request waits until its
   * signal fires (a registry that accepts and never answers). A name's image can be replaced.
   */
  fault: { err?: Error; silent?: boolean };
  images: Map<string, { bytes: Uint8Array; config: Uint8Array; digest: Digest }>;
} {
  const calls: string[] = [];
  const fault: { err?: Error; silent?: boolean } = {};
  const images = new Map(
    names.map((name) => {
      const view = fixtureImage({ layers: [name] });
      const bytes = serializeJson(view.manifest);
      return [name, { bytes, config: serializeJson(view.config), digest: digestOf(bytes) }] as const;
    }),
  );
  const image = async (path: string, signal: AbortSignal | undefined) => {
    if (fault.silent) {
      await new Promise((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason)));
    }
    if (fault.err) throw fault.err;
    const i = images.get(path);
    if (!i) throw new Error(`no image ${path}`);
    return i;
  };
  const mediaType = 'application/vnd.oci.image.manifest.v1+json';
  const upstream: UpstreamRegistry = {
    resolve: async (ref, o) => {
      calls.push(`HEAD ${formatReference(ref)}`);
      const i = await image(ref.path, o?.signal);
      return { mediaType, digest: i.digest, size: i.bytes.byteLength };
    },
    fetchManifest: async (ref, o) => {
      calls.push(`GET ${o?.descriptor ? `${ref.path}@digest` : formatReference(ref)}`);
      const i = await image(ref.path, o?.signal);
      return { bytes: i.bytes, mediaType, digest: i.digest, parsed: parseManifest(i.bytes) };
    },
    blob: (repo, descriptor) => ({
      descriptor,
      open: async (o) => {
        calls.push(`GET ${repo.path} config`);
        return Readable.from([Buffer.from((await image(repo.path, o?.signal)).config)]);
      },
    }),
  };
  return { upstream, calls, fault, images };
}

const spec: ImageSpec = {
  baseRef: 'reg.test/base:latest',
  ideRef: 'reg.test/ide:latest',
  supervisorRef: '',
  ideLayerRefs: [],
  contentLayers: [],
};

/** Services over `upstream` and one blob cache in a temp dir (removed after the test), with `options`. */
async function services(
  t: TestContext,
  upstream: UpstreamRegistry,
  options: Partial<FacadeServiceOptions>,
): Promise<((more?: Partial<FacadeServiceOptions>) => FacadeService) & { cache: BlobCache }> {
  const dir = await mkdtemp(join(tmpdir(), 'facade-service-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const cache = await BlobCache.open({ dir, maxBytes: 1024 * 1024 });
  const make = (more: Partial<FacadeServiceOptions> = {}) =>
    new FacadeService({
      providers: new Map(),
      upstream,
      cache,
      sources: [],
      platform: { os: 'linux', architecture: 'amd64' },
      ...options,
      ...more,
    });
  return Object.assign(make, { cache });
}

test('a cold composition GETs each tag once (no HEAD first); an expired tag whose manifest is cached is re-checked with a HEAD', async (t) => {
  const { upstream, calls } = fakeUpstream(['base', 'ide']);
  const service = (await services(t, upstream, { tagTtlMs: 1 }))();
  const first = await service.composeSpec(spec);
  assert.deepEqual(calls.sort(), [
    'GET base config',
    'GET ide config',
    'GET reg.test/base:latest',
    'GET reg.test/ide:latest',
  ]);
  calls.length = 0;
  await sleep(5);
  const again = await service.composeSpec(spec);
  assert.deepEqual(calls.sort(), ['HEAD reg.test/base:latest', 'HEAD reg.test/ide:latest']);
  assert.equal(again.manifestDigest, first.manifestDigest);
});

test('a tag whose registry cannot be reached keeps its last digest for a while, if that manifest is at hand', async (t) => {
  const { upstream, calls, fault, images } = fakeUpstream(['base', 'ide']);
  const stale: string[] = [];
  const service = await services(t, upstream, {
    tagTtlMs: 1,
    // Long enough that the next composition surely falls inside it, however loaded the machine.
    staleRecheckMs: 1000,
    observer: { staleTag: (ref, digest, err) => stale.push(`${ref} ${digest} ${(err as Error).message}`) },
  });
  const facade = service();
  const first = await facade.composeSpec(spec);
  const base = images.get('base')!.digest;

  // Down when the tags are due again: the same image, each use told, the registry asked once.
  fault.err = unavailable('connection refused');
  await sleep(5);
  calls.length = 0;
  assert.equal((await facade.composeSpec(spec)).manifestDigest, first.manifestDigest);
  assert.deepEqual(calls.sort(), ['HEAD reg.test/base:latest', 'HEAD reg.test/ide:latest']);
  assert.ok(stale.includes(`reg.test/base:latest ${base} connection refused`), stale.join('\n'));
  // Meanwhile it is not asked again on every composition...
  assert.equal((await facade.composeSpec(spec)).manifestDigest, first.manifestDigest);
  assert.equal(calls.length, 2);
  assert.equal(stale.length, 4);
  // ...but after the recheck interval; once it answers, a moved tag is seen.
  const moved = fixtureImage({ layers: ['base', 'moved'] });
  const movedBytes = serializeJson(moved.manifest);
  images.set('base', {
    bytes: movedBytes,
    config: serializeJson(moved.config),
    digest: digestOf(movedBytes),
  });
  fault.err = undefined;
  await sleep(1100);
  assert.notEqual((await facade.composeSpec(spec)).manifestDigest, first.manifestDigest);
  assert.equal(stale.length, 4);

  // A tag the registry says is gone, or credentials it refuses, are answers, not an outage.
  await sleep(5);
  fault.err = notFound('manifest unknown');
  await assert.rejects(facade.composeSpec(spec), /manifest unknown/);

  // A last resolution older than the bound, or one whose manifest is no longer in memory, is not used.
  fault.err = undefined;
  const strict = service({ tagStaleIfErrorMs: 1 });
  await strict.composeSpec(spec);
  fault.err = unavailable('connection refused');
  await sleep(5);
  await assert.rejects(strict.composeSpec(spec), /connection refused/);
  await assert.rejects(service().composeSpec(spec), /connection refused/);
});

test('a rate-limited registry lets the last digest stand in; a manifest over the size cap is an answer, not an outage', async (t) => {
  const { upstream, fault } = fakeUpstream(['base', 'ide']);
  const stale: string[] = [];
  const service = await services(t, upstream, {
    tagTtlMs: 1,
    staleRecheckMs: 1,
    observer: { staleTag: (ref) => stale.push(ref) },
  });
  const facade = service();
  const first = await facade.composeSpec(spec);

  // 429 after the client's retries: the registry will answer later, so the last digest stands in.
  fault.err = registryError(
    429,
    [{ code: 'TOOMANYREQUESTS', message: 'slow down' }],
    'resolve reg.test/base',
  );
  await sleep(5);
  assert.equal((await facade.composeSpec(spec)).manifestDigest, first.manifestDigest);
  assert.ok(stale.includes('reg.test/base:latest'), stale.join('\n'));

  // The tag now names a manifest bigger than the client takes: the same kind from the client, but no
  // wait changes it. The composition fails as one that cannot be made (400), nothing stands in.
  const seen = stale.length;
  fault.err = resourceExhausted(
    'fetch manifest reg.test/base:latest: manifest of 5000000 bytes exceeds 4194304',
  );
  await sleep(5);
  await assert.rejects(facade.composeSpec(spec), (err: Error) => {
    assert.equal(errorKind(err), 'FailedPrecondition');
    assert.match(err.message, /exceeds 4194304/);
    return true;
  });
  assert.equal(stale.length, seen);
});

test('a registry that never answers fails a composition within the bound; a tag resolved before stands in', async (t) => {
  const { upstream, fault } = fakeUpstream(['base', 'ide']);
  const service = await services(t, upstream, { tagTtlMs: 1, upstreamTimeoutMs: 100 });
  const resolved = service();
  const first = await resolved.composeSpec(spec);
  fault.silent = true;
  await sleep(5);
  const started = Date.now();
  assert.equal((await resolved.composeSpec(spec)).manifestDigest, first.manifestDigest);
  await assert.rejects(service().composeSpec(spec), (err: Error) => {
    assert.equal(errorKind(err), 'DeadlineExceeded');
    assert.match(err.message, /no answer from its registry within 0\.1 s/);
    return true;
  });
  assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
});

test('a restarted service composes what it composed before from the disk cache and the tags it was told of, the registry down', async (t) => {
  const { upstream, calls, fault, images } = fakeUpstream(['base', 'ide']);
  let told: ResolvedTag[] = [];
  const stale: string[] = [];
  const service = await services(t, upstream, {
    resolvedTags: { initial: [], changed: (entries) => (told = entries()) },
    observer: { staleTag: (ref) => stale.push(ref) },
  });
  const before = service();
  const first = await before.composeSpec(spec);
  assert.deepEqual(
    told.map((e) => e.ref),
    ['reg.test/base:latest', 'reg.test/ide:latest'],
  );
  // The manifests and configs reach the disk cache in the background.
  const onDisk = [...images.values()].flatMap((i) => [i.digest, digestOf(i.config)]);
  await waitFor(() => onDisk.every((d) => service.cache.has(d)), 10_000, {
    what: 'manifests and configs on disk',
  });

  // Restarted with what the file held: the registry is asked only for the tags (HEADs: their manifests
  // are on disk), the rest is on disk.
  fault.err = unavailable('connection refused');
  calls.length = 0;
  const after = service({ resolvedTags: { initial: told, changed: () => {} } });
  assert.equal((await after.composeSpec(spec)).manifestDigest, first.manifestDigest);
  assert.deepEqual(calls.sort(), ['HEAD reg.test/base:latest', 'HEAD reg.test/ide:latest']);
  assert.deepEqual(stale.sort(), ['reg.test/base:latest', 'reg.test/ide:latest']);

  // Told of nothing, a restarted service has no tag to stand in.
  await assert.rejects(service().composeSpec(spec), /connection refused/);
});

test('a service with a shared tier composes an image another replica fetched without asking its registry for manifests or configs', async (t) => {
  const { upstream, calls, images } = fakeUpstream(['base', 'ide']);
  const shared = new Map<string, Uint8Array>();
  const tags = new Map<string, Descriptor>();
  const tier = <V>(m: Map<string, V>) => ({
    get: async (k: string) => (m.has(k) ? { value: m.get(k)! } : undefined),
    set: async (k: string, v: V) => {
      m.set(k, v);
    },
  });
  const sharedTiers = {
    compositions: tier(new Map()),
    recent: { get: async () => undefined, push: async () => {} },
    tags: tier(tags),
    upstream: tier(shared),
  };
  const first = await (await services(t, upstream, { shared: sharedTiers }))().composeSpec(spec);
  const fetched = [...images.values()].flatMap((i) => [i.digest, digestOf(i.config)]);
  assert.deepEqual([...shared.keys()].sort(), [...fetched].sort());

  // Another replica, its own disk cache: the registry is asked for nothing (the tags are shared too).
  calls.length = 0;
  const other = (await services(t, upstream, { shared: sharedTiers }))();
  assert.equal((await other.composeSpec(spec)).manifestDigest, first.manifestDigest);
  assert.deepEqual(calls, []);

  // Once the shared resolutions are gone, a third replica re-checks the tags with HEADs, which Docker Hub
  // does not count as pulls, and takes the manifests and configs from the shared tier.
  tags.clear();
  calls.length = 0;
  const third = (await services(t, upstream, { shared: sharedTiers }))();
  assert.equal((await third.composeSpec(spec)).manifestDigest, first.manifestDigest);
  assert.deepEqual(calls.sort(), ['HEAD reg.test/base:latest', 'HEAD reg.test/ide:latest']);
});

test("compositions are held in memory up to a number of bytes: a spec's direct layers count", async (t) => {
  const { upstream } = fakeUpstream(['base', 'ide']);
  const asked: string[] = [];
  const direct = (fill: number): ImageSpec => ({
    ...spec,
    contentLayers: [{ kind: 'direct', content: new Uint8Array(1024 * 1024).fill(fill) }],
  });
  const specs = new Map([
    ['a', direct(1)],
    ['b', direct(2)],
    ['c', direct(3)],
  ]);
  const provider = {
    getSpec: async (id: string) => {
      asked.push(id);
      return specs.get(id)!;
    },
  };
  const make = await services(t, upstream, { providers: new Map([['remote', provider]]) });
  // Room for two of these compositions (a MiB of direct layer each), not for three.
  for (const [maxCompositionBytes, keptA] of [
    [2.5 * 2 ** 20, false],
    [4 * 2 ** 20, true],
  ] as const) {
    const service = make({ maxCompositionBytes });
    asked.length = 0;
    const first = await service.manifest({ provider: 'remote', id: 'a' }, 'latest');
    await service.manifest({ provider: 'remote', id: 'b' }, 'latest');
    await service.manifest({ provider: 'remote', id: 'c' }, 'latest');
    await sleep(1100); // past the joining of concurrent compositions
    // By digest: from memory while it is held; composed again (the spec asked for) once it was let go.
    const again = await service.manifest({ provider: 'remote', id: 'a' }, first.digest);
    assert.equal(again.digest, first.digest);
    assert.deepEqual(asked, keptA ? ['a', 'b', 'c'] : ['a', 'b', 'c', 'a']);
  }
});

test('the network blobs of a spec (what a prefetch fills) are those of the spec as it is now, not of a composition joined from before it changed', async (t) => {
  const { upstream } = fakeUpstream(['base', 'ide', 'other']);
  const specs = new Map([['ws', spec]]);
  let gate: Promise<void> | undefined;
  let reads = 0;
  const provider = {
    getSpec: async (id: string) => {
      const s = specs.get(id)!;
      reads++;
      await gate;
      return s;
    },
  };
  const remoteLayers = {
    name: 'upstream',
    find: (q: { descriptor: Descriptor }) => ({
      source: 'upstream',
      remote: true,
      blob: { descriptor: q.descriptor, open: async () => Readable.from([]) },
    }),
  };
  const service = (
    await services(t, upstream, { providers: new Map([['remote', provider]]), sources: [remoteLayers] })
  )();
  const name = { provider: 'remote', id: 'ws' };
  const layerOf = (image: string) =>
    fixtureImage({ layers: [image] }).manifest.layers.at(-1)?.digest as Digest;
  const planned = async () => (await service.networkBlobs(name)).blobs.map((b) => b.descriptor.digest);

  // A client's composition that read the spec before it changed is still running: not joined either.
  let open = () => {};
  gate = new Promise((resolve) => {
    open = resolve;
  });
  const readsBefore = reads;
  const client = service.manifest(name, 'latest');
  await waitFor(() => reads === readsBefore + 1, 10_000, {
    what: "the client's composition to read the spec",
  });
  specs.set('ws', { ...spec, ideRef: 'reg.test/other:latest' });
  gate = undefined;
  const edited = await within(service.networkBlobs(name), 10_000, 'the prefetch plan');
  assert.ok(
    edited.blobs.some((b) => b.descriptor.digest === layerOf('other')),
    'the edit made while a composition ran is composed',
  );
  // Nor does that older composition, ending last, stand for the name's latest afterwards.
  open();
  assert.notEqual((await client).digest, edited.manifestDigest);
  assert.equal((await service.manifest(name, 'latest')).digest, edited.manifestDigest);

  // Composed, then edited back right after: the prefetch of the new version plans that one.
  specs.set('ws', spec);
  const after = await planned();
  assert.ok(after.includes(layerOf('ide')), 'the edited spec is composed');
  assert.ok(!after.includes(layerOf('other')));
});
