// A bearer token server for the Docker registry token protocol, enough for distribution 2.8's
// `auth: token` mode: GET /token with Basic auth (or none), and the OAuth2 password grant by POST.
// Tokens are ES256 JWTs whose header carries the signing certificate (`x5c`); the registry verifies that
// chain against the `rootcertbundle` we point it at, which is the same self-signed certificate.
import { createPrivateKey, type KeyObject, randomUUID, sign, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { makeSelfSignedCert } from './tls-cert.ts';

/** One requested or granted scope: `type:name:actions`, e.g. `repository:team/app:pull,push`. */
export interface ResourceScope {
  type: string;
  name: string;
  actions: string[];
}

/** Decides which actions of a requested scope a user gets; `user` is undefined for anonymous requests. */
export type GrantPolicy = (user: string | undefined, scope: ResourceScope) => string[];

export interface TokenServerOptions {
  /** username → password accepted on token requests. */
  users: Record<string, string>;
  /** Directory for the signing key and certificate. */
  dir: string;
  /** The registry's service name; requests naming another service are refused (400). */
  service?: string;
  issuer?: string;
  /** Anonymous requests get `pull` on repositories (default false: anonymous tokens grant nothing). */
  anonymousPull?: boolean;
  /** Token lifetime in seconds, reported as expires_in (default 300). */
  expiresIn?: number;
  /** Overrides the default policy (users get everything they ask for, anonymous see anonymousPull). */
  policy?: GrantPolicy;
}

/** What the server saw for one token request, for tests that assert caching or scopes. */
export interface TokenRequestRecord {
  method: string;
  grantType: 'basic' | 'anonymous' | 'password' | 'other';
  user: string | undefined;
  scopes: string[];
  status: number;
}

const MAX_LOG = 1000;
const MAX_FORM_BYTES = 64 * 1024;

const b64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

/** Parses `type:name:a,b` (undefined when malformed); the name may contain colons (a host with a port). */
export function parseScope(scope: string): ResourceScope | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last <= first + 1) return undefined;
  const actions = scope
    .slice(last + 1)
    .split(',')
    .filter((a) => a.length > 0);
  if (actions.length === 0) return undefined;
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions };
}

export class TokenServer {
  /** Base URL, `http://127.0.0.1:PORT`. */
  readonly url: string;
  /** The realm to configure in the registry: `${url}/token`. */
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  /** PEM certificate whose key signs the tokens: the registry's rootcertbundle. */
  readonly certFile: string;
  /** Token lifetime in seconds for tokens issued from now on. */
  expiresIn: number;
  anonymousPull: boolean;
  /** Number of token requests answered (any outcome). */
  requests = 0;
  /** The last token requests, oldest first (bounded). */
  readonly log: TokenRequestRecord[] = [];

  private readonly server: Server;
  private readonly key: KeyObject;
  private readonly x5c: string;
  private readonly users: Record<string, string>;
  private readonly policy: GrantPolicy;

  constructor(
    server: Server,
    url: string,
    key: KeyObject,
    certFile: string,
    certPem: string,
    opts: TokenServerOptions,
  ) {
    this.server = server;
    this.url = url;
    this.realm = `${url}/token`;
    this.key = key;
    this.certFile = certFile;
    this.x5c = new X509Certificate(certPem).raw.toString('base64');
    this.users = { ...opts.users };
    this.service = opts.service ?? 'strata-test-registry';
    this.issuer = opts.issuer ?? 'strata-test-token-issuer';
    this.expiresIn = opts.expiresIn ?? 300;
    this.anonymousPull = opts.anonymousPull ?? false;
    this.policy = opts.policy ?? ((user, scope) => this.defaultGrant(user, scope));
  }

  private defaultGrant(user: string | undefined, scope: ResourceScope): string[] {
    if (user !== undefined) return scope.actions;
    if (this.anonymousPull && scope.type === 'repository') return scope.actions.filter((a) => a === 'pull');
    return [];
  }

  /** Mints a token directly (no request counted): the access claim holds what the policy grants. */
  issue(user: string | undefined, scopes: string[]): { token: string; expiresIn: number; issuedAt: string } {
    const now = Math.floor(Date.now() / 1000);
    const access: ResourceScope[] = [];
    for (const raw of scopes) {
      const scope = parseScope(raw);
      if (!scope) continue;
      const actions = this.policy(user, scope);
      if (actions.length > 0) access.push({ type: scope.type, name: scope.name, actions });
    }
    const header = { typ: 'JWT', alg: 'ES256', x5c: [this.x5c] };
    const claims = {
      iss: this.issuer,
      sub: user ?? '',
      aud: this.service,
      exp: now + this.expiresIn,
      nbf: now - 1,
      iat: now,
      jti: randomUUID(),
      access,
    };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    // JWS wants the raw r||s form of the ECDSA signature, not DER.
    const signature = sign('sha256', Buffer.from(signingInput), { key: this.key, dsaEncoding: 'ieee-p1363' });
    return {
      token: `${signingInput}.${b64url(signature)}`,
      expiresIn: this.expiresIn,
      issuedAt: new Date(now * 1000).toISOString(),
    };
  }

  /** Handles one HTTP request (exposed for the server wiring only). */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requests++;
    const record: TokenRequestRecord = {
      method: req.method ?? '',
      grantType: 'anonymous',
      user: undefined,
      scopes: [],
      status: 0,
    };
    const reply = (status: number, body: unknown, headers: Record<string, string> = {}): void => {
      record.status = status;
      this.log.push(record);
      if (this.log.length > MAX_LOG) this.log.shift();
      const text = JSON.stringify(body);
      res.writeHead(status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(text),
        ...headers,
      });
      res.end(text);
    };
    const url = new URL(req.url ?? '/', this.url);
    if (url.pathname !== '/token') {
      reply(404, { errors: [{ code: 'NOT_FOUND', message: 'no such endpoint' }] });
      return;
    }

    let params: URLSearchParams;
    if (req.method === 'GET') {
      params = url.searchParams;
    } else if (req.method === 'POST') {
      const body = await readBody(req, MAX_FORM_BYTES);
      if (body === undefined) {
        reply(413, { error: 'invalid_request', error_description: 'form too large' });
        return;
      }
      params = new URLSearchParams(body);
    } else {
      reply(405, { errors: [{ code: 'UNSUPPORTED', message: 'GET or POST' }] }, { allow: 'GET, POST' });
      return;
    }

    const service = params.get('service');
    if (service !== null && service !== this.service) {
      reply(400, { error: 'invalid_request', error_description: `unknown service ${service}` });
      return;
    }
    // GET repeats `scope`; the OAuth2 form puts several scopes in one, space-separated.
    record.scopes = params
      .getAll('scope')
      .flatMap((s) => s.split(' '))
      .filter((s) => s.length > 0);

    let user: string | undefined;
    if (req.method === 'POST') {
      const grant = params.get('grant_type');
      if (grant !== 'password') {
        record.grantType = 'other';
        reply(400, { error: 'unsupported_grant_type', error_description: `grant_type ${grant}` });
        return;
      }
      record.grantType = 'password';
      user = params.get('username') ?? '';
      if (!this.checkPassword(user, params.get('password') ?? '')) {
        record.user = user;
        reply(401, { error: 'invalid_grant', error_description: 'bad username or password' });
        return;
      }
    } else {
      const authorization = req.headers.authorization;
      if (authorization !== undefined) {
        record.grantType = 'basic';
        const creds = parseBasic(authorization);
        if (!creds || !this.checkPassword(creds.user, creds.password)) {
          record.user = creds?.user;
          reply(
            401,
            { errors: [{ code: 'UNAUTHORIZED', message: 'bad username or password' }] },
            { 'www-authenticate': `Basic realm="${this.realm}"` },
          );
          return;
        }
        user = creds.user;
      }
    }
    record.user = user;
    const { token, expiresIn, issuedAt } = this.issue(user, record.scopes);
    reply(200, {
      token,
      access_token: token,
      expires_in: expiresIn,
      issued_at: issuedAt,
      ...(req.method === 'POST' ? { scope: record.scopes.join(' ') } : {}),
    });
  }

  private checkPassword(user: string, password: string): boolean {
    return Object.hasOwn(this.users, user) && this.users[user] === password;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

function parseBasic(header: string): { user: string; password: string } | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) return undefined;
  const text = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon < 0) return undefined;
  return { user: text.slice(0, colon), password: text.slice(colon + 1) };
}

/** The body as text, or undefined when it exceeds `limit` bytes. */
async function readBody(req: IncomingMessage, limit: number): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes > limit) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Generates a P-256 key and self-signed certificate in `opts.dir` (with openssl) and starts the token
 * server on 127.0.0.1 on a port of its own choosing.
 */
export async function startTokenServer(opts: TokenServerOptions): Promise<TokenServer> {
  const keyFile = join(opts.dir, 'token-key.pem');
  const certFile = join(opts.dir, 'token-cert.pem');
  await makeSelfSignedCert({ keyFile, certFile, cn: 'strata-test-token-issuer' });
  const key = createPrivateKey(await readFile(keyFile));
  const certPem = await readFile(certFile, 'utf8');

  let tokenServer: TokenServer | undefined;
  const server = createServer((req, res) => {
    tokenServer!.handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(err));
    });
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('token server has no address');
  tokenServer = new TokenServer(server, `http://127.0.0.1:${address.port}`, key, certFile, certPem, opts);
  return tokenServer;
}
