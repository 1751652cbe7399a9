import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { Layout } from '../content/layout.ts';
import { ContentStore } from '../content/store.ts';
import { type Digest, digestOf } from '../oci/digest.ts';
import { ContentView } from './content.ts';
import { ContentMeta } from './content-labels.ts';
import { MetadataDb } from './db.ts';
import { GcRunner, type GcStats } from './gc-runner.ts';
import { ImageStore } from './images.ts';
import { LeaseStore } from './leases.ts';

let dir: string;
let db: MetadataDb;
let store: ContentStore;
let meta: ContentMeta;
let runs: GcStats[];
let gc: GcRunner;
const logger = pino({ level: 'silent' });

/** Sets a file's times `ms` before now (a blob committed that long ago). */
async function age(path: string, ms: number): Promise<void> {
  const t = new Date(Date.now() - ms);
  await utimes(path, t, t);
}

/** Commits `text` to the store, backdated a minute (so no run counts it as just committed), held by `ns`. */
async function blob(ns: string | undefined, text: string): Promise<Digest> {
  const d = digestOf(text);
  await store.ingestStream(`t-${d}`, Readable.from([Buffer.from(text)]), { digest: d, size: text.length });
  await age(new Layout(store.root).blobPath(d), 60_000);
  if (ns !== undefined && !meta.has(ns, d)) meta.add(ns, d, text.length);
  return d;
}

async function onDisk(): Promise<string[]> {
  const names = await readdir(join(dir, 'content', 'blobs', 'sha256'));
  return names.map((n) => `sha256:${n}`).sort();
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'strata-gc-'));
  db = new MetadataDb(join(dir, 'meta.db'));
  store = await ContentStore.open(join(dir, 'content'));
  meta = new ContentMeta(db);
  runs = [];
  // Long delay: background runs only happen when a test waits for one.
  gc = new GcRunner({
    db,
    content: store,
    logger,
    delayMs: 60_000,
    maxDelayMs: 60_000,
    onRun: (s) => runs.push(s),
  });
});
/** A runner in slices as small as they come, whose removeIngest lists what it is handed in `removed`. */
function slicedRunner(removed: string[]): GcRunner {
  const removeIngest = async (ns: string, ref: string) => {
    removed.push(`${ns}/${ref}`);
  };
  return new GcRunner({ db, content: store, logger, delayMs: 60_000, sliceMs: 0, removeIngest });
}

const tempObjects = () =>
  db.sql.prepare("SELECT name FROM sqlite_temp_master WHERE type IN ('table', 'trigger')").all();

afterEach(async () => {
  await gc.close();
  db.close();
  await rm(dir, { recursive: true, force: true });
});

describe('GcRunner', () => {
  it('removes unreferenced content from the namespace and its bytes from disk', async () => {
    const kept = await blob('ns', 'kept: an image points here');
    const dropped = await blob('ns', 'dropped: nothing points here');
    new ImageStore(db).create('ns', {
      name: 'img',
      target: { mediaType: 'application/x', digest: kept, size: 26 },
    });
    const stats = await gc.collect();
    assert.equal(stats.content, 1);
    assert.equal(stats.blobsDeleted, 1);
    assert.ok(meta.has('ns', kept));
    assert.ok(!meta.has('ns', dropped));
    assert.deepEqual(await onDisk(), [kept]);
  });

  it('keeps the bytes while another namespace holds the blob', async () => {
    const shared = await blob('a', 'shared between namespaces');
    await blob('b', 'shared between namespaces');
    new LeaseStore(db).create('b', { id: 'hold' });
    new LeaseStore(db).addResource('b', 'hold', { type: 'content', id: shared });
    const stats = await gc.collect();
    assert.equal(stats.content, 1, 'the membership in a goes');
    assert.equal(stats.blobsDeleted, 0);
    assert.ok(!meta.has('a', shared));
    assert.deepEqual(await onDisk(), [shared]);
  });

  it('counts a blob file already gone as nothing to delete, not an error', async () => {
    const d = await blob('ns', 'gone already');
    await store.delete(d);
    const stats = await gc.collect();
    assert.equal(stats.content, 1);
    assert.equal(stats.blobsDeleted, 0);
    assert.ok(!meta.has('ns', d));
  });

  it('deletes bytes a Content.Delete orphaned, which no collection removes itself', async () => {
    const kept = await blob('ns', 'kept: the image points here');
    const text = 'removed from the namespace by hand';
    const d = await blob('ns', text);
    new ImageStore(db).create('ns', {
      name: 'img',
      target: { mediaType: 'application/x', digest: kept, size: 27 },
    });
    meta.remove('ns', d);
    const stats = await gc.collect();
    assert.equal(stats.content, 0, 'the collection itself removes no membership');
    assert.equal(stats.blobsDeleted, 1);
    assert.equal(stats.blobBytesDeleted, text.length);
    assert.deepEqual(await onDisk(), [kept]);
  });

  it('deletes a blob file that never joined a namespace, and spares what a lease holds', async () => {
    const orphan = await blob(undefined, 'committed, then the link failed');
    const leased = await blob('ns', 'held by a lease');
    new LeaseStore(db).create('ns', { id: 'l' });
    new LeaseStore(db).addResource('ns', 'l', { type: 'content', id: leased });
    const stats = await gc.collect();
    assert.equal(stats.content, 0);
    assert.equal(stats.blobsDeleted, 1);
    assert.deepEqual(await onDisk(), [leased]);
    assert.ok(orphan);
  });

  it('spares an orphan committed after the run started', async () => {
    const d = await blob(undefined, 'committed while the run went on');
    const later = new Date(Date.now() + 60_000);
    await utimes(new Layout(store.root).blobPath(d), later, later);
    assert.equal((await gc.collect()).blobsDeleted, 0);
    assert.deepEqual(await onDisk(), [d]);
  });

  it('spares a blob that a writer is linking into a namespace from the bytes on disk', async () => {
    const view = new ContentView({ store, db });
    const text = 'orphaned in one namespace, shared into another';
    const d = await blob(undefined, text);
    // The shared-content policy: the writer stands for the bytes on disk and writes none.
    const w = await view.writer('other', 'ref', { expected: d, total: text.length });
    assert.equal((await gc.collect()).blobsDeleted, 0);
    assert.equal(await w.commit(text.length, d, { 'containerd.io/gc.root': 'yes' }), d);
    await w.close();
    assert.ok(view.has('other', d));
    assert.deepEqual(await onDisk(), [d]);
    assert.equal((await gc.collect()).blobsDeleted, 0, 'held by the namespace now, a root');
  });

  it('spares fresh bytes whose commit is between the store and the namespace when the run starts', async () => {
    let arrived!: () => void;
    const atCleanup = new Promise<void>((r) => {
      arrived = r;
    });
    let proceed!: () => void;
    const gate = new Promise<void>((r) => {
      proceed = r;
    });
    // A second handle on the same store whose commits stop after the blob is in blobs/ (mtime stamped,
    // lock held) and before the namespace links it.
    const paused = await ContentStore.open(store.root, {
      hooks: {
        beforeCommitStep: async (step) => {
          if (step !== 'cleanup') return;
          arrived();
          await gate;
        },
      },
    });
    const view = new ContentView({ store: paused, db });
    try {
      const text = 'no digest declared before the commit';
      const w = await view.writer('ns', 'fresh');
      await w.write(Buffer.from(text));
      const committing = w.commit(0, '');
      await atCleanup;
      const path = new Layout(store.root).blobPath(digestOf(text));
      // The run starts after the stamp: only the held lock tells that the commit is still linking.
      const stamped = (await stat(path)).mtimeMs;
      while (Date.now() <= stamped) await sleep(1);
      assert.equal((await gc.collect()).blobsDeleted, 0);
      proceed();
      assert.equal(await committing, digestOf(text));
      await w.close();
      assert.ok(view.has('ns', digestOf(text)));
      assert.deepEqual(await onDisk(), [digestOf(text)]);
    } finally {
      proceed();
      await paused.close();
    }
  });

  it('ignores the ref lock of a dead process; an unreadable lock counts from its mtime', async () => {
    const d = await blob(undefined, 'orphan under stale locks');
    const locks = new Layout(store.root).locksDir;
    await mkdir(locks, { recursive: true });
    const dead = spawnSync('true').pid;
    assert.ok(dead);
    await writeFile(join(locks, 'a.lock'), JSON.stringify({ pid: dead, since: 0, token: 'x' }));
    await writeFile(join(locks, 'not-a-lock'), 'ignored');
    assert.equal((await gc.collect()).blobsDeleted, 1);
    assert.deepEqual(await onDisk(), []);

    const d2 = await blob(undefined, 'orphan under a lock that does not parse');
    await writeFile(join(locks, 'b.lock'), '{');
    await age(join(locks, 'b.lock'), 3_600_000);
    assert.equal((await gc.collect()).blobsDeleted, 0, 'it may be a commit in flight since then');
    await rm(join(locks, 'b.lock'));
    assert.equal((await gc.collect()).blobsDeleted, 1);
    assert.notEqual(d, d2);
  });

  it('leaves alone what is not a blob: other names, directories, a missing sha512 folder', async () => {
    const dir256 = join(dir, 'content', 'blobs', 'sha256');
    await writeFile(join(dir256, 'README'), 'not a digest');
    await writeFile(join(dir256, 'ABCDEF'), 'upper case is no digest');
    await mkdir(join(dir256, 'a'.repeat(64)));
    await age(join(dir256, 'README'), 60_000);
    await rm(join(dir, 'content', 'blobs', 'sha512'), { recursive: true });
    const d = await blob(undefined, 'the only orphan');
    assert.equal((await gc.collect()).blobsDeleted, 1);
    assert.deepEqual((await readdir(dir256)).sort(), ['ABCDEF', 'README', 'a'.repeat(64)]);
    assert.ok(d);
  });

  it('sweeps sha512 blobs too', async () => {
    const text = 'a sha512 blob';
    const d = digestOf(text, 'sha512');
    await store.ingestStream('t-512', Readable.from([Buffer.from(text)]), { digest: d, size: text.length });
    await age(new Layout(store.root).blobPath(d), 60_000);
    assert.equal((await gc.collect()).blobsDeleted, 1);
    assert.deepEqual(await readdir(join(dir, 'content', 'blobs', 'sha512')), []);
  });

  it('asks the snapshotters to clean up after every run, with what it removed', async () => {
    await gc.close();
    const calls: number[] = [];
    gc = new GcRunner({
      db,
      content: store,
      logger,
      delayMs: 60_000,
      removeSnapshots: async (removed) => {
        calls.push(removed.length);
      },
    });
    await gc.collect();
    await gc.collect();
    assert.deepEqual(calls, [0, 0]);
  });

  it('shares one queued run among callers that arrive while another runs', async () => {
    await blob('ns', 'garbage');
    const first = gc.collect();
    const second = gc.collect();
    const third = gc.collect();
    await Promise.all([first, second, third]);
    assert.ok(runs.length >= 1 && runs.length <= 2, `runs: ${runs.length}`);
    assert.equal(
      runs.reduce((n, r) => n + r.blobsDeleted, 0),
      1,
    );
  });

  it('runs in the background after a deletion', async () => {
    await gc.close();
    gc = new GcRunner({ db, content: store, logger, delayMs: 1, maxDelayMs: 10, onRun: (s) => runs.push(s) });
    const d = await blob('ns', 'deleted later');
    new LeaseStore(db).create('ns', { id: 'l' });
    new LeaseStore(db).addResource('ns', 'l', { type: 'content', id: d });
    new LeaseStore(db).delete('ns', 'l');
    for (let i = 0; i < 500 && runs.length === 0; i++) await sleep(10);
    assert.equal(runs.length, 1);
    assert.deepEqual(await onDisk(), []);
  });

  it('runs in the background after 100 writes without a deletion, as containerd', async () => {
    await blob('ns', 'written unheld');
    await gc.close();
    gc = new GcRunner({ db, content: store, logger, delayMs: 1, maxDelayMs: 10, onRun: (s) => runs.push(s) });
    const leases = new LeaseStore(db);
    leases.create('ns', { id: 'expired', labels: { 'containerd.io/gc.expire': '2000-01-01T00:00:00Z' } });
    // Savepoints inside a write are part of it, not writes of their own.
    db.write(() => db.write(() => leases.create('ns', { id: 'nested' })));
    for (let i = 0; i < 97; i++) leases.create('ns', { id: `w${i}` });
    await sleep(20);
    assert.equal(runs.length, 0, '99 writes');
    leases.create('ns', { id: 'w97' });
    for (let i = 0; i < 500 && runs.length === 0; i++) await sleep(10);
    assert.equal(runs.length, 1);
    assert.equal(runs[0]!.leases, 1);
    assert.deepEqual(await onDisk(), []);
  });

  it('does not count its own sweep transactions as writes that call for another run', async () => {
    await gc.close();
    gc = new GcRunner({
      db,
      content: store,
      logger,
      delayMs: 1,
      maxDelayMs: 10,
      mutationThreshold: 2,
      sliceMs: 0,
      onRun: (s) => runs.push(s),
    });
    for (let i = 0; i < 600; i++) meta.add('ns', digestOf(`unheld ${i}`), 1);
    const leases = new LeaseStore(db);
    leases.create('ns', { id: 'expired', labels: { 'containerd.io/gc.expire': '2000-01-01T00:00:00Z' } });
    runs.length = 0;
    await gc.collect();
    await sleep(100);
    assert.equal(runs.length, 1);
  });

  it('hands expired ingests to removeIngest', async () => {
    await gc.close();
    const removed: string[] = [];
    gc = new GcRunner({
      db,
      content: store,
      logger,
      delayMs: 60_000,
      removeIngest: async (ns, ref) => {
        removed.push(`${ns}/${ref}`);
      },
    });
    db.sql.prepare('INSERT INTO namespaces (name, created_at, updated_at) VALUES (?, 0, 0)').run('ns');
    db.sql
      .prepare('INSERT INTO ingests (namespace, ref, created_at, expires_at) VALUES (?, ?, 0, ?)')
      .run('ns', 'old', 1n);
    db.sql
      .prepare('INSERT INTO ingests (namespace, ref, created_at, expires_at) VALUES (?, ?, 0, ?)')
      .run('ns', 'fresh', db.clock() + 3_600_000_000_000n);
    const stats = await gc.collect();
    assert.equal(stats.ingests, 1);
    assert.deepEqual(removed, ['ns/old']);
  });

  it('collects the metadata in slices, and says how many and how long the longest was', async () => {
    await gc.close();
    gc = new GcRunner({ db, content: store, logger, delayMs: 60_000, sliceMs: 0 });
    for (let i = 0; i < 600; i++) meta.add('ns', digestOf(`row ${i}`), 1);
    const stats = await gc.collect();
    assert.equal(stats.content, 600);
    assert.ok(stats.slices > 5, `slices: ${stats.slices}`);
    assert.ok(stats.longestSliceMs >= 0 && stats.longestSliceMs <= stats.ms);
  });

  it('stops a collection between its slices when closed: what is removed so far stays removed', async () => {
    await gc.close();
    const removed: string[] = [];
    gc = slicedRunner(removed);
    const count = (table: string) =>
      Number((db.sql.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: bigint }).n);
    const kept = digestOf('kept');
    db.write(() => {
      meta.add('ns', kept, 1, { 'containerd.io/gc.root': 'yes' });
      for (let i = 0; i < 20_000; i++) meta.add('ns', digestOf(`garbage ${i}`), 1);
      const ingest = db.sql.prepare(
        'INSERT INTO ingests (namespace, ref, created_at, expires_at) VALUES (?, ?, 0, 1)',
      );
      for (let i = 0; i < 3000; i++) ingest.run('ns', `expired ${i}`);
    });
    const turn = () => new Promise((resolve) => setImmediate(resolve));
    // Closed during the sweep, part of the content gone.
    const running = gc.collect();
    running.catch(() => {});
    while (count('content') === 20_001) await turn();
    await gc.close();
    await assert.rejects(running, /closed/);
    const left = count('content');
    assert.ok(left > 1, `the collection went on to the end: ${left} content rows left`);
    assert.ok(db.sql.prepare('SELECT 1 FROM content WHERE digest = ?').get(kept));
    assert.equal(count('ingests'), 3000);
    assert.deepEqual(tempObjects(), []);
    // Closed during the sweep of ingests: those whose records went are handed over all the same.
    gc = slicedRunner(removed);
    const again = gc.collect();
    again.catch(() => {});
    while (count('ingests') === 3000) await turn();
    await gc.close();
    await assert.rejects(again, /closed/);
    assert.equal(count('content'), 1);
    const gone = 3000 - count('ingests');
    assert.ok(gone < 3000, 'the collection went on to the end');
    assert.equal(removed.length, gone);
    assert.deepEqual(tempObjects(), []);
    // What is left is collected by the next run as if none had stopped.
    gc = new GcRunner({ db, content: store, logger, delayMs: 60_000, sliceMs: 0 });
    const stats = await gc.collect();
    assert.equal(stats.ingests, 3000 - gone);
    assert.equal(count('ingests'), 0);
    assert.deepEqual(tempObjects(), []);
  });

  it('closed before its sweep, a collection removes nothing', async () => {
    await gc.close();
    gc = slicedRunner([]);
    db.write(() => {
      for (let i = 0; i < 5000; i++) meta.add('ns', digestOf(`garbage ${i}`), 1);
    });
    const running = gc.collect();
    running.catch(() => {});
    await new Promise((resolve) => setImmediate(resolve));
    await gc.close();
    await assert.rejects(running, /closed/);
    assert.equal((db.sql.prepare('SELECT count(*) AS n FROM content').get() as { n: bigint }).n, 5000n);
    assert.deepEqual(tempObjects(), []);
  });

  it('refuses to run once closed', async () => {
    await gc.close();
    await assert.rejects(gc.collect(), /closed/);
  });
});
