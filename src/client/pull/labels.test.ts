import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Descriptor } from '../../oci/descriptor.ts';
import type { Digest } from '../../oci/digest.ts';
import type { ParsedManifest } from '../../oci/manifest.ts';
import { MediaType } from '../../oci/media-types.ts';
import { appendDistributionSource, changedLabels, childGcLabels, distributionSourceKey } from './labels.ts';

const desc = (c: string, mediaType: string = MediaType.ociLayerGzip): Descriptor => ({
  mediaType,
  digest: `sha256:${c.repeat(64)}` as Digest,
  size: 1,
});

test('manifest children: config once, layers numbered from 0', () => {
  const parsed: ParsedManifest = {
    kind: 'manifest',
    mediaType: MediaType.ociManifest,
    manifest: { schemaVersion: 2, config: desc('c', MediaType.ociConfig), layers: [desc('1'), desc('2')] },
  };
  assert.deepEqual(childGcLabels(parsed), {
    'containerd.io/gc.ref.content.config': desc('c').digest,
    'containerd.io/gc.ref.content.l.0': desc('1').digest,
    'containerd.io/gc.ref.content.l.1': desc('2').digest,
  });
});

test('index children: every manifest, m.0 … whatever the platform', () => {
  const parsed: ParsedManifest = {
    kind: 'index',
    mediaType: MediaType.ociIndex,
    index: {
      schemaVersion: 2,
      manifests: [desc('a', MediaType.ociManifest), desc('b', MediaType.ociManifest)],
    },
  };
  assert.deepEqual(childGcLabels(parsed), {
    'containerd.io/gc.ref.content.m.0': desc('a').digest,
    'containerd.io/gc.ref.content.m.1': desc('b').digest,
  });
});

test('distribution source: hostname without port, repos sorted and unique', () => {
  assert.equal(distributionSourceKey('127.0.0.1:5000'), 'containerd.io/distribution.source.127.0.0.1');
  assert.equal(distributionSourceKey('[::1]:5000'), 'containerd.io/distribution.source.::1');
  const key = 'containerd.io/distribution.source.reg.example';
  assert.deepEqual(appendDistributionSource({}, 'reg.example:443', 'team/b'), { key, value: 'team/b' });
  assert.deepEqual(appendDistributionSource({ [key]: 'team/b' }, 'reg.example', 'team/a'), {
    key,
    value: 'team/a,team/b',
  });
  assert.equal(appendDistributionSource({ [key]: 'team/a,team/b' }, 'reg.example', 'team/b'), undefined);
});

test('distribution source: skipped when the label would grow past 4096 bytes', () => {
  const key = 'containerd.io/distribution.source.reg.example';
  const long = 'x'.repeat(4050);
  assert.equal(appendDistributionSource({ [key]: long }, 'reg.example', 'team/new-repo'), undefined);
});

test('changed labels: only the ones whose value differs', () => {
  assert.deepEqual(changedLabels({ a: '1', b: '2' }, { a: '1', b: '3', c: '4' }), { b: '3', c: '4' });
  assert.deepEqual(changedLabels({ a: '1' }, { a: '1' }), {});
});
