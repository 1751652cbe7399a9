// A remote registryfacade.SpecProvider (ws-manager, or `strata spec serve`) asked over gRPC with a deadline.
// gRPC NOT_FOUND becomes NotFound; everything else keeps its kind through errorFromStatus.
import * as grpc from '@grpc/grpc-js';
import { notFound } from '../../errors.ts';
import type { SpecProvider } from '../../facade/providers/provider.ts';
import type { ImageSpec } from '../../facade/spec.ts';
import { specFromProto } from '../convert/image-spec.ts';
import { SpecProvider as SpecProviderService } from '../gen/registryfacade/provider_pb.ts';
import { callUnary } from '../grpc/client.ts';
import { MAX_MESSAGE_BYTES } from '../grpc/limits.ts';
import { errorFromStatus } from '../grpc/status.ts';

export interface GrpcTls {
  /** PEM of the CA that signed the provider's certificate (default: system roots). */
  ca?: Uint8Array;
  /** Client certificate and key for mutual TLS. */
  cert?: Uint8Array;
  key?: Uint8Array;
  /** Name the provider's certificate must carry, when it differs from the address's host. */
  serverName?: string;
}

export interface GrpcSpecProviderOptions {
  address: string;
  tls?: GrpcTls;
  timeoutMs?: number;
}

export class GrpcSpecProvider implements SpecProvider {
  readonly address: string;
  private readonly client: grpc.Client;
  private readonly timeoutMs: number;

  constructor(options: GrpcSpecProviderOptions) {
    this.address = options.address;
    this.timeoutMs = options.timeoutMs ?? 5000;
    const tls = options.tls;
    const creds = tls
      ? grpc.credentials.createSsl(
          tls.ca ? Buffer.from(tls.ca) : null,
          tls.key ? Buffer.from(tls.key) : null,
          tls.cert ? Buffer.from(tls.cert) : null,
        )
      : grpc.credentials.createInsecure();
    const channel: grpc.ChannelOptions = {
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    };
    if (tls?.serverName) channel['grpc.ssl_target_name_override'] = tls.serverName;
    this.client = new grpc.Client(options.address, creds, channel);
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
