// Diff service: containerd.services.diff.v1 over the differ. Translation only. The namespace comes
// from `containerd-namespace`; Diff writes its layer under the `containerd-lease` lease, if any.
import { invalidArgument } from '../../errors.ts';
import type { Differ, LayerDescriptor } from '../../snapshots/differ.ts';
import type { Mount } from '../../snapshots/snapshotter.ts';
import { descriptorFromProto, descriptorToProto } from '../convert/descriptor.ts';
import { Diff } from '../gen/containerd/services/diff/v1/diff_pb.ts';
import type { Descriptor } from '../gen/containerd/types/descriptor_pb.ts';
import type { Mount as ProtoMount } from '../gen/containerd/types/mount_pb.ts';
import { namespaceOf } from '../grpc/namespace.ts';
import { implement, type ServiceRegistration } from '../grpc/service.ts';
import { leaseOf } from './leases.ts';

export interface DiffServiceDeps {
  differ: Differ;
}

const toMounts = (mounts: readonly ProtoMount[]): Mount[] =>
  mounts.map((m) => ({ type: m.type, source: m.source, options: [...m.options] }));

function toDescriptor(d: Descriptor | undefined): LayerDescriptor {
  // containerd dereferences a missing descriptor; a clear InvalidArgument is kinder.
  if (!d) throw invalidArgument('diff descriptor required: invalid argument');
  return { ...descriptorFromProto(d), annotations: d.annotations };
}

export function diffService(deps: DiffServiceDeps): ServiceRegistration {
  const { differ } = deps;
  return implement(Diff, {
    async apply(req, ctx) {
      const ns = namespaceOf(ctx.metadata);
      const applied = await differ.apply(ns, toDescriptor(req.diff), toMounts(req.mounts), ctx.signal);
      return { applied: descriptorToProto(applied) };
    },
    async diff(req, ctx) {
      const ns = namespaceOf(ctx.metadata);
      const lease = leaseOf(ctx.metadata);
      const desc = await differ.compare(ns, {
        lower: toMounts(req.left),
        upper: toMounts(req.right),
        mediaType: req.mediaType,
        ref: req.ref,
        labels: req.labels,
        signal: ctx.signal,
        ...(lease ? { lease } : {}),
      });
      return { diff: descriptorToProto(desc) };
    },
  });
}
