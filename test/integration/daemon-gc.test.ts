// Garbage collection of bytes on disk, against a real `strata daemon` driven by the real ctr: a blob that
// no namespace holds any more leaves ROOT/content/blobs at the next collection, however it lost its last
// holder (`ctr content rm`, an image removed), while blobs another namespace holds, blobs reached through
// an image's gc.ref labels and ingests still being written stay. Collections are made synchronous with
// `ctr leases rm --sync` or Images.Delete{sync}, so no test waits for the background one.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { access, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { Content, WriteAction } from '../../src/api/gen/containerd/services/content/v1/content_pb.ts';
import { Images } from '../../src/api/gen/containerd/services/images/v1/images_pb.ts';
import { callBidi, callUnary } from '../../src/api/grpc/client.ts';
import { CTR, startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import { runCommand, waitFor } from '../helpers/process.ts';

const lines = (s: string): string[] => s.split('\n').filter((l) => l !== '');
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * `ctr content ingest` of `data` (from stdin, as a user pipes it) into `ns`; returns its digest. With
 * `declareDigest` false ctr names no digest: needed when the bytes are on disk already, since the daemon
 * would then share them and ctr cannot skip ahead in a pipe.
 */
async function ingest(d: TestDaemon, ns: string, ref: string, data: Buffer, declareDigest = true) {
  const digest = sha256(data);
  await runCommand(
    CTR,
    [
      '--address',
      d.address,
      '--namespace',
      ns,
      'content',
      'ingest',
      '--expected-size',
      String(data.length),
      ...(declareDigest ? ['--expected-digest', digest] : []),
      ref,
    ],
    {
      input: data,
      env: { CONTAINERD_ADDRESS: undefined, CONTAINERD_NAMESPACE: undefined },
      timeoutMs: 60_000,
    },
  );
  return digest;
}

/** Blob files under ROOT/content/blobs, as digests. */
async function blobFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const alg of await readdir(join(root, 'content', 'blobs'))) {
    for (const f of await readdir(join(root, 'content', 'blobs', alg))) out.push(`${alg}:${f}`);
  }
  return out.sort();
}

let triggers = 0;
/** A collection that has finished when this returns: ctr removes a fresh lease with --sync. */
async function syncGc(d: TestDaemon): Promise<void> {
  const id = `gc-trigger-${++triggers}`;
  await d.ctrOk(['leases', 'create', '--id', id]);
  await d.ctrOk(['leases', 'rm', '--sync', id]);
}

const exists = (path: string): Promise<boolean> =>
  access(path).then(
    () => true,
    () => false,
  );

describe('daemon garbage collection of bytes on disk', () => {
  test('ctr content rm, then a sync collection: the blob file is gone', async (t) => {
    const d = await startDaemon({ t });
    const data = Buffer.from(randomBytes(50_000).toString('hex'));
    const digest = await ingest(d, 'default', 'rm-me', data);
    assert.deepEqual(await blobFiles(d.root), [digest]);
    assert.equal(await d.ctrOk(['content', 'get', digest]), data.toString());

    assert.equal((await d.ctrOk(['content', 'rm', digest])).trim(), digest);
    await syncGc(d);
    assert.deepEqual(await blobFiles(d.root), []);
    assert.deepEqual(lines(await d.ctrOk(['content', 'ls', '-q'])), []);
    // Gone for real: the next ingest of the same bytes writes them again.
    assert.equal(await ingest(d, 'default', 'again', data), digest);
    assert.deepEqual(await blobFiles(d.root), [digest]);
  });

  test('a blob two namespaces hold survives its removal from one, and goes with the last', async (t) => {
    const d = await startDaemon({ t });
    const data = Buffer.from(randomBytes(2048).toString('hex'));
    const digest = await ingest(d, 'a', 'shared', data);
    assert.equal(await ingest(d, 'b', 'shared', data, false), digest);
    // Without a root (an image, a lease, gc.root) a collection would take b's membership too.
    await d.ctrOk(['content', 'label', digest, 'containerd.io/gc.root=keep'], { namespace: 'b' });

    await d.ctrOk(['content', 'rm', digest], { namespace: 'a' });
    await syncGc(d);
    assert.deepEqual(await blobFiles(d.root), [digest]);
    assert.deepEqual(lines(await d.ctrOk(['content', 'ls', '-q'], { namespace: 'a' })), []);
    assert.deepEqual(lines(await d.ctrOk(['content', 'ls', '-q'], { namespace: 'b' })), [digest]);
    assert.equal(await d.ctrOk(['content', 'get', digest], { namespace: 'b' }), data.toString());

    await d.ctrOk(['content', 'rm', digest], { namespace: 'b' });
    await syncGc(d);
    assert.deepEqual(await blobFiles(d.root), []);
  });

  test('an ingest still being written is untouched by a collection, and commits afterwards', async (t) => {
    const d = await startDaemon({ t });
    const client = d.client();
    const data = randomBytes(300_000);
    const digest = sha256(data);
    const half = 120_000;
    const call = callBidi(client, Content.method.write, { metadata: d.metadata('default') });
    t.after(() => call.cancel());
    const replies = call.responses[Symbol.asyncIterator]();
    await call.send({
      action: WriteAction.WRITE,
      ref: 'open-writer',
      total: BigInt(data.length),
      expected: digest,
      data: data.subarray(0, half),
    });
    const first = await replies.next();
    assert.equal(first.done, false);
    assert.equal(first.value?.offset, BigInt(half));

    // The collection runs while the stream is open and the ingest half written.
    await syncGc(d);
    const active = await d.ctrOk(['content', 'active']);
    assert.match(active, /open-writer/);
    const dataFiles = [];
    for (const key of await readdir(join(d.root, 'content', 'ingest'))) {
      if (await exists(join(d.root, 'content', 'ingest', key, 'data'))) dataFiles.push(key);
    }
    assert.equal(dataFiles.length, 1, 'the partial data stays');

    await call.send({
      action: WriteAction.COMMIT,
      ref: 'open-writer',
      offset: BigInt(half),
      total: BigInt(data.length),
      expected: digest,
      data: data.subarray(half),
    });
    call.end();
    const last = await replies.next();
    assert.equal(last.value?.digest, digest);
    while (!(await replies.next()).done) {
      // drain to the end of the stream
    }
    assert.deepEqual(lines(await d.ctrOk(['content', 'ls', '-q'])), [digest]);
    assert.deepEqual(await blobFiles(d.root), [digest]);
    assert.deepEqual(lines(await d.ctrOk(['content', 'active'])).slice(1), [], 'no ingest left');
  });

  test('content an image reaches through gc.ref labels survives; removing the image frees it', async (t) => {
    const d = await startDaemon({ t });
    const client = d.client();
    const layer = await ingest(d, 'default', 'layer', randomBytes(50_000));
    const config = await ingest(d, 'default', 'config', Buffer.from('{"architecture":"amd64"}'));
    const manifestBytes = Buffer.from(
      JSON.stringify({ schemaVersion: 2, config: { digest: config }, layers: [{ digest: layer }] }),
    );
    const manifest = await ingest(d, 'default', 'manifest', manifestBytes);
    const stray = await ingest(d, 'default', 'stray', Buffer.from('nothing points here'));
    await d.ctrOk([
      'content',
      'label',
      manifest,
      `containerd.io/gc.ref.content.config=${config}`,
      `containerd.io/gc.ref.content.l.0=${layer}`,
    ]);
    await callUnary(
      client,
      Images.method.create,
      {
        image: {
          name: 'example.test/app:1',
          target: {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            digest: manifest,
            size: BigInt(manifestBytes.length),
          },
        },
      },
      { metadata: d.metadata('default') },
    );

    await syncGc(d);
    const kept = [config, layer, manifest].sort();
    assert.deepEqual(await blobFiles(d.root), kept, 'the stray blob went, the image graph stayed');
    assert.deepEqual(lines(await d.ctrOk(['content', 'ls', '-q'])).sort(), kept);
    assert.ok(!kept.includes(stray));

    // A layer removed from content by hand goes from disk though the manifest's label still names it.
    await d.ctrOk(['content', 'rm', layer]);
    await syncGc(d);
    assert.deepEqual(await blobFiles(d.root), [config, manifest].sort());

    await callUnary(
      client,
      Images.method.delete,
      { name: 'example.test/app:1', sync: true },
      { metadata: d.metadata('default') },
    );
    assert.deepEqual(await blobFiles(d.root), []);
    assert.deepEqual(lines(await d.ctrOk(['content', 'ls', '-q'])), []);
  });

  test('a snapshot directory no record names is removed by the next collection', async (t) => {
    const d = await startDaemon({ t });
    const dir = join(d.root, 'snapshots', 'native', 'snapshots');
    // As a removal that failed half way would leave it.
    await mkdir(join(dir, 'rm-0123456789abcdef', 'etc'), { recursive: true });
    await mkdir(join(dir, 'fedcba9876543210'));
    await syncGc(d);
    assert.deepEqual(await readdir(dir), []);
  });

  test('a restart collects what expired or lost its holder while no deletion ran, as containerd 1.6 does', async (t) => {
    // containerd 1.6 collects only after deletions (or 100 writes), and once 100 ms after it starts
    // (startup_delay): an expired lease and a blob nothing holds stay until a restart, then go.
    const d = await startDaemon({ t });
    const orphan = await ingest(d, 'default', 'orphan', Buffer.from('held by nothing'));
    await d.ctrOk([
      'leases',
      'create',
      '--expires',
      '0',
      '--id',
      'old',
      'containerd.io/gc.expire=2000-01-01T00:00:00Z',
    ]);
    assert.deepEqual(lines(await d.ctrOk(['leases', 'ls', '-q'])), ['old']);
    assert.deepEqual(await blobFiles(d.root), [orphan]);

    await d.restart();
    await waitFor(
      async () =>
        (await d.ctrOk(['leases', 'ls', '-q'])) === '' &&
        (await d.ctrOk(['content', 'ls', '-q'])) === '' &&
        (await blobFiles(d.root)).length === 0,
      10_000,
      { what: 'the collection after start' },
    );
  });

  test('a sync delete of an unknown lease or image is NotFound and takes nothing held', async (t) => {
    const d = await startDaemon({ t });
    const digest = await ingest(d, 'default', 'rooted', Buffer.from('held by gc.root'));
    await d.ctrOk(['content', 'label', digest, 'containerd.io/gc.root=yes']);
    const r = await d.ctr(['leases', 'rm', '--sync', 'no-such-lease']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /not found/);
    const code = await callUnary(
      d.client(),
      Images.method.delete,
      { name: 'missing', sync: true },
      { metadata: d.metadata('default') },
    ).then(
      () => grpc.status.OK,
      (err: grpc.ServiceError) => err.code,
    );
    assert.equal(grpc.status[code], 'NOT_FOUND');
    await syncGc(d);
    assert.deepEqual(await blobFiles(d.root), [digest]);
  });
});
