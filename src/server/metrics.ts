// Prometheus metrics: process defaults, per-method gRPC counts and latencies, garbage collection. One
// registry per daemon (no global), served on /metrics when an address is configured; `strata up` passes
// the one registry all its parts share, and collects the process defaults on it once.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { CallContext, ServiceRegistration } from '../api/grpc/service.ts';
import { statusOf } from '../api/grpc/status.ts';
import { methodPath } from '../api/transport/framing.ts';
import { unavailable } from '../errors.ts';
import type { GcStats } from '../metadata/gc-runner.ts';

export class DaemonMetrics {
  readonly registry: Registry;
  private readonly calls: Counter<'method' | 'code'>;
  private readonly latency: Histogram<'method'>;
  private readonly gcRuns: Counter;
  private readonly gcRemoved: Counter<'kind'>;
  private readonly gcSeconds: Histogram;
  /** Label children by method (and code): prom-client otherwise hashes the label object on every call. */
  private readonly callChildren = new Map<string, Counter.Internal>();
  private readonly latencyChildren = new Map<string, Histogram.Internal<'method'>>();

  /** With a registry of its own (and the process defaults on it) unless one is given. */
  constructor(shared?: Registry) {
    this.registry = shared ?? new Registry();
    if (!shared) collectDefaultMetrics({ register: this.registry, prefix: 'strata_' });
    const registers = [this.registry];
    this.calls = new Counter({
      name: 'strata_grpc_requests_total',
      help: 'gRPC calls handled, by method and status code',
      labelNames: ['method', 'code'],
      registers,
    });
    this.latency = new Histogram({
      name: 'strata_grpc_request_duration_seconds',
      help: 'gRPC call duration, by method',
      labelNames: ['method'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30],
      registers,
    });
    this.gcRuns = new Counter({ name: 'strata_gc_runs_total', help: 'Garbage collections run', registers });
    this.gcRemoved = new Counter({
      name: 'strata_gc_removed_total',
      help: 'Objects removed by garbage collection, by kind',
      labelNames: ['kind'],
      registers,
    });
    this.gcSeconds = new Histogram({
      name: 'strata_gc_duration_seconds',
      help: 'Garbage collection duration',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers,
    });
  }

  /** Reports at each scrape how many Events subscriptions are open (a cut-off subscriber is not). */
  watchEventSubscribers(count: () => number): void {
    this.gaugeOf(
      'strata_events_subscribers',
      'Open Events subscriptions (ctr events and other subscribers)',
      count,
    );
  }

  /**
   * Reports at each scrape how many gRPC calls have open streams: a call whose client stopped reading
   * stays counted until it reads, resets, or the call's deadline passes.
   */
  watchGrpcCalls(count: () => number): void {
    this.gaugeOf(
      'strata_grpc_open_calls',
      'gRPC calls whose streams are open (their answers or status not yet taken by the client)',
      count,
    );
  }

  /** A gauge read from `count` at each scrape. */
  private gaugeOf(name: string, help: string, count: () => number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(count());
      },
    });
  }

  gcRun(stats: GcStats): void {
    this.gcRuns.inc();
    this.gcSeconds.observe(stats.ms / 1000);
    for (const kind of ['content', 'blobsDeleted', 'leases', 'ingests', 'snapshots'] as const) {
      if (stats[kind] > 0) this.gcRemoved.inc({ kind }, stats[kind]);
    }
  }

  private record(method: string, start: number, err?: unknown): void {
    this.recordCode(method, start, err === undefined ? grpc.status.OK : statusOf(err).code);
  }

  private recordCode(method: string, start: number, code: grpc.status): void {
    const codeName = grpc.status[code] ?? String(code);
    const key = `${method} ${codeName}`;
    let calls = this.callChildren.get(key);
    if (!calls) {
      calls = this.calls.labels({ method, code: codeName });
      this.callChildren.set(key, calls);
    }
    calls.inc();
    let latency = this.latencyChildren.get(method);
    if (!latency) {
      latency = this.latency.labels({ method });
      this.latencyChildren.set(method, latency);
    }
    latency.observe((performance.now() - start) / 1000);
  }

  /** The same registration with every handler timed and counted. */
  instrument(reg: ServiceRegistration): ServiceRegistration {
    const impl: Record<string, unknown> = {};
    for (const method of reg.service.methods) {
      const found = reg.impl[method.localName];
      if (typeof found !== 'function') continue;
      const fn = (found as (...args: unknown[]) => unknown).bind(reg.impl);
      const path = methodPath(method);
      const streaming = method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming';
      impl[method.localName] = streaming ? this.wrapStream(path, fn) : this.wrapUnary(path, fn);
    }
    return { service: reg.service, impl };
  }

  private wrapUnary(path: string, fn: (...args: unknown[]) => unknown) {
    // Synchronous handlers stay synchronous (the adapter answers them in the same turn).
    return (...args: unknown[]): unknown => {
      const start = performance.now();
      let out: unknown;
      try {
        out = fn(...args);
      } catch (err) {
        this.record(path, start, err);
        throw err;
      }
      if (typeof (out as { then?: unknown } | null)?.then !== 'function') {
        this.record(path, start);
        return out;
      }
      return (out as PromiseLike<unknown>).then(
        (value) => {
          this.record(path, start);
          return value;
        },
        (err: unknown) => {
          this.record(path, start, err);
          throw err;
        },
      );
    };
  }

  private wrapStream(path: string, fn: (...args: unknown[]) => unknown) {
    const self = this;
    return async function* (req: unknown, ctx: CallContext): AsyncGenerator<unknown> {
      const start = performance.now();
      let recorded = false;
      // A call the handler ends itself through its context (a subscriber cut off) counts with that status.
      const counted: CallContext = {
        method: ctx.method,
        get metadata() {
          return ctx.metadata;
        },
        get signal() {
          return ctx.signal;
        },
        get peer() {
          return ctx.peer;
        },
        fail(err) {
          if (!recorded) self.record(path, start, err);
          recorded = true;
          ctx.fail(err);
        },
      };
      try {
        yield* fn(req, counted) as AsyncIterable<unknown>;
        if (!recorded) self.record(path, start);
        recorded = true;
      } catch (err) {
        if (!recorded) self.record(path, start, err);
        recorded = true;
        throw err;
      } finally {
        // Closed early: the adapter stopped iterating because the call was cancelled.
        if (!recorded) self.recordCode(path, start, grpc.status.CANCELLED);
      }
    };
  }
}

/** What a readiness endpoint reports: ready, or why not. */
export interface ReadyState {
  ready: boolean;
  reason?: string;
}

/**
 * Serves the registry's exposition on GET /metrics; with `ready`, also /readyz (200 or 503 with its JSON)
 * and /healthz (200 while the process answers). HEAD works as GET, other methods get 405, other paths
 * 404. Resolves with the bound port.
 */
export async function serveMetrics(
  metrics: { readonly registry: Registry },
  host: string,
  port: number,
  ready?: () => Promise<ReadyState>,
): Promise<{ port: number; close(): Promise<void> }> {
  const paths = ready ? ['/metrics', '/readyz', '/healthz'] : ['/metrics'];
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    if (!paths.includes(path)) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    // HEAD is answered as GET (Node leaves the body out); any other method is not for these paths.
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET, HEAD' }).end('method not allowed\n');
      return;
    }
    if (ready && path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (ready && path === '/readyz') {
      ready().then(
        (r) =>
          res.writeHead(r.ready ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(r)),
        (err: unknown) =>
          res
            .writeHead(503, { 'content-type': 'application/json' })
            .end(JSON.stringify({ ready: false, reason: err instanceof Error ? err.message : String(err) })),
      );
      return;
    }
    metrics.registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
      () => res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics unavailable\n'),
    );
  });
  server.requestTimeout = 10_000;
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', (err) =>
      reject(unavailable(`cannot serve metrics on ${host}:${port}: ${err.message}`)),
    );
    server.listen(port, host, () => resolveListen());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolveClose) => {
        server.closeAllConnections();
        server.close(() => resolveClose());
      }),
  };
}
