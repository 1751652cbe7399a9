// The Snapshots service of a real `strata daemon` over gRPC, with containerd's codes and messages: prepare,
// view, mounts, commit, remove, stat, update, list, usage and cleanup, namespaces, leases and GC.
import assert from 'node:assert/strict';
import { chmod, lchown, link, mkdir, readdir, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { Leases } from '../../src/api/gen/containerd/services/leases/v1/leases_pb.ts';
import { Kind, Snapshots } from '../../src/api/gen/containerd/services/snapshots/v1/snapshots_pb.ts';
import { callServerStream, callUnary } from '../../src/api/grpc/client.ts';
import { snapshotTree } from '../fixtures/hostile-layers/build.ts';
import { startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import { exists, expectCode } from '../helpers/grpc-assert.ts';

const SN = 'native';
const asRoot = process.getuid?.() === 0;

describe('Snapshots service (native)', () => {
  let d: TestDaemon;
  let client: grpc.Client;
  let snapDir: string;
  // Everything is created under a per-namespace lease, or the collection a Remove schedules would take
  // the unreferenced snapshots, as containerd's would.
  const md = (ns = 'default', extra: Record<string, string> = {}) =>
    d.metadata(ns, { 'containerd-lease': `suite-${ns}`, ...extra });
  const opts = (ns?: string, extra?: Record<string, string>) => ({ metadata: md(ns, extra) });
  const prepare = (key: string, parent = '', labels: Record<string, string> = {}, o = opts()) =>
    callUnary(client, Snapshots.method.prepare, { snapshotter: SN, key, parent, labels }, o);
  const view = (key: string, parent = '', o = opts()) =>
    callUnary(client, Snapshots.method.view, { snapshotter: SN, key, parent }, o);
  const commit = (name: string, key: string, labels: Record<string, string> = {}, o = opts()) =>
    callUnary(client, Snapshots.method.commit, { snapshotter: SN, name, key, labels }, o);
  const remove = (key: string, o = opts()) =>
    callUnary(client, Snapshots.method.remove, { snapshotter: SN, key }, o);
  const statOf = async (key: string, o = opts()) =>
    (await callUnary(client, Snapshots.method.stat, { snapshotter: SN, key }, o)).info!;
  const usage = (key: string) => callUnary(client, Snapshots.method.usage, { snapshotter: SN, key }, opts());
  const list = async (filters: string[] = [], o = opts()) => {
    const out = [];
    for await (const r of callServerStream(client, Snapshots.method.list, { snapshotter: SN, filters }, o)) {
      out.push(...r.info);
    }
    return out;
  };
  const sourceOf = async (key: string) => {
    const r = await callUnary(client, Snapshots.method.mounts, { snapshotter: SN, key }, opts());
    return r.mounts[0]!.source;
  };

  before(async () => {
    d = await startDaemon();
    client = d.client();
    snapDir = join(d.root, 'snapshots', 'native', 'snapshots');
    for (const ns of ['default', 'other']) {
      await callUnary(client, Leases.method.create, { id: `suite-${ns}` }, { metadata: d.metadata(ns) });
    }
  });
  after(async () => {
    await d?.stop();
  });

  test('snapshotter and namespace are required', async () => {
    await expectCode(
      callUnary(client, Snapshots.method.stat, { snapshotter: '', key: 'x' }, opts()),
      grpc.status.INVALID_ARGUMENT,
      'snapshotter argument missing: invalid argument',
    );
    await expectCode(
      callUnary(client, Snapshots.method.prepare, { snapshotter: 'btrfs', key: 'x' }, opts()),
      grpc.status.INVALID_ARGUMENT,
      'snapshotter not loaded: btrfs: invalid argument',
    );
    await expectCode(
      callUnary(
        client,
        Snapshots.method.stat,
        { snapshotter: SN, key: 'x' },
        { metadata: new grpc.Metadata() },
      ),
      grpc.status.FAILED_PRECONDITION,
      'namespace is required: failed precondition',
    );
  });

  test('prepare, commit and the errors around them', async () => {
    const p = await prepare('a', '', { keep: 'me' });
    assert.equal(p.mounts.length, 1);
    const m = p.mounts[0]!;
    assert.equal(m.type, 'bind');
    assert.deepEqual(m.options, ['rbind', 'rw']);
    assert.ok(m.source.startsWith(`${snapDir}/`), m.source);
    assert.deepEqual(await readdir(m.source), []);
    assert.equal((await stat(m.source)).mode & 0o7777, 0o755);
    const active = await statOf('a');
    assert.equal(active.kind, Kind.ACTIVE);
    assert.deepEqual(active.labels, { keep: 'me' });

    await expectCode(prepare('a'), grpc.status.ALREADY_EXISTS, 'snapshot "a": already exists');
    // containerd's database refuses an empty key as it adds it to the lease (snapshots-parity.test.ts).
    await expectCode(prepare(''), grpc.status.UNKNOWN, 'key required');
    await expectCode(
      prepare('b', 'missing'),
      grpc.status.NOT_FOUND,
      'parent snapshot missing does not exist: not found',
    );
    await expectCode(
      prepare('b', 'a'),
      grpc.status.INVALID_ARGUMENT,
      // containerd names its backend's key, <namespace>/<n>/<key> (numbers: snapshots-parity.test.ts).
      /^failed to create snapshot: parent "default\/\d+\/a" is not committed snapshot: invalid argument$/,
    );
    await expectCode(
      prepare('b', '', { big: 'x'.repeat(5000) }),
      grpc.status.INVALID_ARGUMENT,
      /^info\.Labels: label key and value greater than maximum size \(4096 bytes\), key: /,
    );
    await expectCode(
      commit('b', 'missing'),
      grpc.status.NOT_FOUND,
      'snapshot missing does not exist: not found',
    );
    await expectCode(
      callUnary(client, Snapshots.method.mounts, { snapshotter: SN, key: 'missing' }, opts()),
      grpc.status.NOT_FOUND,
      'snapshot missing does not exist: not found',
    );

    // A small tree with what a copy must keep.
    await mkdir(join(m.source, 'dir'), { mode: 0o750 });
    await writeFile(join(m.source, 'dir/file'), 'content');
    await link(join(m.source, 'dir/file'), join(m.source, 'dir/hardlink'));
    await symlink('/dir/file', join(m.source, 'abs-link'));
    await writeFile(join(m.source, 'suid'), '#!/bin/sh\n');
    if (asRoot) await lchown(join(m.source, 'suid'), 1000, 1001);
    await chmod(join(m.source, 'suid'), 0o4755);

    await commit('base', 'a', { committed: 'yes' });
    await expectCode(statOf('a'), grpc.status.NOT_FOUND, 'snapshot a does not exist: not found');
    const base = await statOf('base');
    assert.equal(base.kind, Kind.COMMITTED);
    assert.equal(base.parent, '');
    // The commit's labels, not the active snapshot's (containerd's metadata store does the same).
    assert.deepEqual(base.labels, { committed: 'yes' });
    assert.ok(await exists(m.source), 'a commit keeps the directory');

    await prepare('a2');
    await expectCode(commit('base', 'a2'), grpc.status.ALREADY_EXISTS, 'snapshot "base": already exists');
    await view('v-empty');
    await expectCode(
      commit('v-committed', 'v-empty'),
      grpc.status.FAILED_PRECONDITION,
      /^failed to commit snapshot: snapshot "default\/\d+\/v-empty" is not active: failed precondition$/,
    );
    await expectCode(
      callUnary(client, Snapshots.method.mounts, { snapshotter: SN, key: 'base' }, opts()),
      grpc.status.FAILED_PRECONDITION,
      /^failed to get snapshot mount: requested snapshot default\/\d+\/base not active or view: failed precondition$/,
    );
    await expectCode(
      prepare('b', '', { 'containerd.io/snapshot.ref': 'base' }),
      grpc.status.ALREADY_EXISTS,
      'target snapshot "base": already exists',
    );
    await remove('a2');
    await remove('v-empty');
  });

  test('a child starts as an exact copy of its parent; views mount the parent read-only', async () => {
    const v = await view('v', 'base');
    const baseDir = v.mounts[0]!.source;
    const p = await prepare('child', 'base');
    const childDir = p.mounts[0]!.source;
    assert.notEqual(childDir, baseDir);
    const want = await snapshotTree(baseDir);
    assert.equal(want['dir/file']?.linkGroup, 'dir/file');
    assert.deepEqual(await snapshotTree(childDir), want);
    assert.equal((await stat(childDir)).mode & 0o7777, (await stat(baseDir)).mode & 0o7777);
    // Writing to the child leaves the parent alone.
    await writeFile(join(childDir, 'dir/file2'), 'new');
    assert.equal(await exists(join(baseDir, 'dir/file2')), false);

    assert.deepEqual(
      v.mounts.map((x) => [x.type, x.source, x.options]),
      [['bind', baseDir, ['rbind', 'ro']]],
    );
    assert.equal((await statOf('v')).kind, Kind.VIEW);
    assert.equal(await sourceOf('v'), baseDir);
    const v0 = await view('v0');
    assert.deepEqual(v0.mounts[0]!.options, ['rbind', 'ro']);
    assert.deepEqual(await readdir(v0.mounts[0]!.source), []);

    await expectCode(
      remove('base'),
      grpc.status.FAILED_PRECONDITION,
      'cannot remove snapshot with child: failed precondition',
    );
    await expectCode(remove('missing'), grpc.status.NOT_FOUND, 'snapshot missing does not exist: not found');
    await remove('v');
    await remove('v0');
    assert.equal(await exists(v0.mounts[0]!.source), false);
    assert.ok(await exists(baseDir), "removing a view of base leaves base's directory");
  });

  test('usage: active measured now, committed as recorded, view empty', async () => {
    const base = await usage('base');
    assert.equal(base.inodes, 5n); // root, dir, dir/file (twice linked), abs-link, suid
    assert.ok(base.size > 0n);
    const child = await usage('child');
    assert.equal(child.inodes, 6n);
    await view('uv', 'base');
    assert.deepEqual([(await usage('uv')).size, (await usage('uv')).inodes], [0n, 0n]);
    await remove('uv');
    await expectCode(usage('missing'), grpc.status.NOT_FOUND);
  });

  test('update: labels by field paths, as containerd', async () => {
    const update = (labels: Record<string, string>, paths?: string[], name = 'base') =>
      callUnary(
        client,
        Snapshots.method.update,
        { snapshotter: SN, info: { name, labels }, ...(paths ? { updateMask: { paths } } : {}) },
        opts(),
      );
    const before = await statOf('base');
    let info = (await update({ x: '1', y: '2' }, ['labels.x'])).info!;
    assert.deepEqual(info.labels, { committed: 'yes', x: '1' });
    assert.equal(info.createdAt?.seconds, before.createdAt?.seconds);
    assert.ok(
      info.updatedAt!.seconds * 1_000_000_000n + BigInt(info.updatedAt!.nanos) >
        before.updatedAt!.seconds * 1_000_000_000n + BigInt(before.updatedAt!.nanos),
    );
    info = (await update({}, ['labels.committed'])).info!;
    assert.deepEqual(info.labels, { x: '1' });
    info = (await update({ only: 'this' })).info!;
    assert.deepEqual(info.labels, { only: 'this' });
    info = (await update({ a: 'b' }, ['labels'])).info!;
    assert.deepEqual(info.labels, { a: 'b' });
    assert.equal(info.kind, Kind.COMMITTED);
    await expectCode(
      update({}, ['parent']),
      grpc.status.INVALID_ARGUMENT,
      'cannot update "parent" field on snapshot "base": invalid argument',
    );
    await expectCode(
      update({}, [], 'missing'),
      grpc.status.NOT_FOUND,
      'snapshot missing does not exist: not found',
    );
    await expectCode(update({}, [], ''), grpc.status.INVALID_ARGUMENT);
    await expectCode(update({ k: 'v'.repeat(4100) }, ['labels.k']), grpc.status.INVALID_ARGUMENT);
    assert.deepEqual((await statOf('base')).labels, { a: 'b' });
  });

  test('list: key order and containerd filters', async () => {
    await prepare('z-active', 'base', { team: 'x' });
    const names = async (filters: string[]) => (await list(filters)).map((i) => i.name);
    assert.deepEqual(await names([]), ['base', 'child', 'z-active']);
    assert.deepEqual(await names(['kind==committed']), ['base']);
    assert.deepEqual(await names(['kind==active']), ['child', 'z-active']);
    assert.deepEqual(await names(['parent==base']), ['child', 'z-active']);
    assert.deepEqual(await names(['labels.team==x']), ['z-active']);
    assert.deepEqual(await names(['name~=^z', 'name==base']), ['base', 'z-active']);
    await expectCode(list(['name==']), grpc.status.INVALID_ARGUMENT);
    await remove('z-active');
  });

  test('namespaces share nothing', async () => {
    await expectCode(statOf('base', opts('other')), grpc.status.NOT_FOUND);
    await expectCode(prepare('c', 'base', {}, opts('other')), grpc.status.NOT_FOUND);
    const p = await prepare('child', '', {}, opts('other'));
    assert.notEqual(p.mounts[0]!.source, await sourceOf('child'));
    assert.deepEqual(
      (await list([], opts('other'))).map((i) => i.name),
      ['child'],
    );
    await remove('child', opts('other'));
    assert.equal((await statOf('child')).kind, Kind.ACTIVE);
  });

  test("ctr snapshots label: 4096 bytes of key and value pass, one more is refused in containerd 1.6's words", async () => {
    const sn = ['snapshots', '--snapshotter', 'overlayfs'];
    await d.ctrOk([...sn, 'prepare', 'labelled']);
    const key = `big-${'k'.repeat(3996)}`;
    await d.ctrOk([...sn, 'label', 'labelled', `${key}=${'v'.repeat(96)}`]);
    const refused = await d.ctr([...sn, 'label', 'labelled', `${key}=${'v'.repeat(97)}`]);
    assert.equal(refused.code, 1);
    assert.equal(
      refused.stderr,
      'ctr: info.Labels: label key and value greater than maximum size (4096 bytes), key: big-kkkkkk: invalid argument\n',
    );
    const info = JSON.parse(await d.ctrOk([...sn, 'info', 'labelled'])) as { Labels: Record<string, string> };
    assert.equal(info.Labels[key], 'v'.repeat(96));
    await d.ctrOk([...sn, 'rm', 'labelled']);
  });

  test("ctr snapshots mounts of a committed snapshot fails in each snapshotter's own words", async () => {
    const ns = { namespace: 'mounts-words' };
    const words = { native: 'failed to get snapshot mount', overlayfs: 'failed to get active mount' };
    for (const [sn, failure] of Object.entries(words)) {
      const ctr = (...args: string[]) => d.ctr(['snapshots', '--snapshotter', sn, ...args], ns);
      assert.equal((await ctr('prepare', 'a')).code, 0);
      assert.equal((await ctr('commit', 'c', 'a')).code, 0);
      const r = await ctr('mounts', '/mnt', 'c');
      assert.equal(r.code, 1);
      assert.equal(
        r.stderr,
        // c is the second of the namespace's sequence for this snapshotter (a was the first).
        `ctr: ${failure}: requested snapshot mounts-words/2/c not active or view: failed precondition\n`,
      );
      assert.equal((await ctr('rm', 'c')).code, 0);
    }
  });

  test("a namespace holding snapshots is not deleted; ctr names its snapshotters in containerd's words", async () => {
    const ns = { namespace: 'held' };
    for (const sn of ['native', 'overlayfs'])
      await d.ctrOk(['snapshots', '--snapshotter', sn, 'prepare', 'a'], ns);
    const rm = await d.ctr(['namespaces', 'rm', 'held']);
    assert.equal(rm.code, 1);
    assert.match(
      rm.stderr,
      /ctr: unable to delete held: namespace "held" must be empty, but it still has snapshots on "native" snapshotter, snapshots on "overlayfs" snapshotter: failed precondition\n$/,
    );
    for (const sn of ['native', 'overlayfs'])
      await d.ctrOk(['snapshots', '--snapshotter', sn, 'rm', 'a'], ns);
    await d.ctrOk(['namespaces', 'rm', 'held']);
  });

  test('leases hold snapshots; GC removes unheld ones with their directories', async () => {
    await expectCode(
      prepare('leased', '', {}, opts('default', { 'containerd-lease': 'nope' })),
      grpc.status.NOT_FOUND,
      'lease does not exist: not found',
    );
    const lease = (await callUnary(client, Leases.method.create, { id: 'l1' }, opts())).lease!;
    const withLease = opts('default', { 'containerd-lease': lease.id });
    const p = await prepare('leased', '', {}, withLease);
    const dir = p.mounts[0]!.source;
    const resources = async () =>
      (await callUnary(client, Leases.method.listResources, { id: lease.id }, opts())).resources.map(
        (r) => `${r.type} ${r.id}`,
      );
    assert.deepEqual(await resources(), ['snapshots/native leased']);
    assert.ok(
      (await callUnary(client, Leases.method.listResources, { id: 'suite-default' }, opts())).resources.every(
        (r) => r.id !== 'leased',
      ),
      'only the lease the request names holds the snapshot',
    );
    await commit('leased-done', 'leased', {}, withLease);
    assert.deepEqual(await resources(), ['snapshots/native leased-done']);

    // Without the leases nothing holds any snapshot: a collection takes them, and their directories.
    await callUnary(client, Leases.method.delete, { id: 'suite-other' }, { metadata: d.metadata('other') });
    await callUnary(client, Leases.method.delete, { id: 'suite-default' }, { metadata: d.metadata() });
    await callUnary(client, Leases.method.delete, { id: lease.id, sync: true }, { metadata: d.metadata() });
    assert.deepEqual(await list(), []);
    assert.deepEqual(await readdir(snapDir), []);
    assert.equal(await exists(dir), false);
  });

  test('cleanup removes directories no snapshot names, and nothing else', async () => {
    await callUnary(client, Leases.method.create, { id: 'suite-default' }, { metadata: d.metadata() });
    const p = await prepare('kept');
    await mkdir(join(snapDir, 'stray-dir/deeper'), { recursive: true });
    await mkdir(join(snapDir, '0123456789abcdef'));
    await callUnary(client, Snapshots.method.cleanup, { snapshotter: SN }, opts());
    assert.deepEqual(await readdir(snapDir), [p.mounts[0]!.source.slice(snapDir.length + 1)]);
    await remove('kept');
    assert.deepEqual(await readdir(snapDir), []);
  });
});
