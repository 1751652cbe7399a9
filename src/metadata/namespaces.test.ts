import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { errorKind } from '../errors.ts';
import type { Digest } from '../oci/digest.ts';
import { ContentMeta } from './content-labels.ts';
import { ImageStore } from './images.ts';
import { LeaseStore } from './leases.ts';
import { NamespaceStore } from './namespaces.ts';
import { openTestDb, type TestDb } from './test-db.ts';

let t: TestDb;
let store: NamespaceStore;
beforeEach(() => {
  t = openTestDb();
  store = new NamespaceStore(t.db);
});
afterEach(() => t.cleanup());

const kindOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (err) {
    return errorKind(err) ?? 'unclassified';
  }
  return undefined;
};

const digest = `sha256:${'c'.repeat(64)}` as Digest;
const image = { name: 'img', target: { mediaType: 'application/x', digest, size: 1 } };

describe('NamespaceStore', () => {
  it('answers get for a namespace nobody created, with no labels', async () => {
    assert.deepEqual(store.get('ghost'), { name: 'ghost', labels: {} });
    assert.deepEqual(store.list(), []);
  });

  it('creates once, with validated labels; empty values are not stored', async () => {
    assert.deepEqual(store.create('a', { x: '1', gone: '' }), { name: 'a', labels: { x: '1' } });
    assert.equal(
      kindOf(() => store.create('a')),
      'AlreadyExists',
    );
    assert.throws(() => store.create('a'), { message: 'namespace "a": already exists' });
    assert.throws(
      () => store.create('b', { k: 'v'.repeat(4096) }),
      /^InvalidArgumentError: namespace\.Labels: label key/,
    );
    assert.deepEqual(
      store.list().map((n) => n.name),
      ['a'],
    );
  });

  it('lists namespaces that writes created implicitly, by name', async () => {
    new ImageStore(t.db).create('zeta', image);
    new LeaseStore(t.db).create('alpha', { id: 'l' });
    store.create('mid');
    assert.deepEqual(
      store.list().map((n) => n.name),
      ['alpha', 'mid', 'zeta'],
    );
  });

  it('updates labels by key, replaces them without a mask, and creates a missing namespace', async () => {
    store.create('a', { x: '1', y: '2' });
    assert.deepEqual(store.update('a', { x: '9', z: '3' }, ['labels.x']).labels, { x: '9', y: '2' });
    assert.deepEqual(store.update('a', {}, ['labels.y']).labels, { x: '9' });
    assert.deepEqual(store.update('a', { only: 'me' }).labels, { only: 'me' });
    assert.throws(() => store.update('a', {}, ['labels']), {
      message: 'cannot update "labels" field: invalid argument',
    });
    assert.deepEqual(store.update('new', { k: 'v' }, ['labels.k']).labels, { k: 'v' });
    assert.deepEqual(
      store.list().map((n) => n.name),
      ['a', 'new'],
    );
  });

  it('refuses to delete a namespace holding images or blobs, naming them', async () => {
    new ImageStore(t.db).create('busy', image);
    new ContentMeta(t.db).add('busy', digest, 1);
    assert.equal(
      kindOf(() => store.delete('busy')),
      'FailedPrecondition',
    );
    assert.throws(() => store.delete('busy'), {
      message: 'namespace "busy" must be empty, but it still has images, blobs: failed precondition',
    });
    new ImageStore(t.db).delete('busy', 'img');
    assert.throws(() => store.delete('busy'), /still has blobs:/);
  });

  it('deletes an empty namespace with its leases and ingests; a missing one is NotFound', async () => {
    const leases = new LeaseStore(t.db);
    leases.create('done', { id: 'l1' });
    leases.addResource('done', 'l1', { type: 'content', id: digest });
    t.db.sql
      .prepare('INSERT INTO ingests (namespace, ref, created_at) VALUES (?, ?, ?)')
      .run('done', 'layer-x', t.db.clock());
    store.delete('done');
    const ingests = t.db.sql.prepare('SELECT COUNT(*) AS n FROM ingests').get() as { n: bigint };
    assert.equal(ingests.n, 0n);
    assert.deepEqual(await leases.list('done', []), []);
    const left = t.db.sql.prepare('SELECT COUNT(*) AS n FROM lease_resources').get() as { n: bigint };
    assert.equal(left.n, 0n);
    assert.equal(
      kindOf(() => store.delete('done')),
      'NotFound',
    );
    assert.throws(() => store.delete('done'), { message: 'namespace "done": not found' });
  });
});
