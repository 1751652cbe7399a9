// strata.specstore.v1.SpecStore over a real gRPC listener on loopback, through the client `strata spec
// put|rm|ls --address` uses: what is put is what the store holds, what the store would refuse is refused
// with nothing stored, and a listener that serves the store for reading only says so.
import assert from 'node:assert/strict';
import { open, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { removeTempDir, tempDir } from '../../../test/helpers/tmp.ts';
import { errorKind } from '../../errors.ts';
import type { SpecStore } from '../../facade/providers/spec-store.ts';
import type { ImageSpec } from '../../facade/spec.ts';
import { openSpecStore, specStoreServices } from '../../server/spec-provider.ts';
import { GrpcSpecProvider } from '../clients/spec-provider.ts';
import { GrpcSpecStore } from '../clients/spec-store.ts';
import { SpecStore as SpecStoreService } from '../gen/strata/specstore/v1/specstore_pb.ts';
import { callUnary, createClient } from '../grpc/client.ts';
import { createGrpcServer, type GrpcServer } from '../grpc/server.ts';

const logger = pino({ level: 'silent' });
const BASE = '127.0.0.1:5000/base/busybox:latest';
const DIGEST = `sha256:${'a'.repeat(64)}`;

async function serve(store: SpecStore, writable: boolean): Promise<{ server: GrpcServer; address: string }> {
  const server = createGrpcServer({ logger, services: await specStoreServices(store, writable) });
  const port = await server.listenTcp('127.0.0.1', 0);
  return { server, address: `127.0.0.1:${port}` };
}

const kindOf = (kind: string) => (err: unknown) => errorKind(err) === kind;

/** A spec with its direct layers' bytes as plain arrays: the store hands out Buffers, gRPC Uint8Arrays. */
const comparable = (spec: ImageSpec) => ({
  ...spec,
  contentLayers: spec.contentLayers.map((l) => (l.kind === 'direct' ? { ...l, content: [...l.content] } : l)),
});

describe('spec store over gRPC', () => {
  let dir: string;
  let store: SpecStore;
  let writable: { server: GrpcServer; address: string };
  let readOnly: { server: GrpcServer; address: string };
  let client: GrpcSpecStore;

  before(async () => {
    dir = await tempDir('spec-store-grpc');
    store = openSpecStore(join(dir, 'specs'));
    writable = await serve(store, true);
    readOnly = await serve(store, false);
    client = new GrpcSpecStore(writable.address);
  });

  after(async () => {
    client?.close();
    await writable?.server.shutdown();
    await readOnly?.server.shutdown();
    if (dir) await removeTempDir(dir);
  });

  test('a put is stored whole, listed, read back through SpecProvider, and removed', async () => {
    const spec: ImageSpec = {
      baseRef: BASE,
      ideRef: '127.0.0.1:5000/ide/code:latest',
      supervisorRef: '',
      ideLayerRefs: ['127.0.0.1:5000/ide/layer:1'],
      contentLayers: [
        {
          kind: 'remote',
          url: 'http://127.0.0.1:8000/layer.tar.gz',
          digest: DIGEST,
          diffId: `sha256:${'b'.repeat(64)}`,
          mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
          size: 4096,
        },
        { kind: 'direct', content: new Uint8Array([1, 2, 3, 0, 255]) },
      ],
    };
    await client.put('team/ws-1', spec);
    await client.put('ws-2', { ...spec, ideRef: '', ideLayerRefs: [], contentLayers: [] });
    assert.deepEqual(comparable(await store.getSpec('team/ws-1')), comparable(spec));
    assert.deepEqual(await client.list(), ['team/ws-1', 'ws-2']);
    const reader = new GrpcSpecProvider({ address: writable.address });
    try {
      assert.deepEqual(comparable(await reader.getSpec('team/ws-1')), comparable(spec));
    } finally {
      reader.close();
    }

    // A second put replaces the spec.
    await client.put('ws-2', { ...spec, contentLayers: [] });
    assert.equal((await store.getSpec('ws-2')).ideRef, spec.ideRef);

    await client.remove('team/ws-1');
    assert.deepEqual(await client.list(), ['ws-2']);
    await assert.rejects(client.remove('team/ws-1'), kindOf('NotFound'));
    await client.remove('ws-2');
  });

  test('what the store would refuse is InvalidArgument, and nothing is stored', async () => {
    const ok: ImageSpec = {
      baseRef: BASE,
      ideRef: '',
      supervisorRef: '',
      ideLayerRefs: [],
      contentLayers: [],
    };
    await assert.rejects(client.put('', ok), /id is required/);
    await assert.rejects(client.put('Bad_ID', ok), kindOf('InvalidArgument'));
    await assert.rejects(client.put('no-base', { ...ok, baseRef: '' }), /baseRef is required/);
    await assert.rejects(
      client.put('bad-ref', { ...ok, baseRef: 'not a reference' }),
      kindOf('InvalidArgument'),
    );
    await assert.rejects(
      client.put('bad-layer', {
        ...ok,
        contentLayers: [
          { kind: 'remote', url: 'ftp://x/y', digest: DIGEST, diffId: '', mediaType: '', size: 1 },
        ],
      }),
      kindOf('InvalidArgument'),
    );
    // A spec whose stored form getSpec would refuse to read (base64 makes 13 MiB of direct layer ~17 MiB).
    await assert.rejects(
      client.put('too-big', {
        ...ok,
        contentLayers: [{ kind: 'direct', content: new Uint8Array(13 * 2 ** 20) }],
      }),
      (err: unknown) => errorKind(err) === 'InvalidArgument' && /more than the/.test(String(err)),
    );
    // An id of the repository grammar whose file name would be longer than a file system takes (each '/'
    // is stored as three characters): refused as such, not an internal error.
    const deep = `${'ws/'.repeat(70)}x`;
    await assert.rejects(
      client.put(deep, ok),
      (err: unknown) => errorKind(err) === 'InvalidArgument' && /too long/.test(String(err)),
    );
    await assert.rejects(store.getSpec(deep), kindOf('InvalidArgument'));
    // A request without a spec (only another client could send one).
    const raw = createClient(writable.address);
    try {
      await assert.rejects(
        callUnary(raw, SpecStoreService.method.putImageSpec, { id: 'no-spec' }),
        /spec is required/,
      );
    } finally {
      raw.close();
    }
    assert.deepEqual(await client.list(), []);
    assert.deepEqual(await readdir(join(dir, 'specs', 'tmp')), [], 'no temp file left');
  });

  test('a listener serving the store for reading only refuses writes, saying how to allow them', async () => {
    const ro = new GrpcSpecStore(readOnly.address);
    try {
      await assert.rejects(
        ro.put('ws-ro', {
          baseRef: BASE,
          ideRef: '',
          supervisorRef: '',
          ideLayerRefs: [],
          contentLayers: [],
        }),
        (err: unknown) => errorKind(err) === 'Unimplemented' && /--writable/.test(String(err)),
      );
      // A listing is refused as well, and the refusal says a listing, not a write, was refused.
      await assert.rejects(
        ro.list(),
        (err: unknown) =>
          errorKind(err) === 'Unimplemented' &&
          /does not list its specs/.test(String(err)) &&
          /--writable/.test(String(err)),
      );
    } finally {
      ro.close();
    }
    assert.deepEqual(await store.list(), []);
  });
});

test('a put is on the disk before the spec takes its name, so a crash leaves no empty spec', async (t) => {
  const dir = await tempDir('spec-store-sync');
  t.after(() => removeTempDir(dir));
  const store = openSpecStore(join(dir, 'specs'));
  // What a crash leaves cannot be shown here; that the bytes were synced before the rename can.
  const probe = await open(join(dir, 'probe'), 'w');
  const proto = Object.getPrototypeOf(probe) as { sync(): Promise<void>; datasync(): Promise<void> };
  await probe.close();
  const { sync, datasync } = proto;
  let synced = 0;
  proto.sync = function (this: unknown) {
    synced++;
    return sync.call(this);
  };
  proto.datasync = function (this: unknown) {
    synced++;
    return datasync.call(this);
  };
  const spec: ImageSpec = {
    baseRef: BASE,
    ideRef: '',
    supervisorRef: '',
    ideLayerRefs: [],
    contentLayers: [],
  };
  try {
    await store.put('ws-1', spec);
  } finally {
    proto.sync = sync;
    proto.datasync = datasync;
  }
  assert.ok(synced >= 1, 'the spec file was synced');
  assert.equal((await store.getSpec('ws-1')).baseRef, BASE);
});

test('files no put makes are not listed as specs', async (t) => {
  const dir = await tempDir('spec-store-list');
  t.after(() => removeTempDir(dir));
  const store = openSpecStore(join(dir, 'specs'));
  await store.put('team/ws-1', {
    baseRef: BASE,
    ideRef: '',
    supervisorRef: '',
    ideLayerRefs: [],
    contentLayers: [],
  });
  // Put there by hand, beside the stored specs: names no spec id can have.
  const files = join(dir, 'specs', 'specs');
  assert.deepEqual(await readdir(files), ['team%2Fws-1.json']);
  for (const name of ['Notes.json', 'backup.json.bak', '..%2Fescape.json', 'a b.json']) {
    await writeFile(join(files, name), '{}');
  }
  assert.deepEqual(await store.list(), ['team/ws-1']);
});
