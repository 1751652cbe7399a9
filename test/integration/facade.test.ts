// The registry facade end to end: a real docker-registry holds busybox and an "IDE" image pushed by the
// harness; the facade composes them from specs (fixed file and own store) and skopeo pulls the result.
// A small in-test HTTP server plays a remote content-layer host that lies about its bytes.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { pack as tarPack } from 'tar-stream';
import { imageSpecJson } from '../../src/api/convert/image-spec-json.ts';
import { SpecStore } from '../../src/facade/providers/spec-store.ts';
import { digestOf } from '../../src/oci/digest.ts';
import { type FacadeApp, startFacade } from '../../src/server/facade.ts';
import { facadeConfigFrom } from '../../src/server/facade-config.ts';
import { getWrongBlob } from '../helpers/facade.ts';
import {
  imageTools,
  type PushedImage,
  pushBusybox,
  pushMultiLayer,
  skopeoCopy,
  skopeoInspect,
  skopeoListTags,
} from '../helpers/images.ts';
import { waitFor } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const logger = pino({ level: 'silent' });

async function tarOf(files: Record<string, string>): Promise<Buffer> {
  const p = tarPack();
  for (const [name, body] of Object.entries(files)) p.entry({ name, mode: 0o644, mtime: new Date(0) }, body);
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function sha256(b: Uint8Array): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

interface Manifest {
  mediaType: string;
  config: { digest: string; size: number };
  layers: { digest: string; size: number; mediaType: string }[];
  annotations?: Record<string, string>;
}

async function get(
  url: string,
  init: RequestInit = {},
): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const res = await fetch(url, init);
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

/** A GET with the path sent as written (fetch would resolve `..` before sending). */
function rawGet(url: string): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  const path = url.slice(u.origin.length);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, path }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function metricValue(app: FacadeApp, name: string, labels = ''): Promise<number> {
  const res = await get(`${app.url}/metrics`);
  const line = res.body
    .toString()
    .split('\n')
    .find((l) => l.startsWith(`${name}${labels} `) || (labels === '' && l.startsWith(`${name} `)));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('registry facade', () => {
  let reg: TestRegistry;
  let busybox: PushedImage;
  let ide: PushedImage;
  let other: PushedImage;
  let work: string;
  let app: FacadeApp;
  let lying: Server;
  let lyingPort: number;
  let lyingRequests = 0;
  const goodBytes = Buffer.alloc(300 * 1024, 7);
  const badBytes = Buffer.alloc(300 * 1024, 9);
  let directTar: Buffer;

  before(async () => {
    reg = await startRegistry();
    busybox = await pushBusybox(reg, 'base/busybox');
    ide = await pushMultiLayer(reg, 'ide/code', { layers: 5, layerBytes: 256 * 1024 });
    other = await pushMultiLayer(reg, 'ide/other', { layers: 5, layerBytes: 512 * 1024 });
    work = await tempDir('facade-test');
    directTar = await tarOf({ 'workspace/hello.txt': 'hello from a direct layer\n' });

    lying = createServer((_req, res) => {
      lyingRequests++;
      res.writeHead(200, { 'content-length': badBytes.length });
      res.end(badBytes);
    });
    await new Promise<void>((r) => lying.listen(0, '127.0.0.1', r));
    lyingPort = (lying.address() as AddressInfo).port;

    const fixed = {
      ws1: {
        baseRef: busybox.ref,
        ideRef: ide.ref,
        contentLayer: [{ direct: { content: directTar.toString('base64') } }],
      },
      plain: { baseRef: busybox.ref },
      liar: {
        baseRef: busybox.ref,
        contentLayer: [
          {
            remote: {
              url: `http://127.0.0.1:${lyingPort}/layer.tar`,
              digest: sha256(goodBytes),
              diffId: '',
              mediaType: 'application/vnd.oci.image.layer.v1.tar',
              size: String(goodBytes.length),
            },
          },
        ],
      },
    };
    const fixedFile = join(work, 'fixed.json');
    await writeFile(fixedFile, JSON.stringify(fixed));
    const storeDir = join(work, 'store');
    await new SpecStore(storeDir, imageSpecJson).put('ws-store', {
      baseRef: busybox.ref,
      ideRef: other.ref,
      supervisorRef: '',
      ideLayerRefs: [],
      contentLayers: [],
    });
    const config = facadeConfigFrom(
      {
        listen: '127.0.0.1:0',
        specProviders: { fixedFile, store: { dir: storeDir } },
        cache: { dir: join(work, 'cache'), maxBytes: '1GiB' },
        plainHttpHosts: [`127.0.0.1:${lyingPort}`],
        // The blob tests below start uncached (prefetch has a test of its own).
        prefetch: { enabled: false },
      },
      work,
    );
    app = await startFacade(config, { logger, registry: new Registry() });
  });

  after(async () => {
    await app?.close();
    await new Promise<void>((r) => (lying ? lying.close(() => r()) : r()));
    if (work) await removeTempDir(work);
    await reg?.stop();
  });

  test('base endpoint, health, and refusals', async () => {
    const base = await get(`${app.url}/v2/`);
    assert.equal(base.status, 200);
    assert.equal(base.body.toString(), '{}');
    assert.equal(base.headers.get('docker-distribution-api-version'), 'registry/2.0');
    assert.equal((await get(`${app.url}/healthz`)).status, 200);
    const ready = await get(`${app.url}/readyz`);
    assert.equal(ready.status, 200, ready.body.toString());

    for (const method of ['PUT', 'POST', 'PATCH', 'DELETE']) {
      const r = await get(`${app.url}/v2/fixed/ws1/manifests/latest`, { method });
      assert.equal(r.status, 405, method);
      assert.equal(JSON.parse(r.body.toString()).errors[0].code, 'UNSUPPORTED');
    }
    const upload = await get(`${app.url}/v2/fixed/ws1/blobs/uploads/`, { method: 'POST' });
    assert.equal(upload.status, 405);

    const unknown = await get(`${app.url}/v2/remote/not-a-valid-image/manifests/latest`);
    assert.equal(unknown.status, 404);
    assert.equal(JSON.parse(unknown.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN');
    const unknownFixed = await get(`${app.url}/v2/fixed/nope/manifests/latest`);
    assert.equal(JSON.parse(unknownFixed.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN');
    const noProvider = await get(`${app.url}/v2/other/x/manifests/latest`);
    assert.equal(noProvider.status, 404);

    const badName = await get(`${app.url}/v2/fixed/UPPER/manifests/latest`);
    assert.equal(badName.status, 400);
    assert.equal(JSON.parse(badName.body.toString()).errors[0].code, 'NAME_INVALID');
    const badDigest = await get(`${app.url}/v2/fixed/ws1/blobs/sha256:abc`);
    assert.equal(badDigest.status, 400);
    assert.equal(JSON.parse(badDigest.body.toString()).errors[0].code, 'DIGEST_INVALID');
  });

  test('skopeo inspects and copies a composed image', async () => {
    const host = new URL(app.url).host;
    const raw = (await skopeoInspect(`${host}/fixed/ws1:latest`, { raw: true })) as Manifest;
    const busyboxRaw = (await skopeoInspect(busybox.ref, { raw: true })) as Manifest;
    const ideRaw = (await skopeoInspect(ide.ref, { raw: true })) as Manifest;
    assert.equal(raw.layers.length, busyboxRaw.layers.length + ideRaw.layers.length + 1);
    assert.deepEqual(
      raw.layers.slice(0, busyboxRaw.layers.length).map((l) => l.digest),
      busyboxRaw.layers.map((l) => l.digest),
    );
    assert.equal(raw.layers.at(-1)?.digest, sha256(directTar));
    assert.equal(raw.annotations?.['io.gitpod.workspace-image.ref'], busybox.ref);

    const config = (await skopeoInspect(`${host}/fixed/ws1:latest`, { config: true })) as {
      rootfs: { diff_ids: string[] };
    };
    assert.equal(config.rootfs.diff_ids.length, raw.layers.length);

    const dir = join(work, 'copy-ws1');
    const digest = await skopeoCopy(`docker://${host}/fixed/ws1:latest`, `oci:${dir}:ws1`);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as {
      manifests: { digest: string }[];
    };
    assert.equal(index.manifests[0]?.digest, digest);
    // skopeo may recompress the uncompressed direct layer for the layout, so check the copy on its own terms.
    const blob = (d: string) => readFile(join(dir, 'blobs', 'sha256', d.slice(7)));
    const copied = JSON.parse((await blob(digest)).toString()) as Manifest;
    assert.equal(copied.layers.length, raw.layers.length);
    for (const l of [...copied.layers, copied.config]) assert.equal(sha256(await blob(l.digest)), l.digest);
    assert.deepEqual(
      copied.layers.slice(0, -1).map((l) => l.digest),
      raw.layers.slice(0, -1).map((l) => l.digest),
    );

    // The own spec store serves remote/<id>.
    const stored = (await skopeoInspect(`${host}/remote/ws-store:latest`, { raw: true })) as Manifest;
    assert.equal(stored.layers.length, busyboxRaw.layers.length + other.layers);
  });

  test('as a new user tries it: buildah pull, images and rmi; skopeo copy to dir:; curl of what a registry refuses', async (t) => {
    const host = new URL(app.url).host;
    const ref = `${host}/fixed/ws1:latest`;
    const tools = await imageTools();
    t.after(() => tools.cleanup());
    const id = (await tools.buildah(['pull', '--quiet', '--tls-verify=false', ref])).trim();
    assert.match(id, /^[0-9a-f]{64}$/);
    const listed = await tools.buildah(['images', '--format', '{{.Name}}:{{.Tag}} {{.ID}}']);
    assert.match(listed, new RegExp(`^${host}/fixed/ws1:latest\\s+${id.slice(0, 12)}$`, 'm'));
    await tools.buildah(['rmi', ref]);
    assert.doesNotMatch(await tools.buildah(['images', '--format', '{{.Name}}']), /fixed\/ws1/);

    const dir = join(work, 'dir-ws1');
    const digest = await skopeoCopy(`docker://${ref}`, `dir:${dir}`);
    assert.equal(sha256(await readFile(join(dir, 'manifest.json'))), digest);
    const copied = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as Manifest;
    for (const l of [...copied.layers, copied.config])
      assert.equal(sha256(await readFile(join(dir, l.digest.slice(7)))), l.digest);

    const code = async (r: Promise<{ status: number; body: Buffer }>) => {
      const { status, body } = await r;
      return `${status} ${JSON.parse(body.toString()).errors[0].code}`;
    };
    assert.equal(await code(get(`${app.url}/v2/_catalog`)), '405 UNSUPPORTED');
    // The composed manifest is OCI: a client that accepts only Docker's media type gets what
    // distribution answers for one (404 MANIFEST_UNKNOWN), not a manifest it cannot read.
    const dockerOnly = { accept: 'application/vnd.docker.distribution.manifest.v2+json' };
    assert.equal(
      await code(get(`${app.url}/v2/fixed/ws1/manifests/latest`, { headers: dockerOnly })),
      '404 MANIFEST_UNKNOWN',
    );
    // Path traversal reaches no file and no other repository: a plain one matches no route (404), an
    // escaped one is a repository name that is not valid (400 NAME_INVALID).
    for (const [path, status] of [
      ['/v2/fixed/../../etc/passwd', 404],
      ['/v2/fixed/%2e%2e/%2e%2e/etc/passwd/manifests/latest', 400],
    ] as const) {
      const res = await rawGet(`${app.url}${path}`);
      assert.equal(res.status, status, path);
      assert.doesNotMatch(res.body, /root:/);
      if (status === 400) assert.equal(JSON.parse(res.body).errors[0].code, 'NAME_INVALID');
    }
  });

  test('tags/list: skopeo inspect (with its tag listing) and list-tags work on composed repositories', async () => {
    const host = new URL(app.url).host;
    // Plain `skopeo inspect` lists the repository's tags too (RepoTags); it failed on a 405 before.
    for (const repo of ['fixed/ws1', 'remote/ws-store']) {
      const inspected = (await skopeoInspect(`${host}/${repo}:latest`)) as {
        Name: string;
        RepoTags: string[];
        Layers: string[];
      };
      assert.equal(inspected.Name, `${host}/${repo}`);
      assert.deepEqual(inspected.RepoTags, ['latest']);
      assert.ok(inspected.Layers.length > 1);
      assert.deepEqual(await skopeoListTags(`${host}/${repo}`), ['latest']);
    }
    await assert.rejects(skopeoListTags(`${host}/fixed/nope`), /fetching tags list: .*404/);

    const list = await get(`${app.url}/v2/fixed/ws1/tags/list`);
    assert.equal(list.status, 200);
    assert.equal(list.headers.get('content-type'), 'application/json');
    assert.deepEqual(JSON.parse(list.body.toString()), { name: 'fixed/ws1', tags: ['latest'] });
    const page = async (q: string) =>
      JSON.parse((await get(`${app.url}/v2/fixed/ws1/tags/list?${q}`)).body.toString()).tags;
    assert.deepEqual(await page('n=1'), ['latest']);
    assert.deepEqual(await page('n=0'), []);
    assert.deepEqual(await page('last=latest'), []);
    assert.deepEqual(await page('last=a'), ['latest']);
    const bad = await get(`${app.url}/v2/fixed/ws1/tags/list?n=-1`);
    assert.equal(bad.status, 400);
    assert.equal(JSON.parse(bad.body.toString()).errors[0].code, 'PAGINATION_NUMBER_INVALID');
    for (const path of ['fixed/nope', 'remote/not-there', 'other/x']) {
      const unknown = await get(`${app.url}/v2/${path}/tags/list`);
      assert.equal(unknown.status, 404, path);
      assert.equal(JSON.parse(unknown.body.toString()).errors[0].code, 'NAME_UNKNOWN');
    }
  });

  test('a manifest asked for by digest is exactly those bytes, or 404', async () => {
    const accept =
      'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';
    const head = await get(`${app.url}/v2/fixed/ws1/manifests/latest`, {
      method: 'HEAD',
      headers: { accept },
    });
    assert.equal(head.status, 200);
    const digest = head.headers.get('docker-content-digest');
    assert.ok(digest);
    assert.equal(head.body.length, 0);
    const byDigest = await get(`${app.url}/v2/fixed/ws1/manifests/${digest}`, { headers: { accept } });
    assert.equal(byDigest.status, 200);
    assert.equal(digestOf(byDigest.body), digest);
    assert.equal(byDigest.headers.get('content-length'), String(byDigest.body.length));
    assert.equal(byDigest.headers.get('etag'), `"${digest}"`);

    const other = `sha256:${'0'.repeat(64)}`;
    const missing = await get(`${app.url}/v2/fixed/ws1/manifests/${other}`, { headers: { accept } });
    assert.equal(missing.status, 404);
    assert.equal(JSON.parse(missing.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN');
    // Another spec's manifest digest is not this spec's.
    const plainHead = await get(`${app.url}/v2/fixed/plain/manifests/latest`, { method: 'HEAD' });
    const cross = await get(
      `${app.url}/v2/fixed/ws1/manifests/${plainHead.headers.get('docker-content-digest')}`,
    );
    assert.equal(cross.status, 404);

    const notAccepted = await get(`${app.url}/v2/fixed/ws1/manifests/latest`, {
      headers: { accept: 'application/vnd.oci.image.index.v1+json' },
    });
    assert.equal(notAccepted.status, 404);
    assert.equal(JSON.parse(notAccepted.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN');
  });

  test('blobs: HEAD from the descriptor, GET verified, Range, 416, and other specs’ blobs unreachable', async () => {
    const m = JSON.parse((await get(`${app.url}/v2/fixed/ws1/manifests/latest`)).body.toString()) as Manifest;
    const layer = m.layers[1]!; // an IDE layer, not fetched yet
    const fetchesBefore = await metricValue(
      app,
      'strata_facade_upstream_fetches_total',
      '{source="upstream"}',
    );
    const head = await get(`${app.url}/v2/fixed/ws1/blobs/${layer.digest}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(layer.size));
    assert.equal(head.headers.get('docker-content-digest'), layer.digest);
    assert.equal(head.headers.get('accept-ranges'), 'bytes');
    assert.equal(
      await metricValue(app, 'strata_facade_upstream_fetches_total', '{source="upstream"}'),
      fetchesBefore,
      'HEAD must not fetch the blob',
    );

    const range = await get(`${app.url}/v2/fixed/ws1/blobs/${layer.digest}`, {
      headers: { range: 'bytes=10-99' },
    });
    assert.equal(range.status, 206);
    assert.equal(range.headers.get('content-range'), `bytes 10-99/${layer.size}`);
    assert.equal(range.body.length, 90);

    const full = await get(`${app.url}/v2/fixed/ws1/blobs/${layer.digest}`);
    assert.equal(full.status, 200);
    assert.equal(sha256(full.body), layer.digest);
    assert.deepEqual(range.body, full.body.subarray(10, 100));
    const suffix = await get(`${app.url}/v2/fixed/ws1/blobs/${layer.digest}`, {
      headers: { range: 'bytes=-5' },
    });
    assert.equal(suffix.status, 206);
    assert.deepEqual(suffix.body, full.body.subarray(full.body.length - 5));

    const past = await get(`${app.url}/v2/fixed/ws1/blobs/${layer.digest}`, {
      headers: { range: `bytes=${layer.size}-` },
    });
    assert.equal(past.status, 416);
    assert.equal(past.headers.get('content-range'), `bytes */${layer.size}`);

    const config = await get(`${app.url}/v2/fixed/ws1/blobs/${m.config.digest}`);
    assert.equal(config.status, 200);
    assert.equal(sha256(config.body), m.config.digest);

    // The IDE layer is not part of the plain spec's image, cached or not.
    const cross = await get(`${app.url}/v2/fixed/plain/blobs/${layer.digest}`);
    assert.equal(cross.status, 404);
    assert.equal(JSON.parse(cross.body.toString()).errors[0].code, 'BLOB_UNKNOWN');
    const random = await get(`${app.url}/v2/fixed/ws1/blobs/sha256:${'1'.repeat(64)}`);
    assert.equal(random.status, 404);
    assert.equal(JSON.parse(random.body.toString()).errors[0].code, 'BLOB_UNKNOWN');
  });

  test('20 concurrent GETs of one uncached blob make one upstream fetch', async () => {
    const m = JSON.parse(
      (await get(`${app.url}/v2/remote/ws-store/manifests/latest`)).body.toString(),
    ) as Manifest;
    const layer = m.layers.at(-1)!;
    assert.equal(app.cache.has(layer.digest as never), false);
    const before = await metricValue(app, 'strata_facade_upstream_fetches_total', '{source="upstream"}');
    const joinedBefore = await metricValue(app, 'strata_facade_joined_fetches_total');
    const hitsBefore = await metricValue(app, 'strata_facade_cache_hits_total');
    const bodies = await Promise.all(
      Array.from({ length: 20 }, () => get(`${app.url}/v2/remote/ws-store/blobs/${layer.digest}`)),
    );
    for (const b of bodies) {
      assert.equal(b.status, 200);
      assert.equal(sha256(b.body), layer.digest);
    }
    assert.equal(
      await metricValue(app, 'strata_facade_upstream_fetches_total', '{source="upstream"}'),
      before + 1,
    );
    // The other 19 followed the fill, or (if it was already done) read the cached file.
    const joined = (await metricValue(app, 'strata_facade_joined_fetches_total')) - joinedBefore;
    const hits = (await metricValue(app, 'strata_facade_cache_hits_total')) - hitsBefore;
    assert.equal(joined + hits, 19);
    assert.ok(joined > 0, 'at least one request joined the running fill');
    assert.equal(app.cache.has(layer.digest as never), true);
  });

  test('a remote content layer with wrong bytes never completes', async () => {
    const m = JSON.parse(
      (await get(`${app.url}/v2/fixed/liar/manifests/latest`)).body.toString(),
    ) as Manifest;
    const layer = m.layers.at(-1)!;
    assert.equal(layer.digest, sha256(goodBytes));
    for (let i = 0; i < 2; i++) {
      await getWrongBlob(`${app.url}/v2/fixed/liar/blobs/${layer.digest}`, layer.size);
    }
    assert.ok(lyingRequests >= 1);
    assert.equal(app.cache.has(layer.digest as never), false);
  });

  test('/metrics shows the counters', async () => {
    const text = (await get(`${app.url}/metrics`)).body.toString();
    for (const name of [
      'strata_facade_http_requests_total',
      'strata_facade_bytes_served_total',
      'strata_facade_upstream_fetches_total',
      'strata_facade_cache_hits_total',
      'strata_facade_cache_misses_total',
      'strata_facade_joined_fetches_total',
      'strata_facade_http_in_flight',
    ]) {
      assert.match(text, new RegExp(`^${name}`, 'm'), name);
    }
    assert.ok((await metricValue(app, 'strata_facade_cache_hits_total')) > 0);
  });
});

describe('facade blob cache cap', () => {
  test('least recently used blobs are evicted past the byte cap', async (t) => {
    const reg = await startRegistry({ t });
    const busybox = await pushBusybox(reg, 'base/busybox');
    const ide = await pushMultiLayer(reg, 'ide/cap', { layers: 5, layerBytes: 200 * 1024 });
    const work = await tempDir('facade-cap');
    t.after(() => removeTempDir(work));
    const fixedFile = join(work, 'fixed.yaml');
    await writeFile(fixedFile, `ws:\n  baseRef: ${busybox.ref}\n  ideRef: ${ide.ref}\n`);
    const app = await startFacade(
      facadeConfigFrom(
        {
          listen: '127.0.0.1:0',
          specProviders: { fixedFile },
          cache: { dir: join(work, 'cache'), maxBytes: 500 * 1024 },
        },
        work,
      ),
      { logger, registry: new Registry() },
    );
    t.after(() => app.close());
    const m = JSON.parse((await get(`${app.url}/v2/fixed/ws/manifests/latest`)).body.toString()) as Manifest;
    // The five random layers (about 200 KiB each, incompressible).
    const [a, b, c] = m.layers.slice(-5);
    // The cache also keeps the images' manifests and configs (small): only the layers are looked at.
    const layers = new Set(m.layers.map((l) => l.digest));
    const cachedLayers = () => app.cache.cachedDigests().filter((d) => layers.has(d));
    for (const l of [a!, b!])
      assert.equal((await get(`${app.url}/v2/fixed/ws/blobs/${l.digest}`)).status, 200);
    assert.deepEqual(cachedLayers(), [a!.digest, b!.digest]);
    // Touch a so that b is the least recently used, then fill c.
    assert.equal((await get(`${app.url}/v2/fixed/ws/blobs/${a!.digest}`)).status, 200);
    assert.equal((await get(`${app.url}/v2/fixed/ws/blobs/${c!.digest}`)).status, 200);
    assert.deepEqual(cachedLayers(), [a!.digest, c!.digest]);
    assert.ok(app.cache.bytes <= 500 * 1024);
    // An evicted blob is fetched again and still right.
    const again = await get(`${app.url}/v2/fixed/ws/blobs/${b!.digest}`);
    assert.equal(sha256(again.body), b!.digest);
  });
});

describe('facade state on disk', () => {
  test('resolved tags and upstream manifests are kept beside the cache; a cache dir removed under the facade is not made again at close', async (t) => {
    const reg = await startRegistry({ t });
    const busybox = await pushBusybox(reg, 'base/busybox');
    const work = await tempDir('facade-state');
    t.after(() => removeTempDir(work));
    const fixedFile = join(work, 'fixed.yaml');
    await writeFile(fixedFile, `ws:\n  baseRef: ${busybox.ref}\n`);
    const start = (cacheDir: string) =>
      startFacade(
        facadeConfigFrom(
          { listen: '127.0.0.1:0', specProviders: { fixedFile }, cache: { dir: cacheDir } },
          work,
        ),
        {
          logger,
          registry: new Registry(),
        },
      );
    const first = await start(join(work, 'cache'));
    assert.equal((await get(`${first.url}/v2/fixed/ws/manifests/latest`)).status, 200);
    await first.close();
    const tags = JSON.parse(await readFile(join(work, 'cache', 'resolved-tags.json'), 'utf8')) as {
      ref: string;
    }[];
    assert.deepEqual(
      tags.map((e) => e.ref),
      [busybox.ref],
    );

    // A facade with writes still due (the tag file, the manifest and config) whose cache dir is removed
    // before it stops: nothing is written there any more.
    const gone = join(work, 'cache-removed');
    const second = await start(gone);
    assert.equal((await get(`${second.url}/v2/fixed/ws/manifests/latest`)).status, 200);
    await rm(gone, { recursive: true });
    await second.close();
    assert.equal(existsSync(gone), false, 'the cache dir was made again');
  });
});

describe('facade upstream changes', () => {
  test('a moved tag is seen once its resolution expires; the old manifest stays servable by digest', async (t) => {
    const reg = await startRegistry({ t });
    const busybox = await pushBusybox(reg, 'base/busybox');
    const v1 = await pushMultiLayer(reg, 'ide/moving', { layerBytes: 1024 });
    const work = await tempDir('facade-moving');
    t.after(() => removeTempDir(work));
    const fixedFile = join(work, 'fixed.yaml');
    await writeFile(fixedFile, `ws:\n  baseRef: ${busybox.ref}\n  ideRef: ${v1.ref}\n`);
    const app = await startFacade(
      facadeConfigFrom(
        {
          listen: '127.0.0.1:0',
          specProviders: { fixedFile },
          cache: { dir: join(work, 'cache') },
          tagTtlSeconds: 0.2,
        },
        work,
      ),
      { logger, registry: new Registry() },
    );
    t.after(() => app.close());
    const manifest = async () => {
      const r = await get(`${app.url}/v2/fixed/ws/manifests/latest`);
      assert.equal(r.status, 200);
      return {
        digest: r.headers.get('docker-content-digest')!,
        m: JSON.parse(r.body.toString()) as Manifest,
      };
    };
    const first = await manifest();
    const oldLayer = first.m.layers.at(-1)!;

    const v2 = await pushMultiLayer(reg, 'ide/moving', { layerBytes: 2048 });
    assert.notEqual(v2.digest, v1.digest);
    const second = await waitFor(
      async () => {
        const now = await manifest();
        return now.digest !== first.digest ? now : undefined;
      },
      15_000,
      { what: 'the facade to see the moved tag' },
    );
    assert.notEqual(second.m.layers.at(-1)!.digest, oldLayer.digest);
    const newLayer = await get(`${app.url}/v2/fixed/ws/blobs/${second.m.layers.at(-1)!.digest}`);
    assert.equal(newLayer.status, 200);

    // A pull that got the first manifest can still finish.
    const old = await get(`${app.url}/v2/fixed/ws/manifests/${first.digest}`);
    assert.equal(old.status, 200);
    assert.equal(digestOf(old.body), first.digest);
    const oldBlob = await get(`${app.url}/v2/fixed/ws/blobs/${oldLayer.digest}`);
    assert.equal(oldBlob.status, 200);
    assert.equal(sha256(oldBlob.body), oldLayer.digest);
  });

  test('upstream credentials: the docker auth file is re-read when it changes', async (t) => {
    const reg = await startRegistry({ auth: { mode: 'basic', users: { alice: 'right-password' } }, t });
    const busybox = await pushBusybox(reg, 'base/busybox');
    const work = await tempDir('facade-auth');
    t.after(() => removeTempDir(work));
    const authFile = join(work, 'config.json');
    const writeAuth = (password: string) =>
      writeFile(
        authFile,
        JSON.stringify({
          auths: { [reg.host]: { auth: Buffer.from(`alice:${password}`).toString('base64') } },
        }),
      );
    await writeAuth('wrong-password');
    const fixedFile = join(work, 'fixed.yaml');
    await writeFile(fixedFile, `ws:\n  baseRef: ${busybox.ref}\n`);
    const app = await startFacade(
      facadeConfigFrom(
        {
          listen: '127.0.0.1:0',
          specProviders: { fixedFile },
          cache: { dir: join(work, 'cache') },
          dockerAuth: authFile,
          plainHttpHosts: [reg.host],
        },
        work,
      ),
      { logger, registry: new Registry() },
    );
    t.after(() => app.close());
    // The registry refusing the facade is not the client's failure: no 401 (which would want a challenge
    // and tells clients their own credentials are wrong), but a bad gateway naming the refusal.
    const denied = await get(`${app.url}/v2/fixed/ws/manifests/latest`);
    assert.equal(denied.status, 502);
    assert.equal(denied.headers.get('www-authenticate'), null);
    const error = (JSON.parse(denied.body.toString()) as { errors: { code: string; message: string }[] })
      .errors[0]!;
    assert.equal(error.code, 'DENIED');
    assert.match(error.message, /registry answered 401/);
    await writeAuth('right-password');
    const ok = await waitFor(
      async () => {
        const r = await get(`${app.url}/v2/fixed/ws/manifests/latest`);
        return r.status === 200 ? r : undefined;
      },
      15_000,
      { what: 'the facade to use the new credentials' },
    );
    const m = JSON.parse(ok.body.toString()) as Manifest;
    const layer = await get(`${app.url}/v2/fixed/ws/blobs/${m.layers[0]!.digest}`);
    assert.equal(layer.status, 200);
    assert.equal(sha256(layer.body), m.layers[0]!.digest);
  });
});
