import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fromJson, type JsonValue, toJson } from '@bufbuild/protobuf';
import type { ImageSpec } from '../../facade/spec.ts';
import { ImageSpecSchema } from '../gen/registryfacade/imagespec_pb.ts';
import { specFromProto, specToProto } from './image-spec.ts';
import { specFromJson, specToJson } from './image-spec-json.ts';

// The hand-written codec is held to the protobuf runtime's JSON mapping of the same message.
const viaRuntime = (json: unknown): ImageSpec => specFromProto(fromJson(ImageSpecSchema, json as JsonValue));

const ACCEPTED: unknown[] = [
  {},
  { baseRef: 'docker.io/library/busybox:latest' },
  { base_ref: 'a/b:c', ide_ref: 'i:1', supervisor_ref: 's:2', ide_layer_ref: ['x:1', 'y:2'] },
  { baseRef: null, ideRef: 'i', ideLayerRef: null, contentLayer: null },
  {
    baseRef: 'b',
    contentLayer: [
      {
        remote: {
          url: 'https://x/y.tar.gz',
          digest: `sha256:${'a'.repeat(64)}`,
          diffId: `sha256:${'b'.repeat(64)}`,
          mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
          size: '1234',
        },
      },
      { remote: { diff_id: 'd', media_type: 'm', size: 99 } },
      { remote: {} },
      { direct: { content: Buffer.from('hello world!').toString('base64') } },
      { direct: { content: 'aGk' } },
      { direct: { content: '-_8' } },
      { direct: {} },
    ],
  },
];

const REFUSED: unknown[] = [
  null,
  [],
  'spec',
  { baseRef: 1 },
  { bogus: 'x' },
  { ideLayerRef: 'x' },
  { ideLayerRef: [null] },
  { ideLayerRef: [1] },
  { contentLayer: [{}] },
  { contentLayer: [{ remote: {}, direct: {} }] },
  { contentLayer: [{ remote: { url: 'u' }, direct: null }] },
  { contentLayer: [{ remote: { size: 1.5 } }] },
  { contentLayer: [{ remote: { size: 'x' } }] },
  { contentLayer: [{ remote: { extra: 1 } }] },
  { contentLayer: [{ direct: { content: '!!' } }] },
  { contentLayer: [{ direct: { content: 5 } }] },
  { contentLayer: ['remote'] },
];

test('protobuf-JSON specs are read as the protobuf runtime reads them', () => {
  for (const json of ACCEPTED) {
    assert.deepEqual(specFromJson(json, 'spec'), viaRuntime(json), JSON.stringify(json));
  }
});

test('what the protobuf runtime refuses is refused, as InvalidArgument naming the spec', () => {
  for (const json of REFUSED) {
    assert.throws(() => viaRuntime(json), Error, `runtime accepts ${JSON.stringify(json)}`);
    assert.throws(
      () => specFromJson(json, 'spec x'),
      (err: Error & { code?: string }) => /spec x/.test(err.message),
      JSON.stringify(json),
    );
  }
});

test('specs are written as the protobuf runtime writes them, and read back unchanged', () => {
  for (const json of ACCEPTED) {
    const spec = specFromJson(json, 'spec');
    const written = specToJson(spec);
    assert.deepEqual(written, toJson(ImageSpecSchema, specToProto(spec)), JSON.stringify(json));
    assert.deepEqual(specFromJson(JSON.parse(JSON.stringify(written)), 'spec'), spec);
  }
});
