import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { ErrorKind } from '../errors.ts';
import { digestOf } from '../oci/digest.ts';
import { type ImageChange, type ImageInput, ImageStore } from './images.ts';
import { LeaseStore } from './leases.ts';
import { openTestDb, type TestDb, throwsKind } from './test-db.ts';

const NS = 'default';
const BLAB = 'application/vnd.oci.blab';

let t: TestDb;
let store: ImageStore;
beforeEach(() => {
  t = openTestDb();
  store = new ImageStore(t.db);
});
afterEach(() => t.cleanup());

// containerd's TestImagesCreateUpdateDelete, as data. The target digest is derived from the case name and
// the target size, so a size change means a new digest (and the compare-and-delete with the original
// target then fails with NotFound).
interface Shape {
  labels?: Record<string, string>;
  target: { size?: number; mediaType?: string; annotations?: Record<string, string> };
}
interface Case {
  name: string;
  original: Shape;
  createErr?: ErrorKind;
  input?: Shape & { name?: string };
  fieldPaths?: string[];
  expected?: Shape;
  updateErr?: ErrorKind;
  deleteErr?: ErrorKind;
}

const base = (): Shape => ({
  labels: { foo: 'bar', baz: 'boo' },
  target: { size: 10, mediaType: BLAB, annotations: { foo: 'bar', baz: 'boo' } },
});

const cases: Case[] = [
  {
    name: 'Touch',
    original: base(),
    input: {
      labels: { foo: 'bar', baz: 'boo' },
      target: { size: 10, mediaType: BLAB, annotations: { foo: 'bar' } },
    },
    expected: {
      labels: { foo: 'bar', baz: 'boo' },
      target: { size: 10, mediaType: BLAB, annotations: { foo: 'bar' } },
    },
  },
  {
    name: 'NoTarget',
    original: { labels: { foo: 'bar', baz: 'boo' }, target: {} },
    createErr: 'InvalidArgument',
  },
  {
    name: 'ReplaceLabels',
    original: base(),
    input: {
      labels: { for: 'bar', boo: 'boo' },
      target: { size: 10, mediaType: BLAB, annotations: { foo: 'bar' } },
    },
    expected: {
      labels: { for: 'bar', boo: 'boo' },
      target: { size: 10, mediaType: BLAB, annotations: { foo: 'bar' } },
    },
  },
  {
    name: 'ReplaceLabelsFieldPath',
    original: base(),
    input: {
      labels: { for: 'bar', boo: 'boo' },
      target: { size: 10, mediaType: `${BLAB}+ignored`, annotations: { not: 'bar', new: 'boo' } },
    },
    fieldPaths: ['labels'],
    expected: {
      labels: { for: 'bar', boo: 'boo' },
      target: { size: 10, mediaType: BLAB, annotations: { foo: 'bar', baz: 'boo' } },
    },
  },
  {
    name: 'ReplaceLabelsAnnotationsFieldPath',
    original: base(),
    input: {
      labels: { for: 'bar', boo: 'boo' },
      target: { size: 10, mediaType: `${BLAB}+ignored`, annotations: { foo: 'boo' } },
    },
    fieldPaths: ['annotations', 'labels'],
    expected: {
      labels: { for: 'bar', boo: 'boo' },
      target: { size: 10, mediaType: BLAB, annotations: { foo: 'boo' } },
    },
  },
  {
    name: 'ReplaceLabel',
    original: base(),
    input: {
      labels: { foo: 'baz', baz: 'bunk' },
      target: { size: 10, mediaType: `${BLAB}+ignored`, annotations: { foo: 'bar' } },
    },
    fieldPaths: ['labels.foo'],
    expected: {
      labels: { foo: 'baz', baz: 'boo' },
      target: { size: 10, mediaType: BLAB, annotations: { foo: 'bar', baz: 'boo' } },
    },
  },
  {
    name: 'ReplaceAnnotation',
    original: base(),
    input: {
      labels: { foo: 'baz', baz: 'bunk' },
      target: { size: 10, mediaType: `${BLAB}+ignored`, annotations: { foo: 'baz', baz: 'bunk' } },
    },
    fieldPaths: ['annotations.foo'],
    expected: {
      labels: { foo: 'bar', baz: 'boo' },
      target: { size: 10, mediaType: BLAB, annotations: { foo: 'baz', baz: 'boo' } },
    },
  },
  {
    name: 'ReplaceTargetTypeAndAnnotations',
    original: base(),
    input: { target: { size: 10, mediaType: `${BLAB}+replaced`, annotations: { fox: 'dog' } } },
    fieldPaths: ['target'],
    expected: {
      labels: { foo: 'bar', baz: 'boo' },
      target: { size: 10, mediaType: `${BLAB}+replaced`, annotations: { fox: 'dog' } },
    },
  },
  {
    name: 'ReplaceTargetFieldpath',
    original: base(),
    input: { target: { size: 20, mediaType: `${BLAB}+replaced`, annotations: { fox: 'dog' } } },
    fieldPaths: ['target'],
    expected: {
      labels: { foo: 'bar', baz: 'boo' },
      target: { size: 20, mediaType: `${BLAB}+replaced`, annotations: { fox: 'dog' } },
    },
    deleteErr: 'NotFound',
  },
  {
    name: 'ReplaceTarget',
    original: base(),
    input: { target: { size: 20, mediaType: `${BLAB}+replaced`, annotations: { fox: 'dog' } } },
    expected: {
      labels: {},
      target: { size: 20, mediaType: `${BLAB}+replaced`, annotations: { fox: 'dog' } },
    },
    deleteErr: 'NotFound',
  },
  {
    name: 'EmptySize',
    original: base(),
    input: {
      labels: { foo: 'bar', baz: 'boo' },
      target: { size: 0, mediaType: BLAB, annotations: { foo: 'bar' } },
    },
    updateErr: 'InvalidArgument',
  },
  {
    name: 'EmptySizeOnCreate',
    original: {
      labels: { foo: 'bar', baz: 'boo' },
      target: { mediaType: BLAB, annotations: { foo: 'bar' } },
    },
    createErr: 'InvalidArgument',
  },
  {
    name: 'EmptyMediaType',
    original: base(),
    input: { labels: { foo: 'bar', baz: 'boo' }, target: { size: 10 } },
    updateErr: 'InvalidArgument',
  },
  {
    name: 'EmptyMediaTypeOnCreate',
    original: { labels: { foo: 'bar', baz: 'boo' }, target: { size: 10 } },
    createErr: 'InvalidArgument',
  },
  {
    name: 'TryUpdateNameFail',
    original: {
      labels: { foo: 'bar', baz: 'boo' },
      target: { size: 10, mediaType: BLAB, annotations: { foo: 'bar' } },
    },
    input: {
      name: 'test should fail',
      labels: { foo: 'bar', baz: 'boo' },
      target: { size: 10, mediaType: BLAB, annotations: { foo: 'bar' } },
    },
    updateErr: 'NotFound',
  },
];

function build(name: string, shape: Shape, caseName: string): ImageInput {
  const size = shape.target.size ?? 0;
  return {
    name,
    labels: shape.labels,
    target: {
      mediaType: shape.target.mediaType,
      digest: digestOf(`${caseName}-${size}`),
      size: shape.target.size,
      annotations: shape.target.annotations,
    },
  };
}

describe('ImageStore: containerd create/update/delete table', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const original = build(c.name, c.original, c.name);
      if (c.createErr) {
        throwsKind(() => store.create(NS, original), c.createErr);
        throwsKind(() => store.get(NS, c.name), 'NotFound');
        return;
      }
      const created = store.create(NS, original);
      assert.equal(created.createdAtNs, created.updatedAtNs);
      assert.deepEqual(created.labels, original.labels);
      assert.deepEqual(created.target, { ...original.target });

      const input = build(c.input?.name ?? c.name, c.input!, c.name);
      if (c.updateErr) {
        throwsKind(() => store.update(NS, input, c.fieldPaths), c.updateErr);
        assert.deepEqual(store.get(NS, c.name), created, 'a failed update changes nothing');
        return;
      }
      const updated = store.update(NS, input, c.fieldPaths);
      const want = build(c.name, c.expected!, c.name);
      assert.deepEqual(updated.labels, want.labels ?? {});
      assert.deepEqual(updated.target, { ...want.target, annotations: want.target!.annotations ?? {} });
      assert.equal(updated.createdAtNs, created.createdAtNs);
      assert.ok(updated.updatedAtNs > created.createdAtNs, 'updated_at moves strictly forward');
      assert.deepEqual(store.get(NS, c.name), updated);

      if (c.deleteErr) {
        throwsKind(() => store.delete(NS, c.name, { target: original.target!.digest }), c.deleteErr);
        store.delete(NS, c.name);
      } else {
        store.delete(NS, c.name, { target: original.target!.digest });
      }
      throwsKind(() => store.get(NS, c.name), 'NotFound');
    });
  }
});

describe('ImageStore: list with filters (containerd TestImagesList)', () => {
  const names = ['image-0', 'image-1', 'image-2', 'image-3'];
  beforeEach(() => {
    for (const [i, name] of names.entries()) {
      store.create(NS, {
        name,
        labels: { namelabel: name, ...(i % 2 === 0 ? { even: 'true' } : { odd: 'true' }) },
        target: {
          size: 10,
          mediaType: 'application/vnd.containerd.test',
          digest: digestOf(name),
          annotations: { foo: 'bar' },
        },
      });
    }
  });

  const table: Array<[string, string[], string[]]> = [
    ['FullSet', [], names],
    ['FullSetFiltered', ['labels.even==true', 'labels.odd==true'], names],
    ['Even', ['labels.even==true'], ['image-0', 'image-2']],
    ['Odd', ['labels.odd==true'], ['image-1', 'image-3']],
    ['ByName', ['name==image-0'], ['image-0']],
    ['ByNameLabelEven', ['labels.namelabel==image-0,labels.even==true'], ['image-0']],
    ['ByMediaType', ['target.mediatype~=application/vnd.*'], names],
    ['ByAnnotation', ['annotations.foo==bar'], names],
    ['ByDigest', [`target.digest==${digestOf('image-3')}`], ['image-3']],
    ['Nothing', ['name==nope'], []],
  ];
  for (const [name, filters, want] of table) {
    it(name, async () => {
      assert.deepEqual(
        (await store.list(NS, filters)).map((i) => i.name),
        want,
      );
    });
  }

  it('deletes each once; the second delete is NotFound', async () => {
    for (const n of names) store.delete(NS, n);
    for (const n of names) throwsKind(() => store.delete(NS, n), 'NotFound', `image "${n}": not found`);
    assert.deepEqual(await store.list(NS, []), []);
  });

  it('wraps a filter syntax error twice, as containerd does', async () => {
    throwsKind(
      () => store.list(NS, ['name==foo', 'labels.foo-bar==x']),
      'InvalidArgument',
      'filters: parse error: [labels.foo >|-|< bar==x]: expected an operator ("=="|"!="|"~="): invalid argument: invalid argument',
    );
  });
});

describe('ImageStore: errors and edge cases', () => {
  const img = (name: string, extra: Partial<ImageInput> = {}): ImageInput => ({
    name,
    target: { mediaType: BLAB, digest: digestOf(name), size: 10 },
    ...extra,
  });

  it('gives containerd messages', async () => {
    store.create(NS, img('a'));
    throwsKind(() => store.create(NS, img('a')), 'AlreadyExists', 'image "a": already exists');
    throwsKind(() => store.get(NS, 'b'), 'NotFound', 'image "b": not found');
    throwsKind(() => store.update(NS, img('b')), 'NotFound', 'image "b": not found');
    throwsKind(() => store.create(NS, img('')), 'InvalidArgument', 'Image.Name required');
    throwsKind(() => store.update(NS, img('')), 'InvalidArgument', 'Image.Name required');
    for (const path of ['name', 'created_at', 'updated_at', 'target.digest', 'labelsx', 'annotation.x']) {
      throwsKind(
        () => store.update(NS, img('a'), [path]),
        'InvalidArgument',
        `cannot update "${path}" field on image "a": invalid argument`,
      );
    }
    const stored = store.get(NS, 'a').target.digest;
    throwsKind(
      () => store.delete(NS, 'a', { target: digestOf('other') }),
      'NotFound',
      `image "a" has target ${stored}, not ${digestOf('other')}: not found`,
    );
    store.delete(NS, 'a', { target: '' }); // an empty target is no condition
  });

  it('validates the target digest with go-digest messages', async () => {
    const bad: Array<[string, string]> = [
      ['', 'invalid checksum digest format'],
      ['sha256', 'invalid checksum digest format'],
      ['sha256:', 'invalid checksum digest format'],
      [':abc', 'invalid checksum digest format'],
      ['sha256:abc', 'invalid checksum digest length'],
      [`sha256:${'A'.repeat(64)}`, 'invalid checksum digest format'],
      [`md5:${'a'.repeat(32)}`, 'unsupported digest algorithm'],
      [`MD5:${'a'.repeat(32)}`, 'invalid checksum digest format'],
    ];
    for (const [digest, why] of bad) {
      throwsKind(
        () => store.create(NS, { name: 'x', target: { mediaType: BLAB, digest, size: 1 } }),
        'InvalidArgument',
        `Target.Digest ${JSON.stringify(digest)} invalid: ${why}: invalid argument`,
      );
    }
    throwsKind(
      () => store.create(NS, { name: 'x', target: { mediaType: BLAB, digest: digestOf('x'), size: -1 } }),
      'InvalidArgument',
      'Target.Size must be greater than zero: invalid argument',
    );
    throwsKind(
      () => store.create(NS, { name: 'x', target: { mediaType: '', digest: digestOf('x'), size: 1 } }),
      'InvalidArgument',
      'Target.MediaType must be set: invalid argument',
    );
    // Validation comes before the existence check.
    store.create(NS, img('x'));
    throwsKind(() => store.create(NS, { name: 'x', target: { digest: '' } }), 'InvalidArgument');
  });

  it('allows key+value of exactly 4096 bytes and rejects more', async () => {
    const ok = { ['k'.repeat(96)]: 'v'.repeat(4000) };
    store.create(NS, img('ok', { labels: ok }));
    const key = 'k'.repeat(100);
    throwsKind(
      () => store.create(NS, img('big', { labels: { [key]: 'v'.repeat(3997) } })),
      'InvalidArgument',
      `image.Labels: label key and value greater than maximum size (4096 bytes), key: ${'k'.repeat(10)}: invalid argument`,
    );
    // Multi-byte characters count in bytes.
    throwsKind(() => store.create(NS, img('mb', { labels: { k: 'é'.repeat(2048) } })), 'InvalidArgument');
    throwsKind(
      () => store.update(NS, img('ok', { labels: { [key]: 'v'.repeat(4000) } }), ['labels']),
      'InvalidArgument',
    );
  });

  it('drops empty label values and deletes labels through labels.<key> masks', async () => {
    const created = store.create(NS, img('a', { labels: { keep: '1', gone: '' } }));
    assert.deepEqual(created.labels, { keep: '1' });
    store.update(NS, img('a', { labels: { 'x.y/z': 'v' } }), ['labels.x.y/z']);
    assert.deepEqual(store.get(NS, 'a').labels, { keep: '1', 'x.y/z': 'v' });
    const after = store.update(NS, img('a', { labels: {} }), ['labels.keep', 'labels.absent']);
    assert.deepEqual(after.labels, { 'x.y/z': 'v' });
    const cleared = store.update(NS, img('a', { labels: { keep: '' } }), ['labels']);
    assert.deepEqual(cleared.labels, {});
  });

  it('keeps odd label keys as plain data', async () => {
    // JSON.parse makes `__proto__` an own key, as a protobuf map decoder may.
    const labels = JSON.parse('{"__proto__":"p","constructor":"c","":""}') as Record<string, string>;
    const created = store.create(NS, img('odd', { labels }));
    assert.deepEqual(Object.keys(created.labels).sort(), ['__proto__', 'constructor']);
    assert.equal(Object.getPrototypeOf(created.labels), Object.prototype);
    assert.equal((await store.list(NS, ['labels.__proto__==p'])).length, 1);
  });

  it('uses source_date_epoch for the timestamps when given', async () => {
    const when = new Date('2020-01-02T03:04:05.678Z');
    const created = store.create(NS, img('a'), { sourceDateEpoch: when });
    assert.deepEqual(created.createdAt, when);
    assert.deepEqual(created.updatedAt, when);
  });

  it('sorts by name bytes', async () => {
    for (const n of ['b', 'B', 'a/b', 'a', 'é', 'z']) store.create(NS, img(n));
    assert.deepEqual(
      (await store.list(NS, [])).map((i) => i.name),
      ['B', 'a', 'a/b', 'b', 'z', 'é'],
    );
  });

  it('isolates namespaces', async () => {
    store.create('ns1', img('same', { target: { mediaType: BLAB, digest: digestOf('one'), size: 1 } }));
    store.create('ns2', img('same', { target: { mediaType: BLAB, digest: digestOf('two'), size: 2 } }));
    assert.equal(store.get('ns1', 'same').target.digest, digestOf('one'));
    assert.equal(store.get('ns2', 'same').target.digest, digestOf('two'));
    store.delete('ns1', 'same');
    throwsKind(() => store.get('ns1', 'same'), 'NotFound');
    assert.equal((await store.list('ns2', [])).length, 1);
    assert.deepEqual(await store.list('ns3', []), []);
  });

  it('survives a restart', async () => {
    const created = store.create(NS, img('persist', { labels: { a: 'b' } }));
    const reopened = new ImageStore(t.reopen());
    assert.deepEqual(reopened.get(NS, 'persist'), created);
  });

  it('adds an expiring image to the request lease', async () => {
    const leases = new LeaseStore(t.db);
    leases.create(NS, { id: 'l1' });
    const labels = { 'containerd.io/gc.expire': '2030-01-01T00:00:00Z' };
    store.create(NS, img('leased', { labels }), { lease: 'l1' });
    store.create(NS, img('not-leased'), { lease: 'l1' });
    assert.deepEqual(leases.listResources(NS, 'l1'), [{ type: 'images', id: 'leased' }]);
    throwsKind(
      () => store.create(NS, img('x', { labels }), { lease: 'nope' }),
      'NotFound',
      'lease does not exist: not found',
    );
    throwsKind(() => store.get(NS, 'x'), 'NotFound');
    store.delete(NS, 'leased', { lease: 'l1' });
    assert.deepEqual(leases.listResources(NS, 'l1'), []);
  });
});

describe('ImageStore: put (the first image API)', () => {
  const target = (seed: string, size = 10) => ({ mediaType: BLAB, digest: digestOf(seed), size });

  it('creates an image with no labels, created and updated at the same time', async () => {
    const put = store.put(NS, { name: 'p', target: target('one') });
    assert.deepEqual(put.labels, {});
    assert.deepEqual(put.target, { ...target('one'), annotations: {} });
    assert.equal(put.createdAtNs, put.updatedAtNs);
    assert.deepEqual(store.get(NS, 'p'), put);
  });

  it('points an existing image at a new target, keeping labels and creation time', async () => {
    const created = store.create(NS, {
      name: 'p',
      labels: { team: 'x' },
      target: { ...target('one'), annotations: { note: 'about one' } },
    });
    const same = store.put(NS, { name: 'p', target: target('one') });
    assert.deepEqual(same.labels, { team: 'x' });
    assert.deepEqual(same.target.annotations, { note: 'about one' }, 'same content, same annotations');
    assert.equal(same.createdAtNs, created.createdAtNs);
    assert.ok(same.updatedAtNs > created.updatedAtNs);

    const moved = store.put(NS, { name: 'p', target: target('two', 20) });
    assert.deepEqual(moved.target, { ...target('two', 20), annotations: {} }, 'annotations described one');
    assert.deepEqual(moved.labels, { team: 'x' });
    assert.equal(moved.createdAtNs, created.createdAtNs);
    assert.ok(moved.updatedAtNs > same.updatedAtNs);
  });

  it('validates as create does and changes nothing on bad input', async () => {
    throwsKind(
      () => store.put(NS, { name: '', target: target('one') }),
      'InvalidArgument',
      'Image.Name required',
    );
    throwsKind(() => store.put(NS, { name: 'p' }), 'InvalidArgument');
    throwsKind(() => store.put(NS, { name: 'p', target: target('one', 0) }), 'InvalidArgument');
    throwsKind(
      () => store.put(NS, { name: 'p', target: { ...target('one'), mediaType: '' } }),
      'InvalidArgument',
      'Target.MediaType must be set: invalid argument',
    );
    throwsKind(() => store.get(NS, 'p'), 'NotFound');
    const first = store.put(NS, { name: 'p', target: target('one') });
    throwsKind(
      () => store.put(NS, { name: 'p', target: { ...target('two'), digest: 'sha256:nope' } }),
      'InvalidArgument',
    );
    assert.deepEqual(store.get(NS, 'p'), first);
  });

  it('adds an expiring image to the request lease', async () => {
    const leases = new LeaseStore(t.db);
    leases.create(NS, { id: 'l1' });
    store.create(NS, {
      name: 'p',
      labels: { 'containerd.io/gc.expire': '2030-01-01T00:00:00Z' },
      target: target('one'),
    });
    store.put(NS, { name: 'p', target: target('two') }, { lease: 'l1' });
    assert.deepEqual(leases.listResources(NS, 'l1'), [{ type: 'images', id: 'p' }]);
  });
});

describe('listByNamePrefix', () => {
  const target = (seed: string) => ({ mediaType: BLAB, digest: digestOf(seed), size: 10 });
  it('reads the names with the prefix, in order, and no neighbour on either side', () => {
    const names = ['ap:1', 'app/sub:1', 'app9:x', 'app:1', 'app:2', 'app;', 'app@sha256:aa', 'other:app:1'];
    for (const name of names) store.create(NS, { name, target: target(name) });
    store.create('elsewhere', { name: 'app:3', target: target('app:3') });
    const of = (prefix: string) => store.listByNamePrefix(NS, prefix).map((r) => r.name);
    assert.deepEqual(of('app:'), ['app:1', 'app:2']);
    assert.deepEqual(of('app@'), ['app@sha256:aa']);
    assert.deepEqual(of('app'), ['app/sub:1', 'app9:x', 'app:1', 'app:2', 'app;', 'app@sha256:aa']);
    assert.deepEqual(of('zzz'), []);
    assert.deepEqual(store.listByNamePrefix(NS, 'app:')[0]?.target, store.get(NS, 'app:1').target);
    throwsKind(() => store.listByNamePrefix(NS, ''), 'InvalidArgument');
    throwsKind(() => store.listByNamePrefix(NS, 'café'), 'InvalidArgument');
  });
});

describe('ImageStore: changes told to onChange', () => {
  const target = (seed: string) => ({ mediaType: BLAB, digest: digestOf(seed), size: 10 });
  it('tells every committed write, whichever method made it, once it is committed', () => {
    const seen: string[] = [];
    const told: ImageChange[] = [];
    const s = new ImageStore(t.db, {
      onChange: (c) => {
        // Told after the commit: the change is there for whoever looks.
        seen.push(c.kind === 'delete' ? 'gone' : `${Object.keys(s.get(c.namespace, c.name).labels)}`);
        told.push(c);
      },
    });
    s.create(NS, { name: 'a', labels: { x: '1' }, target: target('one') });
    s.update(NS, { name: 'a', labels: { y: '2' } }, ['labels']);
    s.put(NS, { name: 'a', target: target('two') });
    s.put(NS, { name: 'b', target: target('two') });
    s.delete(NS, 'a');
    assert.deepEqual(told, [
      { namespace: NS, kind: 'create', name: 'a', labels: { x: '1' } },
      { namespace: NS, kind: 'update', name: 'a', labels: { y: '2' } },
      { namespace: NS, kind: 'update', name: 'a', labels: { y: '2' } },
      { namespace: NS, kind: 'create', name: 'b', labels: {} },
      { namespace: NS, kind: 'delete', name: 'a', labels: {} },
    ]);
    assert.deepEqual(seen, ['x', 'y', 'y', '', 'gone']);
  });

  it('tells a write inside a larger one after that commits, and nothing that was rolled back', () => {
    const told: string[] = [];
    const s = new ImageStore(t.db, { onChange: (c) => told.push(`${c.kind} ${c.name}`) });
    t.db.write(() => {
      s.create(NS, { name: 'kept', target: target('one') });
      // Refused (it exists): the savepoint rolls back, the outer write goes on.
      assert.throws(() => s.create(NS, { name: 'kept', target: target('one') }));
      assert.deepEqual(told, []);
    });
    assert.deepEqual(told, ['create kept']);
    assert.throws(() =>
      t.db.write(() => {
        s.create(NS, { name: 'undone', target: target('two') });
        s.delete(NS, 'kept');
        throw new Error('rolled back');
      }),
    );
    assert.deepEqual(told, ['create kept']);
    assert.deepEqual(
      s.listByNamePrefix(NS, 'kept').map((r) => r.name),
      ['kept'],
    );
    // Failed writes tell nothing.
    assert.throws(() => s.delete(NS, 'missing'));
    assert.throws(() => s.update(NS, { name: 'missing', target: target('x') }));
    assert.deepEqual(told, ['create kept']);
  });
});
