// Prefetch with the real clients: `strata facade` runs as a process with the own spec store, which it also
// serves over gRPC with writes; specs are put and removed with `strata spec put|rm`, in the store's
// directory or through that gRPC API (--address). A spec put is composed and every blob it names from the network
// (base, IDE, supervisor and IDE-layer image layers from a docker-registry, a remote content layer from the
// test's host) lands in the facade's disk cache before anyone asks: with the registry and the host stopped,
// containerd pulls the composite and runs it, also after the facade restarted. Removing a spec cancels its
// prefetch (a fill only it holds is abandoned, one a client reads goes on), so does putting it again with
// other content, and a prefetch that failed is tried again after a pause.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { startContainerd, type TestContainerd } from '../helpers/containerd.ts';
import { ContentHost, sha256, tarOf } from '../helpers/content-host.ts';
import { spawnFacade } from '../helpers/facade.ts';
import { type PushedImage, pushBusybox, pushFilesImage } from '../helpers/images.ts';
import { freePort } from '../helpers/ports.ts';
import { runCommand, type ServerProcess, waitFor } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const STRATA = new URL('../../bin/strata', import.meta.url).pathname;
const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';

/** A sample value from Prometheus text, by name and exact label set (`{a="b"}` or ''). */
function sample(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('facade prefetch of specs put in the own store', () => {
  let reg: TestRegistry;
  let busybox: PushedImage;
  let ide: PushedImage;
  let supervisor: PushedImage;
  let ideLayer: PushedImage;
  let work: string;
  let store: string;
  let facade: ServerProcess;
  let facadeUrl: string;
  let facadeHost: string;
  /** Where the facade serves its spec store over gRPC, writes included. */
  let storeAddress: string;
  let logFile: string;
  let facadeConfig: string;
  let ctrd: TestContainerd;
  const content = new ContentHost();

  /** A remote content layer of the spec, served by the host at `path` (set now unless `serve` is false). */
  async function contentLayer(path: string, marker: string, serve = true) {
    const tar = await tarOf({ [`workspace/${marker}`]: `${marker}\n` });
    const gz = gzipSync(tar);
    if (serve) content.bodies.set(path, gz);
    return {
      gz,
      layer: {
        remote: {
          url: content.url(path),
          digest: sha256(gz),
          diffId: sha256(tar),
          mediaType: OCI_LAYER_GZIP,
          size: String(gz.length),
        },
      },
    };
  }

  /** `strata spec put`, into the store's directory or (`grpc`) through the facade's gRPC API. */
  async function putSpec(
    id: string,
    spec: Record<string, unknown>,
    via: 'dir' | 'grpc' = 'dir',
  ): Promise<void> {
    const file = join(work, `${id}.json`);
    await writeFile(file, JSON.stringify(spec));
    const where = via === 'dir' ? ['--data-dir', store] : ['--address', storeAddress];
    await runCommand(STRATA, ['spec', 'put', id, file, ...where]);
  }

  async function metrics(): Promise<string> {
    return (await fetch(`${facadeUrl}/metrics`)).text();
  }

  async function finished(result: string): Promise<number> {
    return sample(await metrics(), 'strata_facade_prefetches_finished_total', `{result="${result}"}`);
  }

  async function logLines(): Promise<Record<string, unknown>[]> {
    return (await readFile(logFile, 'utf8'))
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  before(async () => {
    work = await tempDir('facade-prefetch');
    store = join(work, 'store');
    reg = await startRegistry();
    busybox = await pushBusybox(reg, 'base/busybox');
    ide = await pushFilesImage(reg, 'ide/code', { layers: [{ 'ide/bin/ide-marker': 'ide marker\n' }] });
    supervisor = await pushFilesImage(reg, 'ide/supervisor', {
      layers: [{ '.supervisor/marker': 'supervisor marker\n' }],
      format: 'docker',
    });
    ideLayer = await pushFilesImage(reg, 'ide/layer', {
      layers: [{ 'ide-layer/marker': 'ide layer marker\n' }],
    });
    await content.start();
    const port = await freePort();
    facadeHost = `127.0.0.1:${port}`;
    facadeUrl = `http://${facadeHost}`;
    storeAddress = `127.0.0.1:${await freePort()}`;
    const config = join(work, 'facade.yaml');
    facadeConfig = config;
    await writeFile(
      config,
      JSON.stringify({
        listen: facadeHost,
        specProviders: { store: { dir: store, listen: storeAddress, writable: true } },
        cache: { dir: join(work, 'cache') },
        plainHttpHosts: [reg.host, content.host],
        // The pull after the upstream stopped composes the spec again from the tags resolved by the
        // prefetch: they must still be trusted then, however slow this machine is.
        tagTtlSeconds: 3600,
        // Only a cancellation cuts a held-back fill within the test.
        upstreamStallTimeoutSeconds: 600,
        // Retries come within a second or two (by default after up to 2, 4 and 8 s).
        prefetch: { concurrency: 2, retries: 4, retryDelaySeconds: 0.3 },
      }),
    );
    logFile = join(work, 'facade.log');
    facade = await spawnFacade({ config, url: facadeUrl, logFile });
    ctrd = await startContainerd();
  });

  after(async () => {
    await ctrd?.stop();
    await facade?.stop();
    await content.stop();
    await reg?.stop();
    if (work) await removeTempDir(work);
  });

  test('removing a spec cancels its prefetch: a fill only it holds stops, one a client reads goes on', async () => {
    const alone = await contentLayer('/alone.tar.gz', 'alone');
    content.hold('/alone.tar.gz');
    await putSpec('alone', { baseRef: busybox.ref, contentLayer: [alone.layer] });
    await waitFor(() => content.requests.get('/alone.tar.gz') === 1, 60_000, {
      what: 'the prefetch to ask the host for the held layer',
    });
    await runCommand(STRATA, ['spec', 'rm', 'alone', '--data-dir', store]);
    await waitFor(async () => (await finished('cancelled')) === 1, 60_000, { what: 'a cancelled prefetch' });
    // The fill was abandoned at once (the stall bound is ten minutes), with the cancellation as reason.
    await waitFor(() => content.cut.get('/alone.tar.gz') === 1, 60_000, { what: 'the fill to let go' });
    const lines = await logLines();
    const fillError = lines.find(
      (l) => l.msg === 'blob fill failed' && l.digest === sha256(alone.gz) && typeof l.err === 'string',
    );
    assert.match(String(fillError?.err), /prefetch of spec "alone" cancelled: the spec was removed/);
    const cancelled = lines.find((l) => l.msg === 'prefetch cancelled');
    assert.equal(cancelled?.id, 'alone');
    content.release('/alone.tar.gz');

    // A client reads the layer while the prefetch fills it: removing the spec does not cut the client.
    const shared = await contentLayer('/shared.tar.gz', 'shared');
    content.hold('/shared.tar.gz');
    await putSpec('shared', { baseRef: busybox.ref, contentLayer: [shared.layer] });
    await waitFor(() => content.requests.get('/shared.tar.gz') === 1, 60_000, {
      what: 'the prefetch to ask the host for the held layer',
    });
    const joinedBefore = sample(await metrics(), 'strata_facade_joined_fetches_total');
    const read = fetch(`${facadeUrl}/v2/remote/shared/blobs/${sha256(shared.gz)}`);
    await waitFor(
      async () => sample(await metrics(), 'strata_facade_joined_fetches_total') === joinedBefore + 1,
      60_000,
      { what: 'the client to join the prefetch’s fill' },
    );
    await runCommand(STRATA, ['spec', 'rm', 'shared', '--address', storeAddress]);
    await waitFor(async () => (await finished('cancelled')) === 2, 60_000, { what: 'the second cancel' });
    content.release('/shared.tar.gz');
    const res = await read;
    assert.equal(res.status, 200);
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(sha256(body), sha256(shared.gz), 'the client got the whole layer');
    assert.equal(content.requests.get('/shared.tar.gz'), 1, 'from the one fill');
    assert.equal(content.cut.get('/shared.tar.gz') ?? 0, 0);
  });

  test('a spec put again with other content cancels the old version’s prefetch: its fill stops, the new version is prefetched', async () => {
    const old = await contentLayer('/old-version.tar.gz', 'old-version');
    content.hold('/old-version.tar.gz');
    const cancelledBefore = await finished('cancelled');
    const completedBefore = await finished('completed');
    await putSpec('edited', { baseRef: busybox.ref, contentLayer: [old.layer] });
    await waitFor(() => content.requests.get('/old-version.tar.gz') === 1, 60_000, {
      what: 'the prefetch to ask the host for the held layer',
    });
    const fresh = await contentLayer('/new-version.tar.gz', 'new-version');
    await putSpec('edited', { baseRef: busybox.ref, contentLayer: [fresh.layer] });
    // The old version's fill is abandoned at once (the stall bound is ten minutes), not run to its end.
    await waitFor(() => content.cut.get('/old-version.tar.gz') === 1, 60_000, {
      what: 'the old fill to let go',
    });
    await waitFor(async () => (await finished('completed')) === completedBefore + 1, 60_000, {
      what: 'the prefetch of the new version',
    });
    assert.equal(await finished('cancelled'), cancelledBefore + 1);
    const cancelled = (await logLines()).find((l) => l.msg === 'prefetch cancelled' && l.id === 'edited');
    assert.match(String(cancelled?.reason), /a new version was put/);
    assert.equal(content.requests.get('/new-version.tar.gz'), 1);
    content.release('/old-version.tar.gz');
  });

  test('a failed prefetch is tried again: the layer the host lacked is fetched once it is there', async () => {
    // The host does not have the layer yet: the first attempt fails, and another follows after a pause.
    const late = await contentLayer('/late.tar.gz', 'late-marker', false);
    const completedBefore = await finished('completed');
    await putSpec('late', { baseRef: busybox.ref, contentLayer: [late.layer] });
    await waitFor(async () => (await finished('retried')) >= 1, 60_000, { what: 'a failed attempt' });
    const failedLine = (await logLines()).find((l) => l.msg === 'prefetch failed');
    assert.equal(failedLine?.id, 'late');
    assert.equal(failedLine?.failedBlobs, 1);
    assert.equal(typeof failedLine?.retryInMs, 'number', JSON.stringify(failedLine));

    content.bodies.set('/late.tar.gz', late.gz);
    await waitFor(async () => (await finished('completed')) === completedBefore + 1, 60_000, {
      what: 'a retry to complete',
    });
    assert.equal(await finished('failed'), 0, 'not given up');
    const fetched = content.requests.get('/late.tar.gz');
    const ref = `${facadeHost}/remote/late:latest`;
    await ctrd.ctr(['images', 'pull', '--plain-http', ref]);
    const out = await ctrd.run(ref, 'late', ['cat', '/workspace/late-marker']);
    assert.equal(out, 'late-marker\n');
    assert.equal(content.requests.get('/late.tar.gz'), fetched, 'the pull was served from the cache');
  });

  test('prefetched after a put through the gRPC API: with the registry and the content-layer host stopped, containerd pulls and runs the composite', async () => {
    const remote = await contentLayer('/remote.tar.gz', 'remote-marker');
    const directTar = await tarOf({ 'workspace/direct-marker': 'direct marker\n' });
    const completedBefore = await finished('completed');
    const startedBefore = sample(await metrics(), 'strata_facade_prefetches_started_total');
    await putSpec(
      'ws1',
      {
        baseRef: busybox.ref,
        ideRef: ide.ref,
        supervisorRef: supervisor.ref,
        ideLayerRef: [ideLayer.ref],
        contentLayer: [remote.layer, { direct: { content: directTar.toString('base64') } }],
      },
      'grpc',
    );
    await waitFor(async () => (await finished('completed')) === completedBefore + 1, 120_000, {
      what: 'the prefetch of ws1 to complete',
    });
    const listed = await runCommand(STRATA, ['spec', 'ls', '--address', storeAddress]);
    assert.ok(listed.split('\n').includes('ws1'), listed);
    const done = (await logLines()).find((l) => l.msg === 'prefetch complete' && l.id === 'ws1');
    // busybox, IDE, supervisor, IDE layer and the remote content layer; the direct one is in the spec.
    assert.equal(done?.blobs, 5, JSON.stringify(done));
    const text = await metrics();
    assert.ok(sample(text, 'strata_facade_prefetch_bytes_total') >= remote.gz.length);
    assert.equal(sample(text, 'strata_facade_prefetches_started_total'), startedBefore + 1);

    await reg.stop();
    await content.stop();
    const ref = `${facadeHost}/remote/ws1:latest`;
    await ctrd.ctr(['images', 'pull', '--plain-http', ref]);
    const out = await ctrd.run(ref, 'ws1', [
      'cat',
      '/ide/bin/ide-marker',
      '/.supervisor/marker',
      '/ide-layer/marker',
      '/workspace/remote-marker',
      '/workspace/direct-marker',
    ]);
    assert.equal(out, 'ide marker\nsupervisor marker\nide layer marker\nremote-marker\ndirect marker\n');
    assert.equal(content.requests.get('/remote.tar.gz'), 1, 'fetched once, by the prefetch');

    // Restarted, the registry and the host still down: the facade composes the spec from the manifests,
    // configs and tag resolutions it kept on disk, and a node that has nothing pulls and runs it.
    await facade.stop();
    facade = await spawnFacade({ config: facadeConfig, url: facadeUrl, logFile });
    await ctrd.stop();
    ctrd = await startContainerd();
    await ctrd.ctr(['images', 'pull', '--plain-http', ref]);
    const again = await ctrd.run(ref, 'ws1-again', ['cat', '/ide/bin/ide-marker']);
    assert.equal(again, 'ide marker\n');
    assert.ok(sample(await metrics(), 'strata_facade_stale_tags_total') >= 1);
  });
});
