import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { removeTempDir, tempDir } from '../../test/helpers/tmp.ts';
import { errorKind } from '../errors.ts';
import { Censor, LogStore } from './log-store.ts';

let dir: string;
before(async () => {
  dir = await tempDir('log-store');
});
after(() => removeTempDir(dir));

async function collect(it: AsyncIterable<Buffer>): Promise<string> {
  let s = '';
  for await (const b of it) s += b.toString('utf8');
  return s;
}

const record = (id: string) => ({
  id,
  ref: `reg/ws:${id}`,
  baseRef: 'reg/base:x',
  phase: 'running' as const,
  startedAt: Date.now(),
  reason: 'first build',
});

test('replay from the start, then live, for several followers; ends when the build ends', async () => {
  const store = await LogStore.open({ dir: `${dir}/a` });
  const log = await store.create(record('b1'), ['hunter22']);
  log.line('step 1');
  log.line('password is hunter22');
  await new Promise((r) => setTimeout(r, 10));
  const early = collect(store.follow('b1'));
  const second = collect(store.follow('b1'));
  await new Promise((r) => setTimeout(r, 10));
  log.line('step 2');
  const late = collect(store.follow('b1'));
  await log.finish({ phase: 'succeeded', message: 'done' });
  const want = 'step 1\npassword is ***\nstep 2\n';
  assert.equal(await early, want);
  assert.equal(await second, want);
  assert.equal(await late, want);
  assert.equal(await collect(store.follow('b1')), want, 'a finished build replays');
  assert.equal(
    await collect(store.follow('b1', { censor: new Censor(['step']) })),
    '*** 1\npassword is ***\n*** 2\n',
  );
  await assert.rejects(collect(store.follow('nope')), (e) => errorKind(e) === 'NotFound');
});

test('a censored log keeps characters whole where its reads split them', async () => {
  const store = await LogStore.open({ dir: `${dir}/split` });
  const log = await store.create(record('b-split'), []);
  // With the newline, 'é' (2 bytes) starts on the last byte of the first 64 KiB read.
  const line = `${'x'.repeat(64 * 1024 - 1)}é secret`;
  log.line(line);
  await log.finish({ phase: 'succeeded', message: '' });
  assert.equal(
    await collect(store.follow('b-split', { censor: new Censor(['secret']) })),
    `${line.replace('secret', '***')}\n`,
  );
});

test('finished builds survive a restart; unfinished ones come back failed; logs are bounded', async () => {
  const path = `${dir}/b`;
  const store = await LogStore.open({ dir: path, maxBytesPerBuild: 64, keepBuilds: 2 });
  const done = await store.create(record('d1'));
  for (let i = 0; i < 20; i++) done.line(`line ${i} of output`);
  await done.finish({ phase: 'failed', message: 'RUN failed' });
  const text = await collect(store.follow('d1'));
  assert.ok(text.length < 140 && text.includes('log truncated'), text);
  const running = await store.create(record('r1'));
  running.line('half');

  const reopened = await LogStore.open({ dir: path, maxBytesPerBuild: 64, keepBuilds: 2 });
  assert.equal(reopened.get('d1')?.phase, 'failed');
  assert.equal(reopened.get('r1')?.phase, 'failed');
  assert.match(reopened.get('r1')?.message ?? '', /stopped/);
  assert.equal(await collect(reopened.follow('d1')), text);
  assert.equal(reopened.findByRef('reg/ws:d1')?.id, 'd1');
  for (const id of ['x1', 'x2']) await (await reopened.create(record(id))).finish({ phase: 'succeeded' });
  assert.equal(reopened.get('d1'), undefined, 'the oldest finished build is pruned');
});
