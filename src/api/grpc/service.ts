// Generic glue between protobuf-es service descriptors and our HTTP/2 transport (transport/server-call.ts):
// typed handlers written as plain functions and async iterables, turned into call handlers keyed by
// method path. Every call gets one log line and one error mapping (status.ts).
import { performance } from 'node:perf_hooks';
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
import { internal, messageOf, unimplemented } from '../../errors.ts';
import { methodPath } from '../transport/framing.ts';
import type { RequestMetadata, ServerCall } from '../transport/server-call.ts';
import type { CallTurns } from '../transport/turns.ts';
import { type CallStatus, statusOf } from './status.ts';

export type { RequestMetadata };

/** What a handler learns about the call besides its request. */
export interface CallContext {
  /** The full method path, `/<package>.<Service>/<Method>`. */
  readonly method: string;
  /** The request metadata (headers). */
  readonly metadata: RequestMetadata;
  /** Aborted when the client cancels or the deadline passes; pass it to anything long-running. */
  readonly signal: AbortSignal;
  readonly peer: string;
  /**
   * Ends the call now with `err`'s status, even while a response waits for the client to make room for
   * it (the transport then resets the stream, dropping what waits): for a stream that must not be held
   * by a client that stopped reading. What the handler does afterwards is not sent; a streaming handler's
   * iterable is closed once the call's last write gives up.
   */
  fail(err: unknown): void;
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

type AnyUnary = (
  request: Message,
  ctx: CallContext,
) => Promise<Message | EncodedMessage> | Message | EncodedMessage;
type AnyServerStream = (request: Message, ctx: CallContext) => AsyncIterable<Message>;
type AnyClientStream = (requests: AsyncIterable<Message>, ctx: CallContext) => Promise<Message>;
type AnyBidi = (requests: AsyncIterable<Message>, ctx: CallContext) => AsyncIterable<Message>;

function isPromiseLike<T>(value: PromiseLike<T> | T): value is PromiseLike<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}

const msSince = (start: number): number => Math.round((performance.now() - start) * 10) / 10;

/**
 * The context of one call, built lazily: most unary calls never look at their signal or peer, and an
 * AbortController (plus the Error given as its reason) per call was a measurable share of a small call.
 */
class LazyCallContext implements CallContext {
  readonly method: string;
  readonly #call: ServerCall;
  #controller: AbortController | undefined;
  /** Set once the handler has finished; a cancel after that is only the stream closing. */
  finished = false;
  readonly #fail: (err: unknown) => void;

  constructor(call: ServerCall, fail: (err: unknown) => void) {
    this.method = call.path;
    this.#call = call;
    this.#fail = fail;
    call.onCancel((reason) => {
      if (!this.finished) this.#controller?.abort(reason);
    });
  }

  get metadata(): RequestMetadata {
    return this.#call.metadata;
  }

  get cancelled(): boolean {
    return this.#call.cancelled !== undefined;
  }

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      const reason = this.#call.cancelled;
      if (reason) this.#controller.abort(reason);
    }
    return this.#controller.signal;
  }

  get peer(): string {
    return this.#call.peer;
  }

  fail(err: unknown): void {
    this.#fail(err);
  }
}

/** Codes that mean the server, not the caller, is at fault. */
const serverFaults = new Set([grpc.status.INTERNAL, grpc.status.UNKNOWN, grpc.status.DATA_LOSS]);

/** Serves one call: reads its request(s), runs the handler, sends the response(s) and the status. */
export type CallHandler = (call: ServerCall) => void;

/**
 * Turns registrations into call handlers keyed by method path. Owns the per-call concerns: decoding,
 * context, cancellation, error mapping and the log line (method, code, duration).
 */
export class ServiceAdapter {
  readonly #logger: Logger;
  readonly #turns: CallTurns;

  constructor(logger: Logger, turns: CallTurns) {
    this.#logger = logger;
    this.#turns = turns;
  }

  adapt(reg: ServiceRegistration): Map<string, CallHandler> {
    const handlers = new Map<string, CallHandler>();
    for (const method of reg.service.methods) {
      const fn = reg.impl[method.localName];
      handlers.set(
        methodPath(method),
        typeof fn === 'function' ? this.#handler(method, fn) : this.#unimplemented(method),
      );
    }
    return handlers;
  }

  #handler(method: DescMethod, fn: unknown): CallHandler {
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

  #unimplemented(method: DescMethod): CallHandler {
    return (call) => {
      const { finish } = this.#begin(call);
      const s = finish(unimplemented(`method ${method.name} not implemented`));
      if (s) call.end(s.code, s.details);
    };
  }

  #begin(call: ServerCall) {
    const start = performance.now();
    const ctx = new LazyCallContext(call, (err) => {
      const s = finish(err);
      if (s) call.abort(s.code, s.details);
    });
    let finished = false;
    /** Logs the outcome once; returns the status to send for a failure (none when the client is gone). */
    const finish = (err?: unknown): CallStatus | undefined => {
      if (finished) return undefined;
      finished = true;
      ctx.finished = true;
      const logger = this.#logger;
      const path = call.path;
      if (err === undefined) {
        if (logger.isLevelEnabled('debug')) {
          logger.debug({ method: path, code: grpc.status[grpc.status.OK], ms: msSince(start) }, 'grpc call');
        }
        return undefined;
      }
      if (ctx.cancelled) {
        // The client is gone or the deadline passed (the transport answered that); not our failure.
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
    const fail = (err: unknown): void => {
      const s = finish(err);
      if (s) call.end(s.code, s.details);
    };
    return { ctx, finish, fail };
  }

  #unary(method: DescMethod, fn: AnyUnary): CallHandler {
    const decode = decoder(method.input);
    const encode = encoder(method);
    return (call) => {
      const { ctx, finish, fail } = this.#begin(call);
      const succeed = (result: Message | EncodedMessage): void => {
        try {
          call.sendUnary(encode(result));
          finish();
        } catch (err) {
          fail(err);
        }
      };
      call.receiveOne(
        (bytes) =>
          this.#turns.run(() => {
            // Gone while waiting for its turn: nobody is left to answer.
            if (call.cancelled) return void finish(call.cancelled);
            let result: ReturnType<AnyUnary>;
            try {
              result = fn(decode(bytes), ctx);
            } catch (err) {
              fail(err);
              return;
            }
            // Most handlers (Images.Get, List, …) answer synchronously: respond in the same turn instead of
            // after an extra promise hop.
            if (isPromiseLike(result)) result.then(succeed, fail);
            else succeed(result);
          }),
        fail,
      );
    };
  }

  #serverStream(method: DescMethod, fn: AnyServerStream): CallHandler {
    const decode = decoder(method.input);
    const encode = encoder(method);
    return (call) => {
      const { ctx, finish, fail } = this.#begin(call);
      call.receiveOne((bytes) => {
        void (async () => {
          try {
            await writeAll(call, encode, fn(decode(bytes), ctx));
            finish();
            call.end(grpc.status.OK);
          } catch (err) {
            fail(err);
          }
        })();
      }, fail);
    };
  }

  #clientStream(method: DescMethod, fn: AnyClientStream): CallHandler {
    const decode = decoder(method.input);
    const encode = encoder(method);
    return (call) => {
      const { ctx, finish, fail } = this.#begin(call);
      void (async () => {
        try {
          call.sendUnary(encode(await fn(decodeAll(call.requests(), decode), ctx)));
          finish();
        } catch (err) {
          fail(err);
        }
      })();
    };
  }

  #bidi(method: DescMethod, fn: AnyBidi): CallHandler {
    const decode = decoder(method.input);
    const encode = encoder(method);
    return (call) => {
      const { ctx, finish, fail } = this.#begin(call);
      void (async () => {
        try {
          await writeAll(call, encode, fn(decodeAll(call.requests(), decode), ctx));
          finish();
          call.end(grpc.status.OK);
        } catch (err) {
          fail(err);
        }
      })();
    };
  }
}

/** Request bytes to a message; a malformed one fails the call as grpc-go does (INTERNAL). */
function decoder(schema: DescMessage): (bytes: Uint8Array) => Message {
  return (bytes) => {
    try {
      return fromBinary(schema, bytes);
    } catch (err) {
      throw internal(`error unmarshalling request: ${messageOf(err)}`);
    }
  };
}

/** A handler's answer to bytes: encoded answers go out as they are, anything else through the schema. */
function encoder(method: DescMethod): (value: Message | EncodedMessage) => Uint8Array {
  return (value) => {
    if (value instanceof EncodedMessage) {
      if (value.schema !== method.output) {
        throw new Error(`${method.name} answered with an encoded ${value.schema.typeName}`);
      }
      return value.bytes;
    }
    return toBinary(method.output, create(method.output, value));
  };
}

/** Writes every response, waiting whenever the stream's buffer is full. */
async function writeAll(
  call: ServerCall,
  encode: (value: Message) => Uint8Array,
  responses: AsyncIterable<Message>,
): Promise<void> {
  for await (const response of responses) {
    if (!call.write(encode(response))) await call.drained();
  }
  if (call.cancelled) throw call.cancelled;
}

async function* decodeAll(
  requests: AsyncIterable<Buffer>,
  decode: (bytes: Uint8Array) => Message,
): AsyncGenerator<Message> {
  for await (const bytes of requests) yield decode(bytes);
}
