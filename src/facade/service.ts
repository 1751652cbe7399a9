// The facade's composition: a name (`remote/<id>`, `fixed/<name>`) → its ImageSpec → the images it names
// (resolved through the registry client, tags re-resolved after a TTL, manifests and configs cached by
// digest) → compose() → the manifest, config and layer list served for that name. Each name remembers its
// last few compositions, so a manifest asked for by digest is answered with exactly those bytes (or not at
// all) and a pull whose tag moved meanwhile can still fetch the blobs of the manifest it got. A blob is
// only reachable through a name whose composed image lists it. With a shared tier (Redis, `shared`), what
// one replica composed and resolved is found by the others: a manifest asked for by digest is answered
// with the bytes some replica composed, never with a recomposition that came out different. A tag whose
// registry cannot be reached when its TTL is up keeps its last digest for a while (stale-if-error), as long
// as that manifest is at hand: a registry blink must not fail a workspace whose image is. Manifests and
// configs fetched from registries are kept in the disk blob cache (and the shared tier) too, and tags' last
// resolutions in a file (`resolvedTags`), so a restarted facade composes what it composed before without
// the registries.
// No HTTP here.
import {
  deadlineExceeded,
  errorKind,
  failedPrecondition,
  internal,
  invalidArgument,
  messageOf,
  notFound,
} from '../errors.ts';
import type { Blob } from '../oci/blob.ts';
import type { Descriptor, Platform } from '../oci/descriptor.ts';
import { type Digest, parseDigest } from '../oci/digest.ts';
import {
  type ImageConfig,
  MAX_CONFIG_BYTES,
  MAX_MANIFEST_BYTES,
  type ParsedManifest,
  parseImageConfig,
  parseManifest,
} from '../oci/manifest.ts';
import {
  formatReference,
  parseNormalizedReference,
  type Reference,
  withDefaultTag,
} from '../oci/reference.ts';
import { readCapped } from '../registry/http.ts';
import { isRateLimited } from '../registry/registry-errors.ts';
import type { BlobCache, CacheOutcome } from './blobs/cache.ts';
import { bytesBlob, type LayerSource, type SourcedBlob } from './blobs/sources.ts';
import { type ComposedImage, type ComposedLayer, compose } from './compose/compose.ts';
import type { ImageView } from './compose/image.ts';
import type { Addition } from './compose/layers.ts';
import { selectManifest } from './compose/select.ts';
import { specAdditions, staticImageAddition } from './compose/spec-additions.ts';
import type { SpecProvider } from './providers/provider.ts';
import type { ResolvedTag } from './providers/tag-file.ts';
import { type CacheTier, LoadingCache, TtlLru } from './providers/ttl-lru.ts';
import type { NamedComposition } from './shared/codecs.ts';
import type { SharedList } from './shared/shared-store.ts';
import { addedImageRefs, type ImageSpec, validateImageSpec } from './spec.ts';

/** What the facade needs of the registry client (RegistryClient fits). */
export interface UpstreamRegistry {
  resolve(ref: Reference, options?: { signal?: AbortSignal }): Promise<Descriptor>;
  fetchManifest(
    ref: Reference,
    options?: { signal?: AbortSignal; descriptor?: Descriptor },
  ): Promise<{ bytes: Uint8Array; mediaType: string; digest: Digest; parsed: ParsedManifest }>;
  /** The blob of a repository; its full reads are verified. */
  blob(repo: { domain: string; path: string }, desc: Descriptor): Blob;
}

/** A name under the facade: which provider, and the id it is asked for. */
export interface FacadeName {
  provider: string;
  id: string;
}

/** A static layer from the config: an image whose layers are added, or a gzip file read into the cache. */
export type StaticLayer = { kind: 'image'; ref: string } | { kind: 'file'; addition: Addition };

export interface FacadeObserver {
  /** A blob answer was set up: which source, and for streamed ones how the cache served it. */
  blobServed?(source: string, outcome: CacheOutcome | 'local' | 'redirect' | 'head'): void;
  /** A source was asked for bytes over the network (or from spec bytes) to fill the cache. */
  upstreamFetch?(source: string): void;
  composed?(name: string, digest: Digest): void;
  /** A tag's registry could not be reached, so its last resolution was used (`ref` normalized). */
  staleTag?(ref: string, digest: Digest, err: unknown): void;
}

/** Default of how long a tag's last resolution may stand in for one its registry did not answer. */
export const DEFAULT_TAG_STALE_IF_ERROR_MS = 24 * 3600_000;
/** Default bound of a manifest, tag or config request to a registry, retries included. */
export const DEFAULT_UPSTREAM_TIMEOUT_MS = 20_000;
/** How long after a manifest or config came from a registry it is written to the disk cache. */
const STORE_DELAY_MS = 1000;
/** Manifests and configs waiting to be written at most, and their bytes. */
const MAX_STORES_QUEUED = 256;
const MAX_STORE_BYTES_QUEUED = 16 * 1024 * 1024;
/**
 * Whether a failure says the registry could not answer now (down, silent, rate-limited), not that the tag
 * is gone or forbidden or its image cannot be used.
 */
function unreachable(err: unknown): boolean {
  const kind = errorKind(err);
  return kind === 'Unavailable' || kind === 'DeadlineExceeded' || isRateLimited(err);
}

/** Default of how long a name's compositions stay servable by digest from memory. */
export const HISTORY_TTL_MS = 15 * 60_000;
/** How many of a name's compositions stay servable by digest (the default of `historyPerName`). */
export const HISTORY_PER_NAME = 4;

/** Bytes of upstream manifests, and of upstream configs, kept in memory (the disk cache holds them too). */
const MEMORY_UPSTREAM_BYTES = 64 * 2 ** 20;
const DEFAULT_COMPOSITION_BYTES = 128 * 2 ** 20;

export interface FacadeServiceOptions {
  providers: ReadonlyMap<string, SpecProvider>;
  upstream: UpstreamRegistry;
  cache: BlobCache;
  /** Asked in order for every layer. */
  sources: readonly LayerSource[];
  staticLayers?: readonly StaticLayer[];
  platform: Platform;
  /** How long a tag → digest resolution is trusted (default 60 s). */
  tagTtlMs?: number;
  /**
   * How long after its last resolution a tag's digest is still used when its registry cannot be reached
   * (unavailable, timed out, rate-limited) (default a day; 0: never).
   */
  tagStaleIfErrorMs?: number;
  /** While a tag's registry cannot be reached, how often it is asked again (default 10 s). */
  staleRecheckMs?: number;
  /** Tags' last resolutions kept beyond this process (tag-file.ts): those found at start, and where to tell changes. */
  resolvedTags?: { initial: readonly ResolvedTag[]; changed(entries: () => ResolvedTag[]): void };
  /**
   * Bound of each manifest, tag or config request to a registry, its retries included (default 20 s): a
   * registry that goes silent fails it (DeadlineExceeded) instead of holding the pull for its client's
   * minutes of timeouts and retries.
   */
  upstreamTimeoutMs?: number;
  /** How long a name's compositions stay servable by digest (default 15 min), and how many per name (4). */
  historyTtlMs?: number;
  historyPerName?: number;
  /** Bound of every in-memory map (default 4096 entries; manifests and configs 512). */
  maxEntries?: number;
  /**
   * Bytes of compositions held in memory (default 128 MiB): their manifests, configs and direct content
   * layers, which a spec may make megabytes each; the least recently used names go first. Upstream
   * manifests and configs are held to MEMORY_UPSTREAM_BYTES each.
   */
  maxCompositionBytes?: number;
  allowHttpHost?: (host: string) => boolean;
  /**
   * List remote content layers' URLs in the manifest (`urls`), as Gitpod does. Off by default: the facade
   * serves those layers itself, and a client that sees `urls` may bypass it (and learns signed URLs).
   */
  contentLayerUrls?: boolean;
  observer?: FacadeObserver;
  /** The cache shared with other replicas, beneath this one's memory. */
  shared?: SharedTiers;
}

/** Second tiers of the service's caches, shared by replicas (see shared/shared-store.ts). */
export interface SharedTiers {
  /** Compositions by manifest digest (content-addressed: no expiry). */
  compositions: CacheTier<string, NamedComposition>;
  /** A name's recent manifest digests, so a blob of a manifest another replica served is found. */
  recent: SharedList<Digest>;
  /** Tag → descriptor resolutions (these expire). */
  tags: CacheTier<string, Descriptor>;
  /**
   * Manifests and configs fetched from registries, by digest (content-addressed): a replica composing an
   * image another one fetched asks its registry for none of them (Docker Hub counts manifest GETs as pulls).
   */
  upstream: CacheTier<string, Uint8Array>;
}

export interface ServedManifest {
  bytes: Uint8Array;
  mediaType: string;
  digest: Digest;
}

/** A blob of a composed image: where it comes from, and its bytes (which fail rather than end short). */
export type ServedBlob =
  | { kind: 'redirect'; descriptor: Descriptor; source: string; url: string }
  | { kind: 'blob'; descriptor: Descriptor; source: string; blob: Blob };

interface Composition {
  image: ComposedImage;
  baseRef: string;
}

interface FetchedImage {
  bytes: Uint8Array;
  mediaType: string;
  digest: Digest;
  parsed: ParsedManifest;
}

export class FacadeService {
  private readonly o: FacadeServiceOptions;
  private readonly resolutions: LoadingCache<string, Descriptor>;
  /** A tag's last resolution and when that was, kept past the resolution's TTL (bounded like it). */
  private readonly lastDigest: TtlLru<string, ResolvedTag>;
  /** Tags whose registry could not be reached just now, with why (kept `staleRecheckMs`). */
  private readonly unreachable: TtlLru<string, { err: unknown }>;
  /** Manifests and configs waiting to go into the disk cache, and the timer that writes them. */
  private readonly toStore = new Map<Digest, { desc: Descriptor; bytes: Uint8Array }>();
  private toStoreBytes = 0;
  private storeTimer: NodeJS.Timeout | undefined;
  private storing: Promise<void> = Promise.resolve();
  private readonly manifests: LoadingCache<Digest, FetchedImage>;
  /** Parsed configs, with the size of their bytes. */
  private readonly configs: LoadingCache<Digest, { config: ImageConfig; size: number }>;
  private readonly history: TtlLru<string, Composition[]>;
  private readonly composing: LoadingCache<string, Composition>;
  private readonly historyPerName: number;
  private staticLayers: readonly StaticLayer[];

  constructor(options: FacadeServiceOptions) {
    this.o = options;
    const maxEntries = options.maxEntries ?? 4096;
    this.resolutions = new LoadingCache({
      ttlMs: options.tagTtlMs ?? 60_000,
      maxEntries,
      tier: options.shared?.tags,
    });
    this.lastDigest = new TtlLru({ ttlMs: Number.POSITIVE_INFINITY, maxEntries });
    for (const t of options.resolvedTags?.initial ?? []) this.lastDigest.set(t.ref, t);
    this.unreachable = new TtlLru({ ttlMs: options.staleRecheckMs ?? 10_000, maxEntries });
    const upstreamBytes = {
      ttlMs: Number.POSITIVE_INFINITY,
      maxEntries: 512,
      maxBytes: MEMORY_UPSTREAM_BYTES,
    };
    this.manifests = new LoadingCache({ ...upstreamBytes, sizeOf: (m) => m.bytes.byteLength });
    this.configs = new LoadingCache({ ...upstreamBytes, sizeOf: (c) => c.size });
    const compositionBytes = options.maxCompositionBytes ?? DEFAULT_COMPOSITION_BYTES;
    this.history = new TtlLru({
      ttlMs: options.historyTtlMs ?? HISTORY_TTL_MS,
      maxEntries,
      maxBytes: compositionBytes,
      sizeOf: (list) => list.reduce((n, c) => n + compositionSize(c), 0),
    });
    this.staticLayers = options.staticLayers ?? [];
    // Joins identical compositions running at once (a HEAD and a GET from the same pull); kept for
    // a moment only, so the next request sees moved tags and changed specs.
    this.composing = new LoadingCache({
      ttlMs: 1000,
      maxEntries,
      maxBytes: compositionBytes,
      sizeOf: compositionSize,
    });
    this.historyPerName = options.historyPerName ?? HISTORY_PER_NAME;
  }

  /**
   * Replaces the static layers (a static layer file was reloaded): compositions from now on use these;
   * those made before stay servable by digest for the history TTL.
   */
  setStaticLayers(layers: readonly StaticLayer[]): void {
    this.staticLayers = layers;
  }

  get providerKeys(): string[] {
    return [...this.o.providers.keys()];
  }

  /** The composed manifest for a tag (composed now), or exactly the bytes of a digest this name served. */
  async manifest(name: FacadeName, reference: string, signal?: AbortSignal): Promise<ServedManifest> {
    const key = nameKey(name);
    if (reference.includes(':')) {
      const digest = parseDigest(reference);
      const known =
        this.findComposition(key, (c) => c.image.manifestDigest === digest) ??
        (await this.sharedComposition(key, digest));
      const c = known ?? (await this.compose(name, signal));
      if (c.image.manifestDigest !== digest) {
        throw notFound(`manifest ${digest} is not (or no longer) the image of ${key}`);
      }
      return served(c.image);
    }
    return served((await this.compose(name, signal)).image);
  }

  /**
   * The tags listed for a name (`tags/list`). Every tag of a name composes its spec as it is now, so one
   * stands for all: `latest`, what clients ask for by default. NotFound when the spec does not exist.
   */
  async tags(name: FacadeName): Promise<string[]> {
    const provider = this.o.providers.get(name.provider);
    if (!provider) throw notFound(`no spec provider ${JSON.stringify(name.provider)}`);
    await provider.getSpec(name.id);
    return ['latest'];
  }

  /** A blob of the name's composed image: where it comes from, and a way to stream it. */
  async blob(name: FacadeName, digest: Digest, signal?: AbortSignal): Promise<ServedBlob> {
    const key = nameKey(name);
    let found = this.findBlob(key, digest);
    if (!found && (await this.sharedRecent(key))) found = this.findBlob(key, digest);
    if (!found) {
      // Not in what this name served lately: maybe in what it is now.
      await this.compose(name, signal);
      found = this.findBlob(key, digest);
    }
    if (!found) throw notFound(`blob ${digest} is not part of the image of ${key}`);
    const { composition, layer } = found;
    const image = composition.image;
    if (!layer) {
      const descriptor = image.manifest.config;
      return this.served('config', bytesBlob(descriptor, image.configBytes), false);
    }
    const hit = this.sourceOf(key, composition, layer);
    if ('redirect' in hit) {
      return { kind: 'redirect', descriptor: layer.descriptor, source: hit.source, url: hit.redirect };
    }
    return this.served(hit.source, hit.blob, hit.remote);
  }

  /**
   * Composes a name now and lists the blobs of its image that come over the network (served through the
   * disk cache), each as its source (fetches counted as upstream fetches): what a prefetch puts in the
   * cache. Redirected, direct and static layers are left out, and the config, which is composed here.
   * A composition held or running from before is not joined: the spec may have just changed.
   */
  async networkBlobs(name: FacadeName): Promise<{ manifestDigest: Digest; blobs: Blob[] }> {
    const key = nameKey(name);
    const composition = await this.compose(name, undefined, true);
    const blobs = new Map<Digest, Blob>();
    for (const layer of composition.image.layers) {
      if (blobs.has(layer.descriptor.digest)) continue;
      const hit = this.sourceOf(key, composition, layer);
      if ('redirect' in hit || !hit.remote) continue;
      blobs.set(layer.descriptor.digest, this.counted(hit.source, hit.blob));
    }
    return { manifestDigest: composition.image.manifestDigest, blobs: [...blobs.values()] };
  }

  private sourceOf(key: string, composition: Composition, layer: ComposedLayer): SourcedBlob {
    const query = { descriptor: layer.descriptor, layer, baseRef: composition.baseRef };
    for (const s of this.o.sources) {
      const hit = s.find(query);
      if (hit) return hit;
    }
    throw internal(
      `blob ${layer.descriptor.digest} of ${key}: no source can serve a ${layer.origin.kind} layer`,
    );
  }

  /** A network blob whose fetches are counted. */
  private counted(source: string, blob: Blob): Blob {
    return {
      descriptor: blob.descriptor,
      open: (o) => {
        this.o.observer?.upstreamFetch?.(source);
        return blob.open(o);
      },
    };
  }

  /** A blob as served: counted by source; one from the network goes through the disk cache. */
  private served(source: string, blob: Blob, remote: boolean): ServedBlob {
    const observer = this.o.observer;
    const descriptor = blob.descriptor;
    if (!remote) {
      return {
        kind: 'blob',
        descriptor,
        source,
        blob: {
          descriptor,
          open: (o) => {
            observer?.blobServed?.(source, 'local');
            return blob.open(o);
          },
        },
      };
    }
    const cached = this.o.cache.wrap(this.counted(source, blob), (outcome) =>
      observer?.blobServed?.(source, outcome),
    );
    return { kind: 'blob', descriptor, source, blob: cached };
  }

  private findComposition(key: string, pred: (c: Composition) => boolean): Composition | undefined {
    return this.history.get(key)?.find(pred);
  }

  private findBlob(
    key: string,
    digest: Digest,
  ): { composition: Composition; layer?: ComposedLayer } | undefined {
    for (const c of this.history.get(key) ?? []) {
      if (c.image.configDigest === digest) return { composition: c };
      const layer = c.image.layers.find((l) => l.descriptor.digest === digest);
      if (layer) return { composition: c, layer };
    }
    return undefined;
  }

  /** A composition of this name that some replica stored under its manifest digest. */
  private async sharedComposition(key: string, digest: Digest): Promise<Composition | undefined> {
    const hit = await this.o.shared?.compositions.get(digest);
    if (!hit || hit.value.name !== key) return undefined;
    const c = { image: hit.value.image, baseRef: hit.value.baseRef };
    this.remember(key, c);
    return c;
  }

  /** Takes in the name's recent compositions from the shared tier; whether any was new here. */
  private async sharedRecent(key: string): Promise<boolean> {
    const recent = await this.o.shared?.recent.get(key);
    if (!recent) return false;
    const have = new Set((this.history.get(key) ?? []).map((c) => c.image.manifestDigest));
    const missing = recent.value.filter((d) => !have.has(d)).slice(0, this.historyPerName);
    const found = await Promise.all(missing.map((d) => this.sharedComposition(key, d)));
    return found.some((c) => c !== undefined);
  }

  /**
   * Shares a composition new to this replica: by its digest, then in the name's recent list (a push in
   * one step, so replicas composing under one name at once keep each other's digests).
   */
  private async share(key: string, c: Composition): Promise<void> {
    const shared = this.o.shared;
    if (!shared) return;
    const digest = c.image.manifestDigest;
    await shared.compositions.set(digest, { name: key, baseRef: c.baseRef, image: c.image });
    await shared.recent.push(key, digest);
  }

  private remember(key: string, c: Composition): void {
    const old = (this.history.get(key) ?? []).filter(
      (x) => x.image.manifestDigest !== c.image.manifestDigest,
    );
    this.history.set(key, [c, ...old].slice(0, this.historyPerName));
  }

  /** `fresh`: reads the spec anew instead of joining a composition held or running (later ones join it). */
  private compose(name: FacadeName, signal?: AbortSignal, fresh = false): Promise<Composition> {
    const key = nameKey(name);
    void signal;
    return this.composing[fresh ? 'reload' : 'get'](key, async () => {
      const c = await this.composeNow(name);
      const isNew = !this.findComposition(key, (x) => x.image.manifestDigest === c.image.manifestDigest);
      this.remember(key, c);
      if (isNew) await this.share(key, c);
      this.o.observer?.composed?.(key, c.image.manifestDigest);
      return c;
    });
  }

  private async composeNow(name: FacadeName): Promise<Composition> {
    const provider = this.o.providers.get(name.provider);
    if (!provider) throw notFound(`no spec provider ${JSON.stringify(name.provider)}`);
    const spec = await provider.getSpec(name.id);
    validateImageSpec(spec, { allowHttpHost: this.o.allowHttpHost });
    const image = await this.composeSpec(spec);
    return { image, baseRef: spec.baseRef };
  }

  /** Composes a spec (exposed for `strata spec` checks and tests). */
  async composeSpec(spec: ImageSpec): Promise<ComposedImage> {
    const staticLayers = this.staticLayers;
    const refs = [
      spec.baseRef,
      ...addedImageRefs(spec).map((a) => a.ref),
      ...staticLayers.flatMap((s) => (s.kind === 'image' ? [s.ref] : [])),
    ];
    const views = new Map<string, ImageView>();
    await Promise.all(
      [...new Set(refs)].map(async (ref) => {
        views.set(ref, await this.imageView(ref));
      }),
    );
    const viewOf = (ref: string): ImageView => {
      const v = views.get(ref);
      if (!v) throw internal(`image ${ref} was not resolved`);
      return v;
    };
    const statics = staticLayers.map((s) =>
      s.kind === 'image' ? staticImageAddition(viewOf(s.ref), s.ref) : s.addition,
    );
    const additions = specAdditions(spec, (a) => viewOf(a.ref), statics, {
      contentLayerUrls: this.o.contentLayerUrls ?? false,
    });
    return compose(viewOf(spec.baseRef), additions, { baseRef: spec.baseRef });
  }

  /**
   * A tag's descriptor, resolved (and kept for the TTL); or, while its registry cannot be reached, its last
   * one, if that is recent enough and its manifest at hand (in memory or in the disk cache). The registry
   * is asked again at most every `staleRecheckMs` meanwhile, so composing during an outage does not wait
   * out the client's retries each time.
   */
  private async resolveTag(ref: Reference): Promise<Descriptor> {
    const key = formatReference(ref);
    const last = this.lastDigest.get(key);
    const lastDigest = last && parseDigest(last.digest);
    const atHand =
      lastDigest !== undefined &&
      (this.manifests.peek(lastDigest) !== undefined || this.o.cache.has(lastDigest));
    const maxAge = this.o.tagStaleIfErrorMs ?? DEFAULT_TAG_STALE_IF_ERROR_MS;
    const stale =
      last && lastDigest && atHand && Date.now() - last.at <= maxAge
        ? { mediaType: last.mediaType, digest: lastDigest, size: last.size }
        : undefined;
    const failed = this.unreachable.get(key);
    if (stale && failed !== undefined) {
      this.o.observer?.staleTag?.(key, stale.digest, failed.err);
      return stale;
    }
    try {
      const desc = await this.resolutions.get(key, async () => {
        // A HEAD, which registries such as Docker Hub do not count as a pull, when the manifest is likely
        // at hand: the tag's last one is in memory or on disk, or another replica may have shared it (its
        // manifest is then fetched by digest through the caches). Otherwise one GET by tag brings digest
        // and bytes together, a round trip less on the way to a cold composite manifest than HEAD then GET.
        if (atHand || this.o.shared) {
          return this.bounded(`resolve ${key}`, (signal) => this.o.upstream.resolve(ref, { signal }));
        }
        const got = await this.bounded(`fetch manifest ${key}`, (signal) =>
          this.o.upstream.fetchManifest(ref, { signal }),
        );
        this.manifests.set(got.digest, got);
        this.keep(descriptorOf(got), got.bytes, true);
        return descriptorOf(got);
      });
      this.resolved(key, desc, last);
      return desc;
    } catch (err) {
      if (!stale || !unreachable(err)) throw err;
      this.unreachable.set(key, { err });
      this.o.observer?.staleTag?.(key, stale.digest, err);
      return stale;
    }
  }

  /** Notes a tag's resolution; the file is told when it points elsewhere or its time moved by a minute. */
  private resolved(key: string, desc: Descriptor, last: ResolvedTag | undefined): void {
    const now = Date.now();
    this.lastDigest.set(key, {
      ref: key,
      digest: desc.digest,
      mediaType: desc.mediaType,
      size: desc.size,
      at: now,
    });
    const tags = this.o.resolvedTags;
    if (tags && (last?.digest !== desc.digest || now - last.at > 60_000)) {
      tags.changed(() => this.lastDigest.values());
    }
  }

  /**
   * A manifest or config into the disk cache (for after a restart), and, when it came from its registry,
   * into the shared tier (for the other replicas). Neither is waited for: failing is no loss (they are
   * caches).
   */
  private keep(desc: Descriptor, bytes: Uint8Array, share: boolean): void {
    this.store(desc, bytes);
    if (share) void this.o.shared?.upstream.set(desc.digest, bytes);
  }

  /**
   * A manifest or config into the disk cache, later: writes of small blobs go through the store's locks
   * and renames, which would otherwise slow a cold composition (~20 ms on a cold composite manifest). A
   * full queue (bounded in entries and bytes) drops it.
   */
  private store(desc: Descriptor, bytes: Uint8Array): void {
    const full =
      this.toStore.size >= MAX_STORES_QUEUED || this.toStoreBytes + bytes.byteLength > MAX_STORE_BYTES_QUEUED;
    if (full || this.o.cache.has(desc.digest) || this.toStore.has(desc.digest)) return;
    this.toStore.set(desc.digest, { desc, bytes });
    this.toStoreBytes += bytes.byteLength;
    this.storeTimer ??= setTimeout(() => void this.flush(), STORE_DELAY_MS).unref();
  }

  /**
   * Writes the manifests and configs waiting for the disk cache now, one at a time, and waits for writes
   * under way (at close, so that a restart finds them).
   */
  flush(): Promise<void> {
    clearTimeout(this.storeTimer);
    this.storeTimer = undefined;
    const queued = [...this.toStore.values()];
    this.toStore.clear();
    this.toStoreBytes = 0;
    if (queued.length === 0) return this.storing;
    this.storing = this.storing.then(async () => {
      // A cache whose directory went away (removed under a stopping facade) is not made again for these.
      if (!(await this.o.cache.writable())) return;
      for (const { desc, bytes } of queued) {
        if (this.o.cache.has(desc.digest)) continue;
        await this.o.cache.prefetch(bytesBlob(desc, bytes), AbortSignal.timeout(60_000)).catch(() => {});
      }
    });
    return this.storing;
  }

  /**
   * A manifest or config from the disk cache or else the shared tier (its digest checked either way), or
   * undefined. One found only in the shared tier goes into the disk cache too.
   */
  private async cached(digest: Digest, max: number): Promise<Uint8Array | undefined> {
    const local = await this.onDisk(digest, max);
    if (local) return local;
    const hit = await this.o.shared?.upstream.get(digest);
    if (!hit || hit.value.byteLength > max) return undefined;
    const desc = { mediaType: 'application/octet-stream', digest, size: hit.value.byteLength };
    this.keep(desc, hit.value, false);
    return hit.value;
  }

  /** A manifest or config the disk cache holds, read whole (its digest checked), or undefined. */
  private async onDisk(digest: Digest, max: number): Promise<Uint8Array | undefined> {
    const size = this.o.cache.sizeOf(digest);
    if (size === undefined || size > max) return undefined;
    try {
      const { stream } = await this.o.cache.read(
        { mediaType: 'application/octet-stream', digest, size },
        undefined,
        undefined,
      );
      return await readCapped(stream, max, `cached ${digest}`);
    } catch {
      return undefined; // evicted meanwhile, or no longer its digest: the registry is asked
    }
  }

  /** An image's manifest (the platform's, from an index) and config, from caches or its registry. */
  private async imageView(refString: string): Promise<ImageView> {
    const ref = withDefaultTag(parseNormalizedReference(refString));
    const up = this.o.upstream;
    // By digest (a child of an index, a tag's target, a ref by digest): the disk cache, the shared tier,
    // else the registry.
    const fetch = async (digest: Digest, descriptor?: Descriptor): Promise<FetchedImage> => {
      const bytes = await this.cached(digest, MAX_MANIFEST_BYTES);
      if (bytes) {
        const parsed = parseManifest(bytes, descriptor?.mediaType);
        return { bytes, mediaType: parsed.mediaType, digest, parsed };
      }
      const got = await this.bounded(`fetch manifest ${refString}`, (signal) =>
        up.fetchManifest(ref, descriptor ? { signal, descriptor } : { signal }),
      );
      this.keep(descriptorOf(got), got.bytes, true);
      return got;
    };
    let fetched: FetchedImage;
    if (ref.digest !== undefined) {
      const d = ref.digest;
      fetched = await this.manifests.get(d, () => fetch(d));
    } else {
      const desc = await this.resolveTag(ref);
      fetched = await this.manifests.get(desc.digest, () => fetch(desc.digest, desc));
    }
    if (fetched.parsed.kind === 'index') {
      const child = selectManifest(fetched.parsed.index, this.o.platform, `image ${refString}`);
      fetched = await this.manifests.get(child.digest, () => fetch(child.digest, child));
      if (fetched.parsed.kind !== 'manifest') {
        throw invalidArgument(`image ${refString}: index entry ${child.digest} is an index, not a manifest`);
      }
    }
    const manifest = fetched.parsed.manifest;
    const configDesc = manifest.config;
    const config = await this.configs.get(configDesc.digest, async () => {
      if (configDesc.size > MAX_CONFIG_BYTES) {
        throw invalidArgument(`image ${refString}: config of ${configDesc.size} bytes is too large`);
      }
      const cached = await this.cached(configDesc.digest, MAX_CONFIG_BYTES);
      if (cached) return { config: parseImageConfig(cached), size: cached.byteLength };
      // A full read is verified against the digest by the registry client.
      const bytes = await this.bounded(`fetch config of ${refString}`, async (signal) =>
        readCapped(
          await up.blob(ref, configDesc).open({ signal }),
          MAX_CONFIG_BYTES,
          `config of ${refString}`,
        ),
      );
      this.keep(configDesc, bytes, true);
      return { config: parseImageConfig(bytes), size: bytes.byteLength };
    });
    return { manifest, config: config.config, mediaType: fetched.mediaType };
  }

  /** An upstream request within `upstreamTimeoutMs`; past it, the request is cut and DeadlineExceeded thrown. */
  private async bounded<T>(what: string, call: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const ms = this.o.upstreamTimeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS;
    const signal = AbortSignal.timeout(ms);
    try {
      return await call(signal);
    } catch (err) {
      if (signal.aborted) {
        throw deadlineExceeded(`${what}: no answer from its registry within ${ms / 1000} s`, { cause: err });
      }
      // Other than a rate limit, ResourceExhausted is one of the registry client's size caps: an image
      // that cannot be composed as it is (400 to the client, not 429's "try again later").
      if (errorKind(err) === 'ResourceExhausted' && !isRateLimited(err)) {
        throw failedPrecondition(messageOf(err), { cause: err });
      }
      throw err;
    }
  }
}

/** The bytes a composition holds: its manifest, its config and its direct content layers. */
function compositionSize(c: Composition): number {
  let n = c.image.manifestBytes.byteLength + c.image.configBytes.byteLength;
  for (const l of c.image.layers) if (l.origin.kind === 'direct') n += l.origin.content.byteLength;
  return n;
}

function descriptorOf(m: FetchedImage): Descriptor {
  return { mediaType: m.mediaType, digest: m.digest, size: m.bytes.byteLength };
}

function nameKey(name: FacadeName): string {
  return `${name.provider}/${name.id}`;
}

function served(image: ComposedImage): ServedManifest {
  return { bytes: image.manifestBytes, mediaType: image.mediaType, digest: image.manifestDigest };
}
