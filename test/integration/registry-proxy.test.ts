// Outgoing registry traffic through a forward proxy, as behind a corporate one: `strata pull` with
// HTTP_PROXY in its environment, HTTPS tunnelled with CONNECT, NO_PROXY, proxy credentials, and a proxy
// that is down, refuses or never answers. The proxy (test/helpers/forward-proxy.ts) alone knows the name
// `registry.proxied.test`, so a pull by that name went through it. Everything stays on loopback.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, request as httpRequest, type IncomingMessage } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { after, before, describe, test } from 'node:test';
import { errorKind } from '../../src/errors.ts';
import { urlBlob } from '../../src/facade/blobs/url-blob.ts';
import { digestOf } from '../../src/oci/digest.ts';
import type { ParsedManifest } from '../../src/oci/manifest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { parseReference } from '../../src/oci/reference.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { HttpClient } from '../../src/registry/http.ts';
import { startDaemon } from '../helpers/daemon.ts';
import { envWithoutProxies, startForwardProxy } from '../helpers/forward-proxy.ts';
import { type PushedImage, pushMultiLayer } from '../helpers/images.ts';
import { freePort } from '../helpers/ports.ts';
import { runProcess } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { makeSelfSignedCert } from '../helpers/tls-cert.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const BIN = new URL('../../bin/strata', import.meta.url).pathname;
const NAME = 'registry.proxied.test';
const USER = 'corp-user';
const PASSWORD = 'p@ss:word';
const PROXY_AUTH = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
/** A proxy URL with the credentials in it, percent-encoded as a URL carries them. */
const withCredentials = (proxyUrl: string): string =>
  proxyUrl.replace('http://', `http://${USER}:${encodeURIComponent(PASSWORD)}@`);
const QUICK = { retry: { attempts: 2, baseDelayMs: 1, maxDelayMs: 1 } };

let reg: TestRegistry;
let img: PushedImage;
let dir: string;
/** `https://registry.proxied.test` as the proxy reaches it: TLS in front of the registry. */
let tlsFront: { host: string; seen: IncomingMessage['headers'][]; close(): Promise<void> };
let ca: string;

before(async () => {
  reg = await startRegistry();
  img = await pushMultiLayer(reg, 'team/app', { layers: 5, layerBytes: 8 * 1024 });
  dir = await tempDir('registry-proxy');
  await makeSelfSignedCert({
    keyFile: join(dir, 'key.pem'),
    certFile: join(dir, 'cert.pem'),
    cn: NAME,
    dns: NAME,
    days: 1,
  });
  ca = await readFile(join(dir, 'cert.pem'), 'utf8');
  const seen: IncomingMessage['headers'][] = [];
  const server = createHttpsServer({ key: await readFile(join(dir, 'key.pem')), cert: ca }, (req, res) => {
    seen.push(req.headers);
    const up = httpRequest(`${reg.url}${req.url}`, { method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  tlsFront = {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
});

after(async () => {
  await tlsFront?.close();
  await reg?.stop();
  if (dir) await removeTempDir(dir);
});

describe('through a proxy', () => {
  test('strata pull honours HTTP_PROXY (credentials in it become Proxy-Authorization)', async (t) => {
    const proxy = await startForwardProxy({
      routes: { [`${NAME}:80`]: reg.host },
      authorization: PROXY_AUTH,
      t,
    });
    const daemon = await startDaemon({ t });
    const ref = `${NAME}/team/app:latest`;
    // The lowercase variable points nowhere: the uppercase one wins, as in Go.
    const env = {
      ...envWithoutProxies(),
      http_proxy: 'http://127.0.0.1:1',
      HTTP_PROXY: withCredentials(proxy.url),
    };
    const r = await runProcess(
      BIN,
      ['pull', '--address', daemon.address, '--plain-http', '--no-unpack', '--progress', 'none', ref],
      { env, timeoutMs: 120_000 },
    );
    assert.equal(r.code, 0, `strata pull failed:\n${r.stderr}\n${r.stdout}`);
    assert.match(r.stdout, new RegExp(`pulled ${ref} ${img.digest}`));
    // Every request went through the proxy, in absolute form, with the credentials.
    const targets = proxy.seen.map((s) => s.target);
    assert.ok(targets.includes(`http://${NAME}/v2/team/app/manifests/latest`), targets.join('\n'));
    assert.equal(targets.filter((u) => u.includes('/blobs/sha256:')).length, img.layers + 1);
    for (const s of proxy.seen) assert.equal(s.proxyAuthorization, PROXY_AUTH);
    const listed = await daemon.ctrOk(['images', 'ls', '-q']);
    assert.match(listed, new RegExp(`^${ref}$`, 'm'));
  });

  test('HTTPS is tunnelled with CONNECT: resolve, manifest and blobs, the registry certificate checked', async (t) => {
    const proxy = await startForwardProxy({
      routes: { [`${NAME}:443`]: tlsFront.host },
      authorization: PROXY_AUTH,
      t,
    });
    const earlier = tlsFront.seen.length;
    const client = new RegistryClient({
      hosts: { ca: [ca] },
      proxy: { httpsProxy: withCredentials(proxy.url) },
    });
    t.after(() => client.close());
    const ref = parseReference(`${NAME}/team/app:latest`);
    const desc = await client.resolve(ref);
    assert.equal(desc.digest, img.digest);
    const fetched = await client.fetchManifest(ref, { descriptor: desc });
    assert.equal(fetched.parsed.kind, 'manifest');
    const { manifest } = fetched.parsed as Extract<ParsedManifest, { kind: 'manifest' }>;
    for (const blob of [manifest.config, ...manifest.layers]) {
      const bytes = await buffer(await client.fetchBlob(ref, blob));
      assert.equal(digestOf(bytes), blob.digest);
    }
    assert.ok(proxy.seen.length > 0);
    for (const s of proxy.seen) {
      assert.deepEqual(s, { method: 'CONNECT', target: `${NAME}:443`, proxyAuthorization: PROXY_AUTH });
    }
    // The registry saw the requests inside the tunnel, and never the proxy's credentials.
    const inside = tlsFront.seen.slice(earlier);
    assert.ok(inside.length >= 2 + manifest.layers.length);
    for (const h of inside) assert.equal(h['proxy-authorization'], undefined);
    assert.equal(inside[0]?.host, NAME);

    // Without the CA the registry's certificate is refused, through the tunnel as directly.
    const untrusting = new RegistryClient({ proxy: { httpsProxy: withCredentials(proxy.url) }, ...QUICK });
    t.after(() => untrusting.close());
    await assert.rejects(untrusting.resolve(ref), (err: Error) => {
      assert.equal(errorKind(err), 'Unavailable');
      assert.match(err.message, /certificate/i);
      return true;
    });
  });

  test('NO_PROXY: a matching host goes direct, others through the proxy', async (t) => {
    // 0.0.0.0 reaches this machine's loopback directly, yet is no loopback address to Go: it is proxied
    // unless NO_PROXY names it. The proxy reaches the registry by that name too, so either way works and
    // only the proxy's log tells them apart.
    const port = reg.host.split(':')[1]!;
    const domain = `0.0.0.0:${port}`;
    const proxy = await startForwardProxy({ routes: { [domain]: reg.host }, t });
    const resolveWith = async (noProxy?: string): Promise<number> => {
      const seen = proxy.seen.length;
      const client = new RegistryClient({
        hosts: { insecure: [domain] },
        proxy: { httpProxy: proxy.url, ...(noProxy === undefined ? {} : { noProxy }) },
      });
      try {
        const desc = await client.resolve(parseReference(`${domain}/team/app:latest`));
        assert.equal(desc.digest, img.digest);
      } finally {
        await client.close();
      }
      return proxy.seen.length - seen;
    };
    assert.ok((await resolveWith()) > 0, 'without NO_PROXY the request goes through the proxy');
    assert.ok((await resolveWith('example.com,0.0.0.1')) > 0, 'entries that do not match change nothing');
    for (const noProxy of ['0.0.0.0', domain, '0.0.0.0/8', 'example.com, 0.0.0.0', '*']) {
      assert.equal(await resolveWith(noProxy), 0, `NO_PROXY=${noProxy}`);
    }
    assert.ok((await resolveWith(`0.0.0.0:${Number(port) + 1}`)) > 0, 'another port is not bypassed');
  });

  test("a content layer's URL and a redirect from it each take the proxy their host needs", async (t) => {
    const body = Buffer.from('content layer bytes through the proxy');
    const storage = createHttpServer((req, res) => {
      if (req.url === '/blob') res.writeHead(200, { 'content-length': body.length }).end(body);
      else res.writeHead(302, { location: 'http://storage.proxied.test/blob', 'content-length': 0 }).end();
    });
    await new Promise<void>((resolve) => storage.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise<void>((resolve) => storage.close(() => resolve())));
    const at = `127.0.0.1:${(storage.address() as AddressInfo).port}`;
    const proxy = await startForwardProxy({
      routes: { 'layers.proxied.test:80': at, 'storage.proxied.test:80': at },
      t,
    });
    const http = new HttpClient({ proxy: { httpProxy: proxy.url } });
    t.after(() => http.close());
    const desc = { mediaType: MediaType.ociLayer, digest: digestOf(body), size: body.length };
    const read = await buffer(await urlBlob(http, new URL('http://layers.proxied.test/layer'), desc).open());
    assert.deepEqual(read, body);
    assert.deepEqual(
      proxy.seen.map((s) => s.target),
      ['http://layers.proxied.test/layer', 'http://storage.proxied.test/blob'],
    );
  });
});

describe('when the proxy fails', () => {
  const ref = parseReference(`${NAME}/team/app:latest`);
  const plain = { insecure: [NAME] };

  test('a proxy that is down: Unavailable naming the proxy, never its credentials', async (t) => {
    const port = await freePort();
    const proxyUrl = withCredentials(`http://127.0.0.1:${port}`);
    for (const [hosts, proxy] of [
      [plain, { httpProxy: proxyUrl }],
      [{}, { httpsProxy: proxyUrl }],
    ] as const) {
      const client = new RegistryClient({ hosts, proxy, ...QUICK });
      t.after(() => client.close());
      await assert.rejects(client.resolve(ref), (err: Error) => {
        assert.equal(errorKind(err), 'Unavailable');
        assert.match(
          err.message,
          new RegExp(`via proxy http://127\\.0\\.0\\.1:${port}\\): cannot reach the proxy`),
        );
        assert.match(err.message, /ECONNREFUSED/);
        assert.doesNotMatch(err.message, /p@ss|p%40ss|corp-user/);
        return true;
      });
    }
  });

  test('CONNECT answered with a refusal: Unavailable naming the proxy, the target and the status', async (t) => {
    const proxy = await startForwardProxy({ routes: {}, refuseConnect: 403, t });
    const client = new RegistryClient({ proxy: { httpsProxy: withCredentials(proxy.url) }, ...QUICK });
    t.after(() => client.close());
    await assert.rejects(client.resolve(ref), (err: Error) => {
      assert.equal(errorKind(err), 'Unavailable');
      assert.match(
        err.message,
        new RegExp(`via proxy ${proxy.url}\\): the proxy answered CONNECT ${NAME}:443 with 403`),
      );
      assert.doesNotMatch(err.message, /p@ss|p%40ss|corp-user/);
      return true;
    });
    // A refusal is an answer: not asked again.
    assert.equal(proxy.seen.length, 1);
  });

  test('wrong proxy credentials: the 407 is reported as such, forwarded or tunnelled', async (t) => {
    const proxy = await startForwardProxy({
      routes: { [`${NAME}:80`]: reg.host, [`${NAME}:443`]: tlsFront.host },
      authorization: PROXY_AUTH,
      t,
    });
    const wrong = proxy.url.replace('http://', 'http://corp-user:nope@');
    for (const [hosts, proxySettings, said] of [
      [plain, { httpProxy: wrong }, /the proxy asks for authentication \(407\)/],
      [
        { ca: [ca] },
        { httpsProxy: wrong },
        /the proxy answered CONNECT registry\.proxied\.test:443 with 407/,
      ],
    ] as const) {
      const client = new RegistryClient({ hosts, proxy: proxySettings, ...QUICK });
      t.after(() => client.close());
      await assert.rejects(client.resolve(ref), (err: Error) => {
        assert.equal(errorKind(err), 'Unavailable');
        assert.match(err.message, said);
        assert.doesNotMatch(err.message, /nope/);
        return true;
      });
    }
  });

  test('a proxy that never answers is bounded by the client timeouts', async (t) => {
    const proxy = await startForwardProxy({ routes: {}, silent: true, t });
    for (const [hosts, settings] of [
      [plain, { httpProxy: proxy.url }],
      [{}, { httpsProxy: proxy.url }],
    ] as const) {
      const client = new RegistryClient({
        hosts,
        proxy: settings,
        timeouts: { headersMs: 300 },
        retry: { attempts: 1 },
      });
      t.after(() => client.close());
      const started = performance.now();
      await assert.rejects(client.resolve(ref), (err: Error) => {
        assert.equal(errorKind(err), 'DeadlineExceeded');
        assert.match(err.message, new RegExp(`via proxy ${proxy.url}\\): timed out waiting for headers`));
        return true;
      });
      // undici's timers tick coarsely (about a second here); its own default would be 300 s.
      assert.ok(performance.now() - started < 5_000, 'bounded by headersMs, not undici defaults');
    }
    assert.deepEqual(
      proxy.seen.map((s) => s.method),
      ['HEAD', 'CONNECT'],
    );
  });
});
