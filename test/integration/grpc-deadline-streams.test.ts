// A streaming call whose grpc-timeout passes while its handler waits on the client: for the next request
// message, or for room to send the next response to a client that stopped reading. The server answers
// DEADLINE_EXCEEDED then; the handler must see the end too, even when the client keeps its side of the
// stream open (a raw HTTP/2 client here, since gRPC clients reset their streams at their own deadline).
import assert from 'node:assert/strict';
import { type ClientHttp2Session, connect, type IncomingHttpHeaders } from 'node:http2';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { Content } from '../../src/api/gen/containerd/services/content/v1/content_pb.ts';
import { createGrpcServer, type GrpcServer } from '../../src/api/grpc/server.ts';
import { implement } from '../../src/api/grpc/service.ts';
import { framedMessage } from '../../src/api/transport/framing.ts';
import { Cleanup, tempDir } from '../helpers/tmp.ts';

const WRITE_PATH = '/containerd.services.content.v1.Content/Write';
const READ_PATH = '/containerd.services.content.v1.Content/Read';

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
