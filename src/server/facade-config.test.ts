import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isInvalidArgument } from '../errors.ts';
import { parseByteSize, parseFacadeConfig, plainHttpAllowed } from './facade-config.ts';

test('a full config is read, relative paths against the config dir', () => {
  const c = parseFacadeConfig(
    `
listen: 127.0.0.1:7000
prefix: gitpod
tls: { cert: tls.crt, key: tls.key }
specProviders:
  remote:
    - address: ws-manager:8080
      timeoutMs: 2000
      tls: { ca: ca.pem }
    - other:9000
  fixedFile: fixed.yaml
  store: { dir: specs, listen: "127.0.0.1:7001", writable: true }
staticLayers:
  - ref: registry.example/supervisor:1
  - file: layers/extra.tar.gz
cache: { dir: /var/cache/facade, maxBytes: 2GiB }
platform: linux/arm64
plainHttpHosts: [registry.local:5000]
contentLayers: { redirect: true }
tagTtlSeconds: 5
tagStaleIfErrorSeconds: 600
upstreamStallTimeoutSeconds: 7.5
connections: { max: 5000, perClient: 100, headerTimeoutSeconds: 5 }
`,
    '/etc/strata',
  );
  assert.deepEqual(c.listen, { host: '127.0.0.1', port: 7000 });
  assert.equal(c.prefix, 'gitpod/');
  assert.equal(c.tls?.cert, '/etc/strata/tls.crt');
  assert.equal(c.specProviders.remote[0]?.tls?.ca, '/etc/strata/ca.pem');
  assert.equal(c.specProviders.remote[1]?.address, 'other:9000');
  assert.equal(c.specProviders.store?.dir, '/etc/strata/specs');
  assert.equal(c.specProviders.store?.writable, true);
  assert.deepEqual(
    parseFacadeConfig(
      'specProviders: { store: { dir: s, listen: "127.0.0.1:1", tls: { cert: a.crt, key: a.key, clientCa: ca.pem } } }',
      '/etc/strata',
    ).specProviders.store?.tls,
    { cert: '/etc/strata/a.crt', key: '/etc/strata/a.key', clientCa: '/etc/strata/ca.pem' },
  );
  assert.equal(
    parseFacadeConfig('specProviders: { store: s }', '/').specProviders.store?.writable,
    undefined,
  );
  assert.deepEqual(
    parseFacadeConfig(
      'specProviders: { store: { dir: s, listen: "127.0.0.1:1", connections: { max: 64, idleSeconds: 30 } } }',
      '/',
    ).specProviders.store?.connections,
    { max: 64, idleMs: 30_000 },
  );
  assert.deepEqual(c.staticLayers[1], { file: '/etc/strata/layers/extra.tar.gz' });
  assert.equal(c.cache.maxBytes, 2 * 1024 ** 3);
  assert.equal(c.platform.architecture, 'arm64');
  assert.equal(c.contentLayers.redirect, true);
  assert.equal(c.tagTtlMs, 5000);
  assert.equal(c.tagStaleIfErrorMs, 600_000);
  assert.equal(parseFacadeConfig('{}', '/').tagStaleIfErrorMs, 24 * 3600_000);
  assert.equal(parseFacadeConfig('tagStaleIfErrorSeconds: 0', '/').tagStaleIfErrorMs, 0);
  assert.equal(c.upstreamStallMs, 7500);
  assert.equal(parseFacadeConfig('{}', '/').upstreamStallMs, 20_000);
  assert.deepEqual(c.connections, { max: 5000, perClient: 100, headerTimeoutMs: 5000 });
  // Unset caps are fitted to the open-file limit when the facade starts.
  assert.deepEqual(parseFacadeConfig('{}', '/').connections, { headerTimeoutMs: 10_000 });
  const allowed = plainHttpAllowed(c);
  assert.equal(allowed('registry.local:5000'), true);
  assert.equal(allowed('registry.local:5001'), false);
});

test('bad configs name the key', () => {
  const cases: [string, RegExp][] = [
    ['listne: x', /listne: unknown key/],
    ['tagStaleIfErrorSeconds: -1', /tagStaleIfErrorSeconds: want a number of at least 0/],
    ['listen: nope', /listen: want host:port/],
    ['cache: { maxBytes: 10XB }', /cache.maxBytes/],
    ['staticLayers: [{ ref: a, file: b }]', /staticLayers\[0\]: want exactly one/],
    ['staticLayers: [{ ref: "UPPER CASE" }]', /staticLayers\[0\].ref/],
    ['specProviders: { remote: [{ address: a, tls: { cert: c } }] }', /cert and key go together/],
    ['platform: nonsense/', /platform/],
    ['prefix: "Bad"', /prefix/],
    ['contentLayers: { redirect: "yes" }', /contentLayers.redirect/],
    ['- a list', /want a map/],
    ['upstreamStallTimeoutSeconds: 0', /upstreamStallTimeoutSeconds: want a positive number/],
    ['connections: { max: 0 }', /connections.max: want a whole number of at least 1/],
    ['connections: { perClient: 1.5 }', /connections.perClient: want a whole number/],
    ['connections: { idle: 1 }', /connections.idle: unknown key/],
    ['hosted: { dir: x }', /hosted.dir: unknown key/],
    [
      'specProviders: { store: { dir: s, writable: true } }',
      /specProviders.store.writable: needs specProviders.store.listen/,
    ],
    [
      'specProviders: { store: { dir: s, listen: "127.0.0.1:1", writable: 1 } }',
      /specProviders.store.writable: want true or false/,
    ],
    [
      'specProviders: { store: { dir: s, tls: { cert: c, key: k } } }',
      /specProviders.store.tls: needs specProviders.store.listen/,
    ],
    [
      'specProviders: { store: { dir: s, listen: "127.0.0.1:1", tls: { cert: c, key: k, ca: x } } }',
      /specProviders.store.tls.ca: unknown key/,
    ],
    ['hosted: { root: 3 }', /hosted.root/],
    [
      'specProviders: { store: { dir: s, connections: { max: 4 } } }',
      /specProviders.store.connections: needs specProviders.store.listen/,
    ],
    [
      'specProviders: { store: { dir: s, listen: "127.0.0.1:1", connections: { max: 0.5 } } }',
      /specProviders.store.connections.max: want a whole number/,
    ],
    [
      'specProviders: { store: { dir: s, listen: "127.0.0.1:1", connections: { idle: 1 } } }',
      /specProviders.store.connections.idle: unknown key/,
    ],
  ];
  for (const [text, re] of cases) {
    assert.throws(
      () => parseFacadeConfig(text, '/'),
      (err) => isInvalidArgument(err) && re.test((err as Error).message),
      text,
    );
  }
});

test('hosted repositories: off unless configured, the root against the config dir', () => {
  assert.equal(parseFacadeConfig('{}', '/etc/strata').hosted, undefined);
  assert.deepEqual(parseFacadeConfig('hosted: { root: state }', '/etc/strata').hosted, {
    root: '/etc/strata/state',
  });
});

test('byte sizes', () => {
  assert.equal(parseByteSize('10GiB', 'x'), 10 * 1024 ** 3);
  assert.equal(parseByteSize('500MB', 'x'), 500e6);
  assert.equal(parseByteSize(1234, 'x'), 1234);
  assert.throws(() => parseByteSize(-1, 'x'));
  assert.throws(() => parseByteSize('1 parsec', 'x'));
});

test('auth and shutdown: paths against the config dir, defaults, and what is wrong', () => {
  const c = parseFacadeConfig(
    `
auth:
  htpasswd: htpasswd
  token: { realm: "https://auth.example/token", service: facade, issuer: me, keys: keys.pem }
shutdownGraceSeconds: 5
`,
    '/etc/strata',
  );
  assert.deepEqual(c.auth, {
    htpasswd: '/etc/strata/htpasswd',
    basicRealm: 'strata facade',
    basicCacheMs: 60_000,
    token: {
      realm: 'https://auth.example/token',
      service: 'facade',
      issuer: 'me',
      keys: '/etc/strata/keys.pem',
    },
  });
  assert.equal(c.shutdownGraceMs, 5000);
  assert.equal(parseFacadeConfig('{}', '/').shutdownGraceMs, 25_000);
  assert.equal(parseFacadeConfig('{}', '/').auth, undefined);
  for (const [text, msg] of [
    ['auth: {}', /auth: want htpasswd, token or both/],
    [
      'auth: { token: { realm: "ftp://x", service: s, issuer: i, keys: k } }',
      /auth.token.realm: want an http/,
    ],
    ['auth: { token: { realm: "https://x" } }', /auth.token.service/],
    ['auth: { htpasswd: h, users: [] }', /auth.users: unknown key/],
    ['shutdownGraceSeconds: 0', /shutdownGraceSeconds: want a positive number/],
  ] as const) {
    assert.throws(() => parseFacadeConfig(text, '/'), msg);
  }
});

test('prefetch: on by default, its bounds, and what is wrong', () => {
  assert.deepEqual(parseFacadeConfig('{}', '/').prefetch, {
    enabled: true,
    concurrency: 4,
    startupSpecs: 100,
    retries: 3,
    retryDelayMs: 2000,
  });
  assert.deepEqual(
    parseFacadeConfig(
      'prefetch: { enabled: false, concurrency: 2, startupSpecs: 0, retries: 0, retryDelaySeconds: 0.25 }',
      '/',
    ).prefetch,
    { enabled: false, concurrency: 2, startupSpecs: 0, retries: 0, retryDelayMs: 250 },
  );
  for (const [text, msg] of [
    ['prefetch: { enabled: "no" }', /prefetch.enabled: want true or false/],
    ['prefetch: { concurrency: 0 }', /prefetch.concurrency: want a whole number of at least 1/],
    ['prefetch: { startupSpecs: -1 }', /prefetch.startupSpecs: want a whole number/],
    ['prefetch: { retries: 1.5 }', /prefetch.retries: want a whole number/],
    ['prefetch: { retryDelaySeconds: 0 }', /prefetch.retryDelaySeconds: want a positive number/],
    ['prefetch: { workers: 2 }', /prefetch.workers: unknown key/],
  ] as const) {
    assert.throws(() => parseFacadeConfig(text, '/'), msg);
  }
});

test('redis: the shared cache, its defaults following the local TTLs, and what is wrong', () => {
  assert.equal(parseFacadeConfig('{}', '/').redis, undefined);
  assert.deepEqual(parseFacadeConfig('redis: redis://cache:6379\ntagTtlSeconds: 5', '/').redis, {
    url: 'redis://cache:6379',
    keyPrefix: 'strata:facade:',
    timeoutMs: 250,
    tagTtlMs: 5000,
    specTtlMs: 30_000,
    maxValueBytes: 4 * 1024 * 1024,
  });
  const c = parseFacadeConfig(
    `
redis:
  url: rediss://user:secret@cache:6380/2
  keyPrefix: "eu1:"
  timeoutMs: 100
  tagTtlSeconds: 120
  specTtlSeconds: 10
  maxValueBytes: 1MiB
`,
    '/',
  );
  assert.deepEqual(c.redis, {
    url: 'rediss://user:secret@cache:6380/2',
    keyPrefix: 'eu1:',
    timeoutMs: 100,
    tagTtlMs: 120_000,
    specTtlMs: 10_000,
    maxValueBytes: 1024 ** 2,
  });
  // The password from a file, TLS against a CA file: paths taken from the config's directory.
  const secure = parseFacadeConfig(
    'redis: { url: "rediss://cache:6380", passwordFile: pw, tls: { ca: ca.pem, serverName: cache.internal } }',
    '/etc/strata',
  ).redis;
  assert.equal(secure?.passwordFile, '/etc/strata/pw');
  assert.deepEqual(secure?.tls, { ca: '/etc/strata/ca.pem', serverName: 'cache.internal' });
  for (const [text, msg] of [
    ['redis: { host: x }', /redis.host: unknown key/],
    ['redis: { url: "redis://:pw@x", passwordFile: f }', /redis.passwordFile: the URL has a password/],
    ['redis: { url: "redis://x", tls: { ca: ca.pem } }', /redis.tls: wants a rediss:\/\/ URL/],
    ['redis: { url: "rediss://x", tls: { cert: c.pem } }', /redis.tls: cert and key go together/],
    ['redis: { url: "rediss://x", tls: { crt: c.pem } }', /redis.tls.crt: unknown key/],
    ['redis: { url: "http://x" }', /redis.url: want a URL/],
    ['redis: { url: "redis://x", timeoutMs: 0 }', /redis.timeoutMs: want a positive number/],
    ['redis: { url: "redis://x", tagTtlSeconds: -1 }', /redis.tagTtlSeconds/],
    ['redis: { url: "redis://x", maxValueBytes: 10 }', /redis.maxValueBytes: want at least 1KiB/],
    ['redis: { url: "redis://x/cache" }', /redis.url: the URL's database must be a number/],
    [
      'redis: { url: "redis://:p%ZZw@x" }',
      /redis.url: the URL's user and password must be valid percent-encoding/,
    ],
  ] as const) {
    assert.throws(() => parseFacadeConfig(text, '/'), msg);
  }
});

test('watchFiles: on by default; false leaves reloads to SIGHUP', () => {
  assert.equal(parseFacadeConfig('{}', '/').watchFiles, true);
  assert.equal(parseFacadeConfig('watchFiles: false', '/').watchFiles, false);
  assert.throws(() => parseFacadeConfig('watchFiles: no', '/'), /watchFiles: want true or false/);
});
