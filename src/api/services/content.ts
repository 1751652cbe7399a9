// Content service: containerd.services.content.v1 over a ContentView. Translation only; the view owns
// namespaces' membership, labels, ingests, the Write protocol and the messages.
//
//   contentService({ view }): ServiceRegistration
//
// The namespace comes from `containerd-namespace`, the lease (if any) from `containerd-lease`.
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { outOfRange } from '../../errors.ts';
import type { ContentRecord, ContentView, NamespacedStatus, WriteMessage } from '../../metadata/content.ts';
import { timestampFromNanos } from '../convert/timestamps.ts';
import { ContentDeleteSchema } from '../gen/containerd/events/content_pb.ts';
import {
  Content,
  type InfoSchema,
  type StatusSchema,
  WriteAction,
  type WriteContentRequest,
} from '../gen/containerd/services/content/v1/content_pb.ts';
import { namespaceOf } from '../grpc/namespace.ts';
import { implement, type ServiceRegistration } from '../grpc/service.ts';
import type { EventExchange } from './events.ts';
import { leaseOf } from './leases.ts';

export interface ContentServiceDeps {
  view: ContentView;
  /** Where /content/delete goes. */
  events?: EventExchange;
}

/** List sends this many Info per message, as containerd does. */
export const LIST_BATCH = 100;

function infoToProto(i: ContentRecord): MessageInitShape<typeof InfoSchema> {
  return {
    digest: i.digest,
    size: BigInt(i.size),
    createdAt: timestampFromNanos(i.createdAtNs),
    updatedAt: timestampFromNanos(i.updatedAtNs),
    labels: i.labels,
  };
}

function statusToProto(s: NamespacedStatus): MessageInitShape<typeof StatusSchema> {
  return {
    ref: s.ref,
    offset: BigInt(s.offset),
    total: BigInt(s.total),
    startedAt: timestampFromDate(s.startedAt),
    updatedAt: timestampFromDate(s.updatedAt),
  };
}

const ACTIONS: Record<number, WriteMessage['action']> = {
  [WriteAction.STAT]: 'stat',
  [WriteAction.WRITE]: 'write',
  [WriteAction.COMMIT]: 'commit',
};

function writeMessage(r: WriteContentRequest): WriteMessage {
  return {
    action: ACTIONS[r.action] ?? 'other',
    ref: r.ref,
    total: Number(r.total),
    expected: r.expected,
    offset: Number(r.offset),
    data: r.data,
    labels: r.labels,
  };
}

const leaseOpt = (lease: string | undefined) => (lease ? { lease } : {});

export function contentService(deps: ContentServiceDeps): ServiceRegistration {
  const { view } = deps;
  return implement(Content, {
    info: (req, ctx) => ({ info: infoToProto(view.info(namespaceOf(ctx.metadata), req.digest)) }),

    update: (req, ctx) => {
      const ns = namespaceOf(ctx.metadata);
      // containerd 1.6 reads a missing info as an empty one: its digest fails validation.
      const info = view.update(ns, req.info ?? { digest: '' }, req.updateMask?.paths ?? []);
      return { info: infoToProto(info) };
    },

    list: async function* (req, ctx) {
      const infos = await view.list(namespaceOf(ctx.metadata), req.filters);
      for (let i = 0; i < infos.length; i += LIST_BATCH) {
        yield { info: infos.slice(i, i + LIST_BATCH).map(infoToProto) };
      }
    },

    delete: (req, ctx) => {
      const ns = namespaceOf(ctx.metadata);
      view.delete(ns, req.digest, leaseOf(ctx.metadata));
      deps.events?.publish(ns, '/content/delete', ContentDeleteSchema, { digest: req.digest });
      return {};
    },

    // containerd's ReadAt semantics: a negative offset reads from 0, one past the end is OutOfRange, a size
    // of 0 or past the end reads to the end. Chunks of at most 1 MiB (the store's reads), each with its
    // offset relative to the start of this read.
    read: async function* (req, ctx) {
      const blob = view.blob(namespaceOf(ctx.metadata), req.digest);
      const size = blob.descriptor.size;
      const offset = Math.max(0, Number(req.offset));
      if (offset > size) throw outOfRange(`read past object length ${size} bytes`);
      const want = Number(req.size);
      const length = want <= 0 || offset + want > size ? size - offset : want;
      if (length === 0) return;
      let at = 0;
      for await (const data of await blob.open({ range: { offset, length }, signal: ctx.signal })) {
        yield { offset: BigInt(at), data: data as Buffer };
        at += (data as Buffer).length;
      }
    },

    status: async (req, ctx) => ({
      status: statusToProto(await view.status(namespaceOf(ctx.metadata), req.ref)),
    }),

    listStatuses: async (req, ctx) => ({
      statuses: (await view.listStatuses(namespaceOf(ctx.metadata), req.filters)).map(statusToProto),
    }),

    abort: async (req, ctx) => {
      await view.abort(namespaceOf(ctx.metadata), req.ref, leaseOf(ctx.metadata));
      return {};
    },

    write: async function* (requests, ctx) {
      const ns = namespaceOf(ctx.metadata);
      // Replies echo the action of the message they answer; the session answers each message in turn.
      let action: WriteAction = WriteAction.STAT;
      const messages = (async function* () {
        for await (const r of requests) {
          action = r.action;
          yield writeMessage(r);
        }
      })();
      for await (const reply of view.writeSession(ns, messages, leaseOpt(leaseOf(ctx.metadata)))) {
        yield {
          action,
          offset: BigInt(reply.offset),
          total: BigInt(reply.total ?? 0),
          digest: reply.digest ?? '',
          ...(reply.startedAt && { startedAt: timestampFromDate(reply.startedAt) }),
          ...(reply.updatedAt && { updatedAt: timestampFromDate(reply.updatedAt) }),
        };
      }
    },
  });
}
