// The facade's HTTP surface (node:http or node:https): OCI distribution pull endpoints over FacadeService,
// plus /healthz, /readyz and /metrics. Composed names are read-only (every write is 405 UNSUPPORTED); other
// names go to the hosted repositories when configured (hosted.ts). Blobs are streamed with
// Content-Length, Docker-Content-Digest and single Range support (send-blob.ts); HEAD answers from the
// composed manifest's descriptor and never touches the bytes.
import { randomUUID } from 'node:crypto';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { ConnectionGuard, type ConnectionLimits, type DropReason } from '../../connection-guard.ts';
import { messageOf, unavailable } from '../../errors.ts';
import { joinHostPort } from '../../host-port.ts';
import type { HostedRegistry } from '../../hosted/registry.ts';
import { type Digest, isDigest } from '../../oci/digest.ts';
import type { AuthDecision, AuthNeed } from '../auth/client-auth.ts';
import type { FacadeService } from '../service.ts';
import type { Drain } from './drain.ts';
import { hostedNeeds, parseHostedRoute, serveCatalog, serveHosted } from './hosted.ts';
import type { FacadeMetrics } from './metrics.ts';
import { accepts } from './negotiate.ts';
import { errorBody, OciHttpError, ociErrorOf, type RouteKind } from './oci-errors.ts';
import type { RequestLog } from './request-log.ts';
import { parseRoute, type Route } from './route.ts';
import { sendBlob } from './send-blob.ts';
import { sendTags } from './send-tags.ts';

export interface Readiness {
  ready: boolean;
  reason?: string;
}

export interface FacadeHttpOptions {
  service: FacadeService;
  /** Repository-name prefix, normalised (see normalizePrefix). */
  prefix: string;
  logger: Logger;
  metrics: FacadeMetrics;
  registry: Registry;
  ready: () => Promise<Readiness>;
  /** Graceful shutdown: while draining, new requests get 503 and readiness is false. */
  drain?: Drain;
  /** Hosted repositories (push and pull) for names outside the facade's providers; unset: none. */
  hosted?: HostedRegistry;
  /** Client authentication for /v2/ (unset: anyone may pull). */
  auth?: {
    authorize(
      authorization: string | undefined,
      needs: readonly AuthNeed[],
      from: { client?: string; signal?: AbortSignal },
    ): Promise<AuthDecision>;
  };
}

const API_VERSION = 'registry/2.0';
const READ_METHODS = new Set(['GET', 'HEAD']);
const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export function createFacadeHandler(
  o: FacadeHttpOptions,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    void handle(o, req, res);
  };
}

async function handle(o: FacadeHttpOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = performance.now();
  const incomingId = req.headers['x-request-id'];
  const reqId =
    typeof incomingId === 'string' && /^[\w.-]{1,64}$/.test(incomingId) ? incomingId : randomUUID();
  res.setHeader('x-request-id', reqId);
  const method = req.method ?? 'GET';
  const log: RequestLog = { route: 'unknown', bytes: 0 };
  const abort = new AbortController();
  o.metrics.inFlight.inc();
  const leave = o.drain?.enter();
  res.once('close', () => {
    if (!res.writableFinished) abort.abort(unavailable('client went away'));
    o.metrics.inFlight.dec();
    leave?.();
    o.metrics.requests.inc({ route: log.route, method, status: String(res.statusCode) });
    const seconds = (performance.now() - started) / 1000;
    o.metrics.duration.observe({ route: log.route }, seconds);
    const entry = {
      reqId,
      method,
      path: req.url,
      status: res.statusCode,
      durationMs: Math.round(seconds * 1000),
      complete: res.writableFinished,
      ...log,
    };
    if (res.statusCode >= 500 || !res.writableFinished) o.logger.warn(entry, 'request');
    else o.logger.info(entry, 'request');
  });

  let kind: RouteKind = 'other';
  try {
    const pathname = pathOf(req.url);
    if (pathname.startsWith('/v2')) res.setHeader('docker-distribution-api-version', API_VERSION);
    const hostedRoute = o.hosted ? parseHostedRoute(pathname, o.prefix) : undefined;
    if (o.hosted && hostedRoute) {
      log.route = `hosted-${hostedRoute.kind}`;
      if (hostedRoute.kind === 'manifest' || hostedRoute.kind === 'blob') kind = hostedRoute.kind;
      if (o.drain?.draining) {
        res.setHeader('connection', 'close');
        throw new OciHttpError(503, 'UNAVAILABLE', 'the registry is shutting down; try again');
      }
      // All of a request's needs are judged at once, so a refusal's challenge names every scope missing.
      if (o.auth)
        await authorize(o.auth, req, res, hostedNeeds(hostedRoute, method, req.url), abort.signal, log);
      return await serveHosted({ ...o, hosted: o.hosted }, req, res, hostedRoute, abort.signal, log);
    }
    const route: Route = parseRoute(pathname, o.prefix);
    log.route = route.kind;
    if (o.drain?.draining && route.kind !== 'healthz' && route.kind !== 'metrics') {
      res.setHeader('connection', 'close');
      if (route.kind === 'readyz')
        return sendJson(res, method, 503, '{"ready":false,"reason":"shutting down"}');
      throw new OciHttpError(503, 'UNAVAILABLE', 'the facade is shutting down; try again');
    }
    if ('name' in route) {
      log.provider = route.name.provider;
      log.id = route.name.id;
    }
    if (route.kind === 'manifest' || route.kind === 'blob') kind = route.kind;
    if (o.auth && pathname.startsWith('/v2')) {
      const repository = 'repository' in route ? route.repository : undefined;
      const needs: AuthNeed[] = repository ? [{ repository, action: 'pull' }] : [];
      if (route.kind === 'catalog' && o.hosted) needs.push({ catalog: true });
      await authorize(o.auth, req, res, needs, abort.signal, log);
    }
    // The catalog lists the hosted repositories only. Composed names are no stored repositories: a
    // provider answers for one spec id at a time and has no list to give (SpecProvider has only
    // GetImageSpec), and the spec ids in a store are workspaces, not a client's to enumerate.
    if (route.kind === 'catalog' && o.hosted) {
      if (!READ_METHODS.has(method)) {
        res.setHeader('allow', 'GET, HEAD');
        throw new OciHttpError(405, 'UNSUPPORTED', `${method} is not supported here`);
      }
      return await serveCatalog(o.hosted, req, res, abort.signal);
    }
    if (pathname.startsWith('/v2') && WRITE_METHODS.has(method)) {
      throw new OciHttpError(405, 'UNSUPPORTED', `${method} is not supported: this registry is read-only`);
    }
    if (!READ_METHODS.has(method)) {
      res.setHeader('allow', 'GET, HEAD');
      throw new OciHttpError(405, 'UNSUPPORTED', `${method} is not supported`);
    }
    switch (route.kind) {
      case 'base':
        return sendJson(res, method, 200, '{}');
      case 'healthz':
        return sendJson(res, method, 200, '{"status":"ok"}');
      case 'readyz': {
        const r = await o.ready();
        return sendJson(res, method, r.ready ? 200 : 503, JSON.stringify(r));
      }
      case 'metrics': {
        const text = await o.registry.metrics();
        res.writeHead(200, {
          'content-type': o.registry.contentType,
          'content-length': Buffer.byteLength(text),
        });
        res.end(method === 'HEAD' ? undefined : text);
        return;
      }
      case 'manifest':
        return await serveManifest(o, req, res, route, abort.signal, log);
      case 'blob':
        return await serveBlob(o, req, res, route, abort.signal, log);
      case 'tags':
        return await serveTags(o, req, res, route);
      case 'upload':
        throw new OciHttpError(405, 'UNSUPPORTED', 'upload is not supported by this registry');
      case 'catalog':
        throw new OciHttpError(
          405,
          'UNSUPPORTED',
          'this registry lists no repositories: it serves only images composed from specs',
        );
      default:
        throw new OciHttpError(404, 'NAME_UNKNOWN', 'no such endpoint');
    }
  } catch (err) {
    log.error = messageOf(err);
    sendError(o, res, method, err, kind);
  }
}

/** Throws the 401 answer (with its challenges set on `res`) unless the request may go on. */
async function authorize(
  auth: NonNullable<FacadeHttpOptions['auth']>,
  req: IncomingMessage,
  res: ServerResponse,
  needs: readonly AuthNeed[],
  signal: AbortSignal,
  log: RequestLog,
): Promise<void> {
  // The socket's address: a password check waits in that client's line (see fair-turns.ts).
  const d = await auth.authorize(req.headers.authorization, needs, {
    client: req.socket.remoteAddress,
    signal,
  });
  if (d.ok) {
    log.user = d.user;
    return;
  }
  if (d.challenges.length > 0) res.setHeader('www-authenticate', d.challenges);
  throw new OciHttpError(d.status, d.code, d.message, d.detail);
}

function pathOf(url: string | undefined): string {
  const raw = url ?? '/';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  try {
    return decodeURIComponent(path);
  } catch {
    throw new OciHttpError(400, 'NAME_INVALID', 'malformed request path');
  }
}

function sendJson(res: ServerResponse, method: string, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(method === 'HEAD' ? undefined : body);
}

function sendError(
  o: FacadeHttpOptions,
  res: ServerResponse,
  method: string,
  err: unknown,
  kind: RouteKind,
): void {
  const e = ociErrorOf(err, kind);
  if (e.code === 'UNKNOWN') o.logger.error({ err }, 'unexpected error');
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = errorBody(e);
  res.writeHead(e.status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    ...(e.retryAfterSeconds !== undefined && { 'retry-after': String(e.retryAfterSeconds) }),
  });
  res.end(method === 'HEAD' ? undefined : body);
}

async function serveManifest(
  o: FacadeHttpOptions,
  req: IncomingMessage,
  res: ServerResponse,
  route: Extract<Route, { kind: 'manifest' }>,
  signal: AbortSignal,
  log: RequestLog,
): Promise<void> {
  if (route.reference.includes(':') && !isDigest(route.reference)) {
    throw new OciHttpError(400, 'DIGEST_INVALID', `invalid digest ${JSON.stringify(route.reference)}`);
  }
  const m = await o.service.manifest(route.name, route.reference, signal);
  log.digest = m.digest;
  log.source = 'composed';
  if (!accepts(req.headers.accept, m.mediaType)) {
    throw new OciHttpError(
      404,
      'MANIFEST_UNKNOWN',
      `the image is a ${m.mediaType}, which the Accept header does not include`,
    );
  }
  res.writeHead(200, {
    'content-type': m.mediaType,
    'content-length': m.bytes.byteLength,
    'docker-content-digest': m.digest,
    etag: `"${m.digest}"`,
  });
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  res.end(m.bytes);
  log.bytes = m.bytes.byteLength;
  o.metrics.bytesServed.inc({ source: 'manifest' }, m.bytes.byteLength);
}

/** `tags/list` of a composed repository. */
async function serveTags(
  o: FacadeHttpOptions,
  req: IncomingMessage,
  res: ServerResponse,
  route: Extract<Route, { kind: 'tags' }>,
): Promise<void> {
  sendTags(req, res, route.repository, await o.service.tags(route.name));
}

async function serveBlob(
  o: FacadeHttpOptions,
  req: IncomingMessage,
  res: ServerResponse,
  route: Extract<Route, { kind: 'blob' }>,
  signal: AbortSignal,
  log: RequestLog,
): Promise<void> {
  if (!isDigest(route.digest)) {
    throw new OciHttpError(400, 'DIGEST_INVALID', `invalid digest ${JSON.stringify(route.digest)}`);
  }
  const digest = route.digest as Digest;
  log.digest = digest;
  await sendBlob(o, req, res, await o.service.blob(route.name, digest, signal), signal, log);
}

export interface ListenOptions {
  host: string;
  port: number;
  tls?: { cert: Uint8Array; key: Uint8Array };
  connections: ConnectionLimits;
  onConnectionDropped?: (reason: DropReason) => void;
}

export interface RunningServer {
  server: Server;
  connections: ConnectionGuard;
  port: number;
  /** `http(s)://host:port` */
  url: string;
  /** Stops accepting, lets answers in progress finish for up to `graceMs`, then cuts them. */
  close(graceMs?: number): Promise<void>;
}

export async function listenFacade(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  options: ListenOptions,
): Promise<RunningServer> {
  // Partial headers are timed by Node; check them every second, not every 30.
  const serverOptions = { connectionsCheckingInterval: 1000 };
  const server: Server = options.tls
    ? createHttpsServer(
        { ...serverOptions, cert: Buffer.from(options.tls.cert), key: Buffer.from(options.tls.key) },
        handler,
      )
    : createHttpServer(serverOptions, handler);
  // Caps connections in all and per client; a connection has the header timeout for its first request.
  const connections = new ConnectionGuard(server, options.connections, {
    ...(options.onConnectionDropped && { onDrop: options.onConnectionDropped }),
  });
  server.headersTimeout = options.connections.headerTimeoutMs;
  server.on('request', (req, res) => res.once('close', connections.begin(req.socket)));
  // Node's request timeout bounds receiving the whole request, body included: a push of a big layer over
  // a slow link would be cut with a 408 however steadily its bytes came. A stalled body is cut by the
  // inactivity timeout below instead, and the guard caps connections. Idle sockets do not linger.
  server.requestTimeout = 0;
  server.keepAliveTimeout = 5_000;
  server.setTimeout(300_000, (socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    connections,
    port,
    url: `${options.tls ? 'https' : 'http'}://${joinHostPort(options.host, port)}`,
    close: (graceMs = 5000) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}
