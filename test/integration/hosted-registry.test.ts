// Hosted repositories with real clients: buildah pushes into Strata and pulls back, skopeo copies an image and a
// two-platform index (`--all`) in and back out to a docker-registry, containerd's ctr pulls from it; an
// upload session survives a restart of the server; deleting the last tag and manifest frees the blobs on
// disk through the ordinary garbage collector; skopeo copies images whose foreign layers (with URLs) it
// does not push.
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { ContentStore } from '../../src/content/store.ts';
import { type Digest, digestOf, encodedOf } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { startContainerd } from '../helpers/containerd.ts';
import { raw, startHosted } from '../helpers/hosted.ts';
import {
  imageTools,
  pushBusybox,
  pushTwoPlatformIndex,
  skopeoCopy,
  skopeoRawManifest,
} from '../helpers/images.ts';
import { waitFor } from '../helpers/process.ts';
import { startRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

test('buildah, skopeo and ctr push to and pull from hosted repositories', async (t) => {
  const root = await tempDir('hosted-clients');
  t.after(() => removeTempDir(root));
  const strata = await startHosted(root);
  t.after(() => strata.app.close());
  const reg = await startRegistry({ t });

  // buildah push in (the helper reads the manifest back with skopeo and checks its digest).
  const image = await pushBusybox({ host: strata.host }, 'apps/busybox', 'v1');
  // skopeo copy out to docker-registry: the same manifest digest there.
  const outDigest = await skopeoCopy(`${strata.host}/apps/busybox:v1`, `${reg.host}/copied/busybox:v1`);
  assert.equal(outDigest, image.digest);
  // skopeo copy in from docker-registry under another name, and back out by digest.
  const inDigest = await skopeoCopy(`${reg.host}/copied/busybox:v1`, `${strata.host}/mirror/busybox:latest`);
  assert.equal(inDigest, image.digest);

  // A two-platform index, every manifest (`--all`), in and out again.
  const index = await pushTwoPlatformIndex({ host: strata.host }, 'apps/multi');
  assert.equal(index.mediaType, MediaType.ociIndex);
  const copied = await skopeoCopy(`${strata.host}/apps/multi:latest`, `${reg.host}/copied/multi:latest`, {
    all: true,
  });
  assert.equal(copied, index.digest);
  for (const m of index.manifests) {
    const bytes = await skopeoRawManifest(`${reg.host}/copied/multi@${m.digest}`);
    assert.equal(digestOf(bytes), m.digest);
  }

  // buildah pulls it back into its own storage: the manifest it pulled is the one pushed.
  const tools = await imageTools();
  t.after(() => tools.cleanup());
  await tools.buildah(['pull', '--quiet', '--tls-verify=false', `${strata.host}/mirror/busybox:latest`]);
  const inspected = JSON.parse(
    await tools.buildah(['inspect', '--type', 'image', `${strata.host}/mirror/busybox:latest`]),
  ) as { FromImageDigest: string };
  assert.equal(inspected.FromImageDigest, image.digest);

  // containerd pulls the image and the index (its own platform) from Strata.
  const ctrd = await startContainerd({ t });
  await ctrd.ctr(['images', 'pull', '--plain-http', `${strata.host}/apps/busybox:v1`]);
  await ctrd.ctr(['images', 'pull', '--plain-http', `${strata.host}/apps/multi:latest`]);
  const listed = await ctrd.ctr(['images', 'ls', '-q']);
  assert.match(listed, /apps\/busybox:v1/);
  assert.match(listed, /apps\/multi:latest/);

  // Tags, paginated with a Link to the next page.
  await skopeoCopy(`${strata.host}/apps/busybox:v1`, `${strata.host}/apps/busybox:v2`);
  const page = await raw(strata.url, 'GET', '/v2/apps/busybox/tags/list?n=1');
  assert.deepEqual(JSON.parse(page.body.toString()), { name: 'apps/busybox', tags: ['v1'] });
  assert.equal(page.headers.get('link'), '</v2/apps/busybox/tags/list?n=1&last=v1>; rel="next"');
  const rest = await raw(strata.url, 'GET', '/v2/apps/busybox/tags/list?n=1&last=v1');
  assert.deepEqual(JSON.parse(rest.body.toString()), { name: 'apps/busybox', tags: ['v2'] });
  assert.equal(rest.headers.get('link'), null);

  // An artifact about the image: OCI-Subject on the push, listed by the referrers API.
  const config = Buffer.from('{}');
  const configUp = await raw(
    strata.url,
    'POST',
    `/v2/apps/busybox/blobs/uploads/?digest=${digestOf(config)}`,
    {
      body: config,
    },
  );
  assert.equal(configUp.status, 201);
  const artifactType = 'application/vnd.example.sbom';
  const artifact = JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    artifactType,
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: digestOf(config), size: config.length },
    layers: [],
    subject: { mediaType: image.mediaType, digest: image.digest, size: image.size },
  });
  const put = await raw(strata.url, 'PUT', `/v2/apps/busybox/manifests/${digestOf(artifact)}`, {
    headers: { 'content-type': MediaType.ociManifest },
    body: artifact,
  });
  assert.equal(put.status, 201);
  assert.equal(put.headers.get('oci-subject'), image.digest);
  const refs = await raw(strata.url, 'GET', `/v2/apps/busybox/referrers/${image.digest}`);
  assert.equal(refs.headers.get('content-type'), MediaType.ociIndex);
  const listedRefs = JSON.parse(refs.body.toString()) as {
    manifests: { digest: string; artifactType?: string }[];
  };
  assert.deepEqual(
    listedRefs.manifests.map((m) => [m.digest, m.artifactType]),
    [[digestOf(artifact), artifactType]],
  );
  // The facade's readiness counts the hosted repositories.
  assert.equal((await raw(strata.url, 'GET', '/readyz')).status, 200);
});

test('an upload session survives a restart of the server', async (t) => {
  const root = await tempDir('hosted-restart');
  t.after(() => removeTempDir(root));
  let strata = await startHosted(root);
  t.after(() => strata.app.close());
  const blob = Buffer.alloc(300_000, 7);
  for (let i = 0; i < blob.length; i += 997) blob[i] = i % 251;
  const d = digestOf(blob);

  const start = await raw(strata.url, 'POST', '/v2/keep/me/blobs/uploads/');
  assert.equal(start.status, 202);
  const location = start.headers.get('location')!;
  const half = 150_000;
  const first = await raw(strata.url, 'PATCH', location, {
    headers: { 'content-range': `0-${half - 1}` },
    body: blob.subarray(0, half),
  });
  assert.equal(first.status, 202);
  assert.equal(first.headers.get('range'), `0-${half - 1}`);

  const port = Number(new URL(strata.url).port);
  await strata.app.close();
  strata = await startHosted(root, port);

  const status = await raw(strata.url, 'GET', location);
  assert.equal(status.status, 204);
  assert.equal(status.headers.get('range'), `0-${half - 1}`);
  // A chunk that does not continue where the session stands is refused and changes nothing.
  const wrong = await raw(strata.url, 'PATCH', location, {
    headers: { 'content-range': `${half + 1}-${blob.length - 1}` },
    body: blob.subarray(half + 1),
  });
  assert.equal(wrong.status, 416);
  const done = await raw(strata.url, 'PUT', `${location}?digest=${d}`, { body: blob.subarray(half) });
  assert.equal(done.status, 201);
  assert.equal(done.headers.get('docker-content-digest'), d);
  const back = await raw(strata.url, 'GET', `/v2/keep/me/blobs/${d}`);
  assert.equal(back.status, 200);
  assert.equal(digestOf(back.body), d);
  // The session is gone once finished.
  assert.equal((await raw(strata.url, 'GET', location)).status, 404);
});

test('deleting the last manifest and tag frees the blobs on disk', async (t) => {
  const root = await tempDir('hosted-gc');
  t.after(() => removeTempDir(root));
  const strata = await startHosted(root);
  t.after(() => strata.app.close());
  const image = await pushBusybox({ host: strata.host }, 'gone/soon', 'only');
  const manifest = JSON.parse((await skopeoRawManifest(`${strata.host}/gone/soon:only`)).toString()) as {
    config: { digest: Digest };
    layers: { digest: Digest }[];
  };
  const blobs = [image.digest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)];
  const store = await ContentStore.open(join(root, 'content'));
  t.after(() => store.close());
  for (const d of blobs) assert.ok(await store.has(d), `${d} is on disk after the push`);

  // A second tag keeps everything while the first goes.
  await skopeoCopy(`${strata.host}/gone/soon:only`, `${strata.host}/gone/soon:other`);
  assert.equal((await raw(strata.url, 'DELETE', '/v2/gone/soon/manifests/only')).status, 202);
  await new Promise((r) => setTimeout(r, 1000));
  for (const d of blobs) assert.ok(await store.has(d), `${d} is kept while a tag names it`);

  // By digest: the manifest and every tag on it go, and with them the bytes.
  assert.equal((await raw(strata.url, 'DELETE', `/v2/gone/soon/manifests/${image.digest}`)).status, 202);
  await waitFor(
    async () => {
      for (const d of blobs) if (await store.has(d)) return undefined;
      return true;
    },
    15_000,
    { what: 'the blobs of the deleted image to leave the content store' },
  );
  assert.equal((await raw(strata.url, 'GET', `/v2/gone/soon/blobs/${manifest.config.digest}`)).status, 404);
});

/**
 * A `dir:` image (skopeo's directory transport) with one layer here and one fetched from its URL, which
 * the directory lacks as a registry would: a Docker foreign layer, or an OCI non-distributable one.
 */
async function dirImageWithForeignLayer(dir: string, format: 'docker' | 'oci'): Promise<void> {
  await mkdir(dir, { recursive: true });
  const docker = format === 'docker';
  // Compressed as its media type says, or skopeo compresses it on the way and changes the manifest.
  const local = gzipSync('a layer that is pushed');
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [digestOf('foreign tar'), digestOf(local)] },
    }),
  );
  for (const blob of [config, local]) await writeFile(join(dir, encodedOf(digestOf(blob))), blob);
  const manifest = {
    schemaVersion: 2,
    mediaType: docker ? MediaType.dockerManifest : MediaType.ociManifest,
    config: {
      mediaType: docker ? MediaType.dockerConfig : MediaType.ociConfig,
      digest: digestOf(config),
      size: config.length,
    },
    layers: [
      {
        mediaType: docker ? MediaType.dockerLayerForeignGzip : MediaType.ociLayerNondistributableGzip,
        digest: digestOf('a foreign layer nobody pushes'),
        size: 4321,
        urls: ['https://layers.example.com/foreign.tar.gz'],
      },
      {
        mediaType: docker ? MediaType.dockerLayerGzip : MediaType.ociLayerGzip,
        digest: digestOf(local),
        size: local.length,
      },
    ],
  };
  await writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest));
  await writeFile(join(dir, 'version'), 'Directory Transport Version: 1.1\n');
}

test('skopeo copies images with foreign and non-distributable layers in and out; their bytes stay away', async (t) => {
  const root = await tempDir('hosted-foreign');
  t.after(() => removeTempDir(root));
  const strata = await startHosted(root);
  t.after(() => strata.app.close());
  // docker-registry takes these manifests only with URLs its allow list admits (by default it admits
  // none and answers 500); Docker Hub admits some hosts the same way.
  const reg = await startRegistry({ t, allowManifestUrls: ['^https?://'] });
  for (const format of ['docker', 'oci'] as const) {
    const src = join(root, `src-${format}`);
    await dirImageWithForeignLayer(src, format);
    const digest = await skopeoCopy(`dir:${src}`, `${strata.host}/foreign/${format}:v1`);
    const served = await skopeoRawManifest(`${strata.host}/foreign/${format}:v1`);
    assert.equal(digestOf(served), digest);
    assert.deepEqual(served, await readFile(join(src, 'manifest.json')));
    // The foreign layer is not served here; clients take it from its URL.
    const m = JSON.parse(served.toString()) as { layers: { digest: string }[] };
    const foreign = await raw(strata.url, 'HEAD', `/v2/foreign/${format}/blobs/${m.layers[0]!.digest}`);
    assert.equal(foreign.status, 404);
    // Out again to docker-registry, and back in under another name.
    assert.equal(
      await skopeoCopy(`${strata.host}/foreign/${format}:v1`, `${reg.host}/f/${format}:v1`),
      digest,
    );
    assert.equal(await skopeoCopy(`${reg.host}/f/${format}:v1`, `${strata.host}/again/${format}:v1`), digest);
  }
});
