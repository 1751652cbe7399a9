import assert from 'node:assert/strict';
import { describe, it, test } from 'node:test';
import { DEFAULT_GC, daemonConfig, daemonConfigInputFrom } from './config.ts';

describe('daemonConfig', () => {
  it('resolves paths, with containerd-like defaults for root and socket', () => {
    const c = daemonConfig({});
    assert.equal(c.root, '/var/lib/strata');
    assert.equal(c.address, '/run/strata/strata.sock');
    assert.equal(c.logLevel, 'info');
    assert.equal(c.metrics, undefined);
    assert.deepEqual(c.gc, DEFAULT_GC);
    assert.equal(c.snapshotter, 'overlayfs');
    assert.equal(daemonConfig({ snapshotter: 'native' }).snapshotter, 'native');
    assert.equal(daemonConfig({ root: '/r', address: 'unix:///run/s.sock' }).address, '/run/s.sock');
    assert.equal(daemonConfig({ root: 'rel' }).root, `${process.cwd()}/rel`);
  });

  it('rejects what would fail later: no root, long socket paths, unknown levels, bad GC settings', () => {
    assert.throws(() => daemonConfig({ root: '' }), /--root must not be empty/);
    assert.throws(() => daemonConfig({ root: '/r', address: `/${'s'.repeat(107)}` }), /longer than the 107/);
    assert.doesNotThrow(() => daemonConfig({ root: '/r', address: `/${'s'.repeat(106)}` }));
    assert.throws(() => daemonConfig({ root: '/r', logLevel: 'verbose' }), /log level must be one of/);
    assert.throws(
      () => daemonConfig({ snapshotter: 'btrfs' }),
      /snapshotter must be one of overlayfs, native/,
    );
    assert.throws(() => daemonConfig({ root: '/r', gc: { pauseThreshold: 0 } }), /garbage collection/);
    assert.throws(
      () => daemonConfig({ root: '/r', gc: { delayMs: 10, maxDelayMs: 5 } }),
      /garbage collection/,
    );
  });

  it('parses metrics addresses', () => {
    assert.deepEqual(daemonConfig({ root: '/r', metricsAddress: '127.0.0.1:9100' }).metrics, {
      host: '127.0.0.1',
      port: 9100,
    });
    assert.deepEqual(daemonConfig({ root: '/r', metricsAddress: '[::1]:0' }).metrics, {
      host: '::1',
      port: 0,
    });
    assert.deepEqual(daemonConfig({ root: '/r', metricsAddress: 'localhost:80' }).metrics, {
      host: 'localhost',
      port: 80,
    });
    for (const bad of ['127.0.0.1', ':80', '127.0.0.1:65536', '::1:80', 'host:port', '']) {
      assert.throws(
        () => daemonConfig({ root: '/r', metricsAddress: bad }),
        /--metrics must be HOST:PORT/,
        bad,
      );
    }
  });
});

test('daemon config file: paths against its directory, metrics, gc, and bad keys named', () => {
  const input = daemonConfigInputFrom(
    { root: 'state', address: 'unix:///run/x.sock', metrics: '127.0.0.1:9100', gc: { delayMs: 50 } },
    '/etc/strata',
  );
  assert.deepEqual(input, {
    root: '/etc/strata/state',
    address: '/run/x.sock',
    metricsAddress: '127.0.0.1:9100',
    gc: { delayMs: 50 },
  });
  assert.equal(daemonConfig(input).gc.maxDelayMs, DEFAULT_GC.maxDelayMs);
  assert.deepEqual(daemonConfigInputFrom(null, '/'), {});
  assert.throws(() => daemonConfigInputFrom({ rooot: '/r' }, '/'), /daemon config: rooot: unknown key/);
  assert.throws(() => daemonConfigInputFrom({ gc: { delay: 1 } }, '/'), /gc\.delay: unknown key/);
  assert.throws(() => daemonConfigInputFrom({ gc: { delayMs: '1' } }, '/'), /gc\.delayMs: want a number/);
  assert.throws(() => daemonConfigInputFrom({ root: 7 }, '/'), /root: want a non-empty string/);
});
