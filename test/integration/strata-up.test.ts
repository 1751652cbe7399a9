// `strata up` as users run it: one process, every port picked by the kernel. skopeo pushes a busybox-based
// image and an IDE image into its hosted registry; ctr pulls one through the daemon's socket, `strata pull`
// the other without a byte crossing the network (the blobs are in the one content store); the builder
// builds a Dockerfile FROM the hosted image and pushes to the hosted registry; a spec in the store composes
// the built image with the IDE image and ctr pulls the composite from the registry, its layers read from
// the content store. Metrics and readiness
// of the whole answer, gRPC health too. SIGTERM stops it with exit 0, and a restart on the same root finds
// the images, the spec, the build log and an unfinished upload session.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Health, HealthCheckResponse_ServingStatus } from '../../src/api/gen/grpc/health/v1/health_pb.ts';
import { callUnary, createClient } from '../../src/api/grpc/client.ts';
import { digestOf } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { createRepo } from '../helpers/git-repo.ts';
import { raw } from '../helpers/hosted.ts';
import { type PushedImage, pushFilesImage } from '../helpers/images.ts';
import { runProcess, type ServerProcess, waitFor } from '../helpers/process.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';
import { ctrOk, metricSample, STRATA, startStrataUp, strata, type UpAddresses } from '../helpers/up.ts';

let work: string;
let root: string;
let config: string;
let server: ServerProcess | undefined;
let at: UpAddresses;
let starts = 0;

async function startUp(): Promise<void> {
  starts++;
  ({ server, at } = await startStrataUp({ work, root, config, n: starts }));
}

function ctr(args: string[]): Promise<string> {
  return ctrOk(at.socket, args);
}

async function grpcServing(address: string): Promise<boolean> {
  const client = createClient(address);
  try {
    const res = await callUnary(client, Health.method.check, { service: '' }, { timeoutMs: 10_000 });
    return res.status === HealthCheckResponse_ServingStatus.SERVING;
  } finally {
    client.close();
  }
}

const sample = metricSample;

before(async () => {
  work = await tempDir('strata-up');
  root = join(work, 'root');
  config = join(work, 'up.yaml');
  // Every port from the kernel; native snapshots and vfs build storage work on any temp file system.
  await writeFile(
    config,
    [
      'daemon: { address: strata.sock, snapshotter: native }',
      'registry: { listen: "127.0.0.1:0", shutdownGraceSeconds: 5 }',
      'specs: { listen: "127.0.0.1:0", writable: true }',
      'builder: { listen: "127.0.0.1:0", storageDriver: vfs, allowFileRemotes: true }',
      'metrics: "127.0.0.1:0"',
      '',
    ].join('\n'),
  );
  await startUp();
});

after(async () => {
  await server?.stop();
  if (work) await removeTempDir(work);
});

test('strata up: push, pull, build, compose in one process; a restart keeps everything', async () => {
  const target = { host: at.registryHost };
  // skopeo pushes both images into the hosted registry.
  const base: PushedImage = await pushFilesImage(target, 'base/busybox', {
    busybox: true,
    layers: [{ 'etc/base-marker': 'base\n' }],
  });
  const ide = await pushFilesImage(target, 'ide/code', {
    layers: [{ 'ide/bin/ide-marker': 'ide marker\n' }],
    env: ['GITPOD_ENV_APPEND_PATH=/ide/bin:'],
  });

  // containerd's ctr pulls through the daemon's socket.
  await ctr(['images', 'pull', '--plain-http', base.ref]);
  assert.match(await ctr(['images', 'ls', '-q']), new RegExp(base.ref.replaceAll('.', '\\.')));

  // strata pull: every blob is in the content store already, so no blob is read from the registry.
  const blobGets = async () =>
    sample(await (await fetch(`${at.opsUrl}/metrics`)).text(), 'strata_facade_http_requests_total', [
      'route="hosted-blob"',
      'method="GET"',
    ]);
  const before = await blobGets();
  const pulled = await strata([
    'pull',
    '--plain-http',
    '--address',
    at.socket,
    '--progress',
    'none',
    ide.ref,
  ]);
  assert.match(pulled, /all \d+ blobs already in the content store, 0 B transferred/);
  assert.equal(await blobGets(), before);

  // The builder builds FROM the hosted image and pushes into the hosted registry.
  const repo = await createRepo(join(work, 'app'));
  await repo.commit({
    Dockerfile: `FROM ${base.ref}\nRUN mkdir -p /workspace-tools && echo "made by RUN" > /workspace-tools/built.txt\n`,
  });
  const built = await strata(['build', repo.url, '--address', at.builder, '--branch', 'main']);
  const builtRef = built.trim().split('\n').at(-1) ?? '';
  assert.match(builtRef, new RegExp(`^${at.registryHost}/workspace-images:[0-9a-f]{64}$`));

  // A spec in the store composes the built image with the IDE image; ctr pulls the composite.
  const specs = join(root, 'specs');
  await strata(['spec', 'put', 'ws1', '--data-dir', specs, '--base-ref', builtRef, '--ide-ref', ide.ref]);
  assert.match(await strata(['spec', 'get', 'ws1', '--address', at.specProvider]), /workspace-images/);
  // specs.writable: the same listener takes puts (strata.specstore.v1.SpecStore) into the same store.
  await strata(['spec', 'put', 'ws2', '--address', at.specProvider, '--base-ref', builtRef]);
  assert.deepEqual((await strata(['spec', 'ls', '--spec-store', specs])).trim().split('\n'), ['ws1', 'ws2']);
  await strata(['spec', 'rm', 'ws2', '--address', at.specProvider]);
  const composite = `${at.registryHost}/remote/ws1:latest`;
  await ctr(['images', 'pull', '--plain-http', composite]);
  const rootfs = join(work, 'rootfs');
  await strata(['rootfs', composite, rootfs, '--address', at.socket]);
  assert.equal(await readFile(join(rootfs, 'workspace-tools/built.txt'), 'utf8'), 'made by RUN\n');
  assert.equal(await readFile(join(rootfs, 'ide/bin/ide-marker'), 'utf8'), 'ide marker\n');
  assert.equal(await readFile(join(rootfs, 'etc/base-marker'), 'utf8'), 'base\n');

  // An upload left unfinished.
  const blob = Buffer.alloc(200_000, 3);
  const start = await raw(at.registryUrl, 'POST', '/v2/keep/me/blobs/uploads/');
  assert.equal(start.status, 202);
  const location = start.headers.get('location')!;
  const half = await raw(at.registryUrl, 'PATCH', location, {
    headers: { 'content-range': '0-99999' },
    body: blob.subarray(0, 100_000),
  });
  assert.equal(half.status, 202);

  // One metrics endpoint with every part's metrics; readiness of the whole; gRPC health everywhere.
  const metrics = await (await fetch(`${at.opsUrl}/metrics`)).text();
  for (const name of [
    'strata_process_cpu_seconds_total',
    'strata_grpc_requests_total',
    'strata_facade_http_requests_total',
    'strata_builder_builds_started_total',
  ])
    assert.match(metrics, new RegExp(`^${name}`, 'm'), name);
  assert.equal(sample(metrics, 'strata_builder_builds_done_total', ['outcome="success"']), 1);
  // gRPC calls of every server on one series, told apart by method.
  for (const method of [
    '/containerd.services.images.v1.Images/Create',
    '/builder.ImageBuilder/Build',
    '/registryfacade.SpecProvider/GetImageSpec',
  ])
    assert.ok(sample(metrics, 'strata_grpc_requests_total', [`method="${method}"`]) > 0, method);
  // ctr found every blob of the composite in the store; a client elsewhere reads them over HTTP, and the
  // facade reads them from the content store rather than fetching them over loopback into its cache.
  const composed = await raw(at.registryUrl, 'GET', '/v2/remote/ws1/manifests/latest', {
    headers: { accept: `${MediaType.ociManifest}, ${MediaType.dockerManifest}` },
  });
  assert.equal(composed.status, 200);
  const layers = (JSON.parse(composed.body.toString()) as { layers: { digest: string }[] }).layers;
  for (const l of layers) {
    const got = await raw(at.registryUrl, 'GET', `/v2/remote/ws1/blobs/${l.digest}`);
    assert.equal(got.status, 200);
    assert.equal(digestOf(got.body), l.digest);
  }
  const reads = await (await fetch(`${at.opsUrl}/metrics`)).text();
  const local = ['source="hosted"', 'outcome="local"'];
  assert.equal(sample(reads, 'strata_facade_blob_reads_total', local), layers.length);
  assert.equal(sample(reads, 'strata_facade_blob_reads_total', ['source="upstream"']), 0);
  assert.equal((await fetch(`${at.opsUrl}/readyz`)).status, 200);
  assert.equal((await fetch(`${at.registryUrl}/readyz`)).status, 200);
  assert.equal((await fetch(`${at.registryUrl}/metrics`)).status, 200);
  for (const address of [`unix://${at.socket}`, at.builder, at.specProvider])
    assert.ok(await grpcServing(address), address);

  // SIGTERM: a clean stop, exit 0.
  const proc = server!.proc;
  const exited = once(proc, 'exit');
  process.kill(proc.pid!, 'SIGTERM');
  const [code] = (await exited) as [number | null];
  assert.equal(code, 0);

  // The same root again: images, spec, build log and the upload session are all there.
  await startUp();
  assert.match(await ctr(['images', 'ls', '-q']), new RegExp(base.ref.replaceAll('.', '\\.')));
  const tags = await raw(at.registryUrl, 'GET', '/v2/base/busybox/tags/list');
  assert.deepEqual(JSON.parse(tags.body.toString()), { name: 'base/busybox', tags: ['latest'] });
  // The registry lists its repositories, as operators ask docker-registry to.
  const catalog = await raw(at.registryUrl, 'GET', '/v2/_catalog');
  assert.equal(catalog.status, 200);
  assert.ok(
    (JSON.parse(catalog.body.toString()) as { repositories: string[] }).repositories.includes('base/busybox'),
  );
  const manifest = await raw(at.registryUrl, 'GET', `/v2/base/busybox/manifests/${base.digest}`, {
    headers: { accept: base.mediaType },
  });
  assert.equal(manifest.status, 200);
  assert.match(await strata(['spec', 'get', 'ws1', '--address', at.specProvider]), /workspace-images/);
  const logs = await strata(['build', 'logs', builtRef, '--address', at.builder]);
  assert.match(logs, /made by RUN|built\.txt/);
  const session = await raw(at.registryUrl, 'GET', location);
  assert.equal(session.status, 204);
  assert.equal(session.headers.get('range'), '0-99999');
  const done = await raw(at.registryUrl, 'PUT', `${location}?digest=${digestOf(blob)}`, {
    body: blob.subarray(100_000),
  });
  assert.equal(done.status, 201);
  await waitFor(async () => (await fetch(`${at.opsUrl}/readyz`)).status === 200, 30_000, {
    what: 'readiness after the restart',
  });
});

test('a second start on a root in use names strata up as the holder', async () => {
  // The same addresses too: the root is what it is told about, not a port in use.
  const ops = new URL(at.opsUrl).host;
  const args = ['up', '--root', root, '--config', config, '--listen', at.registryHost, '--metrics', ops];
  const r = await runProcess(STRATA, args, { timeoutMs: 60_000 });
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`state directory ${root} is in use by strata up \\(pid \\d+\\)`));
});
