// Generic glue between protobuf-es service descriptors and grpc-js: a ServiceDefinition per
// DescService (binary codec from the schema), and typed handlers written as plain async functions
// and iterables. Every call gets one log line and one error mapping (status.ts).
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  fromBinary,
  type Message,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { unimplemented } from '../../errors.ts';
import { type CallStatus, serviceError, statusOf } from './status.ts';

/** What a handler learns about the call besides its request. */
export interface CallContext {
  /** The full method path, `/<package>.<Service>/<Method>`. */
  readonly method: string;
  /** The request metadata (headers). */
  readonly metadata: grpc.Metadata;
  /** Aborted when the client cancels or the deadline passes; pass it to anything long-running. */
  readonly signal: AbortSignal;
  readonly peer: string;
}

/**
 * A response its handler encoded itself, for hot paths where building protobuf-es messages costs more
 * than the call (Images.Get, List). `bytes` must be an encoding of `schema`, the method's output.
 */
export class EncodedMessage<D extends DescMessage = DescMessage> {
  readonly schema: D;
  readonly bytes: Uint8Array;

  constructor(schema: D, bytes: Uint8Array) {
    this.schema = schema;
    this.bytes = bytes;
  }
}

export type UnaryHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  ctx: CallContext,
) => Promise<MessageInitShape<O> | EncodedMessage<O>> | MessageInitShape<O> | EncodedMessage<O>;

export type ServerStreamHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  ctx: CallContext,
) => AsyncIterable<MessageInitShape<O>>;

export type ClientStreamHandler<I extends DescMessage, O extends DescMessage> = (
  requests: AsyncIterable<MessageShape<I>>,
  ctx: CallContext,
) => Promise<MessageInitShape<O>>;

export type BidiStreamHandler<I extends DescMessage, O extends DescMessage> = (
  requests: AsyncIterable<MessageShape<I>>,
  ctx: CallContext,
) => AsyncIterable<MessageInitShape<O>>;

/** The handler type that fits one method of a generated service. */
export type MethodHandler<M> = M extends {
  methodKind: infer K;
  input: infer I extends DescMessage;
  output: infer O extends DescMessage;
}
  ? K extends 'unary'
    ? UnaryHandler<I, O>
    : K extends 'server_streaming'
      ? ServerStreamHandler<I, O>
      : K extends 'client_streaming'
        ? ClientStreamHandler<I, O>
        : BidiStreamHandler<I, O>
  : never;

/** An implementation of a generated service; methods left out answer UNIMPLEMENTED. */
export type ServiceImpl<S extends DescService> = {
  [K in keyof S['method']]?: MethodHandler<S['method'][K]>;
};

/** A service descriptor with its (type-checked) implementation, ready to be served. */
export interface ServiceRegistration {
  readonly service: DescService;
  readonly impl: Readonly<Record<string, unknown>>;
}

export function implement<S extends DescService>(service: S, impl: ServiceImpl<S>): ServiceRegistration {
  for (const key of Object.keys(impl)) {
    if (!service.methods.some((m) => m.localName === key)) {
      throw new Error(`${service.typeName} has no method ${key}`);
    }
  }
  return { service, impl };
}

export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

function codec<D extends DescMessage>(schema: D) {
  return {
    serialize(value: MessageInitShape<D> | EncodedMessage): Buffer {
      if (value instanceof EncodedMessage) {
        if (value.schema !== schema) {
          throw new Error(`an encoded ${value.schema.typeName} cannot be sent as ${schema.typeName}`);
        }
        const b = value.bytes;
        return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
      }
      const bytes = toBinary(schema, create(schema, value));
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    },
    deserialize(bytes: Buffer): MessageShape<D> {
      return fromBinary(schema, bytes);
    },
  };
}

/**
 * The grpc-js definition of a service, keyed by the methods' local names (`version`,
 * `serverReflectionInfo`). Works for servers and for `grpc.makeGenericClientConstructor`.
 */
export function serviceDefinition(service: DescService): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<Message, Message>> = {};
  for (const method of service.methods) {
    const input = codec(method.input);
    const output = codec(method.output);
    def[method.localName] = {
      path: methodPath(method),
      requestStream: method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming',
      responseStream: method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming',
      requestSerialize: input.serialize,
      requestDeserialize: input.deserialize,
      responseSerialize: output.serialize,
      responseDeserialize: output.deserialize,
    };
  }
  return def;
}

type AnyUnary = (
  request: Message,
  ctx: CallContext,
) => Promise<Message | EncodedMessage> | Message | EncodedMessage;
type AnyServerStream = (request: Message, ctx: CallContext) => AsyncIterable<Message>;
type AnyClientStream = (requests: AsyncIterable<Message>, ctx: CallContext) => Promise<Message>;
type AnyBidi = (requests: AsyncIterable<Message>, ctx: CallContext) => AsyncIterable<Message>;

interface CallSurface {
  readonly metadata: grpc.Metadata;
  getPeer(): string;
  on(event: 'cancelled', listener: () => void): unknown;
}

function isPromiseLike<T>(value: PromiseLike<T> | T): value is PromiseLike<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}

const msSince = (start: number): number => Math.round((performance.now() - start) * 10) / 10;

/**
 * The context of one call, built lazily: most unary calls never look at their signal or peer, and an
 * AbortController (plus the Error given as its reason) per call was a measurable share of a small call.
 * grpc-js reports every stream close as 'cancelled', also after the response was sent; only a cancel
 * before the handler finished counts.
 */
class LazyCallContext implements CallContext {
  readonly method: string;
  readonly metadata: grpc.Metadata;
  /** Set once the handler has finished; later 'cancelled' events are the stream closing. */
  finished = false;
  cancelled = false;
  readonly #call: CallSurface;
  #controller: AbortController | undefined;

  constructor(method: string, call: CallSurface) {
    this.method = method;
    this.metadata = call.metadata;
    this.#call = call;
    call.on('cancelled', () => {
      if (this.finished || this.cancelled) return;
      this.cancelled = true;
      this.#controller?.abort(cancelledByClient());
    });
  }

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.cancelled) this.#controller.abort(cancelledByClient());
    }
    return this.#controller.signal;
  }

  get peer(): string {
    return this.#call.getPeer();
  }
}

const cancelledByClient = (): Error => new Error('call cancelled by the client');

/** Codes that mean the server, not the caller, is at fault. */
const serverFaults = new Set([grpc.status.INTERNAL, grpc.status.UNKNOWN, grpc.status.DATA_LOSS]);

/**
 * Turns registrations into grpc-js definitions and handlers. Owns the per-call concerns: context,
 * cancellation, error mapping and the log line (method, code, duration).
 */
export class ServiceAdapter {
  readonly #logger: Logger;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  adapt(reg: ServiceRegistration): {
    definition: grpc.ServiceDefinition;
    implementation: grpc.UntypedServiceImplementation;
  } {
    const implementation: grpc.UntypedServiceImplementation = {};
    for (const method of reg.service.methods) {
      const fn = reg.impl[method.localName];
      implementation[method.localName] =
        typeof fn === 'function' ? this.#handler(method, fn) : this.#unimplemented(method);
    }
    return { definition: serviceDefinition(reg.service), implementation };
  }

  #handler(method: DescMethod, fn: unknown): grpc.UntypedHandleCall {
    switch (method.methodKind) {
      case 'unary':
        return this.#unary(method, fn as AnyUnary);
      case 'server_streaming':
        return this.#serverStream(method, fn as AnyServerStream);
      case 'client_streaming':
        return this.#clientStream(method, fn as AnyClientStream);
      case 'bidi_streaming':
        return this.#bidi(method, fn as AnyBidi);
    }
  }

  #unimplemented(method: DescMethod): grpc.UntypedHandleCall {
    const error = unimplemented(`method ${method.name} not implemented`);
    if (method.methodKind === 'unary') {
      return this.#unary(method, () => Promise.reject(error));
    }
    if (method.methodKind === 'client_streaming') {
      return this.#clientStream(method, () => Promise.reject(error));
    }
    // Streaming responses: an iterable that fails at once.
    const failing = (): AsyncIterable<Message> => ({
      [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(error) }),
    });
    return method.methodKind === 'server_streaming'
      ? this.#serverStream(method, failing)
      : this.#bidi(method, failing);
  }

  #begin(method: DescMethod, call: CallSurface) {
    const start = performance.now();
    const path = methodPath(method);
    const ctx = new LazyCallContext(path, call);
    let finished = false;
    const finish = (err?: unknown): CallStatus | undefined => {
      if (finished) return undefined;
      finished = true;
      ctx.finished = true;
      const logger = this.#logger;
      if (err === undefined) {
        if (logger.isLevelEnabled('debug')) {
          logger.debug({ method: path, code: grpc.status[grpc.status.OK], ms: msSince(start) }, 'grpc call');
        }
        return undefined;
      }
      if (ctx.cancelled) {
        // The client is gone; nothing can be sent, and a cancel is not our failure.
        if (logger.isLevelEnabled('debug')) {
          logger.debug(
            { method: path, code: grpc.status[grpc.status.CANCELLED], ms: msSince(start) },
            'grpc call',
          );
        }
        return undefined;
      }
      const s = statusOf(err);
      const fields = { method: path, code: grpc.status[s.code], ms: msSince(start) };
      if (s.unexpected) {
        logger.error({ ...fields, err }, 'grpc call failed with an unexpected error');
      } else if (serverFaults.has(s.code)) {
        logger.error({ ...fields, details: s.details }, 'grpc call');
      } else {
        logger.info({ ...fields, details: s.details }, 'grpc call');
      }
      return s;
    };
    return { ctx, finish };
  }

  #unary(method: DescMethod, fn: AnyUnary): grpc.handleUnaryCall<Message, Message> {
    return (call, callback) => {
      const { ctx, finish } = this.#begin(method, call);
      const fail = (err: unknown): void => {
        const s = finish(err);
        if (s) callback(serviceError(s));
      };
      const succeed = (result: Message | EncodedMessage): void => {
        try {
          // grpc-js hands the value to the codec's serialize, which sends encoded bytes as they are.
          let out: Message;
          if (result instanceof EncodedMessage) {
            if (result.schema !== method.output) {
              throw new Error(`${method.name} answered with an encoded ${result.schema.typeName}`);
            }
            out = result as unknown as Message;
          } else {
            out = create(method.output, result);
          }
          finish();
          callback(null, out);
        } catch (err) {
          fail(err);
        }
      };
      let result: ReturnType<AnyUnary>;
      try {
        result = fn(call.request, ctx);
      } catch (err) {
        fail(err);
        return;
      }
      // Most handlers (Images.Get, List, …) answer synchronously: respond in the same turn instead of
      // after an extra promise hop.
      if (isPromiseLike(result)) result.then(succeed, fail);
      else succeed(result);
    };
  }

  #serverStream(method: DescMethod, fn: AnyServerStream): grpc.handleServerStreamingCall<Message, Message> {
    return (call) => {
      const { ctx, finish } = this.#begin(method, call);
      void (async () => {
        try {
          await writeAll(call, method.output, fn(call.request, ctx), ctx.signal);
          finish();
          call.end();
        } catch (err) {
          const s = finish(err);
          if (s) call.emit('error', serviceError(s));
        }
      })();
    };
  }

  #clientStream(method: DescMethod, fn: AnyClientStream): grpc.handleClientStreamingCall<Message, Message> {
    return (call, callback) => {
      const { ctx, finish } = this.#begin(method, call);
      void (async () => {
        try {
          const out = create(method.output, await fn(readAll(call, ctx.signal), ctx));
          finish();
          callback(null, out);
        } catch (err) {
          const s = finish(err);
          if (s) callback(serviceError(s));
        }
      })();
    };
  }

  #bidi(method: DescMethod, fn: AnyBidi): grpc.handleBidiStreamingCall<Message, Message> {
    return (call) => {
      const { ctx, finish } = this.#begin(method, call);
      void (async () => {
        try {
          await writeAll(call, method.output, fn(readAll(call, ctx.signal), ctx), ctx.signal);
          finish();
          call.end();
        } catch (err) {
          const s = finish(err);
          if (s) call.emit('error', serviceError(s));
        }
      })();
    };
  }
}

/** Writes every response, waiting for 'drain' when grpc-js's buffer is full. */
async function writeAll(
  call: grpc.ServerWritableStream<Message, Message> | grpc.ServerDuplexStream<Message, Message>,
  output: DescMessage,
  responses: AsyncIterable<Message>,
  signal: AbortSignal,
): Promise<void> {
  for await (const response of responses) {
    signal.throwIfAborted();
    if (!call.write(create(output, response))) {
      await once(call, 'drain', { signal });
    }
  }
  signal.throwIfAborted();
}

/**
 * The request stream as an async iterable. It does not destroy the call when the handler stops
 * reading early (responses may still follow), and it stops when the call is cancelled.
 */
async function* readAll(call: Readable, signal: AbortSignal): AsyncGenerator<Message> {
  const it: AsyncIterator<Message> = call.iterator({ destroyOnReturn: false });
  const aborted = new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
  aborted.catch(() => {});
  for (;;) {
    const r = await Promise.race([it.next(), aborted]);
    if (r.done) return;
    yield r.value;
  }
}
