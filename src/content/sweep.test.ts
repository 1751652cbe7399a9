import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, utimes } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { removeTempDir, tempDir } from '../../test/helpers/tmp.ts';
import { type Digest, digestOf } from '../oci/digest.ts';
import { Layout } from './layout.ts';
import { ContentStore } from './store.ts';

let dir: string;

before(async () => {
  dir = await tempDir('content-sweep');
});
after(async () => {
  await removeTempDir(dir);
});

async function newStore(name: string): Promise<ContentStore> {
  return ContentStore.open(`${dir}/${name}`);
}

/** Commits `data`, with its file backdated a minute so a run starting now may judge it. */
async function put(store: ContentStore, data: Buffer, ageMs = 60_000): Promise<Digest> {
  const d = digestOf(data);
  const w = await store.writer(`ref-${d}`);
  await w.write(data);
  await w.commit(data.length, d);
  const then = new Date(Date.now() - ageMs);
  await utimes(new Layout(store.root).blobPath(d), then, then);
  return d;
}

async function onDisk(store: ContentStore): Promise<Digest[]> {
  const names = await readdir(new Layout(store.root).blobDir('sha256'));
  return names.map((n) => `sha256:${n}` as Digest).sort();
}

test('sweep deletes the blobs nothing holds and counts their bytes; held ones stay', async () => {
  const store = await newStore('held');
  const kept = await put(store, Buffer.from('held by someone'));
  const gone = [await put(store, Buffer.from('orphan one')), await put(store, randomBytes(5000))];
  const asked: Digest[] = [];
  const cutoffMs = await store.sweepCutoff(Date.now());
  const result = await store.sweep({
    cutoffMs,
    isHeld: (d) => {
      asked.push(d);
      return d === kept;
    },
  });
  assert.deepEqual(result, { deleted: 2, bytes: 'orphan one'.length + 5000 });
  assert.deepEqual(asked.sort(), [kept, ...gone].sort());
  assert.deepEqual(await onDisk(store), [kept]);
  assert.equal(await store.has(gone[0]!), false);
  // A second run finds nothing more.
  assert.deepEqual(await store.sweep({ cutoffMs, isHeld: (d) => d === kept }), { deleted: 0, bytes: 0 });
});

test('a blob committed after the run started is spared, and so is one whose writer held its lock then', async () => {
  const store = await newStore('in-flight');
  const old = await put(store, Buffer.from('old orphan'));
  // A writer that opened before the run: its commit lands after the cutoff was taken.
  const early = Buffer.from('committed by a writer open when the run started');
  const w = await store.writer('early', { expected: digestOf(early) });
  await new Promise((r) => setTimeout(r, 20));
  const cutoffMs = await store.sweepCutoff(Date.now());
  assert.ok(cutoffMs < Date.now() - 10, 'the open writer moves the cutoff back to when it took its lock');
  await w.write(early);
  await w.commit();
  const fresh = await put(store, Buffer.from('committed after the run started'), 0);
  const result = await store.sweep({ cutoffMs, isHeld: () => false });
  assert.deepEqual(result, { deleted: 1, bytes: 'old orphan'.length });
  assert.equal(await store.has(old), false);
  assert.deepEqual(await onDisk(store), [digestOf(early), fresh].sort());
  // The next run, started after both commits, judges them.
  const next = await store.sweep({ cutoffMs: await store.sweepCutoff(Date.now() + 1), isHeld: () => false });
  assert.equal(next.deleted, 2);
});

test('a blob being read survives its sweep for the reader that has it open', async () => {
  const store = await newStore('reading');
  const data = randomBytes(3 * 1024 * 1024);
  const d = await put(store, data);
  const h = await store.handle(d);
  const reader = await store.reader(d);
  await store.sweep({ cutoffMs: Date.now(), isHeld: () => false });
  assert.equal(await store.has(d), false);
  assert.deepEqual(Buffer.concat(await reader.toArray()), data);
  const buf = Buffer.alloc(16);
  await h.fh.read(buf, 0, 16, 0);
  assert.deepEqual(buf, data.subarray(0, 16));
  h.release();
  await store.close();
});
