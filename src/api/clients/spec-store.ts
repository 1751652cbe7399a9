// Strata's own spec store on another machine (`strata spec serve --writable`, or a facade or `strata up`
// serving theirs with writes), asked over gRPC with a deadline: what `strata spec put|rm|ls --address` do.
import type * as grpc from '@grpc/grpc-js';
import { errorKind, unimplemented } from '../../errors.ts';
import type { ImageSpec } from '../../facade/spec.ts';
import { specToProto } from '../convert/image-spec.ts';
import { SpecStore as SpecStoreService } from '../gen/strata/specstore/v1/specstore_pb.ts';
import { callUnary, createClient, type GrpcTls } from '../grpc/client.ts';
import { errorFromStatus } from '../grpc/status.ts';

export class GrpcSpecStore {
  readonly address: string;
  private readonly client: grpc.Client;
  private readonly timeoutMs: number;

  constructor(address: string, options: { timeoutMs?: number; tls?: GrpcTls } = {}) {
    this.address = address;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.client = createClient(address, {}, options.tls);
  }

  async put(id: string, spec: ImageSpec): Promise<void> {
    await this.call('PutImageSpec', id, () =>
      callUnary(
        this.client,
        SpecStoreService.method.putImageSpec,
        { id, spec: specToProto(spec) },
        { timeoutMs: this.timeoutMs },
      ),
    );
  }

  async remove(id: string): Promise<void> {
    await this.call('DeleteImageSpec', id, () =>
      callUnary(this.client, SpecStoreService.method.deleteImageSpec, { id }, { timeoutMs: this.timeoutMs }),
    );
  }

  async list(): Promise<string[]> {
    const res = await this.call('ListImageSpecs', undefined, () =>
      callUnary(this.client, SpecStoreService.method.listImageSpecs, {}, { timeoutMs: this.timeoutMs }),
    );
    return res.ids;
  }

  close(): void {
    this.client.close();
  }

  private async call<T>(method: string, id: string | undefined, f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (err) {
      const of = id === undefined ? '' : ` ${JSON.stringify(id)}`;
      const e = errorFromStatus(err, `spec store ${this.address}: ${method}${of}`);
      // A listener that serves the store for reading only (the default) does not know the method; a
      // listing is refused there too, so the answer names what was asked rather than "writes".
      if (errorKind(e) === 'Unimplemented') {
        const refuses = method === 'ListImageSpecs' ? 'does not list its specs' : 'does not take writes';
        throw unimplemented(
          `spec store ${this.address} ${refuses} (serve it with \`strata spec serve --writable\`, or set specProviders.store.writable)`,
          { cause: e },
        );
      }
      throw e;
    }
  }
}
