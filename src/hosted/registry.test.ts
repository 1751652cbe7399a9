import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { pino } from 'pino';
import { waitFor } from '../../test/helpers/process.ts';
import { ContentStore } from '../content/store.ts';
import { ContentView } from '../metadata/content.ts';
import { MetadataDb } from '../metadata/db.ts';
import { GcRunner } from '../metadata/gc-runner.ts';
import { ImageNames } from '../metadata/image-names.ts';
import { ImageStore } from '../metadata/images.ts';
import { RepositoryBlobs } from '../metadata/repository-blobs.ts';
import { type Digest, digestOf } from '../oci/digest.ts';
import { MediaType } from '../oci/media-types.ts';
import { RegistryError } from './errors.ts';
import { DEFAULT_HOSTED_NAMESPACE, HostedRegistry, MAX_PARKED } from './registry.ts';

let dir: string;
let store: ContentStore;
let db: MetadataDb;
let view: ContentView;
let gc: GcRunner;
let clock: number;
let hosted: HostedRegistry;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'strata-hosted-'));
  store = await ContentStore.open(join(dir, 'content'));
  db = new MetadataDb(join(dir, 'meta.db'));
  view = new ContentView({ store, db });
  gc = new GcRunner({ db, content: store, logger: pino({ level: 'silent' }), delayMs: 60_000 });
  clock = Date.now();
  hosted = new HostedRegistry({
    view,
    images: new ImageStore(db),
    names: new ImageNames(db),
    members: new RepositoryBlobs(db),
    blobHoldMs: 1000,
    now: () => clock,
  });
});

afterEach(async () => {
  await hosted.close();
  await gc.close();
  await store.close();
  db.close();
  await rm(dir, { recursive: true, force: true });
});

async function pushBlob(repo: string, bytes: Buffer | string): Promise<{ digest: Digest; size: number }> {
  const data = Buffer.from(bytes);
  const up = await hosted.startUpload(repo);
  const d = await hosted.finishUpload(repo, up.id, digestOf(data), Readable.from([data]));
  return { digest: d.digest, size: d.size };
}

async function pushImage(repo: string, tag: string, extra: Record<string, unknown> = {}) {
  const config = await pushBlob(repo, `{"architecture":"amd64","os":"linux","tag":"${tag}"}`);
  const layer = await pushBlob(repo, `layer of ${tag}`);
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, ...config },
      layers: [{ mediaType: MediaType.ociLayerGzip, ...layer }],
      ...extra,
    }),
  );
  const m = await hosted.putManifest(repo, tag, bytes);
  return { ...m, size: bytes.length, config, layer };
}

function code(err: unknown): string | undefined {
  return err instanceof RegistryError ? err.code : undefined;
}

describe('hosted registry', () => {
  it('takes an index only once its manifests are in the repository', async () => {
    const a = await pushImage('multi/app', 'amd');
    const index = (digests: { digest: Digest; size: number }[]) =>
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.ociIndex,
          manifests: digests.map((d) => ({ mediaType: MediaType.ociManifest, ...d })),
        }),
      );
    // In another repository, the same manifest is not there.
    await assert.rejects(
      hosted.putManifest('other/app', 'latest', index([a])),
      (e) => code(e) === 'MANIFEST_BLOB_UNKNOWN',
    );
    const stored = await hosted.putManifest('multi/app', 'latest', index([a]));
    assert.equal(
      view.info(hosted.namespace, stored.digest).labels['containerd.io/gc.ref.content.m.0'],
      a.digest,
    );
    assert.deepEqual(await hosted.tags('multi/app'), ['amd', 'latest']);
  });

  it('lists tags only of a repository that has some, as docker-registry: one pushed by digest alone is unknown', async () => {
    const img = await pushImage('tags/app', 'v1');
    await hosted.putManifest('tags/app', 'v2', Buffer.from((await hosted.manifest('tags/app', 'v1')).bytes));
    assert.deepEqual(await hosted.tags('tags/app'), ['v1', 'v2']);
    // Another repository whose name extends this one's shares no tag with it.
    await pushImage('tags/app-x', 'other');
    assert.deepEqual(await hosted.tags('tags/app'), ['v1', 'v2']);

    const config = await pushBlob('tags/bydigest', '{"architecture":"amd64","os":"linux"}');
    const bytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, ...config },
        layers: [],
      }),
    );
    await hosted.putManifest('tags/bydigest', digestOf(bytes), bytes);
    await assert.rejects(hosted.tags('tags/bydigest'), (e) => code(e) === 'NAME_UNKNOWN');
    await assert.rejects(hosted.tags('tags/never'), (e) => code(e) === 'NAME_UNKNOWN');
    // The manifest stays when its tags go; tags/list then knows the repository no more.
    await hosted.deleteManifest('tags/app', 'v1');
    await hosted.deleteManifest('tags/app', 'v2');
    assert.equal((await hosted.manifest('tags/app', img.digest)).digest, img.digest);
    await assert.rejects(hosted.tags('tags/app'), (e) => code(e) === 'NAME_UNKNOWN');
  });

  it('lists the repositories that have a manifest in the catalog, a page at a time', async () => {
    assert.deepEqual(await hosted.catalog(10), { repositories: [], more: false });
    for (const repo of ['b/app', 'a', 'a/b', 'a-b']) await pushImage(repo, 'v1');
    // Blobs alone make no repository.
    await pushBlob('c/blobs-only', 'a blob with no manifest');
    // In docker-registry's order: `/` before every other character.
    assert.deepEqual(await hosted.catalog(10), { repositories: ['a', 'a/b', 'a-b', 'b/app'], more: false });
    assert.deepEqual(await hosted.catalog(2), { repositories: ['a', 'a/b'], more: true });
    assert.deepEqual(await hosted.catalog(2, 'a/b'), { repositories: ['a-b', 'b/app'], more: false });
    // A repository whose manifests are all deleted is listed no more.
    const m = await hosted.manifest('a/b', 'v1');
    await hosted.deleteManifest('a/b', m.digest);
    assert.deepEqual((await hosted.catalog(10)).repositories, ['a', 'a-b', 'b/app']);
  });

  it('walks the catalog in slices, handing the event loop on between them', async () => {
    // Names of many `-` and digits (see catalog.test.ts), some 4,700 lookups in all; records made
    // directly, as pushes would make them.
    const images = new ImageStore(db);
    const repos: string[] = [];
    const letters = 'abcdefghijklmnopqrstuvwxyz';
    for (const a of letters)
      for (const b of `${letters}0123456789`) repos.push(`${a}${b}${'-0'.repeat(126)}`);
    const target = { mediaType: MediaType.ociManifest, digest: digestOf('m'), size: 1 };
    for (const r of repos) images.create(DEFAULT_HOSTED_NAMESPACE, { name: `${r}:v1`, target });
    let turns = 0;
    let walking = true;
    const turn = () => {
      turns++;
      if (walking) setImmediate(turn);
    };
    setImmediate(turn);
    const page = await hosted.catalog(1000);
    walking = false;
    assert.deepEqual(page, { repositories: [...repos].sort(), more: false });
    assert.ok(turns > 1, `${turns} turns of the event loop`);
    // A request that is gone stops its walk at the next slice.
    const gone = new AbortController();
    gone.abort(new Error('client went away'));
    await assert.rejects(hosted.catalog(1000, undefined, gone.signal), /client went away/);
  });

  it('takes a manifest whose missing layers say where to fetch them (urls), and keeps nothing for them', async () => {
    const config = await pushBlob('far/app', '{"architecture":"amd64","os":"linux"}');
    const local = await pushBlob('far/app', 'a layer that is here');
    const elsewhere = (mediaType: string, urls?: string[]) => ({
      mediaType,
      digest: digestOf(`${mediaType} bytes nobody pushed`),
      size: 1234,
      ...(urls && { urls }),
    });
    const manifest = (mediaType: string, configType: string, layers: Record<string, unknown>[]) =>
      Buffer.from(
        JSON.stringify({ schemaVersion: 2, mediaType, config: { mediaType: configType, ...config }, layers }),
      );
    const url = ['https://layers.example.com/a.tar.gz', 'http://mirror.example.com/a'];
    // Docker's foreign layer, OCI's non-distributable ones, and any layer listed with its URLs: skopeo
    // pushes none of them.
    const oci = manifest(MediaType.ociManifest, MediaType.ociConfig, [
      elsewhere(MediaType.ociLayerNondistributableGzip, url),
      elsewhere(MediaType.ociLayerNondistributable, url),
      elsewhere(MediaType.ociLayerGzip, url),
      { mediaType: MediaType.ociLayerGzip, ...local },
    ]);
    const m = await hosted.putManifest('far/app', 'oci', oci);
    const docker = manifest(MediaType.dockerManifest, MediaType.dockerConfig, [
      elsewhere(MediaType.dockerLayerForeignGzip, url),
      { mediaType: MediaType.dockerLayerGzip, ...local },
    ]);
    await hosted.putManifest('far/app', 'docker', docker);
    assert.deepEqual((await hosted.manifest('far/app', 'oci')).bytes, oci);
    // Only what is here is referenced (and so kept by the collector).
    const refs = Object.entries(view.info(hosted.namespace, m.digest).labels)
      .filter(([k]) => k.startsWith('containerd.io/gc.ref.content.'))
      .map(([, v]) => v);
    assert.deepEqual(refs.sort(), [config.digest, local.digest].sort());

    // Without URLs, or with none a client could fetch, a missing layer is still refused; so is a config.
    for (const layer of [
      elsewhere(MediaType.dockerLayerForeignGzip),
      elsewhere(MediaType.ociLayerNondistributableGzip, []),
      elsewhere(MediaType.dockerLayerForeignGzip, ['ftp://layers.example.com/a.tar.gz']),
      elsewhere(MediaType.dockerLayerForeignGzip, ['https://layers.example.com/a.tar.gz#x']),
      elsewhere(MediaType.dockerLayerForeignGzip, [...url, 'not a url']),
    ]) {
      await assert.rejects(
        hosted.putManifest(
          'far/app',
          'bad',
          manifest(MediaType.dockerManifest, MediaType.dockerConfig, [layer]),
        ),
        (e) => code(e) === 'MANIFEST_BLOB_UNKNOWN',
        JSON.stringify(layer),
      );
    }
    const farConfig = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { ...elsewhere(MediaType.ociConfig, url) },
        layers: [],
      }),
    );
    await assert.rejects(
      hosted.putManifest('far/app', 'bad', farConfig),
      (e) => code(e) === 'MANIFEST_BLOB_UNKNOWN',
    );
  });

  it('lists referrers by subject and artifact type, per repository', async () => {
    const subject = await pushImage('app/one', 'v1');
    const sig = await pushImage('app/one', 'sig', {
      artifactType: 'application/vnd.example.signature',
      subject: { mediaType: MediaType.ociManifest, digest: subject.digest, size: subject.size },
    });
    assert.equal(sig.subject, subject.digest);
    const all = await hosted.referrers('app/one', subject.digest);
    assert.deepEqual(
      all.map((r) => [r.digest, r.artifactType]),
      [[sig.digest, 'application/vnd.example.signature']],
    );
    assert.deepEqual(await hosted.referrers('app/one', subject.digest, 'application/other'), []);
    assert.deepEqual(await hosted.referrers('app/two', subject.digest), []);
  });

  it('lists an index as a referrer with its own artifact type, and without one when it has none', async () => {
    const subject = await pushImage('idx/app', 'v1');
    const child = await pushImage('idx/app', 'child');
    const index = (extra: Record<string, unknown>) =>
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.ociIndex,
          manifests: [{ mediaType: MediaType.ociManifest, digest: child.digest, size: child.size }],
          subject: { mediaType: MediaType.ociManifest, digest: subject.digest, size: subject.size },
          ...extra,
        }),
      );
    const typed = await hosted.putManifest(
      'idx/app',
      'typed',
      index({ artifactType: 'application/vnd.example.sbom' }),
    );
    const untyped = await hosted.putManifest('idx/app', 'untyped', index({}));
    const all = await hosted.referrers('idx/app', subject.digest);
    assert.deepEqual(
      all.map((r) => [r.digest, r.mediaType, r.artifactType]).sort(),
      [
        [typed.digest, MediaType.ociIndex, 'application/vnd.example.sbom'],
        [untyped.digest, MediaType.ociIndex, undefined],
      ].sort(),
    );
    assert.deepEqual(
      (await hosted.referrers('idx/app', subject.digest, 'application/vnd.example.sbom')).map(
        (r) => r.digest,
      ),
      [typed.digest],
    );
  });

  it('holds a blob nobody references for a while, then the collector frees it', async () => {
    clock = Date.now() - 10_000; // pushed long ago: their holds have passed
    const kept = await pushImage('hold/app', 'v1');
    const stale = await pushBlob('hold/app', 'nobody referenced me in time');
    clock = Date.now();
    const fresh = await pushBlob('hold/app', 'nobody references me yet');
    await gc.collect();
    assert.ok(await store.has(fresh.digest), 'held while the hold lasts');
    assert.equal(await store.has(stale.digest), false);
    // The image's blobs are kept by the manifest's references, the manifest by its tag.
    for (const d of [kept.digest, kept.config.digest, kept.layer.digest]) assert.ok(await store.has(d));
  });

  it('shows a blob only in the repositories it was pushed or mounted to', async () => {
    const b = await pushBlob('team/b', 'a layer pushed to team/b alone');
    assert.equal(hosted.blob('team/b', b.digest).descriptor.size, b.size);
    assert.throws(
      () => hosted.blob('team/a', b.digest),
      (e) => code(e) === 'BLOB_UNKNOWN',
    );
    assert.throws(
      () => hosted.deleteBlob('team/a', b.digest),
      (e) => code(e) === 'BLOB_UNKNOWN',
    );
    const config = await pushBlob('team/a', '{"architecture":"amd64","os":"linux"}');
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, ...config },
        layers: [{ mediaType: MediaType.ociLayerGzip, ...b }],
      }),
    );
    await assert.rejects(
      hosted.putManifest('team/a', 'v1', manifest),
      (e) => code(e) === 'MANIFEST_BLOB_UNKNOWN',
    );
    // A mount needs the source to have the blob; without a source it is an upload.
    assert.equal(hosted.mountBlob('team/a', b.digest, 'team/c'), undefined);
    assert.equal(hosted.mountBlob('team/a', b.digest, undefined), undefined);
    assert.equal(hosted.mountBlob('team/a', b.digest, 'Not/Valid'), undefined);
    assert.equal(hosted.mountBlob('team/a', b.digest, 'team/b')?.size, b.size);
    assert.equal(hosted.blob('team/a', b.digest).descriptor.digest, b.digest);
    await hosted.putManifest('team/a', 'v1', manifest);
    // The manifest's own bytes are no blob of the repository, as in distribution.
    assert.throws(
      () => hosted.blob('team/a', digestOf(manifest)),
      (e) => code(e) === 'BLOB_UNKNOWN',
    );
  });

  it('deletes a blob from one repository; the bytes go once no repository has it', async () => {
    clock = Date.now() - 10_000; // pushed long ago: no hold keeps it
    const b = await pushBlob('del/b', 'shared by two repositories');
    assert.ok(hosted.mountBlob('del/a', b.digest, 'del/b'));
    hosted.deleteBlob('del/b', b.digest);
    assert.throws(
      () => hosted.blob('del/b', b.digest),
      (e) => code(e) === 'BLOB_UNKNOWN',
    );
    assert.equal(hosted.blob('del/a', b.digest).descriptor.digest, b.digest);
    hosted.deleteBlob('del/a', b.digest);
    assert.equal(view.has(hosted.namespace, b.digest), false);
    await gc.collect();
    assert.equal(await store.has(b.digest), false);
    // Pushed again elsewhere, it is not back in the repositories it was deleted from.
    await pushBlob('del/c', 'shared by two repositories');
    assert.throws(
      () => hosted.blob('del/a', b.digest),
      (e) => code(e) === 'BLOB_UNKNOWN',
    );
  });

  it('lets the collector take an expired blob and its memberships with it', async () => {
    clock = Date.now() - 10_000;
    const b = await pushBlob('gc/b', 'held, then forgotten');
    assert.ok(hosted.mountBlob('gc/a', b.digest, 'gc/b'));
    await gc.collect();
    assert.equal(await store.has(b.digest), false, 'membership keeps nothing alive');
    clock = Date.now();
    await pushBlob('gc/c', 'held, then forgotten');
    for (const repo of ['gc/a', 'gc/b'])
      assert.throws(
        () => hosted.blob(repo, b.digest),
        (e) => code(e) === 'BLOB_UNKNOWN',
        repo,
      );
  });

  it('refuses chunks out of order and bytes of another digest, keeping nothing of the latter', async () => {
    const up = await hosted.startUpload('chunks/app');
    await hosted.appendUpload('chunks/app', up.id, Readable.from([Buffer.from('abc')]), 0);
    await assert.rejects(
      hosted.appendUpload('chunks/app', up.id, Readable.from([Buffer.from('x')]), 5),
      (e) => code(e) === 'RANGE_INVALID',
    );
    assert.equal((await hosted.uploadStatus('chunks/app', up.id)).offset, 3);
    // The id works only in its own repository.
    await assert.rejects(
      hosted.uploadStatus('chunks/other', up.id),
      (e) => code(e) === 'BLOB_UPLOAD_UNKNOWN',
    );
    await assert.rejects(
      hosted.finishUpload('chunks/app', up.id, digestOf('something else')),
      (e) => code(e) === 'DIGEST_INVALID',
    );
    await assert.rejects(hosted.uploadStatus('chunks/app', up.id), (e) => code(e) === 'BLOB_UPLOAD_UNKNOWN');
    assert.equal(view.has(hosted.namespace, digestOf('abc')), false);
  });

  it('checks the bytes of a sha512 upload even when the blob is here already: a digest alone joins no repository', async () => {
    const secret = Buffer.from('the private layer');
    const d = digestOf(secret, 'sha512');
    const up = await hosted.startUpload('private/a');
    assert.equal((await hosted.finishUpload('private/a', up.id, d, Readable.from([secret]))).digest, d);
    assert.equal(hosted.blob('private/a', d).descriptor.size, secret.length);
    // Someone who knows the digest, not the bytes, pushes other bytes under it to their own repository.
    const other = await hosted.startUpload('evil/b');
    await assert.rejects(
      hosted.finishUpload('evil/b', other.id, d, Readable.from([Buffer.from('not it')])),
      (e) => code(e) === 'DIGEST_INVALID',
    );
    assert.throws(
      () => hosted.blob('evil/b', d),
      (e) => code(e) === 'BLOB_UNKNOWN',
    );
    // The real bytes pushed again are still welcome.
    const again = await hosted.startUpload('team/c');
    assert.equal((await hosted.finishUpload('team/c', again.id, d, Readable.from([secret]))).digest, d);
    assert.equal(hosted.blob('team/c', d).descriptor.size, secret.length);
    for (const [repo, id] of [
      ['evil/b', other.id],
      ['team/c', again.id],
    ] as const)
      await assert.rejects(hosted.uploadStatus(repo, id), (e) => code(e) === 'BLOB_UPLOAD_UNKNOWN');
  });

  it('starts an upload with a record only: the first bytes create its files; cancel and expiry as before', async () => {
    const a = await hosted.startUpload('lazy/app');
    const b = await hosted.startUpload('lazy/app');
    assert.deepEqual(await store.listStatuses(), [], 'no ingest files before the first bytes');
    assert.equal((await hosted.uploadStatus('lazy/app', a.id)).offset, 0);
    await assert.rejects(hosted.uploadStatus('lazy/other', a.id), (e) => code(e) === 'BLOB_UPLOAD_UNKNOWN');
    await assert.rejects(
      hosted.appendUpload('lazy/other', a.id, Readable.from([Buffer.from('x')])),
      (e) => code(e) === 'BLOB_UPLOAD_UNKNOWN',
    );
    assert.equal(
      (await hosted.appendUpload('lazy/app', a.id, Readable.from([Buffer.from('ab')]), 0)).offset,
      2,
    );
    assert.equal((await store.listStatuses()).length, 1);
    const d = await hosted.finishUpload('lazy/app', a.id, digestOf('abc'), Readable.from([Buffer.from('c')]));
    assert.equal(d.size, 3);
    // Cancelled before any byte came.
    await hosted.cancelUpload('lazy/app', b.id);
    await assert.rejects(hosted.uploadStatus('lazy/app', b.id), (e) => code(e) === 'BLOB_UPLOAD_UNKNOWN');
    await assert.rejects(hosted.cancelUpload('lazy/app', b.id), (e) => code(e) === 'BLOB_UPLOAD_UNKNOWN');
    assert.deepEqual(await store.listStatuses(), []);
  });

  it("keeps an upload's writer open between its requests, and lets go of it on cancel and close", async () => {
    const unknown = (e: unknown) => code(e) === 'BLOB_UPLOAD_UNKNOWN';
    const a = await hosted.startUpload('park/app');
    await hosted.appendUpload('park/app', a.id, Readable.from([Buffer.from('ab')]), 0);
    await hosted.appendUpload('park/app', a.id, Readable.from([Buffer.from('cd')]), 2);
    // Once closed, another registry on the same store can write the upload (its lock is free).
    await hosted.close();
    const other = new HostedRegistry({
      view,
      images: new ImageStore(db),
      names: new ImageNames(db),
      members: new RepositoryBlobs(db),
    });
    assert.equal(
      (await other.appendUpload('park/app', a.id, Readable.from([Buffer.from('e')]), 4)).offset,
      5,
    );
    await other.close();
    const d = await hosted.finishUpload(
      'park/app',
      a.id,
      digestOf('abcdef'),
      Readable.from([Buffer.from('f')]),
    );
    assert.equal(d.size, 6);
    // A cancel after a chunk closes the writer kept for it, and the ingest goes.
    const b = await hosted.startUpload('park/app');
    await hosted.appendUpload('park/app', b.id, Readable.from([Buffer.from('xy')]));
    await hosted.cancelUpload('park/app', b.id);
    await assert.rejects(hosted.uploadStatus('park/app', b.id), unknown);
    assert.deepEqual(await store.listStatuses(), []);
  });

  it('keeps at most MAX_PARKED writers open between requests, closing the one parked longest', async () => {
    const ids: string[] = [];
    for (let i = 0; i <= MAX_PARKED; i++) {
      const up = await hosted.startUpload('many/app');
      await hosted.appendUpload('many/app', up.id, Readable.from([Buffer.from('a')]));
      ids.push(up.id);
    }
    // The first upload's writer was closed for the last one: its lock is free for another registry.
    const other = new HostedRegistry({
      view,
      images: new ImageStore(db),
      names: new ImageNames(db),
      members: new RepositoryBlobs(db),
    });
    const first = ids[0]!;
    const offset = await waitFor(
      async () => (await other.appendUpload('many/app', first, Readable.from([Buffer.from('b')]))).offset,
      10_000,
      { what: 'the first upload to be writable by another registry' },
    );
    assert.equal(offset, 2);
    await other.close();
    // Its own registry goes on with it, and with every other upload.
    const d = await hosted.finishUpload(
      'many/app',
      first,
      digestOf('abc'),
      Readable.from([Buffer.from('c')]),
    );
    assert.equal(d.size, 3);
    const last = ids.at(-1)!;
    assert.equal((await hosted.appendUpload('many/app', last, Readable.from([Buffer.from('b')]))).offset, 2);
  });
});
