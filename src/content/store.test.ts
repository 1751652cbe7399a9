import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { chmod, mkdir, mkdtemp, open, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { waitFor } from '../../test/helpers/process.ts';
import { errorKind } from '../errors.ts';
import { type Digest, digestOf } from '../oci/digest.ts';
import { exists } from './fs-util.ts';
import { Layout } from './layout.ts';
import { acquireRefLock } from './ref-lock.ts';
import { ContentStore } from './store.ts';

const roots: string[] = [];
after(async () => {
  for (const r of roots) await rm(r, { recursive: true, force: true });
});

async function newStore(): Promise<ContentStore> {
  const root = await mkdtemp(join(tmpdir(), 'strata-content-'));
  roots.push(root);
  return ContentStore.open(root);
}

async function readAll(s: Readable): Promise<Buffer> {
  return Buffer.concat(await s.toArray());
}

/** Asserts `p` rejects with a StrataError of `kind`, optionally with a message matching `re`. */
async function rejectsKind(p: Promise<unknown>, kind: string, re?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.equal(errorKind(err), kind, `want ${kind}, got ${String(err)}`);
    if (re) assert.match((err as Error).message, re);
    return true;
  });
}

async function put(store: ContentStore, data: Buffer, ref = `ref-${randomBytes(4).toString('hex')}`) {
  const w = await store.writer(ref);
  await w.write(data);
  return w.commit(data.length, digestOf(data));
}

const EMPTY = digestOf('');

test('a durable store (the default) syncs a commit to disk; one opened with durable: false does not', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'strata-content-'));
  roots.push(root);
  // Every FileHandle shares one prototype; count its sync calls.
  const probe = await open(root, 'r');
  const proto = Object.getPrototypeOf(probe) as { sync(): Promise<void> };
  await probe.close();
  const sync = t.mock.method(proto, 'sync');
  const durable = await ContentStore.open(join(root, 'durable'));
  await put(durable, Buffer.from('kept through a crash'));
  const synced = sync.mock.callCount();
  assert.ok(synced >= 2, `the blob and its directory are synced (${synced} syncs)`);
  const cache = await ContentStore.open(join(root, 'cache'), { durable: false });
  const data = Buffer.from('fetched again if lost');
  const d = await put(cache, data);
  assert.equal(sync.mock.callCount(), synced);
  assert.deepEqual(await readAll(await cache.reader(d)), data);
});

describe('write, commit, read', () => {
  test('a committed blob is stored by digest, read-only, and readable whole', async () => {
    const store = await newStore();
    const data = Buffer.from('hello, content store');
    const w = await store.writer('r1', { total: data.length });
    assert.equal(w.offset, 0);
    assert.equal(w.digest(), EMPTY);
    await w.write(data.subarray(0, 5));
    assert.equal(w.offset, 5);
    assert.equal(w.digest(), digestOf(data.subarray(0, 5)));
    await w.write(data.subarray(5));
    const d = await w.commit(data.length, digestOf(data));
    assert.equal(d, digestOf(data));

    const info = await store.info(d);
    assert.equal(info.digest, d);
    assert.equal(info.size, data.length);
    assert.ok(info.createdAt instanceof Date && info.updatedAt instanceof Date);
    assert.deepEqual(info.labels, {});
    assert.equal(await store.has(d), true);
    assert.deepEqual(await readAll(await store.reader(d)), data);

    const st = await stat(join(store.root, 'blobs', 'sha256', d.slice(7)));
    assert.equal(st.mode & 0o777, 0o444);
    await rejectsKind(store.status('r1'), 'NotFound', /^reference r1: not found$/);
    assert.deepEqual(await store.listStatuses(), []);
    await rejectsKind(w.write(Buffer.from('x')), 'FailedPrecondition', /committed/);
    await w.close(); // harmless after commit
  });

  test('an empty blob can be committed', async () => {
    const store = await newStore();
    const w = await store.writer('empty');
    assert.equal(await w.commit(0, EMPTY), EMPTY);
    assert.equal((await store.info(EMPTY)).size, 0);
    assert.equal((await readAll(await store.reader(EMPTY))).length, 0);
  });

  test('writes issued without waiting land in call order', async () => {
    const store = await newStore();
    const parts = Array.from({ length: 20 }, (_, i) => Buffer.alloc(1000 + i, i));
    const w = await store.writer('order');
    await Promise.all(parts.map((p) => w.write(p)));
    const all = Buffer.concat(parts);
    assert.equal(await w.commit(all.length, digestOf(all)), digestOf(all));
    assert.deepEqual(await readAll(await store.reader(digestOf(all))), all);
  });

  test('commit without arguments falls back to what the writer was opened with', async () => {
    const store = await newStore();
    const data = randomBytes(300);
    const w = await store.writer('declared', { expected: digestOf(data), total: 300 });
    await w.write(data.subarray(0, 299));
    await rejectsKind(w.commit(), 'FailedPrecondition', /^unexpected commit size 299, expected 300/);
    await w.write(data.subarray(299));
    assert.equal(await w.commit(), digestOf(data));
  });

  test('sha512 content is verified and stored under its own algorithm', async () => {
    const store = await newStore();
    const data = randomBytes(1000);
    const d512 = digestOf(data, 'sha512');
    const w = await store.writer('five-twelve', { expected: d512 });
    await w.write(data);
    assert.equal(w.digest(), d512);
    assert.equal(await w.commit(data.length, d512), d512);
    assert.equal((await store.info(d512)).size, 1000);

    // A writer opened without an expected digest hashes sha256, yet can commit a sha512 digest.
    const other = randomBytes(10);
    const w2 = await store.writer('late-512');
    await w2.write(other);
    assert.equal(await w2.commit(10, digestOf(other, 'sha512')), digestOf(other, 'sha512'));
    await stat(join(store.root, 'blobs', 'sha512', digestOf(other, 'sha512').slice(7)));
  });
});

describe('reads', () => {
  test('ranges are clipped at the end; an offset past the end is OutOfRange', async () => {
    const store = await newStore();
    const data = randomBytes(1000);
    const d = await put(store, data);
    const read = async (offset: number, length?: number) =>
      readAll(await store.reader(d, length === undefined ? { offset } : { offset, length }));
    assert.deepEqual(await read(2, 3), data.subarray(2, 5));
    assert.deepEqual(await read(990), data.subarray(990));
    assert.deepEqual(await read(990, 100), data.subarray(990));
    assert.equal((await read(1000)).length, 0);
    assert.equal((await read(5, 0)).length, 0);
    await rejectsKind(
      store.reader(d, { offset: 1001 }),
      'OutOfRange',
      /^read past object length 1000 bytes$/,
    );
    await rejectsKind(store.reader(d, { offset: -1 }), 'InvalidArgument');
    await rejectsKind(store.reader(d, { offset: 0, length: -1 }), 'InvalidArgument');
    await rejectsKind(store.reader(d, { offset: 1.5 }), 'InvalidArgument');
  });

  test('a large blob streams in several chunks', async () => {
    const store = await newStore();
    const data = randomBytes(3 * 1024 * 1024 + 7);
    const d = await put(store, data);
    const chunks = await (await store.reader(d)).toArray();
    assert.ok(chunks.length > 1);
    assert.deepEqual(Buffer.concat(chunks), data);
  });

  test('missing content is NotFound and malformed digests are InvalidArgument', async () => {
    const store = await newStore();
    const d = digestOf('nothing here');
    await rejectsKind(store.info(d), 'NotFound', new RegExp(`^content digest ${d}: not found$`));
    await rejectsKind(store.reader(d), 'NotFound');
    assert.equal(await store.has(d), false);
    for (const bad of ['sha256:../../../etc/passwd', 'md5:d41d8cd98f00b204e9800998ecf8427e', '', 'sha256:']) {
      await rejectsKind(store.info(bad as Digest), 'InvalidArgument');
      await rejectsKind(store.reader(bad as Digest), 'InvalidArgument');
      await rejectsKind(store.delete(bad as Digest), 'InvalidArgument');
    }
  });

  test('blob(): full reads are verified, ranges are served raw', async () => {
    const store = await newStore();
    const data = randomBytes(5000);
    const d = await put(store, data);
    const desc = { mediaType: 'application/octet-stream', digest: d, size: data.length };
    const blob = store.blob(desc);
    assert.equal(blob.descriptor, desc);
    assert.deepEqual(await readAll(await blob.open()), data);
    assert.deepEqual(
      await readAll(await blob.open({ range: { offset: 10, length: 20 } })),
      data.subarray(10, 30),
    );
    await rejectsKind(store.blob({ ...desc, size: 4999 }).open(), 'DataLoss', /stored size is 5000/);
    const missing = store.blob({ ...desc, digest: digestOf('absent') });
    await rejectsKind(missing.open(), 'NotFound');
    assert.throws(() => store.blob({ ...desc, digest: 'sha256:nope' as Digest }), {
      kind: 'InvalidArgument',
    });

    // Bytes changed on disk behind the store's back are caught by a full read.
    const path = join(store.root, 'blobs', 'sha256', d.slice(7));
    await chmod(path, 0o644);
    const corrupt = Buffer.from(data);
    corrupt[4000] = (corrupt[4000]! + 1) & 0xff;
    await writeFile(path, corrupt);
    await rejectsKind(readAll(await blob.open()), 'DataLoss', /digest mismatch/);
  });

  test('an aborted read releases the file', async () => {
    const store = await newStore();
    const d = await put(store, randomBytes(2 * 1024 * 1024));
    const ac = new AbortController();
    const s = await store
      .blob({ mediaType: 'application/octet-stream', digest: d, size: 2 * 1024 * 1024 })
      .open({
        signal: ac.signal,
      });
    ac.abort();
    await assert.rejects(readAll(s), { name: 'AbortError' });
  });
});

describe('walk and delete', () => {
  test('walk visits every committed blob in digest order and skips junk', async () => {
    const store = await newStore();
    const blobs = [randomBytes(10), randomBytes(20), randomBytes(30)];
    for (const b of blobs) await put(store, b);
    const d512 = digestOf(blobs[0]!, 'sha512');
    const w = await store.writer('w512', { expected: d512 });
    await w.write(blobs[0]!);
    await w.commit(10, d512);
    await writeFile(join(store.root, 'blobs', 'sha256', 'not-a-digest'), 'junk');
    // An open ingest is not content.
    const pending = await store.writer('pending');
    await pending.write(Buffer.from('partial'));

    const seen: Array<[string, number]> = [];
    await store.walk(async (info) => {
      seen.push([info.digest, info.size]);
    });
    const want = [
      ...blobs.map((b) => [digestOf(b), b.length] as [string, number]),
      [d512, 10] as [string, number],
    ];
    want.sort((a, b) => (a[0] < b[0] ? -1 : 1));
    assert.deepEqual(seen, want);
    await pending.close();
  });

  test('delete removes the blob; readers already open keep their bytes', async () => {
    const store = await newStore();
    const data = randomBytes(100_000);
    const d = await put(store, data);
    const open = await store.reader(d);
    await store.delete(d);
    assert.equal(await store.has(d), false);
    await rejectsKind(store.info(d), 'NotFound');
    await rejectsKind(store.delete(d), 'NotFound', new RegExp(`^content digest ${d}: not found$`));
    assert.deepEqual(await readAll(open), data);
    const seen: string[] = [];
    await store.walk((i) => {
      seen.push(i.digest);
    });
    assert.deepEqual(seen, []);
    // Deleted content can be written again.
    assert.equal(await put(store, data), d);
  });
});

describe('ingests: status, locks, resume, abort', () => {
  test('status and listStatuses report offset, total, expected and times', async () => {
    const store = await newStore();
    const data = randomBytes(256);
    const before = Date.now();
    const w = await store.writer('layer-a', { total: 256, expected: digestOf(data) });
    await w.write(data.subarray(0, 64));
    await w.write(data.subarray(64, 192));
    const w2 = await store.writer('layer-b');
    await w2.close();

    const s = await store.status('layer-a');
    assert.equal(s.ref, 'layer-a');
    assert.equal(s.offset, 192);
    assert.equal(s.total, 256);
    assert.equal(s.expected, digestOf(data));
    assert.ok(s.startedAt.getTime() >= before - 1000);
    assert.ok(s.updatedAt.getTime() >= s.startedAt.getTime() - 1000);
    assert.deepEqual({ ...w.status(), updatedAt: 0 }, { ...s, updatedAt: 0 });

    const sb = await store.status('layer-b');
    assert.equal(sb.offset, 0);
    assert.equal(sb.total, 0);
    assert.equal(sb.expected, undefined);

    const all = await store.listStatuses();
    assert.deepEqual(all.map((x) => x.ref).sort(), ['layer-a', 'layer-b']);
    await rejectsKind(store.status('nope'), 'NotFound', /^reference nope: not found$/);
    await w.close();
  });

  test('a second writer for a locked ref is Unavailable until the first closes', async () => {
    const store = await newStore();
    const w = await store.writer('busy');
    await rejectsKind(
      store.writer('busy'),
      'Unavailable',
      /^ref busy locked for \S+ \(since \S+\): unavailable$/,
    );
    // The lock is per store root, not per store object.
    const again = await ContentStore.open(store.root);
    await rejectsKind(again.writer('busy'), 'Unavailable');
    await rejectsKind(store.abort('busy'), 'Unavailable');
    await w.close();
    await w.close();
    const w2 = await store.writer('busy');
    await w2.close();
  });

  test('a new writer resumes from the persisted offset and commits the right digest', async () => {
    const store = await newStore();
    const data = randomBytes(50_000);
    const w = await store.writer('resume', { total: data.length, expected: digestOf(data) });
    await w.write(data.subarray(0, 20_000));
    const started = w.status().startedAt;
    await w.close();

    const w2 = await store.writer('resume', { total: data.length, expected: digestOf(data) });
    assert.equal(w2.offset, 20_000);
    assert.equal(w2.digest(), digestOf(data.subarray(0, 20_000)));
    assert.equal(w2.status().startedAt.getTime(), started.getTime());
    await w2.write(data.subarray(20_000));
    assert.equal(await w2.commit(data.length, digestOf(data)), digestOf(data));
    assert.deepEqual(await readAll(await store.reader(digestOf(data))), data);
  });

  test('resuming with a conflicting total or digest restarts the ingest', async () => {
    const store = await newStore();
    const w = await store.writer('conflict', { total: 100 });
    await w.write(randomBytes(50));
    await w.close();
    const w2 = await store.writer('conflict', { total: 200 });
    assert.equal(w2.offset, 0);
    assert.equal((await store.status('conflict')).total, 200);
    await w2.write(randomBytes(10));
    await w2.close();
    const w3 = await store.writer('conflict', { expected: digestOf('a') });
    await w3.write(Buffer.from('a'));
    await w3.close();
    const w4 = await store.writer('conflict', { expected: digestOf('b') });
    assert.equal(w4.offset, 0);
    await w4.write(Buffer.from('b'));
    assert.equal(await w4.commit(1, digestOf('b')), digestOf('b'));
  });

  test('truncate restarts the ingest; only sizes within it are accepted', async () => {
    const store = await newStore();
    const w = await store.writer('trunc');
    await w.write(Buffer.from('abcdef'));
    await w.truncate(3);
    assert.equal(w.offset, 3);
    assert.equal(w.digest(), digestOf('abc'));
    await w.truncate(0);
    assert.equal(w.digest(), EMPTY);
    await rejectsKind(w.truncate(1), 'InvalidArgument');
    await rejectsKind(w.truncate(-1), 'InvalidArgument');
    await w.write(Buffer.from('xyz'));
    assert.equal(await w.commit(3, digestOf('xyz')), digestOf('xyz'));
  });

  test('abort removes an interrupted ingest; unknown refs are NotFound', async () => {
    const store = await newStore();
    const w = await store.writer('gone');
    await w.write(randomBytes(10));
    await w.close();
    await store.abort('gone');
    await rejectsKind(store.status('gone'), 'NotFound');
    await rejectsKind(store.abort('gone'), 'NotFound', /^reference gone: not found$/);
    const w2 = await store.writer('gone');
    assert.equal(w2.offset, 0);
    await w2.close();
    assert.deepEqual(await readdir(join(store.root, 'locks')), []);
  });

  test('refs: empty, oversized and malformed are rejected; path-like refs are just names', async () => {
    const store = await newStore();
    await rejectsKind(store.writer(''), 'InvalidArgument', /ref must not be empty/);
    await rejectsKind(store.writer('x'.repeat(4097)), 'InvalidArgument', /4097 bytes/);
    await rejectsKind(store.writer('bad\ud800'), 'InvalidArgument');
    await rejectsKind(store.status(''), 'InvalidArgument');
    await rejectsKind(store.abort(''), 'InvalidArgument');
    const w = await store.writer('x'.repeat(4096));
    await w.close();
    const evil = '../../../../tmp/escape/..';
    const w2 = await store.writer(evil);
    await w2.write(Buffer.from('contained'));
    await w2.close();
    assert.equal((await store.status(evil)).offset, 9);
    assert.equal((await readdir(join(store.root, 'ingest'))).length, 2);
    await rejectsKind(store.writer('r', { total: -1 }), 'InvalidArgument');
    await rejectsKind(store.writer('r', { expected: 'sha256:zz' as Digest }), 'InvalidArgument');
    // Failed opens leave no lock behind.
    await (await store.writer('r')).close();
  });
});

describe('commit failures and existing content', () => {
  test('a wrong digest or size fails and nothing appears under either digest', async () => {
    const store = await newStore();
    const data = randomBytes(1000);
    const wrong = digestOf('something else');
    const w = await store.writer('bad-commit');
    await w.write(data);
    await rejectsKind(
      w.commit(1000, wrong),
      'FailedPrecondition',
      new RegExp(`^unexpected commit digest ${digestOf(data)}, expected ${wrong}: failed precondition$`),
    );
    await rejectsKind(
      w.commit(999, digestOf(data)),
      'FailedPrecondition',
      /^unexpected commit size 1000, expected 999: failed precondition$/,
    );
    await rejectsKind(w.commit(1000, 'sha256:bad' as Digest), 'InvalidArgument');
    assert.equal(await store.has(wrong), false);
    assert.equal(await store.has(digestOf(data)), false);
    const seen: string[] = [];
    await store.walk((i) => {
      seen.push(i.digest);
    });
    assert.deepEqual(seen, []);
    // The writer is still usable and the ingest intact.
    assert.equal((await store.status('bad-commit')).offset, 1000);
    assert.equal(await w.commit(1000, digestOf(data)), digestOf(data));
  });

  test('committing content that exists is AlreadyExists and cleans the ingest up', async () => {
    const store = await newStore();
    const data = randomBytes(500);
    const d = await put(store, data, 'first');
    await rejectsKind(
      store.writer('second', { expected: d }),
      'AlreadyExists',
      new RegExp(`^content ${d}: already exists$`),
    );
    const w = await store.writer('third');
    await w.write(data);
    await rejectsKind(w.commit(500, d), 'AlreadyExists');
    await rejectsKind(store.status('third'), 'NotFound');
    await rejectsKind(w.write(data), 'FailedPrecondition');
    // The lock went with it.
    await (await store.writer('third')).close();
    // Without an expected digest the computed one decides.
    const w2 = await store.writer('fourth');
    await w2.write(data);
    await rejectsKind(w2.commit(), 'AlreadyExists');
    assert.deepEqual(await readAll(await store.reader(d)), data);
  });

  test('the same content ingested under two refs at once: no corruption, no leftovers', async () => {
    const store = await newStore();
    for (let round = 0; round < 5; round++) {
      const data = randomBytes(256 * 1024 + round);
      const d = digestOf(data);
      const ingest = async (ref: string) => {
        const w = await store.writer(ref);
        for (let i = 0; i < data.length; i += 16 * 1024) await w.write(data.subarray(i, i + 16 * 1024));
        return w.commit(data.length, d);
      };
      const results = await Promise.allSettled([ingest(`a-${round}`), ingest(`b-${round}`)]);
      const ok = results.filter((r) => r.status === 'fulfilled');
      assert.ok(ok.length >= 1);
      for (const r of results) {
        if (r.status === 'rejected') assert.equal(errorKind(r.reason), 'AlreadyExists');
      }
      assert.deepEqual(
        await readAll(await store.blob({ mediaType: 'x/y', digest: d, size: data.length }).open()),
        data,
      );
    }
    assert.deepEqual(await store.listStatuses(), []);
    assert.deepEqual(await readdir(join(store.root, 'tmp')), []);
    assert.deepEqual(await readdir(join(store.root, 'locks')), []);
  });
});

describe('ingestStream', () => {
  const chunked = (data: Buffer, size = 4096) =>
    Readable.from(
      (function* () {
        for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
      })(),
    );

  test('writes and commits a stream; existing content does not read the source', async () => {
    const store = await newStore();
    const data = randomBytes(100_000);
    const expected = { digest: digestOf(data), size: data.length };
    await store.ingestStream('s1', chunked(data), expected);
    assert.deepEqual(await readAll(await store.reader(expected.digest)), data);
    let opened = false;
    await store.ingestStream(
      's2',
      () => {
        opened = true;
        return chunked(data);
      },
      expected,
    );
    assert.equal(opened, false);
    await rejectsKind(store.status('s2'), 'NotFound');
  });

  test('a short stream keeps the ingest, and a resumed call is given the offset', async () => {
    const store = await newStore();
    const data = randomBytes(100_000);
    const expected = { digest: digestOf(data), size: data.length };
    await rejectsKind(
      store.ingestStream('s', chunked(data.subarray(0, 30_000)), expected),
      'FailedPrecondition',
      /unexpected commit size 30000, expected 100000/,
    );
    assert.equal((await store.status('s')).offset, 30_000);
    let given = -1;
    await store.ingestStream(
      's',
      (offset) => {
        given = offset;
        return chunked(data.subarray(offset));
      },
      expected,
    );
    assert.equal(given, 30_000);
    assert.deepEqual(await readAll(await store.reader(expected.digest)), data);
  });

  test('too many bytes or the wrong bytes fail and discard the ingest', async () => {
    const store = await newStore();
    const data = randomBytes(10_000);
    const expected = { digest: digestOf(data), size: data.length };
    await rejectsKind(
      store.ingestStream('long', chunked(Buffer.concat([data, Buffer.from('x')])), expected),
      'FailedPrecondition',
      /more than the expected 10000 bytes/,
    );
    assert.equal((await store.status('long')).offset, 0);
    const wrong = Buffer.from(data);
    wrong[5] = (wrong[5]! + 1) & 0xff;
    await rejectsKind(store.ingestStream('wrong', chunked(wrong), expected), 'FailedPrecondition', /digest/);
    assert.equal((await store.status('wrong')).offset, 0);
    assert.equal(await store.has(expected.digest), false);
    assert.equal(await store.has(digestOf(wrong)), false);
  });

  test('a failing source keeps what was written and releases the lock', async () => {
    const store = await newStore();
    const data = randomBytes(10_000);
    const src = new Readable({
      read() {
        this.push(data.subarray(0, 4000));
        this.destroy(new Error('connection reset'));
      },
    });
    await assert.rejects(
      store.ingestStream('flaky', src, { digest: digestOf(data), size: data.length }),
      /connection reset/,
    );
    assert.equal((await store.status('flaky')).offset, 4000);
    await (await store.writer('flaky')).close();
  });
});

describe('open', () => {
  test('temporary files of dead processes are removed, those of live ones kept', async () => {
    const store = await newStore();
    const { spawnSync } = await import('node:child_process');
    const dead = spawnSync(process.execPath, [
      '-e',
      'process.stdout.write(String(process.pid))',
    ]).stdout.toString();
    const deadName = `${dead}-0123456789abcdef-blob`;
    const liveName = `${process.pid}-0123456789abcdef-blob`;
    const foreign = 'not-ours';
    for (const n of [deadName, liveName, foreign]) await writeFile(join(store.root, 'tmp', n), 'x');
    await ContentStore.open(store.root);
    assert.deepEqual((await readdir(join(store.root, 'tmp'))).sort(), [liveName, foreign].sort());
  });
});

test('a commit whose link fails commits nothing; the ingest is kept, whole and writable', async () => {
  const root = await mkdtemp(join(tmpdir(), 'strata-content-'));
  roots.push(root);
  const blobs = join(root, 'blobs', 'sha256');
  // The blob directory is not one when the first blob is linked into it.
  let armed = false;
  const store = await ContentStore.open(root, {
    hooks: {
      beforeCommitStep: async (step) => {
        if (step !== 'link' || armed) return;
        armed = true;
        await rm(blobs, { recursive: true, force: true });
        await writeFile(blobs, '');
      },
    },
  });
  try {
    const data = randomBytes(10_000);
    const w = await store.writer('link-fails', { expected: digestOf(data), total: data.length });
    await w.write(data);
    await assert.rejects(w.commit(), /ENOTDIR/);
    await rm(blobs);
    await mkdir(blobs);
    await rejectsKind(store.info(digestOf(data)), 'NotFound');
    assert.deepEqual(await readdir(join(root, 'tmp')), [], 'no tmp link left behind');
    // Opened for writing again: a user other than root cannot open a file made read-only for the blob.
    const mode = (await stat(new Layout(root).ingestData('link-fails'))).mode;
    assert.equal(mode & 0o777, 0o644, 'the ingest is writable again');
    const again = await store.writer('link-fails');
    assert.equal(again.offset, data.length, 'the ingest is kept, whole');
    assert.equal(await again.commit(), digestOf(data));
    assert.deepEqual(await readAll(await store.reader(digestOf(data))), data);
  } finally {
    await store.close();
  }
});

test('followers of an ingest whose commit fails on the disk fail with its error, not a closed writer', async () => {
  const root = await mkdtemp(join(tmpdir(), 'strata-content-'));
  roots.push(root);
  const eio = Object.assign(new Error('EIO: i/o error, link'), { code: 'EIO' });
  const store = await ContentStore.open(root, {
    hooks: {
      beforeCommitStep: (step) => {
        if (step === 'link') throw eio;
      },
    },
  });
  try {
    const data = randomBytes(10_000);
    const desc = { mediaType: 'application/octet-stream', digest: digestOf(data), size: data.length };
    const w = await store.writer('link-fails', { expected: desc.digest, total: desc.size });
    await w.write(data);
    const following = readAll(await store.follow('link-fails', desc));
    following.catch(() => {});
    await assert.rejects(w.commit(), (err) => err === eio);
    // A reader that cannot go elsewhere is told why the blob is not coming (a client, a log).
    await assert.rejects(following, (err) => err === eio);
  } finally {
    await store.close();
  }
});

/** Makes `rmSync` of `path` (node:fs, as the store imports it) fail with EIO until the returned undo. */
function failRemoving(path: string): () => void {
  const { rmSync } = fs;
  fs.rmSync = (p, options) => {
    if (p === path) throw Object.assign(new Error(`EIO: i/o error, rm '${path}'`), { code: 'EIO' });
    rmSync(p, options);
  };
  syncBuiltinESMExports();
  return () => {
    fs.rmSync = rmSync;
    syncBuiltinESMExports();
  };
}

/** A new store in a root of its own, and 10 kB of random data to commit to it. */
async function storeAndBlob() {
  const root = await mkdtemp(join(tmpdir(), 'strata-content-'));
  roots.push(root);
  const store = await ContentStore.open(root);
  const data = randomBytes(10_000);
  const desc = { mediaType: 'application/octet-stream', digest: digestOf(data), size: data.length };
  return { root, layout: new Layout(root), store, data, desc };
}

test('a commit stands when its ingest directory cannot be removed; the leftover goes at the next open', async () => {
  const { root, layout, store, data, desc } = await storeAndBlob();
  const leftover = layout.ingestDir('rm-fails');
  const undo = failRemoving(leftover);
  try {
    const w = await store.writer('rm-fails', { expected: desc.digest, total: desc.size });
    await w.write(data);
    const following = readAll(await store.follow('rm-fails', desc));
    assert.equal(await w.commit(), desc.digest);
    assert.deepEqual(await following, data);
    assert.deepEqual(await readAll(await store.reader(desc.digest)), data);
    assert.ok(await exists(leftover), 'the ingest directory is left');
    // Opening the ref again with the digest expected is told the blob exists, though the leftover stays.
    await rejectsKind(store.writer('rm-fails', { expected: desc.digest }), 'AlreadyExists');
  } finally {
    undo();
  }
  // Other ingests without data: one of the same blob whose ref a live writer holds (it is being opened),
  // and one whose commit a crash cut short before the blob was linked (it restarts from zero).
  const noData = async (ref: string, expected: Digest) => {
    await mkdir(layout.ingestDir(ref), { recursive: true });
    const meta = { ref, startedAt: new Date().toISOString(), total: 0, expected };
    await writeFile(layout.ingestMeta(ref), JSON.stringify(meta));
  };
  await noData('opening', desc.digest);
  await noData('restarted', digestOf(data.subarray(1)));
  const lock = await acquireRefLock(layout.lockPath('opening'), 'opening', layout.tmpDir);
  const live = await store.writer('live');
  await live.write(data.subarray(0, 100));
  try {
    await ContentStore.open(root);
    assert.equal(await exists(leftover), false, 'the leftover is removed at the next open');
    assert.ok(await exists(layout.ingestDir('opening')), 'an ingest being opened stays');
    assert.equal((await store.status('restarted')).offset, 0, 'an ingest to restart stays');
    assert.equal((await store.status('live')).offset, 100, 'a live ingest stays');
  } finally {
    await lock.release();
    await live.close();
    await store.close();
  }
});

test('a commit stands, and its followers get the blob, when its lock cannot be removed', async () => {
  const { layout, store, data, desc } = await storeAndBlob();
  const undo = failRemoving(layout.lockPath('unlock-fails'));
  try {
    const w = await store.writer('unlock-fails', { expected: desc.digest, total: desc.size });
    await w.write(data);
    const following = readAll(await store.follow('unlock-fails', desc));
    following.catch(() => {});
    assert.equal(await w.commit(), desc.digest);
    // Before the fix the followers were never told: bounded so the failure shows as one.
    const late = new Promise<never>((_, reject) => {
      setTimeout(() => reject(new Error('the follower was not told of the commit')), 5000).unref();
    });
    assert.deepEqual(await Promise.race([following, late]), data);
    assert.ok(await exists(layout.lockPath('unlock-fails')), 'the lock file is left');
    // It guards no commit: collection does not spare every blob newer than it.
    const start = Date.now() + 1;
    assert.equal(await store.sweepCutoff(start), start);
  } finally {
    undo();
  }
  // The lock file left names this process, but no writer of it: the next writer of the ref takes it over.
  const next = await store.writer('unlock-fails');
  await next.write(data.subarray(0, 10));
  await next.close();
  await store.close();
});

test('a blob another writer found while the directory sync of its commit was failing stays stored', async () => {
  const root = await mkdtemp(join(tmpdir(), 'strata-content-'));
  roots.push(root);
  const probe = await open(join(root, 'probe'), 'w');
  const proto = Object.getPrototypeOf(probe) as { sync(): Promise<void> };
  await probe.close();
  const { sync } = proto;
  // The blob directory's sync is slow, then fails; meanwhile a second writer commits the same bytes.
  let fail = (_err: Error) => {};
  let syncing = false;
  const store = await ContentStore.open(root, {
    hooks: {
      beforeCommitStep: (step, ref) => {
        if (step !== 'link' || ref !== 'first') return;
        proto.sync = () => {
          proto.sync = sync;
          syncing = true;
          return new Promise((_resolve, reject) => {
            fail = reject;
          });
        };
      },
    },
  });
  try {
    const data = randomBytes(10_000);
    const first = await store.writer('first', { expected: digestOf(data), total: data.length });
    const second = await store.writer('second', { expected: digestOf(data), total: data.length });
    await first.write(data);
    await second.write(data);
    const committing = first.commit();
    committing.catch(() => {});
    await waitFor(() => syncing, 10_000, { what: 'the first commit linked its blob' });
    await rejectsKind(second.commit(), 'AlreadyExists');
    fail(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }));
    await assert.rejects(committing, /EIO/);
    // The second writer's caller took the blob as stored: it is.
    assert.deepEqual(await readAll(await store.reader(digestOf(data))), data);
    assert.deepEqual(await readdir(join(root, 'tmp')), [], 'no tmp link left behind');
    await rejectsKind(store.writer('first', { expected: digestOf(data) }), 'AlreadyExists');
  } finally {
    proto.sync = sync;
    await store.close();
  }
});

describe('background syncs while writing (syncEvery)', () => {
  test('start every syncEvery bytes, one at a time; commit and close wait for them', async () => {
    const root = await mkdtemp(join(tmpdir(), 'strata-content-'));
    roots.push(root);
    const started: number[] = [];
    const store = await ContentStore.open(root, { hooks: { onSyncAhead: (_ref, at) => started.push(at) } });
    const data = randomBytes(64 * 1024);
    const w = await store.writer('synced', { syncEvery: 16 * 1024 });
    for (let at = 0; at < data.length; at += 8 * 1024) await w.write(data.subarray(at, at + 8 * 1024));
    assert.ok(started.length >= 1, 'a background sync started');
    for (let i = 1; i < started.length; i++) assert.ok(started[i]! - started[i - 1]! >= 16 * 1024);
    assert.equal(await w.commit(data.length, digestOf(data)), digestOf(data));
    assert.deepEqual(await readAll(await store.reader(digestOf(data))), data);

    // Closed with a sync under way: the ingest resumes where it was.
    const v = await store.writer('resumed', { syncEvery: 1 });
    await v.write(data.subarray(0, 1000));
    await v.close();
    const again = await store.writer('resumed');
    assert.equal(again.offset, 1000);
    await again.write(data.subarray(1000, 2000));
    assert.equal(await again.commit(2000), digestOf(data.subarray(0, 2000)));
    await rejectsKind(store.writer('bad', { syncEvery: -1 }), 'InvalidArgument');
    await store.close();
  });

  test('a failed sync is never forgotten: no further write, no commit (a second sync would pass), no resume', async () => {
    const root = await mkdtemp(join(tmpdir(), 'strata-content-'));
    roots.push(root);
    const store = await ContentStore.open(root);
    const data = randomBytes(64 * 1024);
    // The disk fails this ingest's syncs once: the kernel reports a lost write to a file only once.
    const probe = await open(join(root, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { datasync(): Promise<void>; sync(): Promise<void> };
    await probe.close();
    const { datasync, sync } = proto;
    let failures = 0;
    const eio = () => {
      failures++;
      return Promise.reject(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }));
    };
    proto.datasync = () => {
      proto.datasync = datasync;
      return eio();
    };
    try {
      const w = await store.writer('sync-fails', { syncEvery: 1 });
      await w.write(data.subarray(0, 1000));
      await waitFor(() => failures === 1, 10_000, { what: 'the background sync failed' });
      await assert.rejects(w.write(data.subarray(1000, 2000)), /EIO/);
      await assert.rejects(w.commit(1000, digestOf(data.subarray(0, 1000))), /EIO/);
      await w.close();
      const again = await store.writer('sync-fails');
      assert.equal(again.offset, 0, 'the ingest starts over');
      await again.close();

      // The commit's own sync fails: asking again does not commit either.
      const v = await store.writer('commit-sync-fails');
      await v.write(data);
      proto.sync = () => {
        proto.sync = sync;
        return eio();
      };
      await assert.rejects(v.commit(data.length, digestOf(data)), /EIO/);
      await assert.rejects(v.commit(data.length, digestOf(data)), /EIO/);
      await rejectsKind(store.info(digestOf(data)), 'NotFound');
      await v.close();
    } finally {
      proto.datasync = datasync;
      proto.sync = sync;
      await store.close();
    }
  });

  test('a sync that fails while close() waits for it still removes the ingest', async () => {
    const root = await mkdtemp(join(tmpdir(), 'strata-content-'));
    roots.push(root);
    const store = await ContentStore.open(root);
    const data = randomBytes(4000);
    const probe = await open(join(root, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { datasync(): Promise<void> };
    await probe.close();
    const { datasync } = proto;
    // The background sync is under way when close() comes, and fails after it.
    let fail = (_err: Error) => {};
    proto.datasync = () => {
      proto.datasync = datasync;
      return new Promise((_resolve, reject) => {
        fail = reject;
      });
    };
    try {
      const w = await store.writer('sync-fails-closing', { syncEvery: 1 });
      await w.write(data.subarray(0, 1000));
      const closing = w.close();
      await new Promise((r) => setTimeout(r, 20));
      fail(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
      await closing;
      const again = await store.writer('sync-fails-closing');
      assert.equal(again.offset, 0, 'the ingest starts over');
      await again.close();
    } finally {
      proto.datasync = datasync;
      await store.close();
    }
  });
});
