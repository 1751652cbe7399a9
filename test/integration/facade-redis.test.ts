// Facade replicas sharing a real redis-server: what one replica composed is served byte for byte by the
// others (also with that replica and the upstream registry gone); a digest is never answered with other
// bytes; Redis stopped, restarted, or hung costs no request more than its bound, is one warning per outage
// and counted; tag resolutions are shared with a TTL, so a moved tag is picked up; manifests and configs
// fetched from the registry are shared by digest, so another replica composes without it. Replicas are
// in-process facades on one docker-registry, one spec store directory and one Redis.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { createClient, RESP_TYPES } from 'redis';
import { imageSpecJson } from '../../src/api/convert/image-spec-json.ts';
import { SpecStore } from '../../src/facade/providers/spec-store.ts';
import {
  compositionCodec,
  descriptorCodec,
  specCodec,
  verifiedBytesCodec,
} from '../../src/facade/shared/codecs.ts';
import type { ImageSpec } from '../../src/facade/spec.ts';
import { digestOf } from '../../src/oci/digest.ts';
import { type FacadeApp, startFacade } from '../../src/server/facade.ts';
import { facadeConfigFrom } from '../../src/server/facade-config.ts';
import { type PushedImage, pushBusybox, pushMultiLayer } from '../helpers/images.ts';
import { waitFor } from '../helpers/process.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { makeSelfSignedCert } from '../helpers/tls-cert.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const ACCEPT =
  'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';
const KEY_PREFIX = 'strata:facade:';
/** A replica's key in Redis for an entry of `kind`; it names the value's format (the codec's version). */
const keyOf = (kind: string, codec: { version: number }, key: string) =>
  `${KEY_PREFIX}v${codec.version}:${kind}:${key}`;
const composedKey = (digest: string) => keyOf('composed', compositionCodec, digest);

interface Replica {
  app: FacadeApp;
  /** Log lines (parsed) at info and above. */
  logs: { msg: string; level: number }[];
}

interface Answer {
  status: number;
  headers: Headers;
  body: Buffer;
}

async function get(url: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(url, { ...init, headers: { accept: ACCEPT, ...init.headers } });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

/** Sum of a metric's samples whose labels include all of `labels` (`kind="composed"`, …). */
async function metric(r: Replica, name: string, ...labels: string[]): Promise<number> {
  const text = (await get(`${r.app.url}/metrics`)).body.toString();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels.every((l) => line.includes(l))) sum += Number(line.split(' ').pop());
  }
  return sum;
}

/** A plain client for looking into Redis; closed after the test (it may outlive the server meanwhile). */
async function directClient(url: string, t: { after(fn: () => Promise<void>): void }) {
  const client = createClient({ url });
  client.on('error', () => {});
  await client.connect();
  t.after(async () => {
    client.destroy();
  });
  return client;
}

function errorCode(a: Answer): string {
  return JSON.parse(a.body.toString()).errors[0].code;
}

describe('facade replicas sharing Redis', () => {
  let reg: TestRegistry;
  let busybox: PushedImage;
  let ide: PushedImage;
  let other: PushedImage;
  let work: string;
  let store: SpecStore;
  let n = 0;
  const apps: FacadeApp[] = [];

  before(async () => {
    reg = await startRegistry();
    busybox = await pushBusybox(reg, 'base/busybox');
    ide = await pushMultiLayer(reg, 'ide/code');
    other = await pushMultiLayer(reg, 'ide/other');
    work = await tempDir('facade-redis');
    store = new SpecStore(join(work, 'specs'), imageSpecJson);
  });

  // Each test's replicas go with it (their Redis goes too).
  afterEach(async () => {
    for (const a of apps.splice(0)) await a.close();
  });

  after(async () => {
    await reg?.stop();
    if (work) await removeTempDir(work);
  });

  const spec = (ideRef: string): ImageSpec => ({
    baseRef: busybox.ref,
    ideRef,
    supervisorRef: '',
    ideLayerRefs: [],
    contentLayers: [],
  });

  async function replica(redisUrl: string, extra: Record<string, unknown> = {}): Promise<Replica> {
    const logs: Replica['logs'] = [];
    const logger = pino(
      { level: 'info' },
      {
        write(line: string) {
          logs.push(JSON.parse(line));
        },
      },
    );
    const dir = join(work, `replica-${n++}`);
    const { redis: redisExtra, ...rest } = extra;
    const config = facadeConfigFrom(
      {
        listen: '127.0.0.1:0',
        specProviders: { store: { dir: join(work, 'specs') } },
        cache: { dir: join(dir, 'cache'), maxBytes: '1GiB' },
        plainHttpHosts: [reg.host],
        // Prefetch composes the store's specs at start; these tests count compositions.
        prefetch: { enabled: false },
        redis: { url: redisUrl, ...(redisExtra as object) },
        ...rest,
      },
      dir,
    );
    const app = await startFacade(config, { logger, registry: new Registry() });
    apps.push(app);
    return { app, logs };
  }

  async function stop(r: Replica): Promise<void> {
    await r.app.close();
    apps.splice(apps.indexOf(r.app), 1);
  }

  const manifest = (r: Replica, id: string, ref: string) =>
    get(`${r.app.url}/v2/remote/${id}/manifests/${ref}`);
  const blob = (r: Replica, id: string, digest: string) =>
    get(`${r.app.url}/v2/remote/${id}/blobs/${digest}`);
  const warnings = (r: Replica, what: RegExp) => r.logs.filter((l) => l.level === 40 && what.test(l.msg));
  const infos = (r: Replica, what: RegExp) => r.logs.filter((l) => l.level === 30 && what.test(l.msg));

  test('a manifest composed on A is served byte-identical by digest from B, also after A and the upstream stop', async (t) => {
    const redis = await startRedis(t);
    await store.put('ws-shared', spec(ide.ref));
    const a = await replica(redis.url);
    const b = await replica(redis.url);

    const onA = await manifest(a, 'ws-shared', 'latest');
    assert.equal(onA.status, 200);
    const digest = onA.headers.get('docker-content-digest')!;
    assert.equal(digestOf(onA.body), digest);
    const config = JSON.parse(onA.body.toString()).config as { digest: string };

    const onB = await manifest(b, 'ws-shared', digest);
    assert.equal(onB.status, 200);
    assert.deepEqual(onB.body, onA.body);
    assert.equal(onB.headers.get('content-type'), onA.headers.get('content-type'));
    assert.equal(await metric(b, 'strata_facade_compositions_total'), 0, 'B composed nothing');
    assert.equal(await metric(b, 'strata_facade_redis_reads_total', 'kind="composed"', 'outcome="hit"'), 1);

    // Content-addressed entries never expire (Redis's eviction bounds them); tag resolutions do.
    const direct = await directClient(redis.url, t);
    assert.equal(await direct.pTTL(composedKey(digest)), -1);
    const tagKey = keyOf('tag', descriptorCodec, ide.ref);
    const tagTtl = await direct.pTTL(tagKey);
    assert.ok(tagTtl > 0 && tagTtl <= 60_000, `tag entry TTL ${tagTtl}`);

    await stop(a);
    await reg.kill();
    try {
      await servedWithoutUpstream();
    } finally {
      await reg.restart();
    }

    async function servedWithoutUpstream() {
      const again = await manifest(b, 'ws-shared', digest);
      assert.equal(again.status, 200);
      assert.deepEqual(again.body, onA.body);
      // A replica that never saw it, with the registry down: manifest and config from Redis alone.
      const c = await replica(redis.url);
      const onC = await manifest(c, 'ws-shared', digest);
      assert.equal(onC.status, 200);
      assert.deepEqual(onC.body, onA.body);
      const cfg = await blob(c, 'ws-shared', config.digest);
      assert.equal(cfg.status, 200);
      assert.equal(digestOf(cfg.body), config.digest);
      // A fresh replica asked for the config first (its client got the manifest elsewhere) finds it too.
      const d = await replica(redis.url);
      const cfgD = await blob(d, 'ws-shared', config.digest);
      assert.equal(cfgD.status, 200);
      assert.equal(digestOf(cfgD.body), config.digest);
      assert.equal(await metric(c, 'strata_facade_compositions_total'), 0);
      assert.equal(await metric(d, 'strata_facade_compositions_total'), 0);
      // The entry is this name's, not another's, even by digest.
      await store.put('ws-else', spec(other.ref));
      const cross = await manifest(c, 'ws-else', digest);
      assert.notEqual(cross.status, 200);
    }
  });

  test('a digest is never answered with other bytes; a corrupt entry is ignored, counted and replaced', async (t) => {
    const redis = await startRedis(t);
    const direct = await directClient(redis.url, t);
    const flip = async (digest: string) => {
      const key = composedKey(digest);
      const value = await direct.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer }).get(key);
      assert.ok(Buffer.isBuffer(value));
      const bad = Buffer.from(value);
      bad[bad.length - 10]! ^= 0xff;
      await direct.set(key, bad);
    };

    // The spec moves after A composed: a replica without the entry must not answer the old digest with
    // the new bytes.
    await store.put('ws-moved', spec(ide.ref));
    const a = await replica(redis.url);
    const old = (await manifest(a, 'ws-moved', 'latest')).headers.get('docker-content-digest')!;
    await store.put('ws-moved', spec(other.ref));
    await flip(old);
    const b = await replica(redis.url);
    const answer = await manifest(b, 'ws-moved', old);
    assert.equal(answer.status, 404);
    assert.equal(errorCode(answer), 'MANIFEST_UNKNOWN');
    assert.equal(
      await metric(b, 'strata_facade_redis_reads_total', 'kind="composed"', 'outcome="corrupt"'),
      1,
    );
    assert.equal(warnings(b, /failed its checks/).length, 1);
    // A still has the old bytes in memory and serves them.
    assert.equal((await manifest(a, 'ws-moved', old)).status, 200);

    // Same spec: the corrupt entry is ignored, the recomposition is the same digest, and it is stored again.
    await store.put('ws-same', spec(ide.ref));
    const first = await manifest(a, 'ws-same', 'latest');
    const digest = first.headers.get('docker-content-digest')!;
    await flip(digest);
    const c = await replica(redis.url);
    const onC = await manifest(c, 'ws-same', digest);
    assert.equal(onC.status, 200);
    assert.deepEqual(onC.body, first.body);
    assert.equal(
      await metric(c, 'strata_facade_redis_reads_total', 'kind="composed"', 'outcome="corrupt"'),
      1,
    );
    const d = await replica(redis.url);
    assert.deepEqual((await manifest(d, 'ws-same', digest)).body, first.body);
    assert.equal(await metric(d, 'strata_facade_redis_reads_total', 'kind="composed"', 'outcome="hit"'), 1);
    assert.equal(await metric(d, 'strata_facade_compositions_total'), 0, 'the replaced entry served D');
  });

  test('Redis stopped and restarted: serving goes on, one warning per outage, counted, Redis used again', async (t) => {
    const redis: TestRedis = await startRedis(t);
    await store.put('ws-outage', spec(ide.ref));
    const a = await replica(redis.url);
    const b = await replica(redis.url);
    assert.equal(await metric(b, 'strata_facade_redis_up'), 1);
    const first = await manifest(a, 'ws-outage', 'latest');
    const digest = first.headers.get('docker-content-digest')!;

    await redis.stop();
    for (let i = 0; i < 3; i++) {
      const byDigest = await manifest(b, 'ws-outage', digest);
      assert.equal(byDigest.status, 200);
      assert.deepEqual(byDigest.body, first.body);
      assert.equal((await manifest(b, 'ws-outage', 'latest')).status, 200);
      assert.equal((await manifest(a, 'ws-outage', digest)).status, 200);
    }
    const layer = JSON.parse(first.body.toString()).layers[1] as { digest: string };
    assert.equal(digestOf((await blob(b, 'ws-outage', layer.digest)).body), layer.digest);
    assert.equal(await metric(b, 'strata_facade_redis_up'), 0);
    assert.equal(await metric(b, 'strata_facade_redis_outages_total'), 1);
    assert.equal(warnings(b, /Redis is out of use/).length, 1, 'one warning per outage');

    await redis.restart();
    await waitFor(async () => (await metric(b, 'strata_facade_redis_up')) === 1, 30_000, {
      what: 'B to use Redis again',
    });
    assert.equal(infos(b, /Redis answers again/).length, 1);
    assert.equal(warnings(b, /Redis is out of use/).length, 1);
    // Used again: what B composes now is found by a new replica without composing.
    await store.put('ws-after', spec(other.ref));
    const composed = await manifest(b, 'ws-after', 'latest');
    assert.equal(composed.status, 200);
    const c = await replica(redis.url);
    const onC = await manifest(c, 'ws-after', composed.headers.get('docker-content-digest')!);
    assert.deepEqual(onC.body, composed.body);
    assert.equal(await metric(c, 'strata_facade_compositions_total'), 0);
    assert.equal(await metric(b, 'strata_facade_redis_outages_total'), 1);
  });

  test('a hung Redis (paused, or a socket that never answers) bounds each call; requests are served', async (t) => {
    const redis = await startRedis(t);
    await store.put('ws-hung', spec(ide.ref));
    const a = await replica(redis.url, { redis: { timeoutMs: 200 } });
    redis.pause();
    t.after(() => redis.resume());
    const answer = await manifest(a, 'ws-hung', 'latest');
    assert.equal(answer.status, 200);
    const digest = answer.headers.get('docker-content-digest')!;
    assert.equal((await manifest(a, 'ws-hung', digest)).status, 200);
    assert.equal(await metric(a, 'strata_facade_redis_outages_total'), 1);
    assert.equal(await metric(a, 'strata_facade_redis_up'), 0);
    redis.resume();
    await waitFor(async () => (await metric(a, 'strata_facade_redis_up')) === 1, 30_000, {
      what: 'Redis in use after it resumed',
    });

    // A port that accepts connections and never answers, from the start.
    const sockets = new Set<Socket>();
    const silent = createServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    t.after(async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    });
    const port = (silent.address() as { port: number }).port;
    const h = await replica(`redis://127.0.0.1:${port}`, { redis: { timeoutMs: 200 } });
    const onH = await manifest(h, 'ws-hung', 'latest');
    assert.equal(onH.status, 200);
    assert.deepEqual(onH.body, answer.body);
    assert.equal(await metric(h, 'strata_facade_redis_outages_total'), 1);
    assert.equal(warnings(h, /Redis is out of use/).length, 1);
  });

  test('manifests and configs from registries are shared: a replica composes a spec of images another fetched, the registry down', async (t) => {
    const redis = await startRedis(t);
    await store.put('ws-up-a', spec(other.ref));
    await store.put('ws-up-b', spec(other.ref));
    const a = await replica(redis.url);
    assert.equal((await manifest(a, 'ws-up-a', 'latest')).status, 200);
    // Base and IDE image: a manifest and a config each, content-addressed (no expiry).
    const direct = await directClient(redis.url, t);
    // Shared in the background: the composition did not wait for these writes.
    const keys = await waitFor(
      async () => {
        const k = await direct.keys(keyOf('upstream', verifiedBytesCodec, '*'));
        return k.length >= 4 && k;
      },
      5000,
      { what: 'four upstream entries' },
    );
    assert.equal(keys.length, 4, keys.join(' '));
    assert.equal(await metric(a, 'strata_facade_redis_writes_total', 'kind="upstream"', 'outcome="ok"'), 4);
    for (const k of keys) assert.equal(await direct.pTTL(k), -1, k);

    // Another name (composed anew, not found as a composition) on a replica that fetched nothing.
    const b = await replica(redis.url);
    await reg.kill();
    let onB: Answer;
    try {
      onB = await manifest(b, 'ws-up-b', 'latest');
    } finally {
      await reg.restart();
    }
    assert.equal(onB.status, 200, onB.body.toString());
    assert.equal(await metric(b, 'strata_facade_compositions_total'), 1);
    assert.equal(await metric(b, 'strata_facade_redis_reads_total', 'kind="upstream"', 'outcome="hit"'), 4);

    // An entry whose checksum holds but whose bytes are another blob's is not trusted: the registry is
    // asked, and the entry replaced.
    const key = keyOf('upstream', verifiedBytesCodec, other.digest);
    const wrong = Buffer.from('{"schemaVersion":2,"layers":[]}');
    const sealed = Buffer.concat([createHash('sha256').update(wrong).digest(), wrong]);
    await direct.set(key, sealed);
    await store.put('ws-up-c', spec(other.ref));
    const c = await replica(redis.url);
    assert.equal((await manifest(c, 'ws-up-c', 'latest')).status, 200);
    assert.equal(
      await metric(c, 'strata_facade_redis_reads_total', 'kind="upstream"', 'outcome="corrupt"'),
      1,
    );
    const asBytes = direct.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
    await waitFor(async () => digestOf((await asBytes.get(key))?.subarray(32) ?? '') === other.digest, 5000, {
      what: 'the entry to be replaced',
    });
  });

  test('a Redis that wants a password and speaks only TLS: the password from a file (read again at reconnection), its certificate checked against a CA file', async (t) => {
    const tls = { certFile: join(work, 'redis-cert.pem'), keyFile: join(work, 'redis-key.pem') };
    const stranger = { certFile: join(work, 'stranger-cert.pem'), keyFile: join(work, 'stranger-key.pem') };
    await makeSelfSignedCert({ ...tls, cn: 'redis', ip: '127.0.0.1' });
    await makeSelfSignedCert({ ...stranger, cn: 'stranger', ip: '127.0.0.1' });
    const redis = await startRedis(t, { password: 'open sesame', tls });
    assert.match(redis.url, /^rediss:/);
    const passwordFile = join(work, 'redis-password');
    const wrongFile = join(work, 'redis-wrong-password');
    await writeFile(passwordFile, 'open sesame\n', { mode: 0o600 });
    await writeFile(wrongFile, 'open barley\n', { mode: 0o600 });
    await store.put('ws-secure', spec(ide.ref));

    const secure = { redis: { passwordFile, tls: { ca: tls.certFile } } };
    // A user in the URL goes with the password from the file.
    const a = await replica(redis.url.replace('rediss://', 'rediss://default@'), secure);
    const b = await replica(redis.url, secure);
    const onA = await manifest(a, 'ws-secure', 'latest');
    assert.equal(onA.status, 200);
    const onB = await manifest(b, 'ws-secure', onA.headers.get('docker-content-digest')!);
    assert.deepEqual(onB.body, onA.body);
    assert.equal(await metric(b, 'strata_facade_redis_reads_total', 'kind="composed"', 'outcome="hit"'), 1);
    for (const r of [a, b]) assert.equal(await metric(r, 'strata_facade_redis_outages_total'), 0);

    // A wrong password, or a server whose certificate the CA did not sign: Redis is out of use, said once,
    // and the facade serves without it.
    const wrongPassword = await replica(redis.url, {
      redis: { passwordFile: wrongFile, tls: secure.redis.tls },
    });
    const untrusted = await replica(redis.url, { redis: { passwordFile, tls: { ca: stranger.certFile } } });
    for (const [r, why] of [
      [wrongPassword, /WRONGPASS/],
      [untrusted, /certificate/],
    ] as const) {
      assert.equal((await manifest(r, 'ws-secure', 'latest')).status, 200);
      assert.equal(await metric(r, 'strata_facade_redis_up'), 0);
      const warned = warnings(r, /Redis is out of use/) as { err?: string }[];
      assert.equal(warned.length, 1);
      assert.match(warned[0]!.err ?? '', why);
    }

    // The password is rotated: the server's, then the secret's file; the connections drop. A reconnects
    // with the new one and shares again.
    const direct = createClient({
      url: redis.url,
      password: 'open sesame',
      socket: { tls: true, ca: await readFile(tls.certFile) },
    });
    direct.on('error', () => {});
    await direct.connect();
    t.after(() => direct.destroy());
    await direct.configSet('requirepass', 'open wheat');
    await writeFile(passwordFile, 'open wheat\n');
    await direct.sendCommand(['CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes']);
    // A composition is shared when it is new to the replica: a new name each time.
    let n = 0;
    await waitFor(
      async () => {
        const id = `ws-rotated-${n++}`;
        await store.put(id, spec(other.ref));
        const res = await manifest(a, id, 'latest');
        assert.equal(res.status, 200);
        const digest = res.headers.get('docker-content-digest')!;
        return (await direct.exists(composedKey(digest))) === 1;
      },
      15_000,
      { intervalMs: 250, what: 'a composition shared after the password was rotated' },
    );
  });

  test('tag resolutions are shared with a TTL: a moved tag is picked up by every replica', async (t) => {
    const redis = await startRedis(t);
    const moving = await pushMultiLayer(reg, 'ide/moving');
    await store.put('ws-tag', spec(moving.ref));
    const ttl = { tagTtlSeconds: 1, redis: { tagTtlSeconds: 2 } };
    const a = await replica(redis.url, ttl);
    const b = await replica(redis.url, ttl);
    const before = (await manifest(a, 'ws-tag', 'latest')).headers.get('docker-content-digest');
    assert.equal((await manifest(b, 'ws-tag', 'latest')).headers.get('docker-content-digest'), before);
    assert.ok((await metric(b, 'strata_facade_redis_reads_total', 'kind="tag"', 'outcome="hit"')) >= 1);

    const moved = await pushMultiLayer(reg, 'ide/moving');
    assert.notEqual(moved.digest, moving.digest);
    for (const r of [a, b]) {
      const now = await waitFor(
        async () => {
          const d = (await manifest(r, 'ws-tag', 'latest')).headers.get('docker-content-digest');
          return d !== before && d;
        },
        30_000,
        { intervalMs: 250, what: 'the moved tag to be picked up' },
      );
      const layers = JSON.parse((await manifest(r, 'ws-tag', now)).body.toString()).layers as unknown[];
      assert.equal(layers.length, busybox.layers + moved.layers);
    }
  });

  test('specs from a remote provider are shared with a TTL: another replica composes while the provider is down, until it expires', async (t) => {
    const redis = await startRedis(t);
    await store.put('ws-spec', spec(ide.ref));
    // A facade serving the spec store over gRPC plays the remote SpecProvider.
    const provider = await replica(redis.url, {
      specProviders: { store: { dir: join(work, 'specs'), listen: '127.0.0.1:0' } },
    });
    const remote = {
      specProviders: { remote: [`127.0.0.1:${provider.app.specProviderPort}`], cacheTtlSeconds: 1 },
      redis: { specTtlSeconds: 3 },
    };
    const a = await replica(redis.url, remote);
    const b = await replica(redis.url, remote);
    const onA = await manifest(a, 'ws-spec', 'latest');
    assert.equal(onA.status, 200);
    const direct = await directClient(redis.url, t);
    const keys = await direct.keys(keyOf('spec:*', specCodec(imageSpecJson), '*'));
    assert.equal(keys.length, 1);
    const ttl = await direct.pTTL(keys[0]!);
    assert.ok(ttl > 0 && ttl <= 3000, `spec entry TTL ${ttl}`);

    await stop(provider);
    const onB = await manifest(b, 'ws-spec', 'latest');
    assert.equal(onB.status, 200, onB.body.toString());
    assert.deepEqual(onB.body, onA.body);
    assert.equal(await metric(b, 'strata_facade_redis_reads_total', 'kind="spec"', 'outcome="hit"'), 1);
    // Once the shared entry expired, B must ask the provider, which is down.
    await waitFor(async () => (await manifest(b, 'ws-spec', 'latest')).status !== 200, 30_000, {
      intervalMs: 250,
      what: 'the shared spec to expire',
    });
  });
});
