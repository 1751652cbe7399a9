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
import { waitFor, within } from '../helpers/process.ts';
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
  ({ busybox, repo } = await dockerfileRepo(reg, dir, ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i']));
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
  const [jobsA, jobsB] = [engineA.jobs.length, engineB.jobs.length];
  const onA = all(a.builder.build(request(sub)));
  await engineA.started(jobsA + 1);
  const onB = b.builder.build(request(sub));
  const first = await within(onB.next(), 30_000, 'B’s first update');
  assert.equal(first.value?.status, 'running', 'B relays the running build');
  engineA.release();
  const [updatesA, restB] = await within(Promise.all([onA, all(onB)]), 60_000, 'the shared build');
  const updatesB = [first.value as BuildUpdate, ...restB];
  assert.equal(engineB.jobs.length, jobsB, 'B did not build');
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
    await raw.set(`strata:builder:v1:owner:${ref}`, 'dead-replica', {
      expiration: { type: 'PX', value: 1500 },
    });
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

test('with Redis gone a replica builds alone, neither failing nor waiting: a relayed build, a new one; builds are shared again once it is back', {
  timeout: 300_000,
}, async (t) => {
  const redis = await startRedis(t);
  const engineA = new GatedEngine(busybox);
  const engineB = new GatedEngine(busybox);
  const a = await replica('outage-a', redis.url, engineA);
  const b = await replica('outage-b', redis.url, engineB);
  const redisUp = async (r: RunningBuilder) =>
    /strata_builder_redis_connected 1/.test(await r.metrics.registry.metrics());
  try {
    // B relays A's build when Redis goes away: B builds the image itself rather than failing its caller.
    const onA = all(a.builder.build(request('d')));
    await engineA.started(1);
    const onB = b.builder.build(request('d'));
    assert.equal((await within(onB.next(), 30_000, 'B’s first update')).value?.status, 'running');
    const restB = all(onB);
    await redis.stop();
    await engineB.started(1);
    // One after the other: docker-registry can answer 500 to a read of a tag being pushed at that moment.
    engineA.release();
    const updatesA = await within(onA, 60_000, 'A’s build of d');
    engineB.release();
    const updatesB = await within(restB, 60_000, 'B’s build of d');
    assert.equal(updatesA.at(-1)?.status, 'succeeded', JSON.stringify(updatesA.at(-1)));
    assert.equal(updatesB.at(-1)?.status, 'succeeded', JSON.stringify(updatesB.at(-1)));
    assert.notEqual(updatesB.at(-1)?.info?.id, updatesA.at(-1)?.info?.id, 'B built it itself');

    // A new build while Redis is down: built here, not held until Redis returns.
    assert.equal(await redisUp(a), false, 'the metric says Redis is away');
    const onlyA = all(a.builder.build(request('e')));
    await engineA.started(2);
    engineA.release();
    const updates = await within(onlyA, 60_000, 'the build of e');
    assert.equal(updates.at(-1)?.status, 'succeeded', JSON.stringify(updates.at(-1)));

    // Back: both replicas reconnect by themselves and share builds again.
    await redis.restart();
    await waitFor(async () => (await redisUp(a)) && redisUp(b), 30_000, {
      what: 'both replicas on Redis again',
    });
    await buildOnBoth(a, engineA, b, engineB, 'f');
  } finally {
    engineA.release();
    engineB.release();
    await b.close();
    await a.close();
  }
});

test('a replica whose claim lapsed and was taken finishes the build for its own caller and publishes nothing into the new owner’s updates', {
  timeout: 120_000,
}, async (t) => {
  const redis = await startRedis(t);
  const engineA = new GatedEngine(busybox);
  const a = await replica('lost-a', redis.url, engineA);
  const raw = createClient({ url: redis.url });
  await raw.connect();
  try {
    const onA = all(a.builder.build(request('g')));
    await engineA.started(1);
    const { ref } = await a.builder.resolveWorkspaceImage(request('g').source, NO_AUTH, false);
    const owner = `strata:builder:v1:owner:${ref}`;
    const updates = `strata:builder:v1:updates:${ref}`;
    // What replica C does once A's claim lapsed (A cut off from Redis past the claim's expiry): it claims
    // the build, which clears the updates, and publishes its own.
    const theirs = JSON.stringify({ status: 'running', ref, baseRef: '', message: 'building on C' });
    await raw
      .multi()
      .set(owner, 'replica-c', { expiration: { type: 'PX', value: 60_000 } })
      .del(updates)
      .rPush(updates, theirs)
      .exec();
    engineA.release();
    const updatesA = await within(onA, 60_000, 'A’s build of g');
    assert.equal(updatesA.at(-1)?.status, 'succeeded', 'A’s own caller gets its build');
    assert.deepEqual(await raw.lRange(updates, 0, -1), [theirs], 'C’s followers read only C’s build');
    assert.equal(await raw.get(owner), 'replica-c', 'A left C’s claim alone');
  } finally {
    engineA.release();
    raw.destroy();
    await a.close();
  }
});

test('deployments with different redis.keyPrefix on one Redis do not share builds; replicas with the same one do', {
  timeout: 120_000,
}, async (t) => {
  const redis = await startRedis(t);
  const [engineA, engineB, engineC] = [
    new GatedEngine(busybox),
    new GatedEngine(busybox),
    new GatedEngine(busybox),
  ];
  const a = await replica('prefix-a', { url: redis.url, keyPrefix: 'team-a:' }, engineA);
  const b = await replica('prefix-b', { url: redis.url, keyPrefix: 'team-b:' }, engineB);
  const c = await replica('prefix-c', { url: redis.url, keyPrefix: 'team-a:' }, engineC);
  const raw = createClient({ url: redis.url });
  await raw.connect();
  try {
    await buildOnBoth(a, engineA, c, engineC, 'h');

    // B, of the other deployment, builds what A builds rather than relaying it.
    const onA = all(a.builder.build(request('i')));
    await engineA.started(2);
    const onB = all(b.builder.build(request('i')));
    await engineB.started(1);
    // One after the other: docker-registry can answer 500 to a read of a tag being pushed at that moment.
    engineA.release();
    const updatesA = await within(onA, 60_000, 'A’s build of i');
    engineB.release();
    const updatesB = await within(onB, 60_000, 'B’s build of i');
    assert.equal(updatesA.at(-1)?.status, 'succeeded', JSON.stringify(updatesA.at(-1)));
    assert.equal(updatesB.at(-1)?.status, 'succeeded', JSON.stringify(updatesB.at(-1)));
    assert.notEqual(updatesB.at(-1)?.info?.id, updatesA.at(-1)?.info?.id, 'B built it itself');
    assert.ok((await raw.keys('team-a:*')).length > 0);
    assert.ok((await raw.keys('team-b:*')).length > 0);
    assert.deepEqual(await raw.keys('strata:builder:*'), []);
  } finally {
    for (const e of [engineA, engineB, engineC]) e.release();
    raw.destroy();
    await c.close();
    await b.close();
    await a.close();
  }
});
