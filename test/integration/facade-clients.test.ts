// Composed images that real clients must be able to take, from bases and added images whose shape the
// composer has to adapt to: a Docker schema2 base with a zstd layer added (Docker has no zstd layer type),
// and a base whose config has no history (entries added for our layers alone would pair with the wrong
// ones). skopeo and buildah check what containerd does not, so each image goes through all three.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { digestOf } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { type FacadeApp, startFacade } from '../../src/server/facade.ts';
import { facadeConfigFrom } from '../../src/server/facade-config.ts';
import { startContainerd, type TestContainerd } from '../helpers/containerd.ts';
import {
  type ImageTools,
  imageTools,
  pushBusybox,
  pushMultiLayer,
  skopeoInspect,
} from '../helpers/images.ts';
import { pushLayeredImage } from '../helpers/layered-image.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

interface Manifest {
  mediaType: string;
  config: { mediaType: string; digest: string; size: number };
  layers: { mediaType: string; digest: string; size: number }[];
}

/** Pushes `from` again as `to` with its config's history removed (same layers, mounted). */
async function pushWithoutHistory(reg: TestRegistry, from: string, to: string): Promise<string> {
  const accept = MediaType.ociManifest;
  const m = (await (
    await fetch(`${reg.url}/v2/${from}/manifests/latest`, { headers: { accept } })
  ).json()) as Manifest;
  const config = (await (await fetch(`${reg.url}/v2/${from}/blobs/${m.config.digest}`)).json()) as Record<
    string,
    unknown
  >;
  delete config.history;
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = digestOf(configBytes);
  const started = await fetch(`${reg.url}/v2/${to}/blobs/uploads/`, { method: 'POST' });
  const location = new URL(started.headers.get('location') ?? '', reg.url);
  location.searchParams.set('digest', configDigest);
  const put = await fetch(location, { method: 'PUT', body: configBytes });
  assert.equal(put.status, 201);
  for (const l of m.layers) {
    const mount = await fetch(`${reg.url}/v2/${to}/blobs/uploads/?mount=${l.digest}&from=${from}`, {
      method: 'POST',
    });
    assert.equal(mount.status, 201);
  }
  const manifest = { ...m, config: { ...m.config, digest: configDigest, size: configBytes.length } };
  const res = await fetch(`${reg.url}/v2/${to}/manifests/latest`, {
    method: 'PUT',
    body: JSON.stringify(manifest),
    headers: { 'content-type': m.mediaType },
  });
  assert.equal(res.status, 201, await res.text());
  return `${reg.host}/${to}:latest`;
}

describe('composed images real clients take', () => {
  let reg: TestRegistry;
  let work: string;
  let app: FacadeApp;
  let host: string;
  let tools: ImageTools;
  let ctrd: TestContainerd;

  before(async () => {
    reg = await startRegistry();
    const dockerBase = await pushMultiLayer(reg, 'base/docker', {
      layers: 5,
      layerBytes: 1024,
      format: 'docker',
    });
    const zstdIde = await pushLayeredImage(reg, 'ide/zstd');
    const busybox = await pushBusybox(reg, 'base/busybox');
    const noHistory = await pushWithoutHistory(reg, 'base/busybox', 'base/no-history');
    const ide = await pushMultiLayer(reg, 'ide/code', { layers: 5, layerBytes: 1024 });
    work = await tempDir('facade-clients');
    const fixedFile = join(work, 'fixed.json');
    await writeFile(
      fixedFile,
      JSON.stringify({
        'docker-zstd': { baseRef: dockerBase.ref, ideRef: zstdIde.ref },
        'docker-gzip': { baseRef: dockerBase.ref, ideRef: ide.ref },
        'no-history': { baseRef: noHistory, ideRef: ide.ref },
        'with-history': { baseRef: busybox.ref, ideRef: ide.ref },
      }),
    );
    const config = facadeConfigFrom(
      {
        listen: '127.0.0.1:0',
        specProviders: { fixedFile },
        cache: { dir: join(work, 'cache'), maxBytes: '1GiB' },
        prefetch: { enabled: false },
      },
      work,
    );
    app = await startFacade(config, { logger: pino({ level: 'silent' }), registry: new Registry() });
    host = new URL(app.url).host;
    tools = await imageTools();
    ctrd = await startContainerd();
  });

  after(async () => {
    await ctrd?.stop();
    await tools?.cleanup();
    await app?.close();
    if (work) await removeTempDir(work);
    await reg?.stop();
  });

  test('a Docker base with a zstd layer added composes to OCI: skopeo, buildah and containerd take it', async () => {
    const ref = `${host}/fixed/docker-zstd:latest`;
    const raw = (await skopeoInspect(ref, { raw: true })) as Manifest;
    assert.equal(raw.mediaType, MediaType.ociManifest);
    assert.equal(raw.config.mediaType, MediaType.ociConfig);
    assert.ok(raw.layers.some((l) => l.mediaType === MediaType.ociLayerZstd));
    // skopeo parses the manifest (it refused `…rootfs.diff.tar.zstd` in a schema2 one).
    const inspected = (await skopeoInspect(ref)) as { Layers: string[] };
    assert.equal(inspected.Layers.length, raw.layers.length);
    assert.match(await tools.buildah(['pull', '--quiet', '--tls-verify=false', ref]), /^[0-9a-f]{64}$/m);
    await ctrd.ctr(['images', 'pull', '--plain-http', ref]);
  });

  test('a Docker base with gzip layers added stays Docker schema2: skopeo, buildah and containerd take it', async () => {
    const ref = `${host}/fixed/docker-gzip:latest`;
    const raw = (await skopeoInspect(ref, { raw: true })) as Manifest;
    assert.equal(raw.mediaType, MediaType.dockerManifest);
    assert.equal(raw.config.mediaType, MediaType.dockerConfig);
    assert.ok(raw.layers.every((l) => l.mediaType === MediaType.dockerLayerGzip));
    const inspected = (await skopeoInspect(ref)) as { Layers: string[] };
    assert.equal(inspected.Layers.length, raw.layers.length);
    assert.match(await tools.buildah(['pull', '--quiet', '--tls-verify=false', ref]), /^[0-9a-f]{64}$/m);
    await ctrd.ctr(['images', 'pull', '--plain-http', ref]);
  });

  test('a base without history: buildah commits a container of the composed image', async () => {
    for (const name of ['with-history', 'no-history']) {
      const ref = `${host}/fixed/${name}:latest`;
      const container = (await tools.buildah(['from', '--quiet', '--tls-verify=false', ref])).trim();
      // It failed with "history lists 7 non-empty layers, but we have 8 layers on disk".
      await tools.buildah(['commit', '--quiet', container, `localhost/committed/${name}:latest`]);
      await tools.buildah(['rm', container]);
    }
  });
});
