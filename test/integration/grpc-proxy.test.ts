// Strata's gRPC clients behind a forward proxy, as its registry client: `strata facade` with a remote
// spec provider, and `strata spec get --address` (the same SpecProvider client), each in a process whose
// environment names the proxy. Only the proxy
// (test/helpers/forward-proxy.ts) knows the name `specs.proxied.test`, so a call by that name went through
// it. HTTPS_PROXY alone (uppercase, which grpc-js by itself never reads), with credentials and over TLS;
// loopback straight whatever the lowercase variables grpc-js reads say; NO_PROXY honoured under its
// uppercase name. Everything stays on loopback.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { openSpecStore, type ServedSpecStore, serveSpecStore } from '../../src/server/spec-provider.ts';
import { spawnFacade } from '../helpers/facade.ts';
import { envWithoutProxies, startForwardProxy } from '../helpers/forward-proxy.ts';
import { pushMultiLayer } from '../helpers/images.ts';
import { freePort } from '../helpers/ports.ts';
import { runProcess } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { makeSelfSignedCert } from '../helpers/tls-cert.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const BIN = new URL('../../bin/strata', import.meta.url).pathname;
const NAME = 'specs.proxied.test';
const logger = pino({ level: 'silent' });

/** `strata spec get ws1 --address <address>` with these proxy variables (and only these). */
function specGet(address: string, vars: Record<string, string>, extra: string[] = []) {
  return runProcess(BIN, ['spec', 'get', 'ws1', '--address', address, ...extra], {
    env: { ...envWithoutProxies(), ...vars },
    timeoutMs: 60_000,
  });
}

describe('gRPC clients and proxy variables', () => {
  let dir: string;
  let plain: ServedSpecStore;
  let secure: ServedSpecStore;
  let reg: TestRegistry;

  before(async () => {
    dir = await tempDir('grpc-proxy');
    reg = await startRegistry();
    const img = await pushMultiLayer(reg, 'base/app', { layers: 5, layerBytes: 1024 });
    const spec = { ideRef: '', supervisorRef: '', ideLayerRefs: [], contentLayers: [] };
    await openSpecStore(join(dir, 'specs')).put('ws1', { ...spec, baseRef: 'registry.example/base:1' });
    await openSpecStore(join(dir, 'specs')).put('ws2', { ...spec, baseRef: img.ref });
    plain = await serveSpecStore(join(dir, 'specs'), { host: '127.0.0.1', port: 0 }, logger);
    const tls = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') };
    await makeSelfSignedCert({ keyFile: tls.key, certFile: tls.cert, cn: NAME, dns: NAME, days: 1 });
    secure = await serveSpecStore(join(dir, 'specs'), { host: '127.0.0.1', port: 0 }, logger, { tls });
  });

  after(async () => {
    await plain?.shutdown();
    await secure?.shutdown();
    await reg?.stop();
    if (dir) await removeTempDir(dir);
  });

  test('HTTPS_PROXY alone, uppercase: the call goes through the proxy, the name unresolved', async (t) => {
    const proxy = await startForwardProxy({
      routes: { [`${NAME}:${plain.port}`]: `127.0.0.1:${plain.port}` },
      t,
    });
    const r = await specGet(`${NAME}:${plain.port}`, { HTTPS_PROXY: proxy.url });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /registry\.example\/base:1/);
    assert.deepEqual(
      proxy.seen.map((s) => [s.method, s.target]),
      [['CONNECT', `${NAME}:${plain.port}`]],
    );
  });

  test('the facade asks its remote spec provider through the proxy its environment names, uppercase', async (t) => {
    const route = `${NAME}:${plain.port}`;
    const proxy = await startForwardProxy({ routes: { [route]: `127.0.0.1:${plain.port}` }, t });
    const port = await freePort();
    const config = join(dir, 'facade.json');
    await writeFile(
      config,
      JSON.stringify({
        listen: `127.0.0.1:${port}`,
        specProviders: { remote: [route] },
        cache: { dir: join(dir, 'facade-cache'), maxBytes: '1GiB' },
      }),
    );
    const url = `http://127.0.0.1:${port}`;
    const server = await spawnFacade({
      config,
      url,
      logFile: join(dir, 'facade.log'),
      env: { ...envWithoutProxies(), HTTPS_PROXY: proxy.url },
    });
    t.after(() => server.stop());
    const r = await fetch(`${url}/v2/remote/ws2/manifests/latest`, {
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
    });
    assert.equal(r.status, 200, await r.clone().text());
    await r.arrayBuffer();
    // The spec came through the proxy; the registry, on loopback, was reached straight.
    assert.deepEqual(
      proxy.seen.map((s) => [s.method, s.target]),
      [['CONNECT', route]],
    );
  });

  test('proxy credentials from the URL; TLS to the server under its own name through the tunnel', async (t) => {
    const auth = `Basic ${Buffer.from('corp-user:p@ss:word').toString('base64')}`;
    const proxy = await startForwardProxy({
      routes: { [`${NAME}:${secure.port}`]: `127.0.0.1:${secure.port}` },
      authorization: auth,
      t,
    });
    const withCredentials = proxy.url.replace(
      'http://',
      `http://corp-user:${encodeURIComponent('p@ss:word')}@`,
    );
    const r = await specGet(`${NAME}:${secure.port}`, { HTTPS_PROXY: withCredentials }, [
      '--tls-ca',
      join(dir, 'cert.pem'),
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /registry\.example\/base:1/);
    assert.deepEqual(
      proxy.seen.map((s) => [s.method, s.target, s.proxyAuthorization]),
      [['CONNECT', `${NAME}:${secure.port}`, auth]],
    );
  });

  test('loopback is reached straight, whatever proxy the lowercase variables grpc-js reads name', async (t) => {
    // A proxy that refuses every tunnel: a call sent to it would fail.
    const proxy = await startForwardProxy({ routes: {}, refuseConnect: 403, t });
    const everyName = {
      HTTPS_PROXY: proxy.url,
      https_proxy: proxy.url,
      http_proxy: proxy.url,
      grpc_proxy: proxy.url,
    };
    for (const host of ['127.0.0.1', 'localhost']) {
      const r = await specGet(`${host}:${plain.port}`, everyName);
      assert.equal(r.code, 0, `${host}: ${r.stderr}`);
      assert.match(r.stdout, /registry\.example\/base:1/);
    }
    assert.deepEqual(proxy.seen, []);
  });

  test('NO_PROXY, uppercase, sends a name straight; its CIDR entries do not cover names', async (t) => {
    const proxy = await startForwardProxy({
      routes: { [`${NAME}:${plain.port}`]: `127.0.0.1:${plain.port}` },
      t,
    });
    // Straight to a name no resolver knows: the call fails without the proxy being asked.
    const direct = await specGet(`${NAME}:${plain.port}`, {
      HTTPS_PROXY: proxy.url,
      NO_PROXY: `10.0.0.0/8,.proxied.test`,
    });
    assert.notEqual(direct.code, 0);
    assert.deepEqual(proxy.seen, []);
    // A CIDR matches addresses only, as in Go: the name still goes through the proxy.
    const proxied = await specGet(`${NAME}:${plain.port}`, {
      HTTPS_PROXY: proxy.url,
      NO_PROXY: '127.0.0.0/8,::1/128',
    });
    assert.equal(proxied.code, 0, proxied.stderr);
    assert.equal(proxy.seen.length, 1);
  });

  test('HTTP_PROXY alone is not used: a gRPC channel is HTTPS to the proxy rules, as in grpc-go', async (t) => {
    const proxy = await startForwardProxy({
      routes: { [`${NAME}:${plain.port}`]: `127.0.0.1:${plain.port}` },
      t,
    });
    const r = await specGet(`${NAME}:${plain.port}`, { HTTP_PROXY: proxy.url });
    assert.notEqual(r.code, 0);
    assert.deepEqual(proxy.seen, []);
  });

  test('an https:// proxy is refused with the reason, before any connection', async (t) => {
    const proxy = await startForwardProxy({ routes: {}, t });
    const r = await specGet(`${NAME}:${plain.port}`, {
      HTTPS_PROXY: proxy.url.replace('http://', 'https://'),
    });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /not an http:\/\/ proxy/);
    assert.deepEqual(proxy.seen, []);
  });
});
