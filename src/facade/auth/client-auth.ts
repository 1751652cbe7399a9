// Who may pull from the facade: Basic credentials from an htpasswd file, Bearer tokens from a token server,
// or either. Decides from the Authorization header's text and what is asked for (actions on repositories,
// or nothing: the API root), and says which challenges to send back: the `WWW-Authenticate` values
// registries send (Bearer realm/service/scope as docker distribution's token specification has them, Basic
// realm). No HTTP types here; the HTTP layer turns a refusal into a 401 UNAUTHORIZED answer.
import { createHash, timingSafeEqual } from 'node:crypto';
import { WatchedFiles } from '../watched-files.ts';
import { type CheckFrom, HtpasswdChecker, type HtpasswdCheckerOptions, parseHtpasswd } from './htpasswd.ts';

/** Test seam: the password checks' waiting room and the bcrypt comparison (see HtpasswdCheckerOptions). */
export type PasswordCheckOptions = Pick<HtpasswdCheckerOptions, 'maxWaiting' | 'compare'>;

import { grants, parseTokenKeys, type TokenKeys, verifyToken } from './token.ts';

export interface ClientAuthConfig {
  /** htpasswd file of bcrypt hashes: Basic credentials are accepted. */
  htpasswd?: string;
  /** The realm named in Basic challenges. */
  basicRealm: string;
  /** Bearer tokens are accepted. */
  token?: {
    /** The token server's URL, sent in the challenge. */
    realm: string;
    /** The facade's service name: sent in the challenge, required as the tokens' audience. */
    service: string;
    issuer: string;
    /** PEM public keys or certificates, or a JWKS document. */
    keys: string;
  };
  /** How long a successful password check is remembered (bcrypt is slow by design). */
  basicCacheMs: number;
  /**
   * A user of the serving process itself (`strata up`'s builder) with a password it generated and keeps
   * in memory: accepted as Basic credentials, before and instead of an htpasswd entry of that name.
   */
  serviceUser?: { username: string; password: string };
}

/**
 * One action a request needs; a request needs none (the API root) or several (a mount: push and pull).
 * Listing the repositories is docker distribution's `registry:catalog:*`.
 */
export type AuthNeed = { repository: string; action: 'pull' | 'push' | 'delete' } | { catalog: true };

/** A need as the token specification's resource: type, name and action. */
function resourceOf(n: AuthNeed): { type: string; name: string; action: string } {
  return 'catalog' in n
    ? { type: 'registry', name: 'catalog', action: '*' }
    : { type: 'repository', name: n.repository, action: n.action };
}

export type AuthDecision =
  | { ok: true; user: string }
  | {
      ok: false;
      status: 401;
      code: 'UNAUTHORIZED';
      message: string;
      /** `WWW-Authenticate` values, preferred first. */
      challenges: string[];
      detail?: unknown;
    };

export interface ClientAuthEvents {
  /** Watch the files for changes (default true); false: only reload() reads them again. */
  watch?: boolean;
  onReload?: (what: 'htpasswd' | 'token-keys') => void;
  onReloadError?: (what: 'htpasswd' | 'token-keys', err: unknown) => void;
}

const quote = (s: string): string => `"${s.replace(/["\\]/g, '\\$&')}"`;

export class ClientAuth {
  private readonly config: ClientAuthConfig;
  private readonly htpasswd: WatchedFiles<Map<string, string>> | undefined;
  private readonly keys: WatchedFiles<TokenKeys> | undefined;
  private readonly checker: HtpasswdChecker | undefined;

  private constructor(
    config: ClientAuthConfig,
    htpasswd: WatchedFiles<Map<string, string>> | undefined,
    keys: WatchedFiles<TokenKeys> | undefined,
    checks: PasswordCheckOptions,
  ) {
    this.config = config;
    this.htpasswd = htpasswd;
    this.keys = keys;
    if (htpasswd)
      this.checker = new HtpasswdChecker(() => htpasswd.value, { ...checks, cacheMs: config.basicCacheMs });
  }

  /** Reads the htpasswd and key files (an error if they are bad) and watches them for changes. */
  static async open(
    config: ClientAuthConfig,
    events: ClientAuthEvents = {},
    checks: PasswordCheckOptions = {},
  ): Promise<ClientAuth> {
    const watchOptions = (kind: 'htpasswd' | 'token-keys', what: string) => ({
      what,
      watch: events.watch,
      onReload: () => events.onReload?.(kind),
      onReloadError: (err: unknown) => events.onReloadError?.(kind, err),
    });
    let htpasswd: WatchedFiles<Map<string, string>> | undefined;
    try {
      if (config.htpasswd) {
        const what = `htpasswd ${config.htpasswd}`;
        htpasswd = await WatchedFiles.open([config.htpasswd], {
          ...watchOptions('htpasswd', what),
          parse: ([b]) => parseHtpasswd(b!.toString('utf8'), what),
        });
      }
      const token = config.token;
      const keys = token
        ? await WatchedFiles.open([token.keys], {
            ...watchOptions('token-keys', `token keys ${token.keys}`),
            parse: ([b]) => parseTokenKeys(b!, `token keys ${token.keys}`),
          })
        : undefined;
      return new ClientAuth(config, htpasswd, keys, checks);
    } catch (err) {
      htpasswd?.close();
      throw err;
    }
  }

  /**
   * Re-reads the files that changed or were refused before (SIGHUP); a bad version is reported and the
   * old one stays.
   */
  async reload(): Promise<void> {
    await Promise.all([this.htpasswd?.reread(), this.keys?.reread()]);
  }

  close(): void {
    this.htpasswd?.close();
    this.keys?.close();
    this.checker?.close();
  }

  /**
   * `from` says who asks (the client's address, the request's signal), so a flood of Basic checks from one
   * client waits behind others' rather than in front of them, and a request gone stops waiting.
   */
  async authorize(
    authorization: string | undefined,
    needs: readonly AuthNeed[],
    from: CheckFrom = {},
  ): Promise<AuthDecision> {
    const m = authorization === undefined ? null : /^\s*(\S+)\s+(\S+)\s*$/.exec(authorization);
    const scheme = m?.[1]?.toLowerCase();
    const credentials = m?.[2] ?? '';
    if (scheme === 'basic' && (this.checker || this.config.serviceUser))
      return this.basic(credentials, needs, from);
    if (scheme === 'bearer' && this.keys) return this.bearer(credentials, needs);
    const message =
      authorization === undefined
        ? 'authentication required'
        : `authentication required: ${this.schemes()} credentials are accepted here`;
    return this.refuse(message, needs);
  }

  private schemes(): string {
    return [this.keys ? 'Bearer' : '', this.checker ? 'Basic' : ''].filter((s) => s !== '').join(' or ');
  }

  private async basic(
    credentials: string,
    needs: readonly AuthNeed[],
    from: CheckFrom,
  ): Promise<AuthDecision> {
    const text = Buffer.from(credentials, 'base64').toString('utf8');
    const colon = text.indexOf(':');
    const user = colon < 0 ? '' : text.slice(0, colon);
    if (colon < 0 || !(await this.checkPassword(user, text.slice(colon + 1), from))) {
      return this.refuse('invalid username or password', needs);
    }
    // htpasswd users may pull every repository, so they may list them too (as distribution's htpasswd
    // access controller lets any user it knows).
    return { ok: true, user };
  }

  private async checkPassword(user: string, password: string, from: CheckFrom): Promise<boolean> {
    const s = this.config.serviceUser;
    if (s && user === s.username) {
      // Compared as fixed-length hashes, so the time taken says nothing about the password.
      const digest = (v: string) => createHash('sha256').update(v).digest();
      return timingSafeEqual(digest(password), digest(s.password));
    }
    return this.checker ? this.checker.check(user, password, from) : false;
  }

  private async bearer(token: string, needs: readonly AuthNeed[]): Promise<AuthDecision> {
    const t = this.config.token!;
    const r = await verifyToken(token, this.keys!.value, { issuer: t.issuer, service: t.service });
    if (!r.ok) return this.refuse(`invalid token: ${r.reason}`, needs, 'invalid_token');
    const missing = needs.filter((n) => {
      const { type, name, action } = resourceOf(n);
      return !grants(r.access, type, name, action);
    });
    if (missing.length > 0) {
      // A 401 with insufficient_scope, as docker distribution answers: skopeo asks the realm for a token
      // with the scope and tries again, where a 403 ends the pull. The scope is everything the request
      // needs, as distribution's: a client that asks for the challenge's scope alone (rather than adding
      // it to what it holds) then gets one token that does, not one that drops what it had.
      const what = missing
        .map((n) => ('catalog' in n ? 'listing the catalog' : `${n.action} on repository ${n.repository}`))
        .join(', ');
      return this.refuse(`the token does not grant ${what}`, needs, 'insufficient_scope');
    }
    return { ok: true, user: r.subject };
  }

  /**
   * A 401 with the challenges. The Bearer challenge's scope names what the request needs, one
   * `type:name:actions` per resource.
   */
  private refuse(
    message: string,
    needs: readonly AuthNeed[],
    bearerError?: 'invalid_token' | 'insufficient_scope',
  ): AuthDecision {
    const challenges: string[] = [];
    const t = this.config.token;
    if (t) {
      const parts = [`realm=${quote(t.realm)}`, `service=${quote(t.service)}`];
      if (needs.length > 0) parts.push(`scope=${quote(scopeOf(needs))}`);
      if (bearerError) parts.push(`error=${quote(bearerError)}`);
      challenges.push(`Bearer ${parts.join(',')}`);
    }
    if (this.checker) challenges.push(`Basic realm=${quote(this.config.basicRealm)},charset="UTF-8"`);
    return {
      ok: false,
      status: 401,
      code: 'UNAUTHORIZED',
      message,
      challenges,
      detail:
        needs.length > 0
          ? needs.map((n) => {
              const { type, name, action } = resourceOf(n);
              return { Type: type, Name: name, Action: action };
            })
          : undefined,
    };
  }
}

/** The token specification's scope: `<type>:<name>:<action>,<action>` per resource, space-separated. */
function scopeOf(needs: readonly AuthNeed[]): string {
  const actions = new Map<string, string[]>();
  for (const n of needs) {
    const { type, name, action } = resourceOf(n);
    const key = `${type}:${name}`;
    const list = actions.get(key) ?? [];
    if (!list.includes(action)) list.push(action);
    actions.set(key, list);
  }
  return [...actions].map(([key, list]) => `${key}:${list.join(',')}`).join(' ');
}
