import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Http2Server, type ServerHttp2Stream } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fromBinary } from '@bufbuild/protobuf';
import { status } from '@grpc/grpc-js';
import { WriteAction, WriteContentRequestSchema } from '../gen/containerd/services/content/v1/content_pb.ts';
import { frameWriteRequest, WriteChannel } from './write-channel.ts';

/** The bytes a message puts on the wire: head then parts. */
function wire(msg: Parameters<typeof frameWriteRequest>[0]): Buffer {
  const { head, parts } = frameWriteRequest(msg);
  return Buffer.concat([head, ...parts]);
}

describe('frameWriteRequest', () => {
  test('a gRPC frame whose body decodes to the request, data parts joined in order', () => {
    const parts = [Buffer.from('hello '), Buffer.alloc(0), Buffer.alloc(300, 7), Buffer.from('!')];
    const bytes = wire({
      action: WriteAction.WRITE,
      ref: 'layer-sha256:abc',
      offset: 12345678901n,
      total: 99n,
      expected: 'sha256:00',
      labels: { a: 'b' },
      data: parts,
    });
    assert.equal(bytes[0], 0, 'not compressed');
    assert.equal(bytes.readUInt32BE(1), bytes.length - 5);
    const req = fromBinary(WriteContentRequestSchema, bytes.subarray(5));
    assert.equal(req.action, WriteAction.WRITE);
    assert.equal(req.ref, 'layer-sha256:abc');
    assert.equal(req.offset, 12345678901n);
    assert.equal(req.total, 99n);
    assert.equal(req.expected, 'sha256:00');
    assert.deepEqual(req.labels, { a: 'b' });
    assert.ok(Buffer.from(req.data).equals(Buffer.concat(parts)));
  });

  test('without data (or only empty parts) no data field is sent', () => {
    for (const data of [undefined, [], [Buffer.alloc(0)]]) {
      const { head, parts } = frameWriteRequest({
        action: WriteAction.COMMIT,
        offset: 5n,
        ...(data ? { data } : {}),
      });
      assert.equal(parts.length, 0);
      const req = fromBinary(WriteContentRequestSchema, head.subarray(5));
      assert.equal(req.action, WriteAction.COMMIT);
      assert.equal(req.data.byteLength, 0);
    }
  });

  test('data lengths that need multi-byte varints', () => {
    for (const n of [127, 128, 16_383, 16_384, (1 << 20) + 3]) {
      const req = fromBinary(
        WriteContentRequestSchema,
        wire({ action: WriteAction.WRITE, data: [Buffer.alloc(n, 1)] }).subarray(5),
      );
      assert.equal(req.data.byteLength, n);
    }
  });
});

describe('WriteChannel against a server that misbehaves', () => {
  let dir: string;
  let server: Http2Server;
  let socket: string;
  let behave: (stream: ServerHttp2Stream) => void;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'write-channel-'));
    socket = join(dir, 's.sock');
    server = createServer();
    server.on('stream', (stream) => {
      stream.on('error', () => {}); // resets are what some tests are about
      behave(stream);
    });
    await new Promise<void>((resolve) => server.listen(socket, resolve));
  });
  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  test('a trailers-only error answers the call with its code and decoded message', async () => {
    behave = (stream) => {
      stream.respond(
        {
          ':status': 200,
          'content-type': 'application/grpc',
          'grpc-status': '14',
          'grpc-message': 'ref%20x%20locked',
        },
        { endStream: true },
      );
    };
    const ch = new WriteChannel(socket);
    try {
      const call = ch.open({ 'containerd-namespace': 'default' });
      await call.send({ action: WriteAction.STAT, ref: 'x' }).catch(() => {});
      await assert.rejects(call.responses.next(), (err: { code: number; details: string }) => {
        assert.equal(err.code, status.UNAVAILABLE);
        assert.equal(err.details, 'ref x locked');
        return true;
      });
      await assert.rejects(call.send({ action: WriteAction.WRITE, data: [Buffer.from('x')] }));
    } finally {
      ch.close();
    }
  });

  test('headers reach the server, and a compressed reply fails the call as INTERNAL', async () => {
    let seen: Record<string, unknown> = {};
    behave = (stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
      stream.write(Buffer.from([1, 0, 0, 0, 1, 0]));
    };
    server.once('stream', (_s, headers) => {
      seen = headers;
    });
    const ch = new WriteChannel(socket);
    try {
      const call = ch.open({ 'containerd-namespace': 'ns1', 'containerd-lease': 'l1' });
      await call.send({ action: WriteAction.STAT, ref: 'x' });
      await assert.rejects(call.responses.next(), (err: { code: number }) => err.code === status.INTERNAL);
      assert.equal(seen['containerd-namespace'], 'ns1');
      assert.equal(seen['containerd-lease'], 'l1');
      assert.equal(seen[':path'], '/containerd.services.content.v1.Content/Write');
      assert.equal(seen['content-type'], 'application/grpc');
    } finally {
      ch.close();
    }
  });

  test('replies split across data frames are reassembled; OK trailers end the responses', async () => {
    behave = (stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      // Two WriteContentResponse messages (offset, field 4: 7 then 9), cut at awkward places.
      const one = Buffer.from([0, 0, 0, 0, 2, 0x20, 7]);
      const two = Buffer.from([0, 0, 0, 0, 2, 0x20, 9]);
      const all = Buffer.concat([one, two]);
      stream.write(all.subarray(0, 3));
      stream.write(all.subarray(3, 9));
      stream.end(all.subarray(9));
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': '' }));
    };
    const ch = new WriteChannel(socket);
    try {
      const call = ch.open({});
      const a = await call.responses.next();
      const b = await call.responses.next();
      assert.equal(a.done ? undefined : a.value.offset, 7n);
      assert.equal(b.done ? undefined : b.value.offset, 9n);
      assert.equal((await call.responses.next()).done, true);
    } finally {
      ch.close();
    }
  });

  test('a stream reset by the server fails pending reads', async () => {
    behave = (stream) => stream.close(2); // INTERNAL_ERROR
    const ch = new WriteChannel(socket);
    try {
      const call = ch.open({});
      await assert.rejects(call.responses.next(), (err: { code: number }) => err.code === status.UNAVAILABLE);
    } finally {
      ch.close();
    }
  });

  test('a socket nobody listens on fails as UNAVAILABLE, which the writer retries', async () => {
    const ch = new WriteChannel(join(dir, 'nobody.sock'));
    try {
      const call = ch.open({});
      await assert.rejects(call.responses.next(), (err: { code: number }) => err.code === status.UNAVAILABLE);
    } finally {
      ch.close();
    }
  });
});
