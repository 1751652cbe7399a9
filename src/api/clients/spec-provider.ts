// A remote registryfacade.SpecProvider (ws-manager, or `strata spec serve`) asked over gRPC with a deadline.
// gRPC NOT_FOUND becomes NotFound; everything else keeps its kind through errorFromStatus.
import type * as grpc from '@grpc/grpc-js';
import { notFound } from '../../errors.ts';
import type { SpecProvider } from '../../facade/providers/provider.ts';
import type { ImageSpec } from '../../facade/spec.ts';
import type { ProxyEnvironment } from '../../registry/proxy.ts';
import { specFromProto } from '../convert/image-spec.ts';
import { SpecProvider as SpecProviderService } from '../gen/registryfacade/provider_pb.ts';
import { callUnary, createClient, type GrpcTls } from '../grpc/client.ts';
import { errorFromStatus } from '../grpc/status.ts';

/**
 * Longest pause between two connection attempts to a provider that is down. gRPC's default grows to
 * 120 s, and a call made during a pause fails at once without trying: after an outage of a few minutes,
 * workspaces would go on failing for up to two more after the provider is back. Attempts are made only
 * while calls ask for them, so a short pause costs a down provider little.
 */
const MAX_RECONNECT_BACKOFF_MS = 2000;

export interface GrpcSpecProviderOptions {
  address: string;
  tls?: GrpcTls;
  timeoutMs?: number;
  /** Proxy settings instead of the process's (tests). */
  proxy?: ProxyEnvironment;
}

export class GrpcSpecProvider implements SpecProvider {
  readonly address: string;
  private readonly client: grpc.Client;
  private readonly timeoutMs: number;

  constructor(options: GrpcSpecProviderOptions) {
    this.address = options.address;
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.client = createClient(
      options.address,
      { 'grpc.max_reconnect_backoff_ms': MAX_RECONNECT_BACKOFF_MS },
      options.tls,
      options.proxy,
    );
  }

  async getSpec(id: string, signal?: AbortSignal): Promise<ImageSpec> {
    const what = `spec provider ${this.address}: GetImageSpec ${JSON.stringify(id)}`;
    let res: Awaited<
      ReturnType<
        typeof callUnary<
          typeof SpecProviderService.method.getImageSpec.input,
          typeof SpecProviderService.method.getImageSpec.output
        >
      >
    >;
    try {
      res = await callUnary(
        this.client,
        SpecProviderService.method.getImageSpec,
        { id },
        { signal, timeoutMs: this.timeoutMs },
      );
    } catch (err) {
      throw errorFromStatus(err, what);
    }
    if (!res.spec) throw notFound(`${what}: answer has no spec`);
    return specFromProto(res.spec);
  }

  close(): void {
    this.client.close();
  }
}
