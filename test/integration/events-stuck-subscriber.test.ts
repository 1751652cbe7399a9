// `ctr events` that stops reading (its output not taken: it waits on its stdout and stops receiving, as
// `ctr events | stuck-consumer` would) against the Events service on our gRPC server. Its subscription is
// ended as soon as its waiting events pass the bound, while ctr is still stuck: the exchange lets go of it
// and the call ends ResourceExhausted, which ctr reports once its output is taken again. One stuck with
// fewer events waiting does not hold up the server's stop, nor does one whose process is stopped; one
// stopped with a deadline (`ctr --timeout`) is let go of when it passes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { NamespaceCreateSchema } from '../../src/api/gen/containerd/events/namespace_pb.ts';
import { createGrpcServer, type GrpcServer } from '../../src/api/grpc/server.ts';
import { EventExchange, eventsService } from '../../src/api/services/events.ts';
import { RegexRunner } from '../../src/metadata/filters/regex-runner.ts';
import { CTR } from '../helpers/daemon.ts';
import { waitFor } from '../helpers/process.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

let dir: string;
const regex = new RegexRunner();
const logLines: string[] = [];
const logger = pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) });

before(async () => {
  dir = await tempDir('events-stuck');
});
after(async () => {
  await regex.close();
  if (dir) await removeTempDir(dir);
});

async function serve(name: string): Promise<{ server: GrpcServer; events: EventExchange; address: string }> {
  const events = new EventExchange();
  const server = createGrpcServer({ logger, services: [eventsService({ events, regex })] });
  const address = join(dir, `${name}.sock`);
  await server.listenUnix(address);
  return { server, events, address };
}

const publish = (events: EventExchange, i: number, fill = 256) =>
  events.publish('default', '/namespaces/create', NamespaceCreateSchema, {
    name: `ns-${i}`,
    labels: { filler: 'x'.repeat(fill) },
  });

const turn = () => new Promise((resolve) => setImmediate(resolve));

/**
 * `ctr events` on `address` (with ctr's global `options`), subscribed and shown an event, then with its
 * output no longer taken.
 */
async function stuckCtrEvents(address: string, events: EventExchange, options: string[] = []) {
  const child = spawn(CTR, ['--address', address, ...options, 'events'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let shown = false;
  let err = '';
  const onOut = (b: Buffer) => {
    shown ||= b.toString().includes('/namespaces/create');
  };
  child.stdout.on('data', onOut);
  child.stderr.on('data', (b: Buffer) => {
    err += b.toString();
  });
  const exited = once(child, 'exit');
  await waitFor(() => events.subscribers === 1);
  let i = 0;
  await waitFor(() => {
    publish(events, --i);
    return shown;
  });
  child.stdout.off('data', onOut);
  child.stdout.pause();
  return {
    /** Takes its output again until it exits; its stderr. */
    async resume(): Promise<string> {
      child.kill('SIGCONT');
      child.stdout.resume();
      await exited;
      return err;
    },
    /** Stops the process itself (SIGSTOP): now not even its connection is read. */
    stop: () => child.kill('SIGSTOP'),
    kill: () => child.kill('SIGKILL'),
  };
}

test('ctr events that stops reading is let go of as its waiting events pass the bound, not when it reads again', async (t) => {
  const { server, events, address } = await serve('overflow');
  t.after(() => server.shutdown());
  const ctr = await stuckCtrEvents(address, events);
  t.after(() => ctr.kill());
  // Published one at a time, each given its turn to be sent: ctr's pipe, its window and the stream's
  // buffer fill, then the subscriber's queue. It must be let go of while ctr is still stuck; the count
  // bounds the test on code that does not.
  for (let i = 0; events.subscribers > 0 && i < 200_000; i++) {
    publish(events, i);
    await turn();
  }
  assert.equal(events.subscribers, 0, 'the stuck subscriber is still subscribed');
  const calls = logLines.map((l) => JSON.parse(l) as { msg: string; code?: string; method?: string });
  assert.ok(
    calls.some(
      (l) => l.msg === 'grpc call' && l.code === 'RESOURCE_EXHAUSTED' && /Subscribe$/.test(l.method ?? ''),
    ),
    'the call ended with RESOURCE_EXHAUSTED',
  );
  // The stream was reset, its unsent events dropped: ctr shows those it had, then the end. (A reset that
  // cuts a message in two reads as a truncated message, Internal, to grpc-go.)
  assert.match(await ctr.resume(), /^ctr: rpc error: code = (ResourceExhausted|Internal) desc = /m);
});

test('ctr events stuck with its stream full does not hold up the server stopping', async (t) => {
  const { server, events, address } = await serve('stop');
  const ctr = await stuckCtrEvents(address, events);
  t.after(() => ctr.kill());
  // 32 MiB: more than a grpc-go stream window grows to (16 MiB) with the pipe and buffers on the way,
  // in fewer events than the bound: stuck, not cut off.
  for (let i = 0; i < 4000; i++) {
    publish(events, i, 8192);
    await turn();
  }
  assert.equal(events.subscribers, 1);
  const before = logLines.length;
  events.close();
  await server.shutdown();
  assert.ok(
    !logLines.slice(before).some((l) => l.includes('still running at shutdown')),
    'the stop waited for the stuck subscriber until it cut it',
  );
  assert.match(await ctr.resume(), /^ctr: rpc error: code = /m);
});

test('ctr events stopped (SIGSTOP) with its connection full does not keep the server from stopping', {
  timeout: 60_000,
}, async (t) => {
  // A stopped process reads nothing, so not even a reset reaches it: the server's stop cuts the
  // connection after its timeout (short here), and the cut must not wait on the peer either (which Node's
  // session destroy does while a socket write is in progress). The test's timeout catches a stop that hangs.
  const events = new EventExchange();
  const server = createGrpcServer({
    logger,
    services: [eventsService({ events, regex })],
    shutdownTimeoutMs: 100,
  });
  const address = join(dir, 'sigstop.sock');
  await server.listenUnix(address);
  const ctr = await stuckCtrEvents(address, events);
  t.after(() => ctr.kill());
  ctr.stop();
  for (let i = 0; i < 4000; i++) {
    publish(events, i, 8192);
    await turn();
  }
  events.close();
  await server.shutdown();
  assert.match(await ctr.resume(), /^ctr: rpc error: code = /m);
});

test('ctr events stopped (SIGSTOP) with responses waiting is let go of at its deadline', {
  timeout: 60_000,
}, async (t) => {
  // A stopped ctr can neither take its stream nor reset it at its own deadline (`--timeout`, sent as
  // grpc-timeout): the server's deadline must free the stream, not queue its status behind the events.
  const { server, events, address } = await serve('deadline');
  t.after(() => server.shutdown());
  const ctr = await stuckCtrEvents(address, events, ['--timeout', '4s']);
  t.after(() => ctr.kill());
  ctr.stop();
  // 2.4 MiB: more than ctr, stopped this early, has window for; far fewer events than the bound.
  for (let i = 0; i < 300; i++) {
    publish(events, i, 8192);
    await turn();
  }
  await waitFor(() => server.openCalls === 0, 30_000, { what: 'the stuck subscription stream to close' });
  assert.equal(events.subscribers, 0);
  // grpc-go reads the reset after its deadline as DeadlineExceeded, and ctr names its context's error;
  // a reset that cut a message in half reads as an unexpected EOF instead (as for a subscriber past its
  // bound). What matters is above: the server let go of the stream.
  assert.match(await ctr.resume(), /deadline exceeded|unexpected EOF/i);
});
