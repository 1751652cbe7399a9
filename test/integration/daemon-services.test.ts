// The daemon's other services and its lifecycle, against a real `strata daemon` process: Namespaces,
// Leases (and GC through them), Introspection, Version, health and reflection through ctr and grpc-js,
// metrics, graceful shutdown on SIGTERM and refusal of a second daemon on the same root.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { Content, WriteAction } from '../../src/api/gen/containerd/services/content/v1/content_pb.ts';
import { Images } from '../../src/api/gen/containerd/services/images/v1/images_pb.ts';
import { Introspection } from '../../src/api/gen/containerd/services/introspection/v1/introspection_pb.ts';
import { Leases } from '../../src/api/gen/containerd/services/leases/v1/leases_pb.ts';
import { Namespaces } from '../../src/api/gen/containerd/services/namespaces/v1/namespace_pb.ts';
import { Version } from '../../src/api/gen/containerd/services/version/v1/version_pb.ts';
import { callBidi, callUnary, metadataWith } from '../../src/api/grpc/client.ts';
import { VERSION } from '../../src/version.ts';
import { startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import { expectCode } from '../helpers/grpc-assert.ts';
import { freePort } from '../helpers/ports.ts';

const run = promisify(execFile);
const BIN = new URL('../../bin/strata', import.meta.url).pathname;

const lines = (s: string): string[] => s.split('\n').filter((l) => l !== '');

/** Writes a blob through the Content Write protocol (under a lease when given); returns its digest. */
async function writeBlob(client: grpc.Client, md: grpc.Metadata, data: string, ref: string): Promise<string> {
  const bytes = Buffer.from(data);
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  const call = callBidi(client, Content.method.write, { metadata: md });
  await call.send({
    action: WriteAction.COMMIT,
    ref,
    total: BigInt(bytes.length),
    expected: digest,
    data: bytes,
  });
  call.end();
  for await (const _ of call.responses) {
    // Drain: the stream ends after the commit.
  }
  return digest;
}

async function blobFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const alg of await readdir(join(root, 'content', 'blobs'))) {
    for (const f of await readdir(join(root, 'content', 'blobs', alg))) out.push(`${alg}:${f}`);
  }
  return out.sort();
}

describe('daemon services', () => {
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

  test('Namespaces: get of anything, create, labels, list, delete rules', async () => {
    const ns = (name: string) => callUnary(client, Namespaces.method.get, { name });
    // A daemon whose default is overlayfs (ctr's own fallback) reports no default snapshotter label.
    assert.deepEqual((await ns('never-written')).namespace?.labels, {});
    await callUnary(client, Namespaces.method.create, { namespace: { name: 'ns-a', labels: { team: 'x' } } });
    await expectCode(
      callUnary(client, Namespaces.method.create, { namespace: { name: 'ns-a' } }),
      grpc.status.ALREADY_EXISTS,
      'namespace "ns-a": already exists',
    );
    await expectCode(
      callUnary(client, Namespaces.method.create, { namespace: { name: 'a..b' } }),
      grpc.status.INVALID_ARGUMENT,
      /^identifier "a\.\.b" must match /,
    );
    assert.deepEqual((await ns('ns-a')).namespace?.labels, { team: 'x' });

    // ctr's own namespace commands.
    assert.equal((await d.ctrOk(['namespaces', 'label', 'ns-a', 'env=dev'])).trim(), '');
    assert.deepEqual((await ns('ns-a')).namespace?.labels, { team: 'x', env: 'dev' });
    await d.ctrOk(['namespaces', 'label', 'ns-a', 'team=']);
    assert.deepEqual((await ns('ns-a')).namespace?.labels, { env: 'dev' });
    await expectCode(
      callUnary(client, Namespaces.method.update, {
        namespace: { name: 'ns-a', labels: {} },
        updateMask: { paths: ['name'] },
      }),
      grpc.status.INVALID_ARGUMENT,
      'cannot update "name" field: invalid argument',
    );
    // No mask replaces every label.
    await callUnary(client, Namespaces.method.update, { namespace: { name: 'ns-a', labels: { only: '1' } } });
    assert.deepEqual((await ns('ns-a')).namespace?.labels, { only: '1' });
    await d.ctrOk(['namespaces', 'label', 'ns-a', 'containerd.io/defaults/snapshotter=other']);
    assert.deepEqual((await ns('ns-a')).namespace?.labels, {
      'containerd.io/defaults/snapshotter': 'other',
      only: '1',
    });

    // A write makes the namespace exist; data in it blocks deletion.
    const md = metadataWith({ 'containerd-namespace': 'ns-b' });
    const image = {
      name: 'img',
      target: {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: `sha256:${'a'.repeat(64)}`,
        size: 1n,
      },
    };
    await callUnary(client, Images.method.create, { image }, { metadata: md });
    const listed = (await callUnary(client, Namespaces.method.list, {})).namespaces.map((n) => n.name);
    assert.ok(listed.includes('ns-a') && listed.includes('ns-b'), `listed: ${listed}`);
    assert.deepEqual(listed, [...listed].sort());
    const table = await d.ctrOk(['namespaces', 'ls', '-q']);
    assert.ok(lines(table).includes('ns-b'));
    await expectCode(
      callUnary(client, Namespaces.method.delete, { name: 'ns-b' }),
      grpc.status.FAILED_PRECONDITION,
      'namespace "ns-b" must be empty, but it still has images: failed precondition',
    );
    await callUnary(client, Images.method.delete, { name: 'img' }, { metadata: md });
    await callUnary(client, Leases.method.create, { id: 'goes-with-it' }, { metadata: md });
    await callUnary(client, Namespaces.method.delete, { name: 'ns-b' });
    await expectCode(
      callUnary(client, Namespaces.method.delete, { name: 'ns-b' }),
      grpc.status.NOT_FOUND,
      'namespace "ns-b": not found',
    );
    assert.deepEqual((await callUnary(client, Leases.method.list, {}, { metadata: md })).leases, []);
  });

  test('Leases: create (generated id), list with filters, resources, delete', async () => {
    const md = metadataWith({ 'containerd-namespace': 'leases' });
    const created = (await callUnary(client, Leases.method.create, { labels: { k: 'v' } }, { metadata: md }))
      .lease!;
    assert.match(created.id, /^\d+-[A-Za-z0-9_-]{4}$/);
    assert.ok(created.createdAt && created.createdAt.seconds > 0n);
    await callUnary(client, Leases.method.create, { id: 'named' }, { metadata: md });
    await expectCode(
      callUnary(client, Leases.method.create, { id: 'named' }, { metadata: md }),
      grpc.status.ALREADY_EXISTS,
    );
    const ids = async (...filters: string[]) =>
      (await callUnary(client, Leases.method.list, { filters }, { metadata: md })).leases
        .map((l) => l.id)
        .sort();
    assert.deepEqual(await ids(), [created.id, 'named'].sort());
    assert.deepEqual(await ids('labels.k==v'), [created.id]);
    assert.deepEqual(await ids('id==named'), ['named']);
    await expectCode(
      callUnary(client, Leases.method.list, { filters: ['id=='] }, { metadata: md }),
      grpc.status.INVALID_ARGUMENT,
    );

    const digest = `sha256:${'b'.repeat(64)}`;
    await callUnary(
      client,
      Leases.method.addResource,
      { id: 'named', resource: { id: digest, type: 'content' } },
      { metadata: md },
    );
    await expectCode(
      callUnary(
        client,
        Leases.method.addResource,
        { id: 'nope', resource: { id: digest, type: 'content' } },
        { metadata: md },
      ),
      grpc.status.NOT_FOUND,
    );
    await expectCode(
      callUnary(
        client,
        Leases.method.addResource,
        { id: 'named', resource: { id: 'x', type: 'bogus' } },
        { metadata: md },
      ),
      grpc.status.UNIMPLEMENTED,
    );
    await expectCode(
      callUnary(client, Leases.method.addResource, { id: 'named' }, { metadata: md }),
      grpc.status.INVALID_ARGUMENT,
    );
    const res = await callUnary(client, Leases.method.listResources, { id: 'named' }, { metadata: md });
    assert.deepEqual(
      res.resources.map((r) => [r.type, r.id]),
      [['content', digest]],
    );
    await callUnary(
      client,
      Leases.method.deleteResource,
      { id: 'named', resource: { id: digest, type: 'content' } },
      { metadata: md },
    );
    assert.deepEqual(
      (await callUnary(client, Leases.method.listResources, { id: 'named' }, { metadata: md })).resources,
      [],
    );

    // ctr's own lease commands.
    const out = await d.ctrOk(['leases', 'create', '--id', 'from-ctr', 'a=b'], { namespace: 'leases' });
    assert.equal(out.trim(), 'from-ctr');
    assert.ok(lines(await d.ctrOk(['leases', 'ls', '-q'], { namespace: 'leases' })).includes('from-ctr'));
    await d.ctrOk(['leases', 'rm', 'from-ctr'], { namespace: 'leases' });
    await callUnary(client, Leases.method.delete, { id: 'named', sync: true }, { metadata: md });
    await expectCode(
      callUnary(client, Leases.method.delete, { id: 'named' }, { metadata: md }),
      grpc.status.NOT_FOUND,
    );
  });

  test('a lease holds content written under it until the lease is deleted with sync', async () => {
    const md = metadataWith({ 'containerd-namespace': 'held' });
    await callUnary(client, Leases.method.create, { id: 'hold' }, { metadata: md });
    const leased = metadataWith({ 'containerd-namespace': 'held', 'containerd-lease': 'hold' });
    const digest = await writeBlob(client, leased, 'held by a lease', 'ref-held');
    // A collection forced by another sync delete keeps it: the lease is a root.
    await callUnary(client, Leases.method.create, { id: 'other' }, { metadata: md });
    await callUnary(client, Leases.method.delete, { id: 'other', sync: true }, { metadata: md });
    assert.ok((await blobFiles(d.root)).includes(digest));
    assert.equal(
      (await callUnary(client, Content.method.info, { digest }, { metadata: md })).info?.digest,
      digest,
    );

    await callUnary(client, Leases.method.delete, { id: 'hold', sync: true }, { metadata: md });
    await expectCode(
      callUnary(client, Content.method.info, { digest }, { metadata: md }),
      grpc.status.NOT_FOUND,
    );
    assert.ok(!(await blobFiles(d.root)).includes(digest), 'blob file removed');
  });

  test('an expired lease is collected with what it held', async () => {
    const md = metadataWith({ 'containerd-namespace': 'expired' });
    await callUnary(
      client,
      Leases.method.create,
      { id: 'short', labels: { 'containerd.io/gc.expire': '2000-01-01T00:00:00Z' } },
      { metadata: md },
    );
    const leased = metadataWith({ 'containerd-namespace': 'expired', 'containerd-lease': 'short' });
    const digest = await writeBlob(client, leased, 'held by an expired lease', 'ref-expired');
    // Any sync collection removes the expired lease and, unreferenced now, the blob.
    await callUnary(client, Leases.method.create, { id: 'trigger' }, { metadata: md });
    await callUnary(client, Leases.method.delete, { id: 'trigger', sync: true }, { metadata: md });
    assert.deepEqual((await callUnary(client, Leases.method.list, {}, { metadata: md })).leases, []);
    await expectCode(
      callUnary(client, Content.method.info, { digest }, { metadata: md }),
      grpc.status.NOT_FOUND,
    );
  });

  test('image target and gc.ref labels keep content; removing the image frees it', async () => {
    const md = metadataWith({ 'containerd-namespace': 'graph' });
    await callUnary(client, Leases.method.create, { id: 'pull' }, { metadata: md });
    const leased = metadataWith({ 'containerd-namespace': 'graph', 'containerd-lease': 'pull' });
    const child = await writeBlob(client, leased, 'child blob', 'ref-child');
    const root = await writeBlob(client, leased, 'root blob', 'ref-root');
    const orphan = await writeBlob(client, leased, 'orphan blob', 'ref-orphan');
    await callUnary(
      client,
      Content.method.update,
      {
        info: { digest: root, labels: { 'containerd.io/gc.ref.content.l.0': child } },
        updateMask: { paths: ['labels.containerd.io/gc.ref.content.l.0'] },
      },
      { metadata: md },
    );
    await callUnary(
      client,
      Images.method.create,
      {
        image: {
          name: 'graph',
          target: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: root, size: 9n },
        },
      },
      { metadata: md },
    );
    await callUnary(client, Leases.method.delete, { id: 'pull', sync: true }, { metadata: md });
    const present = async (dg: string) =>
      callUnary(client, Content.method.info, { digest: dg }, { metadata: md }).then(
        () => true,
        () => false,
      );
    assert.equal(await present(root), true);
    assert.equal(await present(child), true);
    assert.equal(await present(orphan), false);
    await callUnary(client, Images.method.delete, { name: 'graph', sync: true }, { metadata: md });
    assert.equal(await present(root), false);
    assert.equal(await present(child), false);
    const files = await blobFiles(d.root);
    for (const dg of [root, child, orphan]) assert.ok(!files.includes(dg), `${dg} removed from disk`);
  });

  test('Introspection and Version: stable uuid, pid, plugins with filters', async () => {
    const server = await callUnary(client, Introspection.method.server, {});
    assert.match(server.uuid, /^[0-9a-f-]{36}$/);
    assert.equal(server.uuid, (await readFile(join(d.root, 'server-uuid'), 'utf8')).trim());
    assert.ok(server.pid > 0n);
    const version = await callUnary(client, Version.method.version, {});
    assert.equal(version.version, VERSION);
    const plugins = async (...filters: string[]) =>
      (await callUnary(client, Introspection.method.plugins, { filters })).plugins.map(
        (p) => `${p.type} ${p.id}`,
      );
    const all = await plugins();
    for (const p of [
      'io.containerd.grpc.v1 images',
      'io.containerd.service.v1 images-service',
      'io.containerd.grpc.v1 content',
      'io.containerd.content.v1 content',
      'io.containerd.grpc.v1 leases',
      'io.containerd.grpc.v1 namespaces',
    ]) {
      assert.ok(all.includes(p), `${p} listed`);
    }
    // containerd's client writes the selectors with a space after the comma.
    assert.deepEqual(await plugins('type==io.containerd.grpc.v1, id==images'), [
      'io.containerd.grpc.v1 images',
    ]);
    assert.deepEqual(await plugins('type==io.containerd.grpc.v1,id==images'), [
      'io.containerd.grpc.v1 images',
    ]);
    assert.deepEqual(await plugins('id==nothing'), []);
    await expectCode(
      callUnary(client, Introspection.method.plugins, { filters: ['type=='] }),
      grpc.status.INVALID_ARGUMENT,
    );
    const table = await d.ctrOk(['plugins', 'ls']);
    assert.match(table, /io\.containerd\.grpc\.v1\s+images\s+-\s+ok/);
  });
});

describe('daemon lifecycle', () => {
  test('SIGTERM stops it cleanly and removes the socket; a restart keeps the uuid', async (t) => {
    const d = await startDaemon({ t });
    const uuid = (await readFile(join(d.root, 'server-uuid'), 'utf8')).trim();
    await d.stop();
    await assert.rejects(access(d.address), /ENOENT/);
    await assert.rejects(access(join(d.root, 'daemon.pid')), /ENOENT/);
    const log = await readFile(d.logFile, 'utf8');
    assert.match(log, /"msg":"daemon stopped"/);
    await d.restart();
    assert.match(await d.ctrOk(['version']), new RegExp(`UUID: ${uuid}`));
  });

  test('a second daemon on the same root is refused', async (t) => {
    const d = await startDaemon({ t });
    const other = await run(BIN, ['daemon', '--root', d.root, '--address', join(d.root, 'other.sock')], {
      timeout: 30_000,
    }).then(
      () => assert.fail('second daemon started'),
      (e: { code: number; stdout: string }) => e,
    );
    assert.equal(other.code, 1);
    assert.match(other.stdout, /in use by another daemon/);
    // The first one still serves.
    await d.ctrOk(['images', 'ls']);
  });

  test('bad flags fail before anything starts', async () => {
    const emptyRoot = await run(BIN, ['daemon', '--root', ''], { timeout: 30_000 }).then(
      () => assert.fail('started with an empty --root'),
      (e: { code: number; stdout: string }) => e,
    );
    assert.equal(emptyRoot.code, 2);
    assert.match(emptyRoot.stdout, /--root must not be empty/);
    const badLevel = await run(BIN, ['daemon', '--root', '/nonexistent/x', '--log-level', 'loud'], {
      timeout: 30_000,
    }).then(
      () => assert.fail('started with a bad log level'),
      (e: { code: number; stdout: string }) => e,
    );
    assert.equal(badLevel.code, 2);
    assert.match(badLevel.stdout, /log level must be one of/);
    const longSock = await run(
      BIN,
      ['daemon', '--root', '/nonexistent/x', '--address', `/tmp/${'s'.repeat(120)}.sock`],
      {
        timeout: 30_000,
      },
    ).then(
      () => assert.fail('started with an overlong socket path'),
      (e: { code: number; stdout: string }) => e,
    );
    assert.equal(longSock.code, 2);
    assert.match(longSock.stdout, /longer than the 107/);
  });

  test('metrics are served when asked for and count calls and collections', async (t) => {
    const port = await freePort();
    const d = await startDaemon({ t, args: ['--metrics', `127.0.0.1:${port}`] });
    await d.ctrOk(['images', 'ls']);
    await d.ctrOk(['leases', 'create', '--id', 'm']);
    await d.ctrOk(['leases', 'rm', '--sync', 'm']);
    const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10_000) });
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(
      text,
      /strata_grpc_requests_total\{method="\/containerd\.services\.images\.v1\.Images\/List",code="OK"\} 1/,
    );
    assert.match(text, /strata_gc_runs_total [1-9]/);
    // ctr's calls are over: none holds a stream.
    assert.match(text, /^strata_grpc_open_calls 0$/m);
    assert.match(text, /strata_process_cpu_seconds_total/);
    const missing = await fetch(`http://127.0.0.1:${port}/other`, { signal: AbortSignal.timeout(10_000) });
    assert.equal(missing.status, 404);
  });
});
