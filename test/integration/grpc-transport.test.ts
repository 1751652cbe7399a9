// The HTTP/2 transport of our gRPC server against what clients can send: raw HTTP/2 requests for the
// malformed cases no gRPC client produces, and grpc-js clients for compression, deadlines and bursts.
// Also: deadlines of streaming calls whose client keeps its side open (a raw HTTP/2 client, since gRPC
// clients reset their streams at their own deadline), and HTTP/2 rapid reset (CVE-2023-44487): the
// daemon's unix socket allows a great many resets, since containerd's content reader cancels a stream per
// 32 KiB it reads; a TCP listener (builder, spec provider), which the network reaches, keeps Node's
// defence and closes such a session. Last, the server as another implementation's client sees it: Python
// grpcio (gRPC core's HTTP/2 stack), with generic calls on raw bytes so no generated code is needed, where
// the two stacks send things differently (repeated metadata keys).
import assert from 'node:assert/strict';
import { type ClientHttp2Session, connect, constants, type IncomingHttpHeaders } from 'node:http2';
import { after, before, describe, test } from 'node:test';
import { deflateSync, gzipSync } from 'node:zlib';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { Content, InfoRequestSchema } from '../../src/api/gen/containerd/services/content/v1/content_pb.ts';
import {
  GetImageRequestSchema,
  GetImageResponseSchema,
  Images,
} from '../../src/api/gen/containerd/services/images/v1/images_pb.ts';
import { Version } from '../../src/api/gen/containerd/services/version/v1/version_pb.ts';
import { Health } from '../../src/api/gen/grpc/health/v1/health_pb.ts';
import { callUnary, createClient } from '../../src/api/grpc/client.ts';
import { namespaceOf } from '../../src/api/grpc/namespace.ts';
import { createGrpcServer, type GrpcServer, MAX_MESSAGE_BYTES } from '../../src/api/grpc/server.ts';
import { implement } from '../../src/api/grpc/service.ts';
import { framedMessage, methodPath } from '../../src/api/transport/framing.ts';
import { notFound } from '../../src/errors.ts';
import { failure } from '../helpers/grpc-assert.ts';
import { runCommand } from '../helpers/process.ts';
import { Cleanup, tempDir } from '../helpers/tmp.ts';

interface RawAnswer {
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders;
  body: Buffer;
}

/** One request over a fresh HTTP/2 connection, with whatever headers and body the test wants. */
function raw(sock: string, headers: Record<string, string>, body: Buffer): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const session = connect('http://localhost', { path: sock } as never);
    session.on('error', reject);
    const req = session.request({ ':method': 'POST', ...headers });
    let answer: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on('response', (h) => {
      answer = h;
    });
    req.on('trailers', (t) => {
      trailers = t;
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      session.close();
      resolve({ headers: answer, trailers, body: Buffer.concat(chunks) });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The status of a raw answer: from the trailers, or from the headers of a trailers-only answer. */
const statusOfAnswer = (a: RawAnswer) => ({
  code: Number(a.trailers['grpc-status'] ?? a.headers['grpc-status']),
  message: decodeURIComponent(String(a.trailers['grpc-message'] ?? a.headers['grpc-message'] ?? '')),
});

const VERSION_PATH = '/containerd.services.version.v1.Version/Version';
const GET_PATH = '/containerd.services.images.v1.Images/Get';
const INFO_PATH = '/containerd.services.content.v1.Content/Info';
const WRITE_PATH = '/containerd.services.content.v1.Content/Write';
const READ_PATH = '/containerd.services.content.v1.Content/Read';

describe('gRPC transport', () => {
  const cleanup = new Cleanup();
  let sock: string;
  let server: GrpcServer;
  let client: grpc.Client;
  let deadlineSeen: Promise<unknown>;
  let markDeadline: (reason: unknown) => void;
  let handlerAborted: Promise<void>;
  let markAborted: () => void;
  let versionCalls = 0;

  before(async () => {
    const dir = await tempDir('grpc-transport');
    cleanup.addDir(dir);
    sock = `${dir}/t.sock`;
    deadlineSeen = new Promise((resolve) => {
      markDeadline = resolve;
    });
    handlerAborted = new Promise((resolve) => {
      markAborted = resolve;
    });
    server = createGrpcServer({
      logger: pino({ level: 'silent' }),
      services: [
        implement(Version, {
          version: () => {
            versionCalls++;
            return { version: 'v-test' };
          },
        }),
        // Echoes the name back in the target digest, so a burst can check each answer is its own.
        implement(Images, {
          get: async (req) => {
            if (Number(req.name.split('-')[1]) % 3 === 0) await new Promise((r) => setImmediate(r));
            return { image: { name: req.name, target: { digest: `sha256:${req.name}` } } };
          },
        }),
        implement(Content, {
          info: (_req, ctx) =>
            new Promise((_, reject) => {
              ctx.signal.addEventListener(
                'abort',
                () => {
                  const reason: unknown = ctx.signal.reason;
                  if (/Deadline/.test(String(reason))) markDeadline(reason);
                  markAborted();
                  reject(reason);
                },
                { once: true },
              );
            }),
        }),
      ],
    });
    await server.listenUnix(sock);
    cleanup.add(() => server.shutdown());
    client = createClient(`unix://${sock}`);
    cleanup.add(() => client.close());
  });

  after(() => cleanup.run());

  test('a request that is not gRPC gets 415', async () => {
    const a = await raw(
      sock,
      { ':path': VERSION_PATH, 'content-type': 'application/json' },
      Buffer.from('{}'),
    );
    assert.equal(a.headers[':status'], 415);
    // gRPC-Web frames its trailers into the body: our answer would be unreadable to it.
    for (const contentType of [
      'application/grpc-web+proto',
      'application/grpc-web-text',
      'application/grpcx',
    ]) {
      const web = await raw(
        sock,
        { ':path': VERSION_PATH, 'content-type': contentType },
        framedMessage(new Uint8Array()),
      );
      assert.equal(web.headers[':status'], 415, contentType);
    }
    for (const contentType of ['application/grpc+proto', 'application/grpc; charset=utf-8']) {
      const ok = await raw(
        sock,
        { ':path': VERSION_PATH, 'content-type': contentType },
        framedMessage(new Uint8Array()),
      );
      assert.equal(ok.trailers['grpc-status'], '0', contentType);
    }
  });

  test('an unknown method answers UNIMPLEMENTED, trailers-only', async () => {
    const a = await raw(
      sock,
      { ':path': '/no.Such/Method', 'content-type': 'application/grpc' },
      framedMessage(new Uint8Array()),
    );
    assert.equal(a.headers[':status'], 200);
    assert.equal(a.headers['grpc-status'], String(grpc.status.UNIMPLEMENTED));
    assert.match(statusOfAnswer(a).message, /does not implement the method \/no\.Such\/Method/);
  });

  test('an unsupported grpc-encoding answers UNIMPLEMENTED, naming the encodings it reads', async () => {
    const a = await raw(
      sock,
      { ':path': VERSION_PATH, 'content-type': 'application/grpc', 'grpc-encoding': 'snappy' },
      framedMessage(new Uint8Array()),
    );
    assert.deepEqual(statusOfAnswer(a), {
      code: grpc.status.UNIMPLEMENTED,
      message: 'compression algorithm "snappy" is not supported',
    });
    // As gRPC's compression spec asks, so the client can pick one the server reads.
    assert.equal(a.headers['grpc-accept-encoding'], 'identity,gzip,deflate');
  });

  test('a malformed grpc-timeout is refused', async () => {
    const a = await raw(
      sock,
      { ':path': VERSION_PATH, 'content-type': 'application/grpc', 'grpc-timeout': 'soon' },
      framedMessage(new Uint8Array()),
    );
    assert.equal(statusOfAnswer(a).code, grpc.status.INTERNAL);
    assert.match(statusOfAnswer(a).message, /invalid grpc-timeout/);
  });

  test('request bytes that are not the message answer INTERNAL, and the server carries on', async () => {
    const a = await raw(
      sock,
      { ':path': INFO_PATH, 'content-type': 'application/grpc' },
      framedMessage(Buffer.from([0x0a, 0xff, 0xff])), // field 1, a length far past the end
    );
    assert.equal(statusOfAnswer(a).code, grpc.status.INTERNAL);
    assert.match(statusOfAnswer(a).message, /^error unmarshalling request: /);
    assert.equal((await callUnary(client, Version.method.version, {})).version, 'v-test');
  });

  test('a request stream that ends without a message, or inside one, answers INTERNAL', async () => {
    const headers = { ':path': VERSION_PATH, 'content-type': 'application/grpc' };
    const empty = await raw(sock, headers, Buffer.alloc(0));
    assert.equal(statusOfAnswer(empty).code, grpc.status.INTERNAL);
    assert.match(statusOfAnswer(empty).message, /without a message/);
    const cut = await raw(sock, headers, framedMessage(Buffer.from('abc')).subarray(0, 6));
    assert.equal(statusOfAnswer(cut).code, grpc.status.INTERNAL);
  });

  test('a well-formed raw request gets headers, one message and an OK status', async () => {
    const a = await raw(
      sock,
      { ':path': VERSION_PATH, 'content-type': 'application/grpc', te: 'trailers' },
      framedMessage(new Uint8Array()),
    );
    assert.equal(a.headers['content-type'], 'application/grpc');
    assert.equal(statusOfAnswer(a).code, grpc.status.OK);
    assert.equal(a.body[0], 0);
    assert.equal(a.body.readUInt32BE(1), a.body.length - 5);
  });

  test('gzip and deflate requests are inflated; an inflation bomb is refused', async () => {
    const request = toBinary(GetImageRequestSchema, create(GetImageRequestSchema, { name: 'img-1' }));
    for (const [encoding, pack] of [
      ['gzip', gzipSync],
      ['deflate', deflateSync],
    ] as const) {
      const frame = framedMessage(pack(request));
      frame[0] = 1;
      const a = await raw(
        sock,
        { ':path': GET_PATH, 'content-type': 'application/grpc', 'grpc-encoding': encoding },
        frame,
      );
      assert.equal(statusOfAnswer(a).code, grpc.status.OK, encoding);
      const answer = fromBinary(GetImageResponseSchema, a.body.subarray(5));
      assert.equal(answer.image?.target?.digest, 'sha256:img-1');
    }
    const bomb = framedMessage(gzipSync(Buffer.alloc(MAX_MESSAGE_BYTES + 1)));
    bomb[0] = 1;
    const a = await raw(
      sock,
      { ':path': GET_PATH, 'content-type': 'application/grpc', 'grpc-encoding': 'gzip' },
      bomb,
    );
    assert.equal(statusOfAnswer(a).code, grpc.status.RESOURCE_EXHAUSTED);
  });

  test('the server ends a call at its grpc-timeout with DEADLINE_EXCEEDED', async () => {
    const a = await raw(
      sock,
      { ':path': INFO_PATH, 'content-type': 'application/grpc', 'grpc-timeout': '100m' },
      framedMessage(toBinary(InfoRequestSchema, create(InfoRequestSchema, { digest: 'sha256:x' }))),
    );
    assert.deepEqual(statusOfAnswer(a), {
      code: grpc.status.DEADLINE_EXCEEDED,
      message: 'Deadline Exceeded',
    });
    assert.match(String(await deadlineSeen), /Deadline Exceeded/);
  });

  test('an already expired grpc-timeout answers DEADLINE_EXCEEDED without running the handler', async () => {
    const before = versionCalls;
    for (const timeout of ['0n', '0u', '0m', '0S', '0H']) {
      const a = await raw(
        sock,
        { ':path': VERSION_PATH, 'content-type': 'application/grpc', 'grpc-timeout': timeout },
        framedMessage(new Uint8Array()),
      );
      assert.equal(a.headers['grpc-status'], String(grpc.status.DEADLINE_EXCEEDED), timeout);
      assert.equal(a.body.length, 0);
    }
    assert.equal(versionCalls, before);
    // A deadline still ahead runs it.
    await raw(
      sock,
      { ':path': VERSION_PATH, 'content-type': 'application/grpc', 'grpc-timeout': '1S' },
      framedMessage(new Uint8Array()),
    );
    assert.equal(versionCalls, before + 1);
  });

  test('a client giving up at its deadline aborts the handler', async () => {
    const err = await failure(
      callUnary(client, Content.method.info, { digest: 'sha256:x' }, { timeoutMs: 150 }),
    );
    assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
    await handlerAborted;
  });

  test('a burst of concurrent calls each gets its own answer', async () => {
    const names = Array.from({ length: 200 }, (_, i) => `img-${i}`);
    const answers = await Promise.all(names.map((name) => callUnary(client, Images.method.get, { name })));
    assert.deepEqual(
      answers.map((a) => a.image?.target?.digest),
      names.map((n) => `sha256:${n}`),
    );
  });

  test('health List reports every service and the server', async () => {
    const list = await callUnary(client, Health.method.list, {});
    assert.deepEqual(Object.keys(list.statuses).sort(), [
      '',
      'containerd.services.content.v1.Content',
      'containerd.services.images.v1.Images',
      'containerd.services.version.v1.Version',
    ]);
  });
});

describe('gRPC deadlines of streaming calls', () => {
  const cleanup = new Cleanup();
  let server: GrpcServer;
  let session: ClientHttp2Session;
  /** How each handler's call ended, by method: what its requests or writes threw, or "ended". */
  const outcomes = new Map<string, (outcome: string) => void>();
  const outcome = (method: string) =>
    new Promise<string>((resolve) => {
      outcomes.set(method, resolve);
    });

  before(async () => {
    const dir = await tempDir('grpc-deadline-streams');
    cleanup.addDir(dir);
    const sock = `${dir}/d.sock`;
    server = createGrpcServer({
      logger: pino({ level: 'silent' }),
      services: [
        implement(Content, {
          // Waits for request messages and never answers.
          write: async function* (requests) {
            try {
              for await (const _ of requests);
              outcomes.get('write')?.('ended');
            } catch (err) {
              outcomes.get('write')?.(String(err));
            }
            yield* [];
          },
          // Sends 1 MiB messages for as long as it is let.
          read: async function* () {
            try {
              for (;;) yield { data: new Uint8Array(1 << 20) };
            } finally {
              outcomes.get('read')?.('ended');
            }
          },
        }),
      ],
    });
    await server.listenUnix(sock);
    cleanup.add(() => server.shutdown());
    session = connect('http://localhost', { path: sock } as never);
    session.on('error', () => {});
    cleanup.add(() => session.destroy());
  });

  after(() => cleanup.run());

  /** Starts a call with a short grpc-timeout, sends one empty message and keeps the stream open. */
  const openCall = (path: string) => {
    const req = session.request({
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
      'grpc-timeout': '200m',
    });
    req.on('error', () => {});
    req.write(framedMessage(new Uint8Array(0)));
    const status = new Promise<string | undefined>((resolve) => {
      const take = (h: IncomingHttpHeaders) => {
        if (h['grpc-status'] !== undefined) resolve(String(h['grpc-status']));
      };
      req.on('response', take);
      req.on('trailers', take);
    });
    return { req, status };
  };

  test('a handler waiting for the next request message sees the deadline', { timeout: 30_000 }, async () => {
    const ended = outcome('write');
    const { req, status } = openCall(WRITE_PATH);
    req.resume();
    assert.equal(await status, '4');
    assert.match(await ended, /Deadline/);
  });

  test('a handler blocked by a client not reading sees the deadline', { timeout: 30_000 }, async () => {
    const ended = outcome('read');
    const { req } = openCall(READ_PATH);
    // Never read: the server's writes fill the stream's window and wait.
    req.pause();
    assert.equal(await ended, 'ended');
  });
});

/** Enough resets to pass Node's rapid-reset limit (~1000) several times over. */
const RESETS = 5000;

/**
 * Opens and cancels RESETS streams on one session, then makes one health check on it. Resolves with
 * "closed" when the server closed the session first, or "answered" when the check got its status.
 */
async function resetFlood(session: ClientHttp2Session): Promise<'closed' | 'answered'> {
  session.on('error', () => {});
  const closed = new Promise<'closed'>((resolve) => session.once('close', () => resolve('closed')));
  await new Promise((resolve) => session.once('connect', resolve));
  const headers = {
    ':method': 'POST',
    ':path': methodPath(Health.method.check),
    'content-type': 'application/grpc',
    te: 'trailers',
  };
  for (let i = 0; i < RESETS && !session.closed && !session.destroyed; i++) {
    const req = session.request(headers);
    req.on('error', () => {});
    req.close(constants.NGHTTP2_CANCEL);
    // Let the frames go out now and then, as a real client's would.
    if (i % 100 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  if (session.closed || session.destroyed) return 'closed';
  const answered = new Promise<'answered'>((resolve) => {
    const req = session.request(headers);
    req.on('error', () => {});
    req.on('trailers', () => resolve('answered'));
    req.on('response', (h) => {
      if (h['grpc-status'] !== undefined) resolve('answered');
    });
    req.resume();
    req.end(framedMessage(new Uint8Array(0)));
  });
  return Promise.race([closed, answered]);
}

describe('gRPC stream resets', () => {
  const cleanup = new Cleanup();
  let server: GrpcServer;
  let sock: string;
  let port: number;

  before(async () => {
    const dir = await tempDir('grpc-resets');
    cleanup.addDir(dir);
    sock = `${dir}/r.sock`;
    server = createGrpcServer({ logger: pino({ level: 'silent' }), services: [] });
    await server.listenUnix(sock);
    port = await server.listenTcp('127.0.0.1', 0);
    cleanup.add(() => server.shutdown());
  });

  after(() => cleanup.run());

  test('the unix socket takes a client that cancels thousands of streams', async () => {
    const session = connect('http://localhost', { path: sock } as never);
    try {
      assert.equal(await resetFlood(session), 'answered');
    } finally {
      session.destroy();
    }
  });

  test('a TCP listener closes a session flooding it with stream resets', async () => {
    const session = connect(`http://127.0.0.1:${port}`);
    try {
      assert.equal(await resetFlood(session), 'closed');
    } finally {
      session.destroy();
    }
  });
});

/** Debian's interpreter: the one with python3-grpcio. */
const PYTHON = '/usr/bin/python3';

/**
 * Calls Images.Get with the name argv[2] and the metadata pairs in argv[3] (JSON; a value starting with
 * "hex:" is sent as bytes), and prints the answer's labels (JSON) or `error CODE DETAILS`.
 */
const GET_IMAGE = `
import grpc, json, sys
sock, name, pairs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
md = [(k, bytes.fromhex(v[4:]) if v.startswith('hex:') else v) for k, v in pairs]
def varint(n):
    out = b''
    while True:
        b = n & 0x7f; n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n: return out
def fields(buf):
    i = 0
    while i < len(buf):
        key = buf[i]; i += 1
        n = shift = 0
        while True:
            b = buf[i]; i += 1; n |= (b & 0x7f) << shift; shift += 7
            if not b & 0x80: break
        yield key >> 3, buf[i:i + n]; i += n
with grpc.insecure_channel('unix://' + sock) as ch:
    get = ch.unary_unary('/containerd.services.images.v1.Images/Get',
        request_serializer=lambda x: x, response_deserializer=lambda x: x)
    req = b'\\x0a' + varint(len(name.encode())) + name.encode()
    try:
        answer = get(req, metadata=md, timeout=60)
    except grpc.RpcError as e:
        print('error', e.code().name, e.details())
        sys.exit(0)
    image = dict(fields(answer))[1]
    labels = {}
    for num, entry in fields(image):
        if num == 2:
            kv = dict(fields(entry))
            labels[kv[1].decode()] = kv[2].decode()
    print(json.dumps(labels))
`;

describe('gRPC server with a Python grpcio client', () => {
  const cleanup = new Cleanup();
  let sock: string;
  let server: GrpcServer;

  before(async () => {
    const dir = await tempDir('grpc-python');
    cleanup.addDir(dir);
    sock = `${dir}/py.sock`;
    server = createGrpcServer({
      logger: pino({ level: 'silent' }),
      services: [
        // Answers with what it read from the metadata, as labels; a name starting with "missing" fails.
        implement(Images, {
          get: (req, ctx) => {
            if (req.name.startsWith('missing')) throw notFound(`image "${req.name}": not found`);
            const shown = (v: string | Buffer) => (typeof v === 'string' ? v : `hex:${v.toString('hex')}`);
            return {
              image: {
                name: req.name,
                labels: {
                  namespace: namespaceOf(ctx.metadata),
                  'x-text': JSON.stringify(ctx.metadata.get('x-text').map(shown)),
                  'x-data-bin': JSON.stringify(ctx.metadata.get('x-data-bin').map(shown)),
                },
              },
            };
          },
        }),
      ],
    });
    await server.listenUnix(sock);
    cleanup.add(() => server.shutdown());
  });

  after(() => cleanup.run());

  const getImage = async (name: string, pairs: [string, string][]): Promise<string> =>
    (await runCommand(PYTHON, ['-c', GET_IMAGE, sock, name, JSON.stringify(pairs)])).trim();

  test('a key sent several times reaches the handler as several values, text and binary', async () => {
    const labels = JSON.parse(
      await getImage('app', [
        ['containerd-namespace', 'default'],
        ['x-text', 'a'],
        ['x-text', 'b, c'],
        ['x-data-bin', 'hex:00ff2c'],
        ['x-data-bin', 'hex:'],
      ]),
    ) as Record<string, string>;
    assert.deepEqual(JSON.parse(labels['x-text']!), ['a', 'b, c']);
    assert.deepEqual(JSON.parse(labels['x-data-bin']!), ['hex:00ff2c', 'hex:']);
    assert.equal(labels.namespace, 'default');
  });

  test('a namespace sent twice is the first one, as containerd reads it', async () => {
    const labels = JSON.parse(
      await getImage('app', [
        ['containerd-namespace', 'default'],
        ['containerd-namespace', 'other'],
      ]),
    ) as Record<string, string>;
    assert.equal(labels.namespace, 'default');
  });

  test('a status message outside ASCII arrives as it was written', async () => {
    assert.equal(
      await getImage('missing-ünïcødé-100%', []),
      'error NOT_FOUND image "missing-ünïcødé-100%": not found',
    );
  });
});
