// Leases service: containerd.services.leases.v1 over the lease store. Also home of the `containerd-lease`
// request header, which every service that writes (Images, Content) must honour.
import { randomBytes } from 'node:crypto';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { invalidArgument } from '../../errors.ts';
import type { LeaseRecord, LeaseStore } from '../../metadata/leases.ts';
import { timestampFromNanos } from '../convert/timestamps.ts';
import { type LeaseSchema, Leases } from '../gen/containerd/services/leases/v1/leases_pb.ts';
import { namespaceOf } from '../grpc/namespace.ts';
import { implement, type RequestMetadata, type ServiceRegistration } from '../grpc/service.ts';

export const LEASE_HEADER = 'containerd-lease';

/** The lease a call runs under: the first `containerd-lease` value, or undefined when there is none. */
export function leaseOf(metadata: RequestMetadata): string | undefined {
  const first = metadata.get(LEASE_HEADER)[0];
  const id = typeof first === 'string' ? first : first?.toString('utf8');
  return id === undefined || id === '' ? undefined : id;
}

export interface LeasesServiceDeps {
  leases: LeaseStore;
  /** Runs a garbage collection and resolves when it is done (Delete with sync). */
  collectGarbage(): Promise<unknown>;
}

/**
 * What containerd's lease service generates when a client sends no id (`ctr leases create` does not):
 * the nanoseconds of the current second and four URL-safe base64 characters. Like containerd, lease ids
 * are not held to the identifier rule (ctr's own ids may end in '_').
 */
export function randomLeaseId(): string {
  const nanos = BigInt(Date.now() % 1000) * 1_000_000n + (process.hrtime.bigint() % 1_000_000n);
  return `${nanos}-${randomBytes(3).toString('base64url')}`;
}

function leaseToProto(l: LeaseRecord): MessageInitShape<typeof LeaseSchema> {
  return { id: l.id, labels: l.labels, createdAt: timestampFromNanos(l.createdAtNs) };
}

function resourceOf(r: { id: string; type: string } | undefined): { id: string; type: string } {
  if (!r) throw invalidArgument('resource is required: invalid argument');
  return { id: r.id, type: r.type };
}

export function leasesService(deps: LeasesServiceDeps): ServiceRegistration {
  const { leases } = deps;
  return implement(Leases, {
    create(req, ctx) {
      const ns = namespaceOf(ctx.metadata);
      const id = req.id === '' ? randomLeaseId() : req.id;
      const lease = leases.create(ns, { id, labels: req.labels });
      return { lease: leaseToProto(lease) };
    },
    async delete(req, ctx) {
      leases.delete(namespaceOf(ctx.metadata), req.id);
      if (req.sync) await deps.collectGarbage();
      return {};
    },
    async list(req, ctx) {
      return { leases: (await leases.list(namespaceOf(ctx.metadata), req.filters)).map(leaseToProto) };
    },
    addResource(req, ctx) {
      leases.addResource(namespaceOf(ctx.metadata), req.id, resourceOf(req.resource));
      return {};
    },
    deleteResource(req, ctx) {
      leases.deleteResource(namespaceOf(ctx.metadata), req.id, resourceOf(req.resource));
      return {};
    },
    listResources(req, ctx) {
      return { resources: leases.listResources(namespaceOf(ctx.metadata), req.id) };
    },
  });
}
