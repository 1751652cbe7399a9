// Typed gRPC calls from protobuf-es method descriptors over a plain grpc-js Client: used by Strata's
// own clients (the CLI, the facade asking spec providers) and by tests. Failures reject with the
// grpc-js ServiceError (code, details); map them with errorFromStatus where domain code needs them.
import {
  create,
  type DescMessage,
  type DescMethod,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import type { ProxyEnvironment } from '../../registry/proxy.ts';
import { methodPath } from '../transport/framing.ts';
import { MAX_MESSAGE_BYTES } from './limits.ts';
import { channelRoute } from './proxy-route.ts';

/** Unary calls get this deadline unless the caller sets one. */
export const DEFAULT_UNARY_TIMEOUT_MS = 30_000;

export interface GrpcCallOptions {
  metadata?: grpc.Metadata;
  /** Cancels the call when aborted. */
  signal?: AbortSignal;
  /** Deadline relative to the start of the call. */
  timeoutMs?: number;
}

type Method<K extends DescMethod['methodKind'], I extends DescMessage, O extends DescMessage> = DescMethod & {
  methodKind: K;
  input: I;
  output: O;
};

/** TLS to a server: whom to trust, and the certificate to show it when it asks (mTLS). */
export interface GrpcTls {
  /** PEM of the CA that signed the server's certificate (default: system roots). */
  ca?: Uint8Array;
  /** Client certificate and key for mutual TLS. */
  cert?: Uint8Array;
  key?: Uint8Array;
  /** Name the server's certificate must carry, when it differs from the address's host. */
  serverName?: string;
}

/**
 * A client for `address` (`unix:///path` or `host:port`) with 16 MiB messages: insecure, or over TLS when
 * `tls` is given. A TCP address is reached through the proxy HTTPS_PROXY names unless NO_PROXY exempts it
 * (see proxy-route.ts); `proxy` replaces the process's settings (tests).
 */
export function createClient(
  address: string,
  options: grpc.ChannelOptions = {},
  tls?: GrpcTls,
  proxy?: ProxyEnvironment,
): grpc.Client {
  const route = channelRoute(address, proxy);
  const creds = tls
    ? grpc.credentials.createSsl(
        tls.ca ? Buffer.from(tls.ca) : null,
        tls.key ? Buffer.from(tls.key) : null,
        tls.cert ? Buffer.from(tls.cert) : null,
      )
    : grpc.credentials.createInsecure();
  return new grpc.Client(route.target, creds, {
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    ...(tls?.serverName && { 'grpc.ssl_target_name_override': tls.serverName }),
    ...options,
    ...route.options,
  });
}

/** Metadata carrying a containerd namespace (and any further pairs). */
export function metadataWith(pairs: Record<string, string>): grpc.Metadata {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(pairs)) md.set(k, v);
  return md;
}

function serializer<D extends DescMessage>(schema: D) {
  return (value: MessageInitShape<D>): Buffer => {
    const bytes = toBinary(schema, create(schema, value));
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer<D extends DescMessage>(schema: D) {
  return (bytes: Buffer): MessageShape<D> => fromBinary(schema, bytes);
}

function callOptions(opts: GrpcCallOptions, defaultTimeoutMs?: number): grpc.CallOptions {
  const timeout = opts.timeoutMs ?? defaultTimeoutMs;
  return timeout === undefined ? {} : { deadline: Date.now() + timeout };
}

function linkSignal(call: grpc.Call, signal: AbortSignal | undefined): void {
  if (!signal) return;
  if (signal.aborted) call.cancel();
  else signal.addEventListener('abort', () => call.cancel(), { once: true });
}

export function callUnary<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: Method<'unary', I, O>,
  request: MessageInitShape<I>,
  opts: GrpcCallOptions = {},
): Promise<MessageShape<O>> {
  return new Promise((resolve, reject) => {
    const call = client.makeUnaryRequest(
      methodPath(method),
      serializer(method.input),
      deserializer(method.output),
      request,
      opts.metadata ?? new grpc.Metadata(),
      callOptions(opts, DEFAULT_UNARY_TIMEOUT_MS),
      (err, value) => (err || value === undefined ? reject(err) : resolve(value)),
    );
    linkSignal(call, opts.signal);
  });
}

export async function* callServerStream<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: Method<'server_streaming', I, O>,
  request: MessageInitShape<I>,
  opts: GrpcCallOptions = {},
): AsyncGenerator<MessageShape<O>> {
  const call = client.makeServerStreamRequest(
    methodPath(method),
    serializer(method.input),
    deserializer(method.output),
    request,
    opts.metadata ?? new grpc.Metadata(),
    callOptions(opts),
  );
  linkSignal(call, opts.signal);
  try {
    for await (const message of call) yield message as MessageShape<O>;
  } finally {
    // Stopping early must not leave the stream open on the server.
    call.cancel();
  }
}

export interface BidiCall<I extends DescMessage, O extends DescMessage> {
  /** Sends one request; resolves once grpc-js has buffered it (honours backpressure). */
  send(request: MessageInitShape<I>): Promise<void>;
  /** Half-closes: no more requests. */
  end(): void;
  responses: AsyncIterable<MessageShape<O>>;
  cancel(): void;
}

export function callBidi<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: Method<'bidi_streaming', I, O>,
  opts: GrpcCallOptions = {},
): BidiCall<I, O> {
  const call = client.makeBidiStreamRequest(
    methodPath(method),
    serializer(method.input),
    deserializer(method.output),
    opts.metadata ?? new grpc.Metadata(),
    callOptions(opts),
  );
  linkSignal(call, opts.signal);
  // grpc-js never calls a write's callback once the call has failed, so pending sends are settled
  // from the final status instead of waiting forever.
  let final: grpc.StatusObject | undefined;
  const pending = new Set<(status: grpc.StatusObject) => void>();
  const ended = (s: grpc.StatusObject) =>
    Object.assign(new Error(s.code === grpc.status.OK ? 'call already finished' : s.details), {
      code: s.code,
      details: s.details,
      metadata: s.metadata,
    });
  call.on('status', (s: grpc.StatusObject) => {
    final = s;
    for (const fail of pending) fail(s);
    pending.clear();
  });
  return {
    send: (request) =>
      new Promise((resolve, reject) => {
        if (final) return reject(ended(final));
        const fail = (s: grpc.StatusObject) => reject(ended(s));
        pending.add(fail);
        call.write(request, (err: Error | null | undefined) => {
          pending.delete(fail);
          if (err) reject(err);
          else resolve();
        });
      }),
    end: () => call.end(),
    cancel: () => call.cancel(),
    responses: (async function* () {
      for await (const message of call) yield message as MessageShape<O>;
    })(),
  };
}
