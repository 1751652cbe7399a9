// Namespaces service: containerd.services.namespaces.v1 over the namespace store. The service itself is
// not namespaced (no `containerd-namespace` header needed); names follow containerd's identifier rule.
import { invalidArgument } from '../../errors.ts';
import type { NamespaceRecord, NamespaceStore } from '../../metadata/namespaces.ts';
import {
  NamespaceCreateSchema,
  NamespaceDeleteSchema,
  NamespaceUpdateSchema,
} from '../gen/containerd/events/namespace_pb.ts';
import { type Namespace, Namespaces } from '../gen/containerd/services/namespaces/v1/namespace_pb.ts';
import { namespaceOf, validateIdentifier } from '../grpc/namespace.ts';
import { implement, type RequestMetadata, type ServiceRegistration } from '../grpc/service.ts';
import type { EventExchange } from './events.ts';

export interface NamespacesServiceDeps {
  namespaces: NamespaceStore;
  /**
   * Labels every namespace reports unless it sets its own value, e.g. `containerd.io/defaults/snapshotter`:
   * ctr asks for it when no snapshotter is given, and falls back to one this daemon does not have.
   */
  defaultLabels?: Readonly<Record<string, string>>;
  /** Deletes the data of an ingest whose record went with its namespace (absent data is fine). */
  removeIngest?: (namespace: string, ref: string) => Promise<void>;
  /** Where /namespaces/create, /namespaces/update and /namespaces/delete go. */
  events?: EventExchange;
}

/** The caller's own namespace, which containerd files create and update events under; none without one. */
function callerNamespace(metadata: RequestMetadata): string | undefined {
  try {
    return namespaceOf(metadata);
  } catch {
    return undefined;
  }
}

/**
 * The payload of a create or update event: the request's name and labels, as containerd publishes them,
 * not what the namespace holds after. ctr sets one label per update, so its event names that label alone
 * (with an empty value when it is removed).
 */
function requested(ns: Namespace): NamespaceRecord {
  return { name: ns.name, labels: ns.labels };
}

function required(ns: Namespace | undefined): Namespace {
  if (!ns) throw invalidArgument('Namespace required: invalid argument');
  return ns;
}

export function namespacesService(deps: NamespacesServiceDeps): ServiceRegistration {
  const { namespaces } = deps;
  const withDefaults = (ns: NamespaceRecord): NamespaceRecord => ({
    name: ns.name,
    labels: { ...deps.defaultLabels, ...ns.labels },
  });
  return implement(Namespaces, {
    get(req) {
      return { namespace: withDefaults(namespaces.get(req.name)) };
    },
    list() {
      return { namespaces: namespaces.list().map(withDefaults) };
    },
    create(req, ctx) {
      const ns = required(req.namespace);
      validateIdentifier(ns.name);
      const created = namespaces.create(ns.name, ns.labels);
      const caller = callerNamespace(ctx.metadata);
      if (caller) deps.events?.publish(caller, '/namespaces/create', NamespaceCreateSchema, requested(ns));
      return { namespace: created };
    },
    update(req, ctx) {
      const ns = required(req.namespace);
      validateIdentifier(ns.name);
      const updated = namespaces.update(ns.name, ns.labels, req.updateMask?.paths ?? []);
      const caller = callerNamespace(ctx.metadata);
      if (caller) deps.events?.publish(caller, '/namespaces/update', NamespaceUpdateSchema, requested(ns));
      return { namespace: updated };
    },
    async delete(req) {
      const ingests = namespaces.delete(req.name);
      // Filed under the deleted namespace itself, as containerd does. Announced once committed, before
      // the ingest data goes: a create of the same name meanwhile is announced after it, as it happened,
      // and a failure to remove the data does not hide a delete that was made.
      deps.events?.publish(req.name, '/namespaces/delete', NamespaceDeleteSchema, { name: req.name });
      for (const ref of ingests) await deps.removeIngest?.(req.name, ref);
      return {};
    },
  });
}
