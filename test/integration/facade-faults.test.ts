// Faults the facade must survive, each with real components: the upstream docker-registry killed in the
// middle of a blob (behind a slowing proxy, so "the middle" is reliable), the spec provider down or silent,
// a cache disk with no room (a 4 MiB tmpfs as the cache dir), a cached file that is not its digest, and
// the registry down or silent when a tag's resolution is due again.
// (A content-layer host that never answers is in hostile-facade.test.ts.)
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { imageSpecJson } from '../../src/api/convert/image-spec-json.ts';
import { createGrpcServer } from '../../src/api/grpc/server.ts';
import { specProviderService } from '../../src/api/services/spec-provider.ts';
import { SpecStore } from '../../src/facade/providers/spec-store.ts';
import type { Digest } from '../../src/oci/digest.ts';
import { type FacadeApp, startFacade } from '../../src/server/facade.ts';
import { facadeConfigFrom } from '../../src/server/facade-config.ts';
import { countingProxy } from '../helpers/counting-proxy.ts';
import { type PushedImage, pushBusybox, pushFilesImage, skopeoCopy } from '../helpers/images.ts';
import { freePort } from '../helpers/ports.ts';
import { runCommand, waitFor, within } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const logger = pino({ level: process.env.FAULTS_LOG ?? 'silent' });
const ACCEPT =
  'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';

interface Manifest {
  config: { digest: string; size: number };
  layers: { digest: string; size: number }[];
}

const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function get(url: string): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(url, { headers: { accept: ACCEPT } });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

async function manifestOf(app: FacadeApp, name: string): Promise<Manifest> {
  const m = await get(`${app.url}/v2/${name}/manifests/latest`);
  assert.equal(m.status, 200, m.body.toString());
  return JSON.parse(m.body.toString()) as Manifest;
}

/** A blob download that resolves with how it ended: in full (`complete`) or broken off. */
function download(url: string): Promise<{ status: number; bytes: Buffer; complete: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      const done = () =>
        resolve({ status: res.statusCode ?? 0, bytes: Buffer.concat(chunks), complete: res.complete });
      res.on('end', done);
      res.on('error', done);
      res.on('aborted', done);
    });
    req.on('error', reject);
    req.end();
  });
}

/** A blob download that reads its first bytes and then nothing more (a client on a link gone quiet). */
interface Stalled {
  /** Reads on to the end: the whole body and whether it came complete. */
  resume(): Promise<{ bytes: Buffer; complete: boolean }>;
  destroy(): void;
}

function stalledDownload(url: string): Promise<Stalled> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      const ended = new Promise<{ bytes: Buffer; complete: boolean }>((done) => {
        const finish = () => done({ bytes: Buffer.concat(chunks), complete: res.complete });
        res.on('end', finish);
        res.on('error', finish);
        res.on('aborted', finish);
      });
      res.once('data', (c: Buffer) => {
        chunks.push(c);
        res.pause();
        resolve({
          resume: () => {
            res.on('data', (more: Buffer) => chunks.push(more));
            res.resume();
            return ended;
          },
          destroy: () => req.destroy(),
        });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

async function metric(app: FacadeApp, line: string): Promise<number> {
  const text = (await get(`${app.url}/metrics`)).body.toString();
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found ? Number(found.split(' ').pop()) : 0;
}

describe('facade faults', () => {
  let reg: TestRegistry;
  let busybox: PushedImage;
  let big: PushedImage;
  let work: string;

  before(async () => {
    work = await tempDir('facade-faults');
    reg = await startRegistry();
    busybox = await pushBusybox(reg, 'base/busybox');
    // A 24 MiB layer of random bytes, stored uncompressed, and a small one.
    big = await pushFilesImage(reg, 'base/big', {
      layers: [{ 'data/big.bin': 24 * 1024 * 1024 }, { 'data/small.txt': 'small' }],
      compression: 'none',
    });
  });

  after(async () => {
    await reg?.stop();
    if (work) await removeTempDir(work);
  });

  async function facade(name: string, specs: Record<string, unknown>, extra: Record<string, unknown> = {}) {
    const fixedFile = join(work, `${name}.json`);
    await writeFile(fixedFile, JSON.stringify(specs));
    const config = facadeConfigFrom(
      {
        listen: '127.0.0.1:0',
        specProviders: { fixedFile },
        cache: { dir: join(work, name, 'cache'), maxBytes: '1GiB' },
        ...extra,
      },
      work,
    );
    return startFacade(config, { logger, registry: new Registry() });
  }

  test('the registry killed mid-blob: the transfer fails, never completes; after it returns the blob resumes with Range', {
    timeout: 180_000,
  }, async (t) => {
    // About 4 MiB/s: the 24 MiB layer takes ~6 s, so the kill lands in the middle.
    const proxy = await countingProxy(reg.url, { bytesPerSecond: 4 * 1024 * 1024 });
    t.after(() => proxy.close());
    const ref = big.ref.replace(reg.host, proxy.host);
    const app = await facade('killed', { ws: { baseRef: ref } }, { plainHttpHosts: [proxy.host] });
    t.after(() => app.close());
    const m = await manifestOf(app, 'fixed/ws');
    const layer = m.layers.find((l) => l.size > 20 * 1024 * 1024)!;
    const url = `${app.url}/v2/fixed/ws/blobs/${layer.digest}`;

    const first = download(url);
    await new Promise((r) => setTimeout(r, 1500));
    await reg.kill();
    const broken = await first;
    assert.equal(broken.status, 200);
    assert.equal(broken.complete, false, 'a broken transfer must not look complete');
    assert.ok(broken.bytes.length < layer.size, `got ${broken.bytes.length} of ${layer.size} bytes`);

    // While the registry is down the blob fails (and nothing wrong is served).
    const down = await download(url);
    assert.ok(down.status >= 500 || !down.complete, `status ${down.status}`);

    await reg.restart();
    const before = proxy.seen.length;
    const again = await download(url);
    assert.equal(again.status, 200);
    assert.equal(again.complete, true);
    assert.equal(sha256(again.bytes), layer.digest);
    const resumed = proxy.seen
      .slice(before)
      .filter((s) => s.method === 'GET' && s.path.endsWith(`/blobs/${layer.digest}`));
    assert.ok(resumed.length > 0);
    const offset = Number(/^bytes=(\d+)-/.exec(resumed[0]!.range ?? '')?.[1] ?? 0);
    assert.ok(offset > 0, `the fill resumed at byte ${offset} (${resumed[0]!.range ?? 'no Range header'})`);
  });

  test("the registry down when a tag is due again: the tag's last digest stands in, and skopeo still copies the image", {
    timeout: 120_000,
  }, async (t) => {
    const proxy = await countingProxy(reg.url);
    let proxyOpen = true;
    t.after(() => (proxyOpen ? proxy.close() : undefined));
    const ref = busybox.ref.replace(reg.host, proxy.host);
    const app = await facade(
      'stale',
      { ws: { baseRef: ref } },
      { plainHttpHosts: [proxy.host], tagTtlSeconds: 0.2 },
    );
    t.after(() => app.close());
    const image = `${new URL(app.url).host}/fixed/ws:latest`;
    const first = await skopeoCopy(image, `dir:${join(work, 'stale-1')}`);

    await proxy.close();
    proxyOpen = false;
    // Past the tag's TTL and the moment a composition is shared for (1 s).
    await new Promise((r) => setTimeout(r, 1200));
    const again = await skopeoCopy(image, `dir:${join(work, 'stale-2')}`);
    assert.equal(again, first);
    assert.ok((await metric(app, 'strata_facade_stale_tags_total')) >= 1);

    // A facade that never resolved the tag has nothing to stand in: the registry's outage is the answer.
    const fresh = await facade('stale-fresh', { ws: { baseRef: ref } }, { plainHttpHosts: [proxy.host] });
    t.after(() => fresh.close());
    const r = await get(`${fresh.url}/v2/fixed/ws/manifests/latest`);
    assert.equal(r.status, 503, r.body.toString());
  });

  test('a registry that accepts connections and never answers: the manifest request fails within the stall bound', {
    timeout: 60_000,
  }, async (t) => {
    const sockets = new Set<Socket>();
    const silent = createTcpServer((s) => {
      sockets.add(s);
      s.on('error', () => {});
    });
    await new Promise<void>((res) => silent.listen(0, '127.0.0.1', res));
    t.after(async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((res) => silent.close(() => res()));
    });
    const host = `127.0.0.1:${(silent.address() as { port: number }).port}`;
    const app = await facade(
      'silent-registry',
      { ws: { baseRef: `${host}/base:latest` } },
      { plainHttpHosts: [host], upstreamStallTimeoutSeconds: 1.5 },
    );
    t.after(() => app.close());
    const started = Date.now();
    const r = await get(`${app.url}/v2/fixed/ws/manifests/latest`);
    const took = Date.now() - started;
    assert.equal(r.status, 504, r.body.toString());
    assert.match(r.body.toString(), /no answer from its registry within 1\.5 s/);
    assert.ok(took >= 1000 && took < 10_000, `took ${took} ms`);
  });

  test('the spec provider down or silent: the manifest request fails within the configured bound, then recovers', {
    timeout: 120_000,
  }, async (t) => {
    const port = await freePort();
    const config = facadeConfigFrom(
      {
        listen: '127.0.0.1:0',
        specProviders: { remote: [{ address: `127.0.0.1:${port}`, timeoutMs: 1500 }], cacheTtlSeconds: 1 },
        cache: { dir: join(work, 'provider', 'cache'), maxBytes: '1GiB' },
      },
      work,
    );
    const app = await startFacade(config, { logger, registry: new Registry() });
    t.after(() => app.close());
    const url = `${app.url}/v2/remote/ws1/manifests/latest`;

    // Accepts connections and never answers: bounded by timeoutMs.
    const sockets = new Set<Socket>();
    const silent = createTcpServer((s) => {
      sockets.add(s);
      s.on('error', () => {});
    });
    await new Promise<void>((res) => silent.listen(port, '127.0.0.1', res));
    let started = Date.now();
    let r = await get(url);
    let took = Date.now() - started;
    for (const s of sockets) s.destroy();
    await new Promise<void>((res) => silent.close(() => res()));
    assert.ok(r.status === 504 || r.status === 503, `status ${r.status}: ${r.body.toString()}`);
    assert.match(r.body.toString(), /spec provider 127\.0\.0\.1:\d+/);
    assert.ok(took >= 1000 && took < 8000, `took ${took} ms`);

    // Nothing listens: refused at once (and while the client backs off from reconnecting).
    started = Date.now();
    r = await get(url);
    took = Date.now() - started;
    assert.equal(r.status, 503, r.body.toString());
    assert.match(r.body.toString(), /spec provider 127\.0\.0\.1:\d+/);
    assert.ok(took < 5000, `took ${took} ms`);

    // The provider comes up: the same request succeeds without restarting the facade.
    const store = new SpecStore(join(work, 'provider', 'store'), imageSpecJson);
    await store.put('ws1', {
      baseRef: busybox.ref,
      ideRef: '',
      supervisorRef: '',
      ideLayerRefs: [],
      contentLayers: [],
    });
    const grpc = createGrpcServer({ logger, services: [specProviderService(store)] });
    await grpc.listenTcp('127.0.0.1', port);
    t.after(() => grpc.shutdown());
    await waitFor(async () => (await get(url)).status === 200, 60_000, {
      what: 'the manifest once the provider is up',
    });
  });

  test('no room on the cache disk (4 MiB tmpfs): a blob too big is streamed uncached, small ones are still cached', {
    timeout: 120_000,
  }, async (t) => {
    const dir = join(work, 'full', 'cache');
    await mkdir(dir, { recursive: true });
    await runCommand('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir]);
    // One hook, in this order: hooks run first to last and stop at a failure, so an unmount refused while
    // the facade still had a cached file open left the facade running and the test process never ended.
    let app: FacadeApp | undefined;
    t.after(async () => {
      await app?.close();
      await runCommand('umount', [dir]);
    });
    app = await facade('full', { ws: { baseRef: big.ref } });
    const m = await manifestOf(app, 'fixed/ws');
    const layer = m.layers.find((l) => l.size > 20 * 1024 * 1024)!;
    for (let i = 0; i < 2; i++) {
      const r = await download(`${app.url}/v2/fixed/ws/blobs/${layer.digest}`);
      assert.equal(r.status, 200);
      assert.equal(r.complete, true);
      assert.equal(sha256(r.bytes), layer.digest);
    }
    assert.equal(await metric(app, 'strata_facade_blob_reads_total{source="upstream",outcome="bypass"}'), 2);
    const small = m.layers.find((l) => l.size < 1024 * 1024)!;
    const s = await download(`${app.url}/v2/fixed/ws/blobs/${small.digest}`);
    assert.equal(sha256(s.bytes), small.digest);
    await waitFor(() => app.cache.has(small.digest as Digest), 5000, { what: 'the small layer cached' });
    assert.equal((await get(`${app.url}/readyz`)).status, 200);
  });

  test("no room on the cache disk: clients that stop reading do not hold up another client's blob", {
    timeout: 180_000,
  }, async (t) => {
    const dir = join(work, 'full-slow', 'cache');
    await mkdir(dir, { recursive: true });
    await runCommand('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir]);
    const stalled: Stalled[] = [];
    let app: FacadeApp | undefined;
    t.after(async () => {
      for (const s of stalled) s.destroy();
      await app?.close();
      await runCommand('umount', [dir]);
    });
    app = await facade(
      'full-slow',
      { ws: { baseRef: big.ref } },
      { connections: { max: 256, perClient: 256 } },
    );
    const m = await manifestOf(app, 'fixed/ws');
    const layer = m.layers.find((l) => l.size > 20 * 1024 * 1024)!;
    const url = `${app.url}/v2/fixed/ws/blobs/${layer.digest}`;
    // As many clients as the registry client keeps connections to one registry (16) start the blob and
    // then stop reading.
    for (let i = 0; i < 16; i++) {
      stalled.push(await within(stalledDownload(url), 30_000, `stalled client ${i}: the first bytes`));
    }
    const fast = await within(download(url), 60_000, 'the blob while other clients have stopped reading');
    assert.equal(fast.status, 200);
    assert.equal(fast.complete, true);
    assert.equal(sha256(fast.bytes), layer.digest);
    // The stalled clients, reading on, still get the whole blob (asked for again from where they were).
    for (const [i, s] of stalled.slice(0, 2).entries()) {
      const r = await within(s.resume(), 60_000, `stalled client ${i} read to the end`);
      assert.equal(r.complete, true);
      assert.equal(sha256(r.bytes), layer.digest);
    }
  });

  test('a cache disk that fails writes (remounted read-only): blobs are served uncached, and the facade says so', {
    timeout: 120_000,
  }, async (t) => {
    const dir = join(work, 'ro', 'cache');
    await mkdir(dir, { recursive: true });
    await runCommand('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir]);
    let app: FacadeApp | undefined;
    t.after(async () => {
      await app?.close();
      await runCommand('umount', ['-l', dir]);
    });
    app = await facade('ro', { ws: { baseRef: big.ref } });
    await runCommand('mount', ['-o', 'remount,ro', dir]);
    const m = await manifestOf(app, 'fixed/ws');
    const small = m.layers.find((l) => l.size < 1024 * 1024)!;
    for (let i = 0; i < 2; i++) {
      const r = await download(`${app.url}/v2/fixed/ws/blobs/${small.digest}`);
      assert.equal(r.status, 200);
      assert.equal(r.complete, true);
      assert.equal(sha256(r.bytes), small.digest);
    }
    assert.equal(await metric(app, 'strata_facade_cache_disk_failing'), 1);
    assert.equal(await metric(app, 'strata_facade_blob_reads_total{source="upstream",outcome="bypass"}'), 2);
    assert.equal(app.cache.has(small.digest as Digest), false);
    const ready = await get(`${app.url}/readyz`);
    assert.equal(ready.status, 503);
  });

  test('an upstream sending other bytes of the right size: the client never gets a whole body, nothing is cached', {
    timeout: 120_000,
  }, async (t) => {
    const probe = await facade('probe-liar', { ws: { baseRef: busybox.ref } });
    const layer = (await manifestOf(probe, 'fixed/ws')).layers[0]!;
    await probe.close();
    const proxy = await countingProxy(reg.url, { lieAbout: layer.digest });
    t.after(() => proxy.close());
    const app = await facade(
      'liar',
      { ws: { baseRef: busybox.ref.replace(reg.host, proxy.host) } },
      {
        plainHttpHosts: [proxy.host],
      },
    );
    t.after(() => app.close());
    const r = await download(`${app.url}/v2/fixed/ws/blobs/${layer.digest}`);
    // A body of Content-Length bytes would read as complete to a client that checks no digest.
    assert.ok(r.bytes.length < layer.size, `got ${r.bytes.length} of ${layer.size} bytes`);
    assert.equal(app.cache.has(layer.digest as Digest), false);
  });

  test('a cached file that is not its digest is found before it is served and fetched again', {
    timeout: 120_000,
  }, async (t) => {
    const proxy = await countingProxy(reg.url);
    t.after(() => proxy.close());
    const ref = busybox.ref.replace(reg.host, proxy.host);
    const specs = { ws: { baseRef: ref } };
    let app = await facade('corrupt', specs, { plainHttpHosts: [proxy.host] });
    const m = await manifestOf(app, 'fixed/ws');
    const layer = m.layers[0]!;
    const url = () => `${app.url}/v2/fixed/ws/blobs/${layer.digest}`;
    assert.equal(sha256((await download(url())).bytes), layer.digest);
    await app.close();

    // Same size, other bytes: only the digest tells.
    const file = join(work, 'corrupt', 'cache', 'blobs', 'sha256', layer.digest.slice('sha256:'.length));
    await chmod(file, 0o644);
    await writeFile(file, Buffer.alloc(layer.size, 0x5a));
    const fetchesBefore = proxy.seen.filter(
      (s) => s.method === 'GET' && s.path.endsWith(layer.digest),
    ).length;

    app = await facade('corrupt', specs, { plainHttpHosts: [proxy.host] });
    t.after(() => app.close());
    const r = await download(url());
    assert.equal(r.status, 200);
    assert.equal(r.complete, true);
    assert.equal(sha256(r.bytes), layer.digest);
    const fetches = proxy.seen.filter((s) => s.method === 'GET' && s.path.endsWith(layer.digest)).length;
    assert.equal(fetches, fetchesBefore + 1, 'fetched again from the registry');
    // And from then on served from the (repaired) cache.
    assert.equal(sha256((await download(url())).bytes), layer.digest);
    assert.equal(
      proxy.seen.filter((s) => s.method === 'GET' && s.path.endsWith(layer.digest)).length,
      fetches,
    );
  });
});
