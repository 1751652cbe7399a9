// The builder's orchestration with a real registry and real git sources, and an engine held at a gate so
// that timing is under the test's control: joined builds, callers hanging up, force_rebuild, the queue,
// the timeout and shutdown. The engine "builds" by copying busybox to the target, as a push would. Also
// what BuildInfo tells a client, and the registry clients builds hold (RegistryAccess's per-policy cache).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { getEventListeners } from 'node:events';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { DockerfileParser } from 'dockerfile-ast';
import { service as healthService } from 'grpc-health-check';
import { pino } from 'pino';
import { ImageBuilder } from '../../src/api/gen/builder/imgbuilder_pb.ts';
import { callServerStream, callUnary, createClient } from '../../src/api/grpc/client.ts';
import type { EngineJob } from '../../src/builder/buildah.ts';
import { DockerfileAnalyzer } from '../../src/builder/dockerfile-analyzer.ts';
import { dirBytes } from '../../src/builder/git-source.ts';
import type { BuildEngine, BuildRequestSpec, BuildSourceSpec } from '../../src/builder/orchestrator.ts';
import { RegistryAccess } from '../../src/builder/registries.ts';
import { AuthPolicy, NO_AUTH } from '../../src/builder/registry-auth.ts';
import type { SourceHistory } from '../../src/builder/source-history.ts';
import { errorKind } from '../../src/errors.ts';
import { parseNormalizedReference } from '../../src/oci/reference.ts';
import { anonymous } from '../../src/registry/credentials.ts';
import { builderConfigFrom, type RunningBuilder, startBuilder } from '../../src/server/builder.ts';
import { collectUpdates, dockerfileRepo, dockerfileRequest, GatedEngine } from '../helpers/builder-engine.ts';
import { countingProxy } from '../helpers/counting-proxy.ts';
import { startGitHttp } from '../helpers/git-http.ts';
import { createRepo, type TestRepo } from '../helpers/git-repo.ts';
import { pushTwoPlatformIndex } from '../helpers/images.ts';
import { freePort } from '../helpers/ports.ts';
import { runCommand, waitFor, within } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { makeSelfSignedCert } from '../helpers/tls-cert.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const STRATA = new URL('../../bin/strata', import.meta.url).pathname;

let dir: string;
let reg: TestRegistry;
let repo: TestRepo;
let busybox: string;

before(async () => {
  dir = await tempDir('builder-orch');
  reg = await startRegistry();
  ({ busybox, repo } = await dockerfileRepo(reg, dir, ['a', 'b', 'c']));
});
after(async () => {
  await reg?.stop();
  await removeTempDir(dir);
});

async function start(
  name: string,
  engine: BuildEngine,
  extra: Record<string, unknown> = {},
): Promise<RunningBuilder> {
  return startBuilder(
    builderConfigFrom(
      {
        listen: '127.0.0.1:0',
        baseRepository: `${reg.host}/base`,
        workspaceRepository: `${reg.host}/ws-${name}`,
        stateDir: join(dir, `state-${name}`),
        plainHttpHosts: [reg.host],
        allowFileRemotes: true,
        ...extra,
      },
      dir,
    ),
    pino({ level: 'silent' }),
    { engine },
  );
}

const request = (sub: string, force = false) => dockerfileRequest(repo.url, sub, force);

const all = collectUpdates;

async function metric(b: RunningBuilder, name: string): Promise<string> {
  const text = await b.metrics.registry.metrics();
  return text
    .split('\n')
    .filter((l) => l.startsWith(name))
    .join('\n');
}

test('identical requests join one build; a caller hanging up does not stop it; force_rebuild starts another', async () => {
  const engine = new GatedEngine(busybox);
  const b = await start('join', engine);
  try {
    const first = b.builder.build(request('a'));
    const firstMsg = await first.next();
    assert.equal(firstMsg.value?.status, 'running');
    await engine.started(1);
    const second = all(b.builder.build(request('a')));
    const third = all(b.builder.build(request('a')));
    // Both have joined before the build may end (planning a request takes turns with other work).
    await waitFor(async () => / 2$/.test(await metric(b, 'strata_builder_joined_requests_total')), 20_000, {
      what: 'the two identical requests to join',
    });
    await first.return(undefined); // the first caller hangs up
    engine.release();
    const [s2, s3] = await Promise.all([second, third]);
    assert.equal(engine.jobs.length, 1, 'one build for three identical requests');
    assert.deepEqual(s2, s3, 'every caller gets the same stream');
    assert.equal(s2.at(-1)?.status, 'succeeded');
    assert.equal(s2.at(-1)?.info?.id, firstMsg.value?.info?.id);
    assert.match(await metric(b, 'strata_builder_joined_requests_total'), / 2$/);
    assert.match(await metric(b, 'strata_builder_builds_started_total'), / 1$/);

    const existing = await all(b.builder.build(request('a')));
    assert.deepEqual(
      existing.map((u) => u.status),
      ['succeeded'],
    );
    const forced = b.builder.build(request('a', true));
    const forcedFirst = await forced.next();
    assert.match(forcedFirst.value?.message ?? '', /force_rebuild/);
    await engine.started(2);
    engine.release();
    assert.equal((await all(forced)).at(-1)?.status, 'succeeded');
    assert.equal(engine.jobs.length, 2);
    assert.match(await metric(b, 'strata_builder_builds_done_total'), /outcome="success"} 2/);
  } finally {
    engine.release();
    await b.close();
  }
});

test('builds beyond the parallelism wait in a bounded queue and say so', async () => {
  const engine = new GatedEngine(busybox);
  const b = await start('queue', engine, { parallelism: 1, maxQueued: 1 });
  try {
    const one = all(b.builder.build(request('b')));
    await engine.started(1);
    const two = b.builder.build(request('c'));
    const queued = await two.next();
    assert.match(queued.value?.message ?? '', /^queued at position 1: all 1 build slots are busy/);
    assert.equal(queued.value?.info?.phase, 'queued');
    assert.deepEqual(
      b.builder
        .listBuilds()
        .map((i) => i.phase)
        .sort(),
      ['queued', 'running'],
    );
    await assert.rejects(all(b.builder.build(request('a'))), /the build queue is full \(1 builds waiting\)/);
    engine.release();
    await one;
    await engine.started(2);
    engine.release();
    const rest = await all(two);
    assert.equal(rest.at(-1)?.status, 'succeeded');
    assert.ok(rest.some((u) => u.status === 'running' && u.info?.phase === 'running'));
  } finally {
    engine.release();
    await b.close();
  }
});

test('a build that waited for a slot leaves no listener on the builder’s shutdown signal', async () => {
  const engine = new GatedEngine(busybox);
  const b = await start('slot-listeners', engine, { parallelism: 1 });
  // The builder's own signal, which lives as long as it does.
  const shutdown = (b.builder as unknown as { shutdown: AbortController }).shutdown.signal;
  try {
    for (let round = 1; round <= 3; round++) {
      const running = all(b.builder.build(request('b', true)));
      await engine.started(2 * round - 1);
      const queued = b.builder.build(request('c', true));
      assert.match((await queued.next()).value?.message ?? '', /^queued at position 1/);
      engine.release();
      await running;
      await engine.started(2 * round);
      engine.release();
      assert.equal((await all(queued)).at(-1)?.status, 'succeeded');
    }
    assert.equal(getEventListeners(shutdown, 'abort').length, 0);
  } finally {
    engine.release();
    await b.close();
  }
});

test('a build past its timeout fails; shutdown cancels builds and removes their work', async () => {
  const engine = new GatedEngine(busybox);
  const b = await start('timeout', engine, { timeoutSeconds: 0.5 });
  const timedOut = await all(b.builder.build(request('a')));
  assert.deepEqual(timedOut.at(-1)?.message, 'image build failed: the build did not finish within 1 s');
  assert.equal(timedOut.filter((u) => u.status !== 'running').length, 1);
  await b.close();

  const engine2 = new GatedEngine(busybox);
  const b2 = await start('shutdown', engine2);
  const stream = all(b2.builder.build(request('b')));
  await engine2.started(1);
  const work = join(dir, 'state-shutdown', 'work');
  assert.equal((await readdir(work)).length, 1, 'the build has a work dir');
  await b2.close();
  const updates = await stream;
  assert.equal(updates.at(-1)?.status, 'failed');
  assert.match(updates.at(-1)?.message ?? '', /shut down/);
  assert.deepEqual(await readdir(work), [], 'work dirs removed');
  await assert.rejects(all(b2.builder.build(request('b'))), /shutting down/);
});

test('the work a previous process left behind (checkouts, auth files) is removed at start', async () => {
  const work = join(dir, 'state-leftover', 'work');
  await mkdir(join(work, 'a-build-id', 'workspace'), { recursive: true });
  await writeFile(join(work, 'a-build-id', 'auth.json'), '{"auths":{"r":{"auth":"c2VjcmV0"}}}');
  await mkdir(join(work, 'plan-x', 'git'), { recursive: true });
  const b = await start('leftover', new GatedEngine(busybox));
  try {
    assert.deepEqual(await readdir(work).catch(() => []), []);
  } finally {
    await b.close();
  }
});

test('a second builder on a state directory in use is refused, and leaves the first one’s work alone', async () => {
  const state = join(dir, 'state-shared');
  const first = await start('shared', new GatedEngine(busybox));
  try {
    // As a build under way has it; a second builder's start would remove it as a previous process's.
    await mkdir(join(state, 'work', 'a-build-id'), { recursive: true });
    const second = await start('shared', new GatedEngine(busybox)).catch((err: unknown) => err);
    if (second && typeof second === 'object' && 'close' in second) await (second as RunningBuilder).close();
    assert.deepEqual(await readdir(join(state, 'work')), ['a-build-id']);
    assert.equal(errorKind(second), 'Unavailable');
    assert.match(
      String(second),
      new RegExp(`state directory ${state} is in use by another builder \\(pid ${process.pid}\\)`),
    );
  } finally {
    await first.close();
  }
  // Once that builder has stopped, the directory is free.
  const next = await start('shared', new GatedEngine(busybox));
  await next.close();
});

test('shutdown ends the fetch of a plan from a git server that never answers, and removes its directory', async (t) => {
  const sockets = new Set<Socket>();
  const silent = createServer((socket) => sockets.add(socket)); // accepts, never answers
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const s of sockets) s.destroy();
    silent.close();
  });
  const remote = `http://127.0.0.1:${(silent.address() as AddressInfo).port}/app.git`;
  const b = await start('silent-git', new GatedEngine(busybox), { gitTimeoutSeconds: 20 });
  const req = dockerfileRequest(remote, 'a');
  const source = req.source as Extract<BuildSourceSpec, { kind: 'dockerfile' }>;
  // A commit id: no ls-remote, the fetch (shared by every caller of this commit) comes first.
  source.git = { ...source.git, targetMode: 'remoteCommit', cloneTarget: 'a'.repeat(40) };
  const stream = all(b.builder.build(req));
  stream.catch(() => {});
  await waitFor(() => sockets.size > 0, 20_000, { what: 'git connected' });
  await within(b.close(), 20_000, 'the builder closed');
  assert.deepEqual(await readdir(join(dir, 'state-silent-git', 'work')), [], 'the plan’s git dir removed');
  const gits = async () => (await runCommand('ps', ['-eo', 'args='])).includes(remote);
  assert.equal(await gits(), false, 'no git left talking to the server');
  await assert.rejects(within(stream, 20_000, 'the build’s end'), /shutting down/);
});

test('TLS on request; health and Prometheus metrics served', async () => {
  const cert = join(dir, 'tls.crt');
  const key = join(dir, 'tls.key');
  await makeSelfSignedCert({ keyFile: key, certFile: cert, cn: '127.0.0.1', ip: '127.0.0.1' });
  const metricsPort = await freePort();
  const b = await start('tls', new GatedEngine(busybox), {
    tls: { cert, key },
    metrics: `127.0.0.1:${metricsPort}`,
  });
  const secure = new grpc.Client(`127.0.0.1:${b.port}`, grpc.credentials.createSsl(await readFile(cert)));
  const plain = createClient(`127.0.0.1:${b.port}`);
  try {
    const check = healthService.Check;
    assert.ok(check);
    const health = await new Promise<{ status: string }>((resolve, reject) =>
      secure.makeUnaryRequest(
        check.path,
        check.requestSerialize,
        (buf: Buffer) => check.responseDeserialize(buf) as { status: string },
        { service: 'builder.ImageBuilder' },
        new grpc.Metadata(),
        { deadline: Date.now() + 10_000 },
        (err, value) => (err || !value ? reject(err) : resolve(value)),
      ),
    );
    assert.equal(health.status, 'SERVING');
    assert.deepEqual((await callUnary(secure, ImageBuilder.method.listBuilds, {})).builds, []);
    await assert.rejects(callUnary(plain, ImageBuilder.method.listBuilds, {}, { timeoutMs: 3000 }));
    // `strata build` reaches it with --tls-ca; without it the CLI speaks plain gRPC and is refused.
    const strata = (args: string[]) => runCommand(STRATA, ['build', ...args], { timeoutMs: 60_000 });
    assert.match(await strata(['ls', '--address', `127.0.0.1:${b.port}`, '--tls-ca', cert]), /^BUILD ID/);
    await assert.rejects(strata(['ls', '--address', `127.0.0.1:${b.port}`]));
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    for (const name of [
      'strata_builder_builds_started_total',
      'strata_builder_builds_done_total',
      'strata_builder_build_duration_seconds',
      'strata_builder_joined_requests_total',
      'strata_builder_queue_length',
    ]) {
      assert.match(metrics, new RegExp(`^# TYPE ${name} `, 'm'));
    }
  } finally {
    secure.close();
    plain.close();
    await b.close();
  }
});

test('FROM --platform pins the manifest of that platform, not the builder’s', async () => {
  const multi = await pushTwoPlatformIndex(reg, 'multi');
  const [amd64, arm64] = multi.manifests.map((m) => m.digest);
  await repo.commit({
    'plat/Dockerfile': `FROM --platform=linux/arm64 ${multi.ref} AS tools\nFROM ${multi.ref}\nCOPY --from=tools /etc/strata-platform /arm\n`,
    'plat/x': '',
  });
  const engine = new GatedEngine(busybox);
  const b = await start('platform', engine);
  try {
    const stream = all(b.builder.build(request('plat')));
    await engine.started(1);
    const lines = (await readFile(engine.jobs[0]?.dockerfile ?? '', 'utf8')).split('\n');
    engine.release();
    assert.equal((await stream).at(-1)?.status, 'succeeded');
    assert.equal(lines[0], `FROM --platform=linux/arm64 ${reg.host}/multi@${arm64} AS tools`);
    assert.equal(lines[1], `FROM ${reg.host}/multi@${amd64}`);
  } finally {
    engine.release();
    await b.close();
  }
});

test('a commit’s Dockerfile is analysed once, off the event loop, however many requests plan it', async (t) => {
  const commit = await repo.commit({ 'once/Dockerfile': `FROM ${busybox}\nCOPY x /x\n`, 'once/x': 'o\n' });
  const source = request('once').source as Extract<BuildSourceSpec, { kind: 'dockerfile' }>;
  source.git = { ...source.git, targetMode: 'remoteCommit', cloneTarget: commit };
  const b = await start('parse-once', new GatedEngine(busybox));
  t.after(() => b.close());
  const parser = DockerfileParser as { parse: typeof DockerfileParser.parse };
  const parse = parser.parse;
  let parses = 0;
  parser.parse = (text) => {
    parses++;
    return parse(text);
  };
  const analyze = DockerfileAnalyzer.prototype.analyze;
  let analyses = 0;
  DockerfileAnalyzer.prototype.analyze = function (this: DockerfileAnalyzer, ...args) {
    analyses++;
    return analyze.apply(this, args);
  };
  t.after(() => {
    parser.parse = parse;
    DockerfileAnalyzer.prototype.analyze = analyze;
  });
  for (let i = 0; i < 3; i++) {
    assert.equal((await b.builder.resolveWorkspaceImage(source, NO_AUTH, false)).exists, false);
  }
  assert.equal(parses, 0, 'parsed on a worker thread, not on the event loop');
  assert.equal(analyses, 1);
});

test('the build logs’ budget is the configured one: bytes of each log, finished builds kept', async (t) => {
  class Chatty extends GatedEngine {
    override async build(job: EngineJob) {
      for (let i = 0; i < 100; i++) job.onLine(`line ${i} ${'x'.repeat(40)}`);
      return super.build(job);
    }
  }
  const engine = new Chatty(busybox);
  const b = await start('log-budget', engine, { logs: { maxPerBuild: '1KiB', keepBuilds: 1 } });
  t.after(() => b.close());
  const ids: string[] = [];
  for (const sub of ['a', 'b']) {
    const updates = all(b.builder.build(request(sub)));
    await engine.started(ids.length + 1);
    engine.release();
    const last = (await updates).at(-1);
    assert.equal(last?.status, 'succeeded');
    ids.push(last?.info?.id ?? '');
  }
  const logs = join(dir, 'state-log-budget', 'logs');
  assert.deepEqual((await readdir(logs)).sort(), [`${ids[1]}.json`, `${ids[1]}.log`]);
  const text = await readFile(join(logs, `${ids[1]}.log`), 'utf8');
  assert.match(text, /\[log truncated: more than 1024 bytes\]\n$/);
  assert.ok(Buffer.byteLength(text) < 1024 + 64, `${Buffer.byteLength(text)} bytes`);
});

test('planning keeps at most 8 fetched git directories, and at most repositoryMax bytes of them', async (t) => {
  const commits: string[] = [];
  for (let i = 0; i < 10; i++) {
    commits.push(
      await repo.commit({ 'keep/Dockerfile': `FROM ${busybox}\nCOPY x /x\n`, 'keep/x': `${i}\n` }),
    );
  }
  const plans = async (name: string, extra: Record<string, unknown>) => {
    const b = await start(name, new GatedEngine(busybox), extra);
    t.after(() => b.close());
    for (const commit of commits) {
      const source = request('keep').source as Extract<BuildSourceSpec, { kind: 'dockerfile' }>;
      source.git = { ...source.git, targetMode: 'remoteCommit', cloneTarget: commit };
      await b.builder.resolveWorkspaceImage(source, NO_AUTH, false);
    }
    const work = join(dir, `state-${name}`, 'work');
    const kept = await readdir(work);
    return {
      count: kept.length,
      bytes: (await Promise.all(kept.map((d) => dirBytes(join(work, d))))).reduce((a, n) => a + n, 0),
    };
  };
  assert.equal((await plans('plan-keep', {})).count, 8);
  const one = (await plans('plan-keep-one', {})).bytes / 8;
  const budget = Math.floor(2.5 * one);
  const small = await plans('plan-keep-bytes', { repositoryMax: budget });
  assert.equal(small.count, 2, JSON.stringify({ one, small }));
  assert.ok(small.bytes <= budget);
});

test('a source past repositoryMax fails its plan or build, and what it wrote is removed', async (t) => {
  const b = await start('too-large', new GatedEngine(busybox), { repositoryMax: '1MiB' });
  t.after(() => b.close());
  const work = join(dir, 'state-too-large', 'work');
  const dockerfile = `FROM ${busybox}\nCOPY x /x\n`;
  // Random bytes: their git objects are as large as the file.
  const noisy = await createRepo(join(dir, 'noisy'));
  await noisy.commit({ 'app/Dockerfile': dockerfile, 'app/x': randomBytes(2 << 20).toString('base64') });
  await assert.rejects(all(b.builder.build(dockerfileRequest(noisy.url, 'app'))), (err) => {
    assert.equal(errorKind(err), 'ResourceExhausted');
    assert.match(String(err), /is larger than this builder takes: its git objects passed 1048576 bytes/);
    return true;
  });
  assert.deepEqual(await readdir(work), [], 'the plan’s git directory removed');
  // Zeros: tiny git objects, a checkout of 3 MiB.
  const zeros = await createRepo(join(dir, 'zeros'));
  await zeros.commit({ 'app/Dockerfile': dockerfile, 'app/x': '\0'.repeat(3 << 20) });
  const updates = await all(b.builder.build(dockerfileRequest(zeros.url, 'app')));
  assert.equal(updates.at(-1)?.status, 'failed');
  assert.match(
    updates.at(-1)?.message ?? '',
    /the checkout of .* would write 31457\d\d bytes, more than this builder takes \(repositoryMax 1048576 bytes\)/,
  );
  await waitFor(async () => (await readdir(work)).length === 0, 10_000, { what: 'the work removed' });
});

/**
 * An engine whose layer cache is always over its budget, whose trim waits for the test (or the builder's
 * shutdown), and which notes a build begun during a trim.
 */
class TrimmingEngine extends GatedEngine {
  trims = 0;
  trimming = false;
  builtDuringTrim = false;
  private endTrim: (() => void) | undefined;

  override async build(job: EngineJob) {
    if (this.trimming) this.builtDuringTrim = true;
    return super.build(job);
  }

  async cacheOverBudget(): Promise<boolean> {
    return true;
  }

  async trimCache(_log: (msg: string) => void, signal?: AbortSignal): Promise<void> {
    this.trims++;
    this.trimming = true;
    await new Promise<void>((resolve) => {
      this.endTrim = resolve;
      if (signal?.aborted) resolve();
      signal?.addEventListener('abort', () => resolve(), { once: true });
    });
    this.trimming = false;
  }

  finishTrim(): void {
    this.endTrim?.();
  }
}

async function until(what: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await what())) await new Promise((r) => setTimeout(r, 20));
}

test('a build that starts while the layer cache is being trimmed waits for the trim', async () => {
  const engine = new TrimmingEngine(busybox);
  const b = await start('trim', engine);
  try {
    const first = all(b.builder.build(request('a')));
    await engine.started(1);
    engine.release();
    assert.equal((await first).at(-1)?.status, 'succeeded');
    await until(() => engine.trims === 1); // no build runs: the trim starts
    const second = b.builder.build(request('b'));
    const id = (await second.next()).value?.info?.id ?? '';
    const log = join(dir, 'state-trim', 'logs', `${id}.log`);
    // Either the engine is asked to build (during the trim) or the build says it waits for it.
    await until(
      async () => engine.jobs.length === 2 || /layer cache/.test(await readFile(log, 'utf8').catch(() => '')),
    );
    engine.finishTrim();
    await engine.started(2);
    engine.release();
    assert.equal((await all(second)).at(-1)?.status, 'succeeded');
    assert.equal(engine.builtDuringTrim, false, 'buildah must not build while the trim removes images');
  } finally {
    engine.finishTrim();
    engine.release();
    await b.close();
  }
});

test('a builder that is never idle still trims its layer cache, between builds and not under one', async () => {
  const engine = new TrimmingEngine(busybox);
  const b = await start('busy-trim', engine, { parallelism: 2 });
  const slots = (b.builder as unknown as { slots: { held: boolean } }).slots;
  try {
    const builds = [all(b.builder.build(request('a'))), all(b.builder.build(request('b')))];
    await engine.started(2);
    engine.releaseFirst();
    const running = builds[1 - (await Promise.race(builds.map((p, i) => p.then(() => i))))];
    // Over budget with a build running: no build starts until it ends and the cache is trimmed.
    await waitFor(() => slots.held === true, 10_000, { what: 'the slots held for the trim' });
    const third = b.builder.build(request('c'));
    const queued = (await third.next()).value;
    assert.match(queued?.message ?? '', /^queued at position 1: builds wait for upkeep of the layer cache/);
    assert.equal(engine.trims, 0, 'no trim while a build runs');
    engine.release();
    assert.equal((await running)?.at(-1)?.status, 'succeeded');
    await waitFor(() => engine.trims === 1, 10_000, { what: 'the trim' });
    assert.equal(engine.jobs.length, 2, 'the queued build waits for the trim');
    engine.finishTrim();
    await engine.started(3);
    engine.release();
    assert.equal((await all(third)).at(-1)?.status, 'succeeded');
    assert.equal(engine.builtDuringTrim, false);
  } finally {
    engine.finishTrim();
    engine.release();
    await b.close();
  }
});

test('shutdown waits for a layer cache trim under way, which it ends', async () => {
  const engine = new TrimmingEngine(busybox);
  const b = await start('close-trim', engine);
  const first = all(b.builder.build(request('a')));
  await engine.started(1);
  engine.release();
  assert.equal((await first).at(-1)?.status, 'succeeded');
  await waitFor(() => engine.trimming, 10_000, { what: 'the trim' });
  await within(b.close(), 20_000, 'the builder closed');
  assert.equal(engine.trimming, false, 'the trim ended before the builder closed');
});

test('a private repository’s commit, planned for a caller with credentials, is not built for one without', async (t) => {
  const gitAuth = { username: 'gituser', password: 'git-secret' };
  const http = await startGitHttp(dir, t, gitAuth);
  const commit = await repo.commit({
    'private/Dockerfile': `FROM ${busybox}\nCOPY x /x\n`,
    'private/x': 'p\n',
  });
  const req = (auth?: typeof gitAuth): BuildRequestSpec => {
    const r = dockerfileRequest(http.url('app'), 'private');
    const source = r.source as Extract<BuildSourceSpec, { kind: 'dockerfile' }>;
    source.git = { ...source.git, targetMode: 'remoteCommit', cloneTarget: commit, ...(auth && { auth }) };
    return r;
  };
  const engine = new GatedEngine(busybox);
  const b = await start('private', engine);
  let stop = false;
  try {
    const planned = await b.builder.resolveWorkspaceImage(req(gitAuth).source, NO_AUTH, false);
    assert.equal(planned.exists, false);
    await assert.rejects(
      b.builder.resolveWorkspaceImage(req().source, NO_AUTH, false),
      (e) => errorKind(e) === 'Unavailable',
    );
    const attempt = all(b.builder.build(req())).then(
      (u) => `built: ${u.at(-1)?.status}`,
      (e: unknown) => errorKind(e),
    );
    const asked = (async () => {
      while (!stop && engine.jobs.length === 0) await new Promise((r) => setTimeout(r, 20));
      return 'the engine was asked to build';
    })();
    const outcome = await Promise.race([attempt, asked]);
    assert.equal(outcome, 'Unavailable');
  } finally {
    stop = true;
    engine.release();
    await b.close();
  }
});

test('BuildInfo.log_info names the port the builder listens on, also when it was picked at start', async () => {
  const engine = new GatedEngine(busybox);
  const b = await start('logurl', engine);
  const client = createClient(`127.0.0.1:${b.port}`);
  try {
    const stream = callServerStream(client, ImageBuilder.method.build, {
      source: {
        from: {
          case: 'file',
          value: {
            source: { spec: { case: 'git', value: { remoteUri: repo.url } } },
            dockerfilePath: 'c/Dockerfile',
            contextPath: 'c',
          },
        },
      },
      forceRebuild: true,
    });
    let url = '';
    const released = engine.started(1).then(() => engine.release());
    for await (const res of stream) if (res.info) url ||= res.info.logInfo?.url ?? '';
    await released;
    assert.equal(url, `grpc://127.0.0.1:${b.port}`);
  } finally {
    engine.release();
    client.close();
    await b.close();
  }
});

test('ListBuilds names the port the builder listens on in a build’s log URL', async () => {
  const engine = new GatedEngine(busybox);
  const b = await start('logurl-list', engine);
  const client = createClient(`127.0.0.1:${b.port}`);
  try {
    const updates = b.builder.build(request('a'));
    await updates.next();
    await engine.started(1);
    const { builds } = await callUnary(client, ImageBuilder.method.listBuilds, {});
    assert.equal(builds.length, 1);
    assert.equal(builds[0]?.logInfo?.url, `grpc://127.0.0.1:${b.port}`);
    engine.release();
    for await (const _ of updates);
  } finally {
    engine.release();
    client.close();
    await b.close();
  }
});

test('a client a build holds keeps working while requests with other credentials push it out of the cache', async () => {
  const access = new RegistryAccess({ hosts: { insecure: [reg.host] }, installation: anonymous });
  try {
    const image = parseNormalizedReference(busybox);
    const policy = (n: number) =>
      new AuthPolicy(
        {
          mode: { kind: 'none' },
          additional: { 'other.example': Buffer.from(`u${n}:p`).toString('base64') },
        },
        { base: `${reg.host}/base`, workspace: `${reg.host}/ws` },
        anonymous,
      );
    const held = access.forPolicy(policy(0));
    await held.resolve(image);
    // Many callers with credentials of their own, while the first one's build still copies.
    for (let n = 1; n <= 100; n++) access.forPolicy(policy(n));
    const again = await held.resolve(image);
    assert.match(again.digest, /^sha256:/);
  } finally {
    await access.close();
  }
});

test('a 500 to the builder’s own check that its pushed image exists does not fail the build', async (t) => {
  // The first read of the workspace image after its push answers 500, as docker-registry answers a read of
  // a tag another build is pushing at that moment.
  const manifest = /^\/v2\/ws-blink\/manifests\//;
  let blinked = false;
  const proxy = await countingProxy(`http://${reg.host}`, {
    fail: (req, before) => {
      if (blinked || (req.method !== 'GET' && req.method !== 'HEAD') || !manifest.test(req.path))
        return false;
      blinked = before.some((s) => s.method === 'PUT' && manifest.test(s.path));
      return blinked;
    },
  });
  t.after(() => proxy.close());
  const engine = new GatedEngine(busybox);
  const b = await startBuilder(
    builderConfigFrom(
      {
        listen: '127.0.0.1:0',
        baseRepository: `${proxy.host}/base-blink`,
        workspaceRepository: `${proxy.host}/ws-blink`,
        stateDir: join(dir, 'state-blink'),
        plainHttpHosts: [reg.host, proxy.host],
        allowFileRemotes: true,
      },
      dir,
    ),
    pino({ level: 'silent' }),
    { engine },
  );
  t.after(() => b.close());
  const building = all(b.builder.build(request('a')));
  await engine.started(1);
  engine.release();
  const updates = await within(building, 60_000, 'the build');
  assert.ok(blinked, 'the check after the push was answered 500');
  assert.equal(updates.at(-1)?.status, 'succeeded', JSON.stringify(updates.at(-1)));
});

/**
 * Watches a builder's whole reads of its build history (a record's files too, tens of MB for a large
 * context): how many, how many at once, and the most at once. They wait until `open` is called.
 */
function wholeReads(b: RunningBuilder) {
  const history = (b.builder as unknown as { o: { history: SourceHistory } }).o.history;
  const get = history.get.bind(history);
  let open = () => {};
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const reads = { count: 0, now: 0, peak: 0, open: () => open() };
  history.get = async (source, signal) => {
    reads.count++;
    reads.peak = Math.max(reads.peak, ++reads.now);
    try {
      await gate;
      return await get(source, signal);
    } finally {
      reads.now--;
    }
  };
  return reads;
}

test('a build of the key its source last built reads none of that build’s files for its reason', async () => {
  const stateDir = join(dir, 'state-same-key');
  const engine = new GatedEngine(busybox);
  const first = await start('same-key-1', engine, { stateDir });
  try {
    const built = all(first.builder.build(request('a')));
    await engine.started(1);
    engine.release();
    assert.equal((await built).at(-1)?.status, 'succeeded');
  } finally {
    await first.close();
  }
  // The same state (so the same history), another workspace repository: the image is not there, the key is.
  const second = await start('same-key-2', engine, { stateDir });
  try {
    const reads = wholeReads(second);
    reads.open();
    const building = second.builder.build(request('a'));
    const why = (await building.next()).value?.message;
    assert.equal(why, 'the image built for this key earlier is no longer in the registry');
    await engine.started(2);
    engine.release();
    assert.equal((await all(building)).at(-1)?.status, 'succeeded');
    assert.equal(reads.count, 0, 'the record’s first line says the key is the same');
  } finally {
    engine.release();
    await second.close();
  }
});

test('queued builds of sources that changed compare their last builds’ files two at a time, and say what changed', async () => {
  const subs = ['a', 'b', 'c', 'd'];
  const app = await createRepo(join(dir, 'queued-reasons'));
  await app.commit(
    Object.fromEntries(
      subs.flatMap((s) => [
        [`${s}/Dockerfile`, `FROM ${busybox}\nCOPY x /x\n`],
        [`${s}/x`, `${s}\n`],
      ]),
    ),
  );
  const engine = new GatedEngine(busybox);
  const b = await start('queued-reasons', engine, { parallelism: 1, maxQueued: 8 });
  try {
    for (const [i, s] of subs.entries()) {
      const built = all(b.builder.build(dockerfileRequest(app.url, s)));
      await engine.started(i + 1);
      engine.release();
      assert.equal((await built).at(-1)?.status, 'succeeded');
    }
    await app.commit(Object.fromEntries(subs.map((s) => [`${s}/x`, `${s} again\n`])));
    const reads = wholeReads(b);
    const builds = subs.map((s) => all(b.builder.build(dockerfileRequest(app.url, s))));
    // Each build asks for its reason as it starts, before it waits for a slot; none is answered yet.
    await waitFor(
      async () => / 8$/.test(await metric(b, 'strata_builder_builds_started_total')) && reads.now >= 2,
      60_000,
      { what: 'the four builds started, two of them reading their last build' },
    );
    reads.open();
    for (let n = subs.length + 1; n <= 2 * subs.length; n++) {
      await engine.started(n);
      engine.release();
    }
    const updates = await Promise.all(builds);
    assert.equal(reads.count, 4);
    assert.ok(reads.peak <= 2, `${reads.peak} last builds read whole at once`);
    // The reasons are what they were, queued builds' messages too.
    const reason =
      /^compared with the last build of this source \(\d{4}-[^)]*\): context files changed: modified \S*x$/;
    let queued = 0;
    for (const u of updates) {
      assert.equal(u.at(-1)?.status, 'succeeded');
      const [head, ...tail] = (u[0]?.message ?? '').split('; ');
      if (head?.startsWith('queued at position ')) queued++;
      assert.match(head?.startsWith('queued at position ') ? tail.join('; ') : (u[0]?.message ?? ''), reason);
    }
    assert.equal(queued, 3);
  } finally {
    engine.release();
    await b.close();
  }
});
