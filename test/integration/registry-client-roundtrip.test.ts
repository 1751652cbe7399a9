// Round trips with an independent client: images pushed by skopeo are pulled by Strata into a content
// store (every blob re-hashed), and images copied by Strata (within and across registries) are read back
// by skopeo, whose digests must match.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ContentStore } from '../../src/content/store.ts';
import type { Descriptor } from '../../src/oci/descriptor.ts';
import { type Digest, digestOf } from '../../src/oci/digest.ts';
import { parseManifest } from '../../src/oci/manifest.ts';
import type { Reference } from '../../src/oci/reference.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { copyImage } from '../../src/registry/copy.ts';
import { DockerConfigCredentials } from '../../src/registry/docker-config.ts';
import { ingestRef, pullToStore } from '../../src/registry/pull-to-store.ts';
import { childrenOf } from '../../src/registry/walk.ts';
import {
  type PushedImage,
  type PushedIndex,
  pushMultiLayer,
  pushTwoPlatformIndex,
  skopeoCopy,
  skopeoRawManifest,
} from '../helpers/images.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { Cleanup, tempDir } from '../helpers/tmp.ts';

const USERS = { alice: 'wonder-land' };
const cleanup = new Cleanup();
let tokenReg: TestRegistry;
let plainReg: TestRegistry;
let client: RegistryClient;
let image: PushedImage;
let index: PushedIndex;

before(async () => {
  tokenReg = await startRegistry({ auth: { mode: 'token', users: USERS } });
  cleanup.add(() => tokenReg.stop());
  plainReg = await startRegistry();
  cleanup.add(() => plainReg.stop());
  const configDir = await tokenReg.dockerConfig();
  client = new RegistryClient({
    credentials: new DockerConfigCredentials({ path: join(configDir, 'config.json') }),
  });
  cleanup.add(() => client.close());
  image = await pushMultiLayer(tokenReg, 'src/multi', { layers: 5, layerBytes: 256 * 1024 });
  index = await pushTwoPlatformIndex(tokenReg, 'src/index');
});
after(() => cleanup.run());

const refOf = (reg: TestRegistry, path: string, tag = 'latest'): Reference => ({
  domain: reg.host,
  path,
  tag,
});

async function newStore(): Promise<ContentStore> {
  const dir = await tempDir('roundtrip-store');
  cleanup.addDir(dir);
  return ContentStore.open(dir);
}

/** Re-hashes a stored blob from disk. */
async function storedDigest(store: ContentStore, d: Digest): Promise<Digest> {
  const hash = createHash('sha256');
  for await (const chunk of await store.reader(d)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}` as Digest;
}

/** Every descriptor reachable from `root` in the store, each checked by re-hashing. */
async function verifyStored(store: ContentStore, root: Descriptor): Promise<Descriptor[]> {
  const seen: Descriptor[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const d = queue.shift()!;
    seen.push(d);
    assert.equal(await storedDigest(store, d.digest), d.digest, `stored ${d.mediaType}`);
    if (/manifest|index/.test(d.mediaType)) {
      const chunks: Buffer[] = [];
      for await (const c of await store.reader(d.digest)) chunks.push(c as Buffer);
      queue.push(...childrenOf(parseManifest(Buffer.concat(chunks), d.mediaType)));
    }
  }
  return seen;
}

test('an image pushed by skopeo is pulled into the store, every blob verified; a second pull fetches nothing', async () => {
  const store = await newStore();
  const result = await pullToStore(client, store, refOf(tokenReg, 'src/multi'));
  assert.equal(result.descriptor.digest, image.digest);
  assert.equal(result.manifests.length, 1);
  const all = await verifyStored(store, result.descriptor);
  // manifest + config + busybox layer + 5 random layers
  assert.equal(all.length, 8);
  assert.equal(result.fetched, 8);
  const again = await pullToStore(client, store, refOf(tokenReg, 'src/multi'));
  assert.equal(again.fetched, 0);
  assert.equal(again.present, 8);
});

test('an index: one platform, or all of them', async () => {
  const arm = await newStore();
  const one = await pullToStore(client, arm, refOf(tokenReg, 'src/index'), { platform: 'linux/arm64' });
  assert.equal(one.descriptor.digest, index.digest);
  assert.deepEqual(
    one.manifests.map((m) => m.digest),
    [index.manifests[1]!.digest],
  );
  assert.equal(await arm.has(index.manifests[0]!.digest), false);
  const both = await newStore();
  const all = await pullToStore(client, both, refOf(tokenReg, 'src/index'));
  assert.deepEqual(all.manifests.map((m) => m.digest).sort(), index.manifests.map((m) => m.digest).sort());
  await verifyStored(both, all.descriptor);
  await assert.rejects(
    pullToStore(client, await newStore(), refOf(tokenReg, 'src/index'), { platform: 'linux/s390x' }),
    /no manifest for platform linux\/s390x/,
  );
});

test('an interrupted layer ingest is resumed with Range from the real registry', async () => {
  const store = await newStore();
  const manifest = await client.fetchManifest(refOf(tokenReg, 'src/multi'));
  assert.equal(manifest.parsed.kind, 'manifest');
  const layer = manifest.parsed.kind === 'manifest' ? manifest.parsed.manifest.layers.at(-1)! : undefined;
  assert.ok(layer);
  // Half the layer, as a pull killed mid-way would have left it.
  const half = await client.fetchBlob(refOf(tokenReg, 'src/multi'), layer, {
    range: { offset: 0, length: Math.floor(layer.size / 2) },
  });
  const w = await store.writer(ingestRef(layer), { expected: layer.digest, total: layer.size });
  for await (const c of half) await w.write(c as Buffer);
  await w.close();
  assert.equal((await store.status(ingestRef(layer))).offset, Math.floor(layer.size / 2));
  const asked: Array<{ digest: string; offset: number | undefined }> = [];
  const spy = Object.create(client) as RegistryClient;
  spy.fetchBlob = (repo, desc, o) => {
    asked.push({ digest: desc.digest, offset: o?.range?.offset });
    return client.fetchBlob(repo, desc, o);
  };
  await pullToStore(spy, store, refOf(tokenReg, 'src/multi'));
  assert.equal(await storedDigest(store, layer.digest), layer.digest);
  assert.deepEqual(
    asked.filter((a) => a.digest === layer.digest),
    [{ digest: layer.digest, offset: Math.floor(layer.size / 2) }],
  );
  assert.deepEqual(await store.listStatuses(), []);
});

test('copy with Strata within a registry (mounted) and across registries (streamed), read back by skopeo', async () => {
  const creds = tokenReg.creds!;
  const within = await copyImage(
    client,
    refOf(tokenReg, 'src/multi'),
    refOf(tokenReg, 'dst/multi', 'copied'),
  );
  assert.equal(within.descriptor.digest, image.digest);
  assert.equal(within.blobs.mounted, 7);
  const raw = await skopeoRawManifest(`${tokenReg.host}/dst/multi:copied`, { creds });
  assert.equal(digestOf(raw), image.digest);

  const across = await copyImage(
    client,
    refOf(tokenReg, 'src/multi'),
    refOf(plainReg, 'mirror/multi', 'v1'),
    {
      chunkSize: 100 * 1024,
    },
  );
  assert.equal(across.blobs.uploaded, 7);
  assert.equal(digestOf(await skopeoRawManifest(`${plainReg.host}/mirror/multi:v1`)), image.digest);
  // skopeo pulls every blob and checks it against the manifest.
  const layout = await tempDir('roundtrip-oci');
  cleanup.addDir(layout);
  const copied = await skopeoCopy(`docker://${plainReg.host}/mirror/multi:v1`, `oci:${layout}:x`);
  assert.equal(copied, image.digest);

  // An index with both platforms: child manifests first, then the index under the tag.
  const idx = await copyImage(client, refOf(tokenReg, 'src/index'), refOf(plainReg, 'mirror/index', 'v1'));
  assert.equal(idx.descriptor.digest, index.digest);
  assert.equal(digestOf(await skopeoRawManifest(`${plainReg.host}/mirror/index:v1`)), index.digest);
  const layout2 = await tempDir('roundtrip-oci');
  cleanup.addDir(layout2);
  assert.equal(
    await skopeoCopy(`docker://${plainReg.host}/mirror/index:v1`, `oci:${layout2}:x`, { all: true }),
    index.digest,
  );
});
