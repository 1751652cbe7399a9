// The gRPC plumbing against real clients: containerd's ctr over a unix socket, grpc-js clients for
// health (grpc-health-check's own codec), reflection, error mapping, limits and cancellation.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { create, fromBinary } from '@bufbuild/protobuf';
import { EmptySchema, FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import { service as healthProtoLoaderService } from 'grpc-health-check';
import { pino } from 'pino';
import { Content, WriteAction } from '../../src/api/gen/containerd/services/content/v1/content_pb.ts';
import { Images } from '../../src/api/gen/containerd/services/images/v1/images_pb.ts';
import { Introspection } from '../../src/api/gen/containerd/services/introspection/v1/introspection_pb.ts';
import { Version } from '../../src/api/gen/containerd/services/version/v1/version_pb.ts';
import { ServerReflection as ReflectionV1alpha } from '../../src/api/gen/grpc/reflection/v1alpha/reflection_pb.ts';
import {
  callBidi,
  callServerStream,
  callUnary,
  createClient,
  metadataWith,
} from '../../src/api/grpc/client.ts';
import { namespaceOf } from '../../src/api/grpc/namespace.ts';
import { createGrpcServer, type GrpcServer } from '../../src/api/grpc/server.ts';
import { implement } from '../../src/api/grpc/service.ts';
import { notFound } from '../../src/errors.ts';
import { VERSION } from '../../src/version.ts';
import { failure, reflectionSession, registryOf } from '../helpers/grpc-assert.ts';

const run = promisify(execFile);
const REVISION = 'plumbing-test-revision';
const UUID = '6f1e4a52-8d0b-4c47-9a51-3e2f0c7d9b11';
const MiB = 1 << 20;

interface LogLine {
  level: number;
  method?: string;
  code?: string;
  ms?: number;
  details?: string;
  err?: { message: string };
}

function capturingLogger(lines: LogLine[]) {
  return pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
}

const ns = () => metadataWith({ 'containerd-namespace': 'default' });

describe('gRPC plumbing', () => {
  let dir: string;
  let sock: string;
  let server: GrpcServer;
  let client: grpc.Client;
  const logs: LogLine[] = [];
  let listStopped: Promise<void>;
  let markListStopped: () => void;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'strata-grpc-'));
    sock = join(dir, 'strata.sock');
    listStopped = new Promise((resolve) => {
      markListStopped = resolve;
    });
    server = createGrpcServer({
      logger: capturingLogger(logs),
      services: [
        implement(Version, { version: () => ({ version: VERSION, revision: REVISION }) }),
        implement(Introspection, { server: () => ({ uuid: UUID }) }),
        implement(Content, {
          info: (req, ctx) => {
            namespaceOf(ctx.metadata);
            if (req.digest === 'sha256:boom') throw new Error('secret disk path /var/lib/x exploded');
            throw notFound(`content digest ${req.digest}: not found`);
          },
          // One batch, then wait for the client to go away; the finally shows cleanup on cancel.
          list: async function* (_req, ctx) {
            namespaceOf(ctx.metadata);
            try {
              yield { info: [{ digest: 'sha256:aa', size: 1n }] };
              await new Promise((_, reject) => ctx.signal.addEventListener('abort', reject, { once: true }));
            } finally {
              markListStopped();
            }
          },
          read: async function* (req) {
            yield { offset: req.offset, data: new Uint8Array(Number(req.size)).fill(7) };
          },
          write: async function* (requests) {
            for await (const req of requests) {
              yield { action: req.action, offset: req.offset + BigInt(req.data.length), total: req.total };
            }
          },
        }),
      ],
    });
    await server.listenUnix(sock);
    client = createClient(`unix://${sock}`);
  });

  after(async () => {
    client?.close();
    await server?.shutdown();
    await rm(dir, { recursive: true, force: true });
  });

  test('the socket is only for owner and group', async () => {
    const st = await stat(sock);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o660);
  });

  test('ctr version shows our version, revision and uuid', async () => {
    const { stdout } = await run('ctr', ['--address', sock, 'version'], { timeout: 30_000 });
    assert.match(stdout, new RegExp(`Server:\\n\\s+Version:\\s+${VERSION.replaceAll('.', '\\.')}\\n`));
    assert.match(stdout, new RegExp(`Revision:\\s+${REVISION}\\n`));
    assert.match(stdout, new RegExp(`UUID:\\s+${UUID}`));
  });

  test('ctr sees an invalid namespace rejected with containerd’s message', async () => {
    const err = await run('ctr', ['--address', sock, '--namespace', 'a..b', 'content', 'ls'], {
      timeout: 30_000,
    }).then(
      () => assert.fail('ctr succeeded with an invalid namespace'),
      (e: { code: number; stderr: string }) => e,
    );
    assert.notEqual(err.code, 0);
    assert.match(err.stderr, /namespace validation: identifier "a\.\.b" must match/);
  });

  test('each call is logged with method, code and duration', async () => {
    await callUnary(client, Version.method.version, {});
    const line = logs.find((l) => l.method === '/containerd.services.version.v1.Version/Version');
    assert.ok(line, 'no log line for Version/Version');
    assert.equal(line.code, 'OK');
    assert.equal(typeof line.ms, 'number');
  });

  test('health reports SERVING overall and per service, NOT_FOUND for unknown names', async () => {
    const check = healthProtoLoaderService.Check;
    assert.ok(check);
    const ask = (name: string) =>
      new Promise<{ status: string }>((resolve, reject) => {
        client.makeUnaryRequest(
          check.path,
          check.requestSerialize,
          (b: Buffer) => check.responseDeserialize(b) as { status: string },
          { service: name },
          new grpc.Metadata(),
          { deadline: Date.now() + 10_000 },
          (err, value) => (err || !value ? reject(err) : resolve(value)),
        );
      });
    assert.equal((await ask('')).status, 'SERVING');
    assert.equal((await ask('containerd.services.version.v1.Version')).status, 'SERVING');
    assert.equal((await ask('containerd.services.content.v1.Content')).status, 'SERVING');
    const missing = await failure(ask('no.such.Service'));
    assert.equal(missing.code, grpc.status.NOT_FOUND);
  });

  test('reflection lists the services and serves self-contained descriptors', async () => {
    const { ask, end } = reflectionSession(client);

    const listed = await ask({ case: 'listServices', value: '' });
    assert.equal(listed.case, 'listServicesResponse');
    const names = listed.value.service.map((s) => s.name);
    for (const n of [
      'containerd.services.version.v1.Version',
      'containerd.services.introspection.v1.Introspection',
      'containerd.services.content.v1.Content',
      'grpc.health.v1.Health',
      'grpc.reflection.v1.ServerReflection',
      'grpc.reflection.v1alpha.ServerReflection',
    ]) {
      assert.ok(names.includes(n), `${n} missing from ${names.join(', ')}`);
    }
    assert.ok(!names.includes('containerd.services.images.v1.Images'), 'an unregistered service is listed');

    // Introspection imports platform.proto and google/rpc/status.proto, which import further files:
    // the answer must carry them all, so a registry can be built from it alone.
    const byMethod = await ask({
      case: 'fileContainingSymbol',
      value: 'containerd.services.introspection.v1.Introspection.Server',
    });
    assert.equal(byMethod.case, 'fileDescriptorResponse');
    const files = byMethod.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
    assert.equal(files[0]?.name, 'containerd/services/introspection/v1/introspection.proto');
    const fileNames = files.map((f) => f.name);
    for (const f of [
      'containerd/types/platform.proto',
      'google/rpc/status.proto',
      'google/protobuf/any.proto',
    ]) {
      assert.ok(fileNames.includes(f), `${f} missing from ${fileNames.join(', ')}`);
    }
    const registry = registryOf(files);
    const svc = registry.getService('containerd.services.introspection.v1.Introspection');
    assert.deepEqual(
      svc?.methods.map((m) => m.name),
      ['Plugins', 'Server', 'PluginInfo'],
    );
    assert.equal(
      registry.getMessage('containerd.types.Platform')?.fields.find((f) => f.number === 1)?.name,
      'os',
    );

    const byName = await ask({
      case: 'fileByFilename',
      value: 'containerd/services/version/v1/version.proto',
    });
    assert.equal(byName.case, 'fileDescriptorResponse');
    const versionFiles = byName.value.fileDescriptorProto.map(
      (b) => fromBinary(FileDescriptorProtoSchema, b).name,
    );
    assert.deepEqual(versionFiles, [
      'containerd/services/version/v1/version.proto',
      'google/protobuf/empty.proto',
    ]);

    const unknownSymbol = await ask({ case: 'fileContainingSymbol', value: 'no.such.Thing' });
    assert.equal(unknownSymbol.case, 'errorResponse');
    assert.equal(unknownSymbol.value.errorCode, grpc.status.NOT_FOUND);
    const unknownFile = await ask({ case: 'fileByFilename', value: 'nope.proto' });
    assert.equal(unknownFile.case, 'errorResponse');
    const empty = await ask({ case: undefined });
    assert.equal(empty.case, 'errorResponse');
    assert.equal(empty.value.errorCode, grpc.status.INVALID_ARGUMENT);
    await end();
  });

  test('reflection v1alpha answers too', async () => {
    const call = callBidi(client, ReflectionV1alpha.method.serverReflectionInfo);
    await call.send({
      host: 'h',
      messageRequest: { case: 'fileContainingSymbol', value: 'containerd.types.Platform' },
    });
    call.end();
    const all = [];
    for await (const r of call.responses) all.push(r);
    assert.equal(all.length, 1);
    assert.equal(all[0]?.validHost, 'h');
    const answer = all[0]?.messageResponse;
    assert.equal(answer?.case, 'fileDescriptorResponse');
    const first = answer.value.fileDescriptorProto[0];
    assert.ok(first);
    assert.equal(fromBinary(FileDescriptorProtoSchema, first).name, 'containerd/types/platform.proto');
  });

  test('a service that is not registered answers UNIMPLEMENTED', async () => {
    const err = await failure(callUnary(client, Images.method.list, {}, { metadata: ns() }));
    assert.equal(err.code, grpc.status.UNIMPLEMENTED);
  });

  test('a method the implementation leaves out answers UNIMPLEMENTED', async () => {
    const err = await failure(callUnary(client, Introspection.method.plugins, {}));
    assert.equal(err.code, grpc.status.UNIMPLEMENTED);
    assert.equal(err.details, 'method Plugins not implemented');
  });

  test('a StrataError NotFound arrives as NOT_FOUND with its message', async () => {
    const err = await failure(
      callUnary(client, Content.method.info, { digest: 'sha256:abc' }, { metadata: ns() }),
    );
    assert.equal(err.code, grpc.status.NOT_FOUND);
    assert.equal(err.details, 'content digest sha256:abc: not found');
  });

  test('an unexpected error is INTERNAL with a generic message; the details stay in the log', async () => {
    const err = await failure(
      callUnary(client, Content.method.info, { digest: 'sha256:boom' }, { metadata: ns() }),
    );
    assert.equal(err.code, grpc.status.INTERNAL);
    assert.equal(err.details, 'internal error');
    assert.ok(!err.details.includes('/var/lib/x'));
    const line = logs.find((l) => l.err?.message.includes('/var/lib/x'));
    assert.ok(line, 'the real error was not logged');
    assert.equal(line.code, 'INTERNAL');
  });

  test('the namespace header: missing, empty and invalid', async () => {
    const missing = await failure(callUnary(client, Content.method.info, { digest: 'sha256:abc' }));
    assert.deepEqual(missing, {
      code: grpc.status.FAILED_PRECONDITION,
      details: 'namespace is required: failed precondition',
    });
    const empty = await failure(
      callUnary(client, Content.method.info, {}, { metadata: metadataWith({ 'containerd-namespace': '' }) }),
    );
    assert.equal(empty.code, grpc.status.FAILED_PRECONDITION);
    const invalid = await failure(
      callUnary(
        client,
        Content.method.info,
        {},
        { metadata: metadataWith({ 'containerd-namespace': 'a/b' }) },
      ),
    );
    assert.equal(invalid.code, grpc.status.INVALID_ARGUMENT);
    assert.match(invalid.details, /^namespace validation: identifier "a\/b" must match /);
  });

  test('messages between 4 and 16 MiB pass both ways; beyond 16 MiB is refused', async () => {
    const size = 6 * MiB;
    const call = callBidi(client, Content.method.write, { metadata: ns() });
    await call.send({
      action: WriteAction.WRITE,
      ref: 'big',
      offset: 0n,
      data: new Uint8Array(size).fill(1),
    });
    call.end();
    const replies = [];
    for await (const r of call.responses) replies.push(r);
    assert.equal(replies.length, 1);
    assert.equal(replies[0]?.offset, BigInt(size));

    const chunks = [];
    for await (const r of callServerStream(client, Content.method.read, {
      digest: 'sha256:x',
      size: BigInt(size),
    })) {
      chunks.push(r);
    }
    assert.equal(chunks.length, 1);
    assert.equal(chunks[0]?.data.length, size);
    assert.equal(chunks[0]?.data[size - 1], 7);

    // A client allowed to send more still meets the server's limit.
    const big = createClient(`unix://${sock}`, { 'grpc.max_send_message_length': 32 * MiB });
    try {
      const over = callBidi(big, Content.method.write, { metadata: ns() });
      const sent = over.send({ action: WriteAction.WRITE, ref: 'too-big', data: new Uint8Array(17 * MiB) });
      const err = await failure(
        (async () => {
          for await (const _ of over.responses);
        })(),
      );
      await sent.catch(() => {});
      assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED);
    } finally {
      big.close();
    }
  });

  test('a client cancelling a stream stops the handler', async () => {
    for await (const r of callServerStream(client, Content.method.list, {}, { metadata: ns() })) {
      assert.equal(r.info[0]?.digest, 'sha256:aa');
      break; // leaving the loop cancels the call
    }
    await listStopped;
  });
});

describe('gRPC server lifecycle', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'strata-grpc-life-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const quietServer = (shutdownTimeoutMs?: number) =>
    createGrpcServer({
      logger: pino({ level: 'silent' }),
      services: [implement(Version, { version: () => ({ version: VERSION }) })],
      ...(shutdownTimeoutMs === undefined ? {} : { shutdownTimeoutMs }),
    });

  test('a stale socket file is replaced, and shutdown removes the socket', async () => {
    const sock = join(dir, 'stale.sock');
    // Bound but never listening: the file a crashed process leaves behind.
    await run('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', sock]);
    assert.ok((await stat(sock)).isSocket());
    const server = quietServer();
    await server.listenUnix(sock);
    const client = createClient(`unix://${sock}`);
    try {
      assert.equal((await callUnary(client, Version.method.version, {})).version, VERSION);
    } finally {
      client.close();
      await server.shutdown();
    }
    await assert.rejects(stat(sock), { code: 'ENOENT' });
    await server.shutdown(); // idempotent
  });

  test('refuses a path that is not a socket, and leaves the file alone', async () => {
    const path = join(dir, 'regular-file');
    await writeFile(path, 'keep me');
    const server = quietServer();
    try {
      await assert.rejects(server.listenUnix(path), { kind: 'FailedPrecondition' });
      assert.equal(await readFile(path, 'utf8'), 'keep me');
      await assert.rejects(server.listenUnix('relative.sock'), { kind: 'InvalidArgument' });
    } finally {
      await server.shutdown();
    }
  });

  test('refuses a socket another server is listening on', async () => {
    const sock = join(dir, 'live.sock');
    const other = createServer();
    other.listen(sock);
    await once(other, 'listening');
    const server = quietServer();
    try {
      await assert.rejects(server.listenUnix(sock), { kind: 'Unavailable' });
      assert.ok((await stat(sock)).isSocket());
    } finally {
      await server.shutdown();
      other.close();
    }
  });

  test('TCP on loopback with a free port', async () => {
    const server = quietServer();
    const port = await server.listenTcp('127.0.0.1', 0);
    assert.ok(port > 0);
    const client = createClient(`127.0.0.1:${port}`);
    try {
      assert.equal((await callUnary(client, Version.method.version, {})).version, VERSION);
    } finally {
      client.close();
      await server.shutdown();
    }
  });

  test('streaming methods left out answer UNIMPLEMENTED', async () => {
    const sock = join(dir, 'partial.sock');
    const server = createGrpcServer({
      logger: pino({ level: 'silent' }),
      services: [implement(Content, { abort: () => ({}) })],
    });
    await server.listenUnix(sock);
    const client = createClient(`unix://${sock}`);
    try {
      const list = await failure(
        (async () => {
          for await (const _ of callServerStream(client, Content.method.list, {}));
        })(),
      );
      assert.deepEqual(list, { code: grpc.status.UNIMPLEMENTED, details: 'method List not implemented' });
      const write = callBidi(client, Content.method.write);
      const writeErr = await failure(
        (async () => {
          for await (const _ of write.responses);
        })(),
      );
      assert.deepEqual(writeErr, {
        code: grpc.status.UNIMPLEMENTED,
        details: 'method Write not implemented',
      });
      assert.deepEqual(await callUnary(client, Content.method.abort, { ref: 'x' }), create(EmptySchema));
    } finally {
      client.close();
      await server.shutdown();
    }
  });

  test('implement() rejects a method the service does not have', () => {
    assert.throws(() => implement(Version, { nope: () => ({}) } as never), /has no method nope/);
  });

  test('health watchers see NOT_SERVING when shutdown begins', async () => {
    const sock = join(dir, 'health.sock');
    const server = quietServer(200);
    await server.listenUnix(sock);
    const client = createClient(`unix://${sock}`);
    const watch = healthProtoLoaderService.Watch;
    assert.ok(watch);
    const stream = client.makeServerStreamRequest(
      watch.path,
      watch.requestSerialize,
      (b: Buffer) => watch.responseDeserialize(b) as { status: string },
      { service: '' },
      new grpc.Metadata(),
      {},
    );
    stream.on('error', () => {}); // the forced shutdown ends it
    const seen: string[] = [];
    const notServing = new Promise<void>((resolve) => {
      stream.on('data', (m: { status: string }) => {
        seen.push(m.status);
        if (m.status === 'NOT_SERVING') resolve();
      });
    });
    await once(stream, 'data');
    assert.equal(seen[0], 'SERVING');
    const stopped = server.shutdown();
    await notServing;
    await stopped;
    client.close();
    assert.deepEqual(seen, ['SERVING', 'NOT_SERVING']);
  });
});
