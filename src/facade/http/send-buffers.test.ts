import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { dataLoss, errorKind } from '../../errors.ts';
import { pumpFile, SEND_BUFFER_MAX, SEND_BUFFER_MIN, SendBuffers } from './send-buffers.ts';

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

test("a download that ended cleanly leaves its buffers to the next download of that size; a failed one's are not reused", () => {
  const b = new SendBuffers(64 * 1024 * 1024, 4 * SEND_BUFFER_MAX);
  const first = b.enter();
  const bufs = [first.take(SEND_BUFFER_MAX), first.take(SEND_BUFFER_MAX)];
  first.leave(true);
  assert.equal(b.spareSize, 2 * SEND_BUFFER_MAX);
  const second = b.enter();
  const again = [second.take(SEND_BUFFER_MAX), second.take(SEND_BUFFER_MAX)];
  assert.deepEqual(new Set(again), new Set(bufs));
  assert.equal(b.spareSize, 0);
  second.leave(false);
  assert.equal(b.spareSize, 0);
  const third = b.enter();
  assert.ok(!bufs.includes(third.take(SEND_BUFFER_MAX)));
  third.leave(true);
  // A download smaller than a chunk gets a buffer of its size, which is not kept.
  const small = b.enter();
  assert.equal(small.take(1000).length, 1000);
  small.leave(true);
  assert.equal(b.spareSize, SEND_BUFFER_MAX);
  b.dropSpare();
  assert.equal(b.spareSize, 0);
});

test('spare buffers are kept up to their limit', () => {
  const b = new SendBuffers(64 * 1024 * 1024, 3 * SEND_BUFFER_MAX);
  const leases = [b.enter(), b.enter()];
  for (const l of leases) {
    l.take(SEND_BUFFER_MAX);
    l.take(SEND_BUFFER_MAX);
  }
  for (const l of leases) l.leave(true);
  assert.equal(b.spareSize, 3 * SEND_BUFFER_MAX);
});

test('pumpFile sends the range in order through the lease buffers; a short file is DataLoss, a failed write stops it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'send-buffers-'));
  try {
    const data = randomBytes(3 * SEND_BUFFER_MIN + 123);
    const file = join(dir, 'blob');
    await writeFile(file, data);
    // 16 MiB budget over 100 downloads: the smallest buffers, so the range takes several rounds.
    const b = new SendBuffers(16 * 1024 * 1024);
    const crowd = Array.from({ length: 99 }, () => b.enter());
    const lease = b.enter();
    assert.equal(lease.chunk, SEND_BUFFER_MIN);
    const fh = await open(file, 'r');
    try {
      const got: Buffer[] = [];
      await pumpFile(fh, 'blob', { start: 5, end: data.length }, lease, async (c) => {
        got.push(Buffer.from(c));
      });
      assert.deepEqual(Buffer.concat(got), data.subarray(5));
      await assert.rejects(
        pumpFile(fh, 'blob', { start: 0, end: data.length + 1 }, lease, async () => {}),
        (err: unknown) => errorKind(err) === 'DataLoss',
      );
      // A failed write stops the loop with its error, at most one read later.
      let writes = 0;
      await assert.rejects(
        pumpFile(fh, 'blob', { start: 0, end: data.length }, lease, async () => {
          writes++;
          if (writes === 2) throw new Error('client went away');
        }),
        /client went away/,
      );
      assert.ok(writes <= 3, `${writes} writes`);
    } finally {
      await fh.close();
    }
    for (const l of [...crowd, lease]) l.leave();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('pumpFile lets the write in flight finish before a failed read ends it', async () => {
  const lease = new SendBuffers().enter();
  const data = randomBytes(3000);
  let reads = 0;
  // A reader of 1000 bytes at a time whose second read fails (a fill that failed its check).
  const reader = {
    read: async (buf: Buffer, offset: number, length: number, position: number) => {
      if (++reads === 2) throw dataLoss('wrong bytes');
      const n = Math.min(1000, length);
      data.copy(buf, offset, position, position + n);
      return { bytesRead: n };
    },
  };
  let written = 0;
  let writeDone = false;
  await assert.rejects(
    pumpFile(reader, 'growing', { start: 0, end: data.length }, lease, async (chunk) => {
      await new Promise((r) => setTimeout(r, 20));
      written += chunk.length;
      writeDone = true;
    }),
    (err: unknown) => errorKind(err) === 'DataLoss',
  );
  assert.equal(writeDone, true, 'the first chunk went out before the failure was passed on');
  assert.equal(written, 1000);
  lease.leave();
});
