// The overlayfs snapshotter of a real `strata daemon` over gRPC: containerd's mounts (bind without parents,
// overlay with lowerdir nearest first, upperdir and workdir, read-only views), nothing copied, usage of
// the upper directory, Diff.Apply writing overlayfs's own whiteouts and opaque directories into the upper,
// Diff of two overlay snapshots that applies back to the same tree, and removal, GC and cleanup.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import type * as grpc from '@grpc/grpc-js';
import { Diff } from '../../src/api/gen/containerd/services/diff/v1/diff_pb.ts';
import { Leases } from '../../src/api/gen/containerd/services/leases/v1/leases_pb.ts';
import { Snapshots } from '../../src/api/gen/containerd/services/snapshots/v1/snapshots_pb.ts';
import { callUnary } from '../../src/api/grpc/client.ts';
import { digestOf } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { type LayerEntry, makeLayer, snapshotTree } from '../fixtures/hostile-layers/build.ts';
import { putContent } from '../helpers/content-put.ts';
import { startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import { expectCode } from '../helpers/grpc-assert.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const run = promisify(execFile);
const SN = 'overlayfs';
const UNCOMPRESSED = 'containerd.io/uncompressed';
const INDEX_OFF = existsSync('/sys/module/overlay/parameters/index') ? ['index=off'] : [];

type ProtoMount = { type: string; source: string; options: string[] };

describe('Snapshots and Diff services (overlayfs)', () => {
  let d: TestDaemon;
  let client: grpc.Client;
  let snapDir: string;
  let work: string;
  const opts = () => ({ metadata: d.metadata('default', { 'containerd-lease': 'suite' }) });
  const prepare = async (key: string, parent = '') =>
    (await callUnary(client, Snapshots.method.prepare, { snapshotter: SN, key, parent }, opts())).mounts;
  const view = async (key: string, parent = '') =>
    (await callUnary(client, Snapshots.method.view, { snapshotter: SN, key, parent }, opts())).mounts;
  const commit = (name: string, key: string) =>
    callUnary(client, Snapshots.method.commit, { snapshotter: SN, name, key }, opts());
  const remove = (key: string) =>
    callUnary(client, Snapshots.method.remove, { snapshotter: SN, key }, opts());
  const usage = (key: string) => callUnary(client, Snapshots.method.usage, { snapshotter: SN, key }, opts());
  const plain = (ms: ProtoMount[]) => ms.map((m) => ({ type: m.type, source: m.source, options: m.options }));
  let n = 0;

  /** Mounts `mounts` (as ctr would) on a fresh directory while `fn` runs. */
  async function mounted<T>(mounts: ProtoMount[], fn: (dir: string) => Promise<T>): Promise<T> {
    const m = mounts[0]!;
    const dir = join(work, `mnt-${n++}`);
    await mkdir(dir);
    await run('mount', ['-t', m.type === 'bind' ? 'none' : m.type, '-o', m.options.join(','), m.source, dir]);
    try {
      return await fn(dir);
    } finally {
      await run('umount', [dir]);
    }
  }

  const put = (bytes: Buffer, mediaType: string) => putContent(client, opts(), bytes, mediaType);

  /** The tree without times (parents made for a layer cannot keep them all). */
  async function tree(dir: string) {
    const t = await snapshotTree(dir);
    return Object.fromEntries(Object.entries(t).map(([p, { mtime: _, ...node }]) => [p, node]));
  }

  before(async () => {
    d = await startDaemon();
    client = d.client();
    snapDir = join(d.root, 'snapshots', 'overlayfs', 'snapshots');
    work = await tempDir('snapshots-overlayfs');
    await callUnary(client, Leases.method.create, { id: 'suite' }, { metadata: d.metadata() });
  });
  after(async () => {
    await d?.stop();
    if (work) await removeTempDir(work);
  });

  test("mounts are containerd's, and a child copies nothing of its parents", async () => {
    const base = await prepare('base-a');
    assert.equal(base.length, 1);
    const baseFs = base[0]!.source;
    assert.match(baseFs, new RegExp(`^${snapDir}/[1-9][0-9]*/fs$`));
    assert.deepEqual(plain(base), [{ type: 'bind', source: baseFs, options: ['rw', 'rbind'] }]);
    await mkdir(join(baseFs, 'etc'));
    await writeFile(join(baseFs, 'etc/passwd'), 'root:x:0:0\n');
    await commit('base', 'base-a');

    const child = await prepare('child-a', 'base');
    const childDir = join(child[0]!.options.find((o) => o.startsWith('upperdir='))!.slice(9), '..');
    assert.deepEqual(plain(child), [
      {
        type: 'overlay',
        source: 'overlay',
        options: [...INDEX_OFF, `workdir=${childDir}/work`, `upperdir=${childDir}/fs`, `lowerdir=${baseFs}`],
      },
    ]);
    assert.deepEqual(await readdir(join(childDir, 'fs')), []);
    const m = await callUnary(client, Snapshots.method.mounts, { snapshotter: SN, key: 'child-a' }, opts());
    assert.deepEqual(plain(m.mounts), plain(child));
    await commit('child', 'child-a');

    assert.deepEqual(plain(await view('v1', 'base')), [
      { type: 'bind', source: baseFs, options: ['ro', 'rbind'] },
    ]);
    assert.deepEqual(plain(await view('v2', 'child')), [
      { type: 'overlay', source: 'overlay', options: [...INDEX_OFF, `lowerdir=${childDir}/fs:${baseFs}`] },
    ]);
    const v0 = await view('v0');
    assert.match(v0[0]!.source, new RegExp(`^${snapDir}/[1-9][0-9]*/fs$`));
    assert.deepEqual(plain(v0), [{ type: 'bind', source: v0[0]!.source, options: ['ro', 'rbind'] }]);
    assert.deepEqual(await readdir(v0[0]!.source), []);
    for (const k of ['v0', 'v1', 'v2']) await remove(k);
  });

  test('writes through a real overlay mount land in the upper; usage is measured there', async () => {
    const active = await prepare('grow', 'child');
    await mounted(active, async (dir) => {
      assert.equal((await lstat(join(dir, 'etc/passwd'))).isFile(), true);
      await writeFile(join(dir, 'big'), Buffer.alloc(1 << 20, 1));
      await rm(join(dir, 'etc/passwd'));
    });
    const upper = active[0]!.options.find((o) => o.startsWith('upperdir='))!.slice(9);
    const st = await lstat(join(upper, 'etc/passwd'));
    assert.ok(st.isCharacterDevice() && st.rdev === 0, 'the kernel left a whiteout in the upper');
    const u = await usage('grow');
    assert.ok(u.size >= 1n << 20n && u.size < (1n << 20n) + 64n * 1024n, `usage ${u.size}`);
    await commit('grown', 'grow');
    const after = await callUnary(client, Snapshots.method.usage, { snapshotter: SN, key: 'grown' }, opts());
    assert.equal(after.size, u.size);
    const v = await view('grown-view', 'grown');
    await mounted(v, async (dir) => {
      assert.deepEqual((await readdir(dir)).sort(), ['big', 'etc']);
      assert.deepEqual(await readdir(join(dir, 'etc')), []);
    });
    await remove('grown-view');
  });

  test('Diff.Apply writes overlayfs whiteouts and opaque dirs into the upper; Diff applies back', async () => {
    const lower = await prepare('l-a');
    const lfs = lower[0]!.source;
    await mkdir(join(lfs, 'etc'));
    await writeFile(join(lfs, 'etc/keep'), 'keep');
    await writeFile(join(lfs, 'etc/delete'), 'gone soon');
    await mkdir(join(lfs, 'opq'));
    await writeFile(join(lfs, 'opq/old'), 'old');
    await commit('l', 'l-a');

    const layer: LayerEntry[] = [
      { name: 'etc/', type: 'directory' },
      { name: 'etc/.wh.delete' },
      { name: 'etc/new', content: 'new' },
      { name: 'opq/', type: 'directory' },
      { name: 'opq/.wh..wh..opq' },
      { name: 'opq/fresh', content: 'fresh' },
    ];
    const tar = await makeLayer(layer);
    const desc = await put(gzipSync(tar), MediaType.ociLayerGzip);
    const target = await prepare('u-a', 'l');
    const r = await callUnary(
      client,
      Diff.method.apply,
      { diff: { ...desc, annotations: { [UNCOMPRESSED]: digestOf(tar) } }, mounts: target },
      opts(),
    );
    assert.equal(r.applied?.digest, digestOf(tar));
    const upper = target[0]!.options.find((o) => o.startsWith('upperdir='))!.slice(9);
    const wo = await lstat(join(upper, 'etc/delete'));
    assert.ok(wo.isCharacterDevice() && wo.rdev === 0, 'a whiteout is a 0/0 character device');
    const { stdout } = await run('getfattr', [
      '-n',
      'trusted.overlay.opaque',
      '--only-values',
      join(upper, 'opq'),
    ]);
    assert.equal(stdout, 'y');
    assert.equal(existsSync(join(upper, 'opq/old')), false);
    const merged = await mounted(target, (dir) => tree(dir));
    assert.deepEqual(Object.keys(merged).sort(), ['etc', 'etc/keep', 'etc/new', 'opq', 'opq/fresh']);
    await commit('u', 'u-a');

    // Diff of the two (a bind view and an overlay view) writes a layer that applies back to the same tree.
    const left = await view('left', 'l');
    const right = await view('right', 'u');
    const out = await callUnary(
      client,
      Diff.method.diff,
      { left, right, mediaType: MediaType.ociLayer },
      opts(),
    );
    const replay = await prepare('replay', 'l');
    await callUnary(client, Diff.method.apply, { diff: out.diff!, mounts: replay }, opts());
    assert.deepEqual(await mounted(replay, (dir) => tree(dir)), merged);

    // Lowers other than the snapshot's parents are refused: the daemon reads only what it stacked.
    const again = await prepare('forge', 'l');
    const forged = again.map((m) => ({
      ...m,
      options: m.options.map((o) => (o.startsWith('lowerdir=') ? `lowerdir=${work}` : o)),
    }));
    await expectCode(
      callUnary(client, Diff.method.apply, { diff: desc, mounts: forged }, opts()),
      3 /* INVALID_ARGUMENT */,
      /does not stack the snapshot's parents/,
    );
    for (const k of ['left', 'right', 'replay', 'forge']) await remove(k);
  });

  test("a hardlink to this layer's whiteout is a whiteout too, and leaves the shared device alone", async () => {
    const device = join(dirname(snapDir), 'whiteout');
    const shared = async () => {
      const st = await lstat(device);
      const attrs = await run('getfattr', ['-h', '-d', '-m', '-', device]);
      return { mode: st.mode, uid: st.uid, gid: st.gid, mtimeMs: st.mtimeMs, attrs: attrs.stdout };
    };
    const layer: LayerEntry[] = [
      { name: '.wh.f' },
      {
        name: 'h',
        type: 'link',
        linkname: 'f',
        mode: 0o6777,
        uid: 1234,
        gid: 4321,
        mtime: 5,
        pax: { 'SCHILY.xattr.trusted.mark': 'x' },
      },
    ];
    const tar = await makeLayer(layer);
    const desc = await put(tar, MediaType.ociLayer);
    // A parent, so that the apply writes an overlay upper with whiteouts.
    await prepare('wh-base-a');
    await commit('wh-base', 'wh-base-a');
    const target = await prepare('wh-link', 'wh-base');
    const before = await shared();
    await callUnary(client, Diff.method.apply, { diff: desc, mounts: target }, opts());
    assert.deepEqual(await shared(), before, 'the whiteout device every snapshot links to changed');
    const upper = target[0]!.options.find((o) => o.startsWith('upperdir='))!.slice(9);
    for (const name of ['f', 'h']) {
      const st = await lstat(join(upper, name));
      assert.ok(st.isCharacterDevice() && st.rdev === 0, `${name} is a whiteout`);
    }
    await remove('wh-link');
    await remove('wh-base');
  });

  test('an opaque marker after a file in a lower directory keeps the file, as containerd does', async () => {
    const base = await prepare('opq-late-a');
    await mkdir(join(base[0]!.source, 'a/b'), { recursive: true });
    await writeFile(join(base[0]!.source, 'a/b/old'), 'old');
    await writeFile(join(base[0]!.source, 'a/x'), 'x');
    await commit('opq-late', 'opq-late-a');
    // The marker comes after an entry below a/b, which the lower has: a/b is made in the upper as its
    // parent. containerd 1.6 (overlayfs) keeps a/b/c and hides the rest of a.
    const tar = await makeLayer([{ name: 'a/b/c', content: 'c' }, { name: 'a/.wh..wh..opq' }]);
    const desc = await put(tar, MediaType.ociLayer);
    const target = await prepare('opq-late-b', 'opq-late');
    await callUnary(client, Diff.method.apply, { diff: desc, mounts: target }, opts());
    const merged = await mounted(target, (dir) => tree(dir));
    assert.deepEqual(Object.keys(merged).sort(), ['a', 'a/b', 'a/b/c']);
    await remove('opq-late-b');
    await remove('opq-late');
  });

  test('remove, GC and cleanup take snapshot directories with them', async () => {
    const before = new Set(await readdir(snapDir));
    await callUnary(client, Leases.method.create, { id: 'short' }, { metadata: d.metadata() });
    const md = { metadata: d.metadata('default', { 'containerd-lease': 'short' }) };
    const p = await callUnary(client, Snapshots.method.prepare, { snapshotter: SN, key: 'short-lived' }, md);
    const dir = join(p.mounts[0]!.source, '..');
    assert.ok(existsSync(dir));
    await callUnary(client, Leases.method.delete, { id: 'short', sync: true }, { metadata: d.metadata() });
    assert.equal(existsSync(dir), false, 'GC removed the directory of the unheld snapshot');

    await mkdir(join(snapDir, 'stray/fs'), { recursive: true });
    await mkdir(join(snapDir, '999999'));
    await callUnary(client, Snapshots.method.cleanup, { snapshotter: SN }, opts());
    assert.deepEqual(new Set(await readdir(snapDir)), before);

    const leaf = await prepare('leaf', 'base');
    const leafDir = join(leaf[0]!.options.find((o) => o.startsWith('upperdir='))!.slice(9), '..');
    await remove('leaf');
    assert.equal(existsSync(leafDir), false);
    await expectCode(remove('base'), 9 /* FAILED_PRECONDITION */, /cannot remove snapshot with child/);
  });

  test('the id of a removed snapshot is never given again, also after a restart', async () => {
    // A snapshot without parents mounts ROOT/snapshots/<id>/fs.
    const idOf = (ms: ProtoMount[]) => Number(basename(dirname(ms[0]!.source)));
    const newest = idOf(await prepare('ids-newest'));
    await remove('ids-newest');
    assert.ok(idOf(await prepare('ids-next')) > newest);
    await remove('ids-next');
    await d.restart();
    const after = idOf(await prepare('ids-after-restart'));
    assert.ok(after > newest + 1, `id ${after} after ${newest} and ${newest + 1} were used`);
  });
});
