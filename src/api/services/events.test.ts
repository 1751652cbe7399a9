// The Events service's subscriptions, below gRPC: a subscriber that keeps up gets every event; one that
// stops reading is cut off once its waiting events reach the bound, instead of holding them all, and at
// that moment, not when it reads again; the exchange closing ends a subscription at once, too.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { errorKind } from '../../errors.ts';
import { RegexRunner } from '../../metadata/filters/regex-runner.ts';
import { NamespaceCreateSchema } from '../gen/containerd/events/namespace_pb.ts';
import { SubscribeRequestSchema } from '../gen/containerd/services/events/v1/events_pb.ts';
import type { CallContext } from '../grpc/service.ts';
import { EventExchange, eventsService } from './events.ts';

type Subscribe = (req: unknown, ctx: CallContext) => AsyncIterable<{ topic: string; namespace: string }>;

const regex = new RegexRunner();
after(() => regex.close());

/** A subscription's iterator, and the errors it ended its call with through its context. */
function subscribeFailing(events: EventExchange, maxWaiting: number, filters: string[] = []) {
  const reg = eventsService({ events, regex, maxWaiting });
  const failed: unknown[] = [];
  const ctx = {
    method: '',
    metadata: {},
    signal: new AbortController().signal,
    peer: '',
    fail: (err: unknown) => failed.push(err),
  } as unknown as CallContext;
  const impl = reg.impl as unknown as { subscribe: Subscribe };
  const sub = impl.subscribe(create(SubscribeRequestSchema, { filters }), ctx)[Symbol.asyncIterator]();
  return { sub, failed };
}

const subscribe = (events: EventExchange, maxWaiting: number, filters: string[] = []) =>
  subscribeFailing(events, maxWaiting, filters).sub;

const publish = (events: EventExchange, name: string) =>
  events.publish(name, '/namespaces/create', NamespaceCreateSchema, { name });

test('a subscriber that reads as events come gets every one, past the bound', async () => {
  const events = new EventExchange();
  const sub = subscribe(events, 3);
  for (let i = 0; i < 10; i++) {
    const next = sub.next();
    publish(events, `ns${i}`);
    assert.equal((await next).value?.namespace, `ns${i}`);
  }
  await sub.return?.();
});

test('a subscriber that stops reading is cut off at the bound (ResourceExhausted), not fed without end', async () => {
  const events = new EventExchange();
  const sub = subscribe(events, 3);
  const first = sub.next(); // subscribes
  publish(events, 'ns0');
  assert.equal((await first).value?.namespace, 'ns0');
  for (let i = 1; i <= 3; i++) publish(events, `ns${i}`);
  // Three waiting: within the bound, they are delivered.
  for (let i = 1; i <= 3; i++) assert.equal((await sub.next()).value?.namespace, `ns${i}`);
  for (let i = 4; i <= 10; i++) publish(events, `ns${i}`);
  await assert.rejects(sub.next(), (err: unknown) => {
    assert.equal(errorKind(err), 'ResourceExhausted');
    assert.match((err as Error).message, /more than 3 events waited/);
    return true;
  });
});

test('a `~=` filter, tested off the event loop, passes what matches in order and drops the rest', async () => {
  const events = new EventExchange();
  const sub = subscribe(events, 8, ['namespace~="^keep",topic=="/namespaces/create"', 'namespace==plain']);
  const first = sub.next(); // subscribes
  for (const name of ['drop1', 'keep1', 'plain', 'drop2', 'keep2']) publish(events, name);
  // Another topic in a namespace the pattern matches: the selector beside the pattern refuses it.
  events.publish('keep3', '/namespaces/delete', NamespaceCreateSchema, { name: 'keep3' });
  publish(events, 'keep4');
  const got = [(await first).value?.namespace];
  for (let i = 0; i < 3; i++) got.push((await sub.next()).value?.namespace);
  assert.deepEqual(got, ['keep1', 'plain', 'keep2', 'keep4']);
  await sub.return?.();
});

test('a subscriber that stops reading has its call ended as the bound is passed, and is let go without reading', async () => {
  const events = new EventExchange();
  const { sub, failed } = subscribeFailing(events, 3);
  const first = sub.next(); // subscribes
  publish(events, 'ns0');
  assert.equal((await first).value?.namespace, 'ns0');
  assert.equal(events.subscribers, 1);
  // It never asks for another: the fourth waiting event passes the bound.
  for (let i = 1; i <= 3; i++) publish(events, `ns${i}`);
  assert.equal(failed.length, 0);
  publish(events, 'ns4');
  assert.equal(failed.length, 1);
  assert.equal(errorKind(failed[0]), 'ResourceExhausted');
  assert.match((failed[0] as Error).message, /more than 3 events waited/);
  assert.equal(events.subscribers, 0);
  // Were it to read again, it is told the same.
  await assert.rejects(sub.next(), (err: unknown) => errorKind(err) === 'ResourceExhausted');
});

test('the exchange closing ends a subscription whose reader is away, at once', async () => {
  const events = new EventExchange();
  const { sub, failed } = subscribeFailing(events, 8);
  const first = sub.next(); // subscribes
  publish(events, 'ns0');
  assert.equal((await first).value?.namespace, 'ns0');
  events.close();
  assert.equal(failed.length, 1);
  assert.equal(errorKind(failed[0]), 'Unavailable');
  assert.equal((failed[0] as Error).message, 'transport is closing');
  await assert.rejects(sub.next(), (err: unknown) => errorKind(err) === 'Unavailable');
});
