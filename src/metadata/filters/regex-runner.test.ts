import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { RegexRunner } from './regex-runner.ts';

describe('RegexRunner', () => {
  const runner = new RegexRunner();
  after(() => runner.close());

  it('answers per text, and a pattern Go refuses matches nothing', async () => {
    const ok = await runner.test('^a+b$', ['aab', 'ab', 'b', '']);
    assert.deepEqual([...ok.matches], [1, 1, 0, 0]);
    assert.equal(ok.invalid, false);
    for (const bad of ['a{1001}', '(?=a)', '(']) {
      const r = await runner.test(bad, ['a', 'aa']);
      assert.deepEqual([...r.matches], [0, 0], bad);
      assert.equal(r.invalid, true, bad);
    }
    assert.deepEqual([...(await runner.test('x', [])).matches], []);
  });

  it('serves a cheap request between the chunks of a costly one', async () => {
    const label = `${'n'.repeat(998)}x`.repeat(4);
    const order: string[] = [];
    const costly = runner.test('(?:.*n){1000}x', Array(4).fill(label)).then((r) => {
      order.push('costly');
      return r;
    });
    const cheap = runner.test('^by', ['bystander']).then((r) => {
      order.push('cheap');
      return r;
    });
    const [c, b] = await Promise.all([costly, cheap]);
    assert.deepEqual([...c.matches], Array(4).fill(1));
    assert.deepEqual([...b.matches], [1]);
    assert.deepEqual(order, ['cheap', 'costly']);
  });

  it('starts a new worker after close', async () => {
    await runner.close();
    assert.deepEqual([...(await runner.test('b', ['abc'])).matches], [1]);
  });
});
