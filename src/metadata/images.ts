// The Images service logic, as containerd's metadata image store behaves: per-namespace names mapped to a
// target descriptor, with labels and server-set timestamps. Messages are containerd's, errdefs suffix
// included (`image "x": not found`), so the gRPC adapter passes them through unchanged.
import { alreadyExists, invalidArgument, notFound } from '../errors.ts';
import type { Descriptor } from '../oci/descriptor.ts';
import type { Digest } from '../oci/digest.ts';
import {
  dateToNanos,
  decodeMap,
  encodeMap,
  type MetadataDb,
  type Nanos,
  nanosToDate,
  type Statement,
} from './db.ts';
import { imageAdaptor } from './filters/adaptors.ts';
import { parseSelectors, parseStoreFilters, selectMatching } from './filters/filter.ts';
import { type PrefilterColumns, prefilterOf } from './filters/prefilter.ts';
import { LABEL_GC_EXPIRE } from './gc-labels.ts';
import { goDigestError } from './go-digest.ts';
import { getEntry, goQuote, setEntry, validateLabels, withoutEmpty } from './labels.ts';
import { LeaseStore } from './leases.ts';

export interface ImageTarget {
  mediaType: string;
  digest: Digest;
  size: number;
  annotations: Record<string, string>;
}

export interface ImageRecord {
  name: string;
  target: ImageTarget & Descriptor;
  labels: Record<string, string>;
  createdAt: Date;
  updatedAt: Date;
  /** The same times at full resolution, for protobuf Timestamps. */
  createdAtNs: Nanos;
  updatedAtNs: Nanos;
}

/** What a caller sends: unvalidated. Timestamps, if any, are ignored. */
export interface ImageInput {
  name: string;
  target?: { mediaType?: string; digest?: string; size?: number; annotations?: Record<string, string> };
  labels?: Record<string, string>;
}

export interface WriteOptions {
  /** The `containerd-lease` of the request: images with a gc.expire label are added to it. */
  lease?: string;
  /** Create/Update's source_date_epoch: used for the timestamps instead of now. */
  sourceDateEpoch?: Date;
}

export interface DeleteOptions {
  /** Compare-and-delete: only delete if the stored target has this digest. */
  target?: string;
  lease?: string;
}

/**
 * One committed change of an image, for those who announce it (containerd publishes /images/create,
 * /images/update and /images/delete): the name, and the labels it has afterwards (none once deleted).
 */
export interface ImageChange {
  namespace: string;
  kind: 'create' | 'update' | 'delete';
  name: string;
  labels: Record<string, string>;
}

export interface ImageStoreOptions {
  /**
   * Told of every change once it is committed, whichever API or registry made it, so every image write is
   * announced in one place.
   */
  onChange?: (change: ImageChange) => void;
}

interface ImageRow {
  name: string;
  target_media_type: string;
  target_digest: string;
  target_size: bigint;
  target_annotations: string;
  labels: string;
  created_at: bigint;
  updated_at: bigint;
}

interface Draft {
  name: string;
  target: { mediaType: string; digest: string; size: number; annotations: Record<string, string> };
  labels: Record<string, string>;
}

const COLUMNS =
  'name, target_media_type, target_digest, target_size, target_annotations, labels, created_at, updated_at';

/** Where imageAdaptor's fields live, for the SQL prefilter of List. */
const FILTER_COLUMNS: PrefilterColumns = {
  exact: [
    [['name'], 'name'],
    [['target', 'digest'], 'target_digest'],
    [['target', 'mediatype'], 'target_media_type'],
  ],
  jsonMaps: { labels: 'labels', annotations: 'target_annotations' },
};

/** List statements by their prefilter's SQL; filters come in few shapes, but callers choose them. */
const MAX_LIST_STATEMENTS = 32;

function toRecord(r: ImageRow): ImageRecord {
  return {
    name: r.name,
    target: {
      mediaType: r.target_media_type,
      digest: r.target_digest as Digest,
      size: Number(r.target_size),
      annotations: decodeMap(r.target_annotations),
    },
    labels: decodeMap(r.labels),
    createdAt: nanosToDate(r.created_at),
    updatedAt: nanosToDate(r.updated_at),
    createdAtNs: r.created_at,
    updatedAtNs: r.updated_at,
  };
}

function draftOf(img: ImageInput): Draft {
  const t = img.target ?? {};
  return {
    name: img.name,
    target: {
      mediaType: t.mediaType ?? '',
      digest: t.digest ?? '',
      size: t.size ?? 0,
      annotations: { ...t.annotations },
    },
    labels: { ...img.labels },
  };
}

// containerd's messages up to 2.2 name the field `Target.` (later releases lower-case it).
function validate(d: Draft): void {
  if (d.name === '') throw invalidArgument('image name must not be empty: invalid argument');
  validateLabels('image.Labels', d.labels);
  const digestErr = goDigestError(d.target.digest);
  if (digestErr) {
    throw invalidArgument(
      `Target.Digest ${goQuote(d.target.digest)} invalid: ${digestErr}: invalid argument`,
    );
  }
  if (!(d.target.size > 0)) throw invalidArgument('Target.Size must be greater than zero: invalid argument');
  if (d.target.mediaType === '') throw invalidArgument('Target.MediaType must be set: invalid argument');
  // containerd's store cannot write an annotation without a key and fails the call (unclassified), as
  // for labels: refused here as clearly.
  if (getEntry(d.target.annotations, '') !== '') {
    throw invalidArgument('Target.Annotations: annotation key must not be empty: invalid argument');
  }
}

export class ImageStore {
  private readonly db: MetadataDb;
  private readonly leases: LeaseStore;
  private readonly stmts: {
    get: Statement;
    list: Statement;
    range: Statement;
    insert: Statement;
    update: Statement;
    del: Statement;
  };
  /** List statements by prefilter condition, prepared once each (bounded). */
  private readonly listStatements = new Map<string, Statement>();
  private readonly onChange: ((change: ImageChange) => void) | undefined;

  constructor(db: MetadataDb, options: ImageStoreOptions = {}) {
    this.db = db;
    this.onChange = options.onChange;
    this.leases = new LeaseStore(db);
    const q = (s: string): Statement => db.sql.prepare(s);
    this.stmts = {
      get: q(`SELECT ${COLUMNS} FROM images WHERE namespace = ? AND name = ?`),
      list: q(`SELECT ${COLUMNS} FROM images WHERE namespace = ? ORDER BY name`),
      range: q(`SELECT ${COLUMNS} FROM images WHERE namespace = ? AND name >= ? AND name < ? ORDER BY name`),
      insert: q(`INSERT INTO images (namespace, ${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      update: q(
        `UPDATE images SET target_media_type = ?, target_digest = ?, target_size = ?, target_annotations = ?,
           labels = ?, updated_at = ? WHERE namespace = ? AND name = ?`,
      ),
      del: q('DELETE FROM images WHERE namespace = ? AND name = ?'),
    };
  }

  get(ns: string, name: string): ImageRecord {
    const row = this.stmts.get.get(ns, name) as ImageRow | undefined;
    if (!row) throw notFound(`image ${goQuote(name)}: not found`);
    return toRecord(row);
  }

  /**
   * Images matching any of the filters, sorted by name (byte order). When every filter has a selector
   * SQL can check (`labels.<key>==v`, `name==v`, …), only rows passing those are read; the filter still
   * decides.
   */
  list(ns: string, filters: readonly string[]): Promise<ImageRecord[]> {
    const filter = parseStoreFilters(filters);
    const pre = prefilterOf(filters.map(parseSelectors), FILTER_COLUMNS);
    const rows = (
      pre ? this.listStatement(pre.sql).all(ns, ...pre.params) : this.stmts.list.all(ns)
    ) as ImageRow[];
    return selectMatching(filter, rows.map(toRecord), imageAdaptor, this.db.regex);
  }

  /**
   * Images whose name starts with `prefix`, sorted by name: a range of the table's key, so the cost is that
   * of the matches, not of the namespace (a registry's tags of one repository among thousands). The prefix
   * must end in a printable ASCII character, the one the range's end is made from.
   */
  listByNamePrefix(ns: string, prefix: string): ImageRecord[] {
    const last = prefix.charCodeAt(prefix.length - 1);
    if (!(last >= 0x20 && last <= 0x7e)) {
      throw invalidArgument(`image name prefix ${goQuote(prefix)}: want one ending in printable ASCII`);
    }
    // Every name with the prefix sorts before the prefix with its last character raised by one, in
    // SQLite's byte order as in UTF-16's for these characters.
    const end = prefix.slice(0, -1) + String.fromCharCode(last + 1);
    return (this.stmts.range.all(ns, prefix, end) as ImageRow[]).map(toRecord);
  }

  /** The prepared List statement for a prefilter shape, prepared once and kept (bounded). */
  private listStatement(condition: string): Statement {
    let stmt = this.listStatements.get(condition);
    if (!stmt) {
      stmt = this.db.sql.prepare(
        `SELECT ${COLUMNS} FROM images WHERE namespace = ? AND ${condition} ORDER BY name`,
      );
      if (this.listStatements.size >= MAX_LIST_STATEMENTS) {
        this.listStatements.delete(this.listStatements.keys().next().value!);
      }
      this.listStatements.set(condition, stmt);
    }
    return stmt;
  }

  create(ns: string, img: ImageInput, opts: WriteOptions = {}): ImageRecord {
    if (img.name === '') throw invalidArgument('Image.Name required');
    const d = draftOf(img);
    return this.db.write(() => {
      validate(d);
      const now = this.timestamp(opts);
      this.db.ensureNamespace(ns, now);
      if (this.stmts.get.get(ns, d.name)) throw alreadyExists(`image ${goQuote(d.name)}: already exists`);
      this.leaseHook(ns, d, opts);
      const labels = withoutEmpty(d.labels);
      const annotations = withoutEmpty(d.target.annotations);
      this.stmts.insert.run(
        ns,
        d.name,
        d.target.mediaType,
        d.target.digest,
        d.target.size,
        encodeMap(annotations),
        encodeMap(labels),
        now,
        now,
      );
      return this.changed(ns, 'create', this.get(ns, d.name));
    });
  }

  /**
   * Field masks: `labels`, `labels.<key>`, `target`, `annotations`, `annotations.<key>`; an empty mask
   * replaces labels and the whole target. A single key whose value is missing or empty is deleted.
   */
  update(
    ns: string,
    img: ImageInput,
    fieldPaths: readonly string[] = [],
    opts: WriteOptions = {},
  ): ImageRecord {
    if (img.name === '') throw invalidArgument('Image.Name required');
    const req = draftOf(img);
    return this.db.write(() => {
      const now = this.timestamp(opts);
      this.db.ensureNamespace(ns, now);
      const existing = this.stmts.get.get(ns, req.name) as ImageRow | undefined;
      if (!existing) throw notFound(`image ${goQuote(req.name)}: not found`);
      const cur = toRecord(existing);
      let next: Draft = {
        name: cur.name,
        target: { ...cur.target, annotations: { ...cur.target.annotations } },
        labels: { ...cur.labels },
      };
      if (fieldPaths.length === 0) {
        next = { ...req, name: cur.name };
      } else {
        for (const path of fieldPaths) {
          // Maps are copied when taken from the request, so label paths can set entries in place.
          if (path === 'labels') next.labels = { ...req.labels };
          else if (path.startsWith('labels.')) {
            const key = path.slice('labels.'.length);
            setEntry(next.labels, key, getEntry(req.labels, key));
          } else if (path === 'target')
            next.target = { ...req.target, annotations: { ...req.target.annotations } };
          else if (path === 'annotations')
            next.target = { ...next.target, annotations: { ...req.target.annotations } };
          else if (path.startsWith('annotations.')) {
            const key = path.slice('annotations.'.length);
            setEntry(next.target.annotations, key, getEntry(req.target.annotations, key));
          } else {
            throw invalidArgument(
              `cannot update ${goQuote(path)} field on image ${goQuote(cur.name)}: invalid argument`,
            );
          }
        }
      }
      validate(next);
      this.leaseHook(ns, next, opts);
      this.stmts.update.run(
        next.target.mediaType,
        next.target.digest,
        next.target.size,
        encodeMap(withoutEmpty(next.target.annotations)),
        encodeMap(withoutEmpty(next.labels)),
        now,
        ns,
        cur.name,
      );
      return this.changed(ns, 'update', this.get(ns, cur.name));
    });
  }

  /**
   * Assigns the name to a target (the first image API's Put): creates the image, or points an existing
   * one at the new target. Callers of that API know no labels, timestamps or annotations, so an existing
   * image keeps its labels and creation time, and its target's annotations while the digest is the same.
   */
  put(
    ns: string,
    img: { name: string; target?: ImageInput['target'] },
    opts: WriteOptions = {},
  ): ImageRecord {
    if (img.name === '') throw invalidArgument('Image.Name required');
    return this.db.write(() => {
      const row = this.stmts.get.get(ns, img.name) as ImageRow | undefined;
      if (!row) return this.create(ns, { name: img.name, ...(img.target && { target: img.target }) }, opts);
      const sameContent = img.target?.digest === row.target_digest;
      const annotations = sameContent ? decodeMap(row.target_annotations) : {};
      return this.update(ns, { name: img.name, target: { ...img.target, annotations } }, ['target'], opts);
    });
  }

  delete(ns: string, name: string, opts: DeleteOptions = {}): void {
    this.db.write(() => {
      if (opts.lease) this.leases.detach(ns, opts.lease, { type: 'images', id: name });
      const row = this.stmts.get.get(ns, name) as ImageRow | undefined;
      if (!row) throw notFound(`image ${goQuote(name)}: not found`);
      if (opts.target && opts.target !== row.target_digest) {
        throw notFound(
          `image ${goQuote(name)} has target ${row.target_digest}, not ${opts.target}: not found`,
        );
      }
      this.stmts.del.run(ns, name);
      this.db.markDirty();
      this.announce({ namespace: ns, kind: 'delete', name, labels: {} });
    });
  }

  private changed(ns: string, kind: 'create' | 'update', r: ImageRecord): ImageRecord {
    this.announce({ namespace: ns, kind, name: r.name, labels: r.labels });
    return r;
  }

  private announce(change: ImageChange): void {
    const onChange = this.onChange;
    if (onChange) this.db.afterCommit(() => onChange(change));
  }

  private timestamp(opts: WriteOptions): Nanos {
    return opts.sourceDateEpoch ? dateToNanos(opts.sourceDateEpoch) : this.db.clock();
  }

  private leaseHook(ns: string, d: Draft, opts: WriteOptions): void {
    if (opts.lease && getEntry(d.labels, LABEL_GC_EXPIRE) !== '') {
      this.leases.attach(ns, opts.lease, { type: 'images', id: d.name });
    }
  }
}
