// `strata up` keeps one copy of a blob on the machine. A spec composes a base and an IDE image that live on
// a separate docker-registry; ctr pulls the composite from up's registry through up's daemon: the facade
// fills its cache from docker-registry and ctr stores the same layers, and each layer file exists once
// under the root (the cache is rows of its own namespace on the daemon's store, not a second store).
// `strata pull` of the composite into another namespace then moves no byte. After a restart with a cache
// too small to keep anything, the cache's rows are evicted: a collection keeps the bytes the daemon's
// images still reference, and they go only once those images are deleted.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { isENOENT } from '../../src/content/fs-util.ts';
import { DEFAULT_CACHE_NAMESPACE } from '../../src/facade/blobs/namespace-cache-storage.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { raw } from '../helpers/hosted.ts';
import { pushFilesImage } from '../helpers/images.ts';
import { type ServerProcess, waitFor } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';
import { ctrOk, metricSample, startStrataUp, strata, type UpAddresses } from '../helpers/up.ts';

let work: string;
let root: string;
let config: string;
let upstream: TestRegistry | undefined;
let server: ServerProcess | undefined;
let at: UpAddresses;
let starts = 0;

/** The up config, with the facade's cache cap. */
async function writeConfig(cacheMaxBytes: string): Promise<void> {
  await writeFile(
    config,
    [
      'daemon: { address: strata.sock, snapshotter: native }',
      `registry: { listen: "127.0.0.1:0", plainHttpHosts: ["${upstream!.host}"], cache: { maxBytes: ${cacheMaxBytes} } }`,
      'specs: { listen: "127.0.0.1:0" }',
      'builder: { listen: "127.0.0.1:0", storageDriver: vfs }',
      'metrics: "127.0.0.1:0"',
      '',
    ].join('\n'),
  );
}

async function startUp(): Promise<void> {
  starts++;
  ({ server, at } = await startStrataUp({ work, root, config, n: starts }));
}

async function stopUp(): Promise<void> {
  const proc = server!.proc;
  const exited = once(proc, 'exit');
  process.kill(proc.pid!, 'SIGTERM');
  const [code] = (await exited) as [number | null];
  assert.equal(code, 0);
}

function ctr(args: string[]): Promise<string> {
  return ctrOk(at.socket, args);
}

/** Files anywhere under `dir` named `name` (a blob file is named by its digest's hex). */
async function filesNamed(dir: string, name: string): Promise<number> {
  // Walked again when a directory goes while it is walked (an ingest's, as its write ends): a full-suite
  // run once failed here with ENOENT.
  for (let attempt = 1; ; attempt++) {
    try {
      let n = 0;
      for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
        if (e.name === name && e.isFile()) n++;
      }
      return n;
    } catch (err) {
      if (!isENOENT(err) || attempt >= 10) throw err;
    }
  }
}

/** How many files of each layer are under the root. */
async function copies(layers: string[]): Promise<number[]> {
  return Promise.all(layers.map((d) => filesNamed(root, d.slice('sha256:'.length))));
}

async function metrics(): Promise<string> {
  return (await fetch(`${at.opsUrl}/metrics`)).text();
}

/** Digests the facade cache's namespace holds. */
async function cacheRows(): Promise<string[]> {
  const out = await ctr(['--namespace', DEFAULT_CACHE_NAMESPACE, 'content', 'ls', '-q']);
  return out.split('\n').filter((l) => l.startsWith('sha256:'));
}

/** A collection that starts now, waited for (a lease deleted with --sync). */
async function collect(): Promise<void> {
  const id = (await ctr(['leases', 'create'])).trim().split(/\s+/)[0]!;
  await ctr(['leases', 'rm', '--sync', id]);
}

before(async () => {
  work = await tempDir('strata-up-one-store');
  root = join(work, 'root');
  config = join(work, 'up.yaml');
  upstream = await startRegistry();
  await writeConfig('10GiB');
  await startUp();
});

after(async () => {
  await server?.stop();
  await upstream?.stop();
  if (work) await removeTempDir(work);
});

test('strata up: a layer the facade served and the daemon pulled is one file; eviction frees bytes only through the collector', async () => {
  const base = await pushFilesImage(upstream!, 'base/busybox', {
    busybox: true,
    layers: [{ 'etc/base-marker': 'base\n' }],
  });
  const ide = await pushFilesImage(upstream!, 'ide/code', {
    layers: [{ 'ide/bin/ide-marker': 'ide marker\n' }],
  });
  await strata([
    'spec',
    'put',
    'ws1',
    '--data-dir',
    join(root, 'specs'),
    '--base-ref',
    base.ref,
    '--ide-ref',
    ide.ref,
  ]);
  const composite = `${at.registryHost}/remote/ws1:latest`;
  await ctr(['images', 'pull', '--plain-http', composite]);

  const composed = await raw(at.registryUrl, 'GET', '/v2/remote/ws1/manifests/latest', {
    headers: { accept: `${MediaType.ociManifest}, ${MediaType.dockerManifest}` },
  });
  assert.equal(composed.status, 200);
  const layers = (JSON.parse(composed.body.toString()) as { layers: { digest: string }[] }).layers.map(
    (l) => l.digest,
  );
  assert.equal(layers.length, 3);
  // The facade fetched each layer from docker-registry once (prefetching the spec, or for ctr), and the
  // daemon holds it: one file each (ctr may even find a prefetched layer in the store and fetch nothing).
  const fetches = (m: string) =>
    metricSample(m, 'strata_facade_upstream_fetches_total', ['source="upstream"']);
  const fetched = fetches(await metrics());
  assert.ok(fetched >= layers.length, `upstream fetches: ${fetched}`);
  assert.deepEqual(await copies(layers), [1, 1, 1]);
  assert.deepEqual((await cacheRows()).filter((d) => layers.includes(d)).sort(), [...layers].sort());
  await assert.rejects(stat(join(root, 'facade-cache')), /ENOENT/);
  // The tags the facade resolved are kept in the root, for a restart while the registries are down.
  await waitFor(async () => (await readdir(root)).includes('facade-resolved-tags.json'), 30_000, {
    what: 'the resolved tags file in the root',
  });

  // strata pull of the composite into another namespace: every blob is in the store, none is read from the
  // registry (nor by the registry from docker-registry).
  const pulled = await strata([
    'pull',
    '--plain-http',
    '--address',
    at.socket,
    '--namespace',
    'other',
    '--progress',
    'none',
    composite,
  ]);
  assert.match(pulled, /all \d+ blobs already in the content store, 0 B transferred/);
  const after = await metrics();
  assert.equal(fetches(after), fetched);
  assert.deepEqual(await copies(layers), [1, 1, 1]);

  // A restart with a cache too small for anything: its rows are evicted, and no byte goes with them while
  // the daemon's images reference the layers.
  await stopUp();
  await writeConfig('1');
  await startUp();
  await waitFor(async () => (await cacheRows()).length === 0, 60_000, { what: 'the cache rows evicted' });
  await collect();
  assert.deepEqual(await copies(layers), [1, 1, 1]);

  // Once no image references them either, the collector frees them.
  await ctr(['images', 'rm', '--sync', composite]);
  await ctr(['--namespace', 'other', 'images', 'rm', '--sync', composite]);
  await collect();
  assert.deepEqual(await copies(layers), [0, 0, 0]);
});
