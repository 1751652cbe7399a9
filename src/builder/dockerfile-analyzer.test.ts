import assert from 'node:assert/strict';
import { test } from 'node:test';
import { waitFor } from '../../test/helpers/process.ts';
import { errorKind } from '../errors.ts';
import { analyzeDockerfile, MAX_DOCKERFILE_BYTES } from './dockerfile.ts';
import { DockerfileAnalyzer } from './dockerfile-analyzer.ts';

const HANG = new URL('../../test/fixtures/workers/dockerfile-worker-hang.ts', import.meta.url);
const OVERLOADED = new URL('../../test/fixtures/workers/dockerfile-worker-overloaded.ts', import.meta.url);

/** A Dockerfile at the size cap of the kind that takes dockerfile-ast longest: one COPY per line. */
function largeDockerfile(): string {
  const line = 'COPY src/a.txt /dst/\n';
  const head = 'FROM busybox\n';
  return head + line.repeat(Math.floor((MAX_DOCKERFILE_BYTES - head.length) / line.length));
}

test('the event loop keeps turning while a Dockerfile at the size cap is analysed', async (t) => {
  const analyzer = new DockerfileAnalyzer();
  t.after(() => analyzer.close());
  await analyzer.analyze('FROM busybox\n'); // a worker is up, as in a builder that has analysed before
  const text = largeDockerfile();
  let turns = 0;
  let done = false;
  const turn = () => {
    if (done) return;
    turns++;
    setImmediate(turn);
  };
  setImmediate(turn);
  const analysis = await analyzer.analyze(text);
  done = true;
  // Parsed here, the whole Dockerfile would be one step: at most the turn before it would run.
  assert.ok(turns >= 10, `the event loop turned ${turns} times during the analysis`);
  assert.deepEqual(analysis, analyzeDockerfile(text));
});

test('an analysis past its time limit ends its worker and fails DeadlineExceeded; the next runs on a new one', async (t) => {
  const analyzer = new DockerfileAnalyzer({ script: HANG, timeoutMs: 50, maxRunning: 1 });
  t.after(() => analyzer.close());
  const first = analyzer.analyze('FROM busybox\n').catch((e: unknown) => e);
  const second = analyzer.analyze('FROM alpine\n').catch((e: unknown) => e);
  for (const err of [await first, await second]) {
    assert.equal(errorKind(err), 'DeadlineExceeded');
    assert.match(String(err), /Dockerfile analysis did not finish within 50 ms/);
  }
  assert.equal(analyzer.threads, 0, 'both stuck workers were ended');
});

test('analyses beyond the running and waiting bounds are refused; shutdown fails the rest and ends the workers', async () => {
  const analyzer = new DockerfileAnalyzer({ script: HANG, timeoutMs: 600_000, maxRunning: 1, maxQueued: 1 });
  const running = analyzer.analyze('FROM busybox\n').catch((e: unknown) => e);
  const waiting = analyzer.analyze('FROM alpine\n').catch((e: unknown) => e);
  const refused = await analyzer.analyze('FROM debian\n').catch((e: unknown) => e);
  assert.equal(errorKind(refused), 'ResourceExhausted');
  assert.match(String(refused), /Dockerfile analysis is busy \(1 running, 1 waiting\); try again later/);
  assert.equal(analyzer.threads, 1);

  await analyzer.close();
  assert.equal(errorKind(await running), 'Unavailable');
  assert.equal(errorKind(await waiting), 'Unavailable');
  assert.equal(analyzer.threads, 0);
  assert.equal(errorKind(await analyzer.analyze('FROM busybox\n').catch((e: unknown) => e)), 'Unavailable');
});

test('a Dockerfile over the size cap is refused before it reaches a worker', async (t) => {
  const analyzer = new DockerfileAnalyzer({ script: HANG });
  t.after(() => analyzer.close());
  const err = await analyzer
    .analyze(`FROM busybox\n${'#'.repeat(MAX_DOCKERFILE_BYTES)}`)
    .catch((e: unknown) => e);
  assert.equal(errorKind(err), 'InvalidArgument');
  assert.equal(analyzer.threads, 0);
});

test('analyses kept per snapshot: a verdict is kept, a refusal for a full queue or a shutdown is not', async (t) => {
  const analyzer = new DockerfileAnalyzer({ script: HANG, timeoutMs: 50, maxRunning: 1, maxQueued: 0 });
  t.after(() => analyzer.close());
  const a = { commit: 'a' };
  const b = { commit: 'b' };
  const none = new Map<string, string>();
  const first = analyzer.analyzeOnce(a, 'FROM a\n', none).catch((e: unknown) => e);
  const refused = await analyzer.analyzeOnce(b, 'FROM b\n', none).catch((e: unknown) => e);
  assert.equal(errorKind(refused), 'ResourceExhausted');
  assert.equal(errorKind(await first), 'DeadlineExceeded');
  assert.equal(analyzer.threads, 0);

  // b's refusal was not kept: b is analysed now, on a worker of its own.
  const again = analyzer.analyzeOnce(b, 'FROM b\n', none).catch((e: unknown) => e);
  assert.equal(analyzer.threads, 1);
  assert.equal(errorKind(await again), 'DeadlineExceeded');
  // a's time limit was: asked again, a is not analysed again.
  const kept = analyzer.analyzeOnce(a, 'FROM a\n', none).catch((e: unknown) => e);
  assert.equal(analyzer.threads, 0);
  assert.equal(await kept, await first);
  // Other build args are another analysis.
  const other = analyzer.analyzeOnce(a, 'FROM a\n', new Map([['X', '1']])).catch((e: unknown) => e);
  assert.equal(analyzer.threads, 1);
  await analyzer.close();
  assert.equal(errorKind(await other), 'Unavailable');
});

test('a worker that dies fails its analysis (Internal) and is not used again', async (t) => {
  const analyzer = new DockerfileAnalyzer({ script: new URL('./no-such-worker.ts', import.meta.url) });
  t.after(() => analyzer.close());
  for (let i = 0; i < 2; i++) {
    const err = await analyzer.analyze('FROM busybox\n').catch((e: unknown) => e);
    assert.equal(errorKind(err), 'Internal');
    assert.match(String(err), /Dockerfile analysis failed: .*no-such-worker/);
    assert.equal(analyzer.threads, 0);
  }
});

test("a time limit hit while the machine was overloaded is kept a while, not for the snapshot's life", async (t) => {
  let now = 0;
  // Long enough for a real worker to start and answer (0.2-0.3 s here), however busy the machine.
  const analyzer = new DockerfileAnalyzer({ script: OVERLOADED, timeoutMs: 3_000, now: () => now });
  t.after(() => analyzer.close());
  const snapshot = { commit: 'a' };
  const none = new Map<string, string>();
  const text = 'FROM busybox\nCOPY a /a\n';
  process.env.STRATA_TEST_OVERLOADED = '1';
  t.after(() => delete process.env.STRATA_TEST_OVERLOADED);
  const first = await analyzer.analyzeOnce(snapshot, text, none).catch((e: unknown) => e);
  assert.equal(errorKind(first), 'DeadlineExceeded');
  delete process.env.STRATA_TEST_OVERLOADED;

  // Asked again at once, the same commit is not analysed again: a Dockerfile that really is that slow
  // costs a worker its time limit once in a while, not at every request.
  assert.equal(await analyzer.analyzeOnce(snapshot, text, none).catch((e: unknown) => e), first);
  assert.equal(analyzer.threads, 0);
  // Later, with the machine no longer overloaded, it is analysed again and builds.
  now += 60_000;
  assert.deepEqual(await analyzer.analyzeOnce(snapshot, text, none), analyzeDockerfile(text));
});

test('a worker that cannot be started fails the analysis waiting for it, and nothing else', async (t) => {
  // Its thread cannot be made (ERR_WORKER_INIT_FAILED when the process is out of threads or memory):
  // here the Worker constructor refuses the script's URL once the first worker has started.
  const script = new URL(HANG.href);
  const analyzer = new DockerfileAnalyzer({ script, timeoutMs: 50, maxRunning: 1 });
  t.after(() => analyzer.close());
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown) => unhandled.push(err);
  process.on('unhandledRejection', onUnhandled);
  t.after(() => process.off('unhandledRejection', onUnhandled));
  const first = analyzer.analyze('FROM busybox\n').catch((e: unknown) => e);
  const second = analyzer.analyze('FROM alpine\n').catch((e: unknown) => e);
  script.href = 'https://example.invalid/dockerfile-worker.ts';
  assert.equal(errorKind(await first), 'DeadlineExceeded');
  const err = await second;
  assert.equal(errorKind(err), 'Internal');
  assert.match(String(err), /Dockerfile analysis cannot start a worker: /);
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(unhandled, []);
  assert.equal(analyzer.threads, 0);
});

test('a worker idle past its time is ended, and the next analysis starts another', async (t) => {
  const analyzer = new DockerfileAnalyzer({ idleMs: 50 });
  t.after(() => analyzer.close());
  assert.equal((await analyzer.analyze('FROM busybox\n')).images.length, 1);
  assert.equal(analyzer.threads, 1);
  await waitFor(() => analyzer.threads === 0, 10_000, { what: 'the idle worker ended' });
  assert.equal((await analyzer.analyze('FROM alpine\n')).images.length, 1);
  assert.equal(analyzer.threads, 1);
});

test('a ninth set of build args puts out the least recently asked for analysis of a snapshot, not all eight', async (t) => {
  const analyzed: string[] = [];
  // Counts the analyses analyzeOnce asks for; each is a real one.
  class Counting extends DockerfileAnalyzer {
    override analyze(text: string, buildArgs: ReadonlyMap<string, string> = new Map()) {
      analyzed.push(buildArgs.get('N') ?? '');
      return super.analyze(text, buildArgs);
    }
  }
  const analyzer = new Counting();
  t.after(() => analyzer.close());
  const snapshot = { commit: 'a' };
  const ask = (n: number) => analyzer.analyzeOnce(snapshot, 'FROM busybox\n', new Map([['N', String(n)]]));
  for (let n = 0; n < 8; n++) await ask(n);
  await ask(0); // 0 is now the most recently asked for, 1 the least
  assert.deepEqual(analyzed, ['0', '1', '2', '3', '4', '5', '6', '7']);
  await ask(8);
  await ask(0);
  await ask(2);
  assert.deepEqual(analyzed.slice(8), ['8'], 'set 0 and set 2 were kept');
  await ask(1);
  assert.deepEqual(analyzed.slice(8), ['8', '1'], 'set 1 was put out');
  // Bounded as before: 1 coming back put out the least recently asked for since (3).
  await ask(3);
  assert.deepEqual(analyzed.slice(8), ['8', '1', '3']);
});
