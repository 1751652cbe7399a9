// Proxy selection as Go's net/http makes it from HTTP_PROXY, HTTPS_PROXY and NO_PROXY: which variable
// wins, which requests each proxy carries, and what NO_PROXY entries match. Requests through a real proxy
// are in test/integration/registry-proxy.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { errorKind } from '../errors.ts';
import { ProxySelector, parseProxyUrl, proxyEnvironment, redactProxy } from './proxy.ts';

test('environment: uppercase wins, an empty variable counts as unset, REQUEST_METHOD means CGI', () => {
  assert.deepEqual(
    proxyEnvironment({ HTTP_PROXY: 'http://upper:1', http_proxy: 'http://lower:1', https_proxy: 'lower:2' }),
    { httpProxy: 'http://upper:1', httpsProxy: 'lower:2', cgi: false },
  );
  assert.deepEqual(proxyEnvironment({ HTTPS_PROXY: '', https_proxy: 'http://lower:2', no_proxy: 'a,b' }), {
    httpsProxy: 'http://lower:2',
    noProxy: 'a,b',
    cgi: false,
  });
  assert.deepEqual(proxyEnvironment({ NO_PROXY: '', no_proxy: 'x', REQUEST_METHOD: 'GET' }), {
    noProxy: 'x',
    cgi: true,
  });
  // Go reads no ALL_PROXY, and neither does Strata.
  assert.deepEqual(proxyEnvironment({ ALL_PROXY: 'http://all:1', all_proxy: 'http://all:1' }), {
    cgi: false,
  });
});

test('proxy values: a URL, or host[:port] taken as http://; unparsable values are ignored', () => {
  const cases: Array<[string, string | undefined]> = [
    ['http://proxy.corp:3128', 'http://proxy.corp:3128/'],
    ['https://proxy.corp', 'https://proxy.corp/'],
    ['proxy.corp:3128', 'http://proxy.corp:3128/'],
    ['127.0.0.1:3128', 'http://127.0.0.1:3128/'],
    ['proxy.corp', 'http://proxy.corp/'],
    ['http://user:p%40ss@proxy.corp:8080', 'http://user:p%40ss@proxy.corp:8080/'],
    ['socks5://proxy.corp:1080', 'socks5://proxy.corp:1080'],
    ['pro xy:3128', undefined],
  ];
  for (const [value, href] of cases) assert.equal(parseProxyUrl(value)?.href, href, value);
  assert.equal(redactProxy(new URL('http://user:secret@proxy.corp:8080/x')), 'http://proxy.corp:8080');
});

test('HTTP_PROXY carries http:// requests only, HTTPS_PROXY https:// ones only', () => {
  const both = new ProxySelector({ httpProxy: 'http://p1:1', httpsProxy: 'http://p2:2' });
  assert.equal(both.proxyFor(new URL('http://reg.example/v2/'))?.host, 'p1:1');
  assert.equal(both.proxyFor(new URL('https://reg.example/v2/'))?.host, 'p2:2');
  const httpOnly = new ProxySelector({ httpProxy: 'http://p1:1' });
  assert.equal(httpOnly.proxyFor(new URL('https://reg.example/v2/')), undefined);
  const httpsOnly = new ProxySelector({ httpsProxy: 'http://p2:2' });
  assert.equal(httpsOnly.proxyFor(new URL('http://reg.example/v2/')), undefined);
  assert.equal(new ProxySelector({}).configured, false);
  assert.equal(new ProxySelector({ httpProxy: 'http://p1:1', noProxy: 'a, *' }).configured, false);
  assert.equal(httpOnly.configured, true);
});

test('localhost and loopback addresses are never proxied, whatever NO_PROXY says', () => {
  const s = new ProxySelector({ httpProxy: 'http://p:1', httpsProxy: 'http://p:1' });
  for (const url of [
    'http://localhost:5000/v2/',
    'https://localhost/v2/',
    'http://127.0.0.1:5000/v2/',
    'http://127.9.8.7/v2/',
    'http://[::1]:5000/v2/',
    'http://[::ffff:127.0.0.1]:5000/v2/',
  ]) {
    assert.equal(s.proxyFor(new URL(url)), undefined, url);
  }
  // As in Go: only the name `localhost` itself; other names (even under .localhost) and 0.0.0.0 are proxied.
  for (const url of ['http://a.localhost/v2/', 'http://localhost.example/v2/', 'http://0.0.0.0:5000/v2/']) {
    assert.equal(s.proxyFor(new URL(url))?.host, 'p:1', url);
  }
});

test('NO_PROXY entries', () => {
  // [NO_PROXY, request URL, goes direct]
  const cases: Array<[string, string, boolean]> = [
    // A domain: that host and every name under it, on any port; a plain suffix test otherwise.
    ['example.com', 'https://example.com/', true],
    ['example.com', 'https://reg.example.com:5000/', true],
    ['example.com', 'https://a.b.example.com/', true],
    ['example.com', 'https://badexample.com/', false],
    ['example.com', 'https://example.com.evil/', false],
    // A leading dot, or `*.`: names under it only.
    ['.example.com', 'https://reg.example.com/', true],
    ['.example.com', 'https://example.com/', false],
    ['*.example.com', 'https://reg.example.com/', true],
    ['*.example.com', 'https://example.com/', false],
    // Case and spaces do not matter; empty entries are skipped.
    [' , Example.COM ,', 'https://REG.example.com/', true],
    // host:port: that port only, the scheme's default port when the URL names none.
    ['reg.example.com:5000', 'https://reg.example.com:5000/', true],
    ['reg.example.com:5000', 'https://reg.example.com:5001/', false],
    ['reg.example.com:443', 'https://reg.example.com/', true],
    ['reg.example.com:80', 'https://reg.example.com/', false],
    ['reg.example.com:80', 'http://reg.example.com/', true],
    ['.example.com:5000', 'https://reg.example.com:5000/', true],
    ['.example.com:5000', 'https://reg.example.com/', false],
    // IP addresses, with or without a port; IPv6 in brackets with a port.
    ['10.1.2.3', 'http://10.1.2.3:5000/', true],
    ['10.1.2.3', 'http://10.1.2.4:5000/', false],
    ['10.1.2.3:5000', 'http://10.1.2.3:5000/', true],
    ['10.1.2.3:5000', 'http://10.1.2.3:5001/', false],
    ['2001:db8::1', 'http://[2001:db8::1]:5000/', true],
    ['[2001:db8::1]:5000', 'http://[2001:db8::1]:5000/', true],
    ['[2001:db8::1]:5000', 'http://[2001:db8::1]:6000/', false],
    // An IPv4 entry matches the same address written IPv4-mapped.
    ['10.1.2.3', 'http://[::ffff:10.1.2.3]/', true],
    // CIDR networks, IPv4 and IPv6; the address need not be the network's first.
    ['10.0.0.0/8', 'http://10.200.3.4/', true],
    ['10.0.0.0/8', 'http://11.0.0.1/', false],
    ['10.9.9.9/8', 'http://10.1.1.1/', true],
    ['2001:db8::/32', 'https://[2001:db8:1::5]/', true],
    ['2001:db8::/32', 'https://[2001:db9::5]/', false],
    ['10.0.0.0/33', 'http://10.0.0.1/', false],
    // Names are not resolved: an IP entry never matches a name, a name entry never an IP.
    ['10.1.2.3', 'http://reg.example.com/', false],
    ['10.0.0.0/8', 'http://reg.example.com/', false],
    ['reg.example.com', 'http://10.1.2.3/', false],
    // `*` alone: nothing is proxied. Elsewhere it is no wildcard.
    ['*', 'https://anything.example/', true],
    ['a.example, *', 'https://b.example/', true],
    ['*example.com', 'https://reg.example.com/', false],
    // Entries without a host are ignored.
    [':5000', 'https://reg.example.com:5000/', false],
    // Names in NO_PROXY are compared in their ASCII (punycode) form, as URL hosts are.
    ['bücher.example', 'https://www.bücher.example/', true],
    // Several entries: any match.
    ['a.example,10.0.0.0/8,.example.com', 'https://reg.example.com/', true],
    ['a.example,10.0.0.0/8,.example.com', 'https://b.example/', false],
  ];
  for (const [noProxy, url, direct] of cases) {
    const s = new ProxySelector({ httpProxy: 'http://p:1', httpsProxy: 'http://p:1', noProxy });
    assert.equal(s.proxyFor(new URL(url)) === undefined, direct, `NO_PROXY=${noProxy} ${url}`);
  }
});

test('CGI: HTTP_PROXY is refused for every http:// request, loopback too; HTTPS_PROXY still applies', () => {
  const s = new ProxySelector({ httpProxy: 'http://p:1', httpsProxy: 'http://p:2', cgi: true });
  for (const url of ['http://reg.example/v2/', 'http://127.0.0.1:5000/v2/']) {
    assert.throws(
      () => s.proxyFor(new URL(url)),
      (err: Error) => errorKind(err) === 'FailedPrecondition' && /REQUEST_METHOD/.test(err.message),
    );
  }
  assert.equal(s.proxyFor(new URL('https://reg.example/v2/'))?.host, 'p:2');
  assert.equal(new ProxySelector({ cgi: true }).proxyFor(new URL('http://reg.example/')), undefined);
});

test('a socks5 proxy, which Go speaks and Strata does not, fails the requests it would carry', () => {
  const s = new ProxySelector({ httpsProxy: 'socks5://user:pw@p:1080', noProxy: 'direct.example' });
  assert.throws(
    () => s.proxyFor(new URL('https://reg.example/v2/')),
    (err: Error) =>
      errorKind(err) === 'FailedPrecondition' &&
      err.message.includes('socks5://p:1080') &&
      !err.message.includes('pw'),
  );
  assert.equal(s.proxyFor(new URL('https://direct.example/v2/')), undefined);
});
