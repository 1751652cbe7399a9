import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  bareMediaType,
  isConfigType,
  isIndexType,
  isLayerType,
  isManifestType,
  isNonDistributable,
  isSchema1Type,
  layerCompression,
  MANIFEST_ACCEPT,
  MediaType,
} from './media-types.ts';

describe('bareMediaType', () => {
  const cases: [string, string][] = [
    [MediaType.ociManifest, MediaType.ociManifest],
    [`${MediaType.ociManifest}; charset=utf-8`, MediaType.ociManifest],
    [`${MediaType.ociManifest};charset=utf-8;q=0.5`, MediaType.ociManifest],
    [`  ${MediaType.ociIndex}  ; x=y`, MediaType.ociIndex],
    ['Application/VND.OCI.Image.Manifest.v1+JSON', MediaType.ociManifest],
    ['', ''],
  ];
  for (const [input, want] of cases)
    test(JSON.stringify(input), () => assert.equal(bareMediaType(input), want));
});

describe('classification', () => {
  const kinds = (mt: string) => ({
    manifest: isManifestType(mt),
    index: isIndexType(mt),
    config: isConfigType(mt),
    schema1: isSchema1Type(mt),
    layer: isLayerType(mt),
  });
  const none = { manifest: false, index: false, config: false, schema1: false, layer: false };
  const cases: [string, Partial<typeof none>][] = [
    [MediaType.ociManifest, { manifest: true }],
    [MediaType.dockerManifest, { manifest: true }],
    [`${MediaType.dockerManifest}; charset=utf-8`, { manifest: true }],
    [MediaType.ociIndex, { index: true }],
    [MediaType.dockerManifestList, { index: true }],
    [MediaType.ociIndex.toUpperCase(), { index: true }],
    [MediaType.ociConfig, { config: true }],
    [MediaType.dockerConfig, { config: true }],
    [MediaType.dockerSchema1Manifest, { schema1: true }],
    [MediaType.dockerSchema1Signed, { schema1: true }],
    ['application/json', { schema1: true }],
    ['application/json; charset=utf-8', { schema1: true }],
    [MediaType.ociLayer, { layer: true }],
    [MediaType.ociLayerGzip, { layer: true }],
    [MediaType.ociLayerZstd, { layer: true }],
    [MediaType.ociLayerNondistributableGzip, { layer: true }],
    [MediaType.dockerLayerGzip, { layer: true }],
    [MediaType.dockerLayerForeignGzip, { layer: true }],
    [MediaType.ociEmpty, {}],
    ['application/octet-stream', {}],
    ['text/html', {}],
    ['', {}],
    [`${MediaType.ociManifest}x`, {}],
    ['application/vnd.oci.image.manifest.v1', {}],
  ];
  for (const [mt, want] of cases) {
    test(JSON.stringify(mt), () => assert.deepEqual(kinds(mt), { ...none, ...want }));
  }
});

describe('layers', () => {
  const cases: [string, ReturnType<typeof layerCompression>, boolean][] = [
    [MediaType.ociLayer, 'none', false],
    [MediaType.ociLayerGzip, 'gzip', false],
    [MediaType.ociLayerZstd, 'zstd', false],
    [MediaType.ociLayerNondistributable, 'none', true],
    [MediaType.ociLayerNondistributableGzip, 'gzip', true],
    [MediaType.ociLayerNondistributableZstd, 'zstd', true],
    [MediaType.dockerLayer, 'none', false],
    [MediaType.dockerLayerGzip, 'gzip', false],
    [MediaType.dockerLayerZstd, 'zstd', false],
    [MediaType.dockerLayerForeignGzip, 'gzip', true],
    [`${MediaType.dockerLayerForeignGzip}; x=1`, 'gzip', true],
    [MediaType.ociManifest, undefined, false],
    ['application/vnd.example.layer.v1.tar+lz4', undefined, false],
  ];
  for (const [mt, compression, foreign] of cases) {
    test(mt, () => {
      assert.equal(layerCompression(mt), compression);
      assert.equal(isNonDistributable(mt), foreign);
    });
  }
});

test('MANIFEST_ACCEPT offers every schema2/OCI manifest and index type and no schema1', () => {
  assert.deepEqual(
    [...MANIFEST_ACCEPT].sort(),
    [
      MediaType.ociIndex,
      MediaType.dockerManifestList,
      MediaType.ociManifest,
      MediaType.dockerManifest,
    ].sort(),
  );
  assert.ok(MANIFEST_ACCEPT.every((mt) => !isSchema1Type(mt)));
});
