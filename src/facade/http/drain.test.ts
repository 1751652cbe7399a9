import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Drain } from './drain.ts';

test('a deadline longer than a timer can hold still waits for the request in flight', async () => {
  const drain = new Drain();
  const leave = drain.enter();
  let cut: number | undefined;
  // 30 days, as an operator meaning "never cut" might set it (a timer holds under 25 days).
  const drained = drain.drain(30 * 24 * 3600 * 1000).then((n) => {
    cut = n;
  });
  await sleep(50);
  assert.equal(cut, undefined, 'still waiting for the request');
  leave();
  await drained;
  assert.equal(cut, 0);
});
