import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { nanosToDate } from '../../metadata/db.ts';
import type { ImageRecord } from '../../metadata/images.ts';
import type { Digest } from '../../oci/digest.ts';
import {
  GetImageResponseSchema,
  ListImagesResponseSchema,
} from '../gen/containerd/services/images/v1/images_pb.ts';
import { encodeImageResponse, encodeListImagesResponse } from './image-wire.ts';
import { imageToProto } from './images.ts';

/** What protobuf-es writes for the same records: the reference. */
const expectedGet = (r: ImageRecord) =>
  Buffer.from(toBinary(GetImageResponseSchema, create(GetImageResponseSchema, { image: imageToProto(r) })));
const expectedList = (rs: ImageRecord[]) =>
  Buffer.from(
    toBinary(ListImagesResponseSchema, create(ListImagesResponseSchema, { images: rs.map(imageToProto) })),
  );

function record(over: Partial<ImageRecord> & { size?: number } = {}): ImageRecord {
  const createdAtNs = over.createdAtNs ?? 1_763_791_234_123_456_789n;
  const updatedAtNs = over.updatedAtNs ?? createdAtNs + 5n;
  return {
    name: 'registry.example/app:v1',
    labels: { 'bench.group': '7' },
    createdAt: nanosToDate(createdAtNs),
    updatedAt: nanosToDate(updatedAtNs),
    createdAtNs,
    updatedAtNs,
    ...over,
    target: {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: `sha256:${'a'.repeat(64)}` as Digest,
      size: over.size ?? 1234,
      annotations: {},
      ...over.target,
    },
  };
}

// Text that exercises UTF-8 (2-, 3- and 4-byte characters, a lone surrogate) and integer-like keys,
// which JavaScript objects list first whatever their insertion order.
const text = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.constantFrom('', '0', '1', '10', '007', 'é', '\u2028', '😀', '\ud800', 'a.b', '"q"'),
);
const map = fc.dictionary(text, text, { maxKeys: 5 });
const nanos = fc.oneof(
  fc.bigInt({ min: -(1n << 62n), max: 1n << 62n }),
  fc.constantFrom(0n, 1n, -1n, 999_999_999n, 1_000_000_000n, -62_135_596_800_000_000_000n),
);
const records = fc
  .record({
    name: text,
    labels: map,
    mediaType: text,
    digest: text,
    size: fc.oneof(fc.nat(), fc.constantFrom(0, 127, 128, 2 ** 31, Number.MAX_SAFE_INTEGER)),
    annotations: map,
    createdAtNs: nanos,
    updatedAtNs: nanos,
  })
  .map((r) =>
    record({
      name: r.name,
      labels: r.labels,
      createdAtNs: r.createdAtNs,
      updatedAtNs: r.updatedAtNs,
      size: r.size,
      target: {
        mediaType: r.mediaType,
        digest: r.digest as Digest,
        size: r.size,
        annotations: r.annotations,
      },
    }),
  );

describe('image-wire', () => {
  it('writes exactly what protobuf-es writes for one image', () => {
    fc.assert(
      fc.property(records, (r) => {
        assert.deepEqual(encodeImageResponse(r), expectedGet(r));
      }),
      { numRuns: 500 },
    );
  });

  it('writes exactly what protobuf-es writes for lists, the empty one included', () => {
    fc.assert(
      fc.property(fc.array(records, { maxLength: 6 }), (rs) => {
        assert.deepEqual(encodeListImagesResponse(rs), expectedList(rs));
      }),
      { numRuns: 200 },
    );
    assert.equal(encodeListImagesResponse([]).length, 0);
  });

  it('widens length prefixes for large images and lists (2- and 3-byte lengths)', () => {
    const big = record({
      labels: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, 'v'.repeat(i * 100)])),
    });
    const bytes = encodeImageResponse(big);
    assert.ok(bytes.length > 70_000);
    assert.deepEqual(bytes, expectedGet(big));
    const many = Array.from({ length: 300 }, (_, i) => record({ name: `img-${i}` }));
    assert.deepEqual(encodeListImagesResponse(many), expectedList(many));
    // A small answer after a large one comes out whole (the shared buffer is reset).
    const small = record();
    assert.deepEqual(encodeImageResponse(small), expectedGet(small));
  });

  it('decodes back to the record', () => {
    const r = record({ labels: { a: '1', '2': 'b' }, createdAtNs: -1n });
    const decoded = fromBinary(GetImageResponseSchema, encodeImageResponse(r));
    assert.equal(decoded.image?.name, r.name);
    assert.deepEqual({ ...decoded.image?.labels }, r.labels);
    assert.equal(decoded.image?.target?.size, 1234n);
    assert.equal(decoded.image?.createdAt?.seconds, -1n);
    assert.equal(decoded.image?.createdAt?.nanos, 999_999_999);
  });
});
