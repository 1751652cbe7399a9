// Introspection service: the server's identity (a UUID that survives restarts, pid, pid namespace) and
// the plugins it runs, in containerd's type/id terms, filterable with containerd's filter language.

import type { Adaptor } from '../../metadata/filters/filter.ts';
import { parseStoreFilters } from '../../metadata/filters/filter.ts';
import { Introspection } from '../gen/containerd/services/introspection/v1/introspection_pb.ts';
import { implement, type ServiceRegistration } from '../grpc/service.ts';

/** A plugin as `ctr plugins ls` shows it. */
export interface PluginInfo {
  /** containerd plugin type, e.g. `io.containerd.grpc.v1`. */
  type: string;
  id: string;
  /** Plugin types this one depends on. */
  requires?: string[];
  exports?: Record<string, string>;
  capabilities?: string[];
  platforms?: Array<{ os: string; architecture: string; variant?: string }>;
}

export interface IntrospectionServiceDeps {
  uuid: string;
  pid: number;
  /** Inode of the pid namespace, 0 when unknown. */
  pidns: number;
  plugins: readonly PluginInfo[];
}

/** Fields containerd's plugin filter knows: type, id, exports.<key>; capabilities never match. */
function pluginAdaptor(p: PluginInfo): Adaptor {
  return {
    field(path) {
      switch (path[0]) {
        case 'type':
          return p.type === '' ? undefined : p.type;
        case 'id':
          return p.id === '' ? undefined : p.id;
        case 'exports': {
          const key = path.slice(1).join('.');
          return path.length > 1 && p.exports && Object.hasOwn(p.exports, key) ? p.exports[key] : undefined;
        }
        default:
          return undefined;
      }
    },
  };
}

export function introspectionService(deps: IntrospectionServiceDeps): ServiceRegistration {
  const server = { uuid: deps.uuid, pid: BigInt(deps.pid), pidns: BigInt(deps.pidns), deprecations: [] };
  return implement(Introspection, {
    server: () => server,
    plugins(req) {
      // containerd's introspection wraps the parse error once more, as its image and lease stores do.
      const filter = parseStoreFilters(req.filters);
      return {
        plugins: deps.plugins
          .filter((p) => filter.match(pluginAdaptor(p)))
          .map((p) => ({
            type: p.type,
            id: p.id,
            requires: p.requires ?? [],
            exports: p.exports ?? {},
            capabilities: p.capabilities ?? [],
            platforms: (p.platforms ?? []).map((pl) => ({ ...pl, variant: pl.variant ?? '' })),
          })),
      };
    },
  });
}
