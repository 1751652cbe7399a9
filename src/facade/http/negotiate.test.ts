import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MediaType } from '../../oci/media-types.ts';
import { accepts, noneMatchHits, parseRange } from './negotiate.ts';

test('accept negotiation', () => {
  const oci = MediaType.ociManifest;
  assert.equal(accepts(undefined, oci), true);
  assert.equal(accepts('*/*', oci), true);
  assert.equal(accepts([`${MediaType.dockerManifest}`, `${oci}; q=0.5`], oci), true);
  assert.equal(accepts(`${MediaType.dockerManifest}, ${MediaType.ociIndex}`, oci), false);
  assert.equal(accepts(`${oci};q=0`, oci), false);
  assert.equal(accepts(MediaType.dockerManifest, MediaType.dockerManifest), true);
});

test('accept negotiation: the most specific range decides, and q=0 there refuses (RFC 9110 12.5.1)', () => {
  const oci = MediaType.ociManifest;
  assert.equal(accepts(`${oci};q=0, */*`, oci), false);
  assert.equal(accepts([`${oci}; q=0`, 'application/json'], oci), false);
  assert.equal(accepts('application/*;q=0, */*', oci), false);
  assert.equal(accepts(`*/*;q=0, ${oci}`, oci), true);
  assert.equal(accepts(`*/*;q=0, application/*;q=0.1`, oci), true);
  assert.equal(accepts(`${oci};Q=0`, oci), false);
});

test('range parsing', () => {
  assert.deepEqual(parseRange(undefined, 100), { kind: 'full' });
  assert.deepEqual(parseRange('bytes=0-9', 100), { kind: 'partial', offset: 0, length: 10 });
  assert.deepEqual(parseRange('bytes=90-', 100), { kind: 'partial', offset: 90, length: 10 });
  assert.deepEqual(parseRange('bytes=90-500', 100), { kind: 'partial', offset: 90, length: 10 });
  assert.deepEqual(parseRange('bytes=-10', 100), { kind: 'partial', offset: 90, length: 10 });
  assert.deepEqual(parseRange('bytes=-1000', 100), { kind: 'partial', offset: 0, length: 100 });
  assert.deepEqual(parseRange('bytes=100-', 100), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=-0', 100), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=9-3', 100), { kind: 'unsatisfiable' });
  // Not one well-formed range: the whole blob.
  for (const h of ['bytes=0-1,5-6', 'items=0-1', 'bytes=-', 'bytes=a-b']) {
    assert.deepEqual(parseRange(h, 100), { kind: 'full' }, h);
  }
});

test('If-None-Match: entity tags compared weakly, a list, `*`, and the bare digest', () => {
  const d = 'sha256:aa';
  assert.equal(noneMatchHits(undefined, d), false);
  assert.equal(noneMatchHits(`"${d}"`, d), true);
  assert.equal(noneMatchHits(`W/"${d}"`, d), true);
  assert.equal(noneMatchHits(d, d), true);
  assert.equal(noneMatchHits(`"sha256:bb", "${d}"`, d), true);
  assert.equal(noneMatchHits(['"sha256:bb"', `"${d}"`], d), true);
  assert.equal(noneMatchHits('*', d), true);
  assert.equal(noneMatchHits('"sha256:bb"', d), false);
  assert.equal(noneMatchHits(`"${d}x"`, d), false);
});
