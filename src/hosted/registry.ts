// Hosted repositories: the push side of the registry, kept in the daemon's own stores. Blob bytes go to
// the one content store through resumable ingests of one metadata namespace (an upload session is an
// ingest: its data survives a restart, and an abandoned one expires 24 h after its last write like any
// unleased ingest, the GC removing record and data). Manifests are content of that namespace labelled
// with `containerd.io/gc.ref.content.*` for what they reference, and every manifest and tag is an image
// record (`<repo>@<digest>`, `<repo>:<tag>`), so the ordinary GC keeps exactly what some record reaches
// and frees the rest online once records are deleted. A blob nobody references yet (pushed before its
// manifest) carries a `containerd.io/gc.expire` hold that its first manifest drops.
//
// The bytes of a blob are stored once, but a blob belongs only to the repositories it was pushed to,
// mounted into (from a repository it belongs to) or referenced by a manifest of, as distribution links
// blobs per repository: through any other repository it is BLOB_UNKNOWN (MANIFEST_BLOB_UNKNOWN in a
// manifest), so access granted per repository at the edge covers exactly that repository's blobs. The
// membership rows are metadata's (RepositoryBlobs); they keep nothing alive for the GC.
import { createHash, randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { appendStream } from '../content/append-stream.ts';
import {
  isAlreadyExists,
  isFailedPrecondition,
  isInvalidArgument,
  isNotFound,
  messageOf,
} from '../errors.ts';
import type { ContentView, NamespacedWriter } from '../metadata/content.ts';
import { LABEL_GC_EXPIRE } from '../metadata/gc-labels.ts';
import type { ImageNames } from '../metadata/image-names.ts';
import type { ImageInput, ImageRecord, ImageStore } from '../metadata/images.ts';
import type { RepositoryBlobs } from '../metadata/repository-blobs.ts';
import type { Blob } from '../oci/blob.ts';
import type { Descriptor } from '../oci/descriptor.ts';
import { type Digest, digestOf, isDigest } from '../oci/digest.ts';
import { MAX_MANIFEST_BYTES, type ParsedManifest, parseManifest } from '../oci/manifest.ts';
import { isValidTag, MAX_NAME_LENGTH } from '../oci/reference.ts';
import { type CatalogPage, catalogPage } from './catalog.ts';
import { manifestTooLarge, registryError } from './errors.ts';
import { isRepository } from './names.ts';

export const DEFAULT_HOSTED_NAMESPACE = 'strata-hosted';
/**
 * An upload's data is synced in the background every this many bytes: clients send the PUT that commits
 * the blob right after the last bytes and wait for it, and its sync then has at most this much left
 * (skopeo and buildah push one blob at a time, so that sync was on the path of every blob).
 */
const UPLOAD_SYNC_EVERY = 2 << 20;
/**
 * How long an upload's writer stays open after a PATCH, for the request that follows it (the PUT
 * committing it, or the next chunk). Reopening costs a lock file, the ingest's files and a metadata
 * check, and closing waits for the background sync under way: together a few ms on the path of every
 * blob, which clients push one after another. A client idle longer finds it closed and reopens it.
 */
const PARK_MS = 30_000;
/**
 * Writers kept open at most; at the cap the one parked longest is closed (its upload reopens on its next
 * request). Each holds a file descriptor: without a cap, a client that starts uploads and sends a byte to
 * each would hold one per upload for PARK_MS, taken from the process's open-file limit. Clients push a
 * few blobs at a time each.
 */
export const MAX_PARKED = 64;
/** How long a blob no manifest references yet is kept. */
export const DEFAULT_BLOB_HOLD_MS = 24 * 3600 * 1000;

const LABEL_SUBJECT = 'strata.hosted/subject';
const LABEL_ARTIFACT_TYPE = 'strata.hosted/artifact-type';
const LABEL_REF = 'containerd.io/gc.ref.content';

export interface HostedOptions {
  view: ContentView;
  images: ImageStore;
  /** The same records' names, walked in order for the catalog. */
  names: ImageNames;
  /** Which repositories each blob belongs to. */
  members: RepositoryBlobs;
  namespace?: string;
  blobHoldMs?: number;
  now?: () => number;
  /** Where a parked writer that fails to close is reported (nobody waits on that close). */
  logger?: Logger;
}

export interface UploadState {
  id: string;
  /** Bytes received so far. */
  offset: number;
}

export interface StoredManifest {
  digest: Digest;
  mediaType: string;
  bytes: Uint8Array;
  /** The subject's digest, when the manifest names one. */
  subject?: Digest;
}

export interface Referrer {
  mediaType: string;
  digest: Digest;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** NAME_INVALID unless `repo` is a distribution repository name. */
export function checkRepository(repo: string): void {
  if (!isRepository(repo)) {
    throw registryError(
      'NAME_INVALID',
      `invalid repository name ${JSON.stringify(repo.slice(0, MAX_NAME_LENGTH))}`,
    );
  }
}

const UPLOAD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class HostedRegistry {
  readonly namespace: string;
  private readonly view: ContentView;
  private readonly images: ImageStore;
  private readonly names: ImageNames;
  private readonly members: RepositoryBlobs;
  private readonly blobHoldMs: number;
  private readonly now: () => number;
  private readonly logger: Logger | undefined;
  /** Writers kept open between an upload's requests, by ingest ref (see PARK_MS). */
  private readonly parked = new Map<string, { w: NamespacedWriter; timer: NodeJS.Timeout }>();
  /** Closes of parked writers under way, by ingest ref: the upload's next request waits for its lock. */
  private readonly closing = new Map<string, Promise<void>>();

  constructor(o: HostedOptions) {
    this.view = o.view;
    this.images = o.images;
    this.names = o.names;
    this.members = o.members;
    this.namespace = o.namespace ?? DEFAULT_HOSTED_NAMESPACE;
    this.blobHoldMs = o.blobHoldMs ?? DEFAULT_BLOB_HOLD_MS;
    this.logger = o.logger;
    this.now = o.now ?? Date.now;
  }

  // ---- uploads ----

  async startUpload(repo: string): Promise<UploadState> {
    checkRepository(repo);
    const id = randomUUID();
    // The record only: the ingest's files come with the first bytes (most uploads send them next, in
    // one PATCH or PUT), so starting an upload costs one database commit and no file.
    this.view.reserve(this.namespace, uploadRef(repo, id));
    return { id, offset: 0 };
  }

  /** BLOB_UPLOAD_UNKNOWN when `repo` has no such upload. */
  async uploadStatus(repo: string, id: string): Promise<UploadState> {
    const ref = this.checkUpload(repo, id);
    try {
      const st = await this.view.status(this.namespace, ref);
      return { id, offset: st.offset };
    } catch (err) {
      if (!isNotFound(err)) throw err;
      // Started, no byte yet.
      if (this.view.hasIngest(this.namespace, ref)) return { id, offset: 0 };
      throw uploadUnknown(id);
    }
  }

  /**
   * Appends a chunk. `start`, when the client said where the chunk goes, must be the current offset
   * (RANGE_INVALID otherwise: chunks come in order). Returns the new state.
   */
  async appendUpload(repo: string, id: string, body: Readable, start?: number): Promise<UploadState> {
    const w = await this.openUpload(repo, id, body);
    try {
      checkChunkStart(w, start, body);
      await this.writeAll(w, body);
    } catch (err) {
      await w.close();
      throw err;
    }
    // Kept open for the PUT that usually comes next.
    this.park(uploadRef(repo, id), w);
    return { id, offset: w.offset };
  }

  /**
   * Ends the upload with its last bytes (if any) and commits it as `digest`. DIGEST_INVALID when the
   * bytes are not that digest (the upload is discarded, as distribution does). `start` as for
   * appendUpload: a last chunk out of order is RANGE_INVALID and leaves the upload as it was.
   */
  async finishUpload(
    repo: string,
    id: string,
    digest: string,
    body?: Readable,
    start?: number,
  ): Promise<Descriptor> {
    const d = checkDigest(digest);
    const w = await this.openUpload(repo, id, body);
    try {
      checkChunkStart(w, start, body);
      if (body) await this.writeAll(w, body);
      const size = w.offset;
      if (w.digest() !== d && d.startsWith('sha256:')) {
        await w.abort();
        throw registryError('DIGEST_INVALID', `the uploaded content does not match ${d}`);
      }
      const join = () => this.members.add(this.namespace, repo, d);
      // Only bytes checked against the digest may join a repository to a blob that is here already;
      // the writer hashes sha256, and other algorithms are checked by the commit below.
      if (d.startsWith('sha256:') && this.view.has(this.namespace, d)) {
        // Pushed again: held afresh, for the manifest that is to come.
        this.hold(d);
        await w.abort();
        join();
      } else {
        try {
          // The membership commits with the blob: one database sync for both.
          await w.commit(size, d, this.holdLabels(), join);
        } catch (err) {
          if (isFailedPrecondition(err)) {
            await w.abort();
            throw registryError('DIGEST_INVALID', `the uploaded content does not match ${d}`);
          }
          if (!isAlreadyExists(err)) throw err;
          this.hold(d);
          join();
        }
      }
      return { mediaType: 'application/octet-stream', digest: d, size };
    } finally {
      await w.close();
    }
  }

  /**
   * A monolithic upload: the whole blob in one request. Nothing of it stays when it fails, since the
   * client never learnt its upload's id to resume it.
   */
  async putBlob(repo: string, digest: string, body: Readable): Promise<Descriptor> {
    const up = await this.startUpload(repo);
    try {
      return await this.finishUpload(repo, up.id, digest, body);
    } catch (err) {
      // Already gone when the bytes were refused or could not be written.
      await this.cancelUpload(repo, up.id).catch(() => {});
      throw err;
    }
  }

  async cancelUpload(repo: string, id: string): Promise<void> {
    const ref = this.checkUpload(repo, id);
    await this.closing.get(ref);
    await this.unparked(ref)?.close();
    try {
      await this.view.abort(this.namespace, ref);
    } catch (err) {
      if (isNotFound(err)) throw uploadUnknown(id);
      throw err;
    }
  }

  /**
   * Cross-repository mount: the blob, now a member of `repo` too (no byte copied), when it belongs to
   * `from`; undefined otherwise (and without `from`, with an invalid one or an invalid digest, as
   * distribution and the spec's "unable to mount"): upload it. The caller checked that the client may
   * pull `from`.
   */
  mountBlob(repo: string, digest: string, from: string | undefined): Descriptor | undefined {
    checkRepository(repo);
    if (!isDigest(digest) || from === undefined || !isRepository(from)) return undefined;
    const d = digest;
    if (!this.members.has(this.namespace, from, d)) return undefined;
    this.hold(d);
    this.members.add(this.namespace, repo, d);
    return { mediaType: 'application/octet-stream', digest: d, size: this.view.info(this.namespace, d).size };
  }

  // ---- blobs ----

  /** BLOB_UNKNOWN unless the blob belongs to `repo`. */
  blob(repo: string, digest: string): Blob {
    const d = this.memberDigest(repo, digest);
    try {
      return this.view.blob(this.namespace, d);
    } catch (err) {
      if (isNotFound(err)) throw blobUnknown(d);
      throw err;
    }
  }

  /**
   * Takes the blob out of `repo` (BLOB_UNKNOWN unless it belongs there). When no other repository has
   * it, the namespace lets go of it and the next collection frees the bytes (unless another namespace
   * holds them): a manifest of this repository that still names it cannot keep it.
   */
  deleteBlob(repo: string, digest: string): void {
    const d = this.memberDigest(repo, digest);
    try {
      this.members.remove(this.namespace, repo, d);
    } catch (err) {
      if (isNotFound(err)) throw blobUnknown(d);
      throw err;
    }
  }

  // ---- manifests ----

  /**
   * Stores a manifest or index under a tag or its digest. Everything it references must be here:
   * blobs of this repository for an image manifest, manifests of this repository for an index
   * (MANIFEST_BLOB_UNKNOWN otherwise). A subject need not exist (referrers may come first).
   */
  async putManifest(
    repo: string,
    reference: string,
    bytes: Uint8Array,
    contentType?: string,
  ): Promise<StoredManifest> {
    checkRepository(repo);
    if (bytes.byteLength > MAX_MANIFEST_BYTES) throw manifestTooLarge(MAX_MANIFEST_BYTES);
    const digest = digestOf(bytes);
    const tag = this.checkReference(reference);
    if (tag === undefined && reference !== digest) {
      throw registryError('DIGEST_INVALID', `manifest digest ${digest} does not match ${reference}`);
    }
    let parsed: ParsedManifest;
    try {
      parsed = parseManifest(bytes, contentType);
    } catch (err) {
      if (isInvalidArgument(err)) throw registryError('MANIFEST_INVALID', (err as Error).message);
      throw err;
    }
    // The holds on what it references, then dropping them with the records: a commit each, not one per
    // blob (a manifest names every layer).
    const refs = this.view.inOneCommit(() => this.referencedBy(repo, parsed));
    const labels: Record<string, string> = {};
    refs.forEach((r, i) => {
      labels[`${LABEL_REF}.${r.key}.${i}`] = r.digest;
    });
    await this.storeManifestBytes(digest, bytes, labels);

    const subject = parsed.kind === 'manifest' ? parsed.manifest.subject : parsed.index.subject;
    // The referrers API's: a manifest's own or its config's media type, an index's own or none.
    const artifactType =
      parsed.kind === 'manifest'
        ? (parsed.manifest.artifactType ?? parsed.manifest.config.mediaType)
        : parsed.index.artifactType;
    const annotations =
      (parsed.kind === 'manifest' ? parsed.manifest.annotations : parsed.index.annotations) ?? {};
    const target = { mediaType: parsed.mediaType, digest, size: bytes.byteLength, annotations };
    const recordLabels: Record<string, string> = {};
    if (subject) recordLabels[LABEL_SUBJECT] = subject.digest;
    if (artifactType) recordLabels[LABEL_ARTIFACT_TYPE] = artifactType;
    this.view.inOneCommit(() => {
      for (const r of refs) this.dropHold(r.digest);
      this.putRecord(manifestName(repo, digest), target, recordLabels);
      if (tag !== undefined) this.putRecord(tagName(repo, tag), target, {});
    });
    const out: StoredManifest = { digest, mediaType: parsed.mediaType, bytes };
    if (subject) out.subject = subject.digest;
    return out;
  }

  /** MANIFEST_UNKNOWN when the repository has no such tag or digest. */
  async manifest(repo: string, reference: string): Promise<StoredManifest> {
    const rec = this.record(repo, reference);
    const d = rec.target.digest;
    let stream: Readable;
    try {
      stream = await this.view.blob(this.namespace, d).open();
    } catch (err) {
      if (isNotFound(err)) throw manifestUnknown(repo, reference);
      throw err;
    }
    const chunks: Buffer[] = [];
    for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
    const out: StoredManifest = { digest: d, mediaType: rec.target.mediaType, bytes: Buffer.concat(chunks) };
    const subject = rec.labels[LABEL_SUBJECT];
    if (subject && isDigest(subject)) out.subject = subject;
    return out;
  }

  /** Descriptor of a tag or digest without reading the bytes (HEAD). */
  manifestDescriptor(repo: string, reference: string): Descriptor {
    const t = this.record(repo, reference).target;
    return { mediaType: t.mediaType, digest: t.digest, size: t.size };
  }

  /** By digest: the manifest and every tag pointing at it; by tag: that tag only. */
  async deleteManifest(repo: string, reference: string): Promise<void> {
    const tag = this.checkReference(reference);
    if (tag !== undefined) {
      this.deleteRecord(tagName(repo, tag), repo, reference);
      return;
    }
    const names = (await this.repoRecords(repo))
      .filter((r) => r.target.digest === reference)
      .map((r) => r.name);
    if (names.length === 0) throw manifestUnknown(repo, reference);
    for (const n of names) this.deleteRecord(n, repo, reference);
  }

  /**
   * Tags in byte order (the records' key); NAME_UNKNOWN when the repository has none, as docker-registry answers a repository
   * pushed only by digest (skopeo list-tags then fails rather than listing nothing).
   */
  async tags(repo: string): Promise<string[]> {
    checkRepository(repo);
    const prefix = `${repo}:`;
    const tags = this.images.listByNamePrefix(this.namespace, prefix).map((r) => r.name.slice(prefix.length));
    if (tags.length === 0)
      throw registryError('NAME_UNKNOWN', `repository ${repo} is not known`, { name: repo });
    return tags;
  }

  /**
   * Up to `n` repositories after `last`, in docker-registry's order: those with a manifest (tagged or not). A repository
   * is one while it has a manifest; its blobs alone do not make it one. Fewer when the walk's budget runs
   * out (`more` then says to go on); it stops between two slices once `signal` is aborted.
   */
  async catalog(n: number, last?: string, signal?: AbortSignal): Promise<CatalogPage> {
    const pause = async () => {
      await new Promise<void>((resolve) => setImmediate(resolve));
      signal?.throwIfAborted();
    };
    return catalogPage((from, inclusive) => this.names.first(this.namespace, from, inclusive), n, last, {
      pause,
    });
  }

  /** Manifests of `repo` whose subject is `digest`, optionally of one artifact type. */
  async referrers(repo: string, digest: string, artifactType?: string): Promise<Referrer[]> {
    checkRepository(repo);
    const d = checkDigest(digest);
    const filter = `labels."${LABEL_SUBJECT}"==${d}`;
    const prefix = `${repo}@`;
    const out: Referrer[] = [];
    for (const r of await this.images.list(this.namespace, [filter])) {
      if (!r.name.startsWith(prefix)) continue;
      const type = r.labels[LABEL_ARTIFACT_TYPE];
      if (artifactType !== undefined && type !== artifactType) continue;
      const ref: Referrer = { mediaType: r.target.mediaType, digest: r.target.digest, size: r.target.size };
      if (type) ref.artifactType = type;
      if (Object.keys(r.target.annotations).length > 0) ref.annotations = r.target.annotations;
      out.push(ref);
    }
    return out;
  }

  /** Closes the writers kept open between requests (their uploads stay, to be resumed). */
  async close(): Promise<void> {
    const ws = [...this.parked.keys()].map((ref) => this.unparked(ref));
    await Promise.all([...ws.map((w) => w?.close()), ...this.closing.values()]);
  }

  // ---- internals ----

  /** Keeps an upload's writer open for its next request, closing it after PARK_MS without one. */
  private park(ref: string, w: NamespacedWriter): void {
    const oldest = this.parked.size >= MAX_PARKED ? this.parked.keys().next().value : undefined;
    if (oldest !== undefined) this.closeParked(oldest);
    const timer = setTimeout(() => this.closeParked(ref), PARK_MS);
    timer.unref();
    this.parked.set(ref, { w, timer });
  }

  /** Closes a parked writer without a request waiting on it (the upload's next one waits, in `closing`). */
  private closeParked(ref: string): void {
    const w = this.unparked(ref);
    if (!w) return;
    const done: Promise<void> = w
      .close()
      // The upload stays resumable whatever happens here; a failure is only worth a warning.
      .catch((err: unknown) =>
        this.logger?.warn({ ref, err: messageOf(err) }, 'closing the writer of an idle upload failed'),
      )
      .finally(() => {
        if (this.closing.get(ref) === done) this.closing.delete(ref);
      });
    this.closing.set(ref, done);
  }

  /** The upload's parked writer, now the caller's (to use or close), if there is one. */
  private unparked(ref: string): NamespacedWriter | undefined {
    const p = this.parked.get(ref);
    if (!p) return undefined;
    this.parked.delete(ref);
    clearTimeout(p.timer);
    return p.w;
  }

  private checkUpload(repo: string, id: string): string {
    checkRepository(repo);
    if (!UPLOAD_ID.test(id)) throw uploadUnknown(id);
    return uploadRef(repo, id);
  }

  /** The upload's writer (BLOB_UPLOAD_UNKNOWN when there is no such upload); `body` is drained on failure. */
  private async openUpload(repo: string, id: string, body: Readable | undefined): Promise<NamespacedWriter> {
    try {
      const ref = this.checkUpload(repo, id);
      await this.closing.get(ref);
      const parked = this.unparked(ref);
      // The record decides (the writer reads the ingest's files itself, or creates them).
      if (!this.view.hasIngest(this.namespace, ref)) {
        await parked?.close();
        throw uploadUnknown(id);
      }
      if (parked) {
        // What opening it would do to the record: its expiry runs from this use.
        this.view.reserve(this.namespace, ref);
        return parked;
      }
      return await this.view.writer(this.namespace, ref, { syncEvery: UPLOAD_SYNC_EVERY });
    } catch (err) {
      body?.resume();
      // The upload stays as it was (its first files could not be made): nothing written, nothing lost.
      if (isNoSpace(err)) throw noSpace('no space left on the registry disk for this upload');
      throw err;
    }
  }

  /**
   * Appends the request body to the upload, in big writes while the next bytes arrive. A body that breaks
   * off keeps what arrived, to be resumed. A write the disk fails discards the upload instead: its bytes
   * would hold the room a new attempt needs (clients start a failed blob again rather than resume it),
   * and a disk that failed once may hold a tail the digest never saw. No room is BLOB_UPLOAD_INVALID,
   * answered as such; another disk error stays what it is. The body is left undestroyed either way, so
   * the edge can drain it and answer on the connection instead of resetting it.
   */
  private async writeAll(w: NamespacedWriter, body: Readable): Promise<void> {
    let diskFailure: { err: unknown } | undefined;
    const sink = {
      write: (chunks: readonly Uint8Array[]) =>
        w.write(chunks).catch((err: unknown) => {
          diskFailure ??= { err };
          throw err;
        }),
    };
    try {
      await appendStream(sink, body.iterator({ destroyOnReturn: false }));
    } catch (err) {
      if (!diskFailure) throw err;
      await w.abort();
      if (!isNoSpace(diskFailure.err)) throw diskFailure.err;
      throw noSpace('no space left on the registry disk for this upload; it is discarded, start it again');
    }
  }

  /** A tag (returned) or a digest (undefined); MANIFEST_INVALID / DIGEST_INVALID otherwise. */
  private checkReference(reference: string): string | undefined {
    if (reference.includes(':')) {
      if (!isDigest(reference))
        throw registryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(reference)}`);
      return undefined;
    }
    if (!isValidTag(reference))
      throw registryError('MANIFEST_INVALID', `invalid tag ${JSON.stringify(reference)}`);
    return reference;
  }

  private record(repo: string, reference: string): ImageRecord {
    checkRepository(repo);
    const tag = this.checkReference(reference);
    const name = tag === undefined ? manifestName(repo, reference) : tagName(repo, tag);
    try {
      return this.images.get(this.namespace, name);
    } catch (err) {
      if (isNotFound(err)) throw manifestUnknown(repo, reference);
      throw err;
    }
  }

  private async repoRecords(repo: string): Promise<ImageRecord[]> {
    // Names are `<repo>:<tag>` and `<repo>@<digest>`: a repository's own never start `<repo>/`. Two
    // ranges of the key, so a repository's cost does not grow with the others'.
    return [
      ...this.images.listByNamePrefix(this.namespace, `${repo}:`),
      ...this.images.listByNamePrefix(this.namespace, `${repo}@`),
    ];
  }

  private deleteRecord(name: string, repo: string, reference: string): void {
    try {
      this.images.delete(this.namespace, name);
    } catch (err) {
      if (isNotFound(err)) throw manifestUnknown(repo, reference);
      throw err;
    }
  }

  private putRecord(
    name: string,
    target: NonNullable<ImageInput['target']>,
    labels: Record<string, string>,
  ): void {
    try {
      this.images.create(this.namespace, { name, target, labels });
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
      this.images.update(this.namespace, { name, target, labels }, []);
    }
  }

  /** The digest, when it is valid and the blob belongs to `repo`; NAME_INVALID, DIGEST_INVALID, BLOB_UNKNOWN. */
  private memberDigest(repo: string, digest: string): Digest {
    checkRepository(repo);
    const d = checkDigest(digest);
    if (!this.members.has(this.namespace, repo, d)) throw blobUnknown(d);
    return d;
  }

  /**
   * What a manifest references, each checked to belong to `repo`. A layer the repository lacks is taken
   * when its `urls` say where clients fetch it (a foreign or non-distributable layer, or any layer listed
   * with its URLs): skopeo and containers/image push no layer that has URLs, and clients try those URLs
   * before the registry. docker-registry takes them too once its URL allow list admits them. Such a
   * layer is no reference of the manifest's: nothing here to keep.
   */
  private referencedBy(repo: string, parsed: ParsedManifest): { key: string; digest: Digest }[] {
    const out: { key: string; digest: Digest }[] = [];
    if (parsed.kind === 'manifest') {
      const m = parsed.manifest;
      for (const [key, desc] of [['config', m.config] as const, ...m.layers.map((l) => ['l', l] as const)]) {
        if (!this.members.has(this.namespace, repo, desc.digest)) {
          if (key === 'l' && fetchableElsewhere(desc.urls)) continue;
          const why = desc.urls?.length ? ', and its urls are not http(s) URLs without a fragment' : '';
          throw registryError('MANIFEST_BLOB_UNKNOWN', `blob ${desc.digest} is not known${why}`, desc.digest);
        }
        // Held until the manifest is stored: a collection in between must not take a blob whose old hold
        // has passed and that nothing references yet. putManifest drops the hold again.
        this.hold(desc.digest as Digest);
        out.push({ key, digest: desc.digest as Digest });
      }
    } else {
      for (const desc of parsed.index.manifests) {
        try {
          this.images.get(this.namespace, manifestName(repo, desc.digest));
        } catch (err) {
          if (!isNotFound(err)) throw err;
          throw registryError('MANIFEST_BLOB_UNKNOWN', `manifest ${desc.digest} is not known`, desc.digest);
        }
        out.push({ key: 'm', digest: desc.digest as Digest });
      }
    }
    return out;
  }

  private async storeManifestBytes(
    digest: Digest,
    bytes: Uint8Array,
    labels: Record<string, string>,
  ): Promise<void> {
    if (this.view.has(this.namespace, digest)) {
      this.view.update(
        this.namespace,
        { digest, labels },
        Object.keys(labels).map((k) => `labels.${k}`),
      );
      this.dropHold(digest);
      return;
    }
    let w: NamespacedWriter;
    try {
      w = await this.view.writer(this.namespace, `manifest-${digest}`, {
        expected: digest,
        total: bytes.byteLength,
      });
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
      return this.storeManifestBytes(digest, bytes, labels);
    }
    try {
      if (w.offset !== bytes.byteLength) {
        await w.truncate(0);
        await w.write(bytes);
      }
      await w.commit(bytes.byteLength, digest, labels);
    } finally {
      await w.close();
    }
  }

  /** Removes the hold of a blob pushed before any manifest referenced it. */
  private dropHold(d: Digest): void {
    const rec = this.view.info(this.namespace, d);
    if (rec.labels[LABEL_GC_EXPIRE] !== undefined) {
      this.view.update(this.namespace, { digest: d, labels: {} }, [`labels.${LABEL_GC_EXPIRE}`]);
    }
  }

  /** Keeps the blob for the hold time from now, whatever holds it otherwise. */
  private hold(d: Digest): void {
    this.view.update(this.namespace, { digest: d, labels: this.holdLabels() }, [`labels.${LABEL_GC_EXPIRE}`]);
  }

  private holdLabels(): Record<string, string> {
    return { [LABEL_GC_EXPIRE]: new Date(this.now() + this.blobHoldMs).toISOString() };
  }
}

function uploadRef(repo: string, id: string): string {
  // The repository is part of the ref so that an upload id only works in its own repository.
  const key = createHash('sha256').update(repo).digest('hex').slice(0, 16);
  return `upload-${key}-${id}`;
}

function manifestName(repo: string, digest: string): string {
  return `${repo}@${digest}`;
}

function tagName(repo: string, tag: string): string {
  return `${repo}:${tag}`;
}

/** RANGE_INVALID (`body` drained) unless a chunk said to start at `start` goes at the end of the upload. */
function checkChunkStart(w: NamespacedWriter, start: number | undefined, body: Readable | undefined): void {
  if (start === undefined || start === w.offset) return;
  body?.resume();
  throw registryError('RANGE_INVALID', `chunk starts at ${start}, the upload holds ${w.offset} bytes`);
}

/**
 * Whether a layer's `urls` tell clients where to fetch it instead: some, each an http or https URL with no
 * fragment (docker-registry's check of foreign-layer URLs).
 */
function fetchableElsewhere(urls: readonly string[] | undefined): boolean {
  if (!urls || urls.length === 0) return false;
  return urls.every((u) => {
    if (u.includes('#')) return false;
    try {
      const { protocol } = new URL(u);
      return protocol === 'http:' || protocol === 'https:';
    } catch {
      return false;
    }
  });
}

function checkDigest(digest: string): Digest {
  if (!isDigest(digest)) throw registryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(digest)}`);
  return digest;
}

/** The detail is the bare digest, as docker-registry gives it here and for MANIFEST_BLOB_UNKNOWN. */
function blobUnknown(d: Digest) {
  return registryError('BLOB_UNKNOWN', `blob ${d} is not known`, d);
}

function uploadUnknown(id: string) {
  return registryError('BLOB_UPLOAD_UNKNOWN', `upload ${JSON.stringify(id)} is not known`);
}

function manifestUnknown(repo: string, reference: string) {
  return registryError('MANIFEST_UNKNOWN', `manifest ${reference} of ${repo} is not known`, {
    name: repo,
    reference,
  });
}

/** BLOB_UPLOAD_INVALID, for want of room on the disk. */
function noSpace(message: string) {
  return registryError('BLOB_UPLOAD_INVALID', message, undefined, 'no-space');
}

/** Whether a disk failure is for want of room. */
function isNoSpace(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}
