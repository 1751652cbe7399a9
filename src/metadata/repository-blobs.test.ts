import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { type Digest, digestOf } from '../oci/digest.ts';
import { MediaType } from '../oci/media-types.ts';
import { ContentMeta } from './content-labels.ts';
import { SCHEMA_VERSION } from './db.ts';
import { collectGarbage } from './gc.ts';
import { ImageStore } from './images.ts';
import { RepositoryBlobs } from './repository-blobs.ts';
import { openTestDb, type TestDb, throwsKind } from './test-db.ts';

const NS = 'strata-hosted';
let t: TestDb;
let content: ContentMeta;
let members: RepositoryBlobs;
beforeEach(() => {
  t = openTestDb();
  content = new ContentMeta(t.db);
  members = new RepositoryBlobs(t.db);
});
afterEach(() => t.cleanup());

const blob = (name: string): Digest => digestOf(name);
const ref = (key: string, i: number) => `containerd.io/gc.ref.content.${key}.${i}`;

describe('RepositoryBlobs', () => {
  it('adds only blobs the namespace holds, per repository', () => {
    const d = blob('layer');
    throwsKind(() => members.add(NS, 'team/a', d), 'NotFound');
    content.add(NS, d, 5);
    members.add(NS, 'team/a', d);
    members.add(NS, 'team/a', d); // again: nothing changes
    assert.equal(members.has(NS, 'team/a', d), true);
    assert.equal(members.has(NS, 'team/b', d), false);
    assert.equal(members.has('other', 'team/a', d), false);
  });

  it('lets the namespace go of a blob when its last repository removes it', () => {
    const d = blob('shared');
    content.add(NS, d, 6);
    members.add(NS, 'team/a', d);
    members.add(NS, 'team/b', d);
    const dirty = t.db.dirty;
    assert.equal(members.remove(NS, 'team/a', d), false);
    assert.equal(content.has(NS, d), true);
    throwsKind(() => members.remove(NS, 'team/a', d), 'NotFound');
    assert.equal(members.remove(NS, 'team/b', d), true);
    assert.equal(content.has(NS, d), false);
    assert.ok(t.db.dirty > dirty, 'a collection is asked for');
  });

  it('keeps nothing alive and goes with the content the collector removes', () => {
    const d = blob('member only');
    content.add(NS, d, 11);
    members.add(NS, 'team/a', d);
    const r = collectGarbage(t.db);
    assert.deepEqual(r.unreferencedDigests, [d]);
    // Linked again later, the blob is not back in its old repository.
    content.add(NS, d, 11);
    assert.equal(members.has(NS, 'team/a', d), false);
    content.remove(NS, d);
  });
});

describe('migration to repository blob membership', () => {
  it('makes existing hosted blobs members of the repositories whose manifests reference them', () => {
    const images = new ImageStore(t.db);
    const [config, layer, other, child] = [
      blob('config'),
      blob('layer'),
      blob('unreferenced'),
      blob('child'),
    ];
    for (const d of [config, layer, other, child]) content.add(NS, d, 1);
    const manifest = blob('manifest');
    content.add(NS, manifest, 1, { [ref('config', 0)]: config, [ref('l', 1)]: layer });
    const index = blob('index');
    content.add(NS, index, 1, { [ref('m', 0)]: child });
    const target = (digest: Digest, mediaType: string) => ({ mediaType, digest, size: 1 });
    images.create(NS, { name: `team/a@${manifest}`, target: target(manifest, MediaType.ociManifest) });
    images.create(NS, { name: 'team/b:v1', target: target(manifest, MediaType.ociManifest) });
    images.create(NS, { name: `team/c@${index}`, target: target(index, MediaType.ociIndex) });
    for (const d of [config, layer]) content.add('default', d, 1);
    content.add('default', manifest, 1, { [ref('config', 0)]: config, [ref('l', 1)]: layer });
    images.create('default', {
      name: 'docker.io/library/x:1',
      target: target(manifest, MediaType.ociManifest),
    });
    t.stepBackTo(2); // the version before membership
    const db = t.reopen();
    assert.equal(db.schemaVersion, SCHEMA_VERSION);
    const rows = db.sql
      .prepare('SELECT namespace, repository, digest FROM repository_blobs ORDER BY repository, digest')
      .all() as Array<{ namespace: string; repository: string; digest: string }>;
    const sorted = (repo: string) =>
      [config, layer].sort().map((digest) => ({ namespace: NS, repository: repo, digest }));
    // An index's children are manifests, not blobs; other namespaces are not hosted repositories.
    assert.deepEqual(rows, [...sorted('team/a'), ...sorted('team/b')]);
  });
});
