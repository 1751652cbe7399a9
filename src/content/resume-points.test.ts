import assert from 'node:assert/strict';
import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Digester, digestOf } from '../oci/digest.ts';
import { Layout } from './layout.ts';
import { ResumePoints } from './resume-points.ts';
import { ContentStore } from './store.ts';

const roots: string[] = [];
after(async () => {
  for (const r of roots) await rm(r, { recursive: true, force: true });
});

async function newStore(): Promise<{ store: ContentStore; root: string }> {
  const root = await mkdtemp(join(tmpdir(), 'strata-resume-'));
  roots.push(root);
  return { store: await ContentStore.open(root), root };
}

describe('ResumePoints', () => {
  it('gives a digester back once, only for the file state it was kept with', () => {
    const points = new ResumePoints(2);
    const d = new Digester();
    d.update(Buffer.from('abc'));
    const file = { ino: 7, size: 3, mtimeMs: 1000 };
    points.remember('r', d, file);
    assert.equal(points.take('r', { ...file, mtimeMs: 1001 }, 'sha256'), undefined);
    assert.equal(points.take('r', file, 'sha256'), undefined, 'taken (and dropped) by the first call');
    points.remember('r', d, file);
    assert.equal(points.take('r', file, 'sha512'), undefined);
    points.remember('r', d, file);
    assert.equal(points.take('r', file, 'sha256'), d);
    points.remember('r', d, { ...file, size: 4 }); // not the digester's size: not kept
    assert.equal(points.take('r', { ...file, size: 4 }, 'sha256'), undefined);
  });

  it('keeps at most its bound, dropping the oldest', () => {
    const points = new ResumePoints(2);
    const file = { ino: 1, size: 0, mtimeMs: 1 };
    for (const ref of ['a', 'b', 'c']) points.remember(ref, new Digester(), file);
    assert.equal(points.take('a', file, 'sha256'), undefined);
    assert.ok(points.take('b', file, 'sha256'));
    assert.ok(points.take('c', file, 'sha256'));
  });
});

describe('a resumed ingest', () => {
  it('goes on from the digest its last writer left, and re-hashes a file changed since', async () => {
    const { store, root } = await newStore();
    const first = Buffer.from('first part, ');
    const w1 = await store.writer('upload-1');
    await w1.write(first);
    await w1.close();
    const w2 = await store.writer('upload-1');
    assert.equal(w2.offset, first.length);
    await w2.write(Buffer.from('second part'));
    await w2.close();
    // Changed behind the store's back: the kept digest no longer holds and the file is hashed again.
    await appendFile(new Layout(root).ingestData('upload-1'), ', third part');
    const w3 = await store.writer('upload-1');
    const all = Buffer.from('first part, second part, third part');
    assert.equal(w3.offset, all.length);
    assert.equal(w3.digest(), digestOf(all));
    assert.equal(await w3.commit(all.length, digestOf(all)), digestOf(all));
    await store.close();
  });
});
