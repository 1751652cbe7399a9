import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { type Digest, digestOf } from '../oci/digest.ts';
import { MediaType } from '../oci/media-types.ts';
import { ContentMeta } from './content-labels.ts';
import type { Nanos } from './db.ts';
import { collectGarbage, collectGarbageSliced, collection, type GcResult } from './gc.ts';
import { ImageStore } from './images.ts';
import { LeaseStore } from './leases.ts';
import { SnapshotStore } from './snapshots.ts';
import { openTestDb, type TestDb } from './test-db.ts';

const NS = 'default';
const SECOND = 1_000_000_000n;
// A fixed clock keeps expiry decisions independent of when the test runs.
let clockNow: Nanos = 1_700_000_000n * SECOND;
const clock = (): Nanos => {
  clockNow += 1n;
  return clockNow;
};
const rfc3339 = (n: Nanos): string => new Date(Number(n / 1_000_000n)).toISOString();

let t: TestDb;
let images: ImageStore;
let content: ContentMeta;
let leases: LeaseStore;
beforeEach(() => {
  t = openTestDb({ clock });
  images = new ImageStore(t.db);
  content = new ContentMeta(t.db);
  leases = new LeaseStore(t.db);
});
afterEach(() => t.cleanup());

const blob = (name: string): Digest => digestOf(name);
const present = async (ns: string): Promise<string[]> =>
  (await content.list(ns, [])).map((i) => i.digest).sort();
const names = (...ds: Digest[]): string[] => [...ds].sort();

function addSnapshot(
  ns: string,
  snapshotter: string,
  key: string,
  parent = '',
  labels: Record<string, string> = {},
) {
  const now = clock();
  t.db.write(() => {
    t.db.ensureNamespace(ns, now);
    t.db.sql
      .prepare(
        `INSERT INTO snapshots (namespace, snapshotter, key, kind, parent, labels, created_at, updated_at, backing_id)
         VALUES (?, ?, ?, 'committed', ?, ?, ?, ?, ?)`,
      )
      .run(ns, snapshotter, key, parent, JSON.stringify(labels), now, now, `backing-${key}`);
  });
}

function addIngest(
  ns: string,
  ref: string,
  expiresAt: Nanos | null,
  expects: { expected: string; shared: boolean } = { expected: '', shared: false },
) {
  const now = clock();
  t.db.write(() => {
    t.db.ensureNamespace(ns, now);
    t.db.sql
      .prepare(
        'INSERT INTO ingests (namespace, ref, expected, shared, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)',
      )
      .run(ns, ref, expects.expected, expects.shared ? 1 : 0, now, expiresAt);
  });
}

/** index → manifest → config + layer, labelled the way a pull labels them. */
function pulledImage(ns: string, name: string, prefix: string) {
  const [index, manifest, config, layer] = ['index', 'manifest', 'config', 'layer'].map((p) =>
    blob(prefix + p),
  ) as [Digest, Digest, Digest, Digest];
  content.add(ns, layer, 100);
  content.add(ns, config, 10);
  content.add(ns, manifest, 20, {
    'containerd.io/gc.ref.content.config': config,
    'containerd.io/gc.ref.content.l.0': layer,
  });
  content.add(ns, index, 30, { 'containerd.io/gc.ref.content.m.0': manifest });
  images.create(ns, { name, target: { mediaType: MediaType.ociIndex, digest: index, size: 30 } });
  return { index, manifest, config, layer };
}

describe('collectGarbage', () => {
  it('keeps what images reach through gc.ref labels and removes the rest', async () => {
    const img = pulledImage(NS, 'docker.io/library/a:1', 'a-');
    const orphan = blob('orphan');
    content.add(NS, orphan, 5);
    content.add(NS, blob('unlabelled-child'), 5); // a child nobody labelled is not discovered
    const result = collectGarbage(t.db);
    assert.deepEqual(await present(NS), names(img.index, img.manifest, img.config, img.layer));
    assert.deepEqual(result.unreferencedDigests, names(orphan, blob('unlabelled-child')));
    assert.deepEqual(result.content.map((c) => c.digest).sort(), names(orphan, blob('unlabelled-child')));

    images.delete(NS, 'docker.io/library/a:1');
    const after = collectGarbage(t.db);
    assert.deepEqual(await present(NS), []);
    assert.deepEqual(after.unreferencedDigests, names(img.index, img.manifest, img.config, img.layer));
  });

  it('follows only well-formed reference keys', async () => {
    const parent = blob('parent');
    const kids = ['exact', 'dot', 'slash', 'bad'].map((k) => blob(k)) as [Digest, Digest, Digest, Digest];
    for (const k of kids) content.add(NS, k, 1);
    content.add(NS, parent, 1, {
      'containerd.io/gc.root': '',
      'containerd.io/gc.ref.content': kids[0],
      'containerd.io/gc.ref.content.x': kids[1],
      'containerd.io/gc.ref.content/y': kids[2],
      'containerd.io/gc.ref.contentz': kids[3],
    });
    // An empty value is dropped on write, so gc.root needs a value to count.
    assert.equal(content.info(NS, parent).labels['containerd.io/gc.root'], undefined);
    content.update(NS, { digest: parent, labels: { 'containerd.io/gc.root': 'true' } }, [
      'labels.containerd.io/gc.root',
    ]);
    collectGarbage(t.db);
    assert.deepEqual(await present(NS), names(parent, kids[0], kids[1], kids[2]));
  });

  it('keeps leased content until the lease goes, and collects expired leases', async () => {
    const held = blob('held');
    const expiring = blob('expiring');
    leases.create(NS, {
      id: 'live',
      labels: { 'containerd.io/gc.expire': rfc3339(clockNow + 3600n * SECOND) },
    });
    leases.create(NS, { id: 'old', labels: { 'containerd.io/gc.expire': rfc3339(clockNow - SECOND) } });
    leases.create(NS, { id: 'bad-expiry', labels: { 'containerd.io/gc.expire': 'someday' } });
    content.add(NS, held, 1, {}, { lease: 'live' });
    content.add(NS, expiring, 1, {}, { lease: 'old' });
    content.add(NS, blob('kept-by-bad-expiry'), 1, {}, { lease: 'bad-expiry' });
    const result = collectGarbage(t.db);
    assert.deepEqual(result.leases, [{ namespace: NS, id: 'old' }]);
    assert.deepEqual(
      (await leases.list(NS, [])).map((l) => l.id),
      ['bad-expiry', 'live'],
    );
    assert.deepEqual(await present(NS), names(held, blob('kept-by-bad-expiry')));

    leases.delete(NS, 'live');
    collectGarbage(t.db);
    assert.deepEqual(await present(NS), names(blob('kept-by-bad-expiry')));
  });

  it('keeps the whole tree under a lease, but only the direct object under a flat lease', async () => {
    const child = blob('child');
    const parent = blob('parent');
    content.add(NS, child, 1);
    content.add(NS, parent, 1, { 'containerd.io/gc.ref.content.0': child });
    leases.create(NS, { id: 'deep' });
    leases.addResource(NS, 'deep', { type: 'content', id: parent });
    collectGarbage(t.db);
    assert.deepEqual(await present(NS), names(child, parent));

    leases.delete(NS, 'deep');
    leases.create(NS, { id: 'flat', labels: { 'containerd.io/gc.flat': 'true' } });
    leases.addResource(NS, 'flat', { type: 'content', id: parent });
    collectGarbage(t.db);
    assert.deepEqual(await present(NS), names(parent));
  });

  it('treats gc.root and a future gc.expire on content as roots', async () => {
    content.add(NS, blob('root'), 1, { 'containerd.io/gc.root': 'x' });
    content.add(NS, blob('future'), 1, { 'containerd.io/gc.expire': rfc3339(clockNow + 60n * SECOND) });
    content.add(NS, blob('past'), 1, { 'containerd.io/gc.expire': rfc3339(clockNow - 60n * SECOND) });
    collectGarbage(t.db);
    assert.deepEqual(await present(NS), names(blob('root'), blob('future')));
    collectGarbage(t.db, { now: clockNow + 120n * SECOND });
    assert.deepEqual(await present(NS), names(blob('root')));
  });

  it('follows back references from a child to a live parent', async () => {
    const parent = blob('parent');
    const child = blob('child');
    content.add(NS, parent, 1, { 'containerd.io/gc.root': '1' });
    content.add(NS, child, 1, { 'containerd.io/gc.bref.content': parent });
    content.add(NS, blob('child-of-dead'), 1, { 'containerd.io/gc.bref.content.x': blob('dead') });
    collectGarbage(t.db);
    assert.deepEqual(await present(NS), names(parent, child));
  });

  it('keeps unpacked snapshots through the config label and parent chain', async () => {
    addSnapshot(NS, 'overlayfs', 'chain-1');
    addSnapshot(NS, 'overlayfs', 'chain-2', 'chain-1');
    addSnapshot(NS, 'overlayfs', 'stray');
    addSnapshot(NS, 'native', 'chain-2'); // same key, other snapshotter
    addSnapshot(NS, 'overlayfs', 'rooted', '', { 'containerd.io/gc.root': 'true' });
    const img = pulledImage(NS, 'img', 'u-');
    content.update(
      NS,
      { digest: img.config, labels: { 'containerd.io/gc.ref.snapshot.overlayfs': 'chain-2' } },
      ['labels.containerd.io/gc.ref.snapshot.overlayfs'],
    );
    const result = collectGarbage(t.db);
    assert.deepEqual(result.snapshots.map((s) => `${s.snapshotter}/${s.key}`).sort(), [
      'native/chain-2',
      'overlayfs/stray',
    ]);
    const left = t.db.sql.prepare('SELECT snapshotter, key FROM snapshots ORDER BY snapshotter, key').all();
    assert.deepEqual(
      left.map((r) => `${(r as { snapshotter: string }).snapshotter}/${(r as { key: string }).key}`),
      ['overlayfs/chain-1', 'overlayfs/chain-2', 'overlayfs/rooted'],
    );
  });

  it('keeps leased and unexpired ingests', async () => {
    addIngest(NS, 'leased', null);
    addIngest(NS, 'fresh', clockNow + 3600n * SECOND);
    addIngest(NS, 'stale', clockNow - SECOND);
    addIngest(NS, 'no-expiry', null);
    leases.create(NS, { id: 'pull' });
    leases.addResource(NS, 'pull', { type: 'ingests', id: 'leased' });
    const result = collectGarbage(t.db);
    assert.deepEqual(result.ingests.map((g) => g.ref).sort(), ['no-expiry', 'stale']);
  });

  it("holds an ingest's expected content only when the ingest shares its bytes, as containerd 1.6", async () => {
    // containerd 1.6 records an ingest's expected digest only when the bytes were on disk at open (the
    // writer links them); a writer still sending its own bytes holds nothing in the namespace.
    const [shared, writing, leasedWriting, expired] = ['shared', 'writing', 'leased', 'expired'].map(
      blob,
    ) as [Digest, Digest, Digest, Digest];
    for (const d of [shared, writing, leasedWriting, expired]) content.add(NS, d, 1);
    const live = clockNow + 3600n * SECOND;
    addIngest(NS, 'links', live, { expected: shared, shared: true });
    addIngest(NS, 'writes', live, { expected: writing, shared: false });
    addIngest(NS, 'leased-writes', null, { expected: leasedWriting, shared: false });
    leases.create(NS, { id: 'pull' });
    leases.addResource(NS, 'pull', { type: 'ingests', id: 'leased-writes' });
    addIngest(NS, 'stale', clockNow - SECOND, { expected: expired, shared: true });
    const result = collectGarbage(t.db);
    assert.deepEqual(await present(NS), [shared]);
    assert.deepEqual(
      result.ingests.map((g) => g.ref),
      ['stale'],
    );
  });

  it('keeps an image whose gc.expire has passed, and what it holds, as containerd 1.6 does', async () => {
    // Image expiry is containerd 2's; 1.6 (whose ctr drives the daemon) keeps every image record.
    const img = pulledImage(NS, 'temp', 't-');
    images.update(NS, { name: 'temp', labels: { 'containerd.io/gc.expire': rfc3339(clockNow - SECOND) } }, [
      'labels.containerd.io/gc.expire',
    ]);
    const result = collectGarbage(t.db);
    assert.deepEqual(result.content, []);
    assert.deepEqual(
      (await images.list(NS, [])).map((i) => i.name),
      ['temp'],
    );
    assert.deepEqual(await present(NS), names(img.index, img.manifest, img.config, img.layer));
  });

  it('collects per namespace; bytes are unreferenced only when no namespace holds them', async () => {
    const shared = blob('shared');
    content.add('ns1', shared, 1);
    content.add('ns2', shared, 1);
    images.create('ns1', {
      name: 'x',
      target: { mediaType: MediaType.ociManifest, digest: shared, size: 1 },
    });
    const first = collectGarbage(t.db);
    assert.deepEqual(first.content, [{ namespace: 'ns2', digest: shared }]);
    assert.deepEqual(first.unreferencedDigests, []);
    assert.deepEqual(await present('ns1'), [shared]);
    images.delete('ns1', 'x');
    const second = collectGarbage(t.db);
    assert.deepEqual(second.unreferencedDigests, [shared]);
  });

  it('persists its removals', async () => {
    content.add(NS, blob('gone'), 1);
    content.add(NS, blob('kept'), 1, { 'containerd.io/gc.root': '1' });
    collectGarbage(t.db);
    content = new ContentMeta(t.reopen());
    assert.deepEqual(await present(NS), [blob('kept')]);
  });
});

/** Runs a collection step by step, calling `during` at its `at`-th pause; returns the pauses it made. */
function collectPausing(at: number, during: () => void): { result: GcResult; pauses: number } {
  const steps = collection(t.db);
  for (let pauses = 0; ; pauses++) {
    const step = steps.next();
    if (step.done) return { result: step.value, pauses };
    if (pauses === at) during();
  }
}

const tempObjects = () =>
  t.db.sql.prepare("SELECT name FROM sqlite_temp_master WHERE type IN ('table', 'trigger')").all();

describe('collection in steps', () => {
  it('deletes nothing that a write between two steps makes live, wherever the write lands', async () => {
    // Wherever the writes land (scan, mark or sweep), what they reach among what still exists then
    // survives: an image created on a garbage manifest keeps its config, layer and snapshots; a root's new
    // label keeps its target; a new lease keeps its resource; a new snapshot keeps its parent. What was
    // deleted before a write landed is gone, as it would be after any collection.
    const snapshotKeys = () =>
      (t.db.sql.prepare('SELECT key FROM snapshots ORDER BY key').all() as Array<{ key: string }>).map(
        (r) => r.key,
      );
    let imageOnManifest = 0;
    for (let at = 0; ; at++) {
      t.cleanup();
      t = openTestDb({ clock });
      images = new ImageStore(t.db);
      content = new ContentMeta(t.db);
      leases = new LeaseStore(t.db);
      const native = new SnapshotStore(t.db, 'native');
      // More rows than a page of the scan, so the content table is read in several steps.
      const fillers = Array.from({ length: 300 }, (_, i) => blob(`filler ${i}`));
      for (const d of fillers) content.add(NS, d, 1);
      const [config, layer, labelled, leased, root, manifest] = [
        'config',
        'layer',
        'labelled',
        'leased',
        'root',
        'manifest',
      ].map(blob) as [Digest, Digest, Digest, Digest, Digest, Digest];
      for (const d of [layer, labelled, leased]) content.add(NS, d, 1);
      addSnapshot(NS, 'native', 'chain-1');
      addSnapshot(NS, 'native', 'chain-2', 'chain-1');
      addSnapshot(NS, 'native', 'base');
      content.add(NS, config, 1, { 'containerd.io/gc.ref.snapshot.native': 'chain-2' });
      content.add(NS, manifest, 1, {
        'containerd.io/gc.ref.content.config': config,
        'containerd.io/gc.ref.content.l.0': layer,
      });
      content.add(NS, root, 1, { 'containerd.io/gc.root': 'yes' });

      const kept: string[] = [root];
      const keptSnapshots: string[] = [];
      const { result, pauses } = collectPausing(at, () => {
        const has = (d: Digest) => content.has(NS, d);
        const snapshots = new Set(snapshotKeys());
        if (has(manifest)) {
          imageOnManifest++;
          images.create(NS, {
            name: 'late',
            target: { mediaType: MediaType.ociManifest, digest: manifest, size: 1 },
          });
          kept.push(manifest, ...[layer, config].filter(has));
          if (has(config)) keptSnapshots.push(...['chain-2', 'chain-1'].filter((k) => snapshots.has(k)));
        }
        if (has(labelled)) {
          content.update(NS, { digest: root, labels: { 'containerd.io/gc.ref.content.x': labelled } }, [
            'labels.containerd.io/gc.ref.content.x',
          ]);
          kept.push(labelled);
        }
        if (has(leased)) {
          leases.create(NS, { id: 'late' });
          leases.addResource(NS, 'late', { type: 'content', id: leased });
          kept.push(leased);
        }
        if (snapshots.has('base')) {
          native.create(NS, { key: 'work', parent: 'base', kind: 'active', labels: {}, backingId: 'w' });
          keptSnapshots.push('base', 'work');
        }
      });
      if (at >= pauses) break;
      const left = new Set(await present(NS));
      for (const d of kept) assert.ok(left.has(d), `${d} gone after writes at pause ${at} of ${pauses}`);
      const leftSnapshots = new Set(snapshotKeys());
      for (const k of keptSnapshots) assert.ok(leftSnapshots.has(k), `snapshot ${k} gone, pause ${at}`);
      assert.ok(!fillers.some((d) => left.has(d)), 'what nothing holds goes');
      assert.ok(result.content.length >= fillers.length);
      assert.ok(pauses > 5, `pauses: ${pauses}`);
    }
    assert.ok(
      imageOnManifest > 3,
      `an image was created on the garbage manifest at ${imageOnManifest} pauses`,
    );
  });

  it('keeps an expired lease that is written again during the collection', async () => {
    leases.create(NS, { id: 'renewed', labels: { 'containerd.io/gc.expire': rfc3339(clockNow - SECOND) } });
    content.add(NS, blob('held'), 1, {}, { lease: 'renewed' });
    const { result } = collectPausing(0, () => {
      leases.delete(NS, 'renewed');
      leases.create(NS, { id: 'renewed' });
      leases.addResource(NS, 'renewed', { type: 'content', id: blob('held') });
    });
    assert.deepEqual(result.leases, []);
    assert.deepEqual(
      (await leases.list(NS, [])).map((l) => l.id),
      ['renewed'],
    );
    assert.deepEqual(await present(NS), [blob('held')]);
  });

  it('drops its write barrier when done, and when abandoned midway', () => {
    for (let i = 0; i < 300; i++) content.add(NS, blob(`row ${i}`), 1);
    collectGarbage(t.db);
    assert.deepEqual(tempObjects(), []);
    for (let i = 0; i < 300; i++) content.add(NS, blob(`row ${i}`), 1);
    const steps = collection(t.db);
    steps.next();
    assert.ok(tempObjects().length > 0);
    steps.return(undefined as never);
    assert.deepEqual(tempObjects(), []);
  });

  it('lets other work run between its slices; a database shared with other connections is one slice', async () => {
    for (let i = 0; i < 600; i++) content.add(NS, blob(`row ${i}`), 1);
    let ticks = 0;
    let running = true;
    const tick = (): void => {
      if (!running) return;
      ticks++;
      setImmediate(tick);
    };
    setImmediate(tick);
    const { result, slices } = await collectGarbageSliced(t.db, { sliceMs: 0 });
    running = false;
    assert.equal(result.content.length, 600);
    assert.ok(slices > 5, `slices: ${slices}`);
    assert.ok(ticks >= slices - 2, `${ticks} turns of other work in ${slices} slices`);

    // Other connections' writes are out of the write barrier's sight: one transaction, as before.
    const shared = openTestDb({ clock, shared: true });
    try {
      new ContentMeta(shared.db).add(NS, blob('alone'), 1);
      const one = await collectGarbageSliced(shared.db, { sliceMs: 0 });
      assert.equal(one.slices, 1);
      assert.equal(one.result.content.length, 1);
    } finally {
      shared.cleanup();
    }
  });
});
