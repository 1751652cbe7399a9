// Counts the connections a gRPC TCP listener closes or refuses on its own (cap, idle time, keepalive,
// ping abuse). `strata up` puts its builder and spec-store listeners on one registry: they share the
// counter and tell themselves apart by `listener`.
import { Counter, type Registry } from 'prom-client';
import type { GrpcDropReason } from '../api/grpc/server.ts';

const NAME = 'strata_grpc_connections_dropped_total';

/** What to give a gRPC server as `onConnectionDropped` to count its drops on `registry`. */
export function countGrpcDrops(registry: Registry, listener: string): (reason: GrpcDropReason) => void {
  const counter =
    (registry.getSingleMetric(NAME) as Counter<'listener' | 'reason'> | undefined) ??
    new Counter({
      name: NAME,
      help: 'gRPC TCP connections closed or refused by the server (full, shed, idle, keepalive, too-many-pings)',
      labelNames: ['listener', 'reason'],
      registers: [registry],
    });
  return (reason) => counter.inc({ listener, reason });
}
