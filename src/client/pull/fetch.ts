// The fetch half of a pull into a daemon: a walk of the descriptor graph from the resolved root with
// containerd's handlers: fetch if missing (below), then the children of manifests and indexes, their gc.ref
// labels and the platform filter (handlers.ts). The fetch handler streams each blob the namespace lacks
// from the registry straight into a Content.Write ingest (resuming what an earlier attempt left), reads
// manifests and indexes whole (capped, verified), and gives every blob the distribution source label.
import type { Readable } from 'node:stream';
import { dataLoss, isDataLoss, isFailedPrecondition, isUnavailable } from '../../errors.ts';
import type { Descriptor, Platform } from '../../oci/descriptor.ts';
import { digestLike } from '../../oci/digest.ts';
import { type ImageManifest, MAX_MANIFEST_BYTES } from '../../oci/manifest.ts';
import { isConfigType, isIndexType } from '../../oci/media-types.ts';
import type { Reference } from '../../oci/reference.ts';
import { type Handler, handlers, isManifestLike, walk } from '../../oci/walk.ts';
import type { RegistryClient } from '../../registry/client.ts';
import { tracePhase } from '../../trace.ts';
import type { DaemonApi, IngestWriter, Labels } from '../daemon-api.ts';
import type { BlobKind, PullListener } from './events.ts';
import { allChildren, children, type Documents, filterPlatform, setGcLabels } from './handlers.ts';
import { appendDistributionSource } from './labels.ts';
import type { Presence } from './presence.ts';

/** Content.Write messages carry at most this much data, as containerd's client sends. */
export const WRITE_CHUNK_BYTES = 1 << 20;

export interface FetchOptions {
  /** The platform whose manifest an index is narrowed to; every one when undefined. */
  platform: Platform | undefined;
  concurrency: number;
  signal: AbortSignal;
  presence: Presence;
  onEvent?: PullListener;
  /** Told about each image manifest reached, before its config and layers are fetched. */
  onManifest?: (desc: Descriptor, manifest: ImageManifest) => void;
}

export interface FetchStats {
  fetched: number;
  /** Blobs the namespace had already. */
  present: number;
  /**
   * Blobs the namespace lacked but the daemon's content store had (another namespace's, e.g. pushed to
   * the hosted registry of `strata up`, or an ingest finished before): linked in, no byte transferred.
   */
  linked: number;
  /** Bytes written to the daemon now. */
  bytes: number;
}

/** containerd's ingest ref for a descriptor: `<kind>-<digest>`. */
export function ingestRefKey(desc: Descriptor, kind: BlobKind): string {
  return `${kind}-${desc.digest}`;
}

export async function fetchImage(
  registry: RegistryClient,
  api: DaemonApi,
  ref: Reference,
  root: Descriptor,
  opts: FetchOptions,
): Promise<FetchStats> {
  const fetcher = new Fetcher(registry, api, ref, opts);
  const docs = fetcher.documents;
  const kids = filterPlatform(opts.platform, root, setGcLabels(api, docs, allChildren));
  const onManifest = (desc: Descriptor, manifest: ImageManifest): void => {
    fetcher.configs.add(manifest.config.digest);
    opts.onManifest?.(desc, manifest);
  };
  await walk([root], handlers(fetcher.handler, children(docs, kids, onManifest)), {
    concurrency: opts.concurrency,
    signal: opts.signal,
  });
  return fetcher.stats;
}

/** The fetch-if-missing handler of one pull, with what it learns for the handlers after it. */
class Fetcher {
  readonly stats: FetchStats = { fetched: 0, present: 0, linked: 0, bytes: 0 };
  readonly documents: Documents = { bytes: new Map(), labels: new Map() };
  /** Digests of the image configs seen so far (their media types need not say so). */
  readonly configs = new Set<string>();
  private readonly registry: RegistryClient;
  private readonly api: DaemonApi;
  private readonly ref: Reference;
  private readonly presence: Presence;
  private readonly emit: PullListener;

  constructor(registry: RegistryClient, api: DaemonApi, ref: Reference, opts: FetchOptions) {
    this.registry = registry;
    this.api = api;
    this.ref = ref;
    this.presence = opts.presence;
    this.emit = opts.onEvent ?? (() => {});
  }

  readonly handler: Handler = async (desc, { signal }) => {
    const kind = this.kindOf(desc);
    if (isManifestLike(desc)) {
      const { bytes, labels } = await this.fetchDocument(desc, kind, signal);
      this.documents.bytes.set(desc.digest, bytes);
      this.documents.labels.set(desc.digest, labels);
      this.presence.present(desc.digest, {});
    } else {
      this.presence.present(desc.digest, await this.fetchBlob(desc, kind, signal));
    }
    return [];
  };

  private kindOf(desc: Descriptor): BlobKind {
    if (isIndexType(desc.mediaType)) return 'index';
    if (isManifestLike(desc)) return 'manifest';
    return this.configs.has(desc.digest) || isConfigType(desc.mediaType) ? 'config' : 'layer';
  }

  /** The distribution source label to add to `have` (nothing when it lists this repository already). */
  private sourceLabel(have: Labels): Labels {
    const add = appendDistributionSource(have, this.ref.domain, this.ref.path);
    return add ? { [add.key]: add.value } : {};
  }

  /**
   * A blob the namespace has: held by the pull's lease (what else holds it may go meanwhile), counted,
   * told, and given the source label; returns its labels.
   */
  private async present(desc: Descriptor, kind: BlobKind, have: Labels): Promise<Labels> {
    const update = this.sourceLabel(have);
    await Promise.all([
      this.api.leaseContent(desc.digest),
      Object.keys(update).length > 0 ? this.api.updateContentLabels(desc.digest, update) : undefined,
    ]);
    this.stats.present++;
    this.emit({ type: 'exists', kind, descriptor: desc });
    return { ...have, ...update };
  }

  /** A blob the daemon's store had, now committed into the namespace without a byte from the registry. */
  private linked(desc: Descriptor, kind: BlobKind): void {
    this.stats.linked++;
    this.emit({ type: 'exists', kind, descriptor: desc });
  }

  private fetched(desc: Descriptor, kind: BlobKind, started: number, bytes: number): void {
    this.stats.fetched++;
    this.stats.bytes += bytes;
    this.emit({ type: 'fetch-done', kind, descriptor: desc, ms: performance.now() - started, bytes });
  }

  /** Streams `desc` into the daemon unless it is there; returns its labels afterwards. */
  private async fetchBlob(desc: Descriptor, kind: BlobKind, signal: AbortSignal): Promise<Labels> {
    const { api } = this;
    const info = await api.contentInfo(desc.digest);
    if (info) return this.present(desc, kind, info.labels);
    const labels = this.sourceLabel({});
    const started = performance.now();
    let wrote = 0;
    let transferred = false;
    // A resumed ingest whose bytes turn out wrong (commit refuses the digest) is restarted once from 0.
    for (let attempt = 1; ; attempt++) {
      const writer = await this.openWriter(desc, kind, labels, signal);
      if (!writer) return labels;
      const resumed = writer.offset > 0;
      try {
        let offset = writer.offset;
        if (offset > desc.size || attempt > 1) {
          await writer.truncate();
          offset = 0;
        }
        if (offset < desc.size) {
          transferred = true;
          this.emit({ type: 'fetch-start', kind, descriptor: desc, offset });
          const endFetch = tracePhase(`fetch ${kind} ${desc.digest.slice(7, 19)}`);
          const repo = { domain: this.ref.domain, path: this.ref.path };
          const body = await this.registry.fetchBlob(repo, desc, {
            range: { offset },
            signal,
            verify: false,
          });
          wrote += await pump(body, writer, offset, (bytes) =>
            this.emit({ type: 'fetch-progress', descriptor: desc, bytes }),
          );
          endFetch(`${desc.size} bytes`);
        }
        const endCommit = tracePhase(`commit-content ${kind} ${desc.digest.slice(7, 19)}`);
        await writer.commit(labels);
        endCommit();
        break;
      } catch (err) {
        writer.close();
        if (attempt === 1 && resumed && isFailedPrecondition(err)) continue;
        // The registry sent bytes that are not the blob (more than its size, or wrong): nothing in the
        // ingest is worth resuming from, so it goes now rather than when the lease does.
        if (isDataLoss(err)) await dropIngest(api, ingestRefKey(desc, kind));
        throw err;
      }
    }
    // The daemon had every byte (its store shares a blob another namespace holds, or an earlier attempt
    // finished the ingest): the commit above linked it, verified.
    if (transferred) this.fetched(desc, kind, started, wrote);
    else this.linked(desc, kind);
    return labels;
  }

  /** A manifest or index: its bytes (from the daemon, or fetched and stored) and its labels now. */
  private async fetchDocument(
    desc: Descriptor,
    kind: BlobKind,
    signal: AbortSignal,
  ): Promise<{ bytes: Buffer; labels: Labels }> {
    const { api } = this;
    const info = await api.contentInfo(desc.digest);
    if (info)
      return { bytes: await this.readStored(desc), labels: await this.present(desc, kind, info.labels) };
    const started = performance.now();
    const labels = this.sourceLabel({});
    // A finished ingest whose bytes turn out wrong (commit refuses the digest) is fetched afresh once.
    for (let attempt = 1; ; attempt++) {
      const writer = await this.openWriter(desc, kind, labels, signal);
      if (!writer) return { bytes: await this.readStored(desc), labels };
      try {
        if (writer.offset === desc.size && attempt === 1) {
          // The daemon's store has it (shared from another namespace): link it, read it back from there.
          await writer.commit(labels);
          this.linked(desc, kind);
          return { bytes: await this.readStored(desc), labels };
        }
        this.emit({ type: 'fetch-start', kind, descriptor: desc, offset: 0 });
        const { bytes } = await this.registry.fetchManifest(this.ref, { descriptor: desc, signal });
        if (writer.offset > 0) await writer.truncate();
        await writer.write(bytes);
        await writer.commit(labels);
        this.fetched(desc, kind, started, bytes.length);
        return { bytes, labels };
      } catch (err) {
        writer.close();
        if (attempt === 1 && isFailedPrecondition(err)) continue;
        throw err;
      }
    }
  }

  /**
   * The ingest for `desc`; undefined when the namespace got the blob meanwhile (written by someone else:
   * nothing to fetch, but it still gets our labels).
   */
  private async openWriter(
    desc: Descriptor,
    kind: BlobKind,
    labels: Labels,
    signal: AbortSignal,
  ): Promise<IngestWriter | undefined> {
    const writer = await this.api.openWriter(
      ingestRefKey(desc, kind),
      { digest: desc.digest, size: desc.size },
      signal,
    );
    if (writer) return writer;
    await this.api.updateContentLabels(desc.digest, labels);
    this.stats.present++;
    this.emit({ type: 'exists', kind, descriptor: desc });
    return undefined;
  }

  /** A manifest or index the namespace holds, read from the daemon and checked against its digest. */
  private async readStored(desc: Descriptor): Promise<Buffer> {
    const bytes = await this.api.readContent(desc.digest, MAX_MANIFEST_BYTES);
    const got = digestLike(bytes, desc.digest);
    if (got !== desc.digest) throw dataLoss(`daemon content ${desc.digest} reads back as ${got}`);
    return bytes;
  }
}

/**
 * Removes an ingest, waiting briefly while the daemon still holds the lock of the writer just closed. A
 * failure is not worth reporting over the pull's own: the pull's lease takes the ingest with it anyway.
 */
async function dropIngest(api: DaemonApi, ref: string): Promise<void> {
  for (let attempt = 0; attempt < 6; attempt++) {
    try {
      await api.abortIngest(ref);
      return;
    } catch (err) {
      if (!isUnavailable(err)) return;
    }
    await new Promise((r) => setTimeout(r, 10 << attempt));
  }
}

/**
 * Copies a registry body into a writer in messages of exactly WRITE_CHUNK_BYTES (the last may be
 * shorter), handing over the body's own chunks (sliced, never concatenated); reports the absolute offset
 * after each message and returns the bytes written.
 */
async function pump(
  body: Readable,
  writer: IngestWriter,
  start: number,
  progress: (offset: number) => void,
): Promise<number> {
  let parts: Buffer[] = [];
  let partBytes = 0;
  let offset = start;
  const send = async (): Promise<void> => {
    const message = parts;
    const bytes = partBytes;
    parts = [];
    partBytes = 0;
    await writer.write(message);
    offset += bytes;
    progress(offset);
  };
  try {
    for await (const chunk of body) {
      let b = chunk as Buffer;
      while (partBytes + b.length >= WRITE_CHUNK_BYTES) {
        const take = WRITE_CHUNK_BYTES - partBytes;
        parts.push(b.subarray(0, take));
        partBytes += take;
        b = b.subarray(take);
        await send();
      }
      if (b.length > 0) {
        parts.push(b);
        partBytes += b.length;
      }
    }
    if (partBytes > 0) await send();
  } finally {
    body.destroy();
  }
  return offset - start;
}
