import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { errorKind } from '../errors.ts';
import { collectGarbage } from './gc.ts';
import { LeaseStore } from './leases.ts';
import { MAX_SNAPSHOT_KEY_BYTES, SnapshotStore } from './snapshots.ts';
import { openTestDb, type TestDb } from './test-db.ts';

const NS = 'default';
const fails = (fn: () => unknown, kind: string, message?: string | RegExp) =>
  assert.throws(
    fn,
    (err: Error) =>
      errorKind(err) === kind &&
      (message === undefined ||
        (typeof message === 'string' ? err.message === message : message.test(err.message))),
  );

describe('SnapshotStore', () => {
  let t: TestDb;
  let s: SnapshotStore;
  const active = (key: string, parent = '', lease?: string) =>
    s.create(NS, {
      key,
      parent,
      kind: 'active',
      labels: {},
      backingId: `id-${key}`,
      ...(lease ? { lease } : {}),
    });
  const usage = { size: 4096, inodes: 3 };

  beforeEach(() => {
    t = openTestDb();
    s = new SnapshotStore(t.db, 'native');
  });
  afterEach(() => t.cleanup());

  test('keys and names share one space; parents must be committed', async () => {
    active('a');
    fails(() => active('a'), 'AlreadyExists', 'snapshot "a": already exists');
    fails(() => active('b', 'a'), 'InvalidArgument');
    s.commit(NS, { name: 'base', key: 'a', labels: {}, usage });
    fails(() => active('base'), 'AlreadyExists');
    const { record, parent } = active('b', 'base');
    assert.equal(record.parent, 'base');
    assert.equal(parent?.backingId, 'id-a', 'a commit keeps the backing directory');
    assert.deepEqual(s.stat(NS, 'base').usage, usage);
    assert.deepEqual(s.stat(NS, 'b').usage, { size: 0, inodes: 0 });
    fails(
      () => s.remove(NS, 'base'),
      'FailedPrecondition',
      'cannot remove snapshot with child: failed precondition',
    );
    s.remove(NS, 'b');
    s.remove(NS, 'base');
    assert.equal(s.get(NS, 'base'), undefined);
  });

  test('keys and names are bounded as containerd’s bolt keys are', async () => {
    const long = 'k'.repeat(MAX_SNAPSHOT_KEY_BYTES + 1);
    fails(() => active(long), 'InvalidArgument', /^snapshot key too large: 32769 bytes/);
    active('k'.repeat(MAX_SNAPSHOT_KEY_BYTES));
    active('short');
    fails(
      () => s.commit(NS, { name: long, key: 'short', labels: {}, usage }),
      'InvalidArgument',
      /^snapshot name too large/,
    );
  });

  test('views: only those without a parent own a directory', async () => {
    active('a');
    s.commit(NS, { name: 'base', key: 'a', labels: {}, usage });
    s.create(NS, { key: 'v', parent: 'base', kind: 'view', labels: {}, backingId: 'id-v' });
    s.create(NS, { key: 'v0', parent: '', kind: 'view', labels: {}, backingId: 'id-v0' });
    assert.equal(s.byBackingId(NS, 'id-v'), undefined);
    assert.equal(s.byBackingId(NS, 'id-v0')?.name, 'v0');
    assert.equal(s.byBackingId(NS, 'id-a')?.name, 'base');
    assert.equal(s.byBackingId('other', 'id-a'), undefined);
    assert.deepEqual([...s.backingIds()].sort(), ['id-a', 'id-v', 'id-v0']);
    fails(() => s.commit(NS, { name: 'x', key: 'v', labels: {}, usage }), 'FailedPrecondition');
  });

  test('forget undoes only the record it made', async () => {
    active('a');
    s.forget(NS, 'a', 'some-other-id');
    assert.ok(s.get(NS, 'a'));
    s.forget(NS, 'a', 'id-a');
    assert.equal(s.get(NS, 'a'), undefined);
  });

  test('leases follow the key through commit and remove; GC takes what nothing holds', async () => {
    const leases = new LeaseStore(t.db);
    leases.create(NS, { id: 'l', labels: {} });
    fails(() => active('a', '', 'missing'), 'NotFound', 'lease does not exist: not found');
    active('a', '', 'l');
    assert.deepEqual(leases.listResources(NS, 'l'), [{ type: 'snapshots/native', id: 'a' }]);
    s.commit(NS, { name: 'base', key: 'a', labels: {}, usage, lease: 'l' });
    assert.deepEqual(leases.listResources(NS, 'l'), [{ type: 'snapshots/native', id: 'base' }]);
    active('child', 'base');
    // The unleased child goes; base stays for its lease.
    const first = collectGarbage(t.db);
    assert.deepEqual(first.snapshots, [{ namespace: NS, snapshotter: 'native', key: 'child' }]);
    leases.delete(NS, 'l');
    assert.deepEqual(
      collectGarbage(t.db).snapshots.map((x) => x.key),
      ['base'],
    );
  });

  test('labels: validation, empty values dropped, update masks', async () => {
    fails(
      () =>
        s.create(NS, {
          key: 'k',
          parent: '',
          kind: 'active',
          labels: { x: 'y'.repeat(4096) },
          backingId: 'i',
        }),
      'InvalidArgument',
    );
    s.create(NS, { key: 'k', parent: '', kind: 'active', labels: { a: '1', empty: '' }, backingId: 'i' });
    assert.deepEqual(s.stat(NS, 'k').labels, { a: '1' });
    assert.deepEqual(s.update(NS, { name: 'k', labels: { b: '2' } }, ['labels.b']).labels, {
      a: '1',
      b: '2',
    });
    assert.deepEqual(s.update(NS, { name: 'k', labels: {} }, ['labels.a']).labels, { b: '2' });
    assert.deepEqual(s.update(NS, { name: 'k', labels: { c: '3' } }, []).labels, { c: '3' });
    fails(() => s.update(NS, { name: 'k', labels: {} }, ['kind']), 'InvalidArgument');
    fails(() => s.update(NS, { name: '', labels: {} }, []), 'InvalidArgument');
    fails(
      () => s.update(NS, { name: 'nope', labels: {} }, []),
      'NotFound',
      'snapshot nope does not exist: not found',
    );
  });

  test('list filters by kind, name, parent and labels, in byte order', async () => {
    active('b');
    active('a');
    s.commit(NS, { name: 'Z', key: 'a', labels: { x: '1' }, usage });
    active('c', 'Z');
    const names = async (f: string[]) => (await s.list(NS, f)).map((r) => r.name);
    assert.deepEqual(await names([]), ['Z', 'b', 'c']);
    assert.deepEqual(await names(['kind==active']), ['b', 'c']);
    assert.deepEqual(await names(['parent==Z']), ['c']);
    assert.deepEqual(await names(['labels.x==1']), ['Z']);
    assert.deepEqual(await names(['labels.x']), ['Z']);
    fails(() => s.list(NS, ['kind==']), 'InvalidArgument');
  });
});

describe('schema version 5', () => {
  test('numbers the snapshots recorded before in the order they were made, per namespace and snapshotter', () => {
    const t = openTestDb();
    try {
      const add = t.db.sql.prepare(
        `INSERT INTO snapshots (namespace, snapshotter, key, kind, created_at, updated_at, backing_id)
         VALUES (?, ?, ?, 'committed', ?, ?, ?)`,
      );
      t.db.write(() => {
        t.db.ensureNamespace('a');
        t.db.ensureNamespace('b');
        // [namespace, snapshotter, key, made at]: ties in time go by key.
        for (const [ns, sn, key, at] of [
          ['a', 'native', 'third', 30],
          ['a', 'native', 'first', 10],
          ['a', 'native', 'second-y', 20],
          ['a', 'native', 'second-x', 20],
          ['a', 'overlayfs', 'only', 50],
          ['b', 'native', 'one', 5],
        ] as const) {
          add.run(ns, sn, key, at, at, `id-${ns}-${sn}-${key}`);
        }
      });
      t.stepBackTo(4); // as a database written before the sequence is
      const db = t.reopen();
      const seqs = db.sql
        .prepare(
          'SELECT namespace, snapshotter, key, seq FROM snapshots ORDER BY namespace, snapshotter, seq',
        )
        .all()
        .map((r) => {
          const { namespace, snapshotter, key, seq } = r as Record<string, unknown>;
          return `${namespace}/${snapshotter}/${seq}/${key}`;
        });
      assert.deepEqual(seqs, [
        'a/native/1/first',
        'a/native/2/second-x',
        'a/native/3/second-y',
        'a/native/4/third',
        'a/overlayfs/1/only',
        'b/native/1/one',
      ]);
      const last = db.sql
        .prepare(
          'SELECT namespace, snapshotter, last FROM snapshot_sequences ORDER BY namespace, snapshotter',
        )
        .all()
        .map((r) => Object.values(r as Record<string, unknown>).join('/'));
      assert.deepEqual(last, ['a/native/4', 'a/overlayfs/1', 'b/native/1']);
    } finally {
      t.cleanup();
    }
  });
});
