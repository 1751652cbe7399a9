import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isNotFound } from '../../errors.ts';
import type { Descriptor, Platform } from '../../oci/descriptor.ts';
import { digestOf } from '../../oci/digest.ts';
import type { ImageIndex } from '../../oci/manifest.ts';
import { MediaType } from '../../oci/media-types.ts';
import { selectManifest } from './select.ts';

function entry(name: string, platform?: Platform, mediaType: string = MediaType.ociManifest): Descriptor {
  const d: Descriptor = { mediaType, digest: digestOf(name), size: 500 };
  if (platform) d.platform = platform;
  return d;
}

const amd64 = entry('amd64', { os: 'linux', architecture: 'amd64' });
const arm64 = entry('arm64', { os: 'linux', architecture: 'arm64', variant: 'v8' });
const armv6 = entry('armv6', { os: 'linux', architecture: 'arm', variant: 'v6' });
const armv7 = entry('armv7', { os: 'linux', architecture: 'arm', variant: 'v7' });
const attestation = entry('att', { os: 'unknown', architecture: 'unknown' });
const nested = entry('nested', { os: 'linux', architecture: 'amd64' }, MediaType.ociIndex);

const index = (...manifests: Descriptor[]): ImageIndex => ({
  schemaVersion: 2,
  mediaType: MediaType.ociIndex,
  manifests,
});

describe('selectManifest', () => {
  test('picks the entry of the platform asked for, not manifests[0]', () => {
    const i = index(attestation, arm64, amd64);
    assert.equal(selectManifest(i, { os: 'linux', architecture: 'amd64' }), amd64);
    assert.equal(selectManifest(i, { os: 'linux', architecture: 'arm64' }), arm64);
  });

  test('spellings are normalised (x86_64, aarch64)', () => {
    const i = index(arm64, amd64);
    assert.equal(selectManifest(i, { os: 'linux', architecture: 'x86_64' }), amd64);
    assert.equal(selectManifest(i, { os: 'linux', architecture: 'aarch64' }), arm64);
  });

  test('variant ranking: the newest compatible variant wins, whatever the order', () => {
    assert.equal(
      selectManifest(index(armv6, armv7), { os: 'linux', architecture: 'arm', variant: 'v7' }),
      armv7,
    );
    assert.equal(
      selectManifest(index(armv7, armv6), { os: 'linux', architecture: 'arm', variant: 'v7' }),
      armv7,
    );
    assert.equal(selectManifest(index(armv6), { os: 'linux', architecture: 'arm', variant: 'v7' }), armv6);
    // An arm64 host runs 32-bit arm when there is no arm64 entry, v7 before v6.
    assert.equal(selectManifest(index(armv6, armv7, amd64), { os: 'linux', architecture: 'arm64' }), armv7);
  });

  test('nested indexes are not candidates', () => {
    assert.equal(selectManifest(index(nested, amd64), { os: 'linux', architecture: 'amd64' }), amd64);
  });

  test('nothing fits: NotFound listing what the index has', () => {
    assert.throws(
      () =>
        selectManifest(index(amd64, attestation, entry('x')), {
          os: 'linux',
          architecture: 'arm',
          variant: 'v6',
        }),
      (err: unknown) =>
        isNotFound(err) &&
        (err as Error).message ===
          'base image: no manifest for platform linux/arm/v6; the index has linux/amd64, unknown/unknown, unknown',
    );
    assert.throws(
      () => selectManifest(index(), { os: 'linux', architecture: 'amd64' }, 'image r/ide:1'),
      (err: unknown) =>
        isNotFound(err) &&
        (err as Error).message === 'image r/ide:1: no manifest for platform linux/amd64; the index has none',
    );
  });
});
