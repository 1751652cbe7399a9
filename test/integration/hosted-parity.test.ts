// Strata's hosted repositories beside a real docker-registry (2.8), one of each for the whole file: the
// push and pull protocol's corners over raw HTTP, with the headers clients read (Location, Range,
// Docker-Upload-UUID, Docker-Content-Digest, ETag, Content-Type, Content-Range), and the real clients
// (skopeo, buildah, ctr) doing the same work against both. hosted-differential.test.ts holds the
// status-and-code sequence of names, catalog, tags and membership; this file adds what it did not cover.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { digestOf } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { startContainerd, type TestContainerd } from '../helpers/containerd.ts';
import {
  type HostedServer,
  kept,
  type RawStep,
  raw,
  type StepState,
  startHosted,
  withQuery,
} from '../helpers/hosted.ts';
import {
  type ImageTools,
  imageTools,
  pushBusybox,
  pushTwoPlatformIndex,
  skopeoCopy,
  skopeoListTags,
  skopeoRawManifest,
} from '../helpers/images.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

let reg: TestRegistry;
let strata: HostedServer;
let root: string;

before(async () => {
  reg = await startRegistry();
  root = await tempDir('hosted-parity');
  strata = await startHosted(root);
});

after(async () => {
  await strata?.app.close();
  await reg?.stop();
  if (root) await removeTempDir(root);
});

/** Headers a client reads; compared on answers below 400 (an error's are its status and code). */
const HEADERS = [
  'location',
  'range',
  'docker-upload-uuid',
  'docker-content-digest',
  'content-type',
  'etag',
  'content-range',
];

const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
const layer = Buffer.from('a layer in three chunks, which registries do not open, 0123456789');
const configDigest = digestOf(config);
const layerDigest = digestOf(layer);
const emptyDigest = digestOf('');
const unknownDigest = digestOf('nobody pushed this');
const oct = { 'content-type': 'application/octet-stream' };
const ociManifest = JSON.stringify({
  schemaVersion: 2,
  mediaType: MediaType.ociManifest,
  config: { mediaType: MediaType.ociConfig, digest: configDigest, size: config.length },
  layers: [{ mediaType: MediaType.ociLayerGzip, digest: layerDigest, size: layer.length }],
});
const dockerManifest = JSON.stringify({
  schemaVersion: 2,
  mediaType: MediaType.dockerManifest,
  config: {
    mediaType: 'application/vnd.docker.container.image.v1+json',
    digest: configDigest,
    size: config.length,
  },
  layers: [
    {
      mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
      digest: layerDigest,
      size: layer.length,
    },
  ],
});
const indexOf = (mediaType: string, child: string, childType: string, architecture: string) =>
  JSON.stringify({
    schemaVersion: 2,
    mediaType,
    manifests: [{ mediaType: childType, digest: child, size: 10, platform: { os: 'linux', architecture } }],
  });
const ociIndex = indexOf(MediaType.ociIndex, digestOf(ociManifest), MediaType.ociManifest, 'amd64');
// Lists for amd64 and arm64: whichever this machine is, one has its entry and one has not (both
// registries pick the entry of the platform they run on).
const dockerList = indexOf(
  MediaType.dockerManifestList,
  digestOf(dockerManifest),
  MediaType.dockerManifest,
  'amd64',
);
const dockerListArm = indexOf(
  MediaType.dockerManifestList,
  digestOf(dockerManifest),
  MediaType.dockerManifest,
  'arm64',
);
const unknownChildList = indexOf(
  MediaType.dockerManifestList,
  unknownDigest,
  MediaType.dockerManifest,
  'amd64',
);
const ct = (type: string) => ({ 'content-type': type });
const accept = (type: string) => ({ accept: type });
const R = '/v2/par/a';

const STEPS: RawStep[] = [
  // A chunked upload: status after POST and after each chunk, by GET and HEAD, then the last chunk in PUT.
  { name: 'start an upload', method: 'POST', path: () => `${R}/blobs/uploads/`, keep: 'up' },
  { name: 'status of a new upload', method: 'GET', path: (s) => kept(s, 'up') },
  {
    name: 'first chunk, no Content-Range',
    method: 'PATCH',
    path: (s) => kept(s, 'up'),
    headers: oct,
    body: layer.subarray(0, 20),
    keep: 'up',
  },
  {
    name: 'second chunk, no Content-Range',
    method: 'PATCH',
    path: (s) => kept(s, 'up'),
    headers: oct,
    body: layer.subarray(20, 40),
    keep: 'up',
  },
  { name: 'upload status', method: 'GET', path: (s) => kept(s, 'up') },
  { name: 'upload status by HEAD', method: 'HEAD', path: (s) => kept(s, 'up') },
  {
    name: 'last chunk in the PUT',
    method: 'PUT',
    path: (s) => `${withQuery(kept(s, 'up'))}digest=${layerDigest}`,
    headers: oct,
    body: layer.subarray(40),
  },
  { name: 'the blob', method: 'HEAD', path: () => `${R}/blobs/${layerDigest}` },
  {
    name: 'an upload status by HEAD, unknown id',
    method: 'HEAD',
    path: () => `${R}/blobs/uploads/${randomUUID()}`,
  },
  // A wrong digest. docker-registry 2.8 then keeps the upload half-cancelled (its cancel fails once the
  // commit closed the writer) and calls it BLOB_UPLOAD_INVALID; Strata has dropped it. 404 both ways.
  { name: 'an upload to get wrong', method: 'POST', path: () => `${R}/blobs/uploads/`, keep: 'bad' },
  {
    name: 'PUT with the wrong digest',
    method: 'PUT',
    path: (s) => `${withQuery(kept(s, 'bad'))}digest=${unknownDigest}`,
    headers: oct,
    body: config,
  },
  {
    name: 'status after the wrong digest',
    method: 'GET',
    path: (s) => kept(s, 'bad'),
    registry: '404 BLOB_UPLOAD_INVALID',
    strata: '404 BLOB_UPLOAD_UNKNOWN',
  },
  // A cancelled upload.
  { name: 'an upload to cancel', method: 'POST', path: () => `${R}/blobs/uploads/`, keep: 'gone' },
  { name: 'cancel it', method: 'DELETE', path: (s) => kept(s, 'gone') },
  { name: 'chunk to it', method: 'PATCH', path: (s) => kept(s, 'gone'), headers: oct, body: 'abc' },
  {
    name: 'finish it',
    method: 'PUT',
    path: (s) => `${withQuery(kept(s, 'gone'))}digest=${configDigest}`,
    headers: oct,
    body: config,
  },
  { name: 'cancel it again', method: 'DELETE', path: (s) => kept(s, 'gone') },
  // The empty blob.
  { name: 'an upload of nothing', method: 'POST', path: () => `${R}/blobs/uploads/`, keep: 'zero' },
  {
    name: 'finish it empty',
    method: 'PUT',
    path: (s) => `${withQuery(kept(s, 'zero'))}digest=${emptyDigest}`,
  },
  { name: 'the empty blob', method: 'HEAD', path: () => `${R}/blobs/${emptyDigest}` },
  { name: 'the empty blob GET', method: 'GET', path: () => `${R}/blobs/${emptyDigest}` },
  { name: 'the config', method: 'POST', path: () => `${R}/blobs/uploads/`, keep: 'cfg' },
  {
    name: 'the config in one PUT',
    method: 'PUT',
    path: (s) => `${withQuery(kept(s, 'cfg'))}digest=${configDigest}`,
    headers: oct,
    body: config,
  },
  // Mounts: present (201), absent or from a repository without it (202, an upload instead).
  { name: 'mount', method: 'POST', path: () => `/v2/par/b/blobs/uploads/?mount=${layerDigest}&from=par/a` },
  {
    name: 'mount of an absent blob',
    method: 'POST',
    path: () => `/v2/par/b/blobs/uploads/?mount=${unknownDigest}&from=par/a`,
  },
  {
    name: 'mount from an unknown repository',
    method: 'POST',
    path: () => `/v2/par/b/blobs/uploads/?mount=${configDigest}&from=par/none`,
  },
  // Ranges and conditions on blobs.
  {
    name: 'a range',
    method: 'GET',
    path: () => `${R}/blobs/${layerDigest}`,
    headers: { range: 'bytes=2-5' },
  },
  {
    name: 'a suffix range',
    method: 'GET',
    path: () => `${R}/blobs/${layerDigest}`,
    headers: { range: 'bytes=-5' },
  },
  {
    name: 'an open range',
    method: 'GET',
    path: () => `${R}/blobs/${layerDigest}`,
    headers: { range: 'bytes=10-' },
  },
  {
    name: 'a range past the end',
    method: 'GET',
    path: () => `${R}/blobs/${layerDigest}`,
    headers: { range: 'bytes=5-1000' },
  },
  // docker-registry closes the connection (its 416 declares the blob's length and sends none of it).
  {
    name: 'an unsatisfiable range',
    method: 'GET',
    path: () => `${R}/blobs/${layerDigest}`,
    headers: { range: 'bytes=1000-' },
    registry: 'no answer',
    strata: '416 RANGE_INVALID',
  },
  {
    name: 'a blob the client holds',
    method: 'GET',
    path: () => `${R}/blobs/${layerDigest}`,
    headers: { 'if-none-match': `"${layerDigest}"` },
  },
  {
    name: 'a blob the client holds, HEAD',
    method: 'HEAD',
    path: () => `${R}/blobs/${layerDigest}`,
    headers: { 'if-none-match': `"${layerDigest}"` },
  },
  {
    name: 'a blob the client holds another version of',
    method: 'HEAD',
    path: () => `${R}/blobs/${layerDigest}`,
    headers: { 'if-none-match': `"${configDigest}"` },
  },
  { name: 'a missing blob', method: 'GET', path: () => `${R}/blobs/${unknownDigest}` },
  { name: 'a missing blob, HEAD', method: 'HEAD', path: () => `${R}/blobs/${unknownDigest}` },
  // Manifests in.
  {
    name: 'OCI manifest by digest',
    method: 'PUT',
    path: () => `${R}/manifests/${digestOf(ociManifest)}`,
    headers: ct(MediaType.ociManifest),
    body: ociManifest,
  },
  {
    name: 'OCI manifest by tag',
    method: 'PUT',
    path: () => `${R}/manifests/oci`,
    headers: ct(MediaType.ociManifest),
    body: ociManifest,
  },
  {
    name: 'second tag',
    method: 'PUT',
    path: () => `${R}/manifests/oci2`,
    headers: ct(MediaType.ociManifest),
    body: ociManifest,
  },
  {
    name: 'OCI manifest sent as Docker',
    method: 'PUT',
    path: () => `${R}/manifests/mixed`,
    headers: ct(MediaType.dockerManifest),
    body: ociManifest,
  },
  {
    name: 'Docker manifest sent as OCI',
    method: 'PUT',
    path: () => `${R}/manifests/mixed`,
    headers: ct(MediaType.ociManifest),
    body: dockerManifest,
  },
  // docker-registry 2.8 reads a manifest without Content-Type as schema 1 (its legacy default), which
  // no schema 2 or OCI body is; Strata reads the body's own mediaType.
  {
    name: 'OCI manifest without Content-Type',
    method: 'PUT',
    path: () => `${R}/manifests/untyped`,
    body: ociManifest,
    registry: '400 MANIFEST_INVALID',
    strata: '201',
  },
  {
    name: 'Docker manifest',
    method: 'PUT',
    path: () => `${R}/manifests/docker`,
    headers: ct(MediaType.dockerManifest),
    body: dockerManifest,
  },
  {
    name: 'OCI index',
    method: 'PUT',
    path: () => `${R}/manifests/index`,
    headers: ct(MediaType.ociIndex),
    body: ociIndex,
  },
  {
    name: 'Docker list',
    method: 'PUT',
    path: () => `${R}/manifests/list`,
    headers: ct(MediaType.dockerManifestList),
    body: dockerList,
  },
  {
    name: 'Docker list for arm64',
    method: 'PUT',
    path: () => `${R}/manifests/list-arm`,
    headers: ct(MediaType.dockerManifestList),
    body: dockerListArm,
  },
  {
    name: 'Docker list with a missing manifest',
    method: 'PUT',
    path: () => `${R}/manifests/broken`,
    headers: ct(MediaType.dockerManifestList),
    body: unknownChildList,
  },
  // Manifests out, by what the client accepts. An OCI type only to a client that names it; a Docker one
  // by digest whatever it accepts; by tag, schema 2 not accepted is 400 (schema 1 would be needed), and a
  // list not accepted is its entry for the registry's platform. Without an Accept header docker-registry
  // hides OCI manifests and refuses schema 2 by tag; Strata serves what it has (curl sends no Accept).
  {
    name: 'OCI manifest',
    method: 'GET',
    path: () => `${R}/manifests/oci`,
    headers: accept(MediaType.ociManifest),
  },
  {
    name: 'OCI manifest, HEAD',
    method: 'HEAD',
    path: () => `${R}/manifests/oci`,
    headers: accept(MediaType.ociManifest),
  },
  {
    name: 'OCI manifest to a Docker client',
    method: 'GET',
    path: () => `${R}/manifests/oci`,
    headers: accept(MediaType.dockerManifest),
  },
  {
    name: 'OCI manifest to a Docker client, by digest',
    method: 'HEAD',
    path: () => `${R}/manifests/${digestOf(ociManifest)}`,
    headers: accept(MediaType.dockerManifest),
  },
  {
    name: 'OCI manifest without Accept',
    method: 'GET',
    path: () => `${R}/manifests/oci`,
    registry: '404 MANIFEST_UNKNOWN',
    strata: '200',
  },
  {
    name: 'Docker manifest',
    method: 'GET',
    path: () => `${R}/manifests/docker`,
    headers: accept(MediaType.dockerManifest),
  },
  {
    name: 'Docker manifest to an OCI client',
    method: 'GET',
    path: () => `${R}/manifests/docker`,
    headers: accept(MediaType.ociManifest),
  },
  {
    name: 'Docker manifest to an OCI client, HEAD',
    method: 'HEAD',
    path: () => `${R}/manifests/docker`,
    headers: accept(MediaType.ociManifest),
  },
  {
    name: 'Docker manifest to an OCI client, by digest',
    method: 'GET',
    path: () => `${R}/manifests/${digestOf(dockerManifest)}`,
    headers: accept(MediaType.ociManifest),
  },
  {
    name: 'Docker manifest to an OCI client, by digest, HEAD',
    method: 'HEAD',
    path: () => `${R}/manifests/${digestOf(dockerManifest)}`,
    headers: accept(MediaType.ociManifest),
  },
  {
    name: 'Docker manifest without Accept',
    method: 'GET',
    path: () => `${R}/manifests/docker`,
    registry: '400 MANIFEST_INVALID',
    strata: '200',
  },
  {
    name: 'OCI index',
    method: 'GET',
    path: () => `${R}/manifests/index`,
    headers: accept(MediaType.ociIndex),
  },
  {
    name: 'OCI index to a client of manifests',
    method: 'GET',
    path: () => `${R}/manifests/index`,
    headers: accept(MediaType.ociManifest),
  },
  {
    name: 'Docker list',
    method: 'GET',
    path: () => `${R}/manifests/list`,
    headers: accept(`${MediaType.dockerManifestList}, ${MediaType.dockerManifest}`),
  },
  {
    name: 'Docker list to a client of manifests',
    method: 'GET',
    path: () => `${R}/manifests/list`,
    headers: accept(MediaType.dockerManifest),
  },
  {
    name: 'Docker list to a client of manifests, HEAD',
    method: 'HEAD',
    path: () => `${R}/manifests/list`,
    headers: accept(MediaType.dockerManifest),
  },
  {
    name: 'Docker list to an OCI client',
    method: 'GET',
    path: () => `${R}/manifests/list`,
    headers: accept(MediaType.ociManifest),
  },
  {
    name: 'Docker list to an OCI client, by digest',
    method: 'GET',
    path: () => `${R}/manifests/${digestOf(dockerList)}`,
    headers: accept(MediaType.ociManifest),
  },
  {
    name: 'arm64 list to a client of manifests',
    method: 'GET',
    path: () => `${R}/manifests/list-arm`,
    headers: accept(MediaType.dockerManifest),
  },
  // docker-registry's 304 for a manifest has no header, where RFC 9110 asks for the ETag: Strata sends
  // it and Docker-Content-Digest, as both do for a blob.
  {
    name: 'a manifest the client holds',
    method: 'GET',
    path: () => `${R}/manifests/oci`,
    headers: { ...accept(MediaType.ociManifest), 'if-none-match': `"${digestOf(ociManifest)}"` },
    registry: '304',
    strata: '304',
  },
  {
    name: 'a manifest the client holds, HEAD',
    method: 'HEAD',
    path: () => `${R}/manifests/index`,
    headers: { ...accept(MediaType.ociIndex), 'if-none-match': `"${digestOf(ociIndex)}"` },
    registry: '304',
    strata: '304',
  },
  {
    name: 'a manifest the client holds, unquoted',
    method: 'GET',
    path: () => `${R}/manifests/docker`,
    headers: { ...accept(MediaType.dockerManifest), 'if-none-match': digestOf(dockerManifest) },
    registry: '304',
    strata: '304',
  },
  {
    name: 'a manifest the client holds another version of',
    method: 'GET',
    path: () => `${R}/manifests/docker`,
    headers: { ...accept(MediaType.dockerManifest), 'if-none-match': `"${digestOf(ociManifest)}"` },
  },
  // docker-registry 2.8 has no referrers API (its router answers 404 in plain text); Strata has the
  // distribution spec 1.1's, which answers 200 with an index (clients fall back to tags on 404 only).
  {
    name: 'referrers',
    method: 'GET',
    path: () => `${R}/referrers/${digestOf(ociManifest)}`,
    registry: '404',
    strata: '200',
  },
  // Deletes. docker-registry 2.8 cannot delete a tag (it reads the tag as a digest: DIGEST_INVALID); the
  // distribution spec lets a registry do so, and Strata does (skopeo delete resolves a tag and deletes
  // by digest on both).
  {
    name: 'delete by tag',
    method: 'DELETE',
    path: () => `${R}/manifests/oci2`,
    registry: '400 DIGEST_INVALID',
    strata: '202',
  },
  { name: 'delete by digest', method: 'DELETE', path: () => `${R}/manifests/${digestOf(ociManifest)}` },
  {
    name: 'deleted, by digest',
    method: 'HEAD',
    path: () => `${R}/manifests/${digestOf(ociManifest)}`,
    headers: accept(MediaType.ociManifest),
  },
  {
    name: 'deleted, by tag',
    method: 'GET',
    path: () => `${R}/manifests/oci`,
    headers: accept(MediaType.ociManifest),
  },
  {
    name: 'index of a deleted manifest',
    method: 'GET',
    path: () => `${R}/manifests/index`,
    headers: accept(MediaType.ociIndex),
  },
  { name: 'delete again', method: 'DELETE', path: () => `${R}/manifests/${digestOf(ociManifest)}` },
  { name: 'delete a blob', method: 'DELETE', path: () => `${R}/blobs/${layerDigest}` },
  { name: 'deleted blob', method: 'GET', path: () => `${R}/blobs/${layerDigest}` },
  { name: 'delete it again', method: 'DELETE', path: () => `${R}/blobs/${layerDigest}` },
];

/** `name: status code`, then the headers clients read (upload ids and state tokens left out). */
async function run(base: string, asStrata: boolean): Promise<string[]> {
  const state: StepState = new Map();
  const out: string[] = [];
  for (const step of STEPS) {
    let answer: string;
    let headers = '';
    let location: string | null = null;
    try {
      const a = await raw(base, step.method, step.path(state), { headers: step.headers, body: step.body });
      answer = `${a.status} ${a.code ?? ''}`.trim();
      location = a.headers.get('location');
      if (a.status < 400) {
        const seen = HEADERS.flatMap((h) => {
          const v = a.headers.get(h);
          if (v === null) return [];
          if (h === 'docker-upload-uuid') return [`${h}: (id)`];
          // docker-registry's Location is absolute and carries its upload state token.
          return [`${h}: ${h === 'location' ? normalLocation(v) : v}`];
        });
        if (a.status !== 204 && step.method !== 'HEAD') seen.push(`length ${a.body.length}`);
        if (a.status === 204 && a.headers.has('content-length')) seen.push('a Content-Length on a 204');
        headers = seen.join(', ');
      }
    } catch {
      answer = 'no answer';
    }
    const departure = asStrata ? step.strata : step.registry;
    if (departure !== undefined) {
      // Either way a line that the other side's run has too, or one that shows what came instead.
      out.push(
        `${step.name}: ${answer === departure ? 'departs as documented' : `${answer}, not ${departure}`}`,
      );
    } else {
      out.push(`${step.name}: ${answer}${headers ? ` | ${headers}` : ''}`);
    }
    if (step.keep && location) state.set(step.keep, location);
  }
  return out;
}

function normalLocation(v: string): string {
  const path = new URL(v, 'http://x').pathname;
  return path.replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, '(id)');
}

test('uploads, blobs and manifests: the statuses, codes and headers of docker-registry', async () => {
  const expected = await run(reg.url, false);
  const got = await run(strata.url, true);
  // Sanity: the sequence reached both good and bad paths on the real registry.
  assert.ok(expected.some((l) => l.includes(': 201 |')));
  assert.ok(expected.some((l) => l.includes(': 304')));
  assert.ok(expected.some((l) => l.includes('MANIFEST_BLOB_UNKNOWN')));
  assert.deepEqual(got, expected);
});

test('error details name the digest as docker-registry does', async () => {
  const bodyOf = async (base: string, method: string, path: string, body?: string) => {
    const a = await raw(
      base,
      method,
      path,
      body === undefined ? {} : { headers: ct(MediaType.dockerManifestList), body },
    );
    return (
      JSON.parse(a.body.toString('utf8')) as { errors: { code: string; detail?: unknown }[] }
    ).errors.map((e) => [e.code, e.detail]);
  };
  for (const [method, path, body] of [
    ['GET', `/v2/par/detail/blobs/${unknownDigest}`, undefined],
    ['PUT', '/v2/par/detail/manifests/x', unknownChildList],
  ] as const) {
    assert.deepEqual(
      await bodyOf(strata.url, method, path, body),
      await bodyOf(reg.url, method, path, body),
      path,
    );
  }
});

test('a chunk out of order: docker-registry 2.8 appends it, Strata answers 416 saying where the upload stands', async () => {
  const chunk = (base: string, l: string, from: number, to: number) =>
    raw(base, 'PATCH', l, {
      headers: { ...oct, 'content-range': `${from}-${to - 1}` },
      body: layer.subarray(from, to),
    });
  for (const base of [reg.url, strata.url]) {
    const start = await raw(base, 'POST', '/v2/par/order/blobs/uploads/');
    const first = await chunk(base, start.headers.get('location')!, 0, 20);
    assert.equal(first.status, 202);
    const skipping = await chunk(base, first.headers.get('location')!, 30, 40);
    if (base === reg.url) {
      // The spec asks for 416; docker-registry 2.8 reads no Content-Range and takes the bytes as the next.
      assert.equal(skipping.status, 202);
      assert.equal(skipping.headers.get('range'), '0-29');
      continue;
    }
    assert.equal(skipping.status, 416);
    assert.equal(skipping.code, 'RANGE_INVALID');
    const status = await raw(base, 'GET', first.headers.get('location')!);
    for (const h of ['location', 'range', 'docker-upload-uuid']) {
      assert.equal(skipping.headers.get(h), status.headers.get(h), h);
    }
    // The client resumes where the 416 said.
    const next = Number(skipping.headers.get('range')!.split('-')[1]) + 1;
    const rest = await chunk(base, skipping.headers.get('location')!, next, layer.length);
    assert.equal(rest.status, 202);
    const done = await raw(base, 'PUT', `${withQuery(rest.headers.get('location')!)}digest=${layerDigest}`);
    assert.equal(done.status, 201);
  }
});

test('skopeo, buildah and ctr: the same outcomes against docker-registry and Strata', async (t) => {
  const tools = await imageTools();
  t.after(() => tools.cleanup());
  const ctrd = await startContainerd({ t });
  const expected = await clients(reg.host, tools, ctrd);
  const got = await clients(strata.host, tools, ctrd);
  // Sanity: the work was done on docker-registry, and the deleted image was gone there.
  assert.ok(expected.filter((l) => l.includes('ERR')).length === 2, expected.join('\n'));
  assert.deepEqual(got, expected);
});

/** What each client step gave: a value that does not depend on the registry, or its kind of failure. */
async function clients(host: string, tools: ImageTools, ctrd: TestContainerd): Promise<string[]> {
  const out: string[] = [];
  const step = async (name: string, f: () => Promise<unknown>) => {
    try {
      out.push(`${name}: ${JSON.stringify(await f())}`);
    } catch (err) {
      const unknown = /manifest unknown|not found|may not exist/i.test(String(err));
      out.push(`${name}: ERR${unknown ? ' not found' : ` ${String(err)}`}`);
    }
  };
  const typeOf = async (ref: string) =>
    (JSON.parse((await skopeoRawManifest(ref)).toString('utf8')) as { mediaType?: string }).mediaType;
  const insecure = ['--src-tls-verify=false', '--dest-tls-verify=false'];
  await step('skopeo copy --all of a two-platform index', async () => {
    const index = await pushTwoPlatformIndex({ host }, 'cl/multi');
    const copied = await skopeoCopy(`${host}/cl/multi:latest`, `${host}/cl/multi-copy:latest`, { all: true });
    return [index.digest, copied === index.digest, index.manifests.length];
  });
  await step('skopeo copy of its own platform', () =>
    skopeoCopy(`${host}/cl/multi:latest`, `${host}/cl/one:latest`),
  );
  await step('skopeo copy --all --format v2s2', () =>
    skopeoCopy(`${host}/cl/multi:latest`, `${host}/cl/multi-v2s2:latest`, { all: true, format: 'v2s2' }),
  );
  await step('buildah push --format oci', async () => (await pushBusybox({ host }, 'cl/bb', 'v1')).digest);
  await step('buildah push --format docker', async () => {
    const dir = await tempDir('buildah-docker');
    try {
      await tools.buildah(['pull', '--quiet', '--tls-verify=false', `${host}/cl/bb:v1`]);
      const digestFile = join(dir, 'digest');
      await tools.buildah([
        'push',
        '--quiet',
        '--tls-verify=false',
        '--format',
        'docker',
        '--digestfile',
        digestFile,
        `${host}/cl/bb:v1`,
        `docker://${host}/cl/bb-docker:v1`,
      ]);
      const pushed = (await readFile(digestFile, 'utf8')).trim();
      return [
        pushed === digestOf(await skopeoRawManifest(`${host}/cl/bb-docker:v1`)),
        await typeOf(`${host}/cl/bb-docker:v1`),
      ];
    } finally {
      await removeTempDir(dir);
    }
  });
  await step('skopeo copy --format v2s2', async () => {
    await skopeoCopy(`${host}/cl/bb:v1`, `${host}/cl/bb-v2s2:v1`, { format: 'v2s2' });
    return typeOf(`${host}/cl/bb-v2s2:v1`);
  });
  await step('skopeo copy --format oci', async () => {
    await skopeoCopy(`${host}/cl/bb-docker:v1`, `${host}/cl/bb-oci:v1`, { format: 'oci' });
    return typeOf(`${host}/cl/bb-oci:v1`);
  });
  await step('skopeo sync', async () => {
    await tools.skopeo([
      'sync',
      '--src',
      'docker',
      '--dest',
      'docker',
      ...insecure,
      `${host}/cl/bb`,
      `${host}/synced`,
    ]);
    await tools.skopeo([
      'sync',
      '--all',
      '--src',
      'docker',
      '--dest',
      'docker',
      ...insecure,
      `${host}/cl/multi`,
      `${host}/synced`,
    ]);
    return [await skopeoListTags(`${host}/synced/bb`), await skopeoListTags(`${host}/synced/multi`)];
  });
  await step('skopeo delete', () =>
    tools.skopeo(['delete', '--tls-verify=false', `docker://${host}/cl/bb-v2s2:v1`]),
  );
  await step('deleted', () => skopeoRawManifest(`${host}/cl/bb-v2s2:v1`));
  await step('skopeo delete again', () =>
    tools.skopeo(['delete', '--tls-verify=false', `docker://${host}/cl/bb-v2s2:v1`]),
  );
  // An artifact naming the image as its subject: docker-registry 2.8 stores it as any manifest, Strata
  // also lists it as a referrer; skopeo copies it and the image alike from either.
  await step('an artifact with a subject, copied by skopeo', async () => {
    const base = `http://${host}`;
    const image = await skopeoRawManifest(`${host}/cl/bb:v1`);
    const cfg = Buffer.from('{}');
    const up = await raw(base, 'POST', '/v2/cl/bb/blobs/uploads/');
    const l = up.headers.get('location') ?? '';
    await raw(base, 'PUT', `${withQuery(l)}digest=${digestOf(cfg)}`, { headers: oct, body: cfg });
    const artifact = JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      artifactType: 'application/vnd.example.sbom',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: digestOf(cfg), size: cfg.length },
      layers: [],
      subject: { mediaType: MediaType.ociManifest, digest: digestOf(image), size: image.length },
    });
    const put = await raw(base, 'PUT', `/v2/cl/bb/manifests/${digestOf(artifact)}`, {
      headers: ct(MediaType.ociManifest),
      body: artifact,
    });
    const copied = await skopeoCopy(`${host}/cl/bb@${digestOf(artifact)}`, `${host}/cl/sbom:v1`);
    const subject = await skopeoCopy(`${host}/cl/bb:v1`, `${host}/cl/bb-again:v1`);
    return [put.status, copied === digestOf(artifact), subject === digestOf(image)];
  });
  const ctr = (args: string[]) => ctrd.ctr(args).then(() => 'ok');
  await step('ctr pull, tag, push', async () => {
    await ctr(['images', 'pull', '--plain-http', `${host}/cl/bb:v1`]);
    await ctr(['images', 'tag', `${host}/cl/bb:v1`, `${host}/ctr/bb:v1`]);
    await ctr(['images', 'push', '--plain-http', `${host}/ctr/bb:v1`]);
    return digestOf(await skopeoRawManifest(`${host}/ctr/bb:v1`));
  });
  await step('ctr pull --all-platforms, tag, push an index', async () => {
    await ctr(['images', 'pull', '--all-platforms', '--plain-http', `${host}/cl/multi:latest`]);
    await ctr(['images', 'tag', `${host}/cl/multi:latest`, `${host}/ctr/multi:latest`]);
    await ctr(['images', 'push', '--plain-http', `${host}/ctr/multi:latest`]);
    return digestOf(await skopeoRawManifest(`${host}/ctr/multi:latest`));
  });
  await step('ctr pulls back what it pushed', async () => {
    const names = [`${host}/ctr/bb:v1`, `${host}/ctr/multi:latest`];
    await ctr(['images', 'rm', ...names, `${host}/cl/bb:v1`, `${host}/cl/multi:latest`]);
    for (const n of names) await ctr(['images', 'pull', '--plain-http', n]);
    const listed = (await ctrd.ctr(['images', 'ls'])).split('\n').slice(1).filter(Boolean);
    await ctr(['images', 'rm', ...names]);
    return listed.map((l) => l.split(/\s+/).slice(0, 3).join(' ').replace(host, 'HOST')).sort();
  });
  return out;
}
