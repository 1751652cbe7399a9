// Images in this registry's own hosted repositories, as the composing service asks for them: manifests and
// configs read in-process from the hosted repositories, not requested over loopback from the registry
// itself. That request would be one more round trip, and with client authentication on it would need
// credentials for itself; every other registry is asked through the client as before.
import { dataLoss, resourceExhausted } from '../errors.ts';
import type { HostedRegistry } from '../hosted/registry.ts';
import type { Blob } from '../oci/blob.ts';
import type { Descriptor } from '../oci/descriptor.ts';
import { digestLike } from '../oci/digest.ts';
import { MAX_MANIFEST_BYTES, parseManifest } from '../oci/manifest.ts';
import { formatReference, type Reference } from '../oci/reference.ts';
import type { UpstreamRegistry } from './service.ts';

type Fetched = Awaited<ReturnType<UpstreamRegistry['fetchManifest']>>;

export class HostedUpstream implements UpstreamRegistry {
  private readonly o: {
    hosted: HostedRegistry;
    /** Whether a registry domain (`host:port`) is this registry. */
    isOwn(domain: string): boolean;
    /** Every other registry. */
    upstream: UpstreamRegistry;
  };

  constructor(o: HostedUpstream['o']) {
    this.o = o;
  }

  async resolve(ref: Reference, options?: { signal?: AbortSignal }): Promise<Descriptor> {
    if (!this.o.isOwn(ref.domain)) return this.o.upstream.resolve(ref, options);
    return this.o.hosted.manifestDescriptor(ref.path, target(ref));
  }

  async fetchManifest(
    ref: Reference,
    options?: { signal?: AbortSignal; descriptor?: Descriptor },
  ): Promise<Fetched> {
    if (!this.o.isOwn(ref.domain)) return this.o.upstream.fetchManifest(ref, options);
    const wanted = options?.descriptor?.digest ?? ref.digest;
    const what = `manifest ${formatReference(ref)}`;
    const stored = await this.o.hosted.manifest(ref.path, wanted ?? target(ref));
    if (stored.bytes.byteLength > MAX_MANIFEST_BYTES)
      throw resourceExhausted(`${what}: ${stored.bytes.byteLength} bytes exceeds ${MAX_MANIFEST_BYTES}`);
    // The store keeps bytes under their digest; checked anyway, as bytes from any registry are.
    const digest = digestLike(stored.bytes, wanted ?? stored.digest);
    if (digest !== stored.digest || (wanted !== undefined && digest !== wanted))
      throw dataLoss(`${what}: stored bytes hash to ${digest}, not ${wanted ?? stored.digest}`);
    return {
      bytes: stored.bytes,
      mediaType: stored.mediaType,
      digest,
      parsed: parseManifest(stored.bytes, stored.mediaType),
    };
  }

  blob(repo: { domain: string; path: string }, desc: Descriptor): Blob {
    if (!this.o.isOwn(repo.domain)) return this.o.upstream.blob(repo, desc);
    const stored = this.o.hosted.blob(repo.path, desc.digest);
    return { descriptor: desc, open: (o) => stored.open(o) };
  }
}

function target(ref: Reference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}
