// Seed 002's image API (containerd.v1.Images) on a real `strata daemon`, driven by an independent Python
// client generated from the seed's own proto: Get/Put/List/Delete semantics, namespaces and bad input,
// the same images seen through containerd.services.images.v1, garbage collection after Delete,
// reflection, and the seed's own example: a name registered through Put is pulled by `strata pull
// --registered` from a real docker-registry (behind a counting proxy, so downloads are seen on the
// wire), once; a second run does nothing; a removed layer snapshot is the only one unpacked again.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import type * as grpc from '@grpc/grpc-js';
import { Images as ImagesV1 } from '../../src/api/gen/containerd/services/images/v1/images_pb.ts';
import { callUnary } from '../../src/api/grpc/client.ts';
import { chainIds } from '../../src/client/pull/chain.ts';
import { type Digest, digestOf } from '../../src/oci/digest.ts';
import { blobGets, countingProxy } from '../helpers/counting-proxy.ts';
import { CTR, startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import { exists, reflectionSession, registryOf } from '../helpers/grpc-assert.ts';
import { type PushedImage, pushMultiLayer, skopeoInspect, skopeoRawManifest } from '../helpers/images.ts';
import { runCommand, runProcess, waitFor } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { type Seed002Client, type Seed002Op, seed002Client } from '../helpers/seed002-client.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const BIN = new URL('../../bin/strata', import.meta.url).pathname;

const MT = 'application/vnd.oci.image.manifest.v1+json';
const target = (seed: string, size = 1234) => ({ media_type: MT, digest: digestOf(seed), size });

describe('containerd.v1.Images (seed 002) through a client generated from the seed', () => {
  let d: TestDaemon;
  let client: grpc.Client;
  let py: Seed002Client;
  const cleanups: (() => Promise<void> | void)[] = [];

  before(async () => {
    d = await startDaemon();
    client = d.client();
    py = await seed002Client({ after: (fn) => cleanups.push(fn) });
  });
  after(async () => {
    for (const fn of cleanups.reverse()) await fn();
    await d?.stop();
  });

  const run = (ops: Seed002Op[]) => py.run(d.address, ops);

  test('Get, Put, List and Delete with the seed’s messages', async () => {
    const ns = 'api';
    const results = await run([
      { op: 'get', name: 'docker.io/stevvooe/foo:latest', namespace: ns },
      { op: 'put', name: 'docker.io/stevvooe/foo:latest', target: target('foo'), namespace: ns },
      { op: 'put', name: 'docker.io/library/bar:1', target: target('bar', 99), namespace: ns },
      { op: 'get', name: 'docker.io/stevvooe/foo:latest', namespace: ns },
      { op: 'list', namespace: ns },
      { op: 'list', namespace: 'other' },
      { op: 'delete', name: 'docker.io/library/bar:1', namespace: ns },
      { op: 'delete', name: 'docker.io/library/bar:1', namespace: ns },
      { op: 'get', name: 'docker.io/library/bar:1', namespace: ns },
      { op: 'list', namespace: ns },
    ]);
    assert.deepEqual(results, [
      { error: { code: 'NOT_FOUND', details: 'image "docker.io/stevvooe/foo:latest": not found' } },
      { ok: {} },
      { ok: {} },
      { ok: { image: { name: 'docker.io/stevvooe/foo:latest', target: target('foo') } } },
      {
        ok: {
          images: [
            { name: 'docker.io/library/bar:1', target: target('bar', 99) },
            { name: 'docker.io/stevvooe/foo:latest', target: target('foo') },
          ],
        },
      },
      { ok: { images: [] } },
      { ok: {} },
      { error: { code: 'NOT_FOUND', details: 'image "docker.io/library/bar:1": not found' } },
      { error: { code: 'NOT_FOUND', details: 'image "docker.io/library/bar:1": not found' } },
      { ok: { images: [{ name: 'docker.io/stevvooe/foo:latest', target: target('foo') }] } },
    ]);
  });

  test('Put replaces the target; labels and creation time set through the newer API stay', async () => {
    const ns = 'both';
    const md = d.metadata(ns);
    const name = 'registry.test/app:v1';
    await callUnary(
      client,
      ImagesV1.method.create,
      {
        image: {
          name,
          labels: { team: 'x' },
          target: { mediaType: MT, digest: digestOf('one'), size: 10n, annotations: { a: 'b' } },
        },
      },
      { metadata: md },
    );
    const before = (await callUnary(client, ImagesV1.method.get, { name }, { metadata: md })).image!;
    const seen = await run([
      { op: 'get', name, namespace: ns },
      { op: 'put', name, target: target('two'), namespace: ns },
      { op: 'put', name: 'registry.test/new:v1', target: target('three'), namespace: ns },
    ]);
    assert.deepEqual(seen[0], {
      ok: { image: { name, target: { media_type: MT, digest: digestOf('one'), size: 10 } } },
    });
    assert.deepEqual(seen.slice(1), [{ ok: {} }, { ok: {} }]);

    const now = (await callUnary(client, ImagesV1.method.get, { name }, { metadata: md })).image!;
    assert.deepEqual(now.labels, { team: 'x' });
    assert.equal(now.target?.digest, digestOf('two'));
    assert.equal(now.target?.size, 1234n);
    assert.equal(now.target?.mediaType, MT);
    assert.deepEqual(now.target?.annotations, {}, 'the annotations described the old target');
    assert.deepEqual(now.createdAt, before.createdAt);
    const nanos = (ts: typeof now.updatedAt) => ts!.seconds * 1_000_000_000n + BigInt(ts!.nanos);
    assert.ok(nanos(now.updatedAt) > nanos(before.updatedAt), 'updated_at moves on');

    const listed = await callUnary(client, ImagesV1.method.list, { filters: [] }, { metadata: md });
    assert.deepEqual(
      listed.images.map((i) => [i.name, i.target?.digest, i.labels]),
      [
        ['registry.test/app:v1', digestOf('two'), { team: 'x' }],
        ['registry.test/new:v1', digestOf('three'), {}],
      ],
    );
  });

  test('bad input is refused clearly and changes nothing; namespaces follow the header rules', async () => {
    const ns = 'bad';
    const name = 'registry.test/kept:v1';
    const results = await run([
      { op: 'put', name, target: target('kept'), namespace: ns },
      { op: 'put', name: '', target: target('x'), namespace: ns },
      { op: 'put', name, namespace: ns },
      { op: 'put', name, target: { ...target('x'), size: 0 }, namespace: ns },
      { op: 'put', name, target: { ...target('x'), media_type: '' }, namespace: ns },
      { op: 'put', name, target: { ...target('x'), digest: 'sha256:abc' }, namespace: ns },
      { op: 'put', image: false, namespace: ns },
      { op: 'get', name: '', namespace: ns },
      { op: 'list' },
      { op: 'put', name: 'x', target: target('x') },
      { op: 'list', namespace: 'a..b' },
      { op: 'get', name, namespace: ns },
    ]);
    const codes = results.map((r) => r.error?.code ?? 'OK');
    assert.deepEqual(codes, [
      'OK',
      'INVALID_ARGUMENT',
      'INVALID_ARGUMENT',
      'INVALID_ARGUMENT',
      'INVALID_ARGUMENT',
      'INVALID_ARGUMENT',
      'INVALID_ARGUMENT',
      'NOT_FOUND',
      'FAILED_PRECONDITION',
      'FAILED_PRECONDITION',
      'INVALID_ARGUMENT',
      'OK',
    ]);
    assert.equal(results[1]!.error?.details, 'Image.Name required');
    assert.equal(results[3]!.error?.details, 'Target.Size must be greater than zero: invalid argument');
    assert.equal(results[4]!.error?.details, 'Target.MediaType must be set: invalid argument');
    assert.match(results[5]!.error?.details ?? '', /^Target\.Digest "sha256:abc" invalid: /);
    assert.equal(results[8]!.error?.details, 'namespace is required: failed precondition');
    assert.match(results[10]!.error?.details ?? '', /^namespace validation: identifier "a\.\.b" must match/);
    assert.deepEqual(results.at(-1), { ok: { image: { name, target: target('kept') } } });
  });

  test('Delete lets the next collection free what only that image held', async () => {
    const ns = 'gc';
    const bytes = randomBytes(4096);
    const digest = digestOf(bytes);
    // The image first, then its target ingested without a lease: nothing but the image holds it, from the
    // moment it is stored (ingested first, a collection another test scheduled could take it before the
    // image is put).
    const file = join(d.root, 'content', 'blobs', 'sha256', digest.slice('sha256:'.length));
    const name = 'registry.test/held:v1';
    const put = await run([
      { op: 'put', name, target: { media_type: MT, digest, size: 4096 }, namespace: ns },
    ]);
    assert.deepEqual(put, [{ ok: {} }]);
    await runCommand(
      CTR,
      ['--address', d.address, '--namespace', ns, 'content', 'ingest', '--expected-size', '4096', 'blob'],
      { input: bytes, env: { CONTAINERD_ADDRESS: undefined, CONTAINERD_NAMESPACE: undefined } },
    );
    await d.ctrOk(['leases', 'create', '--id', 'gc-now'], { namespace: ns });
    await d.ctrOk(['leases', 'rm', '--sync', 'gc-now'], { namespace: ns });
    assert.ok(await exists(file), 'the image holds its target');

    assert.deepEqual(await run([{ op: 'delete', name, namespace: ns }]), [{ ok: {} }]);
    await waitFor(async () => !(await exists(file)), 20_000, { what: 'the blob to be collected' });
    assert.equal(await d.ctrOk(['content', 'ls', '-q'], { namespace: ns }), '');
  });

  test('reflection lists the service and describes it with the seed’s packages', async () => {
    const { ask, end } = reflectionSession(client);
    const listed = await ask({ case: 'listServices', value: '' });
    assert.equal(listed.case, 'listServicesResponse');
    const names = listed.value.service.map((s) => s.name);
    assert.ok(names.includes('containerd.v1.Images'), names.join(', '));
    assert.ok(names.includes('containerd.services.images.v1.Images'), names.join(', '));

    const described = await ask({ case: 'fileContainingSymbol', value: 'containerd.v1.Images.Put' });
    assert.equal(described.case, 'fileDescriptorResponse');
    const registry = registryOf(
      described.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b)),
    );
    await end();
    const svc = registry.getService('containerd.v1.Images');
    assert.deepEqual(
      svc?.methods.map((m) => `${m.name}(${m.input.typeName}) ${m.output.typeName}`),
      [
        'Get(containerd.v1.GetRequest) containerd.v1.GetResponse',
        'Put(containerd.v1.PutRequest) google.protobuf.Empty',
        'List(containerd.v1.ListRequest) containerd.v1.ListResponse',
        'Delete(containerd.v1.DeleteRequest) google.protobuf.Empty',
      ],
    );
    const fields = (type: string) => registry.getMessage(type)?.fields.map((f) => `${f.number}:${f.name}`);
    assert.deepEqual(fields('containerd.v1.Image'), ['1:name', '2:target']);
    assert.deepEqual(fields('containerd.v1.types.Descriptor'), ['1:media_type', '2:digest', '3:size']);
  });
});

describe('the seed’s snowball: register a name, then pull what is missing', () => {
  let reg: TestRegistry;
  let proxy: Awaited<ReturnType<typeof countingProxy>>;
  let image: PushedImage;
  let layers: Digest[];
  let config: Digest;
  let chain: Digest[];

  before(async () => {
    reg = await startRegistry();
    image = await pushMultiLayer(reg, 'stevvooe/foo', { layers: 5 });
    proxy = await countingProxy(reg.url);
    const manifest = JSON.parse((await skopeoRawManifest(image.ref)).toString('utf8')) as {
      config: { digest: Digest };
      layers: { digest: Digest }[];
    };
    layers = manifest.layers.map((l) => l.digest);
    config = manifest.config.digest;
    const cfg = (await skopeoInspect(image.ref, { config: true })) as { rootfs: { diff_ids: Digest[] } };
    chain = chainIds(cfg.rootfs.diff_ids);
  });
  after(async () => {
    await proxy?.close();
    await reg?.stop();
  });

  const strata = (args: string[]) => runProcess(BIN, args, { timeoutMs: 180_000 });
  const strataOk = async (args: string[]): Promise<string> => {
    const r = await strata(args);
    assert.equal(r.code, 0, `strata ${args.join(' ')} failed:\n${r.stderr}\n${r.stdout}`);
    return r.stdout;
  };
  const short = (d: string) => `${d.slice(0, 19)}…`;

  test('fetched once into the content store, unpacked once, then only the missing layer', async (t) => {
    const d = await startDaemon({ t });
    const py = await seed002Client(t);
    // The registry has no tag `registered`: only the image record says what this name is.
    const name = `${proxy.host}/stevvooe/foo:registered`;
    const target = { media_type: image.mediaType, digest: image.digest, size: image.size };
    // This test looks at the native snapshotter's snapshots.
    const pull = ['pull', '--registered', '--snapshotter', 'native', '--address', d.address, name];
    assert.deepEqual(await py.run(d.address, [{ op: 'put', name, target, namespace: 'default' }]), [
      { ok: {} },
    ]);

    // Resolving the name at the registry (what ctr does) cannot find it; the registered pull can.
    const plain = await strata(['pull', '--address', d.address, name]);
    assert.notEqual(plain.code, 0);
    assert.match(plain.stderr, /stevvooe\/foo:registered: not found/);
    let mark = proxy.seen.length;
    const first = await strataOk(pull);
    const got = proxy.seen.slice(mark);
    assert.match(first, new RegExp(`^resolved ${name.replaceAll('.', '\\.')} ${image.digest}$`, 'm'));
    assert.match(
      first,
      /^pulled .* 8 blobs fetched \(.*\), 0 present, 6 layers unpacked, 0 already unpacked$/m,
    );
    assert.doesNotMatch(first, /^image /m, 'the record is left as it was put');
    // Each blob came over the wire once, the manifest by its digest, and no tag was looked up.
    assert.deepEqual(
      blobGets(got, [...layers, config])
        .map((g) => g.path.slice(g.path.lastIndexOf('/') + 1))
        .sort(),
      [...layers, config].sort(),
    );
    const manifestGets = got.filter((s) => s.method === 'GET' && s.path.includes('/manifests/'));
    assert.deepEqual(
      manifestGets.map((g) => g.path),
      [`/v2/stevvooe/foo/manifests/${image.digest}`],
    );
    assert.ok(!got.some((s) => s.path.endsWith('/manifests/registered')), JSON.stringify(got));
    assert.match(await d.ctrOk(['images', 'check', '--snapshotter', 'native']), /complete \(7\/7\).*true/);

    // Everything is present now: no request reaches the registry at all, nothing is unpacked.
    mark = proxy.seen.length;
    const second = await strataOk(pull);
    assert.deepEqual(proxy.seen.slice(mark), []);
    assert.match(
      second,
      /^pulled .* 0 blobs fetched \(.*\), 8 present, 0 layers unpacked, 6 already unpacked$/m,
    );

    // The rootfs loses its top layer's snapshot: the diff IDs' chain is compared with the snapshotter and
    // exactly that layer is unpacked again, with nothing fetched.
    // Only the config's label holds the chain, through its top: without the top, the next collection
    // takes the layers below too (as containerd's does), so the one below is made a root first.
    const top = chain.at(-1)!;
    await d.ctrOk([
      'snapshots',
      '--snapshotter',
      'native',
      'label',
      chain.at(-2)!,
      'containerd.io/gc.root=test',
    ]);
    await d.ctrOk(['snapshots', '--snapshotter', 'native', 'rm', top]);
    assert.doesNotMatch(await d.ctrOk(['snapshots', '--snapshotter', 'native', 'ls']), new RegExp(top));
    mark = proxy.seen.length;
    const third = await strataOk(pull);
    assert.deepEqual(proxy.seen.slice(mark), []);
    assert.match(
      third,
      /^pulled .* 0 blobs fetched \(.*\), 8 present, 1 layers unpacked, 5 already unpacked$/m,
    );
    assert.deepEqual(
      third
        .split('\n')
        .filter((l) => l.startsWith('unpacked '))
        .map((l) => l.split(' ')[1]),
      [short(layers.at(-1)!)],
    );
    const snaps = await d.ctrOk(['snapshots', '--snapshotter', 'native', 'ls']);
    for (const [i, id] of chain.entries()) {
      const parent = i === 0 ? '' : `${chain[i - 1]}\\s+`;
      assert.match(snaps, new RegExp(`^${id}\\s+${parent}Committed`, 'm'));
    }

    // Runnable: the rootfs is there, and the record is still exactly what was put.
    const dir = await tempDir('snowball-rootfs');
    t.after(() => removeTempDir(dir));
    await strataOk(['rootfs', '--snapshotter', 'native', '--address', d.address, name, join(dir, 'rootfs')]);
    await access(join(dir, 'rootfs', 'bin', 'busybox'));
    assert.deepEqual(await py.run(d.address, [{ op: 'list', namespace: 'default' }]), [
      { ok: { images: [{ name, target }] } },
    ]);
  });

  test('a name the daemon does not have is refused without asking the registry', async (t) => {
    const d = await startDaemon({ t });
    const mark = proxy.seen.length;
    const r = await strata([
      'pull',
      '--registered',
      '--address',
      d.address,
      `${proxy.host}/stevvooe/foo:never`,
    ]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /image .*stevvooe\/foo:never: not found/);
    assert.deepEqual(proxy.seen.slice(mark), []);
    assert.equal(await d.ctrOk(['content', 'ls', '-q']), '');
  });
});
