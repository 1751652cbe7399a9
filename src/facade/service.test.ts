import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { notFound, unavailable } from '../errors.ts';
import { type Digest, digestOf } from '../oci/digest.ts';
import { parseManifest, serializeJson } from '../oci/manifest.ts';
import { formatReference } from '../oci/reference.ts';
import { BlobCache } from './blobs/cache.ts';
import { fixtureImage } from './compose/test-fixtures.ts';
import { FacadeService, type UpstreamRegistry } from './service.ts';
import type { ImageSpec } from './spec.ts';

/** A registry in memory that logs every request the facade makes of it. */
function fakeUpstream(names: string[]): {
  upstream: UpstreamRegistry;
  calls: string[];
  /** Set: every manifest request fails with it (the registry down); the name's image can be replaced. */
  fault: { err?: Error };
  images: Map<string, { bytes: Uint8Array; config: Uint8Array; digest: Digest }>;
} {
  const calls: string[] = [];
  const fault: { err?: Error } = {};
  const images = new Map(
    names.map((name) => {
      const view = fixtureImage({ layers: [name] });
      const bytes = serializeJson(view.manifest);
      return [name, { bytes, config: serializeJson(view.config), digest: digestOf(bytes) }] as const;
    }),
  );
  const image = (path: string) => {
    if (fault.err) throw fault.err;
    const i = images.get(path);
    if (!i) throw new Error(`no image ${path}`);
    return i;
  };
  const mediaType = 'application/vnd.oci.image.manifest.v1+json';
  const upstream: UpstreamRegistry = {
    resolve: async (ref) => {
      calls.push(`HEAD ${formatReference(ref)}`);
      const i = image(ref.path);
      return { mediaType, digest: i.digest, size: i.bytes.byteLength };
    },
    fetchManifest: async (ref, o) => {
      calls.push(`GET ${o?.descriptor ? `${ref.path}@digest` : formatReference(ref)}`);
      const i = image(ref.path);
      return { bytes: i.bytes, mediaType, digest: i.digest, parsed: parseManifest(i.bytes) };
    },
    blob: (repo, descriptor) => ({
      descriptor,
      open: async () => {
        calls.push(`GET ${repo.path} config`);
        return Readable.from([Buffer.from(image(repo.path).config)]);
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

test('a cold composition GETs each tag once (no HEAD first); an expired tag whose manifest is cached is re-checked with a HEAD', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'facade-service-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const { upstream, calls } = fakeUpstream(['base', 'ide']);
  const service = new FacadeService({
    providers: new Map(),
    upstream,
    cache: await BlobCache.open({ dir, maxBytes: 1024 }),
    sources: [],
    platform: { os: 'linux', architecture: 'amd64' },
    tagTtlMs: 1,
  });
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
  const dir = await mkdtemp(join(tmpdir(), 'facade-service-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const { upstream, calls, fault, images } = fakeUpstream(['base', 'ide']);
  const stale: string[] = [];
  const service = (o: { staleMs?: number } = {}) =>
    new FacadeService({
      providers: new Map(),
      upstream,
      cache,
      sources: [],
      platform: { os: 'linux', architecture: 'amd64' },
      tagTtlMs: 1,
      ...(o.staleMs === undefined ? {} : { tagStaleIfErrorMs: o.staleMs }),
      staleRecheckMs: 50,
      observer: { staleTag: (ref, digest, err) => stale.push(`${ref} ${digest} ${(err as Error).message}`) },
    });
  const cache = await BlobCache.open({ dir, maxBytes: 1024 });
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
  await sleep(60);
  assert.notEqual((await facade.composeSpec(spec)).manifestDigest, first.manifestDigest);
  assert.equal(stale.length, 4);

  // A tag the registry says is gone, or credentials it refuses, are answers, not an outage.
  await sleep(5);
  fault.err = notFound('manifest unknown');
  await assert.rejects(facade.composeSpec(spec), /manifest unknown/);

  // A last resolution older than the bound, or one whose manifest is no longer in memory, is not used.
  fault.err = undefined;
  const strict = service({ staleMs: 1 });
  await strict.composeSpec(spec);
  fault.err = unavailable('connection refused');
  await sleep(5);
  await assert.rejects(strict.composeSpec(spec), /connection refused/);
  await assert.rejects(service().composeSpec(spec), /connection refused/);
});
