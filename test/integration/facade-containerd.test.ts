// Acceptance of the registry facade with the real clients: `strata facade` runs as a child process (config
// file, the own spec store filled with `strata spec put`, and a fixed-spec file) in front of a real
// docker-registry holding busybox, an "IDE", a "supervisor" and an ide_layer_ref image; a small in-test
// HTTP server plays the remote content-layer host (plain HTTP allowed for it by config), and can lie about
// a layer's bytes or hold a layer back. A private containerd 1.6 pulls the composed image and runs it.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { startFacade } from '../../src/server/facade.ts';
import { facadeConfigFrom } from '../../src/server/facade-config.ts';
import { startContainerd, type TestContainerd } from '../helpers/containerd.ts';
import { ContentHost, sha256, tarOf } from '../helpers/content-host.ts';
import { getWrongBlob, spawnFacade } from '../helpers/facade.ts';
import {
  type PushedImage,
  type PushedIndex,
  pushBusybox,
  pushFilesImage,
  pushTwoPlatformIndex,
  skopeoCopy,
  skopeoInspect,
} from '../helpers/images.ts';
import { freePort } from '../helpers/ports.ts';
import { runCommand, type ServerProcess, waitFor } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const STRATA = new URL('../../bin/strata', import.meta.url).pathname;
const BASE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar';
const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';

interface Manifest {
  mediaType: string;
  config: { digest: string; size: number };
  layers: { digest: string; size: number; mediaType: string; urls?: string[] }[];
  annotations?: Record<string, string>;
}

interface ImageConfigJson {
  architecture: string;
  config: { Env?: string[] };
  rootfs: { diff_ids: string[] };
  history?: { created_by?: string }[];
}

async function get(
  url: string,
  init: RequestInit = {},
): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(30_000) });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

/** A sample value from Prometheus text, by name and exact label set (`{a="b",c="d"}` or ''). */
function sample(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** `KEY=value` lines → map (values may hold '=' and spaces). */
function envMap(lines: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const l of lines) {
    const i = l.indexOf('=');
    if (i > 0) out.set(l.slice(0, i), l.slice(i + 1));
  }
  return out;
}

describe('registry facade with containerd, skopeo and strata facade as a process', () => {
  let reg: TestRegistry;
  let busybox: PushedImage;
  let ide: PushedImage;
  let supervisor: PushedImage;
  let ideLayer: PushedImage;
  let multi: PushedIndex;
  let work: string;
  let facade: ServerProcess;
  let facadeUrl: string;
  let facadeHost: string;
  let logFile: string;
  let ctrd: TestContainerd;
  const content = new ContentHost();
  let remoteTarGz: Buffer;
  let remoteTar: Buffer;
  let directTar: Buffer;
  let joinedTar: Buffer;
  let liarTar: Buffer;
  let liarTarGz: Buffer;
  let joinedTarGz: Buffer;

  before(async () => {
    work = await tempDir('facade-ctrd');
    reg = await startRegistry();
    busybox = await pushBusybox(reg, 'base/busybox');
    ide = await pushFilesImage(reg, 'ide/code', {
      layers: [{ 'ide/bin/ide-marker': 'ide marker\n' }],
      env: [
        'GITPOD_ENV_APPEND_PATH=/ide/bin:',
        'GITPOD_ENV_SET_EDITOR=code --wait',
        'GITPOD_ENV_SET_GITPOD_IDE=code',
        // Unprefixed variables of added images are not the workspace's.
        'PATH=/not/the/workspace/path',
        'IDE_ONLY=1',
      ],
    });
    supervisor = await pushFilesImage(reg, 'ide/supervisor', {
      layers: [{ '.supervisor/marker': 'supervisor marker\n' }],
      env: ['GITPOD_ENV_PREPEND_PATH=:/.supervisor', 'GITPOD_ENV_SET_GITPOD_IDE=supervised code'],
      format: 'docker',
    });
    ideLayer = await pushFilesImage(reg, 'ide/layer', {
      layers: [{ 'ide-layer/marker': 'ide layer marker\n' }],
      env: ['GITPOD_ENV_APPEND_PATH=/ide-layer/bin:', 'GITPOD_ENV_SET_EMPTY='],
    });
    multi = await pushTwoPlatformIndex(reg, 'base/multi');

    await content.start();
    remoteTar = await tarOf({ 'workspace/remote-marker': 'remote marker\n' });
    remoteTarGz = gzipSync(remoteTar);
    content.bodies.set('/remote.tar.gz', remoteTarGz);
    // Same length, other bytes: the host lies about the layer.
    liarTar = await tarOf({ 'workspace/liar-marker': 'the layer as it should be\n' });
    liarTarGz = gzipSync(liarTar);
    const lie = Buffer.from(liarTarGz);
    lie[lie.length - 20]! ^= 0xff;
    content.bodies.set('/lie.tar.gz', lie);
    joinedTar = await tarOf({ 'workspace/joined': 'x'.repeat(200_000) });
    joinedTarGz = gzipSync(joinedTar);
    content.bodies.set('/joined.tar.gz', joinedTarGz);
    directTar = await tarOf({ 'workspace/direct-marker': 'direct marker\n' });

    const remoteLayer = (path: string, bytes: Buffer, tar: Buffer) => ({
      remote: {
        url: content.url(path),
        digest: sha256(bytes),
        diffId: sha256(tar),
        mediaType: OCI_LAYER_GZIP,
        size: String(bytes.length),
      },
    });
    // The main spec goes into the own store with the CLI.
    const storeDir = join(work, 'specs');
    const specFile = join(work, 'ws1.json');
    await writeFile(
      specFile,
      JSON.stringify({
        baseRef: busybox.ref,
        ideRef: ide.ref,
        supervisorRef: supervisor.ref,
        ideLayerRef: [ideLayer.ref],
        contentLayer: [
          remoteLayer('/remote.tar.gz', remoteTarGz, remoteTar),
          { direct: { content: directTar.toString('base64') } },
        ],
      }),
    );
    await runCommand(STRATA, ['spec', 'put', 'ws1', specFile, '--data-dir', storeDir]);

    const fixedFile = join(work, 'fixed.yaml');
    await writeFile(
      fixedFile,
      JSON.stringify({
        multi: { baseRef: multi.ref },
        liar: { baseRef: busybox.ref, contentLayer: [remoteLayer('/lie.tar.gz', liarTarGz, liarTar)] },
        joined: {
          baseRef: busybox.ref,
          contentLayer: [remoteLayer('/joined.tar.gz', joinedTarGz, joinedTar)],
        },
      }),
    );
    const port = await freePort();
    facadeHost = `127.0.0.1:${port}`;
    facadeUrl = `http://${facadeHost}`;
    const configFile = join(work, 'facade.yaml');
    await writeFile(
      configFile,
      [
        `listen: "${facadeHost}"`,
        'specProviders:',
        `  store: { dir: "${storeDir}" }`,
        `  fixedFile: "${fixedFile}"`,
        `cache: { dir: "${join(work, 'cache')}", maxBytes: 1GiB }`,
        'platform: linux/amd64',
        `plainHttpHosts: ["${reg.host}", "127.0.0.1:${content.port}"]`,
        '',
      ].join('\n'),
    );
    logFile = join(work, 'facade.log');
    facade = await spawnFacade({ config: configFile, url: facadeUrl, logFile });
    ctrd = await startContainerd();
  });

  after(async () => {
    await ctrd?.stop();
    await facade?.stop();
    await content.stop();
    await reg?.stop();
    if (work) await removeTempDir(work);
  });

  test('containerd pulls remote/<id> and runs it: every layer’s files and the merged env', async () => {
    const ref = `${facadeHost}/remote/ws1:latest`;
    await ctrd.ctr(['images', 'pull', '--plain-http', ref]);
    // containerd got the remote content layer through the facade (which fetched it once), not from the host.
    assert.equal(content.requests.get('/remote.tar.gz'), 1);
    const metrics = (await get(`${facadeUrl}/metrics`)).body.toString();
    assert.equal(sample(metrics, 'strata_facade_upstream_fetches_total', '{source="remote"}'), 1);
    const out = await ctrd.run(ref, 't1', [
      'sh',
      '-c',
      'cat /etc/passwd /ide/bin/ide-marker /.supervisor/marker /ide-layer/marker /workspace/remote-marker /workspace/direct-marker; echo "PATH[$PATH]"; env',
    ]);
    const lines = out.split('\n');
    assert.deepEqual(lines.slice(2, 7), [
      'ide marker',
      'supervisor marker',
      'ide layer marker',
      'remote marker',
      'direct marker',
    ]);
    assert.match(lines[0]!, /^root:x:0:0:/, 'busybox base files are there');
    const expectedPath = `/ide-layer/bin:/ide/bin:${BASE_PATH}:/.supervisor`;
    assert.equal(lines[7], `PATH[${expectedPath}]`);
    const env = envMap(lines.slice(8));
    assert.equal(env.get('PATH'), expectedPath);
    assert.equal(env.get('EDITOR'), 'code --wait');
    assert.equal(env.get('GITPOD_IDE'), 'supervised code');
    assert.equal(env.get('EMPTY'), '');
    assert.equal(env.has('IDE_ONLY'), false);
    assert.deepEqual(
      [...env.keys()].filter((k) => k.startsWith('GITPOD_ENV_')),
      [],
      'the prefixed variables themselves are not set',
    );
  });

  test('skopeo inspects and copies the composed image; layer order and config as the notes say', async () => {
    const ref = `${facadeHost}/remote/ws1:latest`;
    const raw = (await skopeoInspect(ref, { raw: true })) as Manifest;
    const layersOf = async (image: PushedImage) =>
      ((await skopeoInspect(image.ref, { raw: true })) as Manifest).layers.map((l) => l.digest);
    assert.deepEqual(
      raw.layers.map((l) => l.digest),
      [
        ...(await layersOf(busybox)),
        ...(await layersOf(ide)),
        ...(await layersOf(supervisor)),
        ...(await layersOf(ideLayer)),
        sha256(remoteTarGz),
        sha256(directTar),
      ],
    );
    assert.equal(raw.layers.at(-1)?.mediaType, OCI_LAYER);
    assert.equal(raw.annotations?.['io.gitpod.workspace-image.ref'], busybox.ref);
    const baseSize = ((await skopeoInspect(busybox.ref, { raw: true })) as Manifest).layers.reduce(
      (n, l) => n + l.size,
      0,
    );
    assert.equal(raw.annotations?.['io.gitpod.workspace-image.size'], String(baseSize));

    const config = (await skopeoInspect(ref, { config: true })) as ImageConfigJson;
    assert.equal(config.rootfs.diff_ids.length, raw.layers.length);
    assert.equal(config.rootfs.diff_ids.at(-2), sha256(remoteTar));
    assert.equal(config.rootfs.diff_ids.at(-1), sha256(directTar));
    assert.equal(config.history?.length, raw.layers.length, 'one history entry per layer');
    assert.deepEqual(config.config.Env, [
      `PATH=/ide-layer/bin:/ide/bin:${BASE_PATH}:/.supervisor`,
      'EDITOR=code --wait',
      'GITPOD_IDE=supervised code',
      'EMPTY=',
    ]);

    const dir = join(work, 'oci-copy');
    const digest = await skopeoCopy(`docker://${ref}`, `oci:${dir}:ws1`);
    const blob = (d: string) => readFile(join(dir, 'blobs', 'sha256', d.slice(7)));
    const copied = JSON.parse((await blob(digest)).toString()) as Manifest;
    assert.equal(copied.layers.length, raw.layers.length);
    for (const l of [...copied.layers, copied.config]) assert.equal(sha256(await blob(l.digest)), l.digest);
  });

  test('a two-platform base yields the configured platform', async () => {
    // The facade process is configured for linux/amd64: containerd runs it.
    const ref = `${facadeHost}/fixed/multi:latest`;
    await ctrd.ctr(['images', 'pull', '--plain-http', ref]);
    const out = await ctrd.run(ref, 't2', ['cat', '/etc/strata-platform']);
    assert.equal(out, 'linux/amd64\n');
    const amd = (await skopeoInspect(ref, { config: true })) as ImageConfigJson;
    assert.equal(amd.architecture, 'amd64');

    // amd64 is the index's first entry, so ask a facade configured for arm64 too: not manifests[0].
    const armWork = await tempDir('facade-arm');
    const fixedFile = join(armWork, 'fixed.yaml');
    await writeFile(fixedFile, `multi: { baseRef: "${multi.ref}" }\n`);
    const app = await startFacade(
      facadeConfigFrom(
        {
          listen: '127.0.0.1:0',
          specProviders: { fixedFile },
          cache: { dir: join(armWork, 'cache') },
          platform: 'linux/arm64',
          plainHttpHosts: [reg.host],
        },
        armWork,
      ),
      { logger: pino({ level: 'silent' }), registry: new Registry() },
    );
    try {
      const armRef = `${new URL(app.url).host}/fixed/multi:latest`;
      const arm = (await skopeoInspect(armRef, { config: true })) as ImageConfigJson;
      assert.equal(arm.architecture, 'arm64');
      const armRaw = (await skopeoInspect(armRef, { raw: true })) as Manifest;
      const armSource = (await skopeoInspect(`${reg.host}/base/multi@${multi.manifests[1]!.digest}`, {
        raw: true,
      })) as Manifest;
      assert.deepEqual(
        armRaw.layers.map((l) => l.digest),
        armSource.layers.map((l) => l.digest),
      );
      const platformLayer = armRaw.layers.at(-1)!.digest;
      const marker = await get(`${app.url}/v2/fixed/multi/blobs/${platformLayer}`);
      assert.equal(marker.status, 200);
      assert.equal(sha256(marker.body), platformLayer);
    } finally {
      await app.close();
      await removeTempDir(armWork);
    }
  });

  test('a spec that is not there is 404 MANIFEST_UNKNOWN, and containerd says not found', async () => {
    for (const name of ['remote/no-such-ws', 'fixed/no-such-ws']) {
      const res = await get(`${facadeUrl}/v2/${name}/manifests/latest`, {
        headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
      });
      assert.equal(res.status, 404, name);
      assert.equal(JSON.parse(res.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN');
    }
    await assert.rejects(
      ctrd.ctr(['images', 'pull', '--plain-http', `${facadeHost}/remote/no-such-ws:latest`]),
      /not found/,
    );
  });

  test('a remote content layer whose bytes do not match never completes', async () => {
    const ref = `${facadeHost}/fixed/liar:latest`;
    await assert.rejects(ctrd.ctr(['images', 'pull', '--plain-http', ref], { timeoutMs: 60_000 }), (err) => {
      // ctr gave up on the layer (not our time limit), and containerd holds no image of it.
      assert.doesNotMatch(String(err), /killed after/);
      return true;
    });
    assert.doesNotMatch(await ctrd.ctr(['images', 'ls', '-q']), /liar/);
    const m = JSON.parse(
      (await get(`${facadeUrl}/v2/fixed/liar/manifests/latest`)).body.toString(),
    ) as Manifest;
    const layer = m.layers.at(-1)!;
    assert.equal(layer.digest, sha256(liarTarGz));
    await getWrongBlob(`${facadeUrl}/v2/fixed/liar/blobs/${layer.digest}`, layer.size);
    // Nothing wrong was cached: the next attempt goes to the host again, and fails again.
    const before = content.requests.get('/lie.tar.gz') ?? 0;
    await getWrongBlob(`${facadeUrl}/v2/fixed/liar/blobs/${layer.digest}`, layer.size);
    assert.ok((content.requests.get('/lie.tar.gz') ?? 0) > before);
  });

  test('redirect mode: the manifest lists the URL, blobs answer 307, and containerd still pulls and runs it', async () => {
    const rWork = await tempDir('facade-redirect');
    const fixedFile = join(rWork, 'fixed.yaml');
    const tar = await tarOf({ 'workspace/redirected-marker': 'redirected marker\n' });
    const tgz = gzipSync(tar);
    content.bodies.set('/redirected.tar.gz', tgz);
    const url = content.url('/redirected.tar.gz');
    await writeFile(
      fixedFile,
      JSON.stringify({
        r: {
          baseRef: busybox.ref,
          contentLayer: [
            {
              remote: {
                url,
                digest: sha256(tgz),
                diffId: sha256(tar),
                mediaType: OCI_LAYER_GZIP,
                size: String(tgz.length),
              },
            },
          ],
        },
      }),
    );
    const app = await startFacade(
      facadeConfigFrom(
        {
          listen: '127.0.0.1:0',
          specProviders: { fixedFile },
          cache: { dir: join(rWork, 'cache') },
          plainHttpHosts: [reg.host, `127.0.0.1:${content.port}`],
          contentLayers: { redirect: true },
        },
        rWork,
      ),
      { logger: pino({ level: 'silent' }), registry: new Registry() },
    );
    try {
      const m = JSON.parse((await get(`${app.url}/v2/fixed/r/manifests/latest`)).body.toString()) as Manifest;
      const layer = m.layers.at(-1)!;
      assert.deepEqual(layer.urls, [url]);
      const res = await fetch(`${app.url}/v2/fixed/r/blobs/${layer.digest}`, { redirect: 'manual' });
      assert.equal(res.status, 307);
      assert.equal(res.headers.get('location'), url);
      assert.equal(res.headers.get('docker-content-digest'), layer.digest);
      await res.body?.cancel();
      const head = await get(`${app.url}/v2/fixed/r/blobs/${layer.digest}`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.headers.get('content-length'), String(tgz.length));

      const ref = `${new URL(app.url).host}/fixed/r:latest`;
      await ctrd.ctr(['images', 'pull', '--plain-http', ref]);
      const out = await ctrd.run(ref, 't3', ['cat', '/workspace/redirected-marker']);
      assert.equal(out, 'redirected marker\n');
      // The facade never fetched the layer itself.
      assert.equal(app.cache.has(layer.digest as never), false);
      assert.ok((content.requests.get('/redirected.tar.gz') ?? 0) >= 1);
    } finally {
      await app.close();
      await removeTempDir(rWork);
    }
  });

  test('observability: request logs, metrics by route/status/source, joined fetches, health', async () => {
    const health = await get(`${facadeUrl}/healthz`);
    assert.equal(health.status, 200);
    const ready = await get(`${facadeUrl}/readyz`);
    assert.equal(ready.status, 200);
    assert.equal(JSON.parse(ready.body.toString()).ready, true);

    // Eight readers of one uncached remote layer while its host holds the last byte: one fetch, seven join.
    const m = JSON.parse(
      (await get(`${facadeUrl}/v2/fixed/joined/manifests/latest`)).body.toString(),
    ) as Manifest;
    const layer = m.layers.at(-1)!;
    const metricsText = async () => (await get(`${facadeUrl}/metrics`)).body.toString();
    const joinedBefore = sample(await metricsText(), 'strata_facade_joined_fetches_total') ?? 0;
    content.hold('/joined.tar.gz');
    const reads = Array.from({ length: 8 }, () =>
      get(`${facadeUrl}/v2/fixed/joined/blobs/${layer.digest}`, {
        headers: { 'x-request-id': 'joined-read' },
      }),
    );
    await waitFor(
      async () =>
        (sample(await metricsText(), 'strata_facade_joined_fetches_total') ?? 0) - joinedBefore === 7,
      20_000,
      { what: 'seven joined reads' },
    );
    content.release('/joined.tar.gz');
    for (const r of await Promise.all(reads)) {
      assert.equal(r.status, 200);
      assert.equal(sha256(r.body), layer.digest);
    }
    assert.equal(content.requests.get('/joined.tar.gz'), 1);

    const text = await metricsText();
    assert.ok(
      (sample(text, 'strata_facade_http_requests_total', '{route="manifest",method="GET",status="200"}') ??
        0) > 0,
    );
    assert.ok(
      (sample(text, 'strata_facade_http_requests_total', '{route="manifest",method="GET",status="404"}') ??
        0) > 0,
    );
    assert.ok(
      (sample(text, 'strata_facade_http_requests_total', '{route="blob",method="GET",status="200"}') ?? 0) >
        0,
    );
    for (const source of ['upstream', 'remote', 'direct', 'config', 'manifest']) {
      assert.ok((sample(text, 'strata_facade_bytes_served_total', `{source="${source}"}`) ?? 0) > 0, source);
    }
    assert.ok((sample(text, 'strata_facade_upstream_fetches_total', '{source="upstream"}') ?? 0) > 0);
    assert.ok((sample(text, 'strata_facade_upstream_fetches_total', '{source="remote"}') ?? 0) > 0);
    assert.ok((sample(text, 'strata_facade_cache_hits_total') ?? 0) > 0);
    assert.equal(sample(text, 'strata_facade_joined_fetches_total'), joinedBefore + 7);

    // One JSON line per request: id, spec, source, bytes, duration.
    const logs = await waitFor(async () => {
      const lines = (await readFile(logFile, 'utf8'))
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      const joined = lines.filter((l) => l.reqId === 'joined-read');
      return joined.length === 8 ? lines : undefined;
    });
    for (const l of logs.filter((x) => x.reqId === 'joined-read')) {
      assert.equal(l.msg, 'request');
      assert.equal(l.provider, 'fixed');
      assert.equal(l.id, 'joined');
      assert.equal(l.source, 'remote');
      assert.equal(l.bytes, layer.size);
      assert.equal(l.status, 200);
      assert.equal(typeof l.durationMs, 'number');
    }
    const pulled = logs.filter((l) => l.msg === 'request' && l.id === 'ws1' && l.route === 'blob');
    assert.ok(pulled.length > 0);
    for (const l of pulled) {
      assert.equal(typeof l.reqId, 'string');
      assert.equal(l.provider, 'remote');
      assert.ok(['upstream', 'remote', 'direct', 'config'].includes(String(l.source)), String(l.source));
      assert.equal(typeof l.bytes, 'number');
      assert.equal(typeof l.durationMs, 'number');
    }
  });
});
