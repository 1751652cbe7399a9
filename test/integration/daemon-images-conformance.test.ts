// Images service conformance over gRPC against a real `strata daemon`: containerd's metadata image store
// table cases (core/metadata/images_test.go) plus the edge cases its code implies, each asserting the
// gRPC code and the stored result. Every test works in a namespace of its own.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import { type Image, Images } from '../../src/api/gen/containerd/services/images/v1/images_pb.ts';
import { Leases } from '../../src/api/gen/containerd/services/leases/v1/leases_pb.ts';
import { callUnary, metadataWith } from '../../src/api/grpc/client.ts';
import { startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import { expectCode } from '../helpers/grpc-assert.ts';

/** The plain shape of an image request (assignable to the generated init type). */
interface ImageInit {
  name?: string;
  labels?: Record<string, string>;
  target?: { mediaType?: string; digest?: string; size?: bigint; annotations?: Record<string, string> };
  createdAt?: { seconds: bigint; nanos: number };
  updatedAt?: { seconds: bigint; nanos: number };
}

const digestOfString = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`;

/** Go's zero time.Time as ctr puts it on the wire. */
const GO_ZERO = { seconds: -62135596800n, nanos: 0 };

const nanosOf = (ts: Image['createdAt']): bigint => {
  assert.ok(ts, 'timestamp set');
  return ts.seconds * 1_000_000_000n + BigInt(ts.nanos);
};

describe('Images service conformance', () => {
  let daemon: TestDaemon;
  let client: grpc.Client;
  let seq = 0;

  before(async () => {
    daemon = await startDaemon();
    client = daemon.client();
  });
  after(async () => {
    client?.close();
    await daemon?.stop();
  });

  /** A namespace of its own per test, so cases never see each other's images. */
  const fresh = () => {
    const ns = `conf-${++seq}`;
    const md = metadataWith({ 'containerd-namespace': ns });
    return {
      ns,
      md,
      get: (name: string) => callUnary(client, Images.method.get, { name }, { metadata: md }),
      list: (...filters: string[]) => callUnary(client, Images.method.list, { filters }, { metadata: md }),
      create: (image: ImageInit, extra?: grpc.Metadata) =>
        callUnary(client, Images.method.create, { image }, { metadata: extra ?? md }),
      update: (image: ImageInit, paths?: string[], extra?: grpc.Metadata) =>
        callUnary(
          client,
          Images.method.update,
          { image, ...(paths && { updateMask: { paths } }) },
          { metadata: extra ?? md },
        ),
      remove: (name: string, opts: { target?: string; sync?: boolean } = {}) =>
        callUnary(
          client,
          Images.method.delete,
          {
            name,
            sync: opts.sync ?? false,
            ...(opts.target !== undefined && { target: { digest: opts.target } }),
          },
          { metadata: md },
        ),
    };
  };

  // containerd's imageBase(), with the digest derived from the case name as its test does.
  const base = (name: string): ImageInit => ({
    name: 'image',
    labels: { foo: 'bar', baz: 'boo' },
    target: {
      size: 10n,
      mediaType: 'application/vnd.oci.blab',
      digest: digestOfString(name),
      annotations: { foo: 'bar' },
    },
  });

  interface UpdateCase {
    name: string;
    input: (orig: ImageInit) => ImageInit;
    paths?: string[];
    expected?: (orig: ImageInit) => ImageInit;
    /** Error code of the update, when it must fail. */
    code?: grpc.status;
    details?: RegExp;
    /** Delete with the original target afterwards is NotFound (the digest changed). */
    targetChanged?: boolean;
  }

  const withTarget = (img: ImageInit, t: Partial<NonNullable<ImageInit['target']>>): ImageInit => ({
    ...img,
    target: { ...img.target, ...t },
  });

  const updateCases: UpdateCase[] = [
    { name: 'Touch', input: (o) => o, expected: (o) => o },
    {
      name: 'ReplaceLabels',
      input: (o) => ({ ...o, labels: { for: 'bar', boo: 'boo' } }),
      expected: (o) => ({ ...o, labels: { for: 'bar', boo: 'boo' } }),
    },
    {
      name: 'ReplaceLabelsFieldPath',
      paths: ['labels'],
      // Target changes in the request are ignored under this mask.
      input: (o) =>
        withTarget(
          { ...o, labels: { for: 'bar', boo: 'boo' } },
          { size: 20n, mediaType: 'application/vnd.x' },
        ),
      expected: (o) => ({ ...o, labels: { for: 'bar', boo: 'boo' } }),
    },
    {
      name: 'ReplaceLabelsAnnotationsFieldPath',
      paths: ['annotations', 'labels'],
      input: (o) =>
        withTarget({ ...o, labels: { for: 'bar', boo: 'boo' } }, { annotations: { fox: 'dog' }, size: 20n }),
      expected: (o) =>
        withTarget({ ...o, labels: { for: 'bar', boo: 'boo' } }, { annotations: { fox: 'dog' } }),
    },
    {
      name: 'ReplaceLabel',
      paths: ['labels.foo'],
      input: (o) => ({ ...o, labels: { foo: 'baz' } }),
      expected: (o) => ({ ...o, labels: { foo: 'baz', baz: 'boo' } }),
    },
    {
      name: 'DeleteLabelByEmptyValue',
      paths: ['labels.foo'],
      input: (o) => ({ ...o, labels: {} }),
      expected: (o) => ({ ...o, labels: { baz: 'boo' } }),
    },
    {
      name: 'ReplaceAnnotation',
      paths: ['annotations.foo'],
      input: (o) => withTarget(o, { annotations: { foo: 'baz' } }),
      expected: (o) => withTarget(o, { annotations: { foo: 'baz' } }),
    },
    {
      name: 'ReplaceTargetTypeAndAnnotations',
      paths: ['target'],
      input: (o) =>
        withTarget(
          { ...o, labels: { ignored: 'yes' } },
          { mediaType: 'application/vnd.oci.blab+replaced', annotations: { fox: 'dog' } },
        ),
      expected: (o) =>
        withTarget(o, { mediaType: 'application/vnd.oci.blab+replaced', annotations: { fox: 'dog' } }),
    },
    {
      name: 'ReplaceTargetFieldpath',
      paths: ['target'],
      input: (o) => withTarget(o, { size: 20n, digest: digestOfString('ReplaceTargetFieldpath-new') }),
      expected: (o) => withTarget(o, { size: 20n, digest: digestOfString('ReplaceTargetFieldpath-new') }),
      targetChanged: true,
    },
    {
      name: 'ReplaceTarget',
      input: (o) => withTarget(o, { size: 20n, digest: digestOfString('ReplaceTarget-new') }),
      expected: (o) => withTarget(o, { size: 20n, digest: digestOfString('ReplaceTarget-new') }),
      targetChanged: true,
    },
    {
      name: 'EmptySize',
      input: (o) => withTarget(o, { size: 0n }),
      code: grpc.status.INVALID_ARGUMENT,
      details: /^Target\.Size must be greater than zero: invalid argument$/,
    },
    {
      name: 'EmptyMediaType',
      input: (o) => withTarget(o, { mediaType: '' }),
      code: grpc.status.INVALID_ARGUMENT,
      details: /^Target\.MediaType must be set: invalid argument$/,
    },
    {
      name: 'BadDigest',
      input: (o) => withTarget(o, { digest: 'sha256:XYZ' }),
      code: grpc.status.INVALID_ARGUMENT,
      details: /^Target\.Digest "sha256:XYZ" invalid: /,
    },
    {
      name: 'UnknownFieldPath',
      paths: ['created_at'],
      input: (o) => o,
      code: grpc.status.INVALID_ARGUMENT,
      details: /^cannot update "created_at" field on image "image": invalid argument$/,
    },
    {
      name: 'TargetSubfieldPath',
      paths: ['target.digest'],
      input: (o) => o,
      code: grpc.status.INVALID_ARGUMENT,
      details: /^cannot update "target\.digest" field on image "image"/,
    },
  ];

  for (const c of updateCases) {
    test(`create, update, get, delete: ${c.name}`, async () => {
      const s = fresh();
      const original = base(c.name);
      const created = (await s.create(original)).image!;
      assert.equal(
        nanosOf(created.createdAt),
        nanosOf(created.updatedAt),
        'created_at == updated_at on create',
      );

      if (c.code !== undefined) {
        await expectCode(s.update(c.input(original), c.paths), c.code, c.details);
        // The failed update changed nothing.
        const kept = (await s.get('image')).image!;
        assert.deepEqual(kept.labels, original.labels);
        assert.equal(kept.target?.digest, original.target?.digest);
        assert.equal(nanosOf(kept.updatedAt), nanosOf(created.updatedAt));
        return;
      }
      const updated = (await s.update(c.input(original), c.paths)).image!;
      const want = c.expected!(original);
      for (const img of [updated, (await s.get('image')).image!]) {
        assert.equal(img.name, 'image');
        assert.deepEqual(img.labels, want.labels);
        assert.equal(img.target?.mediaType, want.target?.mediaType);
        assert.equal(img.target?.digest, want.target?.digest);
        assert.equal(img.target?.size, want.target?.size);
        assert.deepEqual(img.target?.annotations, want.target?.annotations);
        assert.equal(nanosOf(img.createdAt), nanosOf(created.createdAt), 'created_at is kept');
        assert.ok(nanosOf(img.updatedAt) > nanosOf(img.createdAt), 'updated_at moves past created_at');
      }
      if (c.targetChanged) {
        await expectCode(
          s.remove('image', { target: original.target!.digest! }),
          grpc.status.NOT_FOUND,
          `image "image" has target ${want.target!.digest}, not ${original.target!.digest}: not found`,
        );
        await s.remove('image', { target: want.target!.digest! });
      } else {
        await s.remove('image', { target: original.target!.digest! });
      }
      await expectCode(s.get('image'), grpc.status.NOT_FOUND, 'image "image": not found');
    });
  }

  test('create without a target, size or media type is InvalidArgument', async () => {
    const s = fresh();
    await expectCode(
      s.create({ name: 'no-target' }),
      grpc.status.INVALID_ARGUMENT,
      /^Target\.Digest "" invalid/,
    );
    await expectCode(
      s.create(withTarget(base('x'), { size: 0n })),
      grpc.status.INVALID_ARGUMENT,
      'Target.Size must be greater than zero: invalid argument',
    );
    await expectCode(
      s.create(withTarget(base('x'), { mediaType: '' })),
      grpc.status.INVALID_ARGUMENT,
      'Target.MediaType must be set: invalid argument',
    );
    await expectCode(
      s.create({ ...base('x'), name: '' }),
      grpc.status.INVALID_ARGUMENT,
      'Image.Name required',
    );
    await expectCode(
      callUnary(client, Images.method.create, {}, { metadata: s.md }),
      grpc.status.INVALID_ARGUMENT,
    );
    assert.deepEqual((await s.list()).images, []);
  });

  test('create of an existing name is AlreadyExists; update and delete of a missing one NotFound', async () => {
    const s = fresh();
    await s.create(base('dup'));
    await expectCode(s.create(base('dup')), grpc.status.ALREADY_EXISTS, 'image "image": already exists');
    // Validation comes first: an invalid image is InvalidArgument even when the name exists.
    await expectCode(s.create(withTarget(base('dup'), { size: 0n })), grpc.status.INVALID_ARGUMENT);
    await expectCode(
      s.update({ ...base('dup'), name: 'test should fail' }),
      grpc.status.NOT_FOUND,
      'image "test should fail": not found',
    );
    await expectCode(
      s.update({ ...base('dup'), name: '' }),
      grpc.status.INVALID_ARGUMENT,
      'Image.Name required',
    );
    await s.remove('image');
    await expectCode(s.remove('image'), grpc.status.NOT_FOUND, 'image "image": not found');
  });

  test('labels: 4096 bytes of key and value is the limit; empty values are not stored', async () => {
    const s = fresh();
    const ok = { ...base('labels'), labels: { s: 's'.repeat(4095), empty: '' } };
    const created = (await s.create(ok)).image!;
    assert.deepEqual(Object.keys(created.labels).sort(), ['s']);
    await expectCode(
      s.create({ ...base('labels'), name: 'too-big', labels: { [`${'k'.repeat(4096)}`]: 's' } }),
      grpc.status.INVALID_ARGUMENT,
      new RegExp(
        `^image\\.Labels: label key and value greater than maximum size \\(4096 bytes\\), key: ${'k'.repeat(10)}: invalid argument$`,
      ),
    );
    await expectCode(s.get('too-big'), grpc.status.NOT_FOUND);
  });

  test('ctr-style label update: zero timestamps and an empty target under labels.<key> masks', async () => {
    const s = fresh();
    const created = (await s.create(base('ctr'))).image!;
    const req: ImageInit = {
      name: 'image',
      labels: { added: 'yes' },
      target: {},
      createdAt: GO_ZERO,
      updatedAt: GO_ZERO,
    };
    const updated = (await s.update(req, ['labels.added'])).image!;
    assert.deepEqual(updated.labels, { foo: 'bar', baz: 'boo', added: 'yes' });
    assert.equal(updated.target?.digest, created.target?.digest);
    assert.equal(nanosOf(updated.createdAt), nanosOf(created.createdAt));
    assert.ok(
      timestampDate(updated.updatedAt!).getUTCFullYear() > 2000,
      'server-set time, not the zero time',
    );
    // `ctr images label -r` repeats the `labels` path.
    const replaced = (await s.update({ ...req, labels: { only: 'this' } }, ['labels', 'labels'])).image!;
    assert.deepEqual(replaced.labels, { only: 'this' });
    // Without label arguments ctr sends no mask: a full replace with the empty target fails.
    await expectCode(s.update(req, []), grpc.status.INVALID_ARGUMENT, /^Target\.Digest "" invalid/);
  });

  test('create ignores caller timestamps unless source_date_epoch is set', async () => {
    const s = fresh();
    const t0 = Date.now();
    const img = (await s.create({ ...base('ts'), createdAt: { seconds: 1n, nanos: 0 }, updatedAt: GO_ZERO }))
      .image!;
    assert.ok(timestampDate(img.createdAt!).getTime() >= t0 - 1000);
    const epoch = { seconds: 1_000_000_000n, nanos: 0 };
    const pinned = (
      await callUnary(
        client,
        Images.method.create,
        { image: { ...base('ts'), name: 'pinned' }, sourceDateEpoch: epoch },
        { metadata: s.md },
      )
    ).image!;
    assert.equal(pinned.createdAt?.seconds, epoch.seconds);
    assert.equal(pinned.updatedAt?.seconds, epoch.seconds);
  });

  // TestImagesList: image-0..3 with namelabel, even/odd labels.
  test('list filters (containerd TestImagesList) and ordering by name', async () => {
    const s = fresh();
    for (const i of [3, 1, 0, 2]) {
      await s.create({
        name: `image-${i}`,
        labels: { namelabel: `image-${i}`, ...(i % 2 === 0 ? { even: 'true' } : { odd: 'true' }) },
        target: {
          size: 10n,
          mediaType: 'application/vnd.containerd.test',
          digest: digestOfString(`image-${i}`),
          annotations: { foo: 'bar' },
        },
      });
    }
    const names = async (...filters: string[]) => (await s.list(...filters)).images.map((i) => i.name);
    assert.deepEqual(await names(), ['image-0', 'image-1', 'image-2', 'image-3']);
    assert.deepEqual(await names('labels.even==true', 'labels.odd==true'), [
      'image-0',
      'image-1',
      'image-2',
      'image-3',
    ]);
    assert.deepEqual(await names('labels.even==true'), ['image-0', 'image-2']);
    assert.deepEqual(await names('labels.odd==true'), ['image-1', 'image-3']);
    assert.deepEqual(await names('name==image-0'), ['image-0']);
    assert.deepEqual(await names('labels.namelabel==image-0,labels.even==true'), ['image-0']);
    assert.deepEqual(await names('labels.namelabel==image-1,labels.even==true'), []);
    assert.deepEqual(await names('target.mediatype~=application/vnd.*'), [
      'image-0',
      'image-1',
      'image-2',
      'image-3',
    ]);
    assert.deepEqual(await names(`target.digest==${digestOfString('image-2')}`), ['image-2']);
    assert.deepEqual(await names('annotations.foo==bar,name~=[13]$'), ['image-1', 'image-3']);
    // `!=` does not require presence; an invalid regexp matches nothing rather than failing.
    assert.deepEqual(await names('labels.absent!=x,name==image-3'), ['image-3']);
    assert.deepEqual(await names('name~=(['), []);
    await expectCode(
      s.list('name=='),
      grpc.status.INVALID_ARGUMENT,
      'filters: parse error: [name==]: expected value or quoted: invalid argument: invalid argument',
    );
    await expectCode(s.list('name==foo '), grpc.status.INVALID_ARGUMENT, /^filters: parse error: /);
    for (const i of [0, 1, 2, 3]) await s.remove(`image-${i}`);
    for (const i of [0, 1, 2, 3]) await expectCode(s.remove(`image-${i}`), grpc.status.NOT_FOUND);
    assert.deepEqual(await names(), []);
  });

  test('the namespace header: missing is FailedPrecondition, invalid is InvalidArgument, others are isolated', async () => {
    await expectCode(
      callUnary(client, Images.method.list, {}),
      grpc.status.FAILED_PRECONDITION,
      'namespace is required: failed precondition',
    );
    await expectCode(
      callUnary(
        client,
        Images.method.get,
        { name: 'x' },
        { metadata: metadataWith({ 'containerd-namespace': '' }) },
      ),
      grpc.status.FAILED_PRECONDITION,
    );
    await expectCode(
      callUnary(
        client,
        Images.method.list,
        {},
        { metadata: metadataWith({ 'containerd-namespace': 'foo..bar' }) },
      ),
      grpc.status.INVALID_ARGUMENT,
      /^namespace validation: identifier "foo\.\.bar" must match /,
    );
    const a = fresh();
    const b = fresh();
    await a.create(base('iso'));
    await b.create(withTarget(base('iso'), { digest: digestOfString('other') }));
    assert.equal((await a.get('image')).image?.target?.digest, digestOfString('iso'));
    assert.equal((await b.get('image')).image?.target?.digest, digestOfString('other'));
    await a.remove('image');
    assert.equal((await b.list()).images.length, 1);
  });

  test('the lease header: an image with gc.expire joins the lease; an unknown lease is NotFound', async () => {
    const s = fresh();
    const expiring = { ...base('lease'), labels: { 'containerd.io/gc.expire': '2999-01-01T00:00:00Z' } };
    const unknown = metadataWith({ 'containerd-namespace': s.ns, 'containerd-lease': 'no-such-lease' });
    await expectCode(s.create(expiring, unknown), grpc.status.NOT_FOUND, 'lease does not exist: not found');
    // Without gc.expire the lease header is not consulted.
    await s.create({ ...base('lease'), name: 'plain' }, unknown);

    await callUnary(client, Leases.method.create, { id: 'l1' }, { metadata: s.md });
    const leased = metadataWith({ 'containerd-namespace': s.ns, 'containerd-lease': 'l1' });
    await s.create(expiring, leased);
    const resources = await callUnary(client, Leases.method.listResources, { id: 'l1' }, { metadata: s.md });
    assert.deepEqual(
      resources.resources.map((r) => [r.type, r.id]),
      [['images', 'image']],
    );
  });

  test('delete with sync runs garbage collection before it returns', async () => {
    const s = fresh();
    await s.create(base('sync'));
    await s.remove('image', { sync: true });
    await expectCode(s.get('image'), grpc.status.NOT_FOUND);
  });
});
