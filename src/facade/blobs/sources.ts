// Where a blob of a composed image comes from. Sources are asked in order "do you have it?" (Gitpod's
// idea); the first that does answers with a way to stream it (local, or a fill through the disk cache) or
// with a redirect. Nothing here buffers a blob.
import { Readable } from 'node:stream';
import { FileRange } from '../../content/file-range.ts';
import { invalidArgument } from '../../errors.ts';
import type { Descriptor } from '../../oci/descriptor.ts';
import type { Digest } from '../../oci/digest.ts';
import { parseNormalizedReference } from '../../oci/reference.ts';
import type { ComposedLayer } from '../compose/compose.ts';
import type { FillSource, ReadRange } from './cache.ts';

/** How a source serves a blob it has. */
export type Found =
  /** Bytes on this machine, already verified: stream them (or a range) directly. */
  | { kind: 'local'; source: string; open(range: ReadRange | undefined): Readable }
  /** Bytes elsewhere: fill the disk cache from them (verified), serving readers as they arrive. */
  | { kind: 'fill'; source: string; fill: FillSource }
  /** The client fetches the bytes itself. */
  | { kind: 'redirect'; source: string; url: string };

/** One layer of a composed image asked for, with the repository its image came from. */
export interface BlobQuery {
  descriptor: Descriptor;
  layer: ComposedLayer;
  /** The spec's base ref (where `base` layers come from). */
  baseRef: string;
}

export interface BlobSource {
  readonly name: string;
  find(query: BlobQuery): Found | undefined;
}

/** Static layers from gzip files named in the config, served from those files. */
export class StaticFileSource implements BlobSource {
  readonly name = 'static';
  private readonly files: ReadonlyMap<Digest, string>;
  constructor(files: ReadonlyMap<Digest, string>) {
    this.files = files;
  }
  find(q: BlobQuery): Found | undefined {
    const path = this.files.get(q.descriptor.digest);
    if (path === undefined) return undefined;
    return {
      kind: 'local',
      source: this.name,
      open: (range) => new FileRange(path, range?.start ?? 0, range?.end ?? q.descriptor.size),
    };
  }
}

/** Direct content layers: the bytes are in the spec; they go through the cache so they are stored once. */
export class DirectLayerSource implements BlobSource {
  readonly name = 'direct';
  find(q: BlobQuery): Found | undefined {
    const origin = q.layer.origin;
    if (origin.kind !== 'direct') return undefined;
    const content = origin.content;
    return {
      kind: 'fill',
      source: this.name,
      fill: async (offset) =>
        Readable.from([
          Buffer.from(content.buffer, content.byteOffset + offset, content.byteLength - offset),
        ]),
    };
  }
}

/** Opens a URL's bytes from an offset; implemented over the registry client's HTTP layer. */
export type UrlOpener = (url: URL, offset: number, signal: AbortSignal) => Promise<Readable>;

export interface RemoteLayerOptions {
  /** Answer with a redirect to the URL instead of fetching, verifying and caching. */
  redirect: boolean;
  /** Hosts (`host` or `host:port`) whose content layers may be fetched over plain http. */
  allowHttpHost: (host: string) => boolean;
  open: UrlOpener;
}

/** Remote content layers: fetched from their URL (verified, cached), or redirected to. */
export class RemoteLayerSource implements BlobSource {
  readonly name = 'remote';
  private readonly options: RemoteLayerOptions;
  constructor(options: RemoteLayerOptions) {
    this.options = options;
  }
  find(q: BlobQuery): Found | undefined {
    const origin = q.layer.origin;
    if (origin.kind !== 'remote') return undefined;
    const url = new URL(origin.url);
    if (url.protocol === 'file:') return undefined;
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && this.options.allowHttpHost(url.host))) {
      throw invalidArgument(
        `content layer ${q.descriptor.digest}: ${url.protocol} URLs are not allowed for ${url.host}`,
      );
    }
    if (this.options.redirect) return { kind: 'redirect', source: this.name, url: url.href };
    return {
      kind: 'fill',
      source: this.name,
      fill: (offset, signal) => this.options.open(url, offset, signal),
    };
  }
}

/** Streams a blob of a repository from its registry, from an offset (Range). */
export type RegistryBlobOpener = (
  repo: { domain: string; path: string },
  desc: Descriptor,
  offset: number,
  signal: AbortSignal,
) => Promise<Readable>;

/** Layers of the base image and of added images, from their registries. */
export class UpstreamLayerSource implements BlobSource {
  readonly name = 'upstream';
  private readonly open: RegistryBlobOpener;
  constructor(open: RegistryBlobOpener) {
    this.open = open;
  }
  find(q: BlobQuery): Found | undefined {
    const origin = q.layer.origin;
    let ref: string;
    if (origin.kind === 'base') ref = q.baseRef;
    else if (origin.kind === 'image') ref = origin.ref;
    else return undefined;
    const { domain, path } = parseNormalizedReference(ref);
    // The descriptor as the source image lists it; only the media type may differ in the composed one.
    const desc = q.descriptor;
    return {
      kind: 'fill',
      source: this.name,
      fill: (offset, signal) => this.open({ domain, path }, desc, offset, signal),
    };
  }
}
