// Where a blob of a composed image comes from. Sources are asked in order "do you have it?" (Gitpod's
// idea); the first that does answers with a Blob (the one blob abstraction) and whether it comes over the
// network, so the service serves it through the disk cache, or with a redirect. Nothing here buffers a
// blob.
import { Readable } from 'node:stream';
import { invalidArgument } from '../../errors.ts';
import type { Blob, OpenOptions } from '../../oci/blob.ts';
import type { Descriptor } from '../../oci/descriptor.ts';
import { parseNormalizedReference } from '../../oci/reference.ts';
import type { ComposedLayer } from '../compose/compose.ts';
import type { BlobCache } from './cache.ts';

/** How a source serves a blob it has. */
export type SourcedBlob =
  /** The bytes, from this machine (verified already), or from the network (`remote`: through the cache). */
  | { source: string; blob: Blob; remote: boolean }
  /** The client fetches the bytes itself. */
  | { source: string; redirect: string };

/** One layer of a composed image asked for, with the repository its image came from. */
export interface BlobQuery {
  descriptor: Descriptor;
  layer: ComposedLayer;
  /** The spec's base ref (where `base` layers come from). */
  baseRef: string;
}

export interface LayerSource {
  readonly name: string;
  find(query: BlobQuery): SourcedBlob | undefined;
}

/** [offset, end) of a blob of `size` bytes for a range (clipped at the end). */
function span(range: OpenOptions['range'], size: number): { offset: number; end: number } {
  const offset = Math.min(range?.offset ?? 0, size);
  return { offset, end: range?.length === undefined ? size : Math.min(size, offset + range.length) };
}

/** A blob whose bytes are in memory (a composed config, a direct content layer). */
export function bytesBlob(descriptor: Descriptor, bytes: Uint8Array): Blob {
  return {
    descriptor,
    open: async (o = {}) => {
      const { offset, end } = span(o.range, bytes.byteLength);
      return Readable.from([Buffer.from(bytes.buffer, bytes.byteOffset + offset, end - offset)]);
    },
  };
}

/**
 * Static layers from gzip files named in the config: their bytes were put in the blob cache when the file
 * was read (and are held there while a composition may name them), so they are served by digest from it.
 */
export class StaticLayerSource implements LayerSource {
  readonly name = 'static';
  private readonly cache: Pick<BlobCache, 'read'>;
  constructor(cache: Pick<BlobCache, 'read'>) {
    this.cache = cache;
  }
  find(q: BlobQuery): SourcedBlob | undefined {
    if (q.layer.origin.kind !== 'static') return undefined;
    const descriptor = q.descriptor;
    const blob: Blob = {
      descriptor,
      open: async (o = {}) => (await this.cache.read(descriptor, o.range, undefined, o.signal)).stream,
    };
    return { source: this.name, blob, remote: false };
  }
}

/** Direct content layers: the bytes are in the spec. */
export class DirectLayerSource implements LayerSource {
  readonly name = 'direct';
  find(q: BlobQuery): SourcedBlob | undefined {
    const origin = q.layer.origin;
    if (origin.kind !== 'direct') return undefined;
    return { source: this.name, blob: bytesBlob(q.descriptor, origin.content), remote: false };
  }
}

export interface RemoteLayerOptions {
  /** Answer with a redirect to the URL instead of fetching, verifying and caching. */
  redirect: boolean;
  /** Hosts (`host` or `host:port`) whose content layers may be fetched over plain http. */
  allowHttpHost: (host: string) => boolean;
  /** The blob at a URL (over the registry client's HTTP layer, see url-blob.ts). */
  blobAt: (url: URL, descriptor: Descriptor) => Blob;
}

/** Remote content layers: fetched from their URL (verified, cached), or redirected to. */
export class RemoteLayerSource implements LayerSource {
  readonly name = 'remote';
  private readonly options: RemoteLayerOptions;
  constructor(options: RemoteLayerOptions) {
    this.options = options;
  }
  find(q: BlobQuery): SourcedBlob | undefined {
    const origin = q.layer.origin;
    if (origin.kind !== 'remote') return undefined;
    const url = new URL(origin.url);
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && this.options.allowHttpHost(url.host))) {
      throw invalidArgument(
        `content layer ${q.descriptor.digest}: ${url.protocol} URLs are not allowed for ${url.host}`,
      );
    }
    if (this.options.redirect) return { source: this.name, redirect: url.href };
    return { source: this.name, blob: this.options.blobAt(url, q.descriptor), remote: true };
  }
}

/** The image a layer comes from (the spec's base, or an added image), for sources that read it there. */
function originRef(q: BlobQuery): { domain: string; path: string } | undefined {
  const origin = q.layer.origin;
  let ref: string;
  if (origin.kind === 'base') ref = q.baseRef;
  else if (origin.kind === 'image') ref = origin.ref;
  else return undefined;
  const { domain, path } = parseNormalizedReference(ref);
  return { domain, path };
}

/** Layers of the base image and of added images, from their registries. */
export class UpstreamLayerSource implements LayerSource {
  readonly name = 'upstream';
  private readonly blobIn: (repo: { domain: string; path: string }, descriptor: Descriptor) => Blob;
  constructor(blobIn: (repo: { domain: string; path: string }, descriptor: Descriptor) => Blob) {
    this.blobIn = blobIn;
  }
  find(q: BlobQuery): SourcedBlob | undefined {
    const repo = originRef(q);
    // The descriptor as the source image lists it; only the media type may differ in the composed one.
    return repo && { source: this.name, blob: this.blobIn(repo, q.descriptor), remote: true };
  }
}

/**
 * Layers of images in this registry's own hosted repositories (a base image pushed to `strata up`): read
 * from the content store they are in, not fetched over loopback into the cache as a second copy.
 */
export class HostedLayerSource implements LayerSource {
  readonly name = 'hosted';
  private readonly o: {
    /** Whether a registry domain (`host:port`) is this registry. */
    isOwn(domain: string): boolean;
    /** The repository's blob, undefined when it has none of that digest. */
    blobIn(repository: string, descriptor: Descriptor): Blob | undefined;
  };
  constructor(o: HostedLayerSource['o']) {
    this.o = o;
  }
  find(q: BlobQuery): SourcedBlob | undefined {
    const repo = originRef(q);
    if (!repo || !this.o.isOwn(repo.domain)) return undefined;
    const blob = this.o.blobIn(repo.path, q.descriptor);
    return blob && { source: this.name, blob, remote: false };
  }
}
