import assert from 'node:assert/strict';
import { type FileHandle, readdir, readlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { removeTempDir, tempDir } from '../../test/helpers/tmp.ts';
import { isNotFound } from '../errors.ts';
import { type Digest, digestOf } from '../oci/digest.ts';
import { BlobHandles, type BlobHandlesOptions } from './handles.ts';
import { Layout } from './layout.ts';
import { ContentStore } from './store.ts';

let dir: string;
let store: ContentStore;

const newHandles = (opts?: BlobHandlesOptions) => {
  const layout = new Layout(dir);
  return new BlobHandles((d) => layout.blobPath(d), opts);
};

async function put(text: string): Promise<Digest> {
  const w = await store.writer(`ref-${text}`);
  await w.write(Buffer.from(text));
  const d = await w.commit();
  await w.close();
  return d;
}

/** File descriptors this process has open on blob files. */
async function openBlobFds(): Promise<number> {
  let n = 0;
  for (const fd of await readdir('/proc/self/fd')) {
    try {
      if ((await readlink(join('/proc/self/fd', fd))).startsWith(join(dir, 'blobs'))) n++;
    } catch {
      // closed while we looked
    }
  }
  return n;
}

async function readAll(h: { fh: FileHandle }, size: number): Promise<string> {
  const buf = Buffer.alloc(size);
  const { bytesRead } = await h.fh.read(buf, 0, size, 0);
  return buf.subarray(0, bytesRead).toString();
}

before(async () => {
  dir = await tempDir('content-handles');
  store = await ContentStore.open(dir);
});

after(async () => {
  await removeTempDir(dir);
});

test('a handle is reused while kept, and reads the blob', async () => {
  const handles = newHandles();
  const d = await put('hello');
  const a = await handles.acquire(d);
  const b = await handles.acquire(d);
  assert.equal(a.fh, b.fh, 'concurrent users share one handle');
  assert.equal(await readAll(a, 5), 'hello');
  a.release();
  b.release();
  const c = await handles.acquire(d);
  assert.equal(c.fh, a.fh, 'an idle handle is reused');
  c.release();
  await handles.close();
  assert.equal(await openBlobFds(), 0, 'close closes every idle handle');
});

test('a missing blob is NotFound and not cached', async () => {
  const handles = newHandles();
  const d = digestOf('never stored');
  await assert.rejects(
    handles.acquire(d),
    (err) => isNotFound(err) && /content digest .*: not found/.test(err.message),
  );
  await assert.rejects(handles.acquire(d), isNotFound);
  await handles.close();
});

test('at most maxIdle unused handles stay open', async () => {
  const handles = newHandles({ maxIdle: 2 });
  const ds = [await put('one'), await put('two'), await put('three'), await put('four')];
  for (const d of ds) (await handles.acquire(d)).release();
  // Evictions close asynchronously.
  for (let i = 0; i < 50 && (await openBlobFds()) > 2; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(await openBlobFds(), 2);
  await handles.close();
  assert.equal(await openBlobFds(), 0);
});

test('a handle in use is not closed by eviction or close, only on release', async () => {
  const handles = newHandles({ maxIdle: 0 });
  const d = await put('busy');
  const h = await handles.acquire(d);
  await handles.close();
  assert.equal(await readAll(h, 4), 'busy', 'still readable');
  h.release();
  for (let i = 0; i < 50 && (await openBlobFds()) > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(await openBlobFds(), 0);
  await assert.rejects(handles.acquire(d), isNotFound, 'a closed cache opens nothing');
});

test('a cached handle keeps reading after the GC unlinked the file', async () => {
  const handles = newHandles();
  const d = await put('unlinked');
  (await handles.acquire(d)).release();
  await unlink(new Layout(dir).blobPath(d));
  const h = await handles.acquire(d);
  assert.equal(await readAll(h, 8), 'unlinked');
  h.release();
  await handles.close();
});

test('a handle forgotten while in use is closed on release, not kept for the blob stored afresh', async () => {
  const handles = newHandles();
  const d = await put('fresh');
  // The file holds wrong bytes (a corrupt blob), and a reader has it open when it is deleted.
  const path = new Layout(dir).blobPath(d);
  await unlink(path);
  await writeFile(path, 'wrong');
  const old = await handles.acquire(d);
  handles.forget(d);
  await unlink(path);
  // Stored afresh with the right bytes; then the old reader lets go.
  await put('fresh');
  old.release();
  const h = await handles.acquire(d);
  assert.equal(await readAll(h, 5), 'fresh', 'the new file, not the handle of the deleted one');
  h.release();
  await handles.close();
  assert.equal(await openBlobFds(), 0);
});
