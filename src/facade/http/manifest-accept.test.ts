import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MediaType } from '../../oci/media-types.ts';
import { checkEntry, chooseManifest, platformEntry } from './manifest-accept.ts';
import { OciHttpError } from './oci-errors.ts';

const refusal = (f: () => unknown) => {
  try {
    f();
  } catch (err) {
    assert.ok(err instanceof OciHttpError);
    return `${err.oci.status} ${err.oci.code}`;
  }
  return 'served';
};

test('docker-registry 2.8: OCI types only to clients that name them; Docker ones by digest always', () => {
  const { ociManifest: oci, ociIndex, dockerManifest: docker, dockerManifestList: list } = MediaType;
  assert.equal(chooseManifest(oci, oci, false), 'stored');
  assert.equal(
    refusal(() => chooseManifest(docker, oci, true)),
    '404 MANIFEST_UNKNOWN',
  );
  assert.equal(
    refusal(() => chooseManifest(oci, ociIndex, false)),
    '404 MANIFEST_UNKNOWN',
  );
  assert.equal(chooseManifest(oci, docker, true), 'stored');
  assert.equal(
    refusal(() => chooseManifest(oci, docker, false)),
    '400 MANIFEST_INVALID',
  );
  assert.equal(chooseManifest(oci, list, true), 'stored');
  assert.equal(chooseManifest(docker, list, false), 'platform-entry');
  // Strata's departure: no Accept (or a wildcard) takes anything.
  assert.equal(chooseManifest(undefined, docker, false), 'stored');
  assert.equal(chooseManifest('*/*', oci, false), 'stored');
  assert.equal(
    refusal(() => checkEntry(oci, docker)),
    '400 MANIFEST_INVALID',
  );
  assert.equal(
    refusal(() => checkEntry(oci, oci)),
    'served',
  );
});

test("a Docker list's entry is its first for linux/amd64, whatever machine the registry runs on", () => {
  const entry = (os: string, architecture: string, n: string) => ({
    mediaType: MediaType.dockerManifest,
    digest: `sha256:${n.repeat(64)}`,
    size: 1,
    platform: { os, architecture },
  });
  const list = (ms: unknown[]) =>
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.dockerManifestList, manifests: ms }));
  assert.equal(
    platformEntry(
      list([
        entry('linux', 'arm64', 'a'),
        entry('windows', 'amd64', 'b'),
        entry('linux', 'amd64', 'c'),
        entry('linux', 'amd64', 'd'),
      ]),
    ),
    `sha256:${'c'.repeat(64)}`,
  );
  assert.equal(platformEntry(list([entry('linux', 'arm64', 'a')])), undefined);
});
