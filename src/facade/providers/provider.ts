// Spec providers: where the ImageSpec for a name comes from. A provider throws NotFound when it has no spec
// for the id; anything else is a failure of the provider. Composite and caching providers are built from
// these so the facade asks one object.
import { isNotFound, notFound } from '../../errors.ts';
import { type ImageSpec, specSize } from '../spec.ts';
import { type CacheTier, LoadingCache } from './ttl-lru.ts';

export interface SpecProvider {
  getSpec(id: string, signal?: AbortSignal): Promise<ImageSpec>;
}

/** Asks providers in order; the first spec wins. NotFound only when every provider says so. */
export class CompositeSpecProvider implements SpecProvider {
  private readonly providers: readonly SpecProvider[];
  constructor(providers: readonly SpecProvider[]) {
    this.providers = providers;
  }
  async getSpec(id: string, signal?: AbortSignal): Promise<ImageSpec> {
    if (this.providers.length === 0)
      throw notFound(`spec ${JSON.stringify(id)}: no spec provider configured`);
    let failure: unknown;
    for (const p of this.providers) {
      try {
        return await p.getSpec(id, signal);
      } catch (err) {
        if (signal?.aborted) throw err;
        // A provider that is down must not hide a spec another one has; remember its error.
        if (!isNotFound(err)) failure = err;
      }
    }
    throw failure ?? notFound(`spec ${JSON.stringify(id)}: not found`);
  }
}

export interface CachingOptions {
  ttlMs: number;
  maxEntries: number;
  /** Bytes of specs held (default 64 MiB): a spec's direct layers may make it megabytes. */
  maxBytes?: number;
  /** Specs shared with other replicas (with their own expiry), asked before the provider. */
  tier?: CacheTier<string, ImageSpec>;
}

/** Remembers specs for a while (errors are not remembered); concurrent asks for one id share one call. */
export class CachingSpecProvider implements SpecProvider {
  private readonly inner: SpecProvider;
  private readonly cache: LoadingCache<string, ImageSpec>;
  constructor(inner: SpecProvider, options: CachingOptions) {
    this.inner = inner;
    this.cache = new LoadingCache({
      ttlMs: options.ttlMs,
      maxEntries: options.maxEntries,
      maxBytes: options.maxBytes ?? 64 * 2 ** 20,
      sizeOf: specSize,
      tier: options.tier,
    });
  }
  getSpec(id: string, signal?: AbortSignal): Promise<ImageSpec> {
    // The shared call is not tied to one asker's signal.
    void signal;
    return this.cache.get(id, () => this.inner.getSpec(id));
  }
  forget(id: string): void {
    this.cache.delete(id);
  }
}
