import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectionLimits, openFileLimit } from './connection-guard.ts';

test('the open-file limit is read from the process limits', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'strata-limits-'));
  try {
    const file = join(dir, 'limits');
    await writeFile(
      file,
      'Limit                     Soft Limit           Hard Limit           Units     \n' +
        'Max processes             63494                63494                processes \n' +
        'Max open files            20000                524288               files     \n',
    );
    assert.equal(openFileLimit(file), 20000);
    await writeFile(file, 'Max open files            unlimited            unlimited            files\n');
    assert.equal(openFileLimit(file), Number.POSITIVE_INFINITY);
    assert.equal(openFileLimit(join(dir, 'missing')), undefined);
    // This process's own limit is there on Linux.
    assert.ok((openFileLimit() ?? 0) > 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('connection limits stay below the open-file limit unless given', () => {
  assert.deepEqual(connectionLimits({}, 20000), { max: 9872, perClient: 1234, headerTimeoutMs: 10_000 });
  assert.deepEqual(connectionLimits({}, 1024), { max: 384, perClient: 48, headerTimeoutMs: 10_000 });
  assert.equal(connectionLimits({}, 300).max, 32);
  assert.equal(connectionLimits({}, Number.POSITIVE_INFINITY).max, 16_384);
  assert.deepEqual(connectionLimits({ max: 100, headerTimeoutMs: 2000 }, 20000), {
    max: 100,
    perClient: 12,
    headerTimeoutMs: 2000,
  });
  assert.equal(connectionLimits({ perClient: 5 }, 20000).perClient, 5);
});
