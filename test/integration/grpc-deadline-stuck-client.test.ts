// A call's deadline passing while its grpc-js client does not read (its process stopped, so neither
// reading nor resetting the stream at its own deadline): the server must let go of the stream then,
// whether the handler is still writing or has ended with its answer or status waiting behind data
// the client has not taken. Otherwise the stream and what waits in it stay until the connection goes.
import assert from 'node:assert/strict';
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import { Content } from '../../src/api/gen/containerd/services/content/v1/content_pb.ts';
import { createGrpcServer, type GrpcServer } from '../../src/api/grpc/server.ts';
import { implement } from '../../src/api/grpc/service.ts';
import { methodPath } from '../../src/api/transport/framing.ts';
import { waitFor } from '../helpers/process.ts';
import { Cleanup, tempDir } from '../helpers/tmp.ts';

/** Long enough for the client to be stopped before it passes. */
const DEADLINE_MS = 3000;

/**
 * A grpc-js client process: makes one call with the deadline (a server-streaming one pauses after its
 * first message and says so), then prints the status it ends with as JSON.
 */
const CLIENT = `
import * as grpc from '@grpc/grpc-js';
const { SOCK, METHOD, KIND, DEADLINE_MS } = process.env;
const client = new grpc.Client('unix://' + SOCK, grpc.credentials.createInsecure());
const id = (b) => b;
const options = { deadline: Date.now() + Number(DEADLINE_MS) };
const report = (s) => process.stdout.write(JSON.stringify({ code: s.code, details: s.details }) + '\\n');
if (KIND === 'stream') {
  const call = client.makeServerStreamRequest(METHOD, id, id, Buffer.alloc(0), new grpc.Metadata(), options);
  call.once('data', () => {
    call.pause();
    process.stdout.write('paused\\n');
  });
  call.on('error', () => {});
  call.on('status', report);
} else {
  client.makeUnaryRequest(METHOD, id, id, Buffer.alloc(0), new grpc.Metadata(), options, (err) =>
    report(err ?? { code: 0 }),
  );
}
`;

type Client = ChildProcessByStdio<null, Readable, null>;

describe('gRPC deadline of a call whose client stopped reading', () => {
  const cleanup = new Cleanup();
  let server: GrpcServer;
  let sock: string;
  let readEnded: Promise<void>;
  let markReadEnded: () => void;
  let infoCalled: () => void;
  let infoMayAnswer: Promise<void>;
  let letInfoAnswer: () => void;

  before(async () => {
    const dir = await tempDir('grpc-deadline-stuck');
    cleanup.addDir(dir);
    sock = `${dir}/s.sock`;
    readEnded = new Promise((resolve) => {
      markReadEnded = resolve;
    });
    infoMayAnswer = new Promise((resolve) => {
      letInfoAnswer = resolve;
    });
    server = createGrpcServer({
      logger: pino({ level: 'silent' }),
      services: [
        implement(Content, {
          // 1 MiB messages for as long as it is let (a large blob's Read).
          read: async function* () {
            try {
              for (;;) yield { data: new Uint8Array(1 << 20) };
            } finally {
              markReadEnded();
            }
          },
          // Answers 4 MiB once its client has been stopped.
          async info() {
            infoCalled();
            await infoMayAnswer;
            return { info: { digest: 'sha256:x', labels: { filler: 'x'.repeat(4 << 20) } } };
          },
        }),
      ],
    });
    await server.listenUnix(sock);
    cleanup.add(() => server.shutdown());
  });

  after(() => cleanup.run());

  const startClient = (method: string, kind: 'stream' | 'unary') => {
    const child: Client = spawn(process.execPath, ['--input-type=module', '-e', CLIENT], {
      env: { ...process.env, SOCK: sock, METHOD: method, KIND: kind, DEADLINE_MS: String(DEADLINE_MS) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    cleanup.add(() => void child.kill('SIGKILL'));
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    return {
      child,
      next: async () => (await lines.next()).value as string | undefined,
      /** Lets the stopped client run again: the status it ends with. */
      async resume(): Promise<{ code: number; details: string }> {
        const exited = once(child, 'exit');
        child.kill('SIGCONT');
        const line = await this.next();
        child.kill('SIGKILL');
        await exited;
        return JSON.parse(line ?? '{}') as { code: number; details: string };
      },
    };
  };

  test('a server stream blocked on its client is reset at the deadline', { timeout: 60_000 }, async () => {
    const client = startClient(methodPath(Content.method.read), 'stream');
    assert.equal(await client.next(), 'paused');
    client.child.kill('SIGSTOP');
    await readEnded;
    // The handler is told at the deadline; the stream, with the responses waiting in it, must go too.
    await waitFor(() => server.openCalls === 0, 30_000, { what: 'the stuck Read stream to close' });
    // The reset (CANCEL) reads as CANCELLED to grpc-js when it takes it before its own deadline fires
    // (grpc-go reads it as DeadlineExceeded, its deadline being past).
    const end = await client.resume();
    assert.ok([status.CANCELLED, status.DEADLINE_EXCEEDED].includes(end.code), JSON.stringify(end));
  });

  test('an answer waiting behind the client does not keep the stream past the deadline', {
    timeout: 60_000,
  }, async () => {
    const called = new Promise<void>((resolve) => {
      infoCalled = resolve;
    });
    const client = startClient(methodPath(Content.method.info), 'unary');
    await called;
    client.child.kill('SIGSTOP');
    // The whole answer is handed over at once: the call is done, its answer and status wait.
    letInfoAnswer();
    await waitFor(() => server.openCalls === 0, 30_000, { what: 'the stuck Info stream to close' });
    const end = await client.resume();
    assert.ok([status.CANCELLED, status.DEADLINE_EXCEEDED].includes(end.code), JSON.stringify(end));
  });
});
