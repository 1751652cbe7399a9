// The Events service's subscriptions, below gRPC: a subscriber that keeps up gets every event; one that
// stops reading is cut off once its waiting events reach the bound, instead of holding them all.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { errorKind } from '../../errors.ts';
import { NamespaceCreateSchema } from '../gen/containerd/events/namespace_pb.ts';
import { SubscribeRequestSchema } from '../gen/containerd/services/events/v1/events_pb.ts';
import type { CallContext } from '../grpc/service.ts';
import { EventExchange, eventsService } from './events.ts';

type Subscribe = (req: unknown, ctx: CallContext) => AsyncIterable<{ topic: string; namespace: string }>;

function subscribe(events: EventExchange, maxWaiting: number) {
  const reg = eventsService({ events, maxWaiting });
  const ctx = { method: '', metadata: {}, signal: new AbortController().signal, peer: '' } as CallContext;
  const impl = reg.impl as unknown as { subscribe: Subscribe };
  return impl.subscribe(create(SubscribeRequestSchema, {}), ctx)[Symbol.asyncIterator]();
}

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
