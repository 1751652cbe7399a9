import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Limiter } from './limiter.ts';

test('at most size tasks run at once, in arrival order; a waiting task leaves when its signal fires', async () => {
  const limit = new Limiter(2);
  let running = 0;
  let most = 0;
  const order: number[] = [];
  const gates: (() => void)[] = [];
  const task = (n: number) => async () => {
    running++;
    most = Math.max(most, running);
    order.push(n);
    await new Promise<void>((r) => gates.push(r));
    running--;
    return n;
  };
  const a = limit.run(task(1));
  const b = limit.run(task(2));
  const gone = new AbortController();
  const c = limit.run(task(3), gone.signal);
  const d = limit.run(task(4));
  gone.abort(new Error('not wanted'));
  await assert.rejects(c, /not wanted/);
  await new Promise((r) => setImmediate(r));
  gates.shift()!();
  await new Promise((r) => setImmediate(r));
  while (gates.length > 0) {
    gates.shift()!();
    await new Promise((r) => setImmediate(r));
  }
  assert.deepEqual(await Promise.all([a, b, d]), [1, 2, 4]);
  assert.deepEqual(order, [1, 2, 4]);
  assert.equal(most, 2);
  await assert.rejects(limit.run(task(5), AbortSignal.abort(new Error('already'))), /already/);
});
