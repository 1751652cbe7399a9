// What a registry client may authenticate with, and where it gets it from.
import { createHash } from 'node:crypto';

export type Credentials =
  | { kind: 'basic'; username: string; password: string }
  /** An OAuth2 refresh token (Docker's "identity token"), exchanged at the token endpoint. */
  | { kind: 'identityToken'; token: string; username?: string };

/** Looks credentials up by registry host (`host[:port]`, Docker Hub as `docker.io`). */
export interface CredentialStore {
  get(host: string, signal?: AbortSignal): Promise<Credentials | undefined>;
}

export const anonymous: CredentialStore = { get: async () => undefined };

/** Credentials given in code, per host. */
export function staticCredentials(byHost: Record<string, Credentials>): CredentialStore {
  const map = new Map(Object.entries(byHost).map(([h, c]) => [h.toLowerCase(), c]));
  return { get: async (host) => map.get(host.toLowerCase()) };
}

/** A stable, non-reversible key for caches keyed by credentials. */
export function credentialsKey(c: Credentials | undefined): string {
  if (!c) return 'anonymous';
  const raw =
    c.kind === 'basic' ? ['basic', c.username, c.password] : ['identity', c.username ?? '', c.token];
  return createHash('sha256').update(JSON.stringify(raw)).digest('hex');
}
