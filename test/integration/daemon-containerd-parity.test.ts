// Where containerd's contract is subtle (leases and the GC around ingests and snapshot targets, namespace
// deletion, commits that race, the native differ), each case driven the way a user meets it: the real ctr
// (Debian's containerd 1.6) where ctr can, grpc-js where it cannot.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { MessageInitShape } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import {
  Content,
  WriteAction,
  type WriteContentRequestSchema,
} from '../../src/api/gen/containerd/services/content/v1/content_pb.ts';
import { Images } from '../../src/api/gen/containerd/services/images/v1/images_pb.ts';
import { Leases } from '../../src/api/gen/containerd/services/leases/v1/leases_pb.ts';
import { Snapshots } from '../../src/api/gen/containerd/services/snapshots/v1/snapshots_pb.ts';
import { callBidi, callServerStream, callUnary } from '../../src/api/grpc/client.ts';
import { CTR, startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import { expectCode } from '../helpers/grpc-assert.ts';
import { runCommand, runProcess } from '../helpers/process.ts';

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** One Write message in a session of its own, its reply drained (an uncommitted ingest stays). */
async function writeOnce(
  client: grpc.Client,
  md: grpc.Metadata,
  message: MessageInitShape<typeof WriteContentRequestSchema>,
): Promise<void> {
  const call = callBidi(client, Content.method.write, { metadata: md });
  await call.send(message);
  call.end();
  for await (const _ of call.responses) {
    // Drain: one reply.
  }
}

/** Prepares `key` and commits it as `name` (on the native snapshotter), with the call options given. */
async function committedSnapshot(
  client: grpc.Client,
  opts: { metadata: grpc.Metadata },
  key: string,
  name: string,
) {
  await callUnary(client, Snapshots.method.prepare, { snapshotter: 'native', key }, opts);
  await callUnary(client, Snapshots.method.commit, { snapshotter: 'native', key, name }, opts);
}

describe('daemon: containerd parity', () => {
  let d: TestDaemon;
  let client: grpc.Client;

  before(async () => {
    d = await startDaemon();
    client = d.client();
  });
  after(async () => {
    client?.close();
    await d?.stop();
  });

  test('a deleted namespace leaves no ingest behind: the same ref starts afresh when it comes back', async () => {
    // An interrupted upload in a namespace that is then deleted (ingests do not keep a namespace alive).
    await writeOnce(client, d.metadata('gone'), {
      action: WriteAction.WRITE,
      ref: 'upload',
      data: Buffer.from('STALE-BYTES-'),
    });
    await d.ctrOk(['namespaces', 'rm', 'gone']);

    // The namespace comes back and ctr ingests a blob under the same ref, from a file (ctr resumes an
    // ingest it finds by seeking its input past the ingest's offset). The commit checks the digest: a
    // stale start makes it fail. (Listing the content after would race the collection the namespace's
    // removal started: the blob is in no lease once ctr exits, in containerd too.)
    const body = Buffer.from('the blob a user meant to store\n');
    const file = join(d.root, 'body');
    await writeFile(file, body);
    await runCommand('sh', [
      '-c',
      `exec "$0" --address "$1" -n gone content ingest --expected-size "$3" --expected-digest "$4" upload < "$2"`,
      CTR,
      d.address,
      file,
      String(body.length),
      sha256(body),
    ]);
  });

  test('a Prepare whose snapshot.ref target exists puts the target in the request lease', async () => {
    // What an unpack does for a layer another image unpacked already: Prepare names the chain id it
    // would commit (containerd.io/snapshot.ref), is told AlreadyExists, and relies on its lease to
    // hold that snapshot until its own labels reference it (containerd adds it to the lease).
    const sn = 'native';
    const under = (lease: string) => ({ metadata: d.metadata('default', { 'containerd-lease': lease }) });
    await callUnary(client, Leases.method.create, { id: 'first-unpack' }, { metadata: d.metadata() });
    await callUnary(client, Leases.method.create, { id: 'second-unpack' }, { metadata: d.metadata() });
    await committedSnapshot(client, under('first-unpack'), 'extract-1', 'layer-chain');

    await expectCode(
      callUnary(
        client,
        Snapshots.method.prepare,
        { snapshotter: sn, key: 'extract-2', labels: { 'containerd.io/snapshot.ref': 'layer-chain' } },
        under('second-unpack'),
      ),
      grpc.status.ALREADY_EXISTS,
      'target snapshot "layer-chain": already exists',
    );
    const held = await callUnary(
      client,
      Leases.method.listResources,
      { id: 'second-unpack' },
      { metadata: d.metadata() },
    );
    assert.deepEqual(
      held.resources.map((r) => `${r.type} ${r.id}`),
      [`snapshots/${sn} layer-chain`],
    );

    // The first unpack's lease goes (its image was deleted, say): the second lease still holds the layer.
    await callUnary(
      client,
      Leases.method.delete,
      { id: 'first-unpack', sync: true },
      { metadata: d.metadata() },
    );
    const stat = await callUnary(
      client,
      Snapshots.method.stat,
      { snapshotter: sn, key: 'layer-chain' },
      { metadata: d.metadata() },
    );
    assert.equal(stat.info?.name, 'layer-chain');
  });

  test('an ingest holds the content it expects only when it links bytes already on disk, as containerd 1.6', async () => {
    // containerd 1.6 stores an ingest's expected digest only when that blob is on disk as the writer opens
    // (the shared policy: the writer links it). Such an ingest holds the content of its namespace; one
    // still writing its own bytes holds nothing there (both checked against containerd 1.6.20).
    const has = async (md: grpc.Metadata, digest: string) =>
      callUnary(client, Content.method.info, { digest }, { metadata: md }).then(
        () => true,
        () => false,
      );
    const collect = async (md: grpc.Metadata) => {
      // A lease deleted with sync runs a collection before it answers.
      await callUnary(client, Leases.method.create, { id: 'trigger' }, { metadata: md });
      await callUnary(client, Leases.method.delete, { id: 'trigger', sync: true }, { metadata: md });
    };
    const commit = (md: grpc.Metadata, ref: string, body: Buffer, labels: Record<string, string> = {}) =>
      writeOnce(client, md, {
        action: WriteAction.COMMIT,
        ref,
        total: BigInt(body.length),
        expected: sha256(body),
        data: body,
        labels,
      });

    /** The slow fetch: opens `fetch-slow` declaring the digest, and sends `sent` bytes (none: a Stat). */
    const startFetch = (md: grpc.Metadata, body: Buffer, sent: number) =>
      writeOnce(client, md, {
        action: sent > 0 ? WriteAction.WRITE : WriteAction.STAT,
        ref: 'fetch-slow',
        total: BigInt(body.length),
        expected: sha256(body),
        data: body.subarray(0, sent),
      });

    // Two fetches of a blob nobody has yet, without leases: the slow one holds only its own bytes.
    const fresh = Buffer.from('a layer two fetches share\n');
    const two = d.metadata('two-fetches');
    await startFetch(two, fresh, 4);
    await commit(two, 'fetch-fast', fresh);
    await collect(two);
    assert.equal(await has(two, sha256(fresh)), false);

    // The blob is on disk (another namespace's) as the slow writer opens: it links it, and holds it.
    const onDisk = Buffer.from('a layer another namespace has\n');
    await commit(d.metadata('elsewhere'), 'keep', onDisk, { 'containerd.io/gc.root': 'yes' });
    const linking = d.metadata('linking');
    await startFetch(linking, onDisk, 0);
    await commit(linking, 'fetch-fast', onDisk);
    await collect(linking);
    assert.equal(await has(linking, sha256(onDisk)), true);
  });

  test('a flat lease keeps the parents of its snapshots and the target of its image', async () => {
    // gc.flat leaves out what labels reference, not what the held objects cannot be without: containerd
    // follows a flat snapshot's parent chain and a flat image's target.
    const sn = 'native';
    const md = d.metadata('flat');
    const under = (lease: string) => ({ metadata: d.metadata('flat', { 'containerd-lease': lease }) });
    await callUnary(client, Leases.method.create, { id: 'setup' }, { metadata: md });
    await callUnary(
      client,
      Leases.method.create,
      { id: 'flat', labels: { 'containerd.io/gc.flat': 'true' } },
      { metadata: md },
    );
    await committedSnapshot(client, under('setup'), 'extract', 'base-layer');
    await callUnary(
      client,
      Snapshots.method.prepare,
      { snapshotter: sn, key: 'work', parent: 'base-layer' },
      under('flat'),
    );

    const manifest = Buffer.from('{"schemaVersion":2}');
    await writeOnce(client, under('setup').metadata, {
      action: WriteAction.COMMIT,
      ref: 'manifest',
      total: BigInt(manifest.length),
      expected: sha256(manifest),
      data: manifest,
    });
    // The image carries a past gc.expire, which containerd 1.6 ignores: the image stays, its target with it.
    await callUnary(
      client,
      Images.method.create,
      {
        image: {
          name: 'leased',
          labels: { 'containerd.io/gc.expire': '2000-01-01T00:00:00Z' },
          target: {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            digest: sha256(manifest),
            size: BigInt(manifest.length),
          },
        },
      },
      under('flat'),
    );

    await callUnary(client, Leases.method.delete, { id: 'setup', sync: true }, { metadata: md });
    const keys = [];
    for await (const r of callServerStream(
      client,
      Snapshots.method.list,
      { snapshotter: sn },
      { metadata: md },
    )) {
      keys.push(...r.info.map((i) => i.name));
    }
    assert.deepEqual(keys.sort(), ['base-layer', 'work']);
    const image = await callUnary(client, Images.method.get, { name: 'leased' }, { metadata: md });
    const target = image.image?.target?.digest ?? '';
    const info = await callUnary(client, Content.method.info, { digest: target }, { metadata: md });
    assert.equal(info.info?.digest, sha256(manifest));
  });

  test('ctr snapshots diff of a native child holds only what the child changed', async () => {
    // Files written at run time have nanosecond mtimes; the child's copy of its parent must not turn
    // them (or the directories holding them) into changes.
    const sn = ['snapshots', '--snapshotter', 'native'];
    const dirOf = async (key: string) => {
      const line = await d.ctrOk([...sn, 'mounts', '/unused', key]);
      return line.split(' ')[3]!; // mount -t bind SOURCE TARGET -o …
    };
    await d.ctrOk([...sn, 'prepare', 'build-1']);
    const first = await dirOf('build-1');
    await mkdir(join(first, 'etc'));
    await writeFile(join(first, 'etc', 'config'), 'kept\n');
    await writeFile(join(first, 'app'), 'version 1\n');
    await symlink('app', join(first, 'app-link'));
    await d.ctrOk([...sn, 'commit', 'step-1', 'build-1']);
    await d.ctrOk([...sn, 'prepare', 'build-2', 'step-1']);
    await writeFile(join(await dirOf('build-2'), 'app'), 'version 2\n');

    const listed = await runCommand('sh', [
      '-c',
      `"$0" --address "$1" snapshots --snapshotter native diff build-2 | tar -tzf -`,
      CTR,
      d.address,
    ]);
    assert.deepEqual(listed.trim().split('\n'), ['app']);
  });

  test('a commit that finds its blob committed by another writer leases it, as containerd does', async () => {
    // Two writers of one blob that did not declare its digest; the second commits after the first.
    // containerd drops the second ingest, adds the blob to the second writer's lease, then answers
    // AlreadyExists (which clients take as success, relying on their lease).
    const body = Buffer.from('written twice\n');
    const md = d.metadata('race');
    await callUnary(client, Leases.method.create, { id: 'second' }, { metadata: md });
    // The first writer holds its blob in a lease too: unheld, a collection the other tests' deletions
    // started could take it before the second commit, which would then simply succeed.
    await callUnary(client, Leases.method.create, { id: 'first' }, { metadata: md });
    const second = callBidi(client, Content.method.write, {
      metadata: d.metadata('race', { 'containerd-lease': 'second' }),
    });
    await second.send({ action: WriteAction.WRITE, ref: 'second', data: body });
    const replies = second.responses[Symbol.asyncIterator]();
    await replies.next();
    await writeOnce(client, d.metadata('race', { 'containerd-lease': 'first' }), {
      action: WriteAction.COMMIT,
      ref: 'first',
      data: body,
    });
    await second.send({ action: WriteAction.COMMIT, ref: 'second', offset: BigInt(body.length) });
    second.end();
    await expectCode(replies.next(), grpc.status.ALREADY_EXISTS, `content ${sha256(body)}: already exists`);

    const held = await callUnary(client, Leases.method.listResources, { id: 'second' }, { metadata: md });
    assert.deepEqual(
      held.resources.map((r) => `${r.type} ${r.id}`),
      [`content ${sha256(body)}`],
    );
    await expectCode(
      callUnary(client, Content.method.status, { ref: 'second' }, { metadata: md }),
      grpc.status.NOT_FOUND,
    );
  });

  test('content digested with sha384, as go-digest allows: ctr ingests it checked by sha384, reads, labels it', async (t) => {
    // A daemon of its own: a collection the other tests' deletions scheduled would take the unrooted blob.
    const d = await startDaemon({ t });
    const client = d.client();
    // containerd 1.6's own store hashes every ingest with sha256 and so fails such a commit; containerd 2
    // hashes with the expected digest's algorithm, as this daemon does for sha512 and sha384 alike.
    const sha384 = (b: Buffer): string => `sha384:${createHash('sha384').update(b).digest('hex')}`;
    const ns = 'sha384';
    const body = Buffer.from('a blob named by its sha384\n');
    const other = Buffer.from('bytes the digest does not name\n');
    await writeFile(join(d.root, 'sha384-body'), body);
    await writeFile(join(d.root, 'sha384-other'), other);
    const ingest = (ref: string, file: string, digest: string) =>
      runProcess('sh', [
        '-c',
        `exec "$0" --address "$1" -n "$2" content ingest --expected-digest "$3" "$4" < "$5"`,
        CTR,
        d.address,
        ns,
        digest,
        ref,
        join(d.root, file),
      ]);

    const ok = await ingest('good', 'sha384-body', sha384(body));
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual((await d.ctrOk(['content', 'ls', '--quiet'], { namespace: ns })).trim().split('\n'), [
      sha384(body),
    ]);
    assert.equal(await d.ctrOk(['content', 'get', sha384(body)], { namespace: ns }), body.toString());
    assert.equal(
      await d.ctrOk(['content', 'label', sha384(body), 'containerd.io/gc.root=yes'], { namespace: ns }),
      'containerd.io/gc.root=yes\n',
    );

    // Bytes that are not the digest's fail the commit, compared by sha384.
    const wanted = sha384(Buffer.from('never written\n'));
    const bad = await ingest('bad', 'sha384-other', wanted);
    assert.notEqual(bad.code, 0);
    assert.match(
      bad.stderr,
      new RegExp(`unexpected commit digest ${sha384(other)}, expected ${wanted}: failed precondition`),
    );
    // A well-formed sha384 digest that is not here is not found, as in containerd.
    const absent = await d.ctr(['content', 'get', wanted], { namespace: ns });
    assert.equal(absent.stderr, `ctr: content digest ${wanted}: not found\n`);

    // An image whose target is named by sha384.
    await callUnary(
      client,
      Images.method.create,
      {
        image: {
          name: 'by-sha384',
          target: {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            digest: sha384(body),
            size: BigInt(body.length),
          },
        },
      },
      { metadata: d.metadata(ns) },
    );
    assert.match(
      await d.ctrOk(['images', 'ls'], { namespace: ns }),
      new RegExp(`by-sha384\\s+\\S+\\s+${sha384(body)}`),
    );
  });

  test('a content root is the exact label key containerd.io/gc.root with any value, as in containerd 1.6', async (t) => {
    // A daemon of its own, so no collection other tests scheduled runs between an ingest and its label.
    const d = await startDaemon({ t });
    // containerd 1.6 looks the key up exactly (2.x takes any key it prefixes); an empty value removes
    // the label, so it roots nothing. Seen side by side with containerd 1.6.20 and the same ctr.
    const ns = 'roots';
    const blobs: Record<string, string> = {
      'any-value': 'containerd.io/gc.root=false',
      'longer-key': 'containerd.io/gc.root.mine=1',
      'other-case': 'Containerd.io/gc.root=1',
      cleared: 'containerd.io/gc.root=',
    };
    const digests: Record<string, string> = {};
    for (const [name, label] of Object.entries(blobs)) {
      const body = Buffer.from(`root candidate ${name}\n`);
      digests[name] = sha256(body);
      await writeFile(join(d.root, `root-${name}`), body);
      await runCommand('sh', [
        '-c',
        `exec "$0" --address "$1" -n "$2" content ingest "$3" < "$4"`,
        CTR,
        d.address,
        ns,
        `root-${name}`,
        join(d.root, `root-${name}`),
      ]);
      if (name === 'cleared') {
        await d.ctrOk(['content', 'label', digests[name]!, 'containerd.io/gc.root=yes'], { namespace: ns });
      }
      await d.ctrOk(['content', 'label', digests[name]!, label], { namespace: ns });
    }
    const lease = (await d.ctrOk(['leases', 'create'], { namespace: ns })).trim();
    await d.ctrOk(['leases', 'rm', '--sync', lease], { namespace: ns });
    const left = (await d.ctrOk(['content', 'ls', '--quiet'], { namespace: ns })).trim().split('\n');
    assert.deepEqual(left, [digests['any-value']]);
  });
});
