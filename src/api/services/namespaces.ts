// Namespaces service: containerd.services.namespaces.v1 over the namespace store. The service itself is
// not namespaced (no `containerd-namespace` header needed); names follow containerd's identifier rule.
import { invalidArgument } from '../../errors.ts';
import type { NamespaceRecord, NamespaceStore } from '../../metadata/namespaces.ts';
import { type Namespace, Namespaces } from '../gen/containerd/services/namespaces/v1/namespace_pb.ts';
import { validateIdentifier } from '../grpc/namespace.ts';
import { implement, type ServiceRegistration } from '../grpc/service.ts';

export interface NamespacesServiceDeps {
  namespaces: NamespaceStore;
  /**
   * Labels every namespace reports unless it sets its own value, e.g. `containerd.io/defaults/snapshotter`:
   * ctr asks for it when no snapshotter is given, and falls back to one this daemon does not have.
   */
  defaultLabels?: Readonly<Record<string, string>>;
  /** Deletes the data of an ingest whose record went with its namespace (absent data is fine). */
  removeIngest?: (namespace: string, ref: string) => Promise<void>;
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
    create(req) {
      const ns = required(req.namespace);
      validateIdentifier(ns.name);
      return { namespace: namespaces.create(ns.name, ns.labels) };
    },
    update(req) {
      const ns = required(req.namespace);
      validateIdentifier(ns.name);
      return { namespace: namespaces.update(ns.name, ns.labels, req.updateMask?.paths ?? []) };
    },
    async delete(req) {
      for (const ref of namespaces.delete(req.name)) await deps.removeIngest?.(req.name, ref);
      return {};
    },
  });
}
