// Registry authorization: remembers each registry's challenge, answers Basic challenges with credentials
// and Bearer challenges with tokens from the realm (anonymous, Basic-authenticated GET, or the OAuth2
// refresh-token POST for identity tokens), cached per (realm, service, scopes, credentials).
// Credentials never go over plain HTTP to another machine, and never to a realm reached from such a registry.
import { aborted, invalidArgument, unauthenticated } from '../errors.ts';
import { type Challenge, findChallenge, parseChallenges } from './challenge.ts';
import type { CredentialStore, Credentials } from './credentials.ts';
import { credentialsKey } from './credentials.ts';
import { canonicalHost, credentialsAllowed, DOCKER_HUB } from './hosts.ts';
import type { HttpClient } from './http.ts';
import {
  type CredentialsState,
  jsonProblem,
  parseErrorBody,
  registryError,
  saidIn,
  unauthorizedError,
} from './registry-errors.ts';
import { mergeScopes, splitScopeParam } from './scope.ts';
import { type CachedToken, TokenCache, tokenExpiry } from './token-cache.ts';

const MAX_TOKEN_RESPONSE = 1 << 20;
const MAX_REMEMBERED_HOSTS = 256;

export interface AuthorizerOptions {
  credentials: CredentialStore;
  /** Maximum cached tokens (default 256). */
  tokenCacheSize?: number;
  /** Sent as client_id in OAuth2 requests. */
  clientId?: string;
  now?: () => number;
}

/** A token fetch shared by the requests that need the same token, and how many of them still wait. */
interface TokenFetch {
  promise: Promise<CachedToken>;
  controller: AbortController;
  waiting: number;
}

/** What a 401 taught us: whether to try again, and with which extra scopes. */
export interface Reauth {
  retry: boolean;
  scopes: string[];
}

export class Authorizer {
  private readonly http: HttpClient;
  private readonly credentials: CredentialStore;
  private readonly tokens: TokenCache;
  /** Each origin's challenge; undefined for one whose ping was answered without one (it asks for none). */
  private readonly challenges = new Map<string, Challenge | undefined>();
  private readonly inflight = new Map<string, TokenFetch>();
  private readonly clientId: string;
  private readonly now: () => number;

  constructor(http: HttpClient, options: AuthorizerOptions) {
    this.http = http;
    this.credentials = options.credentials;
    this.tokens = new TokenCache(options.tokenCacheSize);
    this.clientId = options.clientId ?? 'strata';
    this.now = options.now ?? Date.now;
  }

  /** Whether a challenge is known for this registry origin (else a ping teaches it). */
  knows(url: URL): boolean {
    return this.challenges.has(url.origin);
  }

  /** Records that the registry answered a request without credentials (a ping): it asks for none. */
  learnOpen(url: URL): void {
    if (this.challenges.get(url.origin) === undefined) this.remember(url.origin, undefined);
  }

  /** Sets an origin's challenge as the most recent; the oldest origin goes beyond the bound. */
  private remember(origin: string, challenge: Challenge | undefined): void {
    this.challenges.delete(origin);
    if (this.challenges.size >= MAX_REMEMBERED_HOSTS) {
      this.challenges.delete(this.challenges.keys().next().value as string);
    }
    this.challenges.set(origin, challenge);
  }

  /**
   * Learns from a response's WWW-Authenticate header (any status). Returns whether the request is worth
   * repeating with (new) credentials, and the scopes an `insufficient_scope` error asked for.
   */
  learn(url: URL, wwwAuthenticate: string | string[] | undefined): Reauth {
    const parsed = parseChallenges(wwwAuthenticate);
    const chosen = findChallenge(parsed, 'bearer') ?? findChallenge(parsed, 'basic');
    if (!chosen) return { retry: false, scopes: [] };
    this.remember(url.origin, chosen);
    const scopes = chosen.scheme === 'bearer' ? splitScopeParam(chosen.params.scope) : [];
    return { retry: true, scopes };
  }

  /**
   * The Authorization header for a request to `url` needing `scopes`, or undefined when none is known to
   * be needed. `fresh` skips the token cache (after a 401 with a cached token).
   */
  async authorization(
    url: URL,
    scopes: readonly string[],
    options: { fresh?: boolean; signal?: AbortSignal } = {},
  ): Promise<string | undefined> {
    const challenge = this.challenges.get(url.origin);
    if (!challenge) return undefined;
    const creds = credentialsAllowed(url) ? await this.lookup(url, options.signal) : undefined;
    if (challenge.scheme === 'basic') {
      if (creds?.kind !== 'basic') return undefined;
      return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    }
    const token = await this.token(url, challenge, scopes, creds, options);
    return token ? `Bearer ${token}` : undefined;
  }

  /**
   * Where the credentials for `url`'s registry stand, to explain a 401 that retrying did not cure. None
   * are looked up for plain HTTP to another machine, as for a request. A lookup that fails counts as none:
   * the request it would have served failed on it before any 401.
   */
  async credentialsState(url: URL, signal?: AbortSignal): Promise<CredentialsState> {
    if (!credentialsAllowed(url)) return 'plain-http';
    return (await this.lookup(url, signal).catch(() => undefined)) ? 'refused' : 'none';
  }

  private async lookup(url: URL, signal?: AbortSignal): Promise<Credentials | undefined> {
    const host = canonicalHost(url.host);
    const found = await this.credentials.get(host, signal);
    if (found || url.port !== '' || host === DOCKER_HUB) return found;
    // A URL drops its scheme's default port, which a reference and `docker login` may spell out.
    return this.credentials.get(`${host}:${url.protocol === 'https:' ? '443' : '80'}`, signal);
  }

  private async token(
    registry: URL,
    challenge: Challenge,
    scopes: readonly string[],
    creds: Credentials | undefined,
    options: { fresh?: boolean; signal?: AbortSignal },
  ): Promise<string> {
    const realmText = challenge.params.realm;
    if (!realmText) throw unauthenticated(`${registry.host}: Bearer challenge without a realm`);
    let realm: URL;
    try {
      realm = new URL(realmText);
    } catch {
      throw invalidArgument(`${registry.host}: Bearer realm ${JSON.stringify(realmText)} is not a URL`);
    }
    if (realm.protocol !== 'https:' && realm.protocol !== 'http:') {
      throw invalidArgument(`${registry.host}: Bearer realm ${realm.href} is not HTTP(S)`);
    }
    // A realm reached over plain HTTP to another machine gets no credentials either.
    const sent = credentialsAllowed(realm) ? creds : undefined;
    const service = challenge.params.service;
    const wanted = mergeScopes(scopes);
    const key = JSON.stringify([realm.href, service ?? '', wanted, credentialsKey(sent)]);
    if (options.fresh) {
      this.tokens.delete(key);
    } else {
      const cached = this.tokens.get(key, this.now());
      if (cached) return cached;
    }
    if (options.signal?.aborted) {
      throw aborted(`get token for ${registry.host}: aborted`, { cause: options.signal.reason });
    }
    // Concurrent requests needing the same token share one fetch. It is not any one caller's, so it runs
    // under its own signal, aborted only once every caller waiting for it has given up; a caller coming
    // after that starts a new one.
    let pending = this.inflight.get(key);
    if (!pending || pending.controller.signal.aborted) {
      const controller = new AbortController();
      const promise = this.fetchToken(registry, realm, service, wanted, sent, controller.signal)
        .then((t) => {
          this.tokens.set(key, t);
          return t;
        })
        .finally(() => {
          if (this.inflight.get(key) === entry) this.inflight.delete(key);
        });
      const entry: TokenFetch = { promise, controller, waiting: 0 };
      pending = entry;
      this.inflight.set(key, entry);
    }
    return (await join(pending, options.signal, registry)).token;
  }

  private async fetchToken(
    registry: URL,
    realm: URL,
    service: string | undefined,
    scopes: string[],
    creds: Credentials | undefined,
    signal: AbortSignal | undefined,
  ): Promise<CachedToken> {
    const what = `get token for ${registry.host}${scopes.length ? ` (${scopes.join(' ')})` : ''}`;
    let res: Awaited<ReturnType<HttpClient['sendForBytes']>>;
    if (creds?.kind === 'identityToken') {
      const form = new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: creds.token,
        client_id: this.clientId,
      });
      if (service) form.set('service', service);
      if (scopes.length) form.set('scope', scopes.join(' '));
      res = await this.http.sendForBytes(
        {
          method: 'POST',
          url: realm,
          headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
          body: form.toString(),
          idempotent: true,
          signal,
          what,
        },
        MAX_TOKEN_RESPONSE,
      );
    } else {
      const url = new URL(realm);
      if (service) url.searchParams.set('service', service);
      for (const s of scopes) url.searchParams.append('scope', s);
      const headers: Record<string, string> = { accept: 'application/json' };
      if (creds)
        headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
      res = await this.http.sendForBytes({ method: 'GET', url, headers, signal, what }, MAX_TOKEN_RESPONSE);
    }
    if (res.status !== 200) {
      const entries = parseErrorBody(res.bytes);
      // The token server refusing credentials is the client being unauthenticated, whatever it calls it.
      if (
        res.status === 401 ||
        res.status === 403 ||
        (res.status === 400 && /invalid_grant/.test(res.bytes.toString()))
      ) {
        const answer = `its token server answered ${res.status}${saidIn(entries)}`;
        throw unauthorizedError(what, registry.host, creds ? 'refused' : 'none', answer);
      }
      throw registryError(res.status, entries, what, res.headers['retry-after']);
    }
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(res.bytes.toString('utf8')) as Record<string, unknown>;
    } catch (err) {
      throw unauthenticated(`${what}: token response is not JSON: ${jsonProblem(err)}`);
    }
    const token = typeof body.token === 'string' && body.token ? body.token : body.access_token;
    if (typeof token !== 'string' || !token) throw unauthenticated(`${what}: token response holds no token`);
    return { token, expiresAt: tokenExpiry(body.expires_in, body.issued_at, this.now()) };
  }
}

/** One caller's wait for a shared token fetch: its abort ends its own wait, and the fetch once none wait. */
function join(fetch: TokenFetch, signal: AbortSignal | undefined, registry: URL): Promise<CachedToken> {
  fetch.waiting++;
  if (!signal) return fetch.promise;
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      if (--fetch.waiting === 0) fetch.controller.abort(signal.reason);
      reject(aborted(`get token for ${registry.host}: aborted`, { cause: signal.reason }));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    fetch.promise.then(
      (t) => {
        signal.removeEventListener('abort', onAbort);
        resolve(t);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}
