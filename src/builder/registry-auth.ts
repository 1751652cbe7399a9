// Which registry credentials a request may use (Gitpod's BuildRegistryAuth: total, selective,
// additional) and the auth file a build's buildah gets. The rules follow Gitpod's image-builder: the
// installation's credentials for a registry the request allows (everything for total, the base/workspace
// registries and any_of for selective, ECR always), else the request's own `additional` entry for that
// host. Unlike Gitpod, a build's auth file names repositories, not registries: the installation's
// credentials reach only the repositories the build pulls and the one it pushes.

import { parseNormalizedReference, type Reference } from '../oci/reference.ts';
import { type CredentialStore, type Credentials, credentialsKey } from '../registry/credentials.ts';
import { canonicalHost } from '../registry/hosts.ts';

export type AuthMode =
  | { kind: 'none' }
  | { kind: 'total'; allowAll: boolean }
  | { kind: 'selective'; allowBaseRepository: boolean; allowWorkspaceRepository: boolean; anyOf: string[] };

export interface RegistryAuthRequest {
  mode: AuthMode;
  /** host[:port] → base64 `user:password` (Gitpod's GITPOD_IMAGE_AUTH entries). */
  additional: Record<string, string>;
}

export const NO_AUTH: RegistryAuthRequest = { mode: { kind: 'none' }, additional: {} };

const ECR_RE = /^\d{12}\.dkr\.ecr\.\w+-\w+-\w+\.amazonaws\.com$/;

export function isEcrDomain(domain: string): boolean {
  return ECR_RE.test(domain);
}

/**
 * An `additional` value as Gitpod reads it: base64 of `user:password`, split at the last `:`. A value
 * that is not base64 of something with a colon gives no usable credentials.
 */
export function decodeAdditional(value: string): Credentials | undefined {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value === '') return undefined;
  const text = Buffer.from(value, 'base64').toString('utf8');
  const colon = text.lastIndexOf(':');
  if (colon < 0) return undefined;
  return { kind: 'basic', username: text.slice(0, colon), password: text.slice(colon + 1) };
}

function domainOf(repository: string): string {
  return parseNormalizedReference(repository).domain;
}

/** What one request may use: resolved once per request, asked per registry host. */
export class AuthPolicy {
  readonly all: boolean;
  readonly explicit: ReadonlySet<string>;
  private readonly additional: ReadonlyMap<string, Credentials | undefined>;
  private readonly installation: CredentialStore;
  private readonly system: ReadonlySet<string>;
  /** Identifies the credentials this policy can hand out (for client caches). */
  readonly fingerprint: string;

  constructor(
    request: RegistryAuthRequest,
    repositories: { base: string; workspace: string },
    installation: CredentialStore,
    /**
     * Registries whose installation credentials every request may use, whatever its mode (`strata up`'s
     * own hosted registry: the system's registry, which a build request cannot name credentials for).
     */
    system: ReadonlySet<string> = new Set(),
  ) {
    const mode = request.mode;
    this.system = system;
    this.all = mode.kind === 'total' && mode.allowAll;
    const explicit = new Set<string>();
    if (mode.kind === 'selective') {
      if (mode.allowBaseRepository) explicit.add(domainOf(repositories.base));
      if (mode.allowWorkspaceRepository) explicit.add(domainOf(repositories.workspace));
      // Compared as plain strings, as Gitpod does: hosts as reference normalisation spells them.
      for (const d of mode.anyOf) explicit.add(d);
    }
    this.explicit = explicit;
    this.additional = new Map(Object.entries(request.additional).map(([h, v]) => [h, decodeAdditional(v)]));
    this.installation = installation;
    this.fingerprint = credentialsKey({
      kind: 'basic',
      username: JSON.stringify([this.all, [...explicit].sort()]),
      password: JSON.stringify([...Object.entries(request.additional)].sort()),
    });
  }

  allows(domain: string): boolean {
    return this.all || isEcrDomain(domain) || this.explicit.has(domain) || this.system.has(domain);
  }

  /** Gitpod's GetAuthFor: installation credentials where allowed, else the request's own for that host. */
  async forDomain(domain: string, signal?: AbortSignal): Promise<Credentials | undefined> {
    if (this.allows(domain)) {
      const own = await this.installation.get(domain, signal);
      if (own) return own;
    }
    return this.additional.get(domain) ?? this.additional.get(canonicalHost(domain));
  }

  /** The request's own credentials for a host, never the installation's. */
  additionalFor(domain: string): Credentials | undefined {
    return this.additional.get(domain);
  }

  /** A CredentialStore view of this policy, for a registry client. */
  store(): CredentialStore {
    return { get: (host, signal) => this.forDomain(canonicalHost(host), signal) };
  }
}

/** One entry of a build's auth file: a repository (`host/path`) and what may be used for it. */
export interface RepositoryCredentials {
  repository: string;
  credentials: Credentials;
}

/**
 * The credentials a build's buildah gets: for each image it pulls, what the policy allows for that
 * registry (the workspace registry never takes the request's own credentials, so a request cannot swap
 * the push identity); for the repository it pushes, the installation's.
 */
export async function buildAuthEntries(options: {
  policy: AuthPolicy;
  installation: CredentialStore;
  pulls: readonly Reference[];
  push: Reference;
  workspaceDomain: string;
  signal?: AbortSignal;
}): Promise<RepositoryCredentials[]> {
  const byRepo = new Map<string, Credentials>();
  for (const ref of options.pulls) {
    const repository = `${ref.domain}/${ref.path}`;
    let creds: Credentials | undefined;
    if (options.policy.allows(ref.domain)) creds = await options.installation.get(ref.domain, options.signal);
    if (!creds && ref.domain !== options.workspaceDomain) creds = options.policy.additionalFor(ref.domain);
    if (creds) byRepo.set(repository, creds);
  }
  const pushCreds = await options.installation.get(options.push.domain, options.signal);
  if (pushCreds) byRepo.set(`${options.push.domain}/${options.push.path}`, pushCreds);
  return [...byRepo].map(([repository, credentials]) => ({ repository, credentials }));
}

/** containers-auth.json text for the entries (repository-scoped keys, which containers/image honours). */
export function authFileJson(entries: readonly RepositoryCredentials[]): string {
  const auths: Record<string, Record<string, string>> = {};
  for (const { repository, credentials: c } of entries) {
    auths[repository] =
      c.kind === 'basic'
        ? { auth: Buffer.from(`${c.username}:${c.password}`).toString('base64') }
        : { auth: Buffer.from(`${c.username ?? '<token>'}:`).toString('base64'), identitytoken: c.token };
  }
  return `${JSON.stringify({ auths }, null, 2)}\n`;
}

/** Every string that would give a credential away if it appeared in a log. */
export function secretsOf(entries: readonly RepositoryCredentials[]): string[] {
  const out: string[] = [];
  for (const { credentials: c } of entries) {
    if (c.kind === 'basic') {
      out.push(c.password, Buffer.from(`${c.username}:${c.password}`).toString('base64'));
    } else out.push(c.token);
  }
  return out.filter((s) => s.length >= 4);
}
