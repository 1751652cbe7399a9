// Bearer tokens kept until shortly before they expire, in a bounded least-recently-used map.

export interface CachedToken {
  token: string;
  /** Epoch milliseconds after which the token is not used again. */
  expiresAt: number;
}

/** The distribution token spec's default and minimum lifetime. */
export const DEFAULT_EXPIRES_IN_S = 60;

/**
 * When a token stops being used: `issued_at` (when readable and not in our future) plus `expires_in`, less a
 * margin for the time the next request takes. If the server's clock is so far behind ours that this is
 * already past, its clock is ignored: the registry checks expiry by the same clock that issued the token.
 */
export function tokenExpiry(expiresIn: unknown, issuedAt: unknown, now: number = Date.now()): number {
  const seconds =
    typeof expiresIn === 'number' && Number.isFinite(expiresIn) && expiresIn > 0
      ? Math.max(expiresIn, DEFAULT_EXPIRES_IN_S)
      : DEFAULT_EXPIRES_IN_S;
  const lifetime = seconds * 1000;
  const margin = Math.min(10_000, lifetime / 10);
  const issued = typeof issuedAt === 'string' ? Date.parse(issuedAt) : Number.NaN;
  const base = Number.isNaN(issued) ? now : Math.min(issued, now);
  const at = base + lifetime - margin;
  return at > now ? at : now + lifetime - margin;
}

export class TokenCache {
  private readonly entries = new Map<string, CachedToken>();
  readonly maxEntries: number;

  constructor(maxEntries = 256) {
    this.maxEntries = Math.max(1, maxEntries);
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: string, now: number = Date.now()): string | undefined {
    const hit = this.entries.get(key);
    if (!hit) return undefined;
    this.entries.delete(key);
    if (hit.expiresAt <= now) return undefined;
    this.entries.set(key, hit);
    return hit.token;
  }

  set(key: string, value: CachedToken): void {
    this.entries.delete(key);
    while (this.entries.size >= this.maxEntries) {
      this.entries.delete(this.entries.keys().next().value as string);
    }
    this.entries.set(key, value);
  }

  delete(key: string): void {
    this.entries.delete(key);
  }
}
