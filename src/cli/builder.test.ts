import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { test } from 'node:test';
import { builderFlagsAsConfig } from './builder.ts';

test('--redis with --redis-password-file becomes the config mapping; the file alone is refused', () => {
  const flags = { plainHttpHost: [], logLevel: 'info' };
  assert.equal(builderFlagsAsConfig({ ...flags, redis: 'redis://cache:6379' }).redis, 'redis://cache:6379');
  assert.deepEqual(
    builderFlagsAsConfig({ ...flags, redis: 'redis://cache:6379', redisPasswordFile: 'pw' }).redis,
    { url: 'redis://cache:6379', passwordFile: resolve('pw') },
  );
  assert.throws(
    () => builderFlagsAsConfig({ ...flags, redisPasswordFile: 'pw' }),
    /--redis-password-file goes with --redis/,
  );
});

test('--redis-key-prefix goes into the redis mapping; without --redis it is refused', () => {
  const flags = { plainHttpHost: [], logLevel: 'info' };
  assert.deepEqual(
    builderFlagsAsConfig({ ...flags, redis: 'redis://cache:6379', redisKeyPrefix: 'team-a:' }).redis,
    { url: 'redis://cache:6379', keyPrefix: 'team-a:' },
  );
  assert.throws(
    () => builderFlagsAsConfig({ ...flags, redisKeyPrefix: 'team-a:' }),
    /--redis-key-prefix goes with --redis/,
  );
});
