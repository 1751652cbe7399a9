// Keepalive of the gRPC TCP listeners. A peer that vanished (here: an HTTP/2 client behind a TCP proxy
// that freezes, so nothing is read and no PING is answered, and no FIN or RST comes) has its connection
// closed and its streaming call cancelled. A real grpc-js client pinging within the allowed interval
// stays connected; a client flooding PINGs is told GOAWAY ENHANCE_YOUR_CALM "too_many_pings". The
// builder counts such drops on its metrics registry.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type ClientHttp2Session, constants, connect as h2connect } from 'node:http2';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { Content } from '../../src/api/gen/containerd/services/content/v1/content_pb.ts';
import { callServerStream, callUnary, createClient } from '../../src/api/grpc/client.ts';
import { createGrpcServer, type GrpcDropReason, type GrpcServer } from '../../src/api/grpc/server.ts';
import { implement } from '../../src/api/grpc/service.ts';
import { builderConfigFrom, startBuilder } from '../../src/server/builder.ts';
import { GatedEngine } from '../helpers/builder-engine.ts';
import { waitFor, within } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const logger = pino({ level: 'silent' });
const READ_PATH = '/containerd.services.content.v1.Content/Read';

/** Resolves with whether `signal` aborted within `ms`. */
function abortedWithin(signal: AbortSignal, ms: number): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return Promise.race([
    new Promise<boolean>((resolve) => signal.addEventListener('abort', () => resolve(true), { once: true })),
    sleep(ms, false, { ref: false }),
  ]);
}

let server: GrpcServer;
let port: number;
const drops: GrpcDropReason[] = [];
// Each Content.Read call's signal, in the order they began.
const calls: AbortSignal[] = [];

before(async () => {
  server = createGrpcServer({
    logger,
    services: [
      implement(Content, {
        // A long call: one message, then nothing until the call is cancelled.
        async *read(_req, ctx) {
          calls.push(ctx.signal);
          yield { offset: 0n, data: new Uint8Array(1) };
          await abortedWithin(ctx.signal, 60_000);
        },
        info() {
          return { info: { digest: 'sha256:x', size: 0n } };
        },
      }),
    ],
    connections: { keepaliveMs: 200, keepaliveTimeoutMs: 500, minPingIntervalMs: 300 },
    onConnectionDropped: (reason) => drops.push(reason),
  });
  port = await server.listenTcp('127.0.0.1', 0);
});
after(async () => {
  await server?.shutdown();
});

/** A TCP proxy to the server whose connections can be frozen: nothing more is read or written. */
async function freezableProxy(): Promise<{
  port: number;
  freeze(): void;
  upstream(): Socket;
  close(): void;
}> {
  let up: Socket | undefined;
  const pairs: Socket[] = [];
  const proxy: Server = createServer((down) => {
    const u = connect({ host: '127.0.0.1', port });
    up = u;
    pairs.push(down, u);
    for (const s of [down, u]) s.on('error', () => {});
    down.pipe(u);
    u.pipe(down);
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  return {
    port: (proxy.address() as { port: number }).port,
    freeze() {
      for (const s of pairs) {
        s.unpipe();
        s.pause();
      }
    },
    upstream() {
      assert.ok(up);
      return up;
    },
    close() {
      for (const s of pairs) s.destroy();
      proxy.close();
    },
  };
}

/** Starts Content.Read on a raw HTTP/2 session; resolves once the first message arrived. */
async function startRead(session: ClientHttp2Session): Promise<void> {
  const stream = session.request({
    ':method': 'POST',
    ':path': READ_PATH,
    'content-type': 'application/grpc',
    te: 'trailers',
  });
  stream.on('error', () => {});
  stream.end(Buffer.alloc(5)); // one empty message, uncompressed
  await within(once(stream, 'data'), 10_000, 'a message from Content.Read');
}

test('a peer that vanished mid-call: its connection is closed and its call cancelled', async () => {
  const proxy = await freezableProxy();
  const session = h2connect(`http://127.0.0.1:${proxy.port}`);
  session.on('error', () => {});
  try {
    const before = calls.length;
    await startRead(session);
    const signal = calls[before];
    assert.ok(signal, 'the call reached its handler');
    proxy.freeze();
    assert.equal(await abortedWithin(signal, 10_000), true, 'the call was cancelled');
    // The server closed the connection: the proxy's side of it sees the end once it reads again.
    const up = proxy.upstream();
    const closed: Promise<unknown> = up.destroyed ? Promise.resolve() : once(up, 'close');
    up.resume();
    await within(closed, 10_000, 'the close of the connection');
    assert.ok(drops.includes('keepalive'), `drops: ${drops.join(', ')}`);
  } finally {
    session.destroy();
    proxy.close();
  }
});

test('a client flooding PINGs is told too_many_pings and closed', async () => {
  const session = h2connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  try {
    await once(session, 'connect');
    const goaway = new Promise<{ code: number; data: string }>((resolve) =>
      session.once('goaway', (code: number, _last: number, data?: Buffer) =>
        resolve({ code, data: data?.toString() ?? '' }),
      ),
    );
    const flood = (async () => {
      for (let i = 0; i < 20 && !session.closed && !session.destroyed; i++) {
        await new Promise<void>((resolve) => {
          if (!session.ping(() => resolve())) resolve();
        }).catch(() => {});
      }
    })();
    const got = await within(goaway, 10_000, 'the GOAWAY');
    await flood.catch(() => {});
    assert.equal(got.code, constants.NGHTTP2_ENHANCE_YOUR_CALM);
    assert.equal(got.data, 'too_many_pings');
    assert.ok(drops.includes('too-many-pings'), `drops: ${drops.join(', ')}`);
  } finally {
    session.destroy();
  }
});

test('a grpc-js client with keepalive within the allowed interval stays connected', async () => {
  const client = createClient(`127.0.0.1:${port}`, {
    'grpc.keepalive_time_ms': 400,
    'grpc.keepalive_timeout_ms': 5000,
    'grpc.keepalive_permit_without_calls': 1,
  });
  const controller = new AbortController();
  try {
    const dropsBefore = drops.length;
    const reads = callServerStream(
      client,
      Content.method.read,
      { digest: 'sha256:x' },
      {
        signal: controller.signal,
      },
    );
    const first = await reads.next();
    assert.equal(first.done, false);
    const signal = calls.at(-1);
    assert.ok(signal);
    // Several keepalive rounds both ways (the server pings every 0.2 s, the client every 0.4 s).
    await sleep(3000);
    assert.equal(signal.aborted, false, 'the long call is still running');
    assert.deepEqual(drops.slice(dropsBefore), []);
    const info = await callUnary(
      client,
      Content.method.info,
      { digest: 'sha256:x' },
      {
        timeoutMs: 10_000,
      },
    );
    assert.equal(info.info?.digest, 'sha256:x');
    controller.abort();
    await reads.return(undefined);
  } finally {
    client.close();
  }
});

test('the keepalive settings are read from the connections section', () => {
  const config = builderConfigFrom(
    {
      listen: '127.0.0.1:0',
      stateDir: '/nonexistent',
      baseRepository: 'r.example/base',
      workspaceRepository: 'r.example/ws',
      connections: { keepaliveSeconds: 30, keepaliveTimeoutSeconds: 5, minPingIntervalSeconds: 20 },
    },
    '/',
  );
  assert.deepEqual(config.connections, {
    keepaliveMs: 30_000,
    keepaliveTimeoutMs: 5000,
    minPingIntervalMs: 20_000,
  });
});

let dir: string;
let reg: TestRegistry;
test('the builder counts the connections it closes, by reason', async (t) => {
  dir = await tempDir('grpc-keepalive');
  reg = await startRegistry();
  t.after(async () => {
    await reg.stop();
    await removeTempDir(dir);
  });
  const config = builderConfigFrom(
    {
      listen: '127.0.0.1:0',
      stateDir: join(dir, 'state'),
      baseRepository: `${reg.host}/base`,
      workspaceRepository: `${reg.host}/ws`,
      plainHttpHosts: [reg.host],
      connections: { idleSeconds: 0.5 },
    },
    dir,
  );
  const running = await startBuilder(config, logger, {
    engine: new GatedEngine(`${reg.host}/library/busybox:latest`),
  });
  try {
    const s = connect({ host: '127.0.0.1', port: running.port });
    s.on('error', () => {});
    s.resume();
    await within(once(s, 'close'), 10_000, 'the close of the idle connection');
    const text = await waitFor(
      async () => {
        const m = await running.metrics.registry.metrics();
        return /strata_grpc_connections_dropped_total\{listener="builder",reason="idle"\} 1/.test(m) && m;
      },
      10_000,
      { what: 'the idle drop counted' },
    );
    assert.ok(text);
  } finally {
    await running.close();
  }
});
