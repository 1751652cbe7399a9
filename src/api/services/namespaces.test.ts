// The Namespaces service's events, below gRPC, over a real metadata database: a delete is announced as
// soon as it is committed, ahead of anything that happens while its leftovers are cleared.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { IngestRecords } from '../../metadata/ingests.ts';
import { NamespaceStore } from '../../metadata/namespaces.ts';
import { openTestDb } from '../../metadata/test-db.ts';
import {
  CreateNamespaceRequestSchema,
  DeleteNamespaceRequestSchema,
} from '../gen/containerd/services/namespaces/v1/namespace_pb.ts';
import type { CallContext, RequestMetadata } from '../grpc/service.ts';
import { EventExchange } from './events.ts';
import { namespacesService } from './namespaces.ts';

type Handler = (req: unknown, ctx: CallContext) => unknown;

const caller: RequestMetadata = { get: (key) => (key === 'containerd-namespace' ? ['default'] : []) };
const ctx = { method: '', metadata: caller, signal: new AbortController().signal, peer: '' } as CallContext;

test("a namespace made again while the deleted one's ingest data goes is announced after the delete", async () => {
  const t = openTestDb();
  try {
    new IngestRecords(t.db).open('gone', 'partial', {});
    const events = new EventExchange();
    const seen: string[] = [];
    events.subscribe((e) => {
      if (e) seen.push(`${e.topic} ${e.namespace}`);
    });
    const removing = Promise.withResolvers<void>();
    const release = Promise.withResolvers<void>();
    const reg = namespacesService({
      namespaces: new NamespaceStore(t.db),
      events,
      removeIngest: async () => {
        removing.resolve();
        await release.promise;
      },
    });
    const impl = reg.impl as unknown as { create: Handler; delete: Handler };
    const deleting = impl.delete(create(DeleteNamespaceRequestSchema, { name: 'gone' }), ctx);
    await removing.promise;
    // The delete is committed; another client makes the name again before the data is gone.
    impl.create(create(CreateNamespaceRequestSchema, { namespace: { name: 'gone' } }), ctx);
    release.resolve();
    await deleting;
    assert.deepEqual(seen, ['/namespaces/delete gone', '/namespaces/create default']);
  } finally {
    t.cleanup();
  }
});
