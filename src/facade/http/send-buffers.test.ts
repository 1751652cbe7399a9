import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SEND_BUFFER_MAX, SEND_BUFFER_MIN, SendBuffers } from './send-buffers.ts';

test('downloads share a memory budget: full-size buffers while few run, smaller ones as more do, never below the floor', () => {
  const b = new SendBuffers(8 * 1024 * 1024);
  const first = b.enter();
  assert.equal(first.chunk, SEND_BUFFER_MAX);
  const more = Array.from({ length: 15 }, () => b.enter());
  // 16 downloads, two buffers each, in 8 MiB: 256 KiB.
  assert.equal(more.at(-1)!.chunk, 256 * 1024);
  const crowd = Array.from({ length: 200 }, () => b.enter());
  assert.equal(crowd.at(-1)!.chunk, SEND_BUFFER_MIN);
  for (const d of [first, ...more, ...crowd]) d.leave();
  assert.equal(b.downloads, 0);
  // Leaving twice counts once.
  const again = b.enter();
  again.leave();
  again.leave();
  assert.equal(b.downloads, 0);
  assert.equal(b.enter().chunk, SEND_BUFFER_MAX);
});
