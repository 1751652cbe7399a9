// Two builder replicas sharing a real redis-server: a Build given to both runs once, the other replica
// relays its status and log; a claim whose replica died lapses and another replica builds. Replicas reach
// a Redis that wants a password and speaks only TLS with a password file and a CA file.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { createClient } from 'redis';
import type { BuildUpdate } from '../../src/builder/orchestrator.ts';
import { NO_AUTH } from '../../src/builder/registry-auth.ts';
import { SharedBuilds } from '../../src/builder/shared-builds.ts';
import { builderConfigFrom, type RunningBuilder, startBuilder } from '../../src/server/builder.ts';
import { redisCredentials } from '../../src/server/client-files.ts';
import { collectUpdates, dockerfileRepo, dockerfileRequest, GatedEngine } from '../helpers/builder-engine.ts';
import type { TestRepo } from '../helpers/git-repo.ts';
import { startRedis } from '../helpers/redis.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { makeSelfSignedCert } from '../helpers/tls-cert.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

let dir: string;
let reg: TestRegistry;
let repo: TestRepo;
let busybox: string;

before(async () => {
  dir = await tempDir('builder-replicas');
  reg = await startRegistry();
  ({ busybox, repo } = await dockerfileRepo(reg, dir, ['a', 'b', 'c']));
});
after(async () => {
  await reg?.stop();
  await removeTempDir(dir);
});

const request = (sub: string, force = false) => dockerfileRequest(repo.url, sub, force);

const all = collectUpdates;

/** A replica on `redis`: a URL, or the config's mapping (url, passwordFile, tls). */
async function replica(name: string, redis: unknown, engine: GatedEngine): Promise<RunningBuilder> {
  return startBuilder(
    builderConfigFrom(
      {
        listen: '127.0.0.1:0',
        baseRepository: `${reg.host}/base`,
        workspaceRepository: `${reg.host}/ws`,
        stateDir: join(dir, `state-${name}`),
        plainHttpHosts: [reg.host],
        allowFileRemotes: true,
        redis,
      },
      dir,
    ),
    pino({ level: 'silent' }),
    { engine },
  );
}

/**
 * `sub` asked of A, and of B while A builds it: B relays A's build (the claim found in Redis) and builds
 * nothing itself. Both replicas' updates.
 */
async function buildOnBoth(
  a: RunningBuilder,
  engineA: GatedEngine,
  b: RunningBuilder,
  engineB: GatedEngine,
  sub: string,
): Promise<[BuildUpdate[], BuildUpdate[]]> {
  const onA = all(a.builder.build(request(sub)));
  await engineA.started(1);
  const onB = b.builder.build(request(sub));
  const first = await onB.next();
  assert.equal(first.value?.status, 'running', 'B relays the running build');
  engineA.release();
  const [updatesA, restB] = await Promise.all([onA, all(onB)]);
  const updatesB = [first.value as BuildUpdate, ...restB];
  assert.equal(engineB.jobs.length, 0, 'B did not build');
  assert.equal(updatesB.at(-1)?.status, 'succeeded');
  assert.equal(updatesB.at(-1)?.info?.id, updatesA.at(-1)?.info?.id, 'the same build');
  return [updatesA, updatesB];
}

test('a Build given to two replicas runs once; the other relays status and log; a dead replica’s claim lapses', async (t) => {
  const redis = await startRedis(t);
  const engineA = new GatedEngine(busybox);
  const engineB = new GatedEngine(busybox);
  const a = await replica('a', redis.url, engineA);
  const b = await replica('b', redis.url, engineB);
  try {
    const [updatesA, updatesB] = await buildOnBoth(a, engineA, b, engineB, 'a');
    assert.equal(updatesB.filter((u) => u.status !== 'running').length, 1);
    assert.match(await b.metrics.registry.metrics(), /strata_builder_joined_requests_total 1/);
    let log = '';
    for await (const chunk of b.builder.logs({
      buildId: updatesA.at(-1)?.info?.id ?? '',
      buildRef: '',
      censored: false,
    })) {
      log += chunk.toString('utf8');
    }
    assert.match(log, /^Why this build:[\s\S]*built\n[\s\S]*Done:/, 'B serves the log of A’s build');

    // A replica that claimed a build and died: its claim lapses and B builds.
    const { ref } = await b.builder.resolveWorkspaceImage(request('b').source, NO_AUTH, false);
    const raw = createClient({ url: redis.url });
    await raw.connect();
    await raw.set(`strata:builder:owner:${ref}`, 'dead-replica', { expiration: { type: 'PX', value: 1500 } });
    await raw.close();
    const taken = all(b.builder.build(request('b')));
    await engineB.started(1);
    engineB.release();
    const updates = await taken;
    assert.equal(updates.at(-1)?.status, 'succeeded');
    assert.equal(updates.at(-1)?.ref, ref);
  } finally {
    engineA.release();
    engineB.release();
    await b.close();
    await a.close();
  }
});

test('replicas reach a Redis that wants a password and speaks only TLS, with a password file and a CA file; a wrong password is named', {
  timeout: 60_000,
}, async (t) => {
  const tls = { certFile: join(dir, 'redis-cert.pem'), keyFile: join(dir, 'redis-key.pem') };
  await makeSelfSignedCert({ ...tls, cn: 'redis', ip: '127.0.0.1' });
  const redis = await startRedis(t, { password: 'open sesame', tls });
  const passwordFile = join(dir, 'redis-password');
  await writeFile(passwordFile, 'open sesame\n', { mode: 0o600 });
  const endpoint = { url: redis.url, passwordFile, tls: { ca: tls.certFile } };
  const engineA = new GatedEngine(busybox);
  const engineB = new GatedEngine(busybox);
  const a = await replica('tls-a', endpoint, engineA);
  // A user in the URL goes with the password from the file.
  const b = await replica(
    'tls-b',
    { ...endpoint, url: redis.url.replace('rediss://', 'rediss://default@') },
    engineB,
  );
  try {
    await buildOnBoth(a, engineA, b, engineB, 'c');
  } finally {
    engineA.release();
    engineB.release();
    await b.close();
    await a.close();
  }

  const wrongFile = join(dir, 'redis-wrong-password');
  await writeFile(wrongFile, 'open barley\n', { mode: 0o600 });
  await assert.rejects(
    SharedBuilds.connect({
      url: redis.url,
      credentials: await redisCredentials({ ...endpoint, passwordFile: wrongFile }),
      connectTimeoutMs: 1000,
    }),
    /cannot reach Redis at 127\.0\.0\.1:\d+: WRONGPASS/,
  );
});
