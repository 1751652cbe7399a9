// The Diff service of a real `strata daemon` over gRPC: Apply of layers from the namespace's content onto
// native snapshots (compressions, expected diff_id, refused mounts, hostile layers that must write nothing
// outside), and Diff of two snapshots into a new layer that applies back to the same tree.
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import { Content } from '../../src/api/gen/containerd/services/content/v1/content_pb.ts';
import { Diff } from '../../src/api/gen/containerd/services/diff/v1/diff_pb.ts';
import { Leases } from '../../src/api/gen/containerd/services/leases/v1/leases_pb.ts';
import { Snapshots } from '../../src/api/gen/containerd/services/snapshots/v1/snapshots_pb.ts';
import { callUnary } from '../../src/api/grpc/client.ts';
import { digestOf } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { type LayerEntry, makeLayer, snapshotTree } from '../fixtures/hostile-layers/build.ts';
import { putContent } from '../helpers/content-put.ts';
import { startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import { exists, expectCode } from '../helpers/grpc-assert.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const SN = 'native';
const UNCOMPRESSED = 'containerd.io/uncompressed';

describe('Diff service (native)', () => {
  let d: TestDaemon;
  let client: grpc.Client;
  let outside: string;
  const opts = () => ({ metadata: d.metadata('default', { 'containerd-lease': 'suite' }) });

  const put = (bytes: Buffer, mediaType: string) => putContent(client, opts(), bytes, mediaType);
  const prepare = async (key: string, parent = '') =>
    (await callUnary(client, Snapshots.method.prepare, { snapshotter: SN, key, parent }, opts())).mounts;
  const view = async (key: string, parent = '') =>
    (await callUnary(client, Snapshots.method.view, { snapshotter: SN, key, parent }, opts())).mounts;
  const apply = (
    diff: { mediaType: string; digest: string; size: bigint; annotations?: Record<string, string> },
    mounts: Array<{ type: string; source: string; options: string[] }>,
  ) => callUnary(client, Diff.method.apply, { diff, mounts }, opts());

  before(async () => {
    d = await startDaemon();
    client = d.client();
    await callUnary(client, Leases.method.create, { id: 'suite' }, { metadata: d.metadata() });
    outside = await tempDir('diff-outside');
  });
  after(async () => {
    await d?.stop();
    if (outside) await removeTempDir(outside);
  });

  const files: LayerEntry[] = [
    { name: 'etc/', type: 'directory' },
    { name: 'etc/hello', content: 'hello\n' },
    { name: 'etc/link', type: 'link', linkname: 'etc/hello' },
    { name: 'bin/', type: 'directory' },
    { name: 'bin/sh', type: 'symlink', linkname: '/bin/busybox' },
  ];

  test('applies tar, tar+gzip, tar+zstd and docker layers and returns the diff_id', async () => {
    const tar = await makeLayer(files);
    const cases = [
      [tar, MediaType.ociLayer],
      [gzipSync(tar), MediaType.ociLayerGzip],
      [zstdCompressSync(tar), MediaType.ociLayerZstd],
      [gzipSync(tar), MediaType.dockerLayerGzip],
      // Docker's plain tar type is sniffed, as containerd does.
      [gzipSync(tar), MediaType.dockerLayer],
    ] as const;
    for (const [i, [bytes, mediaType]] of cases.entries()) {
      const desc = await put(Buffer.from(bytes), mediaType);
      const mounts = await prepare(`apply-${i}`);
      const r = await apply({ ...desc, annotations: { [UNCOMPRESSED]: digestOf(tar) } }, mounts);
      assert.deepEqual(
        [r.applied?.mediaType, r.applied?.digest, r.applied?.size],
        [MediaType.ociLayer, digestOf(tar), BigInt(tar.length)],
        mediaType,
      );
      const dir = mounts[0]!.source;
      assert.equal(await readFile(join(dir, 'etc/hello'), 'utf8'), 'hello\n');
      const tree = await snapshotTree(dir);
      assert.equal(tree['etc/link']?.linkGroup, 'etc/hello');
      assert.equal(tree['bin/sh']?.target, '/bin/busybox');
    }
  });

  test('a wrong expected diff_id is FailedPrecondition', async () => {
    const tar = await makeLayer(files);
    const desc = await put(gzipSync(tar), MediaType.ociLayerGzip);
    const mounts = await prepare('wrong-diffid');
    const wrong = digestOf('something else');
    await expectCode(
      apply({ ...desc, annotations: { [UNCOMPRESSED]: wrong } }, mounts),
      grpc.status.FAILED_PRECONDITION,
      `layer ${desc.digest} unpacked to ${digestOf(tar)}, expected ${wrong}: failed precondition`,
    );
  });

  test('refuses what is not a writable native snapshot mount, a missing blob and unknown media types', async () => {
    const desc = await put(await makeLayer(files), MediaType.ociLayer);
    const mounts = await prepare('refusals');
    const m = mounts[0]!;
    await expectCode(apply(desc, []), grpc.status.INVALID_ARGUMENT);
    await expectCode(apply(desc, [m, m]), grpc.status.INVALID_ARGUMENT);
    await expectCode(
      apply(desc, [{ ...m, type: 'overlay' }]),
      grpc.status.INVALID_ARGUMENT,
      /unsupported mount type "overlay"/,
    );
    await expectCode(apply(desc, [{ ...m, source: outside }]), grpc.status.INVALID_ARGUMENT);
    await expectCode(apply(desc, [{ ...m, source: `${m.source}/../../..` }]), grpc.status.INVALID_ARGUMENT);
    await expectCode(
      apply(desc, [{ ...m, options: ['rbind', 'ro'] }]),
      grpc.status.INVALID_ARGUMENT,
      /read-only/,
    );
    const v = await view('refusals-view');
    await expectCode(
      apply(desc, [{ ...v[0]!, options: ['rbind', 'rw'] }]),
      grpc.status.INVALID_ARGUMENT,
      /read-only/,
    );
    // Another namespace's snapshot is not this namespace's to write.
    const other = await callUnary(
      client,
      Snapshots.method.prepare,
      { snapshotter: SN, key: 'theirs' },
      { metadata: d.metadata('other') },
    );
    await expectCode(
      apply(desc, other.mounts),
      grpc.status.INVALID_ARGUMENT,
      /no snapshot of namespace default/,
    );
    await expectCode(
      apply({ ...desc, digest: digestOf('absent') }, mounts),
      grpc.status.NOT_FOUND,
      `content digest ${digestOf('absent')}: not found`,
    );
    await expectCode(
      apply({ ...desc, mediaType: 'application/x-whatever' }, mounts),
      grpc.status.UNIMPLEMENTED,
    );
    await expectCode(callUnary(client, Diff.method.apply, { mounts }, opts()), grpc.status.INVALID_ARGUMENT);
    assert.deepEqual(await readdir(m.source), []);
    assert.deepEqual(await readdir(outside), []);
  });

  test('hostile layers are InvalidArgument and write nothing outside the snapshot', async () => {
    const victim = join(outside, 'victim');
    await mkdir(victim);
    await writeFile(join(victim, 'secret'), 'keep me');
    const hostile: Array<[string, LayerEntry[]]> = [
      [
        'dot-dot',
        [
          { name: 'ok', content: 'ok' },
          { name: '../../../escape', content: 'x' },
        ],
      ],
      [
        'hardlink out through a symlinked dir',
        [
          { name: 'v', type: 'symlink', linkname: victim },
          { name: 'stolen', type: 'link', linkname: 'v/secret' },
        ],
      ],
      ['whiteout of the parent', [{ name: '.wh..' }]],
    ];
    for (const [what, entries] of hostile) {
      const desc = await put(await makeLayer(entries), MediaType.ociLayer);
      const mounts = await prepare(`hostile-${what.replaceAll(' ', '-')}`);
      await expectCode(apply(desc, mounts), grpc.status.INVALID_ARGUMENT, undefined);
    }
    // Writes through an absolute symlink stay inside: re-rooted, not refused.
    const desc = await put(
      await makeLayer([
        { name: 'v', type: 'symlink', linkname: victim },
        { name: 'v/planted', content: 'inside' },
      ]),
      MediaType.ociLayer,
    );
    const mounts = await prepare('rerooted');
    await apply(desc, mounts);
    assert.equal(await readFile(join(mounts[0]!.source, victim, 'planted'), 'utf8'), 'inside');
    assert.deepEqual(await readdir(victim), ['secret']);
    assert.equal(await readFile(join(victim, 'secret'), 'utf8'), 'keep me');
    assert.deepEqual((await readdir(outside)).sort(), ['victim']);
    assert.equal(await exists(join(d.root, 'snapshots', 'native', 'escape')), false);
    assert.equal(await exists(join(d.root, 'escape')), false);
    await rm(victim, { recursive: true });
  });

  test('Diff writes the changes between two snapshots as a layer that applies back to the same tree', async () => {
    const lower = await prepare('lower-a');
    const l = lower[0]!.source;
    await mkdir(join(l, 'etc'));
    await writeFile(join(l, 'etc/keep'), 'keep');
    await writeFile(join(l, 'etc/change'), 'v1');
    await writeFile(join(l, 'etc/delete'), 'gone soon');
    await callUnary(
      client,
      Snapshots.method.commit,
      { snapshotter: SN, name: 'lower', key: 'lower-a' },
      opts(),
    );
    const upper = await prepare('upper-a', 'lower');
    const u = upper[0]!.source;
    await writeFile(join(u, 'etc/change'), 'v2');
    await rm(join(u, 'etc/delete'));
    await mkdir(join(u, 'new'));
    await writeFile(join(u, 'new/file'), 'added');
    const lowerView = await view('lower-view', 'lower');

    const r = await callUnary(
      client,
      Diff.method.diff,
      { left: lowerView, right: upper, mediaType: MediaType.ociLayerGzip, labels: { made: 'by-test' } },
      opts(),
    );
    const layer = r.diff!;
    assert.equal(layer.mediaType, MediaType.ociLayerGzip);
    const info = (await callUnary(client, Content.method.info, { digest: layer.digest }, opts())).info!;
    assert.equal(info.size, layer.size);
    assert.equal(info.labels.made, 'by-test');
    const diffId = info.labels[UNCOMPRESSED];
    assert.match(diffId ?? '', /^sha256:[0-9a-f]{64}$/);
    const held = await callUnary(client, Leases.method.listResources, { id: 'suite' }, opts());
    assert.ok(
      held.resources.some((x) => x.type === 'content' && x.id === layer.digest),
      'written under the lease',
    );

    const target = await prepare('replay', 'lower');
    const applied = await apply(
      {
        mediaType: layer.mediaType,
        digest: layer.digest,
        size: layer.size,
        annotations: { [UNCOMPRESSED]: diffId! },
      },
      target,
    );
    assert.equal(applied.applied?.digest, diffId);
    const want = await snapshotTree(u);
    const got = await snapshotTree(target[0]!.source);
    assert.deepEqual(Object.keys(got), Object.keys(want));
    for (const p of Object.keys(want)) {
      const { mtime: _w, ...w } = want[p]!;
      const { mtime: _g, ...g } = got[p]!;
      assert.deepEqual(g, w, p);
    }

    // Uncompressed, and a whole tree against nothing.
    const whole = await callUnary(
      client,
      Diff.method.diff,
      { left: [], right: lowerView, mediaType: MediaType.ociLayer },
      opts(),
    );
    assert.equal(whole.diff?.mediaType, MediaType.ociLayer);
    await expectCode(
      callUnary(
        client,
        Diff.method.diff,
        { left: lowerView, right: upper, mediaType: 'application/x-nope' },
        opts(),
      ),
      grpc.status.UNIMPLEMENTED,
      'unsupported diff media type: application/x-nope: not implemented',
    );
    await expectCode(
      callUnary(
        client,
        Diff.method.diff,
        { left: lowerView, right: [{ type: 'bind', source: outside, options: [] }] },
        opts(),
      ),
      grpc.status.INVALID_ARGUMENT,
    );
  });
});
