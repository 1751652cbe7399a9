// The content view used directly, as domain code (pull, unpack) does; the gRPC behaviour is covered by
// test/integration/content-conformance.test.ts.
import assert from 'node:assert/strict';
import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { removeTempDir, tempDir } from '../../test/helpers/tmp.ts';
import { Layout } from '../content/layout.ts';
import { ContentStore } from '../content/store.ts';
import { isAlreadyExists, isNotFound, isUnavailable } from '../errors.ts';
import { digestOf } from '../oci/digest.ts';
import { backendRef, ContentView } from './content.ts';
import { MetadataDb } from './db.ts';

let dir: string;
let store: ContentStore;
let db: MetadataDb;
let view: ContentView;

before(async () => {
  dir = await tempDir('content-view');
  store = await ContentStore.open(join(dir, 'content'));
  db = new MetadataDb(join(dir, 'meta.db'));
  view = new ContentView({ store, db });
});

after(async () => {
  await store.close();
  db.close();
  await removeTempDir(dir);
});

async function put(ns: string, ref: string, text: string, labels: Record<string, string> = {}) {
  const w = await view.writer(ns, ref, { expected: digestOf(text), total: text.length });
  try {
    await w.write(Buffer.from(text));
    return await w.commit(text.length, digestOf(text), labels);
  } finally {
    await w.close();
  }
}

test('a committed blob is in the namespace, with its labels, and readable', async () => {
  const d = await put('a', 'r1', 'hello world', { x: 'y' });
  const info = view.info('a', d);
  assert.equal(info.size, 11);
  assert.deepEqual(info.labels, { x: 'y' });
  const chunks = [];
  for await (const c of await view.blob('a', d).open({ range: { offset: 6 } })) chunks.push(Buffer.from(c));
  assert.equal(Buffer.concat(chunks).toString(), 'world');
  assert.throws(() => view.info('b', d), isNotFound);
});

test('a writer for content the namespace has is AlreadyExists', async () => {
  const d = await put('a', 'r2', 'twice');
  await assert.rejects(view.writer('a', 'r3', { expected: d }), isAlreadyExists);
});

test('a shared commit whose bytes vanished before it landed is undone and Unavailable', async () => {
  const d = await put('a', 'r4', 'vanishing');
  const w = await view.writer('b', 'r4', { expected: d });
  assert.equal(w.offset, 9, 'shared: offset = size');
  // The GC removes the bytes between the writer's check and the commit.
  await unlink(new Layout(store.root).blobPath(d));
  await assert.rejects(w.commit(9, d), isUnavailable);
  await w.close();
  assert.throws(() => view.info('b', d), isNotFound, 'no membership without bytes');
});

test('an ingest is recorded as sharing its expected digest only when the bytes are on disk', async () => {
  const shared = (ref: string) =>
    (
      db.sql.prepare("SELECT shared FROM ingests WHERE namespace = 'c' AND ref = ?").get(ref) as {
        shared: bigint;
      }
    ).shared;
  const onDisk = await put('a', 'r5', 'on disk already');
  const linking = await view.writer('c', 'links', { expected: onDisk });
  const writing = await view.writer('c', 'writes', { expected: digestOf('not on disk yet') });
  assert.equal(shared('links'), 1n, 'it links the bytes on disk: it holds that content, as in containerd');
  assert.equal(shared('writes'), 0n, 'it writes its own bytes: it holds nothing in the namespace');
  await linking.abort();
  await writing.abort();
});

test('removeIngestData deletes the backing ingest; a missing one is fine', async () => {
  const w = await view.writer('a', 'partial', {});
  await w.write(Buffer.from('part'));
  await w.close();
  assert.equal((await store.status(backendRef('a', 'partial'))).offset, 4);
  await view.removeIngestData('a', 'partial');
  await assert.rejects(store.status(backendRef('a', 'partial')), isNotFound);
  await view.removeIngestData('a', 'partial');
});

test('refs map to distinct backend refs per namespace', () => {
  assert.notEqual(backendRef('a', 'x'), backendRef('b', 'x'));
});
