import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { digestOf } from '../oci/digest.ts';
import { LeaseStore, parseRfc3339 } from './leases.ts';
import { openTestDb, type TestDb, throwsKind } from './test-db.ts';

const NS = 'default';
let t: TestDb;
let leases: LeaseStore;
beforeEach(() => {
  t = openTestDb();
  leases = new LeaseStore(t.db);
});
afterEach(() => t.cleanup());

describe('LeaseStore', () => {
  it('creates, lists and deletes with containerd messages', async () => {
    // ctr's lease ids: <nanos>-<base64url of 3 bytes>, which may contain '-' and '_' anywhere.
    const id = '1700000000000000000-a_-b';
    const created = leases.create(NS, {
      id,
      labels: { 'containerd.io/gc.expire': '2030-01-01T00:00:00Z', empty: '' },
    });
    assert.deepEqual(created.labels, { 'containerd.io/gc.expire': '2030-01-01T00:00:00Z' });
    throwsKind(() => leases.create(NS, { id }), 'AlreadyExists', `lease "${id}": already exists`);
    throwsKind(() => leases.create(NS, { id: '' }), 'InvalidArgument', 'lease id must be provided');
    leases.create(NS, { id: 'b', labels: { team: 'x' } });
    leases.create('other', { id: 'c' });
    assert.deepEqual(
      (await leases.list(NS, [])).map((l) => l.id),
      [id, 'b'],
    );
    assert.deepEqual(
      (await leases.list(NS, ['labels.team==x'])).map((l) => l.id),
      ['b'],
    );
    assert.deepEqual(
      (await leases.list(NS, ['id~=^17'])).map((l) => l.id),
      [id],
    );
    throwsKind(
      () => leases.list(NS, ['id=b']),
      'InvalidArgument',
      'filters: parse error: [id >|=|< b]: unsupported operator "=": invalid argument: invalid argument',
    );
    leases.delete(NS, 'b');
    throwsKind(() => leases.delete(NS, 'b'), 'NotFound', 'lease "b": not found');
    throwsKind(() => leases.delete(NS, 'c'), 'NotFound', 'lease "c": not found');
  });

  it('holds resources of each type, in containerd order', async () => {
    leases.create(NS, { id: 'l' });
    const d = digestOf('x');
    leases.addResource(NS, 'l', { type: 'snapshots/overlayfs', id: 'sha256:chain' });
    leases.addResource(NS, 'l', { type: 'ingests', id: 'layer-1' });
    leases.addResource(NS, 'l', { type: 'content', id: d });
    leases.addResource(NS, 'l', { type: 'content', id: d }); // idempotent
    leases.addResource(NS, 'l', { type: 'images', id: 'img' });
    assert.deepEqual(leases.listResources(NS, 'l'), [
      { type: 'content', id: d },
      { type: 'images', id: 'img' },
      { type: 'ingests', id: 'layer-1' },
      { type: 'snapshots/overlayfs', id: 'sha256:chain' },
    ]);
    leases.deleteResource(NS, 'l', { type: 'ingests', id: 'layer-1' });
    leases.deleteResource(NS, 'l', { type: 'ingests', id: 'never-there' });
    assert.equal(leases.listResources(NS, 'l').length, 3);
    leases.delete(NS, 'l');
    leases.create(NS, { id: 'l' });
    assert.deepEqual(leases.listResources(NS, 'l'), [], 'resources went with the lease');
  });

  it('rejects bad resources as containerd does', async () => {
    leases.create(NS, { id: 'l' });
    throwsKind(
      () => leases.addResource(NS, 'l', { type: 'content', id: 'sha256:abc' }),
      'InvalidArgument',
      'invalid content resource id sha256:abc: invalid checksum digest length: invalid argument',
    );
    throwsKind(
      () => leases.addResource(NS, 'l', { type: 'content/x', id: digestOf('x') }),
      'InvalidArgument',
      'invalid resource type content/x: invalid argument',
    );
    throwsKind(
      () => leases.addResource(NS, 'l', { type: 'snapshots', id: 'k' }),
      'InvalidArgument',
      'invalid snapshot resource type snapshots: invalid argument',
    );
    throwsKind(
      () => leases.addResource(NS, 'l', { type: 'containers', id: 'k' }),
      'Unimplemented',
      'resource type containers not supported yet: not implemented',
    );
    throwsKind(
      () => leases.addResource(NS, 'missing', { type: 'content', id: digestOf('x') }),
      'NotFound',
      'lease "missing": not found',
    );
    throwsKind(() => leases.listResources(NS, 'missing'), 'NotFound', 'lease "missing": not found');
  });

  it('survives a restart', async () => {
    leases.create(NS, { id: 'keep', labels: { a: 'b' } });
    leases.addResource(NS, 'keep', { type: 'ingests', id: 'r' });
    const again = new LeaseStore(t.reopen());
    assert.deepEqual(
      (await again.list(NS, [])).map((l) => [l.id, l.labels]),
      [['keep', { a: 'b' }]],
    );
    assert.deepEqual(again.listResources(NS, 'keep'), [{ type: 'ingests', id: 'r' }]);
  });
});

describe('parseRfc3339', () => {
  it('parses Go RFC3339 times to nanoseconds', async () => {
    assert.equal(parseRfc3339('1970-01-01T00:00:01Z'), 1_000_000_000n);
    assert.equal(parseRfc3339('1970-01-01T00:00:01.5Z'), 1_500_000_000n);
    assert.equal(parseRfc3339('1970-01-01T00:00:00.000000001Z'), 1n);
    assert.equal(parseRfc3339('1970-01-01T01:00:00+01:00'), 0n);
    assert.equal(parseRfc3339('1969-12-31T23:00:00-01:00'), 0n);
    for (const bad of [
      '',
      'tomorrow',
      '2024-02-30T00:00:00Z',
      '2024-01-01 00:00:00Z',
      '2024-01-01T24:00:00Z',
      '2024-01-01T00:00:00',
    ]) {
      assert.equal(parseRfc3339(bad), undefined, bad);
    }
  });

  it('takes what Go 1.19 takes and refuses what it refuses, as containerd 1.6.20 expired leases', () => {
    // Each value was a lease's gc.expire on containerd 1.6.20 (Go 1.19.8): these expired at its next
    // collection, so Go parsed them.
    const at = (s: string) => parseRfc3339(s);
    assert.equal(at('1970-01-01T00:00:01,5Z'), 1_500_000_000n);
    assert.equal(at('1970-01-01T00:00:00.1234567891Z'), 123_456_789n);
    assert.equal(at('1970-01-01T00:00:00.123456789123456Z'), 123_456_789n);
    assert.equal(at('1970-01-01T1:00:00Z'), 3600n * 1_000_000_000n);
    assert.equal(at('1970-01-02T00:00:00+24:00'), 0n);
    assert.equal(at('1970-01-01T01:00:00+00:60'), 0n);
    assert.equal(at('1970-01-01T00:00:00-99:99'), (99n * 60n + 99n) * 60n * 1_000_000_000n);
    assert.equal(at('0000-02-29T00:00:00Z'), -62162121600n * 1_000_000_000n);
    // And these it kept: Go refused them.
    for (const bad of [
      '2000-01-01T00:00:00.Z',
      '2000-01-01t00:00:00Z',
      '2000-01-01T00:00:00z',
      '2000-01-01T00:00:00+0100',
      '2000-01-01T00:00:00,+01:00',
      '2000-1-01T00:00:00Z',
      '2000-01-01T00:0:00Z',
      '2000-01-01T00:00:0Z',
      '2000-01-01T00:00:00+1:00',
      '2000-01-01T00:00:60Z',
      '2000-13-01T00:00:00Z',
      '2000-01-00T00:00:00Z',
      '0001-02-29T00:00:00Z',
    ]) {
      assert.equal(at(bad), undefined, bad);
    }
  });
});
