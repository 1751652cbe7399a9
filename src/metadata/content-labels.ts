// Per-namespace content metadata: which blobs a namespace holds, with their labels and times. The bytes
// are in the shared on-disk store (src/content); a blob is visible to a namespace only through a row here.
import { alreadyExists, invalidArgument, notFound } from '../errors.ts';
import type { Digest } from '../oci/digest.ts';
import { decodeMap, encodeMap, type MetadataDb, type Nanos, nanosToDate, type Statement } from './db.ts';
import { contentAdaptor } from './filters/adaptors.ts';
import { parseFilters, selectMatching } from './filters/filter.ts';
import { goDigestError } from './go-digest.ts';
import { getEntry, goQuote, setEntry, validateLabels, withoutEmpty } from './labels.ts';
import { LeaseStore } from './leases.ts';

export interface ContentRecord {
  digest: Digest;
  size: number;
  labels: Record<string, string>;
  createdAt: Date;
  updatedAt: Date;
  createdAtNs: Nanos;
  updatedAtNs: Nanos;
}

interface ContentRow {
  digest: string;
  size: bigint;
  labels: string;
  created_at: bigint;
  updated_at: bigint;
}

const toInfo = (r: ContentRow): ContentRecord => ({
  digest: r.digest as Digest,
  size: Number(r.size),
  labels: decodeMap(r.labels),
  createdAt: nanosToDate(r.created_at),
  updatedAt: nanosToDate(r.updated_at),
  createdAtNs: r.created_at,
  updatedAtNs: r.updated_at,
});

/** The Info/Update RPCs' check of a request digest (a plain status in containerd, no errdefs suffix). */
function checkRequestDigest(d: string): asserts d is Digest {
  if (goDigestError(d)) throw invalidArgument(`${goQuote(d)} failed validation`);
}

export class ContentMeta {
  private readonly db: MetadataDb;
  private readonly leases: LeaseStore;
  private readonly stmts: {
    get: Statement;
    list: Statement;
    insert: Statement;
    setLabels: Statement;
    del: Statement;
    holders: Statement;
    anySize: Statement;
  };

  constructor(db: MetadataDb) {
    this.db = db;
    this.leases = new LeaseStore(db);
    const cols = 'digest, size, labels, created_at, updated_at';
    const q = (s: string): Statement => db.sql.prepare(s);
    this.stmts = {
      get: q(`SELECT ${cols} FROM content WHERE namespace = ? AND digest = ?`),
      list: q(`SELECT ${cols} FROM content WHERE namespace = ? ORDER BY digest`),
      insert: q(
        'INSERT INTO content (namespace, digest, size, labels, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)',
      ),
      setLabels: q('UPDATE content SET labels = ?, updated_at = ? WHERE namespace = ? AND digest = ?'),
      del: q('DELETE FROM content WHERE namespace = ? AND digest = ?'),
      holders: q('SELECT namespace FROM content WHERE digest = ? ORDER BY namespace'),
      anySize: q('SELECT size FROM content WHERE digest = ? LIMIT 1'),
    };
  }

  /**
   * Links a committed blob into a namespace (the end of a content write). AlreadyExists when the namespace
   * has it. With a lease, the blob is added to it (NotFound `lease does not exist` if there is none).
   */
  add(
    ns: string,
    digest: Digest,
    size: number,
    labels: Record<string, string> = {},
    opts: { lease?: string } = {},
  ): ContentRecord {
    validateLabels('info.Labels', labels);
    return this.db.write(() => {
      if (this.stmts.get.get(ns, digest)) throw alreadyExists(`content ${digest}: already exists`);
      const now = this.db.clock();
      this.db.ensureNamespace(ns, now);
      if (opts.lease) this.leases.attach(ns, opts.lease, { type: 'content', id: digest });
      this.stmts.insert.run(ns, digest, size, encodeMap(withoutEmpty(labels)), now, now);
      return this.info(ns, digest);
    });
  }

  has(ns: string, digest: string): boolean {
    return this.stmts.get.get(ns, digest) !== undefined;
  }

  info(ns: string, digest: string): ContentRecord {
    checkRequestDigest(digest);
    const row = this.stmts.get.get(ns, digest) as ContentRow | undefined;
    if (!row) throw notFound(`content digest ${digest}: not found`);
    return toInfo(row);
  }

  /** Masks `labels` and `labels.<key>`; an empty mask replaces all labels; nothing else is mutable. */
  update(
    ns: string,
    info: { digest: string; labels?: Record<string, string> },
    fieldPaths: readonly string[] = [],
  ): ContentRecord {
    const digest = info.digest;
    checkRequestDigest(digest);
    const requested = info.labels ?? {};
    return this.db.write(() => {
      const row = this.stmts.get.get(ns, digest) as ContentRow | undefined;
      if (!row) throw notFound(`content digest ${digest}: not found`);
      let labels = decodeMap(row.labels);
      if (fieldPaths.length === 0) labels = { ...requested };
      for (const path of fieldPaths) {
        if (path.startsWith('labels.')) {
          const key = path.slice('labels.'.length);
          setEntry(labels, key, getEntry(requested, key));
        } else if (path === 'labels') {
          labels = { ...requested };
        } else {
          throw invalidArgument(
            `cannot update ${goQuote(path)} field on content info ${goQuote(digest)}: invalid argument`,
          );
        }
      }
      validateLabels('info.Labels', labels);
      this.stmts.setLabels.run(encodeMap(withoutEmpty(labels)), this.db.clock(), ns, digest);
      return this.info(ns, digest);
    });
  }

  /** Blobs of the namespace matching any filter, in digest order. Parse errors are not re-wrapped. */
  list(ns: string, filters: readonly string[]): Promise<ContentRecord[]> {
    const filter = parseFilters(filters);
    const rows = this.stmts.list.all(ns) as ContentRow[];
    return selectMatching(filter, rows.map(toInfo), contentAdaptor, this.db.regex);
  }

  /** Unlinks a blob from the namespace (and from the request's lease); the bytes go at the next GC. */
  remove(ns: string, digest: string, opts: { lease?: string } = {}): void {
    const err = goDigestError(digest);
    if (err) throw invalidArgument(err);
    this.db.write(() => {
      if (opts.lease) this.leases.detach(ns, opts.lease, { type: 'content', id: digest });
      if (this.stmts.del.run(ns, digest).changes === 0) throw notFound(`content digest ${digest}: not found`);
      this.db.markDirty();
    });
  }

  /** Namespaces that hold the blob; the disk store may delete the bytes only when this is empty. */
  holders(digest: string): string[] {
    return (this.stmts.holders.all(digest) as Array<{ namespace: string }>).map((r) => r.namespace);
  }

  /** Size of the blob if any namespace holds it (the shared content policy lets others link it). */
  sizeAnywhere(digest: string): number | undefined {
    const row = this.stmts.anySize.get(digest) as { size: bigint } | undefined;
    return row ? Number(row.size) : undefined;
  }
}
