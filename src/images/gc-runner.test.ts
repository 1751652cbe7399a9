import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { ContentStore } from '../content/store.ts';
import { ContentMeta } from '../metadata/content-labels.ts';
import { MetadataDb } from '../metadata/db.ts';
import { LeaseStore } from '../metadata/leases.ts';
import { type Digest, digestOf } from '../oci/digest.ts';
import { GcRunner, type GcStats } from './gc-runner.ts';
import { ImageStore } from './image-store.ts';

let dir: string;
let db: MetadataDb;
let store: ContentStore;
let meta: ContentMeta;
let runs: GcStats[];
let gc: GcRunner;
const logger = pino({ level: 'silent' });

async function blob(ns: string, text: string): Promise<Digest> {
  const d = digestOf(text);
  await store.ingestStream(`t-${d}`, Readable.from([Buffer.from(text)]), { digest: d, size: text.length });
  if (!meta.has(ns, d)) meta.add(ns, d, text.length);
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

  it('refuses to run once closed', async () => {
    await gc.close();
    await assert.rejects(gc.collect(), /closed/);
  });
});
