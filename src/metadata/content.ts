// A namespace's view of content, with containerd's metadata content store semantics: blob bytes are
// shared by all namespaces in the on-disk ContentStore, while membership, labels and times are per
// namespace in the metadata database, and so are ingests (the same ref in two namespaces is two ingests).
// With the "shared" policy, a writer whose expected digest is on disk already (from any namespace) links
// it in without new bytes. Leases named by a request hold the ingests and blobs written under them.
// Messages are containerd's, errdefs suffix included, because ctr prints them.
import { validateRef } from '../content/layout.ts';
import type { ContentStore, IngestStatus, IngestWriter } from '../content/store.ts';
import {
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  isAlreadyExists,
  isNotFound,
  isUnavailable,
  notFound,
  outOfRange,
  unavailable,
} from '../errors.ts';
import type { Blob } from '../oci/blob.ts';
import type { Digest } from '../oci/digest.ts';
import { tracePhase } from '../trace.ts';
import { ContentMeta, type ContentRecord } from './content-labels.ts';
import type { MetadataDb } from './db.ts';
import { ingestAdaptor } from './filters/adaptors.ts';
import { parseFilters, selectMatching } from './filters/filter.ts';
import { goDigestError } from './go-digest.ts';
import { backendRef, IngestRecords } from './ingests.ts';
import { goQuote, validateLabels } from './labels.ts';
import { LeaseStore } from './leases.ts';

export type { ContentRecord } from './content-labels.ts';
export { backendRef } from './ingests.ts';

/**
 * A namespace's ingest, as Status and ListStatuses report it: without the expected digest, which
 * containerd's metadata store does not report either (its blob store's status has none).
 */
export type NamespacedStatus = Omit<IngestStatus, 'expected'>;

export interface WriterOpenOptions {
  /** Digest the content must have; enables AlreadyExists and the shared-content shortcut. */
  expected?: string;
  /** Declared size; 0 or undefined when unknown. */
  total?: number;
  /** The request's lease: holds the ingest, and the blob once committed. */
  lease?: string;
  /** Background syncs while writing (the content store's WriterOptions.syncEvery). */
  syncEvery?: number;
}

/** One message of the Write protocol, decoded from the wire. */
export interface WriteMessage {
  action: 'stat' | 'write' | 'commit' | 'other';
  ref: string;
  total: number;
  expected: string;
  offset: number;
  data: Uint8Array;
  labels: Record<string, string>;
}

/** The answer to one WriteMessage. `offset` is always the absolute offset after the message. */
export interface WriteReply {
  offset: number;
  digest?: Digest;
  total?: number;
  startedAt?: Date;
  updatedAt?: Date;
}

/** containerd's message for a request digest that does not parse (Read, Delete: `<d>: <go-digest error>`). */
function checkDigest(d: string): Digest {
  const err = goDigestError(d);
  if (err) throw invalidArgument(`${d}: ${err}`);
  return d as Digest;
}

export class ContentView {
  readonly store: ContentStore;
  private readonly db: MetadataDb;
  private readonly meta: ContentMeta;
  private readonly ingests: IngestRecords;
  private readonly leases: LeaseStore;

  constructor(deps: { store: ContentStore; db: MetadataDb }) {
    this.store = deps.store;
    this.db = deps.db;
    this.meta = new ContentMeta(deps.db);
    this.ingests = new IngestRecords(deps.db);
    this.leases = new LeaseStore(deps.db);
  }

  /** InvalidArgument `"<d>" failed validation`; NotFound `content digest <d>: not found`. */
  info(ns: string, digest: string): ContentRecord {
    return this.meta.info(ns, digest);
  }

  has(ns: string, digest: string): boolean {
    return this.meta.has(ns, digest);
  }

  /** Labels only: masks `labels` and `labels.<key>`; an empty mask replaces all labels. */
  update(ns: string, info: { digest: string; labels?: Record<string, string> }, paths: readonly string[]) {
    return this.meta.update(ns, info, paths);
  }

  /** The namespace's blobs matching any of the filters (fields `digest`, `labels.*`), in digest order. */
  list(ns: string, filters: readonly string[]): Promise<ContentRecord[]> {
    return this.meta.list(ns, filters);
  }

  /** Unlinks the blob from the namespace (and the lease); its bytes go at the next GC if nobody holds it. */
  delete(ns: string, digest: string, lease?: string): void {
    this.meta.remove(ns, digest, lease ? { lease } : {});
  }

  /**
   * The namespace's blob (NotFound `content digest <d>: not found` when the namespace does not hold it),
   * read from the shared store without another check of its digest: it was verified at commit. Reads of
   * one blob share an open file handle (ctr reads 32 KiB at a time).
   */
  blob(ns: string, digest: string): Blob {
    const d = checkDigest(digest);
    const descriptor = { mediaType: 'application/octet-stream', digest: d, size: this.meta.info(ns, d).size };
    const stored = this.store.blob(descriptor);
    return { descriptor, open: (o = {}) => stored.open({ ...o, verify: false }) };
  }

  /**
   * NotFound `could not get status for ref "<ref>": reference <ref>: not found`, also for a shared writer
   * without bytes of its own (containerd has no ingest in its blob store for it).
   */
  async status(ns: string, ref: string): Promise<NamespacedStatus> {
    const missing = () =>
      notFound(`could not get status for ref ${goQuote(ref)}: reference ${ref}: not found`);
    const rec = ref === '' ? undefined : this.ingests.get(ns, ref);
    if (!rec || rec.shared) throw missing();
    try {
      return this.statusOf(await this.store.status(backendRef(ns, ref)), ref);
    } catch (err) {
      if (isNotFound(err)) throw missing();
      throw err;
    }
  }

  /**
   * Records the namespace's ingest `ref` without creating its data: the first writer does. Until then
   * it has no status (NotFound) but it is known (hasIngest), it expires and is aborted as any ingest,
   * and a writer starts it at offset 0. One database row for a session that has sent no byte yet.
   */
  reserve(ns: string, ref: string): void {
    if (ref === '') throw invalidArgument('ref must not be empty');
    validateRef(backendRef(ns, ref));
    this.ingests.open(ns, ref, {});
  }

  /**
   * Runs `fn`, whose metadata writes (through this view or anything else on its database) then commit
   * as one transaction: one sync of the database instead of one per write.
   */
  inOneCommit<T>(fn: () => T): T {
    return this.db.write(fn);
  }

  /** Whether the namespace has the ingest `ref` (opened or reserved, not yet committed or aborted). */
  hasIngest(ns: string, ref: string): boolean {
    return ref !== '' && this.ingests.get(ns, ref) !== undefined;
  }

  /** The refs of all the namespace's ingests, also those without a status (reserved, shared), by ref. */
  ingestRefs(ns: string): string[] {
    return this.ingests.list(ns).map((r) => r.ref);
  }

  /**
   * The namespace's ingests whose ref matches any filter (field `ref`), ordered by ref; as in containerd,
   * not those without bytes of their own (a shared writer, a reserved ingest).
   */
  async listStatuses(ns: string, filters: readonly string[]): Promise<NamespacedStatus[]> {
    const filter = parseFilters(filters);
    const out: NamespacedStatus[] = [];
    const recs = this.ingests.list(ns).filter((r) => !r.shared);
    for (const rec of await selectMatching(filter, recs, ingestAdaptor, this.db.regex)) {
      try {
        out.push(this.statusOf(await this.store.status(backendRef(ns, rec.ref)), rec.ref));
      } catch (err) {
        if (!isNotFound(err)) throw err; // committed or aborted meanwhile
      }
    }
    return out;
  }

  /** Deletes the ingest and its data. NotFound `reference <ref>: not found`; Unavailable while written. */
  async abort(ns: string, ref: string, lease?: string): Promise<void> {
    if (ref === '' || !this.ingests.get(ns, ref)) throw notFound(`reference ${ref}: not found`);
    await this.removeIngestData(ns, ref);
    this.ingests.remove(ns, ref, lease);
  }

  /** Deletes an ingest's data from the store (for the GC once it dropped the record); absent is fine. */
  async removeIngestData(ns: string, ref: string): Promise<void> {
    try {
      await this.store.abort(backendRef(ns, ref));
    } catch (err) {
      if (isNotFound(err)) return;
      if (isUnavailable(err)) throw unavailable(`ref ${ref} is being written: unavailable`, { cause: err });
      throw err;
    }
  }

  /**
   * Opens (or resumes) the namespace's ingest `ref`. AlreadyExists `content <d>: already exists` when the
   * namespace has `expected` (which then joins the lease); Unavailable `ref <ref> locked …` while another
   * writer holds the ref. When `expected` is on disk from another namespace (and `total` is 0 or agrees),
   * the writer is shared: it reports offset = total = size and commit links the blob without new bytes.
   */
  async writer(ns: string, ref: string, opts: WriterOpenOptions = {}): Promise<NamespacedWriter> {
    if (ref === '') throw invalidArgument('ref must not be empty');
    validateRef(backendRef(ns, ref));
    const total = opts.total !== undefined && opts.total > 0 ? opts.total : 0;
    let expected: Digest | undefined;
    let shared: { digest: Digest; size: number } | undefined;
    if (opts.expected) {
      expected = checkDigest(opts.expected);
      if (this.meta.has(ns, expected)) {
        if (opts.lease) this.leaseContent(ns, opts.lease, expected);
        throw alreadyExists(`content ${expected}: already exists`);
      }
      shared = await this.onDisk(expected, total);
    }
    this.ingests.open(ns, ref, {
      total,
      ...(expected ? { expected } : {}),
      ...(opts.lease ? { lease: opts.lease } : {}),
    });
    const bref = backendRef(ns, ref);
    let w: IngestWriter;
    try {
      // Bytes on disk but not shared (size disagrees): open without the digest, or the store refuses.
      const syncEvery = opts.syncEvery ?? 0;
      w = await this.store.writer(
        bref,
        shared || !expected ? { total, syncEvery } : { total, expected, syncEvery },
      );
    } catch (err) {
      if (isUnavailable(err)) throw unavailable(err.message.replace(`ref ${bref} `, `ref ${ref} `));
      if (!isAlreadyExists(err) || !expected) throw err;
      // The blob landed on disk since we looked: share it.
      shared = await this.onDisk(expected, total);
      w = await this.store.writer(bref, { total, syncEvery: opts.syncEvery ?? 0 });
    }
    // Set now that this writer holds the ref. A shared writer has a status only when an earlier writer
    // of the ref left bytes (containerd lists those, as it does any ingest its blob store has).
    const bytesless = shared !== undefined && w.offset === 0;
    if (bytesless !== (this.ingests.get(ns, ref)?.shared ?? false)) {
      try {
        this.ingests.setShared(ns, ref, bytesless);
      } catch (err) {
        await w.close();
        throw err;
      }
    }
    return new NamespacedWriter({ view: this, ns, ref, w, shared, lease: opts.lease });
  }

  /**
   * Runs the Write protocol over a stream of messages, yielding one reply per message. The first message
   * must carry the ref. After a COMMIT the session ends; an ingest left without commit survives.
   */
  async *writeSession(
    ns: string,
    messages: AsyncIterable<WriteMessage>,
    opts: { lease?: string } = {},
  ): AsyncGenerator<WriteReply> {
    const it = messages[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.done) return;
    let req = first.value;
    if (req.ref === '') throw invalidArgument('first message must have a reference');
    // The first message's total is kept as sent, as containerd keeps it: a negative one then fails the
    // commit's size check (`ctr content ingest --expected-size -1`); later ones count only when positive.
    let total = req.total;
    let expected = req.expected;
    const w = await this.writer(ns, req.ref, {
      total: Math.max(total, 0),
      expected,
      ...(opts.lease ? { lease: opts.lease } : {}),
    });
    try {
      for (;;) {
        if (req.expected !== '') {
          expected = checkDigest(req.expected);
          if (this.meta.has(ns, expected)) {
            await w.abort();
            throw alreadyExists(`blob with expected digest ${expected} exists`);
          }
        }
        if (req.total > 0) total = req.total;
        let reply: WriteReply;
        if (req.action === 'stat') {
          const st = w.status();
          reply = {
            offset: st.offset,
            digest: w.digest(),
            startedAt: st.startedAt,
            updatedAt: st.updatedAt,
            total,
          };
        } else if (req.action === 'write' || req.action === 'commit') {
          if (req.offset < 0 || (req.offset > 0 && req.offset !== w.offset)) {
            throw outOfRange(`write @${req.offset} must occur at current offset ${w.offset}`);
          }
          if (req.offset === 0 && w.offset > 0) await w.truncate(0);
          if (req.data.byteLength > 0) await w.write(req.data);
          if (req.action === 'commit') {
            const endCommit = tracePhase(`daemon-commit-content ${req.ref}`);
            // Only what this session declared is checked, as in containerd: a resumed ingest does not
            // inherit the size or digest an earlier session opened it with.
            await w.commit(total !== 0 ? total : w.offset, expected || w.digest(), req.labels);
            endCommit(`${w.offset} bytes`);
          }
          reply = { offset: w.offset, digest: w.digest() };
        } else {
          reply = { offset: w.offset };
        }
        yield reply;
        if (req.action === 'commit') return;
        const next = await it.next();
        if (next.done) return;
        req = next.value;
      }
    } finally {
      await w.close();
    }
  }

  // ---- for NamespacedWriter ----

  /** Size of `d` on disk when it may be shared with a writer declaring `total` (0 = unknown). */
  private async onDisk(d: Digest, total: number): Promise<{ digest: Digest; size: number } | undefined> {
    try {
      const { size } = await this.store.info(d);
      return total === 0 || total === size ? { digest: d, size } : undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private leaseContent(ns: string, lease: string, d: Digest): void {
    this.db.write(() => {
      this.leases.attach(ns, lease, { type: 'content', id: d });
    });
  }

  private statusOf(st: IngestStatus, ref: string): NamespacedStatus {
    const { expected: _, ...out } = st;
    return { ...out, ref };
  }

  /**
   * @internal The end of a commit: the ingest record goes, the blob joins the namespace (and lease).
   * AlreadyExists when the namespace has it already (the record still goes, the lease still gets it).
   */
  linkCommitted(
    ns: string,
    ref: string,
    d: Digest,
    size: number,
    labels: Record<string, string>,
    lease: string | undefined,
    also: (() => void) | undefined,
  ): void {
    // One transaction (one sync of the database) for all of it.
    const linked = this.db.write(() => {
      this.ingests.remove(ns, ref, lease);
      if (this.meta.has(ns, d)) {
        // Committed by another writer meanwhile: as containerd, the ingest goes and the blob joins this
        // writer's lease (committed here), then AlreadyExists, which clients take as success.
        if (lease) this.leases.attach(ns, lease, { type: 'content', id: d });
        return false;
      }
      this.meta.add(ns, d, size, labels, lease ? { lease } : {});
      also?.();
      return true;
    });
    if (!linked) throw alreadyExists(`content ${d}: already exists`);
  }

  /** @internal Undoes linkCommitted's membership when the bytes turned out to be gone. */
  unlinkCommitted(ns: string, d: Digest): void {
    try {
      this.meta.remove(ns, d);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  /** @internal */
  forgetIngest(ns: string, ref: string, lease: string | undefined): void {
    this.ingests.remove(ns, ref, lease);
  }

  /** @internal A shared writer wrote bytes of its own: its ingest has a status from now on. */
  markUnshared(ns: string, ref: string): void {
    this.ingests.setShared(ns, ref, false);
  }
}

interface WriterInit {
  view: ContentView;
  ns: string;
  ref: string;
  w: IngestWriter;
  shared: { digest: Digest; size: number } | undefined;
  lease: string | undefined;
}

/**
 * A writer for one namespace's ingest. It holds the store's ref lock until committed, aborted or closed.
 * Operations are not concurrent-safe beyond what the store writer serialises: use one at a time.
 */
export class NamespacedWriter {
  readonly ref: string;
  readonly namespace: string;
  private readonly view: ContentView;
  private readonly w: IngestWriter;
  private readonly lease: string | undefined;
  /** Set while the writer stands for content already on disk (no bytes written). */
  private shared: { digest: Digest; size: number } | undefined;
  private readonly openedAt = new Date();

  constructor(init: WriterInit) {
    this.view = init.view;
    this.namespace = init.ns;
    this.ref = init.ref;
    this.w = init.w;
    this.shared = init.shared;
    this.lease = init.lease;
  }

  /** Bytes written so far (for a shared writer: the blob's size). */
  get offset(): number {
    return this.shared ? this.shared.size : this.w.offset;
  }

  /** Digest of the bytes so far (for a shared writer: the blob's digest). */
  digest(): Digest {
    return this.shared ? this.shared.digest : this.w.digest();
  }

  status(): IngestStatus {
    if (this.shared) {
      const { size } = this.shared;
      return { ref: this.ref, offset: size, total: size, startedAt: this.openedAt, updatedAt: this.openedAt };
    }
    return { ...this.w.status(), ref: this.ref };
  }

  /** Appends the bytes (or the chunks, in order, in one disk write). */
  async write(data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    const size = data instanceof Uint8Array ? data.byteLength : data.reduce((n, c) => n + c.byteLength, 0);
    if (size === 0) return;
    if (this.shared) await this.unshare(this.shared.size);
    await this.w.write(data);
  }

  /** Cuts the ingest to `size` bytes; 0 restarts it. */
  async truncate(size: number): Promise<void> {
    if (this.shared) {
      if (size > this.shared.size) {
        throw invalidArgument(
          `cannot truncate ingest ${this.ref} to ${size}: it holds ${this.shared.size} bytes`,
        );
      }
      await this.unshare(size);
      return;
    }
    await this.w.truncate(size);
  }

  /**
   * Commits the ingest into the namespace. `size` 0 and `expected` '' skip those checks (beyond what the
   * writer was opened with). FailedPrecondition on a size or digest mismatch (the ingest stays);
   * AlreadyExists `content <d>: already exists` when the namespace has it; InvalidArgument for labels
   * over containerd's 4096-byte rule. `also` runs in the database transaction that links the blob (a
   * caller's own rows about it, committed with one sync instead of a transaction of their own).
   */
  async commit(
    size: number,
    expected: string,
    labels: Record<string, string> = {},
    also?: () => void,
  ): Promise<Digest> {
    validateLabels('info.Labels', labels);
    const want = expected ? checkDigest(expected) : undefined;
    // containerd's metadata store checks the size before its blob store sees the commit (ctr prints this).
    if (size !== 0 && size !== this.offset) {
      throw failedPrecondition(
        `${goQuote(this.ref)} failed size validation: ${this.offset} != ${size}: failed precondition`,
      );
    }
    let d: Digest;
    let bytes: number;
    if (this.shared) {
      const s = this.shared;
      if (want && want !== s.digest) {
        throw failedPrecondition(`${goQuote(this.ref)} unexpected digest: failed precondition`);
      }
      d = s.digest;
      bytes = s.size;
    } else {
      bytes = this.w.offset;
      try {
        d = await this.w.commit(size, want);
      } catch (err) {
        // The bytes are on disk already (another namespace, or awaiting GC): link them here.
        if (!isAlreadyExists(err)) throw err;
        d = want ?? this.w.digest();
      }
    }
    try {
      this.view.linkCommitted(this.namespace, this.ref, d, bytes, labels, this.lease, also);
    } catch (err) {
      // A failed link must not leave the ingest record behind when its data is gone.
      if (!this.shared) this.view.forgetIngest(this.namespace, this.ref, this.lease);
      throw err;
    } finally {
      if (this.shared) await this.dropBackendIngest();
    }
    // Once the namespace holds the digest the GC keeps the bytes; check they survived until then.
    if (!(await this.view.store.has(d))) {
      this.view.unlinkCommitted(this.namespace, d);
      throw unavailable(`content ${d} was removed while being committed, try again: unavailable`);
    }
    return d;
  }

  /** Deletes the ingest (data and record). */
  async abort(): Promise<void> {
    await this.dropBackendIngest();
    this.view.forgetIngest(this.namespace, this.ref, this.lease);
  }

  /** Releases the ref; an uncommitted ingest stays and can be resumed. Its followers fail with `reason`. */
  async close(reason?: Error): Promise<void> {
    await this.w.close(reason);
  }

  /**
   * Turns a shared writer into one holding the first `keep` bytes of the blob, to write on from there. As
   * containerd's, it is then an ingest declaring `keep` bytes in all.
   */
  private async unshare(keep: number): Promise<void> {
    const s = this.shared!;
    await this.w.truncate(0);
    await this.w.declareTotal(keep);
    if (keep > 0) {
      const stream = await this.view.store.reader(s.digest, { offset: 0, length: keep });
      for await (const chunk of stream as AsyncIterable<Buffer>) await this.w.write(chunk);
    }
    this.shared = undefined;
    this.view.markUnshared(this.namespace, this.ref);
  }

  private async dropBackendIngest(): Promise<void> {
    await this.w.close();
    await this.view.removeIngestData(this.namespace, this.ref).catch(() => {
      // Another writer took the ref meanwhile: the ingest is theirs now.
    });
  }
}
