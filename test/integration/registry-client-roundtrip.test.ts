// Round trips with an independent client: images pushed by skopeo are pulled by Strata's pull (the real
// one, into a daemon; every blob re-hashed as read back), and images copied by Strata (within and across
// registries) are read back by skopeo, whose digests must match.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { DaemonApi } from '../../src/client/daemon-api.ts';
import { GrpcDaemonApi } from '../../src/client/grpc-daemon-api.ts';
import { ingestRefKey } from '../../src/client/pull/fetch.ts';
import { pullImage } from '../../src/client/pull/pull.ts';
import type { Descriptor } from '../../src/oci/descriptor.ts';
import { type Digest, digestOf } from '../../src/oci/digest.ts';
import { parseManifest } from '../../src/oci/manifest.ts';
import { formatReference, type Reference } from '../../src/oci/reference.ts';
import { childrenOf } from '../../src/oci/walk.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { copyImage } from '../../src/registry/copy.ts';
import { DockerConfigCredentials } from '../../src/registry/docker-config.ts';
import { startDaemon, type TestDaemon } from '../helpers/daemon.ts';
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

/** A fresh daemon (its own content store) and a client on it, both gone after the test. */
async function newStore(): Promise<{ daemon: TestDaemon; api: GrpcDaemonApi }> {
  const root = await tempDir('roundtrip-daemon');
  cleanup.addDir(root);
  const daemon = await startDaemon({ root, logLevel: 'warn' });
  cleanup.add(() => daemon.stop());
  const api = GrpcDaemonApi.connect(daemon.address);
  cleanup.add(() => api.close());
  return { daemon, api };
}

/** What the real pull does, without unpacking: every blob of the image into the daemon's store. */
function pullToStore(
  client: RegistryClient,
  api: DaemonApi,
  ref: Reference,
  opts: { platform?: string; allPlatforms?: boolean } = {},
) {
  return pullImage(client, api, formatReference(ref), { platform: 'linux/amd64', ...opts, unpack: false });
}

/** Re-hashes a stored blob as the daemon reads it back. */
async function storedDigest(api: DaemonApi, d: Digest): Promise<Digest> {
  const hash = createHash('sha256').update(await api.readContent(d, 64 << 20));
  return `sha256:${hash.digest('hex')}` as Digest;
}

/** Every descriptor reachable from `root` in the store, each checked by re-hashing. */
async function verifyStored(api: DaemonApi, root: Descriptor): Promise<Descriptor[]> {
  const seen: Descriptor[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const d = queue.shift()!;
    seen.push(d);
    assert.equal(await storedDigest(api, d.digest), d.digest, `stored ${d.mediaType}`);
    if (/manifest|index/.test(d.mediaType)) {
      queue.push(...childrenOf(parseManifest(await api.readContent(d.digest, 4 << 20), d.mediaType)));
    }
  }
  return seen;
}

test('an image pushed by skopeo is pulled into the store, every blob verified; a second pull fetches nothing', async () => {
  const { api } = await newStore();
  const result = await pullToStore(client, api, refOf(tokenReg, 'src/multi'));
  assert.equal(result.descriptor.digest, image.digest);
  assert.equal(result.manifests.length, 1);
  const all = await verifyStored(api, result.descriptor);
  // manifest + config + busybox layer + 5 random layers
  assert.equal(all.length, 8);
  assert.equal(result.fetched, 8);
  const again = await pullToStore(client, api, refOf(tokenReg, 'src/multi'));
  assert.equal(again.fetched, 0);
  assert.equal(again.present, 8);
});

test('an index: one platform, or all of them', async () => {
  const arm = (await newStore()).api;
  const one = await pullToStore(client, arm, refOf(tokenReg, 'src/index'), { platform: 'linux/arm64' });
  assert.equal(one.descriptor.digest, index.digest);
  assert.deepEqual(
    one.manifests.map((m) => m.digest),
    [index.manifests[1]!.digest],
  );
  assert.equal(await arm.contentInfo(index.manifests[0]!.digest), undefined);
  const both = (await newStore()).api;
  const all = await pullToStore(client, both, refOf(tokenReg, 'src/index'), { allPlatforms: true });
  assert.deepEqual(all.manifests.map((m) => m.digest).sort(), index.manifests.map((m) => m.digest).sort());
  await verifyStored(both, all.descriptor);
  await assert.rejects(
    pullToStore(client, arm, refOf(tokenReg, 'src/index'), { platform: 'linux/s390x' }),
    /no match for platform in manifest sha256:[0-9a-f]{64}: not found/,
  );
});

test('an interrupted layer ingest is resumed with Range from the real registry', async () => {
  const { daemon, api } = await newStore();
  const manifest = await client.fetchManifest(refOf(tokenReg, 'src/multi'));
  assert.equal(manifest.parsed.kind, 'manifest');
  const layer = manifest.parsed.kind === 'manifest' ? manifest.parsed.manifest.layers.at(-1)! : undefined;
  assert.ok(layer);
  // Half the layer, as a pull killed mid-way would have left it.
  const half = await client.fetchBlob(refOf(tokenReg, 'src/multi'), layer, {
    range: { offset: 0, length: Math.floor(layer.size / 2) },
  });
  // Under a lease, as a pull's ingests are: the garbage collector leaves it alone.
  const lease = await api.createLease({});
  const w = await api.withLease(lease).openWriter(ingestRefKey(layer, 'layer'), layer);
  assert.ok(w);
  for await (const c of half) await w.write(c as Buffer);
  await w.flush();
  w.close();
  const active = await daemon.ctrOk(['content', 'active']);
  // ctr rounds the size; the Range asked for below shows the exact offset kept.
  assert.match(active, new RegExp(`^layer-${layer.digest}\\s`, 'm'));
  const asked: Array<{ digest: string; offset: number | undefined }> = [];
  const spy = Object.create(client) as RegistryClient;
  spy.fetchBlob = (repo, desc, o) => {
    asked.push({ digest: desc.digest, offset: o?.range?.offset });
    return client.fetchBlob(repo, desc, o);
  };
  await pullToStore(spy, api, refOf(tokenReg, 'src/multi'));
  assert.equal(await storedDigest(api, layer.digest), layer.digest);
  assert.deepEqual(
    asked.filter((a) => a.digest === layer.digest),
    [{ digest: layer.digest, offset: Math.floor(layer.size / 2) }],
  );
  assert.equal((await daemon.ctrOk(['content', 'active'])).trim().split('\n').length, 1, 'no ingest left');
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
