import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { removeTempDir, tempDir } from '../../test/helpers/tmp.ts';
import { errorKind } from '../errors.ts';
import { builderConfigFrom, loadBuilderConfig } from './builder.ts';

let dir: string;
before(async () => {
  dir = await tempDir('builder-config');
});
after(() => removeTempDir(dir));

test('defaults, normalised repositories and clear errors', () => {
  const c = builderConfigFrom(
    { baseRepository: 'reg.example:5000/base', workspaceRepository: 'ws' },
    '/etc/strata',
  );
  assert.equal(c.baseRepository, 'reg.example:5000/base');
  assert.equal(c.workspaceRepository, 'docker.io/library/ws');
  assert.deepEqual(c.listen, { host: '127.0.0.1', port: 8080 });
  assert.equal(c.parallelism, 2);
  assert.equal(c.timeoutMs, 3_600_000);
  assert.equal(c.storageDriver, 'overlay');
  assert.equal(c.allowFileRemotes, false);
  assert.equal(c.repositoryMaxBytes, 4 * 1024 ** 3);
  assert.equal(builderConfigFrom({ repositoryMax: '512MiB' }, '/').repositoryMaxBytes, 512 << 20);
  const bad = (doc: object) => {
    try {
      builderConfigFrom(doc, '/');
    } catch (err) {
      return [errorKind(err), (err as Error).message];
    }
    return ['ok'];
  };
  assert.deepEqual(bad({ parallelsm: 2 }), ['InvalidArgument', 'builder config parallelsm: unknown key']);
  assert.equal(bad({ baseRepository: 'reg/base:tag' })[0], 'InvalidArgument');
  assert.equal(bad({ parallelism: Number('x') })[0], 'InvalidArgument');
  assert.deepEqual(bad({ cacheMax: 'lots' }), [
    'InvalidArgument',
    'builder config cacheMax: want a size such as 10GiB or 500MB, got "lots"',
  ]);
  assert.deepEqual(bad({ repositoryMax: 0 }), [
    'InvalidArgument',
    'builder config repositoryMax: want at least 1 byte, got 0',
  ]);
});

test('logs: the build logs’ budget, per build and in finished builds; what is wrong', () => {
  const c = (logs: unknown) => builderConfigFrom({ logs }, '/').logs;
  assert.deepEqual(builderConfigFrom({}, '/').logs, { maxBytesPerBuild: 8 << 20, keepBuilds: 500 });
  assert.deepEqual(c({ maxPerBuild: '64KiB', keepBuilds: 20 }), { maxBytesPerBuild: 65536, keepBuilds: 20 });
  assert.deepEqual(c({ keepBuilds: 3 }), { maxBytesPerBuild: 8 << 20, keepBuilds: 3 });
  for (const [logs, msg] of [
    ['8MiB', /builder config logs: want a mapping/],
    [{ maxPerBuild: 'lots' }, /builder config logs.maxPerBuild: want a size such as/],
    [{ maxPerBuild: 100 }, /builder config logs.maxPerBuild: want at least 1024 bytes/],
    [{ keepBuilds: 0 }, /builder config logs.keepBuilds: want a whole number of at least 1/],
    [{ keepBuilds: 2.5 }, /builder config logs.keepBuilds: want a whole number/],
    [{ maxBytes: '1GiB' }, /builder config logs.maxBytes: unknown key/],
  ] as const) {
    assert.throws(() => c(logs), msg);
  }
});

test('redis: a URL, or a mapping with a password file and TLS files; what is wrong', () => {
  const c = (redis: unknown) => builderConfigFrom({ redis }, '/etc/strata').redis;
  assert.deepEqual(c('redis://cache:6379'), { url: 'redis://cache:6379' });
  assert.deepEqual(
    c({ url: 'rediss://default@cache:6380', passwordFile: 'pw', tls: { ca: 'ca.pem', serverName: 'cache' } }),
    {
      url: 'rediss://default@cache:6380',
      passwordFile: '/etc/strata/pw',
      tls: { ca: '/etc/strata/ca.pem', serverName: 'cache' },
    },
  );
  for (const [redis, msg] of [
    ['http://x', /redis: want a URL such as/],
    [{ url: 'redis://x', host: 'y' }, /redis.host: unknown key/],
    [{ url: 'redis://:pw@x', passwordFile: 'f' }, /redis.passwordFile: the URL has a password/],
    [{ url: 'redis://x', tls: { ca: 'ca.pem' } }, /redis.tls: wants a rediss:\/\/ URL/],
    [{ url: 'rediss://x', tls: { key: 'k.pem' } }, /redis.tls: cert and key go together/],
    [{ url: 'rediss://x', tls: { crt: 'c.pem' } }, /redis.tls.crt: unknown key/],
    [{ url: 'redis://x', keyPrefix: 3 }, /redis.keyPrefix: want a string/],
    ['redis://x/cache', /redis: the URL's database must be a number/],
    ['redis://u:p%ZZw@x', /redis: the URL's user and password must be valid percent-encoding/],
  ] as const) {
    assert.throws(() => c(redis), msg);
  }
  // Never the password in what is said.
  assert.throws(
    () => c('redis://u:SECRET%ZZ@x/cache'),
    (err: Error) => !err.message.includes('SECRET'),
  );
  assert.equal(c({ url: 'redis://x', keyPrefix: 'team-a:' })?.keyPrefix, 'team-a:');
});

test('connections: the gRPC listener’s cap and idle time; what is wrong', () => {
  const c = (connections: unknown) => builderConfigFrom({ connections }, '/').connections;
  assert.equal(builderConfigFrom({}, '/').connections, undefined);
  assert.deepEqual(c({ max: 100, idleSeconds: 0.5 }), { max: 100, idleMs: 500 });
  assert.deepEqual(c({}), {});
  for (const [connections, msg] of [
    [5, /connections: want a mapping/],
    [{ max: 0 }, /connections.max: want a whole number/],
    [{ idleSeconds: -1 }, /connections.idleSeconds: want a positive number/],
    [{ perClient: 2 }, /connections.perClient: unknown key/],
  ] as const) {
    assert.throws(() => c(connections), msg);
  }
});

test('a config file with flags on top; paths relative to the file; plain-HTTP hosts from both', async () => {
  const file = join(dir, 'builder.yaml');
  await writeFile(
    file,
    'listen: 127.0.0.1:9000\nstateDir: state\nplainHttpHosts: [reg.a:5000]\nparallelism: 4\ncacheMax: 1GiB\n',
  );
  const c = await loadBuilderConfig(file, { parallelism: 1, plainHttpHosts: ['reg.b:5000'] });
  assert.deepEqual(c.listen, { host: '127.0.0.1', port: 9000 });
  assert.equal(c.stateDir, join(dir, 'state'));
  assert.equal(c.parallelism, 1);
  assert.equal(c.cacheMaxBytes, 1024 ** 3);
  assert.deepEqual(c.plainHttpHosts, ['reg.a:5000', 'reg.b:5000']);

  // --redis sets the URL of the file's redis mapping; its password file, TLS and prefix stay.
  const withRedis = join(dir, 'builder-redis.yaml');
  await writeFile(
    withRedis,
    'redis:\n  url: rediss://old:6380\n  passwordFile: pw\n  tls: { ca: ca.pem }\n  keyPrefix: "team-a:"\n',
  );
  const r = await loadBuilderConfig(withRedis, { redis: 'rediss://new:6380' });
  assert.deepEqual(r.redis, {
    url: 'rediss://new:6380',
    passwordFile: join(dir, 'pw'),
    tls: { ca: join(dir, 'ca.pem') },
    keyPrefix: 'team-a:',
  });
  await assert.rejects(
    loadBuilderConfig(join(dir, 'missing.yaml')),
    (e) => errorKind(e) === 'InvalidArgument',
  );
});
