// Our gRPC server as another implementation's client sees it: Python grpcio (gRPC core's HTTP/2 stack),
// with generic calls on raw bytes so no generated code is needed. What grpc-js and ctr cover elsewhere is
// not repeated; this is where the two stacks send things differently (repeated metadata keys).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { Images } from '../../src/api/gen/containerd/services/images/v1/images_pb.ts';
import { namespaceOf } from '../../src/api/grpc/namespace.ts';
import { createGrpcServer, type GrpcServer } from '../../src/api/grpc/server.ts';
import { implement } from '../../src/api/grpc/service.ts';
import { notFound } from '../../src/errors.ts';
import { runCommand } from '../helpers/process.ts';
import { Cleanup, tempDir } from '../helpers/tmp.ts';

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
