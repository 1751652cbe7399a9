import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { digestOf } from '../oci/digest.ts';
import { parseManifest, serializeJson } from '../oci/manifest.ts';
import { formatReference } from '../oci/reference.ts';
import { BlobCache } from './blobs/cache.ts';
import { fixtureImage } from './compose/test-fixtures.ts';
import { FacadeService, type UpstreamRegistry } from './service.ts';
import type { ImageSpec } from './spec.ts';

/** A registry in memory that logs every request the facade makes of it. */
function fakeUpstream(names: string[]): { upstream: UpstreamRegistry; calls: string[] } {
  const calls: string[] = [];
  const images = new Map(
    names.map((name) => {
      const view = fixtureImage({ layers: [name] });
      const bytes = serializeJson(view.manifest);
      return [name, { bytes, config: serializeJson(view.config), digest: digestOf(bytes) }] as const;
    }),
  );
  const image = (path: string) => {
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
  return { upstream, calls };
}

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
  const spec: ImageSpec = {
    baseRef: 'reg.test/base:latest',
    ideRef: 'reg.test/ide:latest',
    supervisorRef: '',
    ideLayerRefs: [],
    contentLayers: [],
  };
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
