// The fetch half of a pull into a daemon: walk the descriptor graph from the resolved root, and for each
// blob the namespace lacks stream it from the registry straight into a Content.Write ingest (resuming
// what an earlier attempt left). Manifests and indexes are read whole (capped, verified) to find their
// children and get containerd's gc.ref labels; every blob gets the distribution source label.
import type { Readable } from 'node:stream';
import { dataLoss, isFailedPrecondition, notFound } from '../../errors.ts';
import type { Descriptor, Platform } from '../../oci/descriptor.ts';
import { digestOf } from '../../oci/digest.ts';
import { type ImageManifest, MAX_MANIFEST_BYTES, parseManifest } from '../../oci/manifest.ts';
import { isConfigType, isIndexType } from '../../oci/media-types.ts';
import { formatPlatform } from '../../oci/platform.ts';
import { formatReference, type Reference } from '../../oci/reference.ts';
import type { RegistryClient } from '../../registry/client.ts';
import { childrenOf, isManifestLike, selectPlatform, walk } from '../../registry/walk.ts';
import { tracePhase } from '../../trace.ts';
import type { ContentWriter, DaemonApi, Labels } from './daemon-api.ts';
import type { BlobKind, PullListener } from './events.ts';
import { appendDistributionSource, changedLabels, childGcLabels } from './labels.ts';
import type { Presence } from './presence.ts';

/** Content.Write messages carry at most this much data, as containerd's client sends. */
export const WRITE_CHUNK_BYTES = 1 << 20;

export interface FetchOptions {
  platform: Platform;
  concurrency: number;
  signal: AbortSignal;
  presence: Presence;
  onEvent?: PullListener;
  /** Told about each image manifest reached, before its config and layers are fetched. */
  onManifest?: (desc: Descriptor, manifest: ImageManifest) => void;
}

export interface FetchStats {
  fetched: number;
  present: number;
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
  const stats: FetchStats = { fetched: 0, present: 0, bytes: 0 };
  const repo = { domain: ref.domain, path: ref.path };
  const configs = new Set<string>();
  const emit: PullListener = opts.onEvent ?? (() => {});
  const sourceLabel = (have: Labels): Labels => {
    const add = appendDistributionSource(have, ref.domain, ref.path);
    return add ? { [add.key]: add.value } : {};
  };

  const kindOf = (desc: Descriptor): BlobKind => {
    if (isIndexType(desc.mediaType)) return 'index';
    if (isManifestLike(desc)) return 'manifest';
    return configs.has(desc.digest) || isConfigType(desc.mediaType) ? 'config' : 'layer';
  };

  /** Streams `desc` into the daemon unless it is there; returns its labels afterwards. */
  const fetchBlob = async (desc: Descriptor, kind: BlobKind, signal: AbortSignal): Promise<Labels> => {
    const info = await api.contentInfo(desc.digest);
    if (info) {
      const update = sourceLabel(info.labels);
      if (Object.keys(update).length > 0) await api.updateContentLabels(desc.digest, update);
      stats.present++;
      emit({ type: 'exists', kind, descriptor: desc });
      return { ...info.labels, ...update };
    }
    const labels = sourceLabel({});
    const started = performance.now();
    let wrote = 0;
    // A resumed ingest whose bytes turn out wrong (commit refuses the digest) is restarted once from 0.
    for (let attempt = 1; ; attempt++) {
      const writer = await api.openWriter(ingestRefKey(desc, kind), { digest: desc.digest, size: desc.size });
      if (!writer) {
        // Written meanwhile by someone else: nothing to fetch, but it still gets our label.
        await api.updateContentLabels(desc.digest, labels);
        stats.present++;
        emit({ type: 'exists', kind, descriptor: desc });
        return labels;
      }
      const resumed = writer.offset > 0;
      try {
        let offset = writer.offset;
        if (offset > desc.size || attempt > 1) {
          await writer.truncate();
          offset = 0;
        }
        emit({ type: 'fetch-start', kind, descriptor: desc, offset });
        if (offset < desc.size) {
          const endFetch = tracePhase(`fetch ${kind} ${desc.digest.slice(7, 19)}`);
          const body = await registry.fetchBlob(repo, desc, { range: { offset }, signal, verify: false });
          wrote += await pump(body, writer, offset, (bytes) =>
            emit({ type: 'fetch-progress', descriptor: desc, bytes }),
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
        throw err;
      }
    }
    stats.fetched++;
    stats.bytes += wrote;
    emit({ type: 'fetch-done', kind, descriptor: desc, ms: performance.now() - started, bytes: wrote });
    return labels;
  };

  /** A manifest or index: its bytes (from the daemon, or fetched and stored), labelled for its children. */
  const fetchDocument = async (desc: Descriptor, kind: BlobKind, signal: AbortSignal): Promise<Buffer> => {
    const info = await api.contentInfo(desc.digest);
    let bytes: Buffer;
    if (info) {
      bytes = await api.readContent(desc.digest, MAX_MANIFEST_BYTES);
      const got = digestOf(bytes);
      if (got !== desc.digest) throw dataLoss(`daemon content ${desc.digest} reads back as ${got}`);
      const want = { ...childGcLabels(parseManifest(bytes, desc.mediaType)), ...sourceLabel(info.labels) };
      const update = changedLabels(info.labels, want);
      if (Object.keys(update).length > 0) await api.updateContentLabels(desc.digest, update);
      stats.present++;
      emit({ type: 'exists', kind, descriptor: desc });
      return bytes;
    }
    const started = performance.now();
    emit({ type: 'fetch-start', kind, descriptor: desc, offset: 0 });
    bytes = (await registry.fetchManifest(ref, { descriptor: desc, signal })).bytes;
    const labels = { ...childGcLabels(parseManifest(bytes, desc.mediaType)), ...sourceLabel({}) };
    const writer = await api.openWriter(ingestRefKey(desc, kind), { digest: desc.digest, size: desc.size });
    if (writer) {
      try {
        if (writer.offset > 0) await writer.truncate();
        await writer.write(bytes);
        await writer.commit(labels);
      } catch (err) {
        writer.close();
        throw err;
      }
    } else {
      // Written meanwhile by someone else: it still needs our labels.
      await api.updateContentLabels(desc.digest, labels);
    }
    stats.fetched++;
    stats.bytes += bytes.length;
    emit({
      type: 'fetch-done',
      kind,
      descriptor: desc,
      ms: performance.now() - started,
      bytes: bytes.length,
    });
    return bytes;
  };

  await walk(
    [root],
    async (desc, { signal }) => {
      const kind = kindOf(desc);
      if (!isManifestLike(desc)) {
        const labels = await fetchBlob(desc, kind, signal);
        opts.presence.present(desc.digest, labels);
        return [];
      }
      const bytes = await fetchDocument(desc, kind, signal);
      opts.presence.present(desc.digest, {});
      const parsed = parseManifest(bytes, desc.mediaType);
      if (parsed.kind === 'manifest') {
        configs.add(parsed.manifest.config.digest);
        opts.onManifest?.(desc, parsed.manifest);
        return childrenOf(parsed);
      }
      const chosen = selectPlatform(parsed.index.manifests, opts.platform);
      if (chosen.length === 0) {
        throw notFound(
          `${formatReference(ref)}: no manifest for platform ${formatPlatform(opts.platform)} in the index`,
        );
      }
      return chosen;
    },
    { concurrency: opts.concurrency, signal: opts.signal },
  );
  return stats;
}

/**
 * Copies a registry body into a writer in messages of exactly WRITE_CHUNK_BYTES (the last may be
 * shorter), handing over the body's own chunks (sliced, never concatenated); reports the absolute offset
 * after each message and returns the bytes written.
 */
async function pump(
  body: Readable,
  writer: ContentWriter,
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
