import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { imageSpecJson } from '../../api/convert/image-spec-json.ts';
import { digestOf } from '../../oci/digest.ts';
import { MediaType } from '../../oci/media-types.ts';
import { compose } from '../compose/compose.ts';
import type { Addition } from '../compose/layers.ts';
import { fixtureImage } from '../compose/test-fixtures.ts';
import type { ImageSpec } from '../spec.ts';
import {
  compositionCodec,
  descriptorCodec,
  digestCodec,
  type NamedComposition,
  specCodec,
  verifiedBytesCodec,
} from './codecs.ts';

const TAR = new TextEncoder().encode('a direct layer');
const base = fixtureImage({ layers: ['b1', 'b2'], docker: true, env: ['HOME=/root'] });
const ide = fixtureImage({ layers: ['ide1'] });
const additions: Addition[] = [
  {
    source: 'ide reg.example/ide:1',
    layers: [
      {
        descriptor: ide.manifest.layers[0]!,
        diffId: ide.config.rootfs.diff_ids[0]!,
        origin: { kind: 'image', ref: 'reg.example/ide:1' },
      },
    ],
  },
  {
    source: 'content',
    layers: [
      {
        descriptor: { mediaType: MediaType.ociLayerGzip, digest: digestOf('remote'), size: 6 },
        diffId: digestOf('remote tar'),
        origin: { kind: 'remote', url: 'https://storage.example/l.tgz' },
      },
      {
        descriptor: { mediaType: MediaType.ociLayer, digest: digestOf(TAR), size: TAR.byteLength },
        diffId: digestOf(TAR),
        origin: { kind: 'direct', content: TAR },
      },
    ],
  },
  {
    source: 'static /etc/strata/extra.tar.gz',
    layers: [
      {
        descriptor: { mediaType: MediaType.ociLayerGzip, digest: digestOf('static'), size: 6 },
        diffId: digestOf('static tar'),
        origin: { kind: 'static' },
      },
    ],
  },
];
const image = compose(base, additions, { baseRef: 'reg.example/base:1' });
const named: NamedComposition = { name: 'remote/ws1', baseRef: 'reg.example/base:1', image };

describe('shared cache codecs', () => {
  test('a composition round-trips to the same bytes, objects and layer origins', () => {
    const back = compositionCodec.decode(image.manifestDigest, compositionCodec.encode(named));
    assert.equal(back.name, 'remote/ws1');
    assert.equal(back.baseRef, 'reg.example/base:1');
    assert.deepEqual(Buffer.from(back.image.manifestBytes), Buffer.from(image.manifestBytes));
    assert.deepEqual(Buffer.from(back.image.configBytes), Buffer.from(image.configBytes));
    assert.equal(back.image.mediaType, MediaType.dockerManifest);
    assert.equal(back.image.family, 'docker');
    assert.equal(back.image.configDigest, image.configDigest);
    assert.deepEqual(back.image.manifest, image.manifest);
    assert.deepEqual(back.image.config, image.config);
    assert.deepEqual(back.image.layers, image.layers);
  });

  test('a composition is refused under another digest, or with changed manifest, config or direct bytes', () => {
    const bytes = Buffer.from(compositionCodec.encode(named));
    assert.throws(() => compositionCodec.decode(digestOf('other'), bytes), /do not match the digest/);

    const nl = bytes.indexOf(0x0a);
    const manifestAt = nl + 1 + image.manifestBytes.byteLength - 5;
    const badManifest = Buffer.from(bytes);
    badManifest[manifestAt]! ^= 1;
    assert.throws(() => compositionCodec.decode(image.manifestDigest, badManifest));

    const badConfig = Buffer.from(bytes);
    badConfig[bytes.length - 3]! ^= 1;
    assert.throws(() => compositionCodec.decode(image.manifestDigest, badConfig), /config bytes/);

    const header = JSON.parse(bytes.subarray(0, nl).toString());
    header.origins[4].content = Buffer.from('something else').toString('base64');
    const badDirect = Buffer.concat([Buffer.from(`${JSON.stringify(header)}\n`), bytes.subarray(nl + 1)]);
    assert.throws(() => compositionCodec.decode(image.manifestDigest, badDirect), /do not match/);

    header.origins.pop();
    const fewer = Buffer.concat([Buffer.from(`${JSON.stringify(header)}\n`), bytes.subarray(nl + 1)]);
    assert.throws(() => compositionCodec.decode(image.manifestDigest, fewer), /differ in number/);
    assert.throws(() => compositionCodec.decode(image.manifestDigest, Buffer.from('no header')));
  });

  test('upstream manifests and configs: only bytes that hash to their key', () => {
    const bytes = new TextEncoder().encode('{"schemaVersion":2}');
    const digest = digestOf(bytes);
    assert.deepEqual(verifiedBytesCodec.decode(digest, verifiedBytesCodec.encode(bytes)), bytes);
    assert.throws(() => verifiedBytesCodec.decode(digest, new TextEncoder().encode('{}')), /do not match/);
    assert.throws(() => verifiedBytesCodec.decode('not-a-digest', bytes));
  });

  test('tag resolutions, digests of a recent list and specs', () => {
    const desc = { mediaType: MediaType.ociManifest, digest: digestOf('m'), size: 12 };
    assert.deepEqual(descriptorCodec.decode('k', descriptorCodec.encode(desc)), desc);
    assert.throws(() => descriptorCodec.decode('k', new TextEncoder().encode('{"digest":"sha256:1"}')));
    assert.equal(digestCodec.decode('k', digestCodec.encode(digestOf('a'))), digestOf('a'));
    assert.throws(() => digestCodec.decode('k', new TextEncoder().encode('nope')));
    const spec: ImageSpec = {
      baseRef: 'reg.example/base:1',
      ideRef: 'reg.example/ide:1',
      supervisorRef: '',
      ideLayerRefs: ['reg.example/x:1'],
      contentLayers: [{ kind: 'direct', content: TAR }],
    };
    const codec = specCodec(imageSpecJson);
    assert.deepEqual(codec.decode('ws1', codec.encode(spec)), spec);
  });
});
