// The HTTP layer under the registry client: one undici Agent (pooled connections, timeouts, extra CAs,
// redirects that drop Authorization across origins), the proxies the environment names (see proxy.ts),
// bounded retries with backoff, and network failures turned into the error taxonomy. It knows nothing of
// registries or auth.
import type { IncomingHttpHeaders } from 'node:http';
import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import type { Dispatcher, interceptors, ProxyAgent } from 'undici';
import { aborted, dataLoss, deadlineExceeded, messageOf, resourceExhausted, unavailable } from '../errors.ts';
import { type ProxyEnvironment, ProxySelector, processProxyEnvironment, redactProxy } from './proxy.ts';
import {
  DEFAULT_RETRY,
  isRetryableNetworkError,
  isTimeoutCode,
  networkErrorCode,
  type RetryPolicy,
  sleep as realSleep,
  retryDelay,
  type Sleep,
} from './retry.ts';

// The three undici parts used here, loaded by path: undici's index also loads its fetch implementation,
// mocks and proxies, which cost every `strata pull` ~35 ms of start-up. The types still come from the
// package root; the paths are undici's own layout (it declares no exports map), pinned by the lock file.
const load = createRequire(import.meta.url);
const Agent = load('undici/lib/dispatcher/agent.js') as typeof import('undici').Agent;
const redirectInterceptor = load('undici/lib/interceptor/redirect.js') as typeof interceptors.redirect;
const dispatchRequest = (load('undici/lib/api/index.js') as { request: Dispatcher['request'] }).request;

/** undici's top-level `request(url, options)`, on a given dispatcher. */
function request(
  url: URL,
  options: Omit<Dispatcher.RequestOptions, 'origin' | 'path'> & {
    dispatcher: Pick<Dispatcher, 'dispatch'>;
    maxRedirections?: number;
  },
): Promise<Dispatcher.ResponseData<unknown>> {
  const { dispatcher, ...rest } = options;
  return dispatchRequest.call(dispatcher, {
    ...rest,
    origin: url.origin,
    path: `${url.pathname}${url.search}`,
  } as Dispatcher.RequestOptions);
}

export type HttpMethod = 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';

export interface Timeouts {
  /** Establishing the TCP (and TLS) connection. */
  connectMs: number;
  /** From the request being sent to the response headers. */
  headersMs: number;
  /** Longest pause between two chunks of a response body. */
  bodyIdleMs: number;
}

export const DEFAULT_TIMEOUTS: Timeouts = { connectMs: 10_000, headersMs: 30_000, bodyIdleMs: 60_000 };

export interface HttpClientOptions {
  timeouts?: Partial<Timeouts>;
  retry?: Partial<RetryPolicy>;
  /** Extra CA certificates (PEM), trusted in addition to the built-in roots. */
  ca?: readonly (string | Uint8Array)[];
  userAgent?: string;
  /** Redirects followed for GET and HEAD (default 5). */
  maxRedirects?: number;
  /** Connections per origin (default 16). */
  connections?: number;
  /** Proxy settings (default: HTTP_PROXY, HTTPS_PROXY and NO_PROXY of the process, read once). */
  proxy?: ProxyEnvironment;
  /** Test seams: the pause between attempts and the jitter source. */
  sleep?: Sleep;
  random?: () => number;
}

export interface HttpRequest {
  method: HttpMethod;
  url: URL;
  headers?: Record<string, string>;
  /** Bytes can be sent again on a retry; a stream cannot, so a request with a stream body is tried once. */
  body?: Uint8Array | string | Readable;
  /** Whether repeating the request is harmless (default: GET, HEAD, PUT, DELETE). */
  idempotent?: boolean;
  signal?: AbortSignal;
  /** What is being done, for error messages (`fetch blob sha256:… from reg/app`). */
  what: string;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Readable;
  /** The URL asked for (before any redirect). */
  url: URL;
  /** The URL that gave this answer: `url`, or where redirects led. */
  answeredBy: URL;
}

/** The first value of a response header. */
export function header(res: { headers: IncomingHttpHeaders }, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** The first byte of a Content-Range answer (`bytes <first>-<last>/<size or *>`), if it is one. */
export function contentRangeStart(res: { headers: IncomingHttpHeaders }): number | undefined {
  const m = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(header(res, 'content-range') ?? '');
  return m ? Number(m[1]) : undefined;
}

/** Throws away the rest of a body, keeping the connection reusable when that is cheap. */
export async function discard(body: Readable): Promise<void> {
  const dump = (body as { dump?: (o: { limit: number }) => Promise<void> }).dump;
  try {
    if (dump) await dump.call(body, { limit: 128 * 1024 });
    else body.destroy();
  } catch {
    body.destroy();
  }
}

/** Reads a whole body, failing with ResourceExhausted past `max` bytes. */
export async function readCapped(body: Readable, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    const b = chunk as Buffer;
    total += b.length;
    if (total > max) {
      body.destroy();
      throw resourceExhausted(`${what}: more than ${max} bytes`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks, total);
}

const IDEMPOTENT_METHODS = new Set<HttpMethod>(['GET', 'HEAD', 'PUT', 'DELETE']);

export class HttpClient {
  readonly timeouts: Timeouts;
  readonly retry: RetryPolicy;
  private readonly dispatcher: Pick<Dispatcher, 'dispatch'>;
  private readonly agent: InstanceType<typeof Agent>;
  private readonly proxies: ProxyRoutes | undefined;
  private readonly userAgent: string;
  private readonly sleep: Sleep;
  private readonly random: () => number;

  constructor(options: HttpClientOptions = {}) {
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    this.userAgent = options.userAgent ?? 'strata';
    this.sleep = options.sleep ?? realSleep;
    this.random = options.random ?? Math.random;
    const ca = options.ca?.length
      ? [...rootCertificates, ...options.ca.map((c) => Buffer.from(c))]
      : undefined;
    const pool = {
      connections: options.connections ?? 16,
      headersTimeout: this.timeouts.headersMs,
      bodyTimeout: this.timeouts.bodyIdleMs,
    };
    this.agent = new Agent({ ...pool, connect: { timeout: this.timeouts.connectMs, ...(ca ? { ca } : {}) } });
    const selector = new ProxySelector(options.proxy ?? processProxyEnvironment());
    this.proxies = selector.configured
      ? new ProxyRoutes(selector, this.agent, { ...pool, connectTimeout: this.timeouts.connectMs, ca })
      : undefined;
    const direct = this.agent.dispatch.bind(this.agent);
    const route: Dispatcher['dispatch'] = this.proxies ? (o, h) => this.proxies!.dispatch(o, h) : direct;
    // The redirect interceptor sits above the routing, so each hop (a registry's redirect to blob storage)
    // picks its own proxy. It drops Authorization, Cookie and Proxy-Authorization when the origin changes.
    this.dispatcher = {
      dispatch: redirectInterceptor({ maxRedirections: options.maxRedirects ?? 5, throwOnMaxRedirect: true })(
        route,
      ),
    };
  }

  /** Closes the pooled connections. */
  async close(): Promise<void> {
    await Promise.all([this.agent.close(), this.proxies?.close()]);
  }

  /** One attempt, no retry; network failures are thrown as the error taxonomy. */
  async once(req: HttpRequest): Promise<HttpResponse> {
    const headers: Record<string, string> = { 'user-agent': this.userAgent, ...req.headers };
    const followRedirects = req.method === 'GET' || req.method === 'HEAD';
    try {
      const res = await request(req.url, {
        dispatcher: this.dispatcher,
        method: req.method,
        headers,
        body: req.body ?? null,
        signal: req.signal,
        ...(followRedirects ? {} : { maxRedirections: 0 }),
      });
      // The redirect interceptor lists every URL visited, the one that answered last.
      const history = (res.context as { history?: readonly URL[] } | undefined)?.history;
      const answeredBy = history?.at(-1) ?? req.url;
      return { status: res.statusCode, headers: res.headers, body: res.body, url: req.url, answeredBy };
    } catch (err) {
      throw networkError(err, req);
    }
  }

  /**
   * Sends a request, retrying network failures and the policy's statuses (429/502/503/504 by default)
   * when that is safe. Returns the last answer whatever its status; throws when no answer came.
   */
  async send(req: HttpRequest): Promise<HttpResponse> {
    const replayable = !(req.body !== undefined && typeof req.body === 'object' && 'pipe' in req.body);
    const idempotent = (req.idempotent ?? IDEMPOTENT_METHODS.has(req.method)) && replayable;
    for (let attempt = 1; ; attempt++) {
      const canRetry = attempt < this.retry.attempts;
      let res: HttpResponse;
      try {
        res = await this.once(req);
      } catch (err) {
        const cause = (err as Error).cause ?? err;
        if (!canRetry || req.signal?.aborted || !isRetryableNetworkError(cause, idempotent)) throw err;
        await this.sleep(retryDelay(this.retry, attempt, undefined, this.random), req.signal);
        continue;
      }
      if (!canRetry || !idempotent || !this.retry.statuses.has(res.status)) return res;
      const retryAfter = res.headers['retry-after'];
      await discard(res.body);
      await this.sleep(retryDelay(this.retry, attempt, retryAfter, this.random), req.signal);
    }
  }

  /**
   * Like send, for small bodies read whole (up to `max` bytes). Failures while reading the body are
   * retried too, when the request is idempotent.
   */
  async sendForBytes(req: HttpRequest, max: number): Promise<HttpResponse & { bytes: Buffer }> {
    for (let attempt = 1; ; attempt++) {
      const res = await this.send(req);
      try {
        const bytes = await readCapped(res.body, max, req.what);
        return { ...res, bytes };
      } catch (err) {
        const idempotent = req.idempotent ?? IDEMPOTENT_METHODS.has(req.method);
        if (
          attempt >= this.retry.attempts ||
          req.signal?.aborted ||
          !isRetryableNetworkError(err, idempotent)
        ) {
          throw bodyError(err, req);
        }
        await this.sleep(retryDelay(this.retry, attempt, undefined, this.random), req.signal);
      }
    }
  }
}

interface PoolSettings {
  connections: number;
  headersTimeout: number;
  bodyTimeout: number;
  connectTimeout: number;
  ca: (string | Buffer)[] | undefined;
}

/** Where a request that failed through a proxy went: the proxy (no credentials) and the hop's host. */
interface ProxiedFailure {
  proxy: string;
  host: string;
  /** `host:port`, the port written even when it is the scheme's default: what CONNECT asks for. */
  authority: string;
}

// Errors of requests that went through a proxy, so that networkError can name it. Undici hands the same
// error object up through the redirect handler to the caller.
const proxiedFailures = new WeakMap<object, ProxiedFailure>();

/** Passes every event on, noting on a failure which proxy the request went through. */
class ProxiedHandler implements Dispatcher.DispatchHandler {
  private readonly inner: Dispatcher.DispatchHandler;
  private readonly failure: ProxiedFailure;
  constructor(inner: Dispatcher.DispatchHandler, failure: ProxiedFailure) {
    this.inner = inner;
    this.failure = failure;
  }
  onRequestStart(...a: Parameters<NonNullable<Dispatcher.DispatchHandler['onRequestStart']>>): void {
    this.inner.onRequestStart?.(...a);
  }
  onRequestUpgrade(...a: Parameters<NonNullable<Dispatcher.DispatchHandler['onRequestUpgrade']>>): void {
    this.inner.onRequestUpgrade?.(...a);
  }
  onResponseStart(...a: Parameters<NonNullable<Dispatcher.DispatchHandler['onResponseStart']>>): void {
    this.inner.onResponseStart?.(...a);
  }
  onResponseData(...a: Parameters<NonNullable<Dispatcher.DispatchHandler['onResponseData']>>): void {
    this.inner.onResponseData?.(...a);
  }
  onResponseEnd(...a: Parameters<NonNullable<Dispatcher.DispatchHandler['onResponseEnd']>>): void {
    this.inner.onResponseEnd?.(...a);
  }
  onResponseError(controller: Dispatcher.DispatchController, err: Error): void {
    if (typeof err === 'object' && err !== null && !proxiedFailures.has(err)) {
      proxiedFailures.set(err, this.failure);
    }
    this.inner.onResponseError?.(controller, err);
  }
}

/**
 * The one place a request's route is chosen: direct through the client's Agent, or through the proxy the
 * selector names for its origin, with the same limits (connections per origin, headers and body idle
 * timeouts, connect timeout for the proxy and for the TLS handshake through the tunnel) and the same CAs,
 * for the registry's certificate and an https:// proxy's alike, as Go's transport uses one TLS config.
 * Plain-HTTP requests are forwarded in absolute form; HTTPS ones tunnelled with CONNECT. Credentials in the
 * proxy URL go as Proxy-Authorization (Basic), to the proxy only.
 */
class ProxyRoutes {
  private readonly selector: ProxySelector;
  private readonly direct: Dispatcher;
  private readonly settings: PoolSettings;
  private readonly agents = new Map<string, ProxyAgent>();

  constructor(selector: ProxySelector, direct: Dispatcher, settings: PoolSettings) {
    this.selector = selector;
    this.direct = direct;
    this.settings = settings;
  }

  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    let proxy: URL | undefined;
    const origin = new URL(String(options.origin));
    try {
      proxy = this.selector.proxyFor(origin);
    } catch (err) {
      // As a dispatcher reports a request it cannot start.
      handler.onResponseError?.(null as unknown as Dispatcher.DispatchController, err as Error);
      return false;
    }
    if (!proxy) return this.direct.dispatch(options, handler);
    return this.agentFor(proxy).dispatch(
      options,
      new ProxiedHandler(handler, {
        proxy: redactProxy(proxy),
        host: origin.host,
        authority: `${origin.hostname}:${origin.port || (origin.protocol === 'https:' ? 443 : 80)}`,
      }),
    );
  }

  private agentFor(proxy: URL): ProxyAgent {
    let agent = this.agents.get(proxy.href);
    if (!agent) {
      // The package root this time: the proxy agent asks its pool to the proxy for `connect()`, a method
      // the root adds to every dispatcher. Only a process with a proxy pays for loading it.
      const undici = load('undici') as typeof import('undici');
      const { ca, connectTimeout, ...limits } = this.settings;
      const tls = ca ? { ca } : {};
      agent = new undici.ProxyAgent({
        uri: proxy.href,
        ...limits,
        connectTimeout,
        requestTls: tls,
        proxyTls: tls,
        // Undici's own pools for forwarded requests and for CONNECT would use its defaults (300 s to wait
        // for an answer, unbounded connections); these get the client's limits. `o` carries the connect
        // function (the tunnel, or the proxy's TLS), which must stay.
        factory: (origin, o) => new undici.Pool(origin, { ...limits, ...o }),
        clientFactory: (origin, o) => new undici.Pool(origin, { ...limits, ...o }),
      });
      this.agents.set(proxy.href, agent);
    }
    return agent;
  }

  async close(): Promise<void> {
    await Promise.all([...this.agents.values()].map((a) => a.close()));
  }
}

/** A failure while reading a response body, in the taxonomy. */
export function bodyError(err: unknown, req: Pick<HttpRequest, 'what' | 'url' | 'signal'>): Error {
  if (err instanceof Error && 'kind' in err) return err;
  return networkError(err, req);
}

// A request through a proxy connects only to the proxy, so these are the proxy's.
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH']);

/** A transport failure (no answer, or the answer broke off) in the taxonomy, naming what was attempted. */
export function networkError(err: unknown, req: Pick<HttpRequest, 'what' | 'url' | 'signal'>): Error {
  if (err instanceof Error && 'kind' in err) return err;
  const via = typeof err === 'object' && err !== null ? proxiedFailures.get(err) : undefined;
  // The proxy is named (without credentials), and the host it was asked for when a redirect led elsewhere.
  const route = via ? `, ${via.host === req.url.host ? '' : `${via.host} `}via proxy ${via.proxy}` : '';
  const where = `${req.what} (${req.url.host}${route})`;
  if (req.signal?.aborted) return aborted(`${where}: aborted`, { cause: req.signal.reason ?? err });
  const code = networkErrorCode(err) ?? (err as { code?: string }).code;
  if (via) {
    const refused = /^Proxy response \((\d+)\) !== 200/.exec(messageOf(err));
    if (refused) {
      return unavailable(`${where}: the proxy answered CONNECT ${via.authority} with ${refused[1]}`, {
        cause: err,
      });
    }
    if (/Proxy Authentication Required/.test(messageOf(err))) {
      return unavailable(`${where}: the proxy asks for authentication (407)`, { cause: err });
    }
    if (code && UNREACHABLE.has(code)) {
      return unavailable(`${where}: cannot reach the proxy: ${messageOf(err)} (${code})`, { cause: err });
    }
  }
  if (code === 'UND_ERR_ABORTED' || (err as Error).name === 'AbortError') {
    return aborted(`${where}: aborted`, { cause: err });
  }
  if (isTimeoutCode(code)) {
    const phase =
      code === 'UND_ERR_CONNECT_TIMEOUT'
        ? 'connecting'
        : code === 'UND_ERR_HEADERS_TIMEOUT'
          ? 'waiting for headers'
          : 'reading the body';
    return deadlineExceeded(`${where}: timed out ${phase}`, { cause: err });
  }
  if (code === 'UND_ERR_MAX_REDIRECTIONS' || (err as Error).name === 'MaxRedirectsError') {
    return unavailable(`${where}: too many redirects`, { cause: err });
  }
  // undici's own text blames a Client or Pool used for cross-origin redirects, which this is not.
  if (code === 'UND_ERR_INVALID_ARG' && /^Redirect loop detected/.test(messageOf(err))) {
    return unavailable(`${where}: redirect loop`, { cause: err });
  }
  if (code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
    return dataLoss(`${where}: body length differs from Content-Length`, { cause: err });
  }
  return unavailable(`${where}: ${messageOf(err)}${code ? ` (${code})` : ''}`, { cause: err });
}
