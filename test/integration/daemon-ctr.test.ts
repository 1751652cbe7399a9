// Acceptance: containerd's own ctr (Debian's 1.6) driving `strata daemon` over its unix socket, with images
// pulled from a real docker-registry. Each test gets a fresh daemon; the registry and its images are shared.
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Digest } from '../../src/oci/digest.ts';
import { parseTable, startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import {
  type PushedImage,
  type PushedIndex,
  pushMultiLayer,
  pushTwoPlatformIndex,
  skopeoRawManifest,
} from '../helpers/images.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';

interface RawManifest {
  config: { digest: Digest; size: number };
  layers: Array<{ digest: Digest; size: number }>;
}

/** containerd's progress.Bytes: 1024-based units, one decimal. */
function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

async function manifestOf(reg: TestRegistry, repoRef: string, d: string): Promise<RawManifest> {
  const bytes = await skopeoRawManifest(`${repoRef}@${d}`, reg.creds ? { creds: reg.creds } : {});
  return JSON.parse(bytes.toString('utf8')) as RawManifest;
}

const lines = (s: string): string[] => s.split('\n').filter((l) => l !== '');

async function blobFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const alg of await readdir(join(root, 'content', 'blobs'))) {
    for (const f of await readdir(join(root, 'content', 'blobs', alg))) out.push(`${alg}:${f}`);
  }
  return out.sort();
}

describe('strata daemon driven by ctr', () => {
  let reg: TestRegistry;
  let multi: PushedImage;
  let multiManifest: RawManifest;
  let index: PushedIndex;
  const repoOf = (ref: string) => ref.slice(0, ref.lastIndexOf(':'));

  before(async () => {
    reg = await startRegistry();
    multi = await pushMultiLayer(reg, 'team/app', { layers: 5, layerBytes: 256 * 1024 });
    multiManifest = await manifestOf(reg, repoOf(multi.ref), multi.digest);
    index = await pushTwoPlatformIndex(reg, 'team/multi');
  });
  after(async () => {
    await reg?.stop();
  });

  async function fetched(t: { after(fn: () => Promise<void>): void }, ref = multi.ref): Promise<TestDaemon> {
    const d = await startDaemon({ t });
    await d.ctrOk(['content', 'fetch', '--plain-http', ref]);
    return d;
  }

  test('content fetch of a multi-layer image stores every blob, and images ls shows size and platform', async (t) => {
    const d = await fetched(t);
    const rows = parseTable(await d.ctrOk(['images', 'ls']));
    assert.equal(rows.length, 1);
    const row = rows[0]!;
    assert.equal(row.REF, multi.ref);
    assert.equal(row.TYPE, multi.mediaType);
    assert.equal(row.DIGEST, multi.digest);
    // ctr's image size walks target → manifest → config + layers, counting each descriptor once.
    assert.equal(row.SIZE, humanBytes(multi.size + multi.blobBytes));
    assert.equal(row.PLATFORMS, 'linux/amd64');
    assert.equal(row.LABELS, '-');

    const stored = lines(await d.ctrOk(['content', 'ls', '-q'])).sort();
    const expected = [
      multi.digest,
      multiManifest.config.digest,
      ...multiManifest.layers.map((l) => l.digest),
    ];
    assert.deepEqual(stored, [...new Set(expected)].sort());
    assert.deepEqual(await blobFiles(d.root), stored);
  });

  test('content fetch of a two-platform index: host platform by default, more with --all-metadata and --all-platforms', async (t) => {
    const amd64 = await manifestOf(reg, repoOf(index.ref), index.manifests[0]!.digest);
    const arm64 = await manifestOf(reg, repoOf(index.ref), index.manifests[1]!.digest);
    const armOnly = arm64.layers
      .map((l) => l.digest)
      .filter((x) => !amd64.layers.some((l) => l.digest === x));
    assert.ok(armOnly.length > 0, 'the arm64 manifest has a layer of its own');
    const stored = async () => new Set(lines(await d.ctrOk(['content', 'ls', '-q'])));

    const d = await fetched(t, index.ref);
    const row = parseTable(await d.ctrOk(['images', 'ls']))[0]!;
    assert.equal(row.REF, index.ref);
    assert.equal(row.TYPE, index.mediaType);
    assert.equal(row.PLATFORMS, 'linux/amd64,linux/arm64');
    const amdBlobs = amd64.config.size + amd64.layers.reduce((n, l) => n + l.size, 0);
    assert.equal(row.SIZE, humanBytes(index.size + index.manifests[0]!.size + amdBlobs));
    // ctr 1.6 fetches only what the host platform needs unless told otherwise.
    let have = await stored();
    assert.ok(have.has(index.digest));
    assert.ok(have.has(index.manifests[0]!.digest));
    for (const l of amd64.layers) assert.ok(have.has(l.digest), `amd64 layer ${l.digest} stored`);
    assert.ok(!have.has(index.manifests[1]!.digest), 'arm64 manifest not fetched by default');

    await d.ctrOk(['content', 'fetch', '--plain-http', '--all-metadata', index.ref]);
    have = await stored();
    assert.ok(have.has(index.manifests[1]!.digest), 'arm64 manifest fetched with --all-metadata');
    assert.ok(have.has(arm64.config.digest), 'arm64 config fetched with --all-metadata');
    for (const l of armOnly) assert.ok(!have.has(l), `arm64 layer ${l} not fetched with --all-metadata`);

    await d.ctrOk(['content', 'fetch', '--plain-http', '--all-platforms', index.ref]);
    have = await stored();
    for (const l of armOnly) assert.ok(have.has(l), `arm64 layer ${l} fetched with --all-platforms`);
    assert.equal(parseTable(await d.ctrOk(['images', 'ls'])).length, 1);
    assert.deepEqual([...have].sort(), await blobFiles(d.root));
  });

  test('images label sets, filters and replaces labels', async (t) => {
    const d = await fetched(t);
    assert.equal((await d.ctrOk(['images', 'label', multi.ref, 'a=b'])).trim(), 'a=b');
    assert.deepEqual(lines(await d.ctrOk(['images', 'ls', '-q', 'labels.a==b'])), [multi.ref]);
    assert.deepEqual(lines(await d.ctrOk(['images', 'ls', '-q', 'labels.a==c'])), []);
    assert.equal(parseTable(await d.ctrOk(['images', 'ls']))[0]!.LABELS, 'a=b');

    await d.ctrOk(['images', 'label', multi.ref, 'x=y']);
    assert.equal(parseTable(await d.ctrOk(['images', 'ls']))[0]!.LABELS, 'a=b,x=y');
    assert.equal((await d.ctrOk(['images', 'label', '-r', multi.ref, 'c=d'])).trim(), 'c=d');
    assert.equal(parseTable(await d.ctrOk(['images', 'ls']))[0]!.LABELS, 'c=d');
    assert.deepEqual(lines(await d.ctrOk(['images', 'ls', '-q', 'labels.a==b'])), []);
    // `k=` deletes one label.
    await d.ctrOk(['images', 'label', multi.ref, 'c=']);
    assert.equal(parseTable(await d.ctrOk(['images', 'ls']))[0]!.LABELS, '-');
    // Labels of an image that is not there: ctr reports containerd's NotFound.
    const missing = await d.ctr(['images', 'label', `${multi.ref}-nope`, 'a=b']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /image ".*-nope": not found/);
  });

  test('content ls filters on the distribution source label', async (t) => {
    const d = await fetched(t);
    const all = lines(await d.ctrOk(['content', 'ls', '-q'])).sort();
    const source = 'labels."containerd.io/distribution.source.127.0.0.1"';
    const bySource = lines(await d.ctrOk(['content', 'ls', '-q', `${source}~=team/`])).sort();
    assert.deepEqual(bySource, all);
    assert.deepEqual(lines(await d.ctrOk(['content', 'ls', '-q', source])).sort(), all);
    // A value may not start with '.', in containerd's grammar as in ours.
    const dot = await d.ctr(['content', 'ls', '-q', `${source}~=.`]);
    assert.notEqual(dot.code, 0);
    assert.match(
      dot.stderr,
      /filters: parse error: .*~= >\|\.\|< \]: expected value or quoted: invalid argument/,
    );
    // `content ls` pads with tabs: DIGEST SIZE AGE LABELS, labels comma-joined in no fixed order.
    const table = lines(await d.ctrOk(['content', 'ls'])).map((l) => l.split(/\t+/));
    assert.deepEqual(table[0], ['DIGEST', 'SIZE', 'AGE', 'LABELS']);
    const manifestRow = table.find((r) => r[0] === multi.digest);
    assert.ok(manifestRow, 'the manifest is listed');
    const labels = new Set(manifestRow[3]!.split(','));
    assert.ok(labels.has('containerd.io/distribution.source.127.0.0.1=team/app'));
    assert.ok(labels.has(`containerd.io/gc.ref.content.config=${multiManifest.config.digest}`));
    for (const [i, l] of multiManifest.layers.entries()) {
      assert.ok(labels.has(`containerd.io/gc.ref.content.l.${i}=${l.digest}`));
    }
    assert.deepEqual(
      lines(
        await d.ctrOk(['content', 'ls', '-q', 'labels."containerd.io/distribution.source.127.0.0.1"==other']),
      ),
      [],
    );
  });

  test('images rm --sync leaves no unreferenced content, in metadata or on disk', async (t) => {
    const d = await fetched(t);
    assert.ok((await blobFiles(d.root)).length > 0);
    assert.equal((await d.ctrOk(['images', 'rm', '--sync', multi.ref])).trim(), multi.ref);
    assert.deepEqual(lines(await d.ctrOk(['images', 'ls', '-q'])), []);
    assert.deepEqual(lines(await d.ctrOk(['content', 'ls', '-q'])), []);
    assert.deepEqual(await blobFiles(d.root), []);
    // Removing it again is only a warning for ctr.
    const again = await d.ctr(['images', 'rm', multi.ref]);
    assert.equal(again.code, 0);
    assert.match(again.stderr, /not found/);
  });

  test('a blob shared with another namespace survives the removal in one of them', async (t) => {
    const d = await fetched(t);
    await d.ctrOk(['content', 'fetch', '--plain-http', multi.ref], { namespace: 'other' });
    await d.ctrOk(['images', 'rm', '--sync', multi.ref]);
    assert.deepEqual(lines(await d.ctrOk(['content', 'ls', '-q'])), []);
    const otherContent = lines(await d.ctrOk(['content', 'ls', '-q'], { namespace: 'other' })).sort();
    assert.ok(otherContent.length > 0);
    assert.deepEqual(await blobFiles(d.root), otherContent);
    const blob = await d.ctrOk(['content', 'get', multi.digest], { namespace: 'other' });
    assert.match(blob, /"layers"/);
  });

  test('namespaces are isolated: another namespace lists nothing', async (t) => {
    const d = await fetched(t);
    assert.deepEqual(lines(await d.ctrOk(['images', 'ls', '-q'], { namespace: 'other' })), []);
    assert.deepEqual(lines(await d.ctrOk(['content', 'ls', '-q'], { namespace: 'other' })), []);
    assert.deepEqual(lines(await d.ctrOk(['images', 'ls', '-q'])), [multi.ref]);
    const nsRows = parseTable(await d.ctrOk(['namespaces', 'ls']));
    assert.deepEqual(
      nsRows.map((r) => r.NAME),
      ['default'],
    );
    // A namespace holding images cannot be removed.
    const rm = await d.ctr(['namespaces', 'rm', 'default']);
    assert.notEqual(rm.code, 0);
    assert.match(rm.stderr, /namespace "default" must be empty, but it still has images, blobs/);
  });

  test('a malformed filter is containerd’s InvalidArgument parse error', async (t) => {
    const d = await startDaemon({ t });
    const r = await d.ctr(['images', 'ls', 'name==']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /filters: parse error: \[name==\]: expected value or quoted: invalid argument/);
    const c = await d.ctr(['content', 'ls', 'labels.foo-bar==x']);
    assert.notEqual(c.code, 0);
    assert.match(c.stderr, /expected an operator/);
  });

  test('a restarted daemon keeps images, labels and content', async (t) => {
    const d = await fetched(t);
    await d.ctrOk(['images', 'label', multi.ref, 'keep=me']);
    const before = lines(await d.ctrOk(['content', 'ls', '-q'])).sort();
    const uuidBefore = /UUID:\s+(\S+)/.exec(await d.ctrOk(['version']))?.[1];
    await d.restart();
    const rows = parseTable(await d.ctrOk(['images', 'ls']));
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.REF, multi.ref);
    assert.equal(rows[0]!.LABELS, 'keep=me');
    assert.equal(rows[0]!.SIZE, humanBytes(multi.size + multi.blobBytes));
    assert.deepEqual(lines(await d.ctrOk(['content', 'ls', '-q'])).sort(), before);
    assert.ok(uuidBefore);
    assert.equal(/UUID:\s+(\S+)/.exec(await d.ctrOk(['version']))?.[1], uuidBefore);
  });
});
