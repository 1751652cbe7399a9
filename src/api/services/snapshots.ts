// Snapshots service: containerd.services.snapshots.v1 over the daemon's snapshotters.
// Translation only; the snapshotter owns semantics and messages. The namespace comes from
// `containerd-namespace`, the lease (if any) from `containerd-lease`.
import type { MessageInitShape } from '@bufbuild/protobuf';
import { invalidArgument } from '../../errors.ts';
import type { SnapshotKind, SnapshotRecord } from '../../metadata/snapshots.ts';
import type { Mount, Snapshotter } from '../../snapshots/snapshotter.ts';
import { timestampFromNanos } from '../convert/timestamps.ts';
import {
  SnapshotCommitSchema,
  SnapshotPrepareSchema,
  SnapshotRemoveSchema,
} from '../gen/containerd/events/snapshot_pb.ts';
import { type InfoSchema, Kind, Snapshots } from '../gen/containerd/services/snapshots/v1/snapshots_pb.ts';
import type { MountSchema } from '../gen/containerd/types/mount_pb.ts';
import { namespaceOf } from '../grpc/namespace.ts';
import { implement, type ServiceRegistration } from '../grpc/service.ts';
import type { EventExchange } from './events.ts';
import { leaseOf } from './leases.ts';

export interface SnapshotsServiceDeps {
  /** Snapshotters by name. */
  snapshotters: ReadonlyMap<string, Snapshotter>;
  /** Where /snapshot/prepare, /snapshot/commit and /snapshot/remove go (a view publishes nothing). */
  events?: EventExchange;
}

/** List sends this many Info per message, as containerd does. */
export const LIST_BATCH = 100;

const KINDS: Record<SnapshotKind, Kind> = {
  view: Kind.VIEW,
  active: Kind.ACTIVE,
  committed: Kind.COMMITTED,
};

export function snapshotInfoToProto(r: SnapshotRecord): MessageInitShape<typeof InfoSchema> {
  return {
    name: r.name,
    parent: r.parent,
    kind: KINDS[r.kind],
    createdAt: timestampFromNanos(r.createdAtNs),
    updatedAt: timestampFromNanos(r.updatedAtNs),
    labels: r.labels,
  };
}

export function mountsToProto(mounts: readonly Mount[]): Array<MessageInitShape<typeof MountSchema>> {
  return mounts.map((m) => ({ type: m.type, source: m.source, target: '', options: [...m.options] }));
}

export function snapshotsService(deps: SnapshotsServiceDeps): ServiceRegistration {
  // containerd's messages, formatted as its ToGRPCf does.
  const snapshotter = (name: string): Snapshotter => {
    if (name === '') throw invalidArgument('snapshotter argument missing: invalid argument');
    const sn = deps.snapshotters.get(name);
    if (!sn) throw invalidArgument(`snapshotter not loaded: ${name}: invalid argument`);
    return sn;
  };
  const createOptions = (
    labels: Record<string, string>,
    md: Parameters<typeof leaseOf>[0],
    signal: AbortSignal,
  ) => {
    const lease = leaseOf(md);
    return { labels, signal, ...(lease ? { lease } : {}) };
  };

  return implement(Snapshots, {
    async prepare(req, ctx) {
      const sn = snapshotter(req.snapshotter);
      const ns = namespaceOf(ctx.metadata);
      const mounts = await sn.prepare(
        ns,
        req.key,
        req.parent,
        createOptions(req.labels, ctx.metadata, ctx.signal),
      );
      deps.events?.publish(ns, '/snapshot/prepare', SnapshotPrepareSchema, {
        key: req.key,
        parent: req.parent,
      });
      return { mounts: mountsToProto(mounts) };
    },
    async view(req, ctx) {
      const sn = snapshotter(req.snapshotter);
      const ns = namespaceOf(ctx.metadata);
      const mounts = await sn.view(
        ns,
        req.key,
        req.parent,
        createOptions(req.labels, ctx.metadata, ctx.signal),
      );
      return { mounts: mountsToProto(mounts) };
    },
    mounts(req, ctx) {
      const sn = snapshotter(req.snapshotter);
      return { mounts: mountsToProto(sn.mounts(namespaceOf(ctx.metadata), req.key)) };
    },
    async commit(req, ctx) {
      const sn = snapshotter(req.snapshotter);
      const ns = namespaceOf(ctx.metadata);
      await sn.commit(ns, req.name, req.key, createOptions(req.labels, ctx.metadata, ctx.signal));
      deps.events?.publish(ns, '/snapshot/commit', SnapshotCommitSchema, { key: req.key, name: req.name });
      return {};
    },
    async remove(req, ctx) {
      const sn = snapshotter(req.snapshotter);
      const lease = leaseOf(ctx.metadata);
      const ns = namespaceOf(ctx.metadata);
      await sn.remove(ns, req.key, lease ? { lease } : {});
      deps.events?.publish(ns, '/snapshot/remove', SnapshotRemoveSchema, { key: req.key });
      return {};
    },
    stat(req, ctx) {
      const sn = snapshotter(req.snapshotter);
      return { info: snapshotInfoToProto(sn.stat(namespaceOf(ctx.metadata), req.key)) };
    },
    update(req, ctx) {
      const sn = snapshotter(req.snapshotter);
      const ns = namespaceOf(ctx.metadata);
      const info = { name: req.info?.name ?? '', labels: req.info?.labels ?? {} };
      return { info: snapshotInfoToProto(sn.update(ns, info, req.updateMask?.paths ?? [])) };
    },
    async *list(req, ctx) {
      const sn = snapshotter(req.snapshotter);
      const all = await sn.list(namespaceOf(ctx.metadata), req.filters);
      for (let i = 0; i < all.length; i += LIST_BATCH) {
        yield { info: all.slice(i, i + LIST_BATCH).map(snapshotInfoToProto) };
      }
    },
    async usage(req, ctx) {
      const sn = snapshotter(req.snapshotter);
      const u = await sn.usage(namespaceOf(ctx.metadata), req.key, ctx.signal);
      return { size: BigInt(u.size), inodes: BigInt(u.inodes) };
    },
    // Not namespaced: it removes directories no namespace's snapshot uses.
    async cleanup(req) {
      const sn = snapshotter(req.snapshotter);
      await sn.cleanup();
      return {};
    },
  });
}
