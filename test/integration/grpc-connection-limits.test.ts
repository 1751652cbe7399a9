// The gRPC TCP listeners' connection limits against a peer that opens many connections and leaves them
// idle: the builder's listener (plain), `strata spec serve`'s (set by its flags) and a TLS listener
// (sockets that never finish the handshake). A real grpc-js client is still served past the cap, and
// idle connections are closed after the idle time.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { service as health } from 'grpc-health-check';
import { pino } from 'pino';
import { createClient, type GrpcTls } from '../../src/api/grpc/client.ts';
import { createGrpcServer } from '../../src/api/grpc/server.ts';
import { builderConfigFrom, startBuilder } from '../../src/server/builder.ts';
import { GatedEngine } from '../helpers/builder-engine.ts';
import { freePort } from '../helpers/ports.ts';
import { spawnServer, waitFor } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { makeSelfSignedCert } from '../helpers/tls-cert.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const logger = pino({ level: 'silent' });
const CAP = 8;
const IDLE_SECONDS = 1;

let dir: string;
let reg: TestRegistry;

before(async () => {
  dir = await tempDir('grpc-connection-limits');
  reg = await startRegistry();
});
after(async () => {
  await reg?.stop();
  await removeTempDir(dir);
});

/** `count` connections to 127.0.0.1:`port` that never say a word; resolves once each is open or closed. */
function idleSockets(port: number, count: number): Promise<Socket[]> {
  return Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Socket>((resolve) => {
          const s = connect({ host: '127.0.0.1', port });
          s.on('error', () => {});
          s.resume(); // reads (and drops) what the server says, so its closing is seen
          s.once('connect', () => resolve(s));
          s.once('close', () => resolve(s));
        }),
    ),
  );
}

const open = (sockets: Socket[]) => sockets.filter((s) => !s.destroyed).length;

/** Health's overall status, asked the way any gRPC client asks it. */
function check(client: grpc.Client): Promise<string> {
  const method = health.Check;
  assert.ok(method);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      method.path,
      method.requestSerialize,
      (b: Buffer) => method.responseDeserialize(b) as { status: string },
      { service: '' },
      new grpc.Metadata(),
      { deadline: Date.now() + 10_000 },
      (err, value) => (err || !value ? reject(err) : resolve(value.status)),
    );
  });
}

/**
 * Twice the cap of silent connections: at most the cap stay open; a real client is still served; every
 * silent one is closed after the idle time; the client, closed when idle too, is served again.
 */
async function idleFlood(port: number, client: grpc.Client): Promise<void> {
  const flood = await idleSockets(port, 2 * CAP);
  try {
    await waitFor(() => open(flood) <= CAP, 10_000, { what: `at most ${CAP} of the idle connections open` });
    assert.equal(await check(client), 'SERVING', 'a client is served past the cap');
    await waitFor(() => open(flood) === 0, 15_000, { what: 'the idle connections closed' });
    await waitFor(
      () => client.getChannel().getConnectivityState(false) !== grpc.connectivityState.READY,
      15_000,
      { what: 'the client’s idle connection closed' },
    );
    assert.equal(await check(client), 'SERVING', 'the client reconnects at its next call');
  } finally {
    for (const s of flood) s.destroy();
  }
}

test('the builder’s listener: past the connection cap a client is served; idle connections are closed', {
  timeout: 120_000,
}, async () => {
  const running = await startBuilder(
    builderConfigFrom(
      {
        listen: '127.0.0.1:0',
        baseRepository: `${reg.host}/base`,
        workspaceRepository: `${reg.host}/ws`,
        stateDir: join(dir, 'builder'),
        plainHttpHosts: [reg.host],
        connections: { max: CAP, idleSeconds: IDLE_SECONDS },
      },
      dir,
    ),
    logger,
    { engine: new GatedEngine(`${reg.host}/library/busybox:latest`) },
  );
  const client = createClient(`127.0.0.1:${running.port}`);
  try {
    await idleFlood(running.port, client);
  } finally {
    client.close();
    await running.close();
  }
});

test('strata spec serve: its flags cap the connections and close idle ones as the builder’s config does', {
  timeout: 120_000,
}, async (t) => {
  const port = await freePort();
  await spawnServer(
    process.execPath,
    [
      new URL('../../src/cli/main.ts', import.meta.url).pathname,
      'spec',
      'serve',
      '--spec-store',
      join(dir, 'specs'),
      '--listen',
      `127.0.0.1:${port}`,
      '--max-connections',
      String(CAP),
      '--idle-seconds',
      String(IDLE_SECONDS),
    ],
    {
      readyCheck: async () => {
        const probe = createClient(`127.0.0.1:${port}`);
        try {
          return (await check(probe)) === 'SERVING';
        } catch {
          return false;
        } finally {
          probe.close();
        }
      },
      logFile: join(dir, 'spec-serve.log'),
      t,
    },
  );
  const client = createClient(`127.0.0.1:${port}`);
  try {
    await idleFlood(port, client);
  } finally {
    client.close();
  }
});

test('a TLS listener: connections that never finish the handshake count, and are closed when idle', {
  timeout: 120_000,
}, async () => {
  const certFile = join(dir, 'server.crt');
  const keyFile = join(dir, 'server.key');
  await makeSelfSignedCert({ certFile, keyFile, cn: 'grpc', ip: '127.0.0.1' });
  const server = createGrpcServer({
    logger,
    services: [],
    tls: { cert: await readFile(certFile), key: await readFile(keyFile) },
    connections: { max: CAP, idleMs: IDLE_SECONDS * 1000 },
  });
  const port = await server.listenTcp('127.0.0.1', 0);
  const tls: GrpcTls = { ca: await readFile(certFile) };
  const client = createClient(`127.0.0.1:${port}`, {}, tls);
  try {
    await idleFlood(port, client);
  } finally {
    client.close();
    await server.shutdown();
  }
});
