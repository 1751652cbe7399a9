import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readlinkSync } from 'node:fs';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { removeTempDir, tempDir } from '../../test/helpers/tmp.ts';
import { dataLoss, errorKind } from '../errors.ts';
import type { Descriptor } from '../oci/descriptor.ts';
import { digestOf } from '../oci/digest.ts';
import { GrowthRange, type PositionalReader } from './follow.ts';
import { Layout } from './layout.ts';
import { ContentStore } from './store.ts';

let dir: string;
let store: ContentStore;

before(async () => {
  dir = await tempDir('content-follow');
  store = await ContentStore.open(dir);
});
after(async () => {
  await store.close();
  await removeTempDir(dir);
});

function blob(size: number): { data: Buffer; desc: Descriptor } {
  const data = randomBytes(size);
  return { data, desc: { mediaType: 'application/octet-stream', digest: digestOf(data), size } };
}

/** Reads `s` to the end, counting bytes as they come. */
function drain(s: Readable): { done: Promise<Buffer>; got: () => number } {
  let n = 0;
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of s) {
      n += (c as Buffer).length;
      chunks.push(c as Buffer);
    }
    return Buffer.concat(chunks);
  })();
  done.catch(() => {});
  return { done, got: () => n };
}

/** How many of this process's descriptors are open on `path`. */
function openOn(path: string): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === path;
    } catch {
      return false; // closed meanwhile
    }
  }).length;
}

const tick = () => new Promise((r) => setTimeout(r, 30));

/** Waits until `got()` reaches `n` (a loaded machine may take a while to deliver), then returns what it is. */
async function reach(got: () => number, n: number): Promise<number> {
  for (let i = 0; i < 500 && got() < n; i++) await tick();
  return got();
}

test('readers of a growing ingest get every byte, from any offset; the last one only after the commit', async () => {
  const { data, desc } = blob(700_000);
  const w = await store.writer('grow', { expected: desc.digest, total: desc.size });
  const whole = drain(await store.follow('grow', desc));
  await w.write(data.subarray(0, 300_000));
  const tail = drain(await store.follow('grow', desc, { range: { offset: 250_000 } }));
  const middle = drain(await store.follow('grow', desc, { range: { offset: 100_000, length: 1000 } }));
  assert.equal(await reach(whole.got, 300_000), 300_000, 'bytes written are readable before the commit');
  await w.write(data.subarray(300_000));
  assert.equal(await reach(whole.got, desc.size - 1), desc.size - 1, 'all but the last byte arrive');
  await tick();
  assert.equal(whole.got(), desc.size - 1, 'the last byte waits for verification');
  assert.deepEqual(await middle.done, data.subarray(100_000, 101_000));
  await w.commit();
  assert.deepEqual(await whole.done, data);
  assert.deepEqual(await tail.done, data.subarray(250_000));
  // Once committed, follow reads the blob.
  assert.deepEqual(Buffer.concat(await (await store.follow('grow', desc)).toArray()), data);
});

test('readers of a failed ingest fail with the writer’s reason; a restart fails them too', async () => {
  const { data, desc } = blob(100_000);
  const w = await store.writer('fails', { expected: desc.digest, total: desc.size });
  const r = drain(await store.follow('fails', desc));
  await w.write(data.subarray(0, 50_000));
  await tick();
  await w.close(dataLoss('upstream sent wrong bytes'));
  await assert.rejects(r.done, (e) => errorKind(e) === 'DataLoss' && /wrong bytes/.test(String(e)));

  const w2 = await store.writer('restarts', { expected: desc.digest, total: desc.size });
  const r2 = drain(await store.follow('restarts', desc));
  await w2.write(data.subarray(0, 10_000));
  await tick();
  await w2.truncate(0);
  await assert.rejects(r2.done, (e) => errorKind(e) === 'Aborted');
  await w2.close();
});

test('a reader that goes away stops waiting; no live ingest means the committed blob or NotFound', async () => {
  const { desc } = blob(1000);
  const w = await store.writer('idle', { expected: desc.digest, total: desc.size });
  const ac = new AbortController();
  const r = drain(await store.follow('idle', desc, { signal: ac.signal }));
  ac.abort();
  await assert.rejects(r.done, (e) => errorKind(e) === 'Aborted');
  await w.close();
  await assert.rejects(store.follow('idle', desc), (e) => errorKind(e) === 'NotFound');
  await assert.rejects(store.follow('idle', desc, { range: { offset: 1001 } }), (e) =>
    ['NotFound', 'OutOfRange'].includes(errorKind(e) ?? ''),
  );
});

test('read at positions (the facade’s way): waits for bytes, the last one only after the commit; a restart fails it', async () => {
  const { data, desc } = blob(300_000);
  const w = await store.writer('positional', { expected: desc.digest, total: desc.size });
  const range = await store.follow('positional', desc, { range: { offset: 1000 } });
  assert.ok(range instanceof GrowthRange);
  let opened = false;
  const opening = range.open().then((r) => {
    opened = true;
    return r;
  });
  await tick();
  assert.equal(opened, false, 'open waits for the first byte of the range');
  await w.write(data.subarray(0, 200_000));
  const reader = await opening;
  const buf = Buffer.alloc(desc.size);
  const first = await reader.read(buf, 0, 250_000, 1000);
  assert.equal(first.bytesRead, 199_000, 'a read returns what is there, not more');
  assert.deepEqual(buf.subarray(0, 199_000), data.subarray(1000, 200_000));
  await w.write(data.subarray(200_000));
  const pending = reader.read(buf, 0, 100_000, 200_000);
  const got = await pending;
  assert.equal(got.bytesRead, 99_999, 'all but the last byte before the commit');
  let last = false;
  const lastRead = reader.read(buf, 0, 1, desc.size - 1).then((r) => {
    last = true;
    return r;
  });
  await tick();
  assert.equal(last, false, 'the last byte waits for verification');
  await w.commit();
  assert.equal((await lastRead).bytesRead, 1);
  assert.equal(buf[0], data[desc.size - 1]);
  range.destroy();

  const other = blob(50_000);
  const w2 = await store.writer('positional-restart', { expected: other.desc.digest, total: 50_000 });
  const r2 = await store.follow('positional-restart', other.desc);
  assert.ok(r2 instanceof GrowthRange);
  await w2.write(other.data.subarray(0, 10_000));
  const reader2 = await r2.open();
  await w2.truncate(0);
  await assert.rejects(reader2.read(buf, 0, 10, 0), (e) => errorKind(e) === 'Aborted');
  await w2.close();
  r2.destroy();
});

test('destroying a positional reader ends its wait for bytes', async () => {
  const { desc } = blob(1000);
  const w = await store.writer('positional-gone', { expected: desc.digest, total: desc.size });
  const range = await store.follow('positional-gone', desc);
  assert.ok(range instanceof GrowthRange);
  const opening = range.open();
  range.destroy();
  await assert.rejects(opening, (e) => errorKind(e) === 'Aborted');
  // Destroyed while its file is being opened: the handle is closed, not left behind.
  await w.write(randomBytes(100));
  const data = new Layout(dir).ingestData('positional-gone');
  const fds = openOn(data);
  assert.equal(fds, 1, 'the writer holds the ingest open');
  const opening2 = store.follow('positional-gone', desc).then((r) => {
    const first = (r as GrowthRange).open();
    r.destroy();
    return first;
  });
  await assert.rejects(opening2, (e) => errorKind(e) === 'Aborted');
  await tick();
  assert.equal(openOn(data), fds);
  await w.close();
});

test('with a fallback, the rest of a failed ingest comes from it, at the first byte not yet read', async () => {
  const { data, desc } = blob(400_000);
  const w = await store.writer('fallback', { expected: desc.digest, total: desc.size });
  const asked: number[] = [];
  const fallback = (at: number) => {
    asked.push(at);
    return Promise.resolve(Readable.from([data.subarray(at, at + 100_000), data.subarray(at + 100_000)]));
  };
  const whole = await store.follow('fallback', desc, { fallback });
  const tail = await store.follow('fallback', desc, { range: { offset: 150_000 }, fallback });
  assert.ok(whole instanceof GrowthRange && tail instanceof GrowthRange, 'still read at positions');
  await w.write(data.subarray(0, 200_000));
  const reader = await whole.open();
  const head = Buffer.alloc(120_000);
  assert.equal((await reader.read(head, 0, head.length, 0)).bytesRead, head.length);
  const disk = Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' });
  await w.close(disk);
  // The writer lets go of its ingest: the bytes already handed out are hashed from the reader's open file.
  await store.abort('fallback');
  const rest = Buffer.alloc(desc.size - head.length);
  for (let pos = 0; pos < rest.length; ) {
    pos += (await reader.read(rest, pos, Math.min(50_000, rest.length - pos), head.length + pos)).bytesRead;
  }
  assert.deepEqual(Buffer.concat([head, rest]), data);
  assert.deepEqual(asked, [head.length]);
  assert.deepEqual(await drain(tail).done, data.subarray(150_000), 'a Readable reader too');
  assert.deepEqual(asked, [head.length, 150_000]);
  whole.destroy();
});

test('a whole blob stitched from a failed ingest and a fallback fails before its last bytes unless it is the blob', async () => {
  const { data, desc } = blob(300_000);
  const wrong = (end: number) => (at: number) => Promise.resolve(Readable.from([Buffer.alloc(end - at, 7)]));
  const w = await store.writer('fallback-wrong', { expected: desc.digest, total: desc.size });
  const whole = await store.follow('fallback-wrong', desc, { fallback: wrong(desc.size) });
  const part = await store.follow('fallback-wrong', desc, {
    range: { offset: 0, length: 250_000 },
    fallback: wrong(250_000),
  });
  await w.write(data.subarray(0, 100_000));
  const reader = await (whole as GrowthRange).open();
  const buf = Buffer.alloc(desc.size);
  assert.equal((await reader.read(buf, 0, 100_000, 0)).bytesRead, 100_000);
  await w.close(Object.assign(new Error('EROFS: read-only file system'), { code: 'EROFS' }));
  await assert.rejects(
    reader.read(buf, 100_000, desc.size - 100_000, 100_000),
    (e) => errorKind(e) === 'DataLoss',
  );
  // A part is not checked (nothing to check it against): its bytes are the source's, as a Range read's are.
  const got = await drain(part).done;
  assert.equal(got.length, 250_000);
  whole.destroy();
});

test('a fallback that declines, or none, leaves the reader with the writer’s reason', async () => {
  const { data, desc } = blob(100_000);
  const w = await store.writer('fallback-declines', { expected: desc.digest, total: desc.size });
  const declined = drain(await store.follow('fallback-declines', desc, { fallback: () => undefined }));
  await w.write(data.subarray(0, 50_000));
  await tick();
  await w.close(dataLoss('upstream sent wrong bytes'));
  await assert.rejects(declined.done, (e) => errorKind(e) === 'DataLoss' && /wrong bytes/.test(String(e)));
});

test('a positional reader whose ingest fails before its first byte goes on from the fallback too', async () => {
  const { data, desc } = blob(200_000);
  const asked: number[] = [];
  const fallback = async (at: number) => {
    asked.push(at);
    return Readable.from([data.subarray(at)]);
  };
  const w = await store.writer('fallback-first', { expected: desc.digest, total: desc.size });
  const whole = await store.follow('fallback-first', desc, { fallback });
  const tail = await store.follow('fallback-first', desc, { range: { offset: 50_000 }, fallback });
  assert.ok(whole instanceof GrowthRange && tail instanceof GrowthRange);
  // The server opens before its first read: that wait is where the fill's disk failure is met.
  const opening = Promise.all([whole.open(), tail.open()]);
  await tick();
  await w.close(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));
  const [r, t] = await opening;
  const read = async (reader: PositionalReader, from: number) => {
    const buf = Buffer.alloc(desc.size - from);
    for (let pos = 0; pos < buf.length; ) {
      pos += (await reader.read(buf, pos, buf.length - pos, from + pos)).bytesRead;
    }
    return buf;
  };
  assert.deepEqual(await read(r, 0), data);
  assert.deepEqual(await read(t, 50_000), data.subarray(50_000));
  assert.deepEqual(
    asked.sort((a, b) => a - b),
    [0, 50_000],
  );
  whole.destroy();
  tail.destroy();
});
