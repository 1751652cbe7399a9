import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isInvalidArgument } from '../errors.ts';
import { upConfigFrom } from './up-config.ts';

test('defaults: every part under the root, its own port, the spec store as the remote provider', () => {
  const c = upConfigFrom({}, '/etc/strata');
  assert.equal(c.root, '/var/lib/strata');
  assert.equal(c.daemon.root, '/var/lib/strata');
  assert.equal(c.daemon.address, '/run/strata/strata.sock');
  assert.equal(c.daemon.metrics, undefined);
  assert.deepEqual(c.registry.listen, { host: '127.0.0.1', port: 5000 });
  assert.equal(c.registry.hosted, undefined);
  assert.deepEqual(c.specs, {
    dir: '/var/lib/strata/specs',
    listen: { host: '127.0.0.1', port: 5051 },
    writable: false,
  });
  assert.deepEqual(c.registry.specProviders.store, c.specs);
  assert.deepEqual(c.builder.listen, { host: '127.0.0.1', port: 8080 });
  assert.equal(c.builder.stateDir, '/var/lib/strata/builder');
  assert.equal(c.builder.baseRepository, '');
  assert.deepEqual(c.metrics, { host: '127.0.0.1', port: 9500 });
});

test('sections go to their parts (paths relative to the file), flags win', () => {
  const doc = {
    root: 'state',
    logLevel: 'debug',
    metrics: '127.0.0.1:0',
    daemon: { address: 'run/s.sock', snapshotter: 'native', gc: { delayMs: 50 } },
    registry: { listen: '127.0.0.1:0', cache: { maxBytes: '1GiB' }, plainHttpHosts: ['up.example:5000'] },
    specs: { dir: 'specs', listen: '127.0.0.1:0', writable: true },
    builder: { listen: '127.0.0.1:0', storageDriver: 'vfs', baseRepository: 'reg.example/base' },
  };
  const c = upConfigFrom(doc, '/etc/strata');
  assert.equal(c.root, '/etc/strata/state');
  assert.equal(c.logLevel, 'debug');
  assert.equal(c.daemon.address, '/etc/strata/run/s.sock');
  assert.equal(c.daemon.snapshotter, 'native');
  assert.equal(c.daemon.gc.delayMs, 50);
  assert.equal(c.registry.cache.maxBytes, 1024 ** 3);
  assert.deepEqual(c.registry.plainHttpHosts, ['up.example:5000']);
  assert.equal(c.specs.dir, '/etc/strata/specs');
  assert.equal(c.registry.specProviders.store?.writable, true);
  const tls = upConfigFrom(
    { specs: { tls: { cert: 'specs.crt', key: 'specs.key', clientCa: 'platform-ca.pem' } } },
    '/etc/strata',
  );
  assert.deepEqual(tls.registry.specProviders.store?.tls, {
    cert: '/etc/strata/specs.crt',
    key: '/etc/strata/specs.key',
    clientCa: '/etc/strata/platform-ca.pem',
  });
  assert.deepEqual(
    upConfigFrom({ specs: { connections: { idleSeconds: 60 } } }, '/').registry.specProviders.store
      ?.connections,
    { idleMs: 60_000 },
  );
  assert.equal(c.builder.storageDriver, 'vfs');
  assert.equal(c.builder.baseRepository, 'reg.example/base');
  assert.equal(c.builder.stateDir, '/etc/strata/state/builder');

  const f = upConfigFrom(doc, '/etc/strata', {
    root: '/r',
    address: '/r/x.sock',
    listen: '127.0.0.1:7000',
    metrics: '127.0.0.1:7001',
    snapshotter: 'overlayfs',
    logLevel: 'warn',
  });
  assert.equal(f.root, '/r');
  assert.equal(f.daemon.address, '/r/x.sock');
  assert.deepEqual(f.registry.listen, { host: '127.0.0.1', port: 7000 });
  assert.deepEqual(f.metrics, { host: '127.0.0.1', port: 7001 });
  assert.equal(f.daemon.snapshotter, 'overlayfs');
  assert.equal(f.logLevel, 'warn');
  assert.equal(f.builder.stateDir, '/r/builder');
});

test('unknown keys and what up wires itself are refused, naming the key', () => {
  const refused = (doc: object, message: RegExp) =>
    assert.throws(
      () => upConfigFrom(doc, '/'),
      (err: Error) => isInvalidArgument(err) && message.test(err.message),
    );
  refused({ deamon: {} }, /^up config: deamon: unknown key \(expected one of root, logLevel/);
  refused({ daemon: { adress: 'x' } }, /^up config: daemon\.adress: unknown key/);
  refused({ daemon: { gc: { delay: 1 } } }, /^up config: daemon\.gc\.delay: unknown key/);
  refused({ daemon: { snapshotter: 'btrfs' } }, /^up config: daemon: snapshotter must be one of/);
  refused({ registry: { lisen: ':1' } }, /^up config: registry: facade config: lisen: unknown key/);
  refused({ registry: { hosted: { root: '/x' } } }, /^up config: registry\.hosted: strata up serves/);
  refused(
    { registry: { cache: { dir: '/x' } } },
    /^up config: registry\.cache\.dir: strata up keeps the facade/,
  );
  refused(
    { registry: { specProviders: { store: '/x' } } },
    /registry\.specProviders\.store: strata up keeps/,
  );
  refused(
    { registry: { auth: { htpasswd: 'h', token: { realm: 'http://t/token' } } } },
    /^up config: registry\.auth\.token: strata up authenticates clients with auth\.htpasswd only/,
  );
  refused({ specs: { port: 1 } }, /^up config: specs\.port: unknown key/);
  refused({ specs: { writable: 'yes' } }, /^up config: specs\.writable: want true or false/);
  refused({ specs: { tls: { cert: 'c' } } }, /^up config: specs\.tls\.key: required/);
  refused({ specs: { tls: { cert: 'c', key: 'k', ca: 'x' } } }, /^up config: specs\.tls\.ca: unknown key/);
  refused({ builder: { parallelsm: 2 } }, /^up config: builder: builder config parallelsm: unknown key/);
  refused({ builder: { metrics: '127.0.0.1:1' } }, /^up config: builder\.metrics: strata up serves/);
  refused({ metrics: 'nowhere' }, /^up config: metrics: want host:port/);
  refused({ specs: { listen: '1.2.3.4' } }, /^up config: specs\.listen: want host:port/);
  refused([], /want a map/);
});

test('daemon.address takes the unix:// prefix the daemon config takes, and gc values as the daemon does', () => {
  const c = upConfigFrom({ daemon: { address: 'unix:///run/up/s.sock' } }, '/etc/strata');
  assert.equal(c.daemon.address, '/run/up/s.sock');
  const gc = upConfigFrom({ daemon: { gc: { delayMs: null } } }, '/etc/strata').daemon.gc;
  assert.equal(gc.delayMs, 100);
  assert.throws(
    () => upConfigFrom({ daemon: { gc: { maxDelayMs: Number.POSITIVE_INFINITY } } }, '/'),
    (err: Error) => isInvalidArgument(err) && /daemon\.gc\.maxDelayMs: want a number/.test(err.message),
  );
});
