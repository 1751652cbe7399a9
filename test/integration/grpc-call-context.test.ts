// The per-call context a handler gets (signal, peer), over a real grpc-js server and client: a client
// cancel aborts the signal, also when the handler first looks at it after the cancel; a call that has
// finished is never reported as cancelled when its stream closes afterwards.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { Images } from '../../src/api/gen/containerd/services/images/v1/images_pb.ts';
import { callUnary, createClient } from '../../src/api/grpc/client.ts';
import { createGrpcServer, type GrpcServer } from '../../src/api/grpc/server.ts';
import { implement } from '../../src/api/grpc/service.ts';

/** Resolves when `signal` aborts, or after `ms` with false. */
function abortedWithin(signal: AbortSignal, ms: number): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return Promise.race([
    new Promise<boolean>((resolve) => signal.addEventListener('abort', () => resolve(true), { once: true })),
    sleep(ms).then(() => false),
  ]);
}

describe('gRPC call context', () => {
  let dir: string;
  let server: GrpcServer;
  let client: grpc.Client;
  const finishedSignals: AbortSignal[] = [];
  const peers: string[] = [];
  let lateSignal: Promise<AbortSignal>;
  let reportLate: (s: AbortSignal) => void;
  let earlySignal: Promise<AbortSignal>;
  let reportEarly: (s: AbortSignal) => void;
  let entered: () => void;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'strata-grpc-ctx-'));
    lateSignal = new Promise((resolve) => {
      reportLate = resolve;
    });
    earlySignal = new Promise((resolve) => {
      reportEarly = resolve;
    });
    server = createGrpcServer({
      logger: pino({ level: 'silent' }),
      services: [
        implement(Images, {
          get(req, ctx) {
            finishedSignals.push(ctx.signal);
            peers.push(ctx.peer);
            return { image: { name: req.name } };
          },
          // Waits past the client's cancel before it first reads its signal.
          async list(_req, ctx) {
            entered();
            await sleep(300);
            reportLate(ctx.signal);
            return {};
          },
          // Reads its signal at once, then waits for the cancel.
          async delete(_req, ctx) {
            const signal = ctx.signal;
            reportEarly(signal);
            entered();
            await abortedWithin(signal, 5000);
            return {};
          },
        }),
      ],
    });
    const sock = join(dir, 'ctx.sock');
    await server.listenUnix(sock);
    client = createClient(`unix://${sock}`);
  });

  after(async () => {
    client.close();
    await server.shutdown();
    await rm(dir, { recursive: true, force: true });
  });

  const cancelOnceEntered = async (call: (signal: AbortSignal) => Promise<unknown>) => {
    const controller = new AbortController();
    const handlerEntered = new Promise<void>((resolve) => {
      entered = resolve;
    });
    const pending = call(controller.signal);
    await handlerEntered;
    controller.abort();
    await assert.rejects(pending, (err: grpc.ServiceError) => err.code === 1 /* CANCELLED */);
  };

  test('a finished call is not reported as cancelled when its stream closes', async () => {
    for (let i = 0; i < 5; i++) {
      const res = await callUnary(client, Images.method.get, { name: `n${i}` });
      assert.equal(res.image?.name, `n${i}`);
    }
    // The stream closes after the response; give grpc-js time to report that close.
    await sleep(100);
    assert.equal(finishedSignals.length, 5);
    for (const s of finishedSignals) assert.equal(s.aborted, false);
    for (const p of peers) assert.equal(typeof p, 'string');
  });

  test('a cancel aborts the signal a handler already holds', async () => {
    await cancelOnceEntered((signal) => callUnary(client, Images.method.delete, { name: 'x' }, { signal }));
    assert.equal(await abortedWithin(await earlySignal, 5000), true);
    assert.match(String((await earlySignal).reason), /cancelled by the client/);
  });

  test('a handler that first reads its signal after the cancel finds it aborted', async () => {
    await cancelOnceEntered((signal) => callUnary(client, Images.method.list, {}, { signal }));
    const signal = await lateSignal;
    assert.equal(signal.aborted, true);
    assert.match(String(signal.reason), /cancelled by the client/);
  });
});
