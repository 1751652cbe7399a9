// Events service: containerd.services.events.v1 Subscribe over an in-process exchange the other services
// publish to (images, content, namespaces, snapshots: the topics and payloads containerd 1.6 publishes for
// those calls), so `ctr events` shows what happens here. Publish and Forward stay unimplemented: this
// daemon runs no shims or other publishers.
//
//   const events = new EventExchange();  events.publish(ns, '/images/create', ImageCreateSchema, {...})
//   eventsService({ events }): ServiceRegistration
import { create, type DescMessage, type MessageInitShape, toBinary } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { isInvalidArgument, resourceExhausted, unavailable, unknownError } from '../../errors.ts';
import {
  type Adaptor,
  type Filter,
  hasRegex,
  mayMatch,
  parseFilters,
  selectMatching,
} from '../../metadata/filters/filter.ts';
import type { RegexRunner } from '../../metadata/filters/regex-runner.ts';
import { Events } from '../gen/containerd/services/events/v1/events_pb.ts';
import { implement, type ServiceRegistration } from '../grpc/service.ts';

/** One published event, as subscribers get it. */
export interface PublishedEvent {
  at: Date;
  namespace: string;
  topic: string;
  /** The payload's message name, e.g. `containerd.events.ImageCreate`. */
  typeName: string;
  /** The payload's protobuf encoding. */
  value: Uint8Array;
  /** The payload's fields, for `event.<field>` filters: strings and label maps. */
  fields: Readonly<Record<string, string | Readonly<Record<string, string>>>>;
}

/** What a subscriber is told: an event, or `undefined` once the exchange has closed. */
export type EventListener = (e: PublishedEvent | undefined) => void;

/** Fan-out of published events to the current subscribers; nothing is kept for later ones. */
export class EventExchange {
  private readonly listeners = new Set<EventListener>();
  private closed = false;

  publish<D extends DescMessage>(
    namespace: string,
    topic: string,
    schema: D,
    event: MessageInitShape<D>,
  ): void {
    if (this.listeners.size === 0) return;
    const message = create(schema, event);
    const e: PublishedEvent = {
      at: new Date(),
      namespace,
      topic,
      typeName: schema.typeName,
      value: toBinary(schema, message),
      fields: event as PublishedEvent['fields'],
    };
    for (const l of this.listeners) l(e);
  }

  /**
   * Calls `listener` for every event published until the returned function is called, then with
   * `undefined` if the exchange closes first (at once when it already has).
   */
  subscribe(listener: EventListener): () => void {
    if (this.closed) {
      listener(undefined);
      return () => {};
    }
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** How many subscriptions are open. */
  get subscribers(): number {
    return this.listeners.size;
  }

  /** Ends every subscription, so open streams do not hold up the server's shutdown. */
  close(): void {
    this.closed = true;
    for (const l of this.listeners) l(undefined);
    this.listeners.clear();
  }
}

/** containerd's envelope fields for filters: topic, namespace, event.<field> (event.labels.<key>). */
function envelopeAdaptor(e: PublishedEvent): Adaptor {
  return {
    field(path) {
      switch (path[0]) {
        case 'topic':
          return e.topic;
        case 'namespace':
          return e.namespace;
        case 'event': {
          const v = path.length > 1 ? e.fields[path[1]!] : undefined;
          if (typeof v === 'string') return path.length === 2 && v !== '' ? v : undefined;
          if (v === undefined || path.length < 3) return undefined;
          const key = path.slice(2).join('.');
          return Object.hasOwn(v, key) ? v[key] : undefined;
        }
        default:
          return undefined;
      }
    },
  };
}

function subscriptionFilter(filters: readonly string[]): Filter | undefined {
  if (filters.length === 0) return undefined;
  try {
    return parseFilters(filters);
  } catch (err) {
    // containerd's exchange fails the stream with this wording and code Unknown.
    if (isInvalidArgument(err)) {
      throw unknownError(`subscription error: failed parsing subscription filters: ${err.message}`);
    }
    throw err;
  }
}

/**
 * Events a subscriber may have waiting before it is cut off (those its `~=` tests have yet to pass or
 * drop included): one that reads slower than the daemon changes (or not at all) would otherwise hold
 * every event since in memory. The cut is made as the bound is passed, not when the subscriber next
 * reads, since one that never reads again would otherwise keep its queue and its stream for good.
 */
const MAX_WAITING_EVENTS = 4096;

const tooSlow = (maxWaiting: number) =>
  resourceExhausted(
    `events subscriber too slow: more than ${maxWaiting} events waited to be sent; subscribe again`,
  );

export interface EventsServiceDeps {
  events: EventExchange;
  /** Runs a subscription's `~=` tests (the metadata database's runner). */
  regex: RegexRunner;
  maxWaiting?: number;
}

export function eventsService(deps: EventsServiceDeps): ServiceRegistration {
  const maxWaiting = deps.maxWaiting ?? MAX_WAITING_EVENTS;
  return implement(Events, {
    subscribe: async function* (req, ctx) {
      const filter = subscriptionFilter(req.filters);
      // A `~=` test is run on the regex worker as the subscriber takes the event, not by the publisher:
      // a costly pattern over a 4 KiB label would hold the publishing call, and with it the event loop,
      // for as long as it runs, once per such subscriber. Until then an event waits as a candidate.
      const costly = filter !== undefined && hasRegex(filter);
      const wanted = (e: PublishedEvent): boolean => {
        if (!filter) return true;
        const a = envelopeAdaptor(e);
        return costly ? mayMatch(filter, a) : filter.match(a);
      };
      const queue: PublishedEvent[] = [];
      let wake: (() => void) | undefined;
      let ended = false;
      let behind = false;
      // The call is ended from here, not from the loop below: that loop may be parked at a response its
      // client does not take, and would see neither the bound passed nor the exchange closed until it did.
      // ctx.fail ends the call at once (resetting the stream when responses wait), so neither a publisher
      // nor the daemon's stop waits on this subscriber.
      const unsubscribe = deps.events.subscribe((e) => {
        if (e === undefined) {
          ended = true;
          // The daemon is stopping. containerd's subscribers see their connection go at that point, which
          // ctr reports with this status and text.
          ctx.fail(unavailable('transport is closing'));
        } else if (!wanted(e)) return;
        else if (queue.length < maxWaiting) queue.push(e);
        else {
          behind = true;
          queue.length = 0;
          unsubscribe();
          ctx.fail(tooSlow(maxWaiting));
        }
        wake?.();
      });
      const onAbort = () => wake?.();
      ctx.signal.addEventListener('abort', onAbort);
      try {
        while (!ctx.signal.aborted && !ended) {
          if (behind) throw tooSlow(maxWaiting);
          const e = queue.shift();
          if (!e) {
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
            wake = undefined;
            continue;
          }
          if (costly && (await selectMatching(filter, [e], envelopeAdaptor, deps.regex)).length === 0)
            continue;
          yield {
            timestamp: timestampFromDate(e.at),
            namespace: e.namespace,
            topic: e.topic,
            // containerd's type URLs are bare message names (no type.googleapis.com/ prefix); ctr
            // resolves the payload by that name.
            event: { typeUrl: e.typeName, value: e.value },
          };
        }
        // The exchange closed (the call has its status already).
        if (ended && !ctx.signal.aborted) throw unavailable('transport is closing');
      } finally {
        ctx.signal.removeEventListener('abort', onAbort);
        unsubscribe();
      }
    },
  });
}
