import assert from 'node:assert/strict';
import { test } from 'node:test';
import { errorKind } from '../../errors.ts';
import { proxyEnvironment } from '../../registry/proxy.ts';
import { channelRoute } from './proxy-route.ts';

const PROXY = 'http://proxy.corp:3128';
const DIRECT = { 'grpc.enable_http_proxy': 0 };

/** Where a channel to `address` goes under `env`: 'direct', or the CONNECT target through the proxy. */
function way(address: string, env: Record<string, string>): string {
  const r = channelRoute(address, proxyEnvironment(env));
  if (r.target === address) {
    assert.deepEqual(r.options, DIRECT);
    return 'direct';
  }
  assert.equal(r.target, 'dns:proxy.corp:3128');
  assert.equal(r.options['grpc.enable_http_proxy'], 0);
  return String(r.options['grpc.http_connect_target']);
}

test('the uppercase HTTPS_PROXY is read; the name is tunnelled unresolved, with its authority', () => {
  const r = channelRoute('specs.example:5051', proxyEnvironment({ HTTPS_PROXY: PROXY }));
  assert.deepEqual(r, {
    target: 'dns:proxy.corp:3128',
    options: {
      'grpc.enable_http_proxy': 0,
      'grpc.http_connect_target': 'dns:specs.example:5051',
      'grpc.default_authority': 'specs.example:5051',
    },
    via: 'http://proxy.corp:3128',
  });
  // The uppercase name wins over the lowercase one, as in Go.
  assert.equal(
    way('specs.example:5051', { HTTPS_PROXY: PROXY, https_proxy: 'http://other:1' }),
    'dns:specs.example:5051',
  );
});

test('a channel is https:// to the rules: HTTP_PROXY alone is not used', () => {
  assert.equal(way('specs.example:5051', { HTTP_PROXY: PROXY }), 'direct');
  assert.equal(way('specs.example:5051', { http_proxy: PROXY, grpc_proxy: PROXY }), 'direct');
});

test('NO_PROXY CIDR entries, IPv4 and IPv6, send the addresses in them straight, and only those', () => {
  const env = { HTTPS_PROXY: PROXY, NO_PROXY: '10.0.0.0/8, fd00::/8' };
  assert.equal(way('10.1.2.3:5051', env), 'direct');
  assert.equal(way('[fd00::5]:5051', env), 'direct');
  assert.equal(way('11.1.2.3:5051', env), 'dns:11.1.2.3:5051');
  // A name is not resolved to be matched against a network.
  assert.equal(way('ten.example:5051', env), 'dns:ten.example:5051');
});

test('NO_PROXY names are domains, not suffixes of any text; `*` sends everything straight', () => {
  const env = { HTTPS_PROXY: PROXY, NO_PROXY: 'example.com' };
  assert.equal(way('specs.example.com:5051', env), 'direct');
  assert.equal(way('example.com:5051', env), 'direct');
  assert.equal(way('notexample.com:5051', env), 'dns:notexample.com:5051');
  assert.equal(way('specs.example.com:5051', { HTTPS_PROXY: PROXY, NO_PROXY: '*' }), 'direct');
});

test('loopback and localhost are never proxied, unix sockets neither', () => {
  const env = { HTTPS_PROXY: PROXY };
  for (const a of [
    '127.0.0.1:5051',
    '127.9.9.9:5051',
    'localhost:5051',
    '[::1]:5051',
    'dns:///localhost:1',
  ]) {
    assert.equal(way(a, env), 'direct', a);
  }
  assert.equal(way('unix:///run/strata.sock', env), 'direct');
});

test('dns: targets and targets without a port (gRPC: 443) go by the same rules', () => {
  const env = { HTTPS_PROXY: PROXY };
  assert.equal(way('dns:///specs.example:5051', env), 'dns:specs.example:5051');
  assert.equal(way('dns:specs.example:5051', env), 'dns:specs.example:5051');
  assert.equal(way('specs.example', env), 'dns:specs.example:443');
  // The :authority is the address's own, as on a direct channel: the tunnel alone names gRPC's port.
  for (const [a, authority] of [
    ['specs.example', 'specs.example'],
    ['dns:///specs.example', 'specs.example'],
    ['dns:///specs.example:5051', 'specs.example:5051'],
  ]) {
    assert.equal(channelRoute(a!, proxyEnvironment(env)).options['grpc.default_authority'], authority, a);
  }
  assert.equal(way('specs.example', { ...env, NO_PROXY: 'specs.example:443' }), 'direct');
});

test("the proxy's credentials go as its Basic credentials, decoded; none are in the proxy named", () => {
  const r = channelRoute(
    'specs.example:5051',
    proxyEnvironment({
      HTTPS_PROXY: `http://corp%40user:${encodeURIComponent('p@ss:word')}@proxy.corp:3128`,
    }),
  );
  assert.equal(r.options['grpc.http_connect_creds'], 'corp@user:p@ss:word');
  assert.equal(r.via, 'http://proxy.corp:3128');
  const port80 = channelRoute('specs.example:5051', proxyEnvironment({ HTTPS_PROXY: 'proxy.corp' }));
  assert.equal(port80.target, 'dns:proxy.corp:80');
});

test('a proxy gRPC cannot reach (https://, socks5://) is FailedPrecondition', () => {
  for (const p of ['https://proxy.corp:3129', 'socks5://proxy.corp:1080']) {
    assert.throws(
      () => channelRoute('specs.example:5051', proxyEnvironment({ HTTPS_PROXY: p })),
      (err: unknown) => errorKind(err) === 'FailedPrecondition',
      p,
    );
  }
  // Not asked when the target goes straight anyway.
  assert.equal(way('127.0.0.1:1', { HTTPS_PROXY: 'socks5://proxy.corp:1080' }), 'direct');
});

test('an IPv6 address the proxy would be asked for is FailedPrecondition, saying how to go straight', () => {
  // grpc-js would send `CONNECT fe80::5:5051`, without the brackets an authority needs.
  const env = proxyEnvironment({
    HTTPS_PROXY: `http://user:${encodeURIComponent('s3cret')}@proxy.corp:3128`,
  });
  for (const a of ['[fe80::5]:5051', 'dns:///[2001:db8::1]:5051', '2001:db8::1']) {
    assert.throws(
      () => channelRoute(a, env),
      (err: unknown) => {
        assert.equal(errorKind(err), 'FailedPrecondition');
        assert.match((err as Error).message, /NO_PROXY/);
        assert.match((err as Error).message, /proxy http:\/\/proxy\.corp:3128 /);
        assert.doesNotMatch((err as Error).message, /s3cret|user/);
        return true;
      },
      a,
    );
  }
  // Sent straight by NO_PROXY, as the message says.
  assert.equal(way('[fe80::5]:5051', { HTTPS_PROXY: PROXY, NO_PROXY: 'fe80::/10' }), 'direct');
});

test('an address that is no host and port is InvalidArgument naming it, with a proxy set or not', () => {
  for (const a of [
    'bad host:5051',
    'exa^mple:5051',
    'specs.example:99999',
    'specs.example:port',
    'user@specs.example:5051',
    'specs.example/x:5051',
    'dns:///bad host:5051',
  ]) {
    for (const env of [{ HTTPS_PROXY: PROXY }, { HTTPS_PROXY: PROXY, NO_PROXY: '*' }, {}]) {
      assert.throws(
        () => channelRoute(a, proxyEnvironment(env)),
        (err: unknown) => {
          assert.equal(errorKind(err), 'InvalidArgument');
          assert.equal(
            (err as Error).message,
            `gRPC server address must be HOST[:PORT], got ${JSON.stringify(a)}`,
          );
          return true;
        },
        `${a} ${JSON.stringify(env)}`,
      );
    }
  }
});
