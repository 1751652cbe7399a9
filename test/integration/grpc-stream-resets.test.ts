// HTTP/2 rapid reset (a client opening and cancelling streams as fast as it can, CVE-2023-44487): the
// daemon's unix socket allows a great many resets, since containerd's content reader cancels a stream per
// 32 KiB it reads; a TCP listener (builder, spec provider), which the network reaches, keeps Node's
// defence and closes such a session.
import assert from 'node:assert/strict';
import { type ClientHttp2Session, connect, constants } from 'node:http2';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { Health } from '../../src/api/gen/grpc/health/v1/health_pb.ts';
import { createGrpcServer, type GrpcServer } from '../../src/api/grpc/server.ts';
import { framedMessage, methodPath } from '../../src/api/transport/framing.ts';
import { Cleanup, tempDir } from '../helpers/tmp.ts';

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
