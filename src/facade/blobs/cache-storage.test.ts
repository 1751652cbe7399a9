// The cache's storages: on the daemon's store the cache's blobs are rows of its namespace, a blob another
// namespace holds is linked in without a fetch, eviction deletes the row and only the collector frees bytes
// (never those another namespace holds); a corrupt file is deleted only when the store finds it wrong.
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { waitFor } from '../../../test/helpers/process.ts';
import { ContentStore } from '../../content/store.ts';
import { ContentView } from '../../metadata/content.ts';
import { MetadataDb } from '../../metadata/db.ts';
import { LABEL_GC_ROOT } from '../../metadata/gc-labels.ts';
import { GcRunner } from '../../metadata/gc-runner.ts';
import type { Blob } from '../../oci/blob.ts';
import type { Descriptor } from '../../oci/descriptor.ts';
import { digestOf } from '../../oci/digest.ts';
import { BlobCache } from './cache.ts';
import { DirCacheStorage } from './cache-storage.ts';
import { DEFAULT_CACHE_NAMESPACE, NamespaceCacheStorage } from './namespace-cache-storage.ts';

const NS = DEFAULT_CACHE_NAMESPACE;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'strata-cache-storage-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function blob(seed: number, size: number): { bytes: Buffer; desc: Descriptor } {
  const bytes = Buffer.alloc(size, seed);
  return { bytes, desc: { mediaType: 'application/octet-stream', digest: digestOf(bytes), size } };
}

/** A source that counts its opens. */
function source(desc: Descriptor, bytes: Buffer, opens: { n: number }): Blob {
  return {
    descriptor: desc,
    open: async (o = {}) => {
      opens.n++;
      return Readable.from([bytes.subarray(o.range?.offset ?? 0)]);
    },
  };
}

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A daemon's store, database and collector under a fresh directory, with the cache's storage on them. */
async function daemonParts(name: string) {
  const root = join(dir, name);
  const store = await ContentStore.open(join(root, 'content'));
  const db = new MetadataDb(join(root, 'meta.db'));
  const view = new ContentView({ store, db });
  // Collections only when asked, so the test sees the bytes between eviction and collection.
  const gc = new GcRunner({ db, content: store, logger: pino({ level: 'silent' }), delayMs: 60_000 });
  const storage = new NamespaceCacheStorage(view);
  return {
    store,
    db,
    view,
    gc,
    storage,
    /** Stores `bytes` in namespace `ns` as a pull would (a row the collector keeps). */
    async put(ns: string, bytes: Buffer, desc: Descriptor) {
      const w = await view.writer(ns, `put-${desc.digest}`, { expected: desc.digest, total: desc.size });
      // On disk already (the cache's): the writer shares those bytes.
      if (w.offset === 0) await w.write(bytes);
      await w.commit(desc.size, desc.digest, { [LABEL_GC_ROOT]: 'test' });
    },
    async close() {
      await gc.close();
      await store.close();
      db.close();
    },
  };
}

test('a blob another namespace holds is linked into the cache, not fetched; a fill adds a row the collector keeps', async () => {
  const d = await daemonParts('link');
  const cache = await BlobCache.open({ storage: d.storage, maxBytes: 1 << 20 });
  try {
    const held = blob(1, 1000);
    await d.put('default', held.bytes, held.desc);
    const opens = { n: 0 };
    const r = await cache.read(held.desc, undefined, source(held.desc, held.bytes, opens));
    assert.equal(r.outcome, 'hit');
    assert.deepEqual(await readAll(r.stream), held.bytes);
    assert.equal(opens.n, 0, 'the source was never opened');
    assert.equal(d.view.has(NS, held.desc.digest), true);

    const fresh = blob(2, 500);
    const f = await cache.read(fresh.desc, undefined, source(fresh.desc, fresh.bytes, opens));
    assert.equal(f.outcome, 'miss');
    assert.deepEqual(await readAll(f.stream), fresh.bytes);
    assert.equal(opens.n, 1);
    assert.equal(d.view.info(NS, fresh.desc.digest).labels[LABEL_GC_ROOT] !== undefined, true);
    // The cache's rows are roots: a collection keeps them and their bytes.
    await d.gc.collect();
    assert.deepEqual(
      (await d.view.list(NS, [])).map((c) => c.digest).sort(),
      [held.desc.digest, fresh.desc.digest].sort(),
    );
    assert.equal(await d.store.has(fresh.desc.digest), true);
  } finally {
    cache.close();
    await d.close();
  }
});

test('loading drops every ingest a stopped cache left, also a link’s writer that has no status', async () => {
  const d = await daemonParts('leftovers');
  try {
    const held = blob(3, 300);
    await d.put('default', held.bytes, held.desc);
    // A link stopped between opening its writer and committing, and a fill stopped mid-way.
    const link = await d.view.writer(NS, 'link-stopped', { expected: held.desc.digest, total: 300 });
    await link.close();
    const fill = await d.view.writer(NS, 'fill-stopped');
    await fill.write(Buffer.from('part of a blob'));
    await fill.close();
    assert.deepEqual(d.view.ingestRefs(NS), ['fill-stopped', 'link-stopped']);
    await d.storage.load();
    assert.deepEqual(d.view.ingestRefs(NS), []);
  } finally {
    await d.close();
  }
});

test('eviction deletes the cache row only; the collector frees bytes no other namespace holds', async () => {
  const d = await daemonParts('evict');
  const cache = await BlobCache.open({ storage: d.storage, maxBytes: 250 });
  try {
    const shared = blob(3, 100);
    const mine = blob(4, 100);
    const third = blob(5, 100);
    const opens = { n: 0 };
    for (const x of [shared, mine, third]) {
      await readAll((await cache.read(x.desc, undefined, source(x.desc, x.bytes, opens))).stream);
      // The daemon pulls `shared` too: its own row, on the same bytes.
      if (x === shared) await d.put('default', x.bytes, x.desc);
    }
    // `third` pushed `shared` (the least recently used) out; filling another pushes `mine` out.
    const fourth = blob(6, 100);
    await readAll(
      (await cache.read(fourth.desc, undefined, source(fourth.desc, fourth.bytes, opens))).stream,
    );
    assert.equal(cache.has(shared.desc.digest), false);
    assert.equal(cache.has(mine.desc.digest), false);
    assert.equal(d.view.has(NS, shared.desc.digest), false);
    assert.equal(d.view.has(NS, mine.desc.digest), false);
    // Eviction deleted no bytes.
    assert.equal(await d.store.has(shared.desc.digest), true);
    assert.equal(await d.store.has(mine.desc.digest), true);

    await d.gc.collect();
    assert.equal(await d.store.has(mine.desc.digest), false, 'held by nobody: freed');
    assert.equal(await d.store.has(shared.desc.digest), true, 'the daemon still holds it');
    assert.equal(await d.store.has(third.desc.digest), true, 'still cached');
    assert.deepEqual(
      await readAll((await d.view.blob('default', shared.desc.digest).open()) as Readable),
      shared.bytes,
    );
    // Read again through the cache: linked from the daemon's bytes, no fetch.
    const before = opens.n;
    const again = await cache.read(shared.desc, undefined, source(shared.desc, shared.bytes, opens));
    assert.equal(again.outcome, 'hit');
    await readAll(again.stream);
    assert.equal(opens.n, before);
  } finally {
    cache.close();
    await d.close();
  }
});

test('a cache row deleted by a client, its bytes collected, is fetched afresh on the next read', async () => {
  const d = await daemonParts('deleted');
  const cache = await BlobCache.open({ storage: d.storage, maxBytes: 1 << 20 });
  try {
    const x = blob(11, 400);
    const opens = { n: 0 };
    await readAll((await cache.read(x.desc, undefined, source(x.desc, x.bytes, opens))).stream);
    d.view.delete(NS, x.desc.digest);
    await d.gc.collect();
    assert.equal(await d.store.has(x.desc.digest), false);
    const again = await cache.read(x.desc, undefined, source(x.desc, x.bytes, opens));
    assert.equal(again.outcome, 'miss');
    assert.deepEqual(await readAll(again.stream), x.bytes);
    assert.equal(opens.n, 2);
    assert.equal(d.view.has(NS, x.desc.digest), true);
  } finally {
    cache.close();
    await d.close();
  }
});

test('a corrupt blob is deleted for every holder only once the store finds it wrong; a good one stays', async () => {
  const d = await daemonParts('corrupt');
  try {
    const good = blob(7, 300);
    const bad = blob(8, 300);
    await d.put('default', good.bytes, good.desc);
    await d.put('default', bad.bytes, bad.desc);
    const storage = d.storage;
    for (const x of [good, bad]) assert.equal(await storage.link(x.desc), true);
    await writeFile(join(d.store.root, 'blobs', 'sha256', bad.desc.digest.slice(7)), Buffer.alloc(300, 9));
    await storage.discard(good.desc.digest);
    await storage.discard(bad.desc.digest);
    assert.equal(d.view.has(NS, good.desc.digest), false);
    assert.equal(await d.store.has(good.desc.digest), true, 'its bytes are right: kept');
    assert.equal(await d.store.has(bad.desc.digest), false, 'its bytes are wrong: gone');
  } finally {
    await d.close();
  }
});

test('a corrupt file another reader holds open when the cache drops it is not served once fetched afresh', async () => {
  const d = await daemonParts('held-corrupt');
  try {
    const x = blob(5, 300);
    const opens = { n: 0 };
    const first = await BlobCache.open({ storage: d.storage, maxBytes: 1 << 20 });
    await readAll((await first.read(x.desc, undefined, source(x.desc, x.bytes, opens))).stream);
    first.close();
    const file = join(d.store.root, 'blobs', 'sha256', x.desc.digest.slice(7));
    await chmod(file, 0o644);
    await writeFile(file, Buffer.alloc(300, 9));
    // Another client of the daemon's store has the file open while the cache finds it wrong.
    const other = await d.store.reader(x.desc.digest);
    const cache = await BlobCache.open({ storage: d.storage, maxBytes: 1 << 20 });
    try {
      const refetched = await cache.read(x.desc, undefined, source(x.desc, x.bytes, opens));
      assert.equal(refetched.outcome, 'miss');
      assert.deepEqual(await readAll(refetched.stream), x.bytes);
      await waitFor(() => cache.has(x.desc.digest), 5000, { what: 'the refetched blob' });
      other.destroy();
      const hit = await cache.read(x.desc, undefined, undefined);
      assert.equal(hit.outcome, 'hit');
      assert.deepEqual(await readAll(hit.stream), x.bytes, 'the blob stored afresh, not the corrupt file');
    } finally {
      cache.close();
    }
  } finally {
    await d.close();
  }
});

test('the own dir storage: every blob there is the cache’s, nothing is linked, removal deletes the file', async () => {
  const root = join(dir, 'own');
  const storage = await DirCacheStorage.open(root);
  try {
    const x = blob(10, 200);
    assert.equal(await storage.link(x.desc), false);
    const w = await storage.writer('fill-1', x.desc);
    await w.write(x.bytes);
    await w.commit(x.desc.size, x.desc.digest);
    await w.close();
    assert.deepEqual(
      (await storage.load()).map((b) => [b.digest, b.size]),
      [[x.desc.digest, 200]],
    );
    assert.deepEqual(
      await readAll(await storage.reader(x.desc.digest, { offset: 150 })),
      x.bytes.subarray(150),
    );
    await storage.remove(x.desc.digest);
    assert.deepEqual(await readdir(join(root, 'blobs', 'sha256')), []);
    assert.deepEqual(await storage.load(), []);
  } finally {
    await storage.close();
  }
});
