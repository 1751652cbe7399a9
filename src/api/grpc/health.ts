// The standard gRPC health service (grpc.health.v1): Check, Watch and List over the serving status of
// the server ("") and of each service. Shutdown turns everything NOT_SERVING and ends the watches, so
// watchers learn of it and a graceful stop does not wait on their streams.
import { notFound } from '../../errors.ts';
import {
  Health,
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus as Serving,
} from '../gen/grpc/health/v1/health_pb.ts';
import { implement, type ServiceRegistration } from './service.ts';

type Status = HealthCheckResponse['status'];

interface Watcher {
  readonly service: string;
  wake(): void;
}

export class HealthStatuses {
  readonly #statuses = new Map<string, Status>();
  readonly #watchers = new Set<Watcher>();
  #closed = false;

  /** Every name (and "" for the whole server) starts SERVING. */
  constructor(services: readonly string[]) {
    this.#statuses.set('', Serving.SERVING);
    for (const name of services) this.#statuses.set(name, Serving.SERVING);
  }

  set(service: string, status: Status): void {
    this.#statuses.set(service, status);
    for (const w of this.#watchers) if (w.service === service) w.wake();
  }

  /** NOT_SERVING for every name; every Watch stream sends that and ends. */
  shutdown(): void {
    for (const name of this.#statuses.keys()) this.set(name, Serving.NOT_SERVING);
    this.#closed = true;
    for (const w of this.#watchers) w.wake();
  }

  registration(): ServiceRegistration {
    return implement(Health, {
      check: (req) => {
        const status = this.#statuses.get(req.service);
        if (status === undefined) throw notFound(`unknown service ${JSON.stringify(req.service)}`);
        return { status };
      },
      list: () => ({
        statuses: Object.fromEntries([...this.#statuses].map(([name, status]) => [name, { status }])),
      }),
      watch: (req, ctx) => this.#watch(req.service, ctx.signal),
    });
  }

  async *#watch(service: string, signal: AbortSignal): AsyncGenerator<{ status: Status }> {
    let changed = true;
    let wake: (() => void) | undefined;
    const watcher: Watcher = {
      service,
      wake: () => {
        changed = true;
        wake?.();
      },
    };
    const onAbort = () => wake?.();
    this.#watchers.add(watcher);
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      let last: Status | undefined;
      for (;;) {
        if (changed) {
          changed = false;
          const status = this.#statuses.get(service) ?? Serving.SERVICE_UNKNOWN;
          if (status !== last) yield { status };
          last = status;
        }
        if (this.#closed || signal.aborted) return;
        await new Promise<void>((resolve) => {
          wake = resolve;
          if (changed || this.#closed || signal.aborted) resolve();
        });
        wake = undefined;
      }
    } finally {
      this.#watchers.delete(watcher);
      signal.removeEventListener('abort', onAbort);
    }
  }
}
