import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { digestOf } from '../oci/digest.ts';
import { ContentMeta } from './content-labels.ts';
import { LeaseStore } from './leases.ts';
import { openTestDb, type TestDb, throwsKind } from './test-db.ts';

const NS = 'default';
let t: TestDb;
let meta: ContentMeta;
beforeEach(() => {
  t = openTestDb();
  meta = new ContentMeta(t.db);
});
afterEach(() => t.cleanup());

const d1 = digestOf('one');
const d2 = digestOf('two');

describe('ContentMeta', () => {
  it('adds, reads and refuses duplicates per namespace', async () => {
    const info = meta.add(NS, d1, 3, { a: '1', empty: '' });
    assert.deepEqual(info.labels, { a: '1' });
    assert.equal(info.size, 3);
    assert.equal(info.createdAtNs, info.updatedAtNs);
    assert.deepEqual(meta.info(NS, d1), info);
    throwsKind(() => meta.add(NS, d1, 3), 'AlreadyExists', `content ${d1}: already exists`);
    // Another namespace sees nothing until it links the blob itself.
    throwsKind(() => meta.info('other', d1), 'NotFound', `content digest ${d1}: not found`);
    assert.equal(meta.sizeAnywhere(d1), 3);
    meta.add('other', d1, 3);
    assert.deepEqual(meta.holders(d1), ['default', 'other']);
  });

  it('validates request digests with containerd messages', async () => {
    throwsKind(() => meta.info(NS, 'sha256:nope'), 'InvalidArgument', '"sha256:nope" failed validation');
    throwsKind(() => meta.update(NS, { digest: '' }), 'InvalidArgument', '"" failed validation');
    throwsKind(() => meta.remove(NS, 'sha256:abc'), 'InvalidArgument', 'invalid checksum digest length');
    throwsKind(() => meta.remove(NS, d2), 'NotFound', `content digest ${d2}: not found`);
  });

  it('updates labels as containerd does: masks labels and labels.<key>, empty mask replaces', async () => {
    meta.add(NS, d1, 3, { k1: 'v1', k2: 'v2', k3: 'v3' });
    const full = meta.update(NS, { digest: d1, labels: { k1: 'x' } });
    assert.deepEqual(full.labels, { k1: 'x' });
    assert.ok(full.updatedAtNs > full.createdAtNs);
    meta.update(NS, { digest: d1, labels: { k1: 'a', k2: 'b', k3: 'c' } }, ['labels']);
    const partial = meta.update(NS, { digest: d1, labels: { k1: 'new', k2: 'ignored' } }, [
      'labels.k3',
      'labels.k1',
    ]);
    assert.deepEqual(partial.labels, { k1: 'new', k2: 'b' });
    const gcLabel = 'containerd.io/gc.ref.content.l.0';
    const withRef = meta.update(NS, { digest: d1, labels: { [gcLabel]: d2 } }, [`labels.${gcLabel}`]);
    assert.equal(withRef.labels[gcLabel], d2);
    for (const path of ['size', 'digest', 'created_at', 'annotations']) {
      throwsKind(
        () => meta.update(NS, { digest: d1, labels: {} }, [path]),
        'InvalidArgument',
        `cannot update "${path}" field on content info "${d1}": invalid argument`,
      );
    }
    throwsKind(
      () => meta.update(NS, { digest: d1, labels: { k: 'v'.repeat(4096) } }, ['labels.k']),
      'InvalidArgument',
      'info.Labels: label key and value greater than maximum size (4096 bytes), key: k: invalid argument',
    );
    throwsKind(
      () => meta.update(NS, { digest: d2, labels: {} }),
      'NotFound',
      `content digest ${d2}: not found`,
    );
  });

  it('lists in digest order with filters; parse errors are wrapped once', async () => {
    meta.add(NS, d2, 2, { kind: 'layer' });
    meta.add(NS, d1, 1, { kind: 'config', 'containerd.io/gc.root': 'yes' });
    const all = (await meta.list(NS, [])).map((i) => i.digest);
    assert.deepEqual(all, [d1, d2].sort());
    assert.deepEqual(
      (await meta.list(NS, ['labels.kind==layer'])).map((i) => i.digest),
      [d2],
    );
    assert.deepEqual(
      (await meta.list(NS, ['labels."containerd.io/gc.root"'])).map((i) => i.digest),
      [d1],
    );
    assert.deepEqual(
      (await meta.list(NS, [`digest==${d1}`, 'labels.kind~=^lay'])).map((i) => i.digest),
      [d1, d2].sort(),
    );
    throwsKind(
      () => meta.list(NS, ['labels.containerd.io/gc.root']),
      'InvalidArgument',
      'filters: parse error: [labels.containerd.io >|/|< gc.root]: quoted literal not terminated: invalid argument',
    );
    assert.deepEqual(await meta.list('empty', []), []);
  });

  it('removes from the namespace only and marks the database dirty', async () => {
    meta.add(NS, d1, 1);
    meta.add('other', d1, 1);
    const before = t.db.dirty;
    meta.remove(NS, d1);
    assert.equal(t.db.dirty, before + 1);
    throwsKind(() => meta.info(NS, d1), 'NotFound');
    assert.equal(meta.info('other', d1).size, 1);
    assert.deepEqual(meta.holders(d1), ['other']);
  });

  it('attaches to and detaches from the request lease', async () => {
    const leases = new LeaseStore(t.db);
    leases.create(NS, { id: 'pull' });
    meta.add(NS, d1, 1, {}, { lease: 'pull' });
    assert.deepEqual(leases.listResources(NS, 'pull'), [{ type: 'content', id: d1 }]);
    throwsKind(
      () => meta.add(NS, d2, 1, {}, { lease: 'gone' }),
      'NotFound',
      'lease does not exist: not found',
    );
    assert.equal(meta.has(NS, d2), false, 'the failed add left nothing behind');
    meta.remove(NS, d1, { lease: 'pull' });
    assert.deepEqual(leases.listResources(NS, 'pull'), []);
    meta.add(NS, d1, 1);
    meta.remove(NS, d1, { lease: 'gone' }); // removing from a missing lease is no error, as in containerd
  });

  it('survives a restart', async () => {
    const info = meta.add(NS, d1, 7, { a: 'b' });
    const again = new ContentMeta(t.reopen());
    assert.deepEqual(again.info(NS, d1), info);
  });
});
