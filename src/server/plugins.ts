// The plugins this daemon reports through Introspection, in containerd's type/id vocabulary, so clients
// that look for a service by plugin (e.g. `type==io.containerd.grpc.v1, id==images`) find it.
import type { PluginInfo } from '../api/services/introspection.ts';

const GRPC = 'io.containerd.grpc.v1';
const SERVICE = 'io.containerd.service.v1';

/** gRPC service full name → the id containerd gives its grpc plugin and its service plugin. */
const SERVICE_PLUGINS: Record<string, { grpc: string; service?: string }> = {
  'containerd.services.images.v1.Images': { grpc: 'images', service: 'images-service' },
  'containerd.services.content.v1.Content': { grpc: 'content', service: 'content-service' },
  'containerd.services.leases.v1.Leases': { grpc: 'leases', service: 'leases-service' },
  'containerd.services.namespaces.v1.Namespaces': { grpc: 'namespaces', service: 'namespaces-service' },
  'containerd.services.introspection.v1.Introspection': {
    grpc: 'introspection',
    service: 'introspection-service',
  },
  'containerd.services.version.v1.Version': { grpc: 'version' },
  'containerd.services.snapshots.v1.Snapshots': { grpc: 'snapshots', service: 'snapshots-service' },
  'containerd.services.diff.v1.Diff': { grpc: 'diff', service: 'diff-service' },
  'containerd.services.events.v1.Events': { grpc: 'events' },
};

export interface PluginContext {
  /** Full names of the gRPC services served. */
  services: readonly string[];
  contentRoot: string;
  metadataPath: string;
  /** Snapshotters served (e.g. `native`), when the snapshot service is wired. */
  snapshotters?: ReadonlyArray<{ id: string; root: string }>;
}

export function pluginList(ctx: PluginContext): PluginInfo[] {
  const out: PluginInfo[] = [
    { type: 'io.containerd.content.v1', id: 'content', exports: { root: ctx.contentRoot } },
    {
      type: 'io.containerd.metadata.v1',
      id: 'sqlite',
      requires: ['io.containerd.content.v1', 'io.containerd.snapshotter.v1'],
      exports: { path: ctx.metadataPath },
    },
    { type: 'io.containerd.gc.v1', id: 'scheduler', requires: ['io.containerd.metadata.v1'] },
    { type: 'io.containerd.lease.v1', id: 'manager', requires: ['io.containerd.metadata.v1'] },
  ];
  for (const sn of ctx.snapshotters ?? []) {
    out.push({
      type: 'io.containerd.snapshotter.v1',
      id: sn.id,
      // containerd's overlayfs plugin exports its root (clients read it); its native plugin exports nothing.
      ...(sn.id === 'overlayfs' && { exports: { root: sn.root } }),
      platforms: [{ os: 'linux', architecture: process.arch === 'x64' ? 'amd64' : process.arch }],
    });
  }
  for (const name of ctx.services) {
    const ids = SERVICE_PLUGINS[name];
    if (!ids) continue;
    if (ids.service) {
      out.push({ type: SERVICE, id: ids.service, requires: ['io.containerd.metadata.v1'] });
    }
    out.push({ type: GRPC, id: ids.grpc, requires: ids.service ? [SERVICE] : [] });
  }
  out.push({ type: GRPC, id: 'healthcheck' });
  return out;
}
